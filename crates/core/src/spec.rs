//! The model spec: the small JSON file beside an ONNX model that says how to feed it
//! (an image input's size, resize and crop, scaling, mean/std, channel order, or a tensor
//! input's shape) and, optionally, which tensor holds the penultimate features. `fastretrain spec` writes one; every field is
//! described in docs/SPEC.md. Parsing is strict: an unknown or misspelt field is an error,
//! never silently ignored.

use std::path::{Path, PathBuf};

/// The largest square input side a spec takes, in pixels (an image this size is 4096² pixels;
/// a larger one is more likely a typo than a model).
pub const MAX_INPUT_SIDE: usize = 4096;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The fields of each part of a spec, for error messages.
const SPEC_FIELDS: &str = "name, file, sha256, input, preprocess, feature_tensor, \
                           feature_tensors, feature_transform, augment, feature_dim";
const INPUT_FIELDS: &str = "kind, name, layout, channels, height, width (image), shape (tensor)";
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
    pub input: ModelInput,
    /// How an image becomes the input tensor; an image input needs it, a tensor input has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<PreprocessSpec>,
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

/// What the model's input is fed from: decoded images (the default), or float tensors the
/// application computes itself (log-mel frames, sensor windows) and hands over as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawInput", into = "RawInput")]
pub enum ModelInput {
    Image(InputSpec),
    Tensor(TensorInput),
}

/// A float tensor input: one sample's `shape` (the batch axis of 1 left out), fed unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInput {
    /// The graph input's name; checked against the model when present.
    pub name: Option<String>,
    pub shape: Vec<usize>,
}

/// Values in one tensor sample at most (64 Mi floats, 256 MiB).
pub const MAX_TENSOR_VALUES: usize = 1 << 26;

/// The JSON form of [`ModelInput`]: `kind` is `"image"` (the default, so specs written before
/// tensors existed read as they did) or `"tensor"`; each kind takes only its own fields.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layout: Option<Layout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channels: Option<ChannelOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    height: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    width: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shape: Option<Vec<usize>>,
}

impl TryFrom<RawInput> for ModelInput {
    type Error = String;

    fn try_from(raw: RawInput) -> std::result::Result<Self, String> {
        match raw.kind.as_deref().unwrap_or("image") {
            "image" => {
                if raw.shape.is_some() {
                    return Err(
                        "an image input has no shape (it has layout, channels, height, \
                                width); a tensor input is written \"kind\": \"tensor\""
                            .into(),
                    );
                }
                let missing = |field: &str| {
                    format!(
                        "missing field `{field}` of an image input (layout, channels, height, width)"
                    )
                };
                Ok(ModelInput::Image(InputSpec {
                    name: raw.name,
                    layout: raw.layout.ok_or_else(|| missing("layout"))?,
                    channels: raw.channels.ok_or_else(|| missing("channels"))?,
                    height: raw.height.ok_or_else(|| missing("height"))?,
                    width: raw.width.ok_or_else(|| missing("width"))?,
                }))
            }
            "tensor" => {
                if raw.layout.is_some()
                    || raw.channels.is_some()
                    || raw.height.is_some()
                    || raw.width.is_some()
                {
                    return Err(
                        "a tensor input takes name and shape only (layout, channels, \
                                height and width are for images)"
                            .into(),
                    );
                }
                let shape = raw.shape.ok_or(
                    "missing field `shape` of a tensor input: one \
                     sample's dimensions without the batch axis, e.g. [40, 98]",
                )?;
                if shape.is_empty() || shape.contains(&0) {
                    return Err(format!(
                        "tensor shape {shape:?} must have at least one axis, none of them 0"
                    ));
                }
                if shape
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .is_none_or(|n| n > MAX_TENSOR_VALUES)
                {
                    return Err(format!(
                        "tensor shape {shape:?} is over {MAX_TENSOR_VALUES} values per sample"
                    ));
                }
                Ok(ModelInput::Tensor(TensorInput {
                    name: raw.name,
                    shape,
                }))
            }
            other => Err(format!(
                "unknown input kind '{other}' (known: image, tensor)"
            )),
        }
    }
}

impl From<ModelInput> for RawInput {
    fn from(input: ModelInput) -> Self {
        match input {
            ModelInput::Image(i) => RawInput {
                kind: None,
                name: i.name,
                layout: Some(i.layout),
                channels: Some(i.channels),
                height: Some(i.height),
                width: Some(i.width),
                shape: None,
            },
            ModelInput::Tensor(t) => RawInput {
                kind: Some("tensor".into()),
                name: t.name,
                layout: None,
                channels: None,
                height: None,
                width: None,
                shape: Some(t.shape),
            },
        }
    }
}

impl ModelInput {
    /// The graph input's name, when the spec gives it.
    pub fn name(&self) -> Option<&str> {
        match self {
            ModelInput::Image(i) => i.name.as_deref(),
            ModelInput::Tensor(t) => t.name.as_deref(),
        }
    }

    /// The image input, None for a tensor input.
    pub fn image(&self) -> Option<&InputSpec> {
        match self {
            ModelInput::Image(i) => Some(i),
            ModelInput::Tensor(_) => None,
        }
    }

    /// The tensor input, None for an image input.
    pub fn tensor(&self) -> Option<&TensorInput> {
        match self {
            ModelInput::Tensor(t) => Some(t),
            ModelInput::Image(_) => None,
        }
    }

    /// The layout that decides how 4-D feature tensors are pooled: an image's own, NCHW (the
    /// ONNX convention) for a tensor input.
    pub fn layout(&self) -> Layout {
        match self {
            ModelInput::Image(i) => i.layout,
            ModelInput::Tensor(_) => Layout::Nchw,
        }
    }

    /// The input tensor's shape for one sample, batch axis (1) first: what the backbone is
    /// run on.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            ModelInput::Image(i) => match i.layout {
                Layout::Nchw => vec![1, 3, i.height, i.width],
                Layout::Nhwc => vec![1, i.height, i.width, 3],
            },
            ModelInput::Tensor(t) => std::iter::once(1).chain(t.shape.iter().copied()).collect(),
        }
    }

    /// "image" or "tensor", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelInput::Image(_) => "image",
            ModelInput::Tensor(_) => "tensor",
        }
    }
}

/// An image input: the tensor is one RGB image in `layout`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// The graph input's name; checked against the model when present.
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
    /// Not an image model: the input is a float tensor (log-mel frames, sensor windows) that
    /// the application computes and feeds as it is; no preprocessing.
    Tensor,
}

impl Preset {
    pub const NAMES: &'static str = "imagenet, inception, raw255, unit, caffe, tensor";

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "imagenet" => Preset::Imagenet,
            "inception" => Preset::Inception,
            "raw255" => Preset::Raw255,
            "unit" => Preset::Unit,
            "caffe" => Preset::Caffe,
            "tensor" => Preset::Tensor,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown preset '{other}' (known: {})",
                    Self::NAMES
                )));
            }
        })
    }

    /// Channel order and preprocessing for a `size`×`size` input; the resize filter is the
    /// 8-bit one that torchvision's pipeline uses. None for [`Preset::Tensor`].
    pub fn preprocess(self, size: usize) -> Option<(ChannelOrder, PreprocessSpec)> {
        let margin = |ratio: f64| ((size as f64) * ratio).round() as usize;
        let (order, short, scale, mean, std) = match self {
            Preset::Tensor => return None,
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
        Some((order, spec))
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
        let (ModelInput::Image(input), Some(p)) = (&mut spec.input, &mut spec.preprocess) else {
            return Err(Error::InvalidArgument(format!(
                "input size {size}: '{}' takes a tensor, not an image; its shape is the model's \
                 own",
                self.name
            )));
        };
        p.resize_short_side =
            ((size * p.resize_short_side) as f64 / p.crop as f64).round() as usize;
        p.crop = size;
        input.height = size;
        input.width = size;
        spec.name = format!("{} at {size}×{size}", self.name);
        spec.sha256 = None;
        spec.validate()
            .map_err(|reason| Error::InvalidArgument(format!("input size {size}: {reason}")))?;
        Ok(spec)
    }

    /// The image input and its preprocessing, None for a tensor input.
    pub fn image(&self) -> Option<(&InputSpec, &PreprocessSpec)> {
        Some((self.input.image()?, self.preprocess.as_ref()?))
    }

    /// The spec as written by `spec`: pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a spec always serialises");
        text.push('\n');
        text
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let (input, p) = match (&self.input, &self.preprocess) {
            (ModelInput::Image(input), Some(p)) => (input, p),
            (ModelInput::Image(_), None) => {
                return Err(format!(
                    "missing field `preprocess`: an image input needs its preprocessing \
                     ({PREPROCESS_FIELDS}); `fastretrain spec --preset …` writes it"
                ));
            }
            (ModelInput::Tensor(_), Some(_)) => {
                return Err(
                    "a tensor input takes no preprocess: the application feeds the \
                            model's own values; remove \"preprocess\""
                        .into(),
                );
            }
            (ModelInput::Tensor(_), None) => return self.validate_features(),
        };
        if input.height != input.width || p.crop != input.height {
            return Err(format!(
                "crop ({}) must equal the input height and width ({}×{})",
                p.crop, input.height, input.width
            ));
        }
        if p.crop == 0 || p.crop > MAX_INPUT_SIDE || p.resize_short_side < p.crop {
            return Err(format!(
                "need 0 < crop ({}) <= resize_short_side ({}) and crop <= {MAX_INPUT_SIDE}",
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
        self.validate_features()
    }

    fn validate_features(&self) -> std::result::Result<(), String> {
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
