//! Command-line interface: the top-level parser and the dispatch to one file per command
//! group; each file holds its commands' arguments, the glue to the library and the printing.

mod bench;
mod common;
mod export;
mod fit;
mod learn;
mod predict;
mod retrain;
mod spec;

use anyhow::Result;
use clap::{Parser, Subcommand};

use fastretrain::backbone;

use self::bench::{BenchArgs, DemoArgs, bench, demo};
use self::export::{ExportArgs, PackArgs, ResizeInputArgs, export, pack, resize_input};
use self::fit::{ConvertArgs, FitArgs, MergeArgs, convert, fit, merge};
use self::learn::{ExtractArgs, ForgetArgs, LearnArgs, extract, forget, learn};
use self::predict::{EvalArgs, InfoArgs, PredictArgs, eval, info, predict};

#[derive(Parser)]
#[command(
    name = "fastretrain",
    version,
    about = "Adapt a pretrained ONNX classifier to your own data on the device: frozen backbone, \
             streamed Gram statistics, closed-form (ridge / Moore–Penrose) head refit.",
    after_help = "Exit codes: 0 success, 1 a check failed (eval --min-accuracy), 2 error \
                  (bad input, bad arguments).\n\
                  Data: a folder root/<label>/*.png|jpg (or *.npy tensors), an IDX images \
                  file (MNIST format, .gz allowed) with its labels file beside it, or a .npy \
                  array of samples with its labels (--labels)."
)]
pub struct Cli {
    /// Cores for the backbone (default: all): images in parallel when streaming data,
    /// tract's matrix-product threads for a single image. 1 to 256.
    #[arg(long, global = true, value_parser = common::parse_thread_count)]
    threads: Option<usize>,
    /// What runs the backbone: tract (built in) or onnxruntime (a build with
    /// `--features onnxruntime`, and a libonnxruntime.so: --onnxruntime-lib or
    /// $ORT_DYLIB_PATH). Both give the same features: states are interchangeable.
    #[arg(long, global = true, default_value = "tract", value_parser = parse_engine)]
    engine: backbone::Engine,
    /// The onnxruntime library for --engine onnxruntime (default: $ORT_DYLIB_PATH, else the
    /// system's libonnxruntime.so).
    #[arg(long, global = true, value_name = "PATH")]
    onnxruntime_lib: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Write a packed copy of a model for boards: converted and simplified once here, so that
    /// every start there skips parsing the ONNX file (faster to the first prediction).
    Pack(PackArgs),
}

fn parse_engine(text: &str) -> std::result::Result<backbone::Engine, String> {
    backbone::Engine::parse(text).map_err(|e| e.to_string())
}

/// Runs the command; `Ok(false)` means a check failed (exit code 1).
/// What the command line adds to a library error: the flag that sets what caused it (the
/// library's messages speak of settings, not of flags).
pub fn flag_hint(error: &anyhow::Error) -> String {
    use fastretrain::Error;
    let Some(error) = error.downcast_ref::<Error>() else {
        return String::new();
    };
    match (error, error.cause()) {
        (Error::Setting { setting, .. }, _) => format!(" (--{setting})"),
        (_, Error::NoDenseHead { .. }) => " (--feature-tensor NAME)".into(),
        (_, Error::Locked { .. }) => " (or drop --no-wait to wait for it)".into(),
        // An installed binary run outside the project's folder: the default model is not there.
        (
            _,
            Error::ModelNotFound {
                path,
                recorded_in: None,
            },
        ) if path.as_path() == std::path::Path::new(common::DEFAULT_MODEL) => {
            " (the shipped model, looked for in the current folder: run from the project's \
             folder or give --model)"
                .into()
        }
        _ => String::new(),
    }
}

pub fn run(cli: Cli) -> Result<bool> {
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(common::MAX_THREADS);
    backbone::set_threads(threads);
    backbone::set_engine(cli.engine, cli.onnxruntime_lib);
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
        Command::Pack(a) => pack(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_default_model_says_where_it_was_looked_for() {
        let missing = |path: &str| {
            anyhow::Error::from(fastretrain::Error::ModelNotFound {
                path: path.into(),
                recorded_in: None,
            })
        };
        assert!(flag_hint(&missing(common::DEFAULT_MODEL)).contains("give --model"));
        assert_eq!(flag_hint(&missing("mine.onnx")), "");
    }
}
