//! Packed models for boards: the backbone up to its feature tensor, already converted and
//! simplified by tract, written once on the desktop (`fastretrain pack`) so that a board's
//! every start skips parsing the ONNX protobuf and tract's analysis of it (about a third of
//! the time to a first prediction, docs/FOOTPRINT.md).
//!
//! File layout: `magic "FRPACK\0\x01" | meta length u64 | meta (JSON) | model length u64 |
//! model (tract's NNEF tar) | sha256` where the sha256 covers everything before it. The meta
//! holds the spec and the [`Fingerprint`] of the ONNX file it was packed from, so states learned
//! with the ONNX file and with its pack are interchangeable, and a pack of another model is
//! refused like that model would be.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tract_onnx::WithOnnx;
use tract_onnx::prelude::*;

use crate::durable::Fingerprint;
use crate::error::{Error, Result};
use crate::spec::ModelSpec;

pub(crate) const MAGIC: &[u8; 8] = b"FRPACK\0\x01";

/// What a pack says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackMeta {
    /// The spec of the ONNX file it was packed from.
    pub spec: ModelSpec,
    /// That ONNX file's fingerprint (its sha256, the feature tensor and its size).
    pub fingerprint: Fingerprint,
    /// Class names an exported model carried, if any.
    pub labels: Option<Vec<String>>,
}

/// True when `bytes` start like a pack (the loaders branch on this, not on the file name).
pub fn is_pack(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// A pack's bytes: `model` is a typed tract model (decluttered, cut at the feature tensor).
pub fn encode(meta: &PackMeta, model: &TypedModel, path: &Path) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::Model {
        path: path.into(),
        reason,
    };
    let tar = tract_nnef::nnef()
        .with_onnx()
        .write_to_tar(model, Vec::new())
        .map_err(|e| bad(format!("tract cannot pack it: {e:#}")))?;
    let meta = serde_json::to_vec(meta).map_err(|e| bad(e.to_string()))?;
    let mut file = Vec::with_capacity(MAGIC.len() + 16 + meta.len() + tar.len() + 32);
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    file.extend_from_slice(&meta);
    file.extend_from_slice(&(tar.len() as u64).to_le_bytes());
    file.extend_from_slice(&tar);
    crate::durable::append_checksum(&mut file);
    Ok(file)
}

/// A pack's meta and its tract model, checked whole (checksum, lengths, meta) before any of it
/// is used.
pub(crate) fn read_pack(bytes: &[u8], path: &Path) -> Result<(PackMeta, TypedModel)> {
    let bad = |reason: &str| Error::Model {
        path: path.into(),
        reason: format!("packed model {reason}; pack it again with `fastretrain pack`"),
    };
    if bytes.len() < MAGIC.len() + 8 + 8 + 32 {
        return Err(bad("is truncated"));
    }
    let Some(body) = crate::durable::strip_checksum(bytes) else {
        return Err(bad("is damaged or truncated (checksum mismatch)"));
    };
    let mut at = MAGIC.len();
    let take = |at: &mut usize| -> Result<&[u8]> {
        let len = body
            .get(*at..*at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| bad("is truncated"))?;
        let part = body
            .get(*at + 8..(*at + 8).saturating_add(len))
            .ok_or_else(|| bad("is truncated"))?;
        *at += 8 + len;
        Ok(part)
    };
    let meta: PackMeta = serde_json::from_slice(take(&mut at)?)
        .map_err(|e| bad(&format!("has unreadable metadata ({e})")))?;
    let tar = take(&mut at)?;
    let model = tract_nnef::nnef()
        .with_onnx()
        .model_for_read(&mut &tar[..])
        .map_err(|e| bad(&format!("cannot be read by tract ({e:#})")))?;
    Ok((meta, model))
}

/// Refuses what a pack cannot give: the model's own outputs (`model_output`), another feature
/// tensor than the packed one.
pub(crate) fn check_request(
    meta: &PackMeta,
    model_output: bool,
    feature_tensor: Option<&str>,
    path: &Path,
) -> Result<()> {
    let refuse = |reason: String| Error::Model {
        path: path.into(),
        reason,
    };
    if model_output {
        return Err(refuse(
            "a packed model holds the backbone only up to its features, not the model's own \
             outputs: use the ONNX file it was packed from"
                .into(),
        ));
    }
    if let Some(tensor) = feature_tensor
        && tensor != meta.fingerprint.feature_tensor
    {
        return Err(refuse(format!(
            "it was packed for tensor '{}', not '{tensor}': pack the ONNX file again with \
             --feature-tensor {tensor}",
            meta.fingerprint.feature_tensor
        )));
    }
    Ok(())
}
