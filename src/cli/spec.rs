//! `fastretrain spec`: write a model's spec JSON from its graph and a preset, or check one.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use fastretrain::feature_recipe::FeatureRecipe;
use serde::Serialize;

use fastretrain::backbone::{Backbone, SpecRequest, make_spec};
use fastretrain::spec::{Layout, ModelSpec, Preset};

#[derive(Args)]
pub struct SpecArgs {
    /// The ONNX model; its spec is `<model>.json` beside it.
    #[arg(long)]
    model: PathBuf,
    /// Preprocessing convention: imagenet (torchvision/timm: x/255, ImageNet mean/std, resize
    /// to 256/224 of the input, centre crop), inception (x/127.5 − 1, resize 1/0.875), raw255
    /// (pixels 0..255), unit (x/255), caffe (BGR, mean pixel subtracted); tensor for a model
    /// that is not fed images (audio frames, sensor windows: float tensors fed as they are).
    #[arg(long, default_value = "imagenet")]
    preset: String,
    /// With --preset tensor: one sample's shape without the batch axis (e.g. 40,98), for a
    /// model whose input axes are not fixed in the graph.
    #[arg(long, value_delimiter = ',', value_parser = super::common::parse_positive)]
    shape: Option<Vec<usize>>,
    /// Input side in pixels, for a model whose input size is not fixed in the graph
    /// (default 224).
    #[arg(long, value_parser = super::common::parse_input_side)]
    size: Option<usize>,
    /// NCHW or NHWC, when the graph does not tell.
    #[arg(long)]
    layout: Option<String>,
    /// The feature tensor, read as it is (default: the automatic recipe, docs/SPEC.md: the
    /// input of the model's last dense layer and the outputs of the last stages before it,
    /// pooled).
    #[arg(long)]
    feature_tensor: Option<String>,
    /// Replace an existing spec.
    #[arg(long)]
    force: bool,
    /// Check the existing spec against the model instead of writing one.
    #[arg(long, conflicts_with_all = ["preset", "size", "layout", "force", "shape"])]
    check: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct SpecReport {
    spec: PathBuf,
    written: bool,
    input: String,
    /// "image" or "tensor".
    kind: &'static str,
    /// An image input's layout, side and resize filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    layout: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resize_filter: Option<&'static str>,
    /// A tensor input's shape for one sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    shape: Option<Vec<usize>>,
    feature_tensor: String,
    feature_dim: usize,
    notes: Vec<String>,
}

pub fn run(a: SpecArgs) -> Result<bool> {
    let spec_path = ModelSpec::path_for_model(&a.model);
    let (spec, written, notes) = if a.check {
        // Loading checks everything the spec says against the model: sha256, file, input
        // name, layout, size, feature tensor and its size.
        let backbone = Backbone::load(&a.model, None, a.feature_tensor.as_deref())?;
        let mut spec = backbone.spec().clone();
        spec.feature_dim = Some(backbone.feature_dim());
        if spec.feature_tensor.is_none() && spec.feature_tensors.is_none() {
            spec.feature_tensor = Some(backbone.fingerprint().feature_tensor.clone());
        }
        let mut notes = Vec::new();
        if backbone.spec().sha256.is_none() {
            notes.push(
                "no sha256: the spec is not tied to this file (`spec --force` writes one that is)"
                    .to_string(),
            );
        }
        (spec, false, notes)
    } else {
        if spec_path.exists() && !a.force {
            bail!(
                "{} exists; check it with `fastretrain spec --model {} --check`, or replace it \
                 with --force",
                spec_path.display(),
                a.model.display()
            );
        }
        let layout = match a.layout.as_deref() {
            None => None,
            Some("NCHW" | "nchw") => Some(Layout::Nchw),
            Some("NHWC" | "nhwc") => Some(Layout::Nhwc),
            Some(other) => bail!("--layout must be NCHW or NHWC, got '{other}'"),
        };
        let request = SpecRequest {
            preset: Preset::parse(&a.preset)?,
            size: a.size,
            layout,
            feature_tensor: a.feature_tensor.clone(),
            shape: a.shape.clone(),
        };
        let spec = make_spec(&a.model, &request)?;
        fastretrain::state::write_atomically(&spec_path, spec.to_json().as_bytes())?;
        (spec, true, Vec::new())
    };
    let report = SpecReport {
        spec: spec_path,
        written,
        input: spec.input.name().unwrap_or_default().to_string(),
        kind: spec.input.kind(),
        layout: spec.input.image().map(|i| i.layout.name()),
        size: spec.input.image().map(|i| i.height),
        resize_filter: spec.image().map(|(_, p)| p.resize_filter.name()),
        shape: spec.input.tensor().map(|t| t.shape.clone()),
        feature_tensor: FeatureRecipe::from_spec(&spec)?
            .map(|r| r.descriptor())
            .unwrap_or_default(),
        feature_dim: spec.feature_dim.unwrap_or_default(),
        notes,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let input = match (
            &report.shape,
            report.layout,
            report.size,
            report.resize_filter,
        ) {
            (Some(shape), ..) => format!("tensor {shape:?}"),
            (None, Some(layout), Some(size), Some(filter)) => {
                format!("{layout} {size}×{size}, resize {filter}")
            }
            _ => unreachable!("an image input has a layout, size and filter"),
        };
        println!(
            "{} {}: input '{}' {input}, features '{}' ({} values)",
            if written { "wrote" } else { "checked" },
            report.spec.display(),
            report.input,
            report.feature_tensor,
            report.feature_dim,
        );
        for note in &report.notes {
            println!("note: {note}");
        }
    }
    Ok(true)
}
