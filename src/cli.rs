//! Command-line interface: argument parsing and printing only; the work is in the library.

mod retrain;
mod spec;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use fastretrain::backbone::{self, Backbone, LoadOptions};
use fastretrain::data::{DataOptions, DataSource};
use fastretrain::evaluation::{EvalReport, evaluate_features};
use fastretrain::features::{ExtractReport, FeatureExtractor, extract_to_store};
use fastretrain::fitting::{self, FitOptions, Method, parse_widths};
use fastretrain::head::Activation;
use fastretrain::recompute::RecomputeOptions;
use fastretrain::retrainer::{LearnOptions, LearnReport, Retrainer};
use fastretrain::state::{State, StateLock};
use fastretrain::store::{FeatureBatches, FeatureStore, Precision, StoreWriter};

const DEFAULT_MODEL: &str = "models/mobilenetv2.onnx";
const DEFAULT_DEMO_DATA: &str = "data/fashion-mnist";

#[derive(Parser)]
#[command(
    name = "fastretrain",
    version,
    about = "Adapt a pretrained ONNX classifier to your own data on the device: frozen backbone, \
             streamed Gram statistics, closed-form (ridge / Moore–Penrose) head refit.",
    after_help = "Exit codes: 0 success, 1 a check failed (eval --min-accuracy), 2 error \
                  (bad input, bad arguments).\n\
                  Data: a folder root/<label>/*.png|jpg, or an IDX images file \
                  (MNIST format, .gz allowed) with its labels file beside it."
)]
pub struct Cli {
    /// Cores for the backbone (default: all): images in parallel when streaming data,
    /// tract's matrix-product threads for a single image.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream labelled data through the backbone into a state (created or added to), then refit.
    Learn(LearnArgs),
    /// Refit the head from the state's statistics (choose λ by GCV, or fix it).
    Fit(FitArgs),
    /// Top-k labels with scores for image files.
    Predict(PredictArgs),
    /// Accuracy, per-class accuracy and confusion matrix on labelled data.
    Eval(EvalArgs),
    /// What a state holds.
    Info(InfoArgs),
    /// Remove samples from a state's statistics (exact unlearning), then refit.
    Forget(ForgetArgs),
    /// Add up the statistics of several states (same backbone) into one, then refit.
    Merge(MergeArgs),
    /// Write a data set's features to a feature store (f16 by default), resuming after the
    /// records the store already holds.
    Extract(ExtractArgs),
    /// Write the adapted model as a standard ONNX file: the backbone with the refit head.
    Export(ExportArgs),
    /// Copy a feature store with another precision (f16 ↔ f32).
    Convert(ConvertArgs),
    /// Learn + eval on the shipped model and Fashion-MNIST subset, with timings.
    Demo(DemoArgs),
    /// Time the backbone's forward pass on this machine (ms per image; see --threads).
    Bench(BenchArgs),
    /// Full fast retraining on the desktop: SGD on a random share of the conv layers, then
    /// the MP refit of the head, per epoch (build with --features train).
    Retrain(retrain::RetrainArgs),
    /// Write a copy of a model (and its spec) with another input size: smaller is faster.
    ResizeInput(ResizeInputArgs),
    /// Write the spec JSON of a model (beside it) from its graph and a preprocessing preset,
    /// or check an existing one (--check).
    Spec(spec::SpecArgs),
}

#[derive(Args)]
struct ResizeInputArgs {
    /// The model to copy (its spec JSON must be beside it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Side of the new square input, in pixels.
    #[arg(long)]
    size: usize,
    /// The new ONNX file; its spec is written beside it (`.json`).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Run this many batches at once, one thread each with tract single-threaded (how
    /// learn/extract/eval stream data); reports throughput per image.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DataArgs {
    /// Image folder (root/<label>/*.png|jpg) or IDX images file.
    #[arg(long)]
    data: Option<PathBuf>,
    /// IDX labels file (default: the images file name with images-idx3 → labels-idx1).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// File with one name per IDX label number (default: labels.txt beside the images).
    #[arg(long)]
    label_names: Option<PathBuf>,
    /// Use at most this many samples.
    #[arg(long)]
    limit: Option<usize>,
}

impl DataArgs {
    /// The data source; `--data` is required.
    fn open(&self) -> Result<DataSource> {
        self.open_optional()?
            .context("--data is required: an image folder or an IDX images file")
    }

    /// The data source, or None when `--data` was left out (for commands that also take
    /// `--store`).
    fn open_optional(&self) -> Result<Option<DataSource>> {
        let Some(data) = &self.data else {
            return Ok(None);
        };
        Ok(Some(DataSource::open(
            data,
            &DataOptions {
                idx_labels: self.labels.clone(),
                label_names: self.label_names.clone(),
                limit: self.limit,
            },
        )?))
    }
}

#[derive(Args)]
struct ModelArgs {
    /// ONNX model (default: the state's model, else models/mobilenetv2.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tensor to read features from (default: the input of the model's last dense layer).
    #[arg(long)]
    feature_tensor: Option<String>,
}

#[derive(Args)]
struct LearnArgs {
    /// State file to create or add to.
    #[arg(long)]
    state: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Ridge term λ (default: chosen by generalised cross-validation).
    #[arg(long)]
    lambda: Option<f64>,
    /// Skip undecodable images (listed in the report) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Read the data from its start even if this state already learned part of it
    /// (by default a source is resumed after the records the state has absorbed).
    #[arg(long)]
    relearn: bool,
    /// Save the state after about every N samples, so a killed run loses at most N
    /// (a later `learn` on the same data resumes). Default: save only at the end.
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    /// Forgetting factor μ in (0, 1] for drift: before each batch of 64 samples, everything
    /// learned so far is multiplied by μ. A decayed state can no longer `forget`.
    #[arg(long, value_name = "MU")]
    decay: Option<f64>,
    /// Fail at once if another process is writing the state (default: wait for it).
    #[arg(long)]
    no_wait: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FitArgs {
    /// State whose head is refit (created from --store if it does not exist).
    #[arg(long)]
    state: PathBuf,
    /// Feature store (from `extract`) to stream the samples from. Without it, `gram` solves
    /// from the state's own statistics; the other methods need it.
    #[arg(long)]
    store: Option<PathBuf>,
    /// gram (exact one-shot solve), block-rls (block recursive MP update), step (step form
    /// with learning rate η) or recompute (hidden layers refit by pull-back).
    #[arg(long, default_value = "gram")]
    method: String,
    /// Ridge term λ (default: chosen by generalised cross-validation on the Gram statistics).
    #[arg(long)]
    lambda: Option<f64>,
    /// Rows per batch for the streamed methods.
    #[arg(long, default_value_t = fastretrain::fitting::DEFAULT_BATCH)]
    batch: usize,
    /// step: learning rate η.
    #[arg(long, default_value_t = 0.5)]
    eta: f64,
    /// step: passes over the store.
    #[arg(long, default_value_t = 1)]
    passes: usize,
    /// recompute: hidden layer widths from the features up, e.g. 1024 or 512,256.
    #[arg(long, default_value = "1024")]
    hidden: String,
    /// recompute: activation of the hidden layers: bsig (2σ(z)−1), sin, identity, or relu
    /// (no inverse: only with --iterations 0).
    #[arg(long, default_value = "bsig")]
    activation: String,
    /// recompute: pull-back iterations.
    #[arg(long, default_value_t = 2)]
    iterations: usize,
    /// recompute: seed of the initial hidden weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fail at once if another process is writing the state (default: wait for it).
    #[arg(long)]
    no_wait: bool,
    #[arg(long)]
    json: bool,
}

impl FitArgs {
    fn method(&self) -> Result<Method> {
        Ok(match self.method.as_str() {
            "gram" => Method::Gram,
            "block-rls" => Method::BlockRls,
            "step" => Method::Step {
                eta: self.eta,
                passes: self.passes,
            },
            "recompute" => Method::Recompute(RecomputeOptions {
                hidden: parse_widths(&self.hidden)?,
                activation: Activation::parse(&self.activation)?,
                iterations: self.iterations,
                seed: self.seed,
            }),
            other => bail!("unknown method '{other}': use gram, block-rls, step or recompute"),
        })
    }
}

#[derive(Args)]
struct ForgetArgs {
    #[arg(long)]
    state: PathBuf,
    /// Images to forget (the same files that were learned).
    #[command(flatten)]
    data: DataArgs,
    /// Or: stored features to forget (from `extract`).
    #[arg(long, conflicts_with = "data")]
    store: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    lambda: Option<f64>,
    /// Fail at once if another process is writing the state (default: wait for it).
    #[arg(long)]
    no_wait: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PredictArgs {
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
    /// How many labels to show per image.
    #[arg(long, short = 'k', default_value_t = 3)]
    top_k: usize,
    #[arg(long)]
    json: bool,
    /// PNG or JPEG files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
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
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InfoArgs {
    #[arg(long)]
    state: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct MergeArgs {
    /// State to write.
    #[arg(long)]
    out: PathBuf,
    /// States to add up (at least one).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[arg(long)]
    lambda: Option<f64>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExtractArgs {
    /// Feature store to create or append to.
    #[arg(long)]
    store: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// f16 (half the bytes) or f32; a new store defaults to f16.
    #[arg(long)]
    precision: Option<String>,
    /// Rows per chunk of a new store (each chunk is checksummed and fsynced).
    #[arg(long)]
    chunk_rows: Option<usize>,
    /// Skip undecodable images (listed in the report) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Fail at once if another process is writing the store (default: wait for it).
    #[arg(long)]
    no_wait: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExportArgs {
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
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ConvertArgs {
    #[arg(long)]
    store: PathBuf,
    /// New store to write (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// f16 or f32.
    #[arg(long)]
    precision: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DemoArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    /// Folder with Fashion-MNIST IDX files (train-* and t10k-*).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training images to use.
    #[arg(long, default_value_t = 2000)]
    train: usize,
    /// Test images to use.
    #[arg(long, default_value_t = 1000)]
    test: usize,
    /// Keep the learned state here (default: not saved).
    #[arg(long)]
    state: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Runs the command; `Ok(false)` means a check failed (exit code 1).
pub fn run(cli: Cli) -> Result<bool> {
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    backbone::set_threads(threads);
    match cli.command {
        Command::Learn(a) => learn(a),
        Command::Fit(a) => fit(a),
        Command::Predict(a) => predict(a),
        Command::Eval(a) => eval(a),
        Command::Info(a) => info(a),
        Command::Merge(a) => merge(a),
        Command::Forget(a) => forget(a),
        Command::Extract(a) => extract(a),
        Command::Convert(a) => convert(a),
        Command::Export(a) => export(a),
        Command::Demo(a) => demo(a),
        Command::Bench(a) => bench(a, threads),
        Command::ResizeInput(a) => resize_input(a),
        Command::Retrain(a) => retrain::run(a),
        Command::Spec(a) => spec::run(a),
    }
}

/// A path shipped with the project: as given if it exists, else relative to the source tree.
fn shipped(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.exists() {
        return p;
    }
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if in_tree.exists() { in_tree } else { p }
}

fn progress_bar(len: usize, what: &str) -> ProgressBar {
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

/// Loads the backbone for an existing state: its model (found from any working directory,
/// see [`State::model_file`]) and feature tensor by default; another model file is refused.
fn backbone_for_state(state: &State, state_path: &Path, model: &ModelArgs) -> Result<Backbone> {
    let path = match &model.model {
        Some(path) => path.clone(),
        None => state.model_file(state_path)?,
    };
    let options = LoadOptions {
        feature_tensor: Some(
            model
                .feature_tensor
                .clone()
                .unwrap_or_else(|| state.backbone.feature_tensor.clone()),
        ),
        for_state: Some((state_path.into(), state.backbone.clone())),
        ..LoadOptions::default()
    };
    Ok(Backbone::load_with(&path, None, &options)?)
}

fn open_retrainer(state_path: &Path, model: &ModelArgs) -> Result<Retrainer> {
    let state = State::load(state_path)?;
    let backbone = backbone_for_state(&state, state_path, model)?;
    Ok(Retrainer::new(backbone, state, state_path)?)
}

/// The model as it is, classifying with its own outputs (`predict`/`eval` without a state).
fn model_as_is(model: &ModelArgs, label_names: Option<&Path>) -> Result<Retrainer> {
    let path = model
        .model
        .clone()
        .unwrap_or_else(|| shipped(DEFAULT_MODEL));
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

/// The state's warnings (one label, labels with very few samples), on stderr.
fn warn_about(state: &State) {
    for warning in state.warnings() {
        eprintln!("warning: {warning}");
    }
}

fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_learn(r: &LearnReport) {
    if r.resumed_after > 0 {
        println!(
            "resumed {} after the {} records this state had already read",
            r.source, r.resumed_after
        );
    }
    println!(
        "learned {} samples from {} ({:.1} images/s); state holds {} samples, {} labels",
        r.samples,
        r.source,
        r.images_per_second,
        r.total_samples,
        r.labels.len()
    );
    let t = &r.stages;
    println!(
        "time: decode {:.2} s, preprocess {:.2} s, forward {:.2} s, accumulate {:.3} s",
        t.decode, t.preprocess, t.forward, t.accumulate
    );
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    println!(
        "head refit: λ = {:.4} ({:?}) in {:.3} s",
        r.fit.lambda, r.fit.lambda_source, r.fit.seconds
    );
}

fn print_eval(r: &EvalReport) {
    println!(
        "accuracy {:.4} on {} samples ({:.1} images/s)",
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

/// Takes the state's writer lock, saying so on stderr if another process holds it.
fn lock_state(path: &Path, no_wait: bool) -> Result<StateLock> {
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

fn learn(a: LearnArgs) -> Result<bool> {
    let _lock = lock_state(&a.state, a.no_wait)?;
    let mut retrainer = if a.state.exists() {
        open_retrainer(&a.state, &a.model)?
    } else {
        let model = a
            .model
            .model
            .clone()
            .unwrap_or_else(|| shipped(DEFAULT_MODEL));
        Retrainer::fresh(Backbone::load(
            &model,
            None,
            a.model.feature_tensor.as_deref(),
        )?)?
    };
    let source = a.data.open()?;
    let bar = progress_bar(source.len(), "learn");
    let report = retrainer.learn(
        source,
        &LearnOptions {
            lambda: a.lambda,
            skip_bad: a.skip_bad,
            relearn: a.relearn,
            checkpoint_every: a.checkpoint_every,
            decay: a.decay,
        },
        |i| bar.set_position(i as u64),
        |state| state.save(&a.state),
    )?;
    bar.finish_and_clear();
    retrainer.state().save(&a.state)?;
    warn_about(retrainer.state());
    if a.json {
        print_json(&report)?;
    } else {
        print_learn(&report);
        println!("saved {}", a.state.display());
    }
    Ok(true)
}

fn fit(a: FitArgs) -> Result<bool> {
    let method = a.method()?;
    let _lock = lock_state(&a.state, a.no_wait)?;
    let (state, report) = match &a.store {
        None => {
            if method != Method::Gram {
                bail!(
                    "--method {} streams stored features: give --store FILE (made by `extract`)",
                    a.method
                );
            }
            let mut state = State::load(&a.state)?;
            let report = state.fit(a.lambda)?;
            (state, report)
        }
        Some(store_path) => {
            let store = FeatureStore::open(store_path)?;
            let mut state = if a.state.exists() {
                let state = State::load(&a.state)?;
                store.check_backbone(&state.backbone)?;
                state
            } else {
                State::from_features(&store)?
            };
            let (head, report) = fitting::fit(
                &store,
                &FitOptions {
                    method,
                    lambda: a.lambda,
                    batch: a.batch,
                },
            )?;
            state.head = Some(head);
            (state, report)
        }
    };
    state.save(&a.state)?;
    warn_about(&state);
    if a.json {
        print_json(&report)?;
    } else {
        println!(
            "head refit by {}: λ = {:.4} ({:?}) in {:.3} s; saved {}",
            report.method,
            report.lambda,
            report.lambda_source,
            report.seconds,
            a.state.display()
        );
    }
    Ok(true)
}

fn forget(a: ForgetArgs) -> Result<bool> {
    let _lock = lock_state(&a.state, a.no_wait)?;
    #[derive(Serialize)]
    struct Report {
        forgotten: u64,
        total_samples: f64,
        fit: fastretrain::head::FitReport,
    }
    let (state, report) = match (&a.store, a.data.open_optional()?) {
        (Some(path), None) => {
            let store = FeatureStore::open(path)?;
            let mut state = State::load(&a.state)?;
            store.check_backbone(&state.backbone)?;
            let fit = state.forget(&store, a.lambda)?;
            let report = Report {
                forgotten: store.rows(),
                total_samples: state.stats.samples(),
                fit,
            };
            (state, report)
        }
        (None, Some(source)) => {
            let mut retrainer = open_retrainer(&a.state, &a.model)?;
            let bar = progress_bar(source.len(), "forget");
            let r = retrainer.forget(source, a.lambda, |i| bar.set_position(i as u64))?;
            bar.finish_and_clear();
            let report = Report {
                forgotten: r.forgotten,
                total_samples: r.total_samples,
                fit: r.fit,
            };
            (retrainer.into_state(), report)
        }
        _ => bail!("give the samples to forget as --data (images) or --store (features)"),
    };
    state.save(&a.state)?;
    warn_about(&state);
    if a.json {
        print_json(&report)?;
    } else {
        println!(
            "forgot {} samples; state holds {} samples; head refit: λ = {:.4}; saved {}",
            report.forgotten,
            report.total_samples,
            report.fit.lambda,
            a.state.display()
        );
    }
    Ok(true)
}

fn predict(a: PredictArgs) -> Result<bool> {
    let mut retrainer = match &a.state {
        Some(state_path) => {
            // Only the head is needed: the statistics (13 MB for MobileNetV2) are freed before
            // the model loads, which keeps the peak memory down on a board.
            let mut state = State::load(state_path)?;
            state.drop_statistics();
            let backbone = backbone_for_state(&state, state_path, &a.model)?;
            Retrainer::new(backbone, state, state_path)?
        }
        None => model_as_is(&a.model, a.label_names.as_deref())?,
    };
    let mut predictions = Vec::new();
    for image in &a.images {
        predictions.push(retrainer.predict_file(image, a.top_k.max(1))?);
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

fn eval(a: EvalArgs) -> Result<bool> {
    if let Some(m) = a.min_accuracy
        && !(0.0..=1.0).contains(&m)
    {
        bail!("--min-accuracy must be between 0 and 1, got {m}");
    }
    let report = match (&a.store, a.data.open_optional()?) {
        (Some(path), None) => {
            let store = FeatureStore::open(path)?;
            let state_path = a
                .state
                .as_ref()
                .context("evaluating stored features needs the --state whose head to use")?;
            let state = State::load(state_path)?;
            store.check_backbone(&state.backbone)?;
            let head = state
                .head
                .as_ref()
                .context("the state has no head yet: run `learn` (or `fit`) first")?;
            evaluate_features(head, &store)?
        }
        (None, Some(source)) => {
            let mut retrainer = match &a.state {
                Some(state_path) => open_retrainer(state_path, &a.model)?,
                None => model_as_is(&a.model, a.data.label_names.as_deref())?,
            };
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
struct InfoReport<'a> {
    format_version: u32,
    model_path: String,
    backbone: &'a fastretrain::state::Fingerprint,
    samples: f64,
    statistics_sha256: String,
    labels: Vec<(String, f64)>,
    sources: &'a [fastretrain::state::SourceRecord],
    decayed: bool,
    head: Option<HeadInfo>,
}

#[derive(Serialize)]
struct HeadInfo {
    method: fastretrain::head::MethodName,
    /// Hidden layer widths (empty for a linear head).
    hidden: Vec<usize>,
    classes: usize,
    fitted_samples: f64,
    lambda: f64,
    lambda_source: fastretrain::head::LambdaSource,
}

fn info(a: InfoArgs) -> Result<bool> {
    let state = State::load(&a.state)?;
    let report = InfoReport {
        format_version: fastretrain::state::FORMAT_VERSION,
        model_path: state.model_path.display().to_string(),
        backbone: &state.backbone,
        samples: state.stats.samples(),
        statistics_sha256: state.statistics_digest(),
        labels: state
            .stats
            .labels()
            .iter()
            .cloned()
            .zip(state.stats.class_counts().iter().copied())
            .collect(),
        sources: &state.sources,
        decayed: state.decayed,
        head: state.head.as_ref().map(|h| HeadInfo {
            method: h.method,
            hidden: h.hidden.iter().map(|l| l.outputs).collect(),
            classes: h.classes(),
            fitted_samples: h.fitted_samples,
            lambda: h.lambda,
            lambda_source: h.lambda_source,
        }),
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

fn merge(a: MergeArgs) -> Result<bool> {
    let _lock = lock_state(&a.out, false)?;
    let mut states = a.inputs.iter().map(|p| State::load(p));
    let mut merged = states.next().context("no input states")??;
    for (path, state) in a.inputs.iter().skip(1).zip(states) {
        merged.merge(&state?, path)?;
    }
    let report = merged.fit(a.lambda)?;
    merged.save(&a.out)?;
    warn_about(&merged);
    if a.json {
        print_json(&report)?;
    } else {
        println!(
            "merged {} states: {} samples, {} labels; λ = {:.4}; saved {}",
            a.inputs.len(),
            merged.stats.samples(),
            merged.stats.labels().len(),
            report.lambda,
            a.out.display()
        );
    }
    Ok(true)
}

#[derive(Serialize)]
struct StoreReport {
    store: String,
    backbone: String,
    precision: String,
    rows: u64,
    labels: usize,
    bytes: u64,
}

fn store_report(store: &FeatureStore) -> StoreReport {
    StoreReport {
        store: store.path().display().to_string(),
        backbone: store.backbone().to_string(),
        precision: store.header().precision.to_string(),
        rows: store.rows(),
        labels: store.labels().len(),
        bytes: store.bytes(),
    }
}

fn extract(a: ExtractArgs) -> Result<bool> {
    let _lock = lock_state(&a.store, a.no_wait)?;
    let model = a
        .model
        .model
        .clone()
        .unwrap_or_else(|| shipped(DEFAULT_MODEL));
    let backbone = Backbone::load(&model, None, a.model.feature_tensor.as_deref())?;
    let precision = a.precision.as_deref().map(Precision::parse).transpose()?;
    let (mut writer, existing) = StoreWriter::open_or_create(
        &a.store,
        backbone.fingerprint(),
        backbone.model_path(),
        precision,
        a.chunk_rows,
    )?;
    let source = a.data.open()?;
    let resumed_after = existing.map_or(0, |s| s.consumed(&source.id()));
    let mut extractor = FeatureExtractor::new(backbone)?;
    let bar = progress_bar(source.len(), "extract");
    let report = extract_to_store(
        &mut extractor,
        source,
        &mut writer,
        resumed_after,
        a.skip_bad,
        |i| bar.set_position(i as u64),
    )?;
    bar.finish_and_clear();
    drop(writer);
    let store = FeatureStore::open(&a.store)?;
    #[derive(Serialize)]
    struct Report {
        extract: ExtractReport,
        store: StoreReport,
    }
    let report = Report {
        extract: report,
        store: store_report(&store),
    };
    if a.json {
        return print_json(&report).map(|_| true);
    }
    let r = &report.extract;
    if r.resumed_after > 0 {
        println!(
            "resumed {} after the {} records the store already held",
            r.source, r.resumed_after
        );
    }
    println!(
        "extracted {} rows from {} ({:.1} images/s)",
        r.rows, r.source, r.images_per_second
    );
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    print_store(&report.store);
    Ok(true)
}

fn export(a: ExportArgs) -> Result<bool> {
    let report = match &a.state {
        Some(state_path) => {
            let state = State::load(state_path)?;
            let model = match &a.model {
                Some(model) => model.clone(),
                None => state.model_file(state_path)?,
            };
            fastretrain::export::export(&state, &model, &a.out)?
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
    }
    Ok(true)
}

fn resize_input(a: ResizeInputArgs) -> Result<bool> {
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

fn bench(a: BenchArgs, threads: usize) -> Result<bool> {
    let model = a
        .model
        .model
        .clone()
        .unwrap_or_else(|| shipped(DEFAULT_MODEL));
    if a.batch == 0 || a.runs == 0 || a.parallel == 0 {
        bail!("--batch, --runs and --parallel must be at least 1");
    }
    let options = LoadOptions {
        feature_tensor: a.model.feature_tensor.clone(),
        batch: a.batch,
        ..LoadOptions::default()
    };
    let loading = std::time::Instant::now();
    let backbone = Backbone::load_with(&model, None, &options)?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let timing = fastretrain::benchmark::time_forward(&backbone, a.warmup, a.runs, a.parallel)?;
    if a.json {
        let mut value = serde_json::to_value(&timing)?;
        value["threads"] = threads.into();
        value["load_seconds"] = load_seconds.into();
        value["model"] = model.display().to_string().into();
        value["feature_tensor"] = backbone.fingerprint().feature_tensor.clone().into();
        print_json(&value)?;
    } else {
        println!(
            "{}: {:.2} ms/image (median of {} runs, min {:.2}, max {:.2}), batch {}, {} \
             at once, {} threads; loaded in {:.2} s",
            model.display(),
            timing.ms_per_image,
            timing.runs,
            timing.ms_per_image_min,
            timing.ms_per_image_max,
            timing.batch,
            timing.parallel,
            threads,
            load_seconds
        );
    }
    Ok(true)
}

fn print_store(s: &StoreReport) {
    println!(
        "store {}: {} rows, {} labels, {} features, {} bytes",
        s.store, s.rows, s.labels, s.precision, s.bytes
    );
}

fn convert(a: ConvertArgs) -> Result<bool> {
    let store = FeatureStore::open(&a.store)?;
    let converted = store.convert(&a.out, Precision::parse(&a.precision)?)?;
    let report = store_report(&converted);
    if a.json {
        print_json(&report)?;
    } else {
        print_store(&report);
    }
    Ok(true)
}

#[derive(Serialize)]
struct DemoReport {
    model: String,
    data: String,
    seconds_load: f64,
    learn: LearnReport,
    eval: EvalReport,
    seconds_total: f64,
}

fn demo(a: DemoArgs) -> Result<bool> {
    let started = Instant::now();
    let model = a.model.unwrap_or_else(|| shipped(DEFAULT_MODEL));
    let dir = a.data_dir.unwrap_or_else(|| shipped(DEFAULT_DEMO_DATA));
    let backbone = Backbone::load(&model, None, None)?;
    let seconds_load = started.elapsed().as_secs_f64();
    let mut retrainer = Retrainer::fresh(backbone)?;
    let open = |split: &str, limit: usize| -> Result<DataSource> {
        Ok(DataSource::open(
            &dir.join(format!("{split}-images-idx3-ubyte.gz")),
            &DataOptions {
                limit: Some(limit),
                ..Default::default()
            },
        )?)
    };
    let train = open("train", a.train)?;
    let bar = progress_bar(train.len(), "learn");
    let learned = retrainer.learn(
        train,
        &LearnOptions::default(),
        |i| bar.set_position(i as u64),
        |_| Ok(()),
    )?;
    bar.finish_and_clear();
    let test = open("t10k", a.test)?;
    let bar = progress_bar(test.len(), "eval");
    let evaluated = retrainer.evaluate(test, |i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    if let Some(path) = &a.state {
        retrainer.state().save(path)?;
    }
    let report = DemoReport {
        model: model.display().to_string(),
        data: dir.display().to_string(),
        seconds_load,
        learn: learned,
        eval: evaluated,
        seconds_total: started.elapsed().as_secs_f64(),
    };
    if a.json {
        print_json(&report)?;
    } else {
        println!(
            "fastretrain demo: {} on Fashion-MNIST ({} train / {} test images from {})",
            report.model, report.learn.samples, report.eval.samples, report.data
        );
        print_learn(&report.learn);
        print_eval(&report.eval);
        println!(
            "timings: load {:.2} s, learn {:.2} s, fit {:.3} s, eval {:.2} s, total {:.2} s",
            report.seconds_load,
            report.learn.seconds_features,
            report.learn.fit.seconds,
            report.eval.seconds,
            report.seconds_total
        );
    }
    Ok(true)
}
