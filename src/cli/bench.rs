//! `bench` and `demo`: timing the backbone, and the end-to-end run on the shipped model.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use fastretrain::backbone::Backbone;
use fastretrain::data::{DataOptions, DataSource};
use fastretrain::evaluation::EvalReport;
use fastretrain::retrainer::{LearnOptions, LearnReport, Retrainer};

use super::common::{
    DEFAULT_DEMO_DATA, DEFAULT_MODEL, ModelArgs, print_json, progress_bar, shipped,
};
use super::learn::print_learn;
use super::predict::print_eval;

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 20, value_parser = super::common::parse_in::<1, 1_000_000>)]
    runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3, value_parser = super::common::parse_in::<0, 1_000_000>)]
    warmup: usize,
    /// Run this many images at once, one thread each with tract single-threaded (how
    /// learn/extract/eval stream data); reports throughput per image. 1 to 256.
    #[arg(long, default_value_t = 1, value_parser = super::common::parse_thread_count)]
    parallel: usize,
    /// List the optimised plan's operations instead (tract: each depthwise convolution with
    /// the layout and kernel it runs with on this machine), without timing.
    #[arg(long)]
    plan: bool,
    /// Time each operation of tract's plan over the runs instead (ms per run, by operation
    /// and summed by kind): what scripts/bench/layer_profile.py compares with onnxruntime's.
    #[arg(long)]
    profile: bool,
    /// Time each matrix product of tract's plan alone instead (one thread, operands packed
    /// beforehand, nothing fused, C laid out as in the plan): with the kernel the plan picked,
    /// and with the fastest of tract's kernels on this machine. What tract's matrix kernels
    /// alone cost, whatever is done around them; scripts/bench/layer_profile.py sums it per layer
    /// kind.
    #[arg(long, conflicts_with_all = ["plan", "profile"])]
    kernels: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    /// Folder with Fashion-MNIST IDX files (train-* and t10k-*).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training images to use.
    #[arg(long, default_value_t = 2000, value_parser = super::common::parse_positive)]
    train: usize,
    /// Test images to use.
    #[arg(long, default_value_t = 1000, value_parser = super::common::parse_positive)]
    test: usize,
    /// Keep the learned state here (default: not saved).
    #[arg(long)]
    state: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub(crate) fn bench(a: BenchArgs, threads: usize) -> Result<bool> {
    let model = a
        .model
        .model
        .clone()
        .unwrap_or_else(|| shipped(DEFAULT_MODEL));
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let options = a.model.load_options()?;
    let loading = std::time::Instant::now();
    let backbone = Backbone::load_with(&model, None, &options)?;
    let load_seconds = loading.elapsed().as_secs_f64();
    if a.plan {
        return print_plan(&backbone, a.json).map(|()| true);
    }
    if a.kernels {
        return print_kernel_floor(&backbone, a.runs, a.json).map(|()| true);
    }
    if a.profile {
        let nodes = fastretrain::benchmark::profile_forward(&backbone, a.warmup, a.runs)?;
        if nodes.is_empty() {
            bail!("--profile times tract's plan: use --engine tract");
        }
        let mut by_op: Vec<(String, f64)> = Vec::new();
        for n in &nodes {
            match by_op.iter_mut().find(|(op, _)| *op == n.op) {
                Some((_, ms)) => *ms += n.seconds,
                None => by_op.push((n.op.clone(), n.seconds)),
            }
        }
        by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
        if a.json {
            return print_json(&serde_json::json!({
                "threads": threads, "runs": a.runs, "nodes": nodes, "by_op": by_op,
            }))
            .map(|()| true);
        }
        let total: f64 = by_op.iter().map(|(_, ms)| ms).sum();
        println!("{total:.2} ms per run, by operation ({} threads):", threads);
        for (op, ms) in &by_op {
            println!("  {op:<28} {ms:8.3} ms {:5.1} %", 100.0 * ms / total);
        }
        return Ok(true);
    }
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
            "{}: {:.2} ms/image (median of {} runs, min {:.2}, max {:.2}), {} \
             at once, {} threads; loaded in {:.2} s",
            model.display(),
            timing.ms_per_image,
            timing.runs,
            timing.ms_per_image_min,
            timing.ms_per_image_max,
            timing.parallel,
            threads,
            load_seconds
        );
    }
    Ok(true)
}

fn print_kernel_floor(backbone: &Backbone, runs: usize, json: bool) -> Result<()> {
    if backbone.engine() != fastretrain::backbone::Engine::Tract {
        bail!("--kernels times tract's matrix products: use --engine tract");
    }
    let floors = fastretrain::benchmark::kernel_floor(backbone, runs)?;
    if json {
        return print_json(&serde_json::json!({ "runs": runs, "products": floors }));
    }
    println!(
        "{:<28} {:>7} {:>5} {:>7}  {:>22} {:>9}  {:>32} {:>9}",
        "node", "m", "k", "n", "plan's kernel", "ms alone", "fastest kernel", "ms alone"
    );
    for f in &floors {
        println!(
            "{:<28} {:>7} {:>5} {:>7}  {:>22} {:>9.3}  {:>32} {:>9.3}",
            f.node, f.m, f.k, f.n, f.kernel, f.kernel_ms, f.best_kernel, f.best_ms
        );
    }
    let sum = |ms: fn(&fastretrain::benchmark::KernelFloor) -> f64| -> f64 {
        floors.iter().map(ms).sum()
    };
    println!(
        "all {} products: {:.2} ms with the plan's kernels, {:.2} ms with the fastest ones \
         (one thread, operands packed beforehand, nothing fused)",
        floors.len(),
        sum(|f| f.kernel_ms),
        sum(|f| f.best_ms)
    );
    Ok(())
}

fn print_plan(backbone: &Backbone, json: bool) -> Result<()> {
    let steps = backbone.plan_steps();
    if json {
        return print_json(&serde_json::json!({
            "engine": backbone.engine_description(),
            "arch": std::env::consts::ARCH,
            "steps": steps,
        }));
    }
    println!(
        "{} on {} ({} operations)",
        backbone.engine_description(),
        std::env::consts::ARCH,
        steps.len()
    );
    for step in &steps {
        match &step.kernel {
            Some(kernel) => {
                let fused = step
                    .fused_clamp
                    .as_ref()
                    .map(|clamp| format!(", {clamp}"))
                    .unwrap_or_default();
                println!(
                    "{:<28} {:<16} {:?} → {kernel}{fused}",
                    step.node, step.op, step.input
                )
            }
            None => println!("{:<28} {:<16} {:?}", step.node, step.op, step.input),
        }
    }
    Ok(())
}

#[derive(Serialize)]
pub(crate) struct DemoReport {
    model: String,
    data: String,
    seconds_load: f64,
    learn: LearnReport,
    eval: EvalReport,
    seconds_total: f64,
}

pub(crate) fn demo(a: DemoArgs) -> Result<bool> {
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
