//! Timing the backbone's forward pass on this machine (`fastretrain bench`): what
//! `scripts/bench.sh` compares with onnxruntime, and what a user runs on a board to know how
//! many images per second to expect.

use std::time::Instant;

use serde::Serialize;

use crate::backbone::{Backbone, single_threaded};
use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct ForwardTiming {
    /// Images run at the same time, one thread each (1: one image, tract's own threads).
    pub parallel: usize,
    pub runs: usize,
    /// Median over the runs of (run time / images at once), in milliseconds.
    pub ms_per_image: f64,
    pub ms_per_image_min: f64,
    pub ms_per_image_max: f64,
}

/// Runs `warmup` untimed then `runs` timed forward passes of one image (a fixed, deterministic
/// input: the backbone's speed does not depend on the pixel values). With `parallel` > 1, each
/// pass runs that many images at once, one thread each with tract single-threaded (how
/// [`crate::features::FeatureExtractor`] streams data); the time per image is then the
/// throughput's.
pub fn time_forward(
    backbone: &Backbone,
    warmup: usize,
    runs: usize,
    parallel: usize,
) -> Result<ForwardTiming> {
    let parallel = parallel.max(1);
    let input = bench_input(backbone);
    // One image on all of `threads()` cores when there is one lane; one core each otherwise.
    let threads = if parallel == 1 {
        crate::backbone::threads()
    } else {
        1
    };
    let mut lanes = (0..parallel)
        .map(|_| {
            Ok((
                backbone.runner_on(threads)?,
                vec![0.0; backbone.feature_dim()],
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut pass = || -> Result<()> {
        if let [(runner, out)] = lanes.as_mut_slice() {
            return runner.features_into(&input, out);
        }
        std::thread::scope(|scope| {
            let workers: Vec<_> = lanes
                .iter_mut()
                .map(|(runner, out)| {
                    scope.spawn(|| single_threaded(|| runner.features_into(&input, out)))
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })
    };
    for _ in 0..warmup {
        pass()?;
    }
    let mut ms: Vec<f64> = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        pass()?;
        ms.push(started.elapsed().as_secs_f64() * 1e3 / parallel as f64);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ForwardTiming {
        parallel,
        runs: ms.len(),
        ms_per_image: median(&ms),
        ms_per_image_min: ms[0],
        ms_per_image_max: ms[ms.len() - 1],
    })
}

/// Per-operation times of tract's plan, in milliseconds per run (`bench --profile`), after
/// `warmup` untimed runs; in plan order. Empty for onnxruntime.
pub fn profile_forward(
    backbone: &Backbone,
    warmup: usize,
    runs: usize,
) -> Result<Vec<crate::backbone::NodeTime>> {
    let input = bench_input(backbone);
    let mut runner = backbone.runner_on(crate::backbone::threads())?;
    let mut out = vec![0.0; backbone.feature_dim()];
    for _ in 0..warmup {
        runner.features_into(&input, &mut out)?;
    }
    let runs = runs.max(1);
    let mut times = runner.profile(&input, runs)?;
    for t in &mut times {
        t.seconds *= 1e3 / runs as f64;
    }
    Ok(times)
}

/// The fixed, deterministic input of every timing (the speed does not depend on the values).
fn bench_input(backbone: &Backbone) -> Vec<f32> {
    (0..backbone.input_len())
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect()
}

/// Median of sorted values.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if !n.is_multiple_of(2) {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}
