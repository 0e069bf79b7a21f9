//! Timing the backbone's forward pass on this machine (`fastretrain bench`): what
//! `scripts/bench/bench.sh` compares with onnxruntime, and what a user runs on a board to know how
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
    // One image on all of the backbone's cores when there is one lane; one core each otherwise.
    let threads = if parallel == 1 { backbone.threads() } else { 1 };
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
            return backbone.on_its_threads(|| runner.features_into(&input, out));
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
    let mut runner = backbone.runner_on(backbone.threads())?;
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

/// A matrix product of tract's plan timed on its own with tract's kernels: the operands packed
/// beforehand, nothing fused, and C laid out as in the plan (an x86 kernel stores whole columns
/// only when C's m axis is contiguous), so what is left is the kernels' arithmetic and stores.
/// Summed over a layer kind, it is the floor tract's matrix kernels put under that kind's time
/// in the forward pass, whatever is done about packing, tiling and fusion around them
/// (`bench --kernels`).
#[derive(Debug, Clone, Serialize)]
pub struct KernelFloor {
    /// The plan's node (`bench --profile` times it in the forward pass).
    pub node: String,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// The kernel tract's plan picked, and its time alone (ms, median of the runs).
    pub kernel: String,
    pub kernel_ms: f64,
    /// The fastest of tract's f32 kernels that run on this machine, over both orientations of
    /// the product (m×n or n×m) into the plan's C, and its time alone.
    pub best_kernel: String,
    pub best_ms: f64,
}

/// Times every matrix product of the backbone's tract plan alone (see [`KernelFloor`]), one
/// thread, `runs` timed runs per kernel after two untimed ones. Empty for onnxruntime.
pub fn kernel_floor(backbone: &Backbone, runs: usize) -> Result<Vec<KernelFloor>> {
    use tract_linalg::MmmDispatch;
    let kernels: Vec<_> = MmmDispatch::native()
        .runnable()
        .iter()
        .filter(|k| k.internal_type() == tract_onnx::prelude::DatumType::F32)
        .collect();
    let floors = backbone
        .plan_steps()
        .into_iter()
        .filter_map(|step| Some((step.node, step.product?)))
        .map(|(node, p)| {
            // One timing per kernel and orientation; the plan's own is one of them.
            let mut kernel_ms = f64::NAN;
            let mut best = (p.kernel.clone(), f64::NAN);
            for kernel in &kernels {
                // Turned, the plan's C keeps its layout: its contiguous axis changes role.
                let orientations = [
                    (p.m, p.n, p.m_contiguous, ""),
                    (p.n, p.m, !p.m_contiguous, ", transposed"),
                ];
                for (m, n, m_contiguous, turned) in orientations {
                    let Some(ms) = time_product(kernel.as_ref(), m, p.k, n, m_contiguous, runs)
                    else {
                        continue;
                    };
                    if turned.is_empty() && kernel.name() == p.kernel && kernel_ms.is_nan() {
                        kernel_ms = ms;
                    }
                    if best.1.is_nan() || ms < best.1 {
                        best = (format!("{}{turned}", kernel.name()), ms);
                    }
                }
            }
            KernelFloor {
                node,
                m: p.m,
                k: p.k,
                n: p.n,
                kernel: p.kernel,
                kernel_ms,
                best_kernel: best.0,
                best_ms: best.1,
            }
        });
    Ok(single_threaded(|| floors.collect()))
}

/// Median ms of C (m×n) = A (m×k) · B (k×n) with `kernel`, A and B packed for it beforehand,
/// C stored column-major when `m_contiguous` (else row-major); None when the kernel does not
/// take f32 operands packed from plain arrays.
fn time_product(
    kernel: &dyn tract_linalg::mmm::MatMatMul,
    m: usize,
    k: usize,
    n: usize,
    m_contiguous: bool,
    runs: usize,
) -> Option<f64> {
    use tract_linalg::mmm::{AsInputValue, FusedSpec};
    use tract_linalg::pack::PackedFormat;
    use tract_onnx::prelude::{DatumType, Tensor};
    let (a_format, b_format) = kernel.packings().first()?;
    let f32_packing = |f: &dyn tract_linalg::mmm::MMMInputFormat| {
        f.downcast_ref::<PackedFormat>()
            .is_some_and(|p| p.dt == DatumType::F32)
    };
    if !f32_packing(a_format.as_ref()) || !f32_packing(b_format.as_ref()) {
        return None;
    }
    let values = |len: usize| (0..len).map(|i| ((i * 7919) % 255) as f32 / 255.0);
    let a = Tensor::from_shape(&[m, k], &values(m * k).collect::<Vec<_>>()).ok()?;
    let b = Tensor::from_shape(&[k, n], &values(k * n).collect::<Vec<_>>()).ok()?;
    let packed_a = a_format.prepare_one(&a, 1, 0).ok()?;
    let packed_b = b_format.prepare_one(&b, 0, 1).ok()?;
    let (c_shape, c_m_axis, c_n_axis) = if m_contiguous {
        ([n, m], 1, 0)
    } else {
        ([m, n], 0, 1)
    };
    let mut c = Tensor::zero::<f32>(&c_shape).ok()?;
    let mut ms = Vec::with_capacity(runs.max(1));
    for run in 0..runs.max(1) + 2 {
        let started = Instant::now();
        // SAFETY: A and B have the shapes m×k and k×n this product is run with, C holds m×n
        // values and its view names its m and n axes, A and B were packed by the kernel's own
        // formats, and C's view is built over C's storage.
        let ran = unsafe {
            kernel.run(
                m,
                n,
                &[
                    FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(&*packed_a),
                        b: AsInputValue::Borrowed(&*packed_b),
                        packing: 0,
                    },
                    FusedSpec::Store(
                        kernel
                            .c_view(Some(c_m_axis), Some(c_n_axis))
                            .wrap(&c.view_mut()),
                    ),
                ],
            )
        };
        ran.ok()?;
        if run >= 2 {
            ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(f64::total_cmp);
    Some(median(&ms))
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
