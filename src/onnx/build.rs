//! Builders of ONNX protobuf pieces (tensors, nodes, attributes) for the graphs fastretrain
//! writes: the exported model and the retrained one.

use tract_onnx::pb::{
    AttributeProto, NodeProto, OperatorSetIdProto, TensorProto, attribute_proto::AttributeType,
    tensor_proto::DataType,
};

/// A float32 initializer of shape `dims`, its values little-endian in `raw_data`.
pub(crate) fn float_tensor(
    name: &str,
    dims: &[i64],
    values: impl Iterator<Item = f32>,
) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: values.flat_map(f32::to_le_bytes).collect(),
        ..Default::default()
    }
}

/// A node of the default domain with one output (attributes are pushed by the caller).
pub(crate) fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// An attribute holding a list of integers.
pub(crate) fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// An attribute holding one integer.
pub(crate) fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A 1-D int64 initializer (shapes, axes, slice bounds).
pub(crate) fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// The model's default-domain opset version (1 when it names none).
pub(crate) fn proto_opset(opsets: &[OperatorSetIdProto]) -> i64 {
    opsets
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version)
}
