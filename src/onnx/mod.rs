//! ONNX model files: decoding, what the graph says about its input and dense head, checking a
//! spec against the graph, and writing a model with its spec. Everything here reads or writes
//! the protobuf; running a model is [`crate::backbone`]'s.

pub(crate) mod build;

use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb::{
    GraphProto, ModelProto, StringStringEntryProto, TensorProto, ValueInfoProto,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

use crate::durable::write_atomically;
use crate::error::{Error, Result};
use crate::spec::{Layout, ModelInput, ModelSpec};

/// Metadata key holding the labels (a JSON array, in output order).
pub const LABELS_KEY: &str = "fastretrain.labels";

/// Replaces the model's `fastretrain.*` metadata with the labels (JSON, in output order, under
/// [`LABELS_KEY`]) and `entries`.
pub(crate) fn set_metadata<const N: usize>(
    proto: &mut ModelProto,
    labels: &[String],
    entries: [(&str, String); N],
) {
    proto
        .metadata_props
        .retain(|p| !p.key.starts_with("fastretrain."));
    let labels = serde_json::to_string(labels).expect("strings always encode");
    for (key, value) in std::iter::once((LABELS_KEY, labels)).chain(entries) {
        proto.metadata_props.push(StringStringEntryProto {
            key: key.into(),
            value,
        });
    }
}

/// The model's own final dense layer, as found in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseHeadInfo {
    pub node_name: String,
    pub op_type: String,
    /// Input of the head: the penultimate features.
    pub input: String,
    pub weight: String,
    pub output: String,
}

/// Finds the last Gemm/MatMul whose weight (second input) is an initializer.
pub fn find_dense_head(proto: &ModelProto) -> Option<DenseHeadInfo> {
    let graph = proto.graph.as_ref()?;
    let is_init = |name: &str| graph.initializer.iter().any(|t| t.name == name);
    graph
        .node
        .iter()
        .rev()
        .find(|n| {
            (n.op_type == "Gemm" || n.op_type == "MatMul")
                && n.input.len() >= 2
                && is_init(&n.input[1])
        })
        .map(|n| DenseHeadInfo {
            node_name: n.name.clone(),
            op_type: n.op_type.clone(),
            input: n.input[0].clone(),
            weight: n.input[1].clone(),
            output: n.output.first().cloned().unwrap_or_default(),
        })
}

/// Reads a model file and its sha256 (what states and stores are tied to). A missing file is
/// [`Error::ModelNotFound`], before anything else is said about it (its spec included).
pub fn read_model_file(model: &Path) -> Result<(Vec<u8>, String)> {
    let bytes = read_model_bytes(model)?;
    let sha256 = model_sha256(&bytes);
    Ok((bytes, sha256))
}

/// A model file's bytes (a missing file named as such), without hashing them: for a caller
/// that first looks at what the file is (a pack carries its own checksum).
pub fn read_model_bytes(model: &Path) -> Result<Vec<u8>> {
    if !model.is_file() {
        return Err(Error::ModelNotFound {
            path: model.into(),
            recorded_in: None,
        });
    }
    std::fs::read(model).map_err(|e| Error::io(model, e))
}

/// The sha256 (hex) that identifies a model file's bytes in fingerprints and specs.
pub fn model_sha256(bytes: &[u8]) -> String {
    crate::durable::sha256_hex(bytes)
}

/// Parses ONNX bytes (`path` is for messages): the one place models are decoded as protobuf.
pub(crate) fn parse_model(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| Error::Model {
        path: path.into(),
        reason: format!("cannot parse ONNX protobuf: {e}"),
    })
}

/// The model's graph; a file without one is not a usable model.
pub(crate) fn graph_of<'m>(proto: &'m ModelProto, model: &Path) -> Result<&'m GraphProto> {
    proto.graph.as_ref().ok_or_else(|| no_graph(model))
}

/// [`graph_of`], to change it.
pub(crate) fn graph_of_mut<'m>(
    proto: &'m mut ModelProto,
    model: &Path,
) -> Result<&'m mut GraphProto> {
    proto.graph.as_mut().ok_or_else(|| no_graph(model))
}

fn no_graph(model: &Path) -> Error {
    Error::Model {
        path: model.into(),
        reason: "the file holds no graph".into(),
    }
}

/// The values of a float initializer (raw little-endian bytes or `float_data`).
pub(crate) fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return None;
        }
        return Some(
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    Some(t.float_data.clone())
}

/// A spec that names another model file (its `file` field) and has no sha256 to prove it
/// belongs to this one is most likely another model's spec copied beside this model.
pub(crate) fn check_spec_file(spec: &ModelSpec, model: &Path, spec_path: &Path) -> Result<()> {
    let (Some(file), None) = (&spec.file, &spec.sha256) else {
        return Ok(());
    };
    let actual = model.file_name().unwrap_or_default().to_string_lossy();
    if Path::new(file)
        .file_name()
        .is_some_and(|f| f.to_string_lossy() == actual)
    {
        return Ok(());
    }
    Err(Error::Spec {
        path: spec_path.into(),
        reason: format!(
            "it is the spec of '{file}' (its \"file\" field), not of '{actual}': write this \
             model's spec with `fastretrain spec --model {}` (or, if it is right, set \"file\" \
             to \"{actual}\")",
            model.display()
        ),
    })
}

/// Makes `tensors` the graph's outputs, in order, as float tensors of unstated shape (what a
/// runtime other than tract is asked to compute).
#[cfg(feature = "onnxruntime")]
pub(crate) fn set_float_outputs(graph: &mut GraphProto, tensors: &[String]) {
    graph.output = tensors
        .iter()
        .map(|name| ValueInfoProto {
            name: name.clone(),
            r#type: Some(tract_onnx::pb::TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
}

/// The dimensions of a graph input or output: a number, or None when symbolic or unknown.
pub(crate) fn dims(value: &ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use tensor_shape_proto::dimension::Value;
    let Some(type_proto::Value::TensorType(t)) = value.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(v)) if v > 0 => Some(v),
                _ => None,
            })
            .collect(),
    )
}

pub(crate) fn show_dims(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The graph's one image input (inputs that are initializers, as older exporters list them,
/// are weights).
pub(crate) fn image_input<'g>(graph: &'g GraphProto, model: &Path) -> Result<&'g ValueInfoProto> {
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .collect();
    match inputs[..] {
        [input] => Ok(input),
        [] => Err(Error::Model {
            path: model.into(),
            reason: "the graph has no input".into(),
        }),
        _ => {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            Err(Error::Model {
                path: model.into(),
                reason: format!(
                    "the graph has {} inputs ({}); fastretrain feeds one image tensor",
                    names.len(),
                    names.join(", ")
                ),
            })
        }
    }
}

/// Checks the spec's input against the graph's before tract sees it, so that a wrong name,
/// layout or size is reported in the spec's terms.
pub(crate) fn check_input(
    graph: &GraphProto,
    spec: &ModelSpec,
    model: &Path,
    spec_path: &Path,
) -> Result<()> {
    let spec_error = |reason: String| Error::Spec {
        path: spec_path.into(),
        reason,
    };
    let input = image_input(graph, model)?;
    if let Some(name) = spec.input.name()
        && name != input.name
    {
        return Err(spec_error(format!(
            "input.name is '{name}' but the model's input is '{}'",
            input.name
        )));
    }
    let Some(dims) = dims(input) else {
        return Ok(());
    };
    let shown = show_dims(&dims);
    let spec_input = match &spec.input {
        ModelInput::Image(i) => i,
        ModelInput::Tensor(t) => {
            // The batch axis is fed as 1; every other fixed axis must be the spec's.
            let fits = dims.len() == t.shape.len() + 1
                && dims[0].is_none_or(|b| b == 1)
                && dims[1..]
                    .iter()
                    .zip(&t.shape)
                    .all(|(d, &s)| d.is_none_or(|d| d == s as i64));
            if !fits {
                return Err(spec_error(format!(
                    "input.shape is {:?} (one sample, batch axis left out), but the model's \
                     input '{}' is {shown}: set input.shape to its axes after the batch",
                    t.shape, input.name
                )));
            }
            return Ok(());
        }
    };
    if dims.len() != 4 {
        return Err(Error::Model {
            path: model.into(),
            reason: format!(
                "input '{}' has shape {shown}; fastretrain feeds images as a 4-D tensor \
                 (NCHW or NHWC); for a model fed with other tensors write its spec with \
                 `fastretrain spec --preset tensor`",
                input.name
            ),
        });
    }
    let (channel_axis, h_axis, w_axis) = spec_input.layout.axes();
    let other = match spec_input.layout {
        Layout::Nchw => "NHWC",
        Layout::Nhwc => "NCHW",
    };
    let layout = spec_input.layout.name();
    if dims[channel_axis].is_some_and(|c| c != 3) {
        return Err(spec_error(format!(
            "input.layout is {layout}, but the model's input '{}' is {shown}: axis \
             {channel_axis} is not 3 colour channels{}",
            input.name,
            if spec_input.layout == Layout::Nchw && dims[3] == Some(3)
                || spec_input.layout == Layout::Nhwc && dims[1] == Some(3)
            {
                format!("; the model is {other}: set \"layout\": \"{other}\"")
            } else {
                String::new()
            }
        )));
    }
    let (h, w) = (spec_input.height as i64, spec_input.width as i64);
    if dims[h_axis].is_some_and(|v| v != h) || dims[w_axis].is_some_and(|v| v != w) {
        return Err(spec_error(format!(
            "input is {h}×{w} but the model's input '{}' is {shown} ({layout}): set \
             input.height, input.width and preprocess.crop to the model's size, or make a \
             copy of the model at {h}×{w} with `fastretrain resize-input`",
            input.name
        )));
    }
    Ok(())
}

/// Drops the shapes that exporters record for intermediate tensors and outputs (`value_info`,
/// output dims). tract takes them as facts to unify with; a symbolic batch there (PyTorch's
/// dynamo exporter keeps one) clashes with the batch of one fixed here. tract infers every
/// shape from the input again.
pub(crate) fn forget_intermediate_shapes(graph: &mut GraphProto) {
    graph.value_info.clear();
    for output in &mut graph.output {
        if let Some(type_proto::Value::TensorType(t)) =
            output.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
}

/// A model file written with its spec beside it (by `resize-input` and `retrain`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResizeReport {
    pub out: PathBuf,
    pub spec: PathBuf,
    pub size: usize,
    pub sha256: String,
}

/// Rewrites the spatial dims of the graph's (non-initializer) input to `size`×`size` and drops
/// the shape annotations of inner tensors so runtimes infer them again.
pub(crate) fn set_input_size(
    proto: &mut ModelProto,
    layout: Layout,
    size: usize,
    model: &Path,
) -> Result<()> {
    let graph = graph_of_mut(proto, model)?;
    let input_name = image_input(graph, model)?.name.clone();
    let input = graph
        .input
        .iter_mut()
        .find(|i| i.name == input_name)
        .expect("image_input found it");
    let dims = match input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        Some(type_proto::Value::TensorType(t)) => t.shape.as_mut().map(|s| &mut s.dim),
        _ => None,
    }
    .filter(|d| d.len() == 4)
    .ok_or_else(|| Error::Model {
        path: model.into(),
        reason: format!("input '{input_name}' is not a 4-d tensor"),
    })?;
    let (h, w) = match layout {
        Layout::Nchw => (2, 3),
        Layout::Nhwc => (1, 2),
    };
    for axis in [h, w] {
        dims[axis].value = Some(tensor_shape_proto::dimension::Value::DimValue(size as i64));
    }
    graph.value_info.clear();
    Ok(())
}

/// Writes `proto` to `out` and `spec` (with the new file's name and sha256) beside it, both
/// atomically.
pub(crate) fn write_model_with_spec(
    proto: &ModelProto,
    mut spec: ModelSpec,
    size: usize,
    out: &Path,
) -> Result<ResizeReport> {
    let onnx = proto.encode_to_vec();
    let sha256 = crate::durable::sha256_hex(&onnx);
    spec.sha256 = Some(sha256.clone());
    spec.file = out.file_name().map(|n| n.to_string_lossy().into_owned());
    let spec_path = ModelSpec::path_for_model(out);
    write_atomically(out, &onnx)?;
    write_atomically(&spec_path, spec.to_json().as_bytes())?;
    Ok(ResizeReport {
        out: out.into(),
        spec: spec_path,
        size,
        sha256,
    })
}
