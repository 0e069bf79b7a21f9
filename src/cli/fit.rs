//! `fit`, `merge` and `convert`: heads and statistics without the backbone.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use fastretrain::fitting::{FitOptions, Method, MethodSettings};
use fastretrain::state::State;
use fastretrain::store::{FeatureStore, Precision};

use super::common::{lock_state, print_json, print_store, save_state, store_report};

#[derive(Args)]
pub(crate) struct FitArgs {
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
    /// Rows per batch for the streamed methods (1 to 65536).
    #[arg(long, default_value_t = fastretrain::fitting::DEFAULT_BATCH,
          value_parser = super::common::parse_in::<1, 65_536>)]
    batch: usize,
    /// step: learning rate η, 0 < η < 2 (each batch moves the head that share of the way to
    /// the batch's own fit).
    #[arg(long, default_value_t = 0.5)]
    eta: f64,
    /// step: passes over the store.
    #[arg(long, default_value_t = 1, value_parser = super::common::parse_in::<1, 10_000>)]
    passes: usize,
    /// recompute: hidden layer widths from the features up, e.g. 1024 or 512,256.
    #[arg(long, default_value = "1024")]
    hidden: String,
    /// recompute: activation of the hidden layers: bsig (2σ(z)−1), sin, identity, or relu
    /// (no inverse: only with --iterations 0).
    #[arg(long, default_value = "bsig")]
    activation: String,
    /// recompute: pull-back iterations, 0 to 10000 (0: the random hidden layers stay, only the
    /// output layer is solved).
    #[arg(long, default_value_t = 2, value_parser = super::common::parse_in::<0, 10_000>)]
    iterations: usize,
    /// recompute: seed of the initial hidden weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// With --store and no --lambda: choose λ by exact K-fold cross-validation with this many
    /// folds (2–20) instead of GCV; both are reported.
    #[arg(long, requires = "store", conflicts_with = "lambda")]
    folds: Option<usize>,
    /// Fail at once if another process is writing the state (default: wait for it).
    #[arg(long)]
    no_wait: bool,
    #[arg(long)]
    json: bool,
}

impl FitArgs {
    fn method(&self) -> fastretrain::Result<Method> {
        Method::from_name(
            &self.method,
            &MethodSettings {
                eta: self.eta,
                passes: self.passes,
                hidden: &self.hidden,
                activation: &self.activation,
                iterations: self.iterations,
                seed: self.seed,
            },
        )
    }
}

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// State to write.
    #[arg(long)]
    out: PathBuf,
    /// States to add up (at least one).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[arg(long)]
    lambda: Option<f64>,
    /// The states learned different data even where a source has the same name (the same
    /// path on two devices). Without it a source held by two states is refused: its samples
    /// would count twice.
    #[arg(long)]
    distinct_sources: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ConvertArgs {
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

pub(crate) fn fit(a: FitArgs) -> Result<bool> {
    let method = a.method()?;
    let _lock = lock_state(&a.state, a.no_wait)?;
    if a.store.is_none() && method != Method::Gram {
        bail!(
            "--method {} streams stored features: give --store FILE (made by `extract`)",
            a.method
        );
    }
    let store = a.store.as_deref().map(FeatureStore::open).transpose()?;
    let mut state = match &store {
        // A state made from the store alone when there is none yet.
        Some(store) if !a.state.exists() => State::from_features(store)?,
        _ => State::load(&a.state)?,
    };
    let report = state.refit(
        store.as_ref(),
        &FitOptions {
            method,
            lambda: a.lambda,
            batch: a.batch,
            folds: a.folds,
        },
    )?;
    save_state(&state, &a.state)?;
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
        if let (Some(cv), Some(gcv)) = (&report.cross_validation, &report.gcv) {
            println!(
                "λ by {}-fold cross-validation: {:.4} (held-out error {:.5}); GCV would \
                 choose {:.4}",
                cv.folds,
                cv.best,
                cv.error.iter().copied().fold(f64::INFINITY, f64::min),
                gcv.best
            );
        }
    }
    Ok(true)
}

pub(crate) fn merge(a: MergeArgs) -> Result<bool> {
    let _lock = lock_state(&a.out, false)?;
    let mut merged = State::merge_files(&a.inputs, a.distinct_sources)?;
    let report = merged.fit(a.lambda)?;
    save_state(&merged, &a.out)?;
    if a.json {
        print_json(&report)?;
    } else {
        println!(
            "merged {} states: {} samples, {} labels; λ = {:.4}; saved {}",
            a.inputs.len(),
            merged.stats().samples(),
            merged.stats().labels().len(),
            report.lambda,
            a.out.display()
        );
    }
    Ok(true)
}

pub(crate) fn convert(a: ConvertArgs) -> Result<bool> {
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
