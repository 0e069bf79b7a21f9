//! The model spec: the small JSON file beside an ONNX model that says how to feed it
//! (input size, resize and crop, scaling, mean/std, channel order) and, optionally, which
//! tensor holds the penultimate features. `models/mobilenetv2.json` is the template.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    /// ONNX file name, relative to the spec's folder.
    #[serde(default)]
    pub file: Option<String>,
    /// Expected sha256 of the ONNX file (hex); checked when present.
    #[serde(default)]
    pub sha256: Option<String>,
    pub input: InputSpec,
    pub preprocess: PreprocessSpec,
    /// Penultimate tensor override; found automatically when absent.
    #[serde(default)]
    pub feature_tensor: Option<String>,
    #[serde(default)]
    pub feature_dim: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelOrder {
    #[serde(rename = "RGB")]
    Rgb,
    #[serde(rename = "BGR")]
    Bgr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub layout: Layout,
    pub channels: ChannelOrder,
    pub height: usize,
    pub width: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    /// The image's short side is resized to this many pixels (aspect ratio kept).
    pub resize_short_side: usize,
    /// Only "bilinear-antialias" (PIL's BILINEAR evaluated in float) is implemented.
    #[serde(default = "default_filter")]
    pub resize_filter: String,
    /// Side of the centred square crop; must equal the input height and width.
    pub crop: usize,
    /// Pixel values (0..=255) are multiplied by this before mean/std.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

fn default_filter() -> String {
    "bilinear-antialias".into()
}

impl ModelSpec {
    /// The spec that belongs to a model: `name.onnx` → `name.json`.
    pub fn path_for_model(model: &Path) -> PathBuf {
        model.with_extension("json")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Spec {
                path: path.into(),
                reason: "missing: every model needs a spec JSON beside it \
                         (see models/mobilenetv2.json for the fields)"
                    .into(),
            },
            _ => Error::io(path, e),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let spec: ModelSpec = serde_json::from_str(text).map_err(|e| Error::Spec {
            path: path.into(),
            reason: e.to_string(),
        })?;
        spec.validate().map_err(|reason| Error::Spec {
            path: path.into(),
            reason,
        })?;
        Ok(spec)
    }

    /// The same preprocessing scaled to a `size`×`size` input: the crop becomes `size` and the
    /// short side keeps its ratio to the crop (224 of 256 → 96 of 110).
    pub fn at_input_size(&self, size: usize) -> Result<ModelSpec> {
        let mut spec = self.clone();
        let p = &mut spec.preprocess;
        p.resize_short_side =
            ((size * p.resize_short_side) as f64 / p.crop as f64).round() as usize;
        p.crop = size;
        spec.input.height = size;
        spec.input.width = size;
        spec.name = format!("{} at {size}×{size}", self.name);
        spec.sha256 = None;
        spec.validate()
            .map_err(|reason| Error::InvalidArgument(format!("input size {size}: {reason}")))?;
        Ok(spec)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let p = &self.preprocess;
        if p.resize_filter != "bilinear-antialias" {
            return Err(format!(
                "resize_filter '{}' is not supported (use \"bilinear-antialias\")",
                p.resize_filter
            ));
        }
        if self.input.height != self.input.width || p.crop != self.input.height {
            return Err(format!(
                "crop ({}) must equal the input height and width ({}×{})",
                p.crop, self.input.height, self.input.width
            ));
        }
        if p.crop == 0 || p.crop > 4096 || p.resize_short_side < p.crop {
            return Err(format!(
                "need 0 < crop ({}) <= resize_short_side ({}) and crop <= 4096",
                p.crop, p.resize_short_side
            ));
        }
        if p.resize_short_side > 8192 {
            return Err("resize_short_side is over 8192".into());
        }
        if !(p.scale.is_finite() && p.scale > 0.0) {
            return Err("scale must be a positive number".into());
        }
        if p.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || p.mean.iter().any(|m| !m.is_finite())
        {
            return Err("mean must be finite and std positive".into());
        }
        Ok(())
    }
}
