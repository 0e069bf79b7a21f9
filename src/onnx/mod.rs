//! ONNX model files: decoding, what the graph says about its input and dense head, checking a
//! spec against the graph, and writing a model with its spec. Everything here reads or writes
//! the protobuf; running a model is [`crate::backbone`]'s.

pub(crate) mod build;
pub mod external;
#[cfg(feature = "train")]
pub(crate) mod qdq;

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

/// Finds the last Gemm/MatMul whose weight (second input) is an initializer, or an
/// initializer's DequantizeLinear (a quantized model's head).
pub fn find_dense_head(proto: &ModelProto) -> Option<DenseHeadInfo> {
    let graph = proto.graph.as_ref()?;
    let initializer = |name: &str| graph.initializer.iter().any(|t| t.name == name);
    let is_init = |name: &str| {
        initializer(name)
            || graph.node.iter().any(|n| {
                n.op_type == "DequantizeLinear"
                    && n.output.first().is_some_and(|o| o == name)
                    && n.input.first().is_some_and(|i| initializer(i))
            })
    };
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

/// Reads a model file and its sha256 (what states and stores are tied to): the ONNX bytes with
/// the weights of its data files inside, if it keeps them apart ([`external`]), or a pack's
/// bytes as they are. A missing file is [`Error::ModelNotFound`], before anything else is said
/// about it (its spec included).
pub fn read_model_file(model: &Path) -> Result<(Vec<u8>, String)> {
    let file = read_whole_model(model)?;
    Ok((file.bytes, file.sha256))
}

/// A model file as [`read_model_file`] reads it, and the data files it took weights from.
pub(crate) struct WholeModel {
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// As the model names them (relative to its folder); empty for a self-contained model.
    pub data_files: Vec<String>,
}

/// [`read_model_file`], saying which data files were read into it.
pub(crate) fn read_whole_model(model: &Path) -> Result<WholeModel> {
    let bytes = read_model_bytes(model)?;
    if crate::pack::is_pack(&bytes) {
        let sha256 = model_sha256(&bytes);
        return Ok(WholeModel {
            bytes,
            sha256,
            data_files: Vec::new(),
        });
    }
    let (proto, sha256, data_files) = parse_with_data_files(&bytes, model)?;
    if data_files.is_empty() {
        // Self-contained: the file's own bytes, not a re-encoding of them.
        return Ok(WholeModel {
            bytes,
            sha256,
            data_files,
        });
    }
    let size = proto.encoded_len() as u64;
    if size > external::PROTOBUF_LIMIT {
        return Err(Error::Model {
            path: model.into(),
            reason: format!(
                "with the weights of its data files it is {size} bytes, more than one ONNX \
                 file can hold (2 GB): this command writes or rewrites the whole model, which \
                 fastretrain does for models under 2 GB"
            ),
        });
    }
    Ok(WholeModel {
        bytes: proto.encode_to_vec(),
        sha256,
        data_files,
    })
}

/// Reads and parses an ONNX model file with the weights of its data files: the protobuf and
/// the model's sha256 (see [`read_model_file`]).
pub(crate) fn read_model(model: &Path) -> Result<(ModelProto, String)> {
    parse_model_file(&read_model_bytes(model)?, model)
}

/// Parses a model file's `bytes` (read from `model`) and reads its data files' weights into it;
/// with the model's sha256 (the file's bytes, then each data file's).
pub(crate) fn parse_model_file(bytes: &[u8], model: &Path) -> Result<(ModelProto, String)> {
    let (proto, sha256, _) = parse_with_data_files(bytes, model)?;
    Ok((proto, sha256))
}

/// [`parse_model_file`], with the data files it read (empty for a self-contained model).
fn parse_with_data_files(bytes: &[u8], model: &Path) -> Result<(ModelProto, String, Vec<String>)> {
    let mut proto = parse_model(bytes, model)?;
    if !external::has_external_data(&proto) {
        return Ok((proto, model_sha256(bytes), Vec::new()));
    }
    let data_files = external::data_files(&proto);
    let sha256 = external::inline_external_data(&mut proto, bytes, model)?;
    Ok((proto, sha256, data_files))
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

/// The values of a floating-point initializer as f32 (raw little-endian bytes or the typed
/// field): float32, and float16, bfloat16 and float64 converted (a half-precision model's
/// weights are learned and solved in f32).
pub(crate) fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    let raw = &t.raw_data;
    let from_raw = |width: usize, convert: fn(&[u8]) -> f32| {
        raw.len()
            .is_multiple_of(width)
            .then(|| raw.chunks_exact(width).map(convert).collect())
    };
    // float16 and bfloat16 values without raw bytes are stored in int32_data, 16 bits each.
    let from_bits =
        |convert: fn(u16) -> f32| t.int32_data.iter().map(|&v| convert(v as u16)).collect();
    match DataType::try_from(t.data_type).ok()? {
        DataType::Float if raw.is_empty() => Some(t.float_data.clone()),
        DataType::Float => from_raw(4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Float16 if raw.is_empty() => {
            Some(from_bits(|v| half::f16::from_bits(v).to_f32()))
        }
        DataType::Float16 => from_raw(2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        DataType::Bfloat16 if raw.is_empty() => {
            Some(from_bits(|v| half::bf16::from_bits(v).to_f32()))
        }
        DataType::Bfloat16 => from_raw(2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        DataType::Double if raw.is_empty() => {
            Some(t.double_data.iter().map(|&v| v as f32).collect())
        }
        DataType::Double => from_raw(8, |b| {
            f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32
        }),
        _ => None,
    }
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

/// Makes the graph take a float32 `input` and give `tensors` as its outputs, in order, as
/// float32 (what a runtime other than tract is asked to compute): a float16 model's input and
/// feature tensors pass through Cast nodes (a Cast to the type a tensor has is a no-op).
#[cfg(feature = "onnxruntime")]
pub(crate) fn set_float_io(graph: &mut GraphProto, input: &str, tensors: &[String]) {
    let float_info = |name: String| ValueInfoProto {
        name,
        r#type: Some(tract_onnx::pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cast = |from: &str, to: &str, dt: DataType| {
        let mut node = build::node("Cast", to, &[from], to);
        node.attribute
            .push(build::int_attribute("to", dt as i32 as i64));
        node
    };
    if let Some(i) = graph.input.iter_mut().find(|i| i.name == input)
        && elem_type(i) == Some(DataType::Float16)
    {
        let inner = format!("{input}.float16");
        for name in graph.node.iter_mut().flat_map(|n| n.input.iter_mut()) {
            if name == input {
                name.clone_from(&inner);
            }
        }
        *i = float_info(input.into());
        graph.node.insert(0, cast(input, &inner, DataType::Float16));
    }
    graph.output = Vec::new();
    for (k, tensor) in tensors.iter().enumerate() {
        let output = format!("fastretrain.float32.{k}");
        graph.node.push(cast(tensor, &output, DataType::Float));
        graph.output.push(float_info(output));
    }
}

/// The type the model's input is fed in: float32, or float16 for a model converted to half
/// precision without keeping float32 inputs (preprocessed values are rounded to it). Inputs of
/// other types (a quantized model taking uint8 pixels) are refused.
pub(crate) fn input_datum_type(
    graph: &GraphProto,
    model: &Path,
) -> Result<tract_onnx::prelude::DatumType> {
    use tract_onnx::prelude::DatumType;
    let input = image_input(graph, model)?;
    match elem_type(input) {
        None | Some(DataType::Float) | Some(DataType::Undefined) => Ok(DatumType::F32),
        Some(DataType::Float16) => Ok(DatumType::F16),
        Some(other) => Err(Error::Model {
            path: model.into(),
            reason: format!(
                "input '{}' takes {} values; fastretrain feeds float32 or float16 tensors \
                 (a quantized model must keep a float input, as onnxruntime's QDQ \
                 quantization does)",
                input.name,
                other.as_str_name()
            ),
        }),
    }
}

/// Whether the graph computes anything in float16: a float16 initializer, input or Cast (a
/// model converted to half precision).
pub(crate) fn uses_float16(graph: &GraphProto) -> bool {
    let half = DataType::Float16 as i32;
    graph.initializer.iter().any(|t| t.data_type == half)
        || graph
            .input
            .iter()
            .any(|i| elem_type(i) == Some(DataType::Float16))
        || graph.node.iter().any(|n| {
            n.op_type == "Cast"
                && n.attribute
                    .iter()
                    .any(|a| a.name == "to" && a.i == i64::from(half))
        })
}

/// The element type of a graph input or output, when it is a tensor of a known type.
pub(crate) fn elem_type(value: &ValueInfoProto) -> Option<DataType> {
    let Some(type_proto::Value::TensorType(t)) = value.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    DataType::try_from(t.elem_type).ok()
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
