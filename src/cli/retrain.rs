//! `fastretrain retrain`: the desktop full retraining (cargo feature `train`). Without the
//! feature the command exists and says how to get it.

#[cfg(feature = "train")]
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[cfg(feature = "train")]
use super::common::DataArgs;

/// Without the `train` feature the command takes whatever follows it and says how to get a
/// build that trains: the user learns that before fixing options this build cannot use, and
/// the edge binary does not carry their parser.
#[cfg(not(feature = "train"))]
#[derive(Args)]
pub struct RetrainArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _options: Vec<std::ffi::OsString>,
}

#[cfg(feature = "train")]
#[derive(Args)]
pub struct RetrainArgs {
    /// ONNX model to retrain (default: models/mobilenetv2.onnx); its spec JSON must be beside it.
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Test data, evaluated after every epoch (folder or IDX images file).
    #[arg(long)]
    test_data: PathBuf,
    /// Use at most this many test samples.
    #[arg(long, value_parser = super::common::parse_positive)]
    test_limit: Option<usize>,
    /// Epochs of SGD, 1 to 10000 (epoch 0, the edge-only refit, comes first).
    #[arg(long, default_value_t = 8, value_parser = super::common::parse_in::<1, 10_000>)]
    epochs: usize,
    /// fast (random conv layers + MP refit, the paper), sgd (all layers), sgd+mp (all layers +
    /// MP refit, Yang 2019).
    #[arg(long, default_value = "fast")]
    mode: String,
    /// Activation rate per epoch: share of conv layers trained (fast mode).
    #[arg(long, default_value = "1,1,.75,.75,.5,.5,.25,.25")]
    ra: String,
    /// Learning rate per epoch (`vxN` repeats v N times).
    #[arg(long, default_value = "1e-3x3,1e-4x3,1e-5x2")]
    lr: String,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Images per SGD step (1 to 4096).
    #[arg(long, default_value_t = 32, value_parser = super::common::parse_in::<1, 4096>)]
    batch: usize,
    /// Square input size to train and export at, 1 to 4096 (default: the model's).
    #[arg(long, value_parser = super::common::parse_input_side)]
    size: Option<usize>,
    /// Seed of the frozen-layer draws and the sample order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ridge λ of the MP refit (default: GCV).
    #[arg(long)]
    lambda: Option<f64>,
    /// cpu (burn flex), wgpu (build with --features train-wgpu) or cuda (--features train-cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The retrained model (its spec and an edge state .frs are written beside it).
    #[arg(long)]
    out: PathBuf,
    /// Per-epoch metrics, one JSON object per line (default: OUT with .jsonl).
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Checkpoint written after every epoch (default: OUT with .ckpt).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint of an interrupted run (same model, data and options).
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    json: bool,
}

#[cfg(not(feature = "train"))]
pub fn run(_a: RetrainArgs) -> Result<bool> {
    anyhow::bail!(
        "this fastretrain was built without training support; rebuild with \
         `cargo build --release --features train` (CPU), `--features train-wgpu` or \
         `--features train-cuda` (GPU)"
    )
}

#[cfg(feature = "train")]
pub fn run(a: RetrainArgs) -> Result<bool> {
    use std::io::Write;

    use anyhow::Context;
    use fastretrain::data::{DataOptions, DataSource};
    use fastretrain::train::{
        self, DeviceChoice, LabelledSet, Mode, RetrainJob, RetrainOptions, Schedule, Trainer,
    };

    let model = a
        .model
        .clone()
        .unwrap_or_else(|| super::common::shipped(super::common::DEFAULT_MODEL));
    let (graph, spec, sha256) = train::load_model(&model)?;
    let options = RetrainOptions {
        mode: Mode::parse(&a.mode)?,
        epochs: a.epochs,
        ra: Schedule::parse(&a.ra, "--ra", 0.0..=1.0)?,
        lr: Schedule::parse(&a.lr, "--lr", 0.0..=10.0)?,
        momentum: a.momentum,
        batch: a.batch,
        // A tensor model is refused by the trainer, with what to use instead.
        size: a.size.or(spec.input.image().map(|i| i.height)).unwrap_or(0),
        seed: a.seed,
        lambda: a.lambda,
        device: DeviceChoice::parse(&a.device)?,
    };
    let (train_samples, train_id) = train::read_samples(a.data.open()?)?;
    let labels = LabelledSet::labels_of(&train_samples)?;
    let train_set = LabelledSet::new(train_samples, &labels, train_id)?;
    let (test_samples, test_id) = train::read_samples(DataSource::open(
        &a.test_data,
        &DataOptions {
            idx_labels: None,
            label_names: a.data.label_names.clone(),
            limit: a.test_limit,
            shard: None,
        },
    )?)?;
    let test_set = LabelledSet::new(test_samples, &labels, test_id)?;
    let trainer = Trainer::new(graph, &spec, labels, options)?;
    let metrics_path = a
        .metrics
        .clone()
        .unwrap_or_else(|| a.out.with_extension("jsonl"));
    let mut metrics_file = std::fs::File::create(&metrics_path)
        .with_context(|| format!("{}: cannot write the metrics", metrics_path.display()))?;
    let job = RetrainJob {
        model: &model,
        train: train_set,
        test: test_set,
        checkpoint: a
            .checkpoint
            .clone()
            .unwrap_or_else(|| a.out.with_extension("ckpt")),
        out: a.out.clone(),
        resume: a.resume,
    };
    let json = a.json;
    let output = train::retrain(job, trainer, &sha256, |m| {
        let line = serde_json::to_string(m).expect("metrics serialise");
        writeln!(metrics_file, "{line}")
            .and_then(|_| metrics_file.flush())
            .map_err(|e| {
                fastretrain::Error::InvalidArgument(format!("{}: {e}", metrics_path.display()))
            })?;
        if !json {
            eprintln!(
                "epoch {} ({}): test accuracy {:.4}, loss {}, {} of {} conv layers trained, \
                 train {:.1} s (sgd {:.1} + refit {:.1})",
                m.epoch,
                m.mode,
                m.test_accuracy,
                m.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
                m.trained_convs,
                m.trained_convs + m.frozen_convs,
                m.seconds_train,
                m.seconds_sgd,
                m.seconds_refit
            );
        }
        Ok(())
    })?;
    if json {
        super::common::print_json(&output)?;
    } else {
        println!(
            "wrote {} (spec {}, edge state {}), metrics {}",
            output.model.display(),
            output.spec.display(),
            output.state.display(),
            metrics_path.display()
        );
    }
    Ok(true)
}
