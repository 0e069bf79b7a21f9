//! The model spec: the small JSON file beside an ONNX model that says how to feed it
//! (input size, resize and crop, scaling, mean/std, channel order) and, optionally, which
//! tensor holds the penultimate features. `fastretrain spec` writes one; every field is
//! described in docs/SPEC.md. Parsing is strict: an unknown or misspelt field is an error,
//! never silently ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The fields of each part of a spec, for error messages.
const SPEC_FIELDS: &str = "name, file, sha256, input, preprocess, feature_tensor, \
                           feature_tensors, feature_transform, augment, feature_dim";
const INPUT_FIELDS: &str = "name, layout, channels, height, width";
const PREPROCESS_FIELDS: &str = "resize_short_side, resize_filter, crop, scale, mean, std";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// One tensor read as it is (flattened, untransformed): the only form before feature
    /// recipes existed. Found automatically when neither this nor `feature_tensors` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_tensor: Option<String>,
    /// Several tensors, 4-D ones global-average-pooled, concatenated in this order
    /// ([`crate::feature_recipe`]); `spec` writes the automatic choice here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_tensors: Option<Vec<String>>,
    /// Transform of the feature vector (none, ssqrt, l2, ssqrt+l2); default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_transform: Option<Transform>,
    /// What `learn` adds to each image (none, hflip); default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
    /// Values of the features (of the recipe as a whole); checked when present.
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

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        }
    }

    /// The axes of a 4-D input in this layout: (channels, height, width).
    pub fn axes(self) -> (usize, usize, usize) {
        match self {
            Layout::Nchw => (1, 2, 3),
            Layout::Nhwc => (3, 1, 2),
        }
    }

    /// The axis a mirror image (left to right) reverses.
    pub fn width_axis(self) -> usize {
        self.axes().2
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelOrder {
    #[serde(rename = "RGB")]
    Rgb,
    #[serde(rename = "BGR")]
    Bgr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The graph input's name; checked against the model when present.
    #[serde(default)]
    pub name: Option<String>,
    pub layout: Layout,
    pub channels: ChannelOrder,
    pub height: usize,
    pub width: usize,
}

/// How the image is resized: PIL's antialiased BILINEAR, as torchvision's `Resize` runs it on
/// a PIL image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ResizeFilter {
    /// Evaluated in float (PIL mode 'F', one channel at a time): the first filter this project
    /// had, and the default when a spec names none (so older specs and their states keep their
    /// features).
    #[default]
    #[serde(rename = "bilinear-antialias")]
    BilinearAntialias,
    /// Evaluated on 8-bit pixels with PIL's fixed-point arithmetic, rounding to 8 bits after
    /// each pass: what `Image.resize` returns for an RGB image, so what a torchvision
    /// `Resize` → `ToTensor` → `Normalize` pipeline feeds the model. `spec` writes it.
    #[serde(rename = "bilinear-antialias-u8")]
    BilinearAntialiasU8,
}

impl ResizeFilter {
    pub fn name(self) -> &'static str {
        match self {
            ResizeFilter::BilinearAntialias => "bilinear-antialias",
            ResizeFilter::BilinearAntialiasU8 => "bilinear-antialias-u8",
        }
    }
}

/// The input tensor is `(pixel · scale − mean[c]) / std[c]` per channel c, pixels in 0..=255
/// after the resize and crop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// The image's short side is resized to this many pixels (aspect ratio kept).
    pub resize_short_side: usize,
    #[serde(default)]
    pub resize_filter: ResizeFilter,
    /// Side of the centred square crop; must equal the input height and width.
    pub crop: usize,
    /// Pixel values (0..=255) are multiplied by this before mean/std.
    pub scale: f32,
    /// Per channel (R, G, B), in the units after `scale`.
    #[serde(deserialize_with = "three_values")]
    pub mean: [f32; 3],
    #[serde(deserialize_with = "three_values")]
    pub std: [f32; 3],
}

/// `mean` and `std` take exactly three numbers; a clear message otherwise.
fn three_values<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<[f32; 3], D::Error> {
    let values = Vec::<f32>::deserialize(d)?;
    <[f32; 3]>::try_from(values.as_slice()).map_err(|_| {
        serde::de::Error::custom(format!(
            "expected 3 values (R, G, B), got {}: {values:?}",
            values.len()
        ))
    })
}

/// A transform of the whole feature vector, applied after pooling and concatenation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Transform {
    #[default]
    #[serde(rename = "none")]
    None,
    /// Signed square root, sign(x)·√|x| (power normalisation).
    #[serde(rename = "ssqrt")]
    SignedSqrt,
    /// Divided by its Euclidean norm (a zero vector stays zero).
    #[serde(rename = "l2")]
    L2,
    /// Signed square root, then L2.
    #[serde(rename = "ssqrt+l2")]
    SignedSqrtL2,
}

impl Transform {
    pub const NAMES: &'static str = "none, ssqrt, l2, ssqrt+l2";

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "none" => Transform::None,
            "ssqrt" => Transform::SignedSqrt,
            "l2" => Transform::L2,
            "ssqrt+l2" => Transform::SignedSqrtL2,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown feature transform '{other}' (known: {})",
                    Self::NAMES
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::SignedSqrt => "ssqrt",
            Transform::L2 => "l2",
            Transform::SignedSqrtL2 => "ssqrt+l2",
        }
    }

    pub fn signed_sqrt(self) -> bool {
        matches!(self, Transform::SignedSqrt | Transform::SignedSqrtL2)
    }

    pub fn l2(self) -> bool {
        matches!(self, Transform::L2 | Transform::SignedSqrtL2)
    }
}

/// Extra samples learning makes from each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Augment {
    #[default]
    #[serde(rename = "none")]
    None,
    /// The image mirrored left to right (the model's input reversed along its width), learned
    /// with the same label.
    #[serde(rename = "hflip")]
    HorizontalFlip,
}

impl Augment {
    pub const NAMES: &'static str = "none, hflip";

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "none" => Augment::None,
            "hflip" => Augment::HorizontalFlip,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown augmentation '{other}' (known: {})",
                    Self::NAMES
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Augment::None => "none",
            Augment::HorizontalFlip => "hflip",
        }
    }
}

/// Preprocessing conventions of common model families, for `fastretrain spec --preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// torchvision / timm ImageNet models: resize to 256/224 of the input, centre crop,
    /// x/255, ImageNet mean and std.
    Imagenet,
    /// Inception-style (Inception v3, many TF and timm models): resize to 1/0.875 of the input,
    /// x/127.5 − 1.
    Inception,
    /// Pixels as they are (0..255): resize straight to the input, no normalisation.
    Raw255,
    /// Pixels in 0..1: resize straight to the input, x/255.
    Unit,
    /// Caffe / Keras "caffe" mode (VGG, ResNet50 from Keras): BGR, ImageNet mean pixel
    /// subtracted, no scaling.
    Caffe,
}

impl Preset {
    pub const NAMES: &'static str = "imagenet, inception, raw255, unit, caffe";

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "imagenet" => Preset::Imagenet,
            "inception" => Preset::Inception,
            "raw255" => Preset::Raw255,
            "unit" => Preset::Unit,
            "caffe" => Preset::Caffe,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown preset '{other}' (known: {})",
                    Self::NAMES
                )));
            }
        })
    }

    /// Channel order and preprocessing for a `size`×`size` input; the resize filter is the
    /// 8-bit one that torchvision's pipeline uses.
    pub fn preprocess(self, size: usize) -> (ChannelOrder, PreprocessSpec) {
        let margin = |ratio: f64| ((size as f64) * ratio).round() as usize;
        let (order, short, scale, mean, std) = match self {
            Preset::Imagenet => (
                ChannelOrder::Rgb,
                margin(256.0 / 224.0),
                1.0 / 255.0,
                [0.485, 0.456, 0.406],
                [0.229, 0.224, 0.225],
            ),
            Preset::Inception => (
                ChannelOrder::Rgb,
                margin(1.0 / 0.875),
                1.0 / 255.0,
                [0.5; 3],
                [0.5; 3],
            ),
            Preset::Raw255 => (ChannelOrder::Rgb, size, 1.0, [0.0; 3], [1.0; 3]),
            Preset::Unit => (ChannelOrder::Rgb, size, 1.0 / 255.0, [0.0; 3], [1.0; 3]),
            Preset::Caffe => (
                ChannelOrder::Bgr,
                margin(256.0 / 224.0),
                1.0,
                [123.68, 116.779, 103.939],
                [1.0; 3],
            ),
        };
        let spec = PreprocessSpec {
            resize_short_side: short,
            resize_filter: ResizeFilter::BilinearAntialiasU8,
            crop: size,
            scale,
            mean,
            std,
        };
        (order, spec)
    }
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
                reason: format!(
                    "missing: every model needs a spec JSON beside it; write it with \
                     `fastretrain spec --model {}` (docs/SPEC.md)",
                    path.with_extension("onnx").display()
                ),
            },
            _ => Error::io(path, e),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let spec: ModelSpec = serde_json::from_str(text).map_err(|e| Error::Spec {
            path: path.into(),
            reason: explain_parse_error(&e.to_string()),
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

    /// The spec as written by `spec`: pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a spec always serialises");
        text.push('\n');
        text
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let p = &self.preprocess;
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
            return Err(
                "preprocess.scale must be a positive number (1/255 for inputs in 0..1)".into(),
            );
        }
        if p.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || p.mean.iter().any(|m| !m.is_finite())
        {
            return Err("preprocess.mean must be finite and preprocess.std positive".into());
        }
        if self.feature_tensor.is_some() && self.feature_tensors.is_some() {
            return Err(
                "give feature_tensor (one tensor as it is) or feature_tensors (a \
                        pooled, concatenated set), not both"
                    .into(),
            );
        }
        if let Some(tensors) = &self.feature_tensors {
            if tensors.is_empty() || tensors.iter().any(String::is_empty) {
                return Err("feature_tensors must name at least one tensor, each by name".into());
            }
            if let Some(t) = tensors
                .iter()
                .enumerate()
                .find_map(|(i, t)| tensors[..i].contains(t).then_some(t))
            {
                return Err(format!("feature_tensors names '{t}' twice"));
            }
        }
        if self.feature_dim == Some(0) {
            return Err("feature_dim must be positive (or left out)".into());
        }
        Ok(())
    }
}

/// serde's message (it names the field, the expected ones and the line), with where to look.
fn explain_parse_error(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        format!(
            "{message}; a spec takes {{{SPEC_FIELDS}}}, its input {{{INPUT_FIELDS}}}, its \
             preprocess {{{PREPROCESS_FIELDS}}} (docs/SPEC.md; `fastretrain spec --model M` \
             writes a spec)"
        )
    } else {
        message.into()
    }
}
