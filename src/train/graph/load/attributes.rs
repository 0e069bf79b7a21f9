//! Reading one ONNX node's attributes and constants: typed attribute lookups, integer and
//! float constants from initializers or `Constant` nodes, pooling windows, and which inputs of
//! a trainable layer are its parameters.

use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto, tensor_proto::DataType};

use super::super::Constant;
use super::super::value::Ints;
use crate::onnx::float_values;

pub(super) fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(super) fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attribute(node, name).map(|a| a.ints.clone())
}

pub(super) fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attribute(node, name).map_or(default, |a| a.i)
}

pub(super) fn float(node: &NodeProto, name: &str, default: f64) -> f64 {
    attribute(node, name).map_or(default, |a| a.f as f64)
}

pub(super) fn string(node: &NodeProto, name: &str) -> Option<String> {
    attribute(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// Input `k` of `n`, unless absent (missing or named "").
pub(super) fn optional_input(n: &NodeProto, k: usize) -> Option<&String> {
    n.input.get(k).filter(|s| !s.is_empty())
}

/// Whether a window op pads by `auto_pad` (SAME_UPPER, ...), which is not supported.
pub(super) fn has_auto_pad(n: &NodeProto) -> bool {
    attribute(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET")
}

/// The integers of an int64 / int32 tensor.
pub(super) fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    let width = match DataType::try_from(t.data_type).ok()? {
        DataType::Int64 => 8,
        DataType::Int32 => 4,
        _ => return None,
    };
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(width) {
            return None;
        }
        return Some(
            t.raw_data
                .chunks_exact(width)
                .map(|b| match width {
                    8 => i64::from_le_bytes(b.try_into().expect("8 bytes")),
                    _ => i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64,
                })
                .collect(),
        );
    }
    Some(if width == 8 {
        t.int64_data.clone()
    } else {
        t.int32_data.iter().map(|&v| v as i64).collect()
    })
}

/// An initializer (or a `Constant`'s tensor) as a constant; None for other element types.
pub(super) fn constant_of(t: &TensorProto) -> Option<Constant> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = dims.iter().product();
    if let Some(values) = float_values(t) {
        return (values.len() == count).then_some(Constant::Floats { values, dims });
    }
    let values = int_values(t)?;
    (values.len() == count).then_some(Constant::Ints(Ints { values, dims }))
}

/// The tensor a `Constant` node holds (any of its attribute forms).
pub(super) fn constant_node(n: &NodeProto) -> Option<Constant> {
    let a = n.attribute.first()?;
    match a.name.as_str() {
        "value" => a.t.as_ref().and_then(constant_of),
        "value_float" => Some(Constant::Floats {
            values: vec![a.f],
            dims: vec![],
        }),
        "value_floats" => Some(Constant::Floats {
            values: a.floats.clone(),
            dims: vec![a.floats.len()],
        }),
        "value_int" => Some(Constant::Ints(Ints {
            values: vec![a.i],
            dims: vec![],
        })),
        "value_ints" => Some(Constant::Ints(Ints::vector(a.ints.clone()))),
        _ => None,
    }
}

/// Strides, (begin, end) padding and dilations of a 2-d window op (Conv, pooling) with ONNX's
/// defaults; None unless the attributes are 2-d.
#[allow(clippy::type_complexity)]
pub(super) fn window(n: &NodeProto) -> Option<([usize; 2], [(usize, usize); 2], [usize; 2])> {
    let pads = ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
    let strides = ints(n, "strides").unwrap_or_else(|| vec![1, 1]);
    let dilations = ints(n, "dilations").unwrap_or_else(|| vec![1, 1]);
    if pads.len() != 4 || strides.len() != 2 || dilations.len() != 2 {
        return None;
    }
    let u = |v: i64| v.max(0) as usize;
    let at_least_one = |v: &[i64]| [v[0].max(1) as usize, v[1].max(1) as usize];
    Some((
        at_least_one(&strides),
        [(u(pads[0]), u(pads[2])), (u(pads[1]), u(pads[3]))],
        at_least_one(&dilations),
    ))
}

/// The ops whose initializer inputs (at these positions) are trained parameters.
pub(super) fn param_inputs(op_type: &str) -> &'static [usize] {
    match op_type {
        "Conv" | "Gemm" => &[1, 2],
        "BatchNormalization" => &[1, 2, 3, 4],
        "MatMul" => &[1],
        _ => &[],
    }
}
