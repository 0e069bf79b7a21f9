//! What several commands share: data and model arguments, loading a state's backbone or a
//! model as it is, the writer lock, progress bars and JSON/store printing.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use fastretrain::backbone::{Backbone, LoadOptions};
use fastretrain::data::{DataOptions, DataSource, Shard};
use fastretrain::feature_recipe::{Augment, FeatureRecipe, Transform};
use fastretrain::retrainer::Retrainer;
use fastretrain::state::{State, StateLock};
use fastretrain::store::{FeatureBatches, FeatureStore};

pub(crate) const DEFAULT_MODEL: &str = "models/mobilenetv2.onnx";

pub(crate) const DEFAULT_DEMO_DATA: &str = "data/fashion-mnist";

#[derive(Args)]
pub(crate) struct DataArgs {
    /// Sample folder (root/<label>/*.png|jpg, or *.npy tensors), IDX images file, or a .npy
    /// array of samples (first axis) with its labels.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Labels of an IDX file (default: the images file name with images-idx3 → labels-idx1)
    /// or of a .npy array (an integer .npy, or text with one label per line; default
    /// <name>-labels.npy or <name>-labels.txt beside it).
    #[arg(long)]
    pub(crate) labels: Option<PathBuf>,
    /// File with one name per label number of IDX or integer .npy labels (default:
    /// labels.txt beside the data).
    #[arg(long)]
    pub(crate) label_names: Option<PathBuf>,
    /// Use at most this many samples (1 or more).
    #[arg(long, value_parser = parse_positive)]
    pub(crate) limit: Option<usize>,
    /// Read only part i of k (from 0) of the data: contiguous parts, after --limit. States
    /// learned from the k parts on k machines merge into the state of the whole, and each
    /// part resumes on its own.
    #[arg(long, value_name = "I/K", value_parser = parse_shard)]
    pub(crate) shard: Option<Shard>,
}

pub(crate) use fastretrain::backbone::MAX_THREADS;

/// A thread count in 1..=[`MAX_THREADS`] (`--threads`, `bench --parallel`).
pub(crate) fn parse_thread_count(text: &str) -> std::result::Result<usize, String> {
    parse_in::<1, MAX_THREADS>(text)
}

/// A whole number in `MIN..=MAX` (a count or a size: `-k`, `--limit`, `--size`, …). A value
/// outside is refused by the argument parser (exit 2, the range named) before anything runs.
pub(crate) fn parse_in<const MIN: usize, const MAX: usize>(
    text: &str,
) -> std::result::Result<usize, String> {
    let range = if MAX == usize::MAX {
        format!("{MIN} or more")
    } else {
        format!("{MIN}..={MAX}")
    };
    match text.trim().parse::<u128>() {
        Ok(n) if (MIN as u128..=MAX as u128).contains(&n) => Ok(n as usize),
        Ok(n) => Err(format!("{n} is outside {range}")),
        Err(_) => Err(format!("'{text}' is not a whole number in {range}")),
    }
}

/// At least one (`-k`, `--limit`, `--checkpoint-every`, …).
pub(crate) fn parse_positive(text: &str) -> std::result::Result<usize, String> {
    parse_in::<1, { usize::MAX }>(text)
}

/// A square input side in pixels: 1..=[`MAX_INPUT_SIDE`] (`spec`, `resize-input`, `retrain`).
pub(crate) fn parse_input_side(text: &str) -> std::result::Result<usize, String> {
    parse_in::<1, MAX_INPUT_SIDE>(text)
}

pub(crate) use fastretrain::spec::MAX_INPUT_SIDE;

fn parse_shard(text: &str) -> std::result::Result<Shard, String> {
    Shard::parse(text).map_err(|e| e.to_string())
}

impl DataArgs {
    /// The data source; `--data` is required.
    pub(crate) fn open(&self) -> Result<DataSource> {
        self.open_optional()?
            .context("--data is required: a sample folder, an IDX images file or a .npy array")
    }

    /// The data source, or None when `--data` was left out (for commands that also take
    /// `--store`).
    pub(crate) fn open_optional(&self) -> Result<Option<DataSource>> {
        let Some(data) = &self.data else {
            return Ok(None);
        };
        let source = DataSource::open(
            data,
            &DataOptions {
                idx_labels: self.labels.clone(),
                label_names: self.label_names.clone(),
                limit: self.limit,
                shard: self.shard,
            },
        )?;
        for warning in source.warnings() {
            eprintln!("warning: {warning}");
        }
        Ok(Some(source))
    }
}

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// ONNX model (default: the state's model, else models/mobilenetv2.onnx).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Tensor to read features from; repeat it for several (4-D ones pooled, concatenated).
    /// Default: the state's recipe, else the spec's, else the automatic one (docs/SPEC.md).
    #[arg(long)]
    pub(crate) feature_tensor: Vec<String>,
    /// Transform of the feature vector: none, ssqrt, l2, ssqrt+l2 (default: the state's, else
    /// the spec's, else none).
    #[arg(long)]
    pub(crate) transform: Option<String>,
    /// What learning adds to each image: none, hflip (its mirror) (default: the state's, else
    /// the spec's, else none).
    #[arg(long)]
    pub(crate) augment: Option<String>,
}

impl ModelArgs {
    /// The model file: as given, else the shipped one.
    pub(crate) fn model_or_default(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(|| shipped(DEFAULT_MODEL))
    }

    /// How to load the backbone for a new state or store: the tensors, transform and
    /// augmentation given (the rest from the spec, else automatic).
    pub(crate) fn load_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            feature_tensor: self.tensors(Transform::None, Augment::None)?,
            transform: self
                .transform
                .as_deref()
                .map(Transform::parse)
                .transpose()?,
            augment: self.augment.as_deref().map(Augment::parse).transpose()?,
            ..LoadOptions::default()
        })
    }

    /// The tensors given, as one descriptor (a single one as given: a name or a descriptor).
    fn tensors(&self, transform: Transform, augment: Augment) -> Result<Option<String>> {
        Ok(match self.feature_tensor.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => Some(FeatureRecipe::new(many.to_vec(), transform, augment)?.descriptor()),
        })
    }

    /// The descriptor to read an existing state's features with: the state's recipe, with
    /// whatever was given in its place (a different recipe is then refused as another
    /// backbone).
    pub(crate) fn descriptor_for(&self, state: &State) -> Result<Option<String>> {
        if self.feature_tensor.is_empty() && self.transform.is_none() && self.augment.is_none() {
            return Ok(None);
        }
        let stated = FeatureRecipe::parse(&state.backbone().feature_tensor)?;
        let tensors = match self.feature_tensor.as_slice() {
            [] => stated.tensors.clone(),
            [one] => FeatureRecipe::parse(one)?.tensors,
            many => many.to_vec(),
        };
        let transform = match &self.transform {
            Some(t) => Transform::parse(t)?,
            None => stated.transform,
        };
        let augment = match &self.augment {
            Some(a) => Augment::parse(a)?,
            None => stated.augment,
        };
        let recipe =
            if self.feature_tensor.len() == 1 && self.transform.is_none() && self.augment.is_none()
            {
                FeatureRecipe::parse(&self.feature_tensor[0])?
            } else {
                FeatureRecipe::new(tensors, transform, augment)?
            };
        Ok(Some(recipe.descriptor()))
    }
}

/// A path shipped with the project: as given if it exists, else relative to the source tree.
pub(crate) fn shipped(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.exists() {
        return p;
    }
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if in_tree.exists() { in_tree } else { p }
}

pub(crate) fn progress_bar(len: usize, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Loads the backbone for an existing state ([`Retrainer::backbone_for`]).
pub(crate) fn backbone_for_state(
    state: &State,
    state_path: &Path,
    model: &ModelArgs,
) -> Result<Backbone> {
    Ok(Retrainer::backbone_for(
        state,
        state_path,
        model.model.as_deref(),
        model.descriptor_for(state)?.as_deref(),
    )?)
}

pub(crate) fn open_retrainer(state_path: &Path, model: &ModelArgs) -> Result<Retrainer> {
    let state = State::load(state_path)?;
    let backbone = backbone_for_state(&state, state_path, model)?;
    Ok(Retrainer::new(backbone, state, state_path)?)
}

/// The model as it is, classifying with its own outputs (`predict`/`eval` without a state).
pub(crate) fn model_as_is(model: &ModelArgs, label_names: Option<&Path>) -> Result<Retrainer> {
    let path = model.model_or_default();
    let options = LoadOptions {
        model_output: true,
        ..LoadOptions::default()
    };
    let backbone = Backbone::load_with(&path, None, &options)?;
    let names = label_names
        .map(fastretrain::data::read_label_names)
        .transpose()?;
    Ok(Retrainer::model_as_is(backbone, names)?)
}

/// Saves a state a command changed, then says on stderr what its user should know about it
/// (one label, labels with very few samples).
pub(crate) fn save_state(state: &State, path: &Path) -> Result<()> {
    state.save(path)?;
    for warning in state.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

pub(crate) fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Takes the state's writer lock, saying so on stderr if another process holds it.
pub(crate) fn lock_state(path: &Path, no_wait: bool) -> Result<StateLock> {
    match StateLock::acquire(path, false) {
        Err(fastretrain::Error::Locked { .. }) if !no_wait => {
            eprintln!(
                "waiting: another fastretrain process is writing {}",
                path.display()
            );
            Ok(StateLock::acquire(path, true)?)
        }
        other => Ok(other?),
    }
}

#[derive(Serialize)]
pub(crate) struct StoreReport {
    pub(crate) store: String,
    pub(crate) backbone: String,
    pub(crate) precision: String,
    pub(crate) rows: u64,
    pub(crate) labels: usize,
    pub(crate) bytes: u64,
}

pub(crate) fn store_report(store: &FeatureStore) -> StoreReport {
    StoreReport {
        store: store.path().display().to_string(),
        backbone: store.backbone().to_string(),
        precision: store.header().precision.to_string(),
        rows: store.rows(),
        labels: store.labels().len(),
        bytes: store.bytes(),
    }
}

pub(crate) fn print_store(s: &StoreReport) {
    println!(
        "store {}: {} rows, {} labels, {} features, {} bytes",
        s.store, s.rows, s.labels, s.precision, s.bytes
    );
}
