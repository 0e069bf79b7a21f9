//! Weights kept beside the model file (`model.onnx` + `model.onnx.data`: what
//! `onnx.save(..., save_as_external_data=True)` and PyTorch's exporter write for large
//! models). They are read into the protobuf at load, so that tract, the training interpreter,
//! `export` and `pack` all see one self-contained model, and their bytes are part of the
//! model's sha256: a changed data file is another model.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, TensorProto, tensor_proto::DataLocation,
    tensor_proto::DataType,
};

use crate::error::{Error, Result};

/// Protobuf cannot encode a message of 2 GiB or more: a model whose weights are that large
/// stays in its data files.
pub(crate) const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

/// Whether any tensor of the model keeps its values in a data file.
pub(crate) fn has_external_data(proto: &ModelProto) -> bool {
    let mut found = false;
    if let Some(graph) = &proto.graph {
        for_each_tensor(graph, &mut |t| found |= is_external(t));
    }
    found
}

/// The data files the model's tensors name, relative to the model file, in the order the
/// graph first names them.
pub fn data_files(proto: &ModelProto) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    if let Some(graph) = &proto.graph {
        for_each_tensor(graph, &mut |t| {
            if let Some(location) = is_external(t).then(|| entry(t, "location")).flatten()
                && !files.iter().any(|f| f == location)
            {
                files.push(location.to_string());
            }
        });
    }
    files
}

/// Reads every external tensor's bytes into the protobuf (`model` is the model file: data
/// files are found beside it). Returns the sha256 of the model file's bytes (`file_bytes`)
/// followed by each data file's, in [`data_files`] order.
pub(crate) fn inline_external_data(
    proto: &mut ModelProto,
    file_bytes: &[u8],
    model: &Path,
) -> Result<String> {
    let dir = model.parent().unwrap_or(Path::new("."));
    let mut hasher = Sha256::new();
    hasher.update(file_bytes);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for location in data_files(proto) {
        let path = data_file_path(dir, &location, model)?;
        let bytes = std::fs::read(&path).map_err(|e| Error::Model {
            path: model.into(),
            reason: format!(
                "its weights are in the data file {} ({}), which cannot be read: {e}; keep \
                 the data file beside the model, under the name the model gives it",
                path.display(),
                location
            ),
        })?;
        hasher.update(&bytes);
        files.insert(location, bytes);
    }
    let mut failure = None;
    if let Some(graph) = proto.graph.as_mut() {
        for_each_tensor_mut(graph, &mut |t| {
            if failure.is_none()
                && is_external(t)
                && let Err(e) = inline(t, &files, dir, model)
            {
                failure = Some(e);
            }
        });
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(crate::durable::hex(&hasher.finalize())),
    }
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

fn entry<'t>(t: &'t TensorProto, key: &str) -> Option<&'t str> {
    t.external_data
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

/// A data file's path: relative to the model's folder and inside it, as ONNX requires (a
/// model naming `/etc/…` or `../…` is refused rather than read).
fn data_file_path(dir: &Path, location: &str, model: &Path) -> Result<PathBuf> {
    let relative = Path::new(location);
    if location.is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(Error::Model {
            path: model.into(),
            reason: format!(
                "a tensor's data file is '{location}': ONNX data files are named relative to \
                 the model's folder, inside it"
            ),
        });
    }
    Ok(dir.join(relative))
}

/// Moves one external tensor's bytes into it, checked against its shape and type.
fn inline(
    t: &mut TensorProto,
    files: &HashMap<String, Vec<u8>>,
    dir: &Path,
    model: &Path,
) -> Result<()> {
    let location = entry(t, "location").unwrap_or_default().to_string();
    let path = dir.join(&location);
    let bad = |reason: String| Error::Model {
        path: model.into(),
        reason: format!("tensor '{}' in {}: {reason}", t.name, path.display()),
    };
    let number = |key: &str| -> Result<Option<u64>> {
        entry(t, key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("its {key} '{v}' is not a byte count")))
            })
            .transpose()
    };
    let bytes = files
        .get(&location)
        .ok_or_else(|| bad("no data file".into()))?;
    let offset = number("offset")?.unwrap_or(0);
    let available = (bytes.len() as u64).saturating_sub(offset);
    let length = number("length")?.unwrap_or(available);
    if offset > bytes.len() as u64 || length > available {
        return Err(bad(format!(
            "the file holds {} bytes, the tensor is at bytes {offset}..{}: the data file is \
             truncated or belongs to another model",
            bytes.len(),
            offset.saturating_add(length)
        )));
    }
    if let Some(width) = element_bytes(t.data_type) {
        let elements = t.dims.iter().try_fold(1u64, |n, &d| {
            u64::try_from(d).ok().and_then(|d| n.checked_mul(d))
        });
        let expected = elements.and_then(|n| n.checked_mul(width));
        if expected != Some(length) {
            return Err(bad(format!(
                "{length} bytes stored for a tensor of shape {:?} ({} bytes): the data file \
                 belongs to another model",
                t.dims,
                expected.map_or("too many".into(), |n| n.to_string())
            )));
        }
    }
    let (start, end) = (offset as usize, (offset + length) as usize);
    t.raw_data = bytes[start..end].to_vec();
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

/// Bytes per element of a fixed-width ONNX type.
fn element_bytes(data_type: i32) -> Option<u64> {
    use DataType::*;
    let bytes = match DataType::try_from(data_type).ok()? {
        Float | Int32 | Uint32 => 4,
        Double | Int64 | Uint64 | Complex64 => 8,
        Complex128 => 16,
        Float16 | Bfloat16 | Int16 | Uint16 => 2,
        Int8 | Uint8 | Bool => 1,
        _ => return None,
    };
    Some(bytes)
}

/// Every tensor of the graph that can hold weights: initializers, and tensors in node
/// attributes (a Constant's value), in subgraphs too.
fn for_each_tensor(graph: &GraphProto, f: &mut dyn FnMut(&TensorProto)) {
    graph.initializer.iter().for_each(&mut *f);
    for node in &graph.node {
        for attribute in &node.attribute {
            each_attribute_tensor(attribute, f);
        }
    }
}

fn each_attribute_tensor(attribute: &AttributeProto, f: &mut dyn FnMut(&TensorProto)) {
    attribute
        .t
        .iter()
        .chain(&attribute.tensors)
        .for_each(&mut *f);
    for graph in attribute.g.iter().chain(&attribute.graphs) {
        for_each_tensor(graph, f);
    }
}

fn for_each_tensor_mut(graph: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto)) {
    graph.initializer.iter_mut().for_each(&mut *f);
    for node in &mut graph.node {
        for attribute in &mut node.attribute {
            attribute
                .t
                .iter_mut()
                .chain(&mut attribute.tensors)
                .for_each(&mut *f);
            for graph in attribute.g.iter_mut().chain(&mut attribute.graphs) {
                for_each_tensor_mut(graph, f);
            }
        }
    }
}
