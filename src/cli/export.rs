//! `export` and `resize-input`: writing ONNX models.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use fastretrain::feature_recipe::Augment;

use fastretrain::state::State;

use super::common::{DEFAULT_MODEL, print_json, shipped};

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The adapted state whose head to export.
    #[arg(long, required_unless_present = "original_head")]
    state: Option<PathBuf>,
    /// Export the model's own dense head (labels 0, 1, …) instead of a state's: the exported
    /// file must then give the model's own outputs (a check that the export keeps the backbone).
    #[arg(long, requires = "model", conflicts_with = "state")]
    original_head: bool,
    /// ONNX file to write (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// The backbone model (default: the state's); must be the file the state was learned with.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Test-time augmentation in the exported graph: `hflip` runs each image with its mirror
    /// and averages their features (`predict --tta hflip`'s scores); `none` (default).
    #[arg(long, default_value = "none", conflicts_with = "original_head")]
    tta: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct PackArgs {
    /// The ONNX model to pack (its spec JSON must be beside it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tensor to pack up to (default: the one `learn` would use).
    #[arg(long)]
    feature_tensor: Option<String>,
    /// The packed model to write; give it to --model of any command in place of the ONNX file.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ResizeInputArgs {
    /// The model to copy (its spec JSON must be beside it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Side of the new square input, in pixels (1 to 4096).
    #[arg(long, value_parser = super::common::parse_input_side)]
    size: usize,
    /// The new ONNX file; its spec is written beside it (`.json`).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

pub(crate) fn export(a: ExportArgs) -> Result<bool> {
    let report = match &a.state {
        Some(state_path) => {
            let state = State::load(state_path)?;
            let model = match &a.model {
                Some(model) => model.clone(),
                None => state.model_file(state_path)?,
            };
            let flip_average = match Augment::parse(&a.tta)? {
                Augment::None => false,
                Augment::HorizontalFlip => true,
            };
            fastretrain::export::export_with(&state, &model, &a.out, flip_average)?
        }
        None => {
            let model = a.model.as_ref().context("--original-head needs --model")?;
            fastretrain::export::export_original(model, &a.out)?
        }
    };
    if a.json {
        print_json(&report)?;
    } else {
        println!(
            "exported {} ({} classes{}, output '{}', {} bytes)",
            a.out.display(),
            report.classes,
            if report.hidden.is_empty() {
                String::new()
            } else {
                format!(", hidden layers {:?}", report.hidden)
            },
            report.output,
            report.bytes
        );
        if !report.data_files_inlined.is_empty() {
            println!(
                "the model's weights from {} are inside {}: one file, no data file to carry",
                report.data_files_inlined.join(", "),
                a.out.display()
            );
        }
    }
    Ok(true)
}

pub(crate) fn resize_input(a: ResizeInputArgs) -> Result<bool> {
    let model = a.model.unwrap_or_else(|| shipped(DEFAULT_MODEL));
    let report = fastretrain::export::resize_input(&model, a.size, &a.out)?;
    if a.json {
        print_json(&report)?;
    } else {
        println!(
            "wrote {} ({}×{} input) and {}",
            report.out.display(),
            report.size,
            report.size,
            report.spec.display()
        );
    }
    Ok(true)
}

pub(crate) fn pack(a: PackArgs) -> Result<bool> {
    let model = a.model.unwrap_or_else(|| shipped(DEFAULT_MODEL));
    let report = fastretrain::export::pack(&model, a.feature_tensor.as_deref(), &a.out)?;
    if a.json {
        print_json(&report)?;
    } else {
        println!(
            "wrote {} ({:.1} MB): {} up to tensor '{}' ({} features)",
            report.out.display(),
            report.bytes as f64 / 1e6,
            model.display(),
            report.feature_tensor,
            report.feature_dim
        );
    }
    Ok(true)
}
