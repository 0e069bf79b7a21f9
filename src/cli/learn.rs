//! `learn`, `forget` and `extract`: streaming data through the backbone into a state or a
//! feature store.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use fastretrain::backbone::Backbone;
use fastretrain::features::{ExtractReport, FeatureExtractor, extract_to_store};
use fastretrain::retrainer::{LearnOptions, LearnReport, Retrainer};
use fastretrain::state::State;
use fastretrain::store::{FeatureBatches, FeatureStore, Precision, StoreWriter};

use super::common::{
    DataArgs, ModelArgs, StoreReport, lock_state, open_retrainer, print_json, print_store,
    progress_bar, save_state, store_report,
};

#[derive(Args)]
pub(crate) struct LearnArgs {
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
    #[arg(long, value_name = "N", value_parser = super::common::parse_positive)]
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
pub(crate) struct ForgetArgs {
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
pub(crate) struct ExtractArgs {
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
    /// Rows per chunk of a new store, 1 to 1048576 (each chunk is checksummed and fsynced).
    #[arg(long, value_parser = super::common::parse_in::<1, 1_048_576>)]
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

pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub(crate) fn learn(a: LearnArgs) -> Result<bool> {
    let _lock = lock_state(&a.state, a.no_wait)?;
    let retrainer = if a.state.exists() {
        open_retrainer(&a.state, &a.model)?
    } else {
        Retrainer::fresh(Backbone::load_with(
            &a.model.model_or_default(),
            None,
            &a.model.load_options()?,
        )?)?
    };
    let source = a.data.open()?;
    let bar = progress_bar(source.len(), "learn");
    let (state, report) = retrainer.learn_and_release(
        source,
        &LearnOptions {
            lambda: a.lambda,
            skip_bad: a.skip_bad,
            relearn: a.relearn,
            checkpoint_every: a.checkpoint_every,
            decay: a.decay,
        },
        |i| {
            bar.set_position(i as u64);
            if i % 64 == 0 {
                release_freed_memory();
            }
        },
        |state| state.save(&a.state),
    )?;
    bar.finish_and_clear();
    save_state(&state, &a.state)?;
    if a.json {
        print_json(&report)?;
    } else {
        print_learn(&report);
        println!("saved {}", a.state.display());
    }
    Ok(true)
}

pub(crate) fn forget(a: ForgetArgs) -> Result<bool> {
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
            store.check_backbone(state.backbone())?;
            let fit = state.forget(&store, a.lambda)?;
            let report = Report {
                forgotten: store.rows(),
                total_samples: state.stats().samples(),
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
    save_state(&state, &a.state)?;
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

pub(crate) fn extract(a: ExtractArgs) -> Result<bool> {
    let _lock = lock_state(&a.store, a.no_wait)?;
    let backbone =
        Backbone::load_with(&a.model.model_or_default(), None, &a.model.load_options()?)?;
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
        "extracted {} rows from {} ({:.1} samples/s)",
        r.rows, r.source, r.images_per_second
    );
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    print_store(&report.store);
    Ok(true)
}

pub(crate) fn print_learn(r: &LearnReport) {
    if r.resumed_after > 0 {
        println!(
            "resumed {} after the {} records this state had already read",
            r.source, r.resumed_after
        );
    }
    println!(
        "learned {} samples from {} ({:.1} samples/s); state holds {} samples, {} labels",
        r.samples,
        r.source,
        r.images_per_second,
        r.total_samples,
        r.labels.len()
    );
    let t = &r.stages;
    println!(
        "time: decode {:.2} s, preprocess {:.2} s, forward {:.2} s ({}), accumulate {:.3} s",
        t.decode, t.preprocess, t.forward, r.engine, t.accumulate
    );
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    println!(
        "head refit: λ = {:.4} ({:?}) in {:.3} s",
        r.fit.lambda, r.fit.lambda_source, r.fit.seconds
    );
}
