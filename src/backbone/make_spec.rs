//! `fastretrain spec`: a model spec written from the model itself (input layout and size,
//! feature tensor, labels) and what the user asked for.

use std::path::Path;

use super::{Backbone, LoadOptions};
use crate::error::{Error, Result};
use crate::feature_recipe::Augment;
use crate::onnx::{dims, graph_of, image_input, read_model, show_dims};
use crate::spec::{InputSpec, Layout, ModelInput, ModelSpec, PreprocessSpec, Preset, TensorInput};

/// What `fastretrain spec` needs to know beyond the model itself.
#[derive(Debug, Clone)]
pub struct SpecRequest {
    pub preset: Preset,
    /// Input side for a model whose spatial size is not fixed in the graph (default 224).
    pub size: Option<usize>,
    /// Layout, when the graph does not tell (no axis of 3 channels at 1 or 3).
    pub layout: Option<Layout>,
    pub feature_tensor: Option<String>,
    /// For [`Preset::Tensor`]: one sample's shape (batch axis left out), for a model whose
    /// input axes are not all fixed in the graph.
    pub shape: Option<Vec<usize>>,
}

/// Writes the spec of `model` from its graph: sha256, input name, layout and size read from
/// the graph, preprocessing from the preset, and the feature tensor and its size found by
/// loading the model with that spec (so the spec is known to work).
pub fn make_spec(model: &Path, request: &SpecRequest) -> Result<ModelSpec> {
    let (proto, sha256) = read_model(model)?;
    let bad = |reason: String| Error::Model {
        path: model.into(),
        reason,
    };
    let graph = graph_of(&proto, model)?;
    let input = image_input(graph, model)?;
    if request.preset == Preset::Tensor {
        let shape = tensor_shape(input, request.shape.as_deref(), model)?;
        let tensor = ModelInput::Tensor(TensorInput {
            name: Some(input.name.clone()),
            shape,
        });
        drop(proto);
        return with_features(model, sha256, tensor, None, request);
    }
    if request.shape.is_some() {
        return Err(Error::InvalidArgument(
            "--shape is for --preset tensor; an image model's input is set by --size".into(),
        ));
    }
    let dims = dims(input).unwrap_or_else(|| vec![None; 4]);
    if dims.len() != 4 {
        return Err(bad(format!(
            "input '{}' has shape {}; fastretrain feeds images as a 4-D tensor (NCHW or NHWC)",
            input.name,
            show_dims(&dims)
        )));
    }
    let layout = match (request.layout, dims[1], dims[3]) {
        (Some(layout), _, _) => layout,
        (None, Some(3), _) => Layout::Nchw,
        (None, _, Some(3)) => Layout::Nhwc,
        _ => {
            return Err(bad(format!(
                "cannot tell the layout of input '{}' {} (no axis of 3 colour channels): \
                 pass --layout NCHW or NHWC",
                input.name,
                show_dims(&dims)
            )));
        }
    };
    let (h, w) = match layout {
        Layout::Nchw => (dims[2], dims[3]),
        Layout::Nhwc => (dims[1], dims[2]),
    };
    let size = match (h, w, request.size) {
        (Some(h), Some(w), _) if h != w => {
            return Err(bad(format!(
                "input '{}' is {h}×{w}; fastretrain feeds square inputs (centre crop)",
                input.name
            )));
        }
        (Some(h), Some(_), Some(size)) if size as i64 != h => {
            return Err(Error::InvalidArgument(format!(
                "{}: the input is fixed at {h}×{h} in the graph; for a {size}×{size} input \
                 write a copy with `fastretrain resize-input --model {} --size {size} --out …` \
                 (it writes that copy's spec too)",
                model.display(),
                model.display()
            )));
        }
        (Some(h), Some(_), _) => h as usize,
        (_, _, Some(size)) => size,
        _ => 224,
    };
    let (channels, preprocess) = request
        .preset
        .preprocess(size)
        .expect("an image preset (tensor returned above)");
    let image = ModelInput::Image(InputSpec {
        name: Some(input.name.clone()),
        layout,
        channels,
        height: size,
        width: size,
    });
    drop(proto);
    with_features(model, sha256, image, Some(preprocess), request)
}

/// One sample's shape for a tensor input: the graph's axes after the batch, each fixed there
/// or given in `requested` (which must agree with the fixed ones).
fn tensor_shape(
    input: &tract_onnx::pb::ValueInfoProto,
    requested: Option<&[usize]>,
    model: &Path,
) -> Result<Vec<usize>> {
    let graph_dims = dims(input);
    let shown = graph_dims
        .as_deref()
        .map(show_dims)
        .unwrap_or("(unknown)".into());
    let Some(graph_dims) = graph_dims else {
        return requested.map(<[usize]>::to_vec).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: input '{}' has no recorded shape: pass one sample's shape, e.g. --shape \
                 40,98",
                model.display(),
                input.name
            ))
        });
    };
    let Some(after_batch) = graph_dims.get(1..).filter(|d| !d.is_empty()) else {
        return Err(Error::Model {
            path: model.into(),
            reason: format!(
                "input '{}' is {shown}: fastretrain feeds a batch axis and at least one more",
                input.name
            ),
        });
    };
    match requested {
        Some(shape) => {
            let agrees = shape.len() == after_batch.len()
                && after_batch
                    .iter()
                    .zip(shape)
                    .all(|(d, &s)| d.is_none_or(|d| d == s as i64));
            if !agrees || shape.contains(&0) {
                return Err(Error::InvalidArgument(format!(
                    "--shape {shape:?} does not fit input '{}' {shown} (one sample: the axes \
                     after the batch)",
                    input.name
                )));
            }
            Ok(shape.to_vec())
        }
        None => after_batch
            .iter()
            .map(|d| d.filter(|&d| d > 0).map(|d| d as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: input '{}' is {shown}, not fixed after the batch axis: pass one \
                     sample's shape with --shape",
                    model.display(),
                    input.name
                ))
            }),
    }
}

/// The spec of `model` (file `sha256`) for `input` fed as `preprocess` says, completed with its
/// feature tensors and their size, found by loading the model with it (so the spec is known
/// to work).
fn with_features(
    model: &Path,
    sha256: String,
    input: ModelInput,
    preprocess: Option<PreprocessSpec>,
    request: &SpecRequest,
) -> Result<ModelSpec> {
    let mut spec = ModelSpec {
        name: model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
        file: model.file_name().map(|f| f.to_string_lossy().into_owned()),
        sha256: Some(sha256),
        input,
        preprocess,
        feature_tensor: request.feature_tensor.clone(),
        feature_tensors: None,
        feature_transform: None,
        augment: None,
        feature_dim: None,
    };
    let backbone = Backbone::load_with(
        model,
        Some(spec.clone()),
        &LoadOptions {
            feature_tensor: request.feature_tensor.clone(),
            ..LoadOptions::default()
        },
    )?;
    let recipe = backbone.recipe();
    if recipe.is_plain() {
        spec.feature_tensor = Some(recipe.tensors[0].clone());
    } else {
        spec.feature_tensor = None;
        spec.feature_tensors = Some(recipe.tensors.clone());
        spec.feature_transform = Some(recipe.transform);
        spec.augment = (recipe.augment != Augment::None).then_some(recipe.augment);
    }
    spec.feature_dim = Some(backbone.feature_dim());
    Ok(spec)
}
