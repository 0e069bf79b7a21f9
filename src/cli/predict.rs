//! `predict`, `eval` and `info`: using a state (or a model as it is) and reading one.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use fastretrain::evaluation::{EvalReport, evaluate_features};
use fastretrain::feature_recipe::{Augment, FeatureRecipe};
use fastretrain::retrainer::Retrainer;
use fastretrain::state::State;
use fastretrain::store::FeatureStore;

use super::common::{
    DataArgs, ModelArgs, backbone_for_state, model_as_is, open_retrainer, print_json, progress_bar,
};

#[derive(Args)]
pub(crate) struct PredictArgs {
    /// The adapted state to predict with. Without it, `--model` classifies with its own
    /// outputs (scores are the model's output values).
    #[arg(long, required_unless_present = "model")]
    state: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Without --state: a file naming the model's classes, one per line in output order
    /// (default: classes are numbered 0, 1, …).
    #[arg(long, conflicts_with = "state")]
    label_names: Option<PathBuf>,
    /// How many labels to show per image (1 or more; more than there are labels shows all).
    #[arg(long, short = 'k', default_value_t = 3, value_parser = super::common::parse_positive)]
    top_k: usize,
    /// Test-time augmentation: `hflip` scores the mean of each image's features and its
    /// mirror's (twice the time); `none` (default) the image alone.
    #[arg(long, default_value = "none")]
    tta: String,
    #[arg(long)]
    json: bool,
    /// PNG or JPEG files; for a model fed with tensors, .npy files of one sample or of an
    /// array of samples (first axis).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// The adapted state to evaluate. Without it, `--model` is evaluated with its own outputs:
    /// data labels are class numbers or names from `--label-names`.
    #[arg(long, required_unless_present = "model")]
    state: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Or: stored features to evaluate on (from `extract`; no backbone run).
    #[arg(long, conflicts_with = "data")]
    store: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Exit with code 1 if the accuracy is below this (0..1).
    #[arg(long)]
    min_accuracy: Option<f64>,
    /// Test-time augmentation: `hflip` scores the mean of each image's features and its
    /// mirror's (twice the time); `none` (default) the image alone.
    #[arg(long, default_value = "none")]
    tta: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct InfoArgs {
    #[arg(long)]
    state: PathBuf,
    #[arg(long)]
    json: bool,
}

/// `--tta`: whether to average each image's features with its mirror's.
fn flip_average(tta: &str) -> Result<bool> {
    match Augment::parse(tta)? {
        Augment::None => Ok(false),
        Augment::HorizontalFlip => Ok(true),
    }
}

pub(crate) fn predict(a: PredictArgs) -> Result<bool> {
    let mut retrainer = match &a.state {
        Some(state_path) => {
            // Only the head is needed: the statistics (6.6 MB for MobileNetV2) are not even
            // decoded, which keeps start-up and the peak memory down on a board.
            let state = State::load_head_only(state_path)?;
            let backbone = backbone_for_state(&state, state_path, &a.model)?;
            Retrainer::new(backbone, state, state_path)?
        }
        None => model_as_is(&a.model, a.label_names.as_deref())?,
    };
    retrainer.set_flip_average(flip_average(&a.tta)?)?;
    let mut predictions = Vec::new();
    for path in &a.images {
        predictions.extend(retrainer.predict_path(path, a.top_k.max(1))?);
    }
    if a.json {
        print_json(&predictions)?;
    } else {
        for p in &predictions {
            let top: Vec<String> = p
                .top
                .iter()
                .map(|s| format!("{} ({:.3})", s.label, s.score))
                .collect();
            println!("{}: {}", p.file, top.join(", "));
        }
    }
    Ok(true)
}

pub(crate) fn eval(a: EvalArgs) -> Result<bool> {
    if let Some(m) = a.min_accuracy
        && !(0.0..=1.0).contains(&m)
    {
        bail!("--min-accuracy must be between 0 and 1, got {m}");
    }
    let report = match (&a.store, a.data.open_optional()?) {
        (Some(_), None) if flip_average(&a.tta)? => {
            bail!("--tta needs images (--data): a store holds the features of the images alone")
        }
        (Some(path), None) => {
            let store = FeatureStore::open(path)?;
            let state_path = a
                .state
                .as_ref()
                .context("evaluating stored features needs the --state whose head to use")?;
            let state = State::load(state_path)?;
            // A state learned with mirrors scores the features of the images alone.
            let mut features = state.backbone().clone();
            features.feature_tensor = FeatureRecipe::without_augment(&features.feature_tensor)?;
            store.check_backbone(&features)?;
            let head = state
                .head()
                .context("the state has no head yet: run `learn` (or `fit`) first")?;
            evaluate_features(head, &store)?
        }
        (None, Some(source)) => {
            let mut retrainer = match &a.state {
                Some(state_path) => open_retrainer(state_path, &a.model)?,
                None => model_as_is(&a.model, a.data.label_names.as_deref())?,
            };
            retrainer.set_flip_average(flip_average(&a.tta)?)?;
            let bar = progress_bar(source.len(), "eval");
            let report = retrainer.evaluate(source, |i| bar.set_position(i as u64))?;
            bar.finish_and_clear();
            report
        }
        _ => bail!("give the samples to evaluate as --data (images) or --store (features)"),
    };
    if a.json {
        print_json(&report)?;
    } else {
        print_eval(&report);
    }
    match a.min_accuracy {
        Some(min) if report.accuracy < min => {
            eprintln!(
                "check failed: accuracy {:.4} is below --min-accuracy {min}",
                report.accuracy
            );
            Ok(false)
        }
        _ => Ok(true),
    }
}

#[derive(Serialize)]
pub(crate) struct InfoReport<'a> {
    format_version: u32,
    model_path: String,
    backbone: &'a fastretrain::state::Fingerprint,
    samples: f64,
    statistics_sha256: String,
    labels: Vec<(String, f64)>,
    sources: &'a [fastretrain::state::SourceRecord],
    decayed: bool,
    head: Option<HeadInfo>,
    /// The engine commands that run this state's backbone use here (`--engine`), and the
    /// engines this build has.
    engine: fastretrain::backbone::Engine,
    engines_built: &'static [fastretrain::backbone::Engine],
}

#[derive(Serialize)]
pub(crate) struct HeadInfo {
    method: fastretrain::head::MethodName,
    /// Hidden layer widths (empty for a linear head).
    hidden: Vec<usize>,
    classes: usize,
    fitted_samples: f64,
    lambda: f64,
    lambda_source: fastretrain::head::LambdaSource,
}

pub(crate) fn info(a: InfoArgs) -> Result<bool> {
    let state = State::load(&a.state)?;
    let report = InfoReport {
        format_version: fastretrain::state::FORMAT_VERSION,
        model_path: state.model_path().display().to_string(),
        backbone: state.backbone(),
        samples: state.stats().samples(),
        statistics_sha256: state.statistics_digest(),
        labels: state
            .stats()
            .labels()
            .iter()
            .cloned()
            .zip(state.stats().class_counts().iter().copied())
            .collect(),
        sources: state.sources(),
        decayed: state.decayed(),
        head: state.head().map(|h| HeadInfo {
            method: h.method,
            hidden: h.hidden.iter().map(|l| l.outputs).collect(),
            classes: h.classes(),
            fitted_samples: h.fitted_samples,
            lambda: h.lambda,
            lambda_source: h.lambda_source,
        }),
        engine: fastretrain::backbone::engine(),
        engines_built: fastretrain::backbone::ENGINES_BUILT,
    };
    if a.json {
        return print_json(&report).map(|_| true);
    }
    println!("state {}", a.state.display());
    println!("  model     {}", report.model_path);
    println!("  backbone  {}", report.backbone);
    println!("  samples   {}", report.samples);
    println!("  labels    {}", report.labels.len());
    for (label, n) in &report.labels {
        println!("    {label}: {n}");
    }
    for s in report.sources {
        println!(
            "  source    {} ({} records read, {} samples learned)",
            s.id, s.consumed, s.samples
        );
    }
    match &report.head {
        Some(h) => println!(
            "  head      {} classes by {}{}, λ = {:.4} ({:?})",
            h.classes,
            h.method,
            if h.hidden.is_empty() {
                String::new()
            } else {
                format!(" with hidden layers {:?}", h.hidden)
            },
            h.lambda,
            h.lambda_source
        ),
        None => println!("  head      none (run fit)"),
    }
    let built: Vec<String> = report.engines_built.iter().map(|e| e.to_string()).collect();
    println!(
        "  engine    {} (--engine; this build has {})",
        report.engine,
        built.join(", ")
    );
    if report.decayed {
        println!("  decay     old samples were discounted (--decay); forget is not available");
    }
    if let Some(h) = &report.head
        && h.fitted_samples < report.samples
    {
        println!(
            "  note      the head was fit on {} of {} samples; run fit to update it",
            h.fitted_samples, report.samples
        );
    }
    Ok(true)
}

pub(crate) fn print_eval(r: &EvalReport) {
    println!(
        "accuracy {:.4} on {} samples ({:.1} samples/s)",
        r.accuracy, r.samples, r.images_per_second
    );
    let width = r
        .labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  {:>7}  {:>8}", "label", "samples", "accuracy");
    for c in &r.per_class {
        let accuracy = c.accuracy.map_or("—".into(), |a| format!("{a:.4}"));
        println!("{:width$}  {:>7}  {accuracy:>8}", c.label, c.samples);
    }
    println!("confusion matrix (rows: true label, columns: predicted, same order):");
    for (label, row) in r.labels.iter().zip(&r.confusion) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>5}")).collect();
        println!("{label:width$} {}", cells.join(""));
    }
}
