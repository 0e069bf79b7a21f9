//! From a sample to its penultimate features: preprocessing plus the frozen backbone.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::backbone::{Backbone, Runner, single_threaded};
use crate::data::read_sample_file;
use crate::data::{DataSource, Sample};
use crate::error::{Error, Result};
use crate::preprocess::{Preprocessor, SampleInput};
use crate::spec::Layout;
use crate::store::StoreWriter;

/// Samples read before they go through the backbone together (one run of the workers) and
/// are folded into the Gram matrix (one rank-k update).
pub const BATCH: usize = 64;

/// One sample in flight: a preprocessing buffer and a forward-pass context.
#[derive(Debug)]
struct Lane {
    preprocessor: Preprocessor,
    input: Vec<f32>,
    runner: Runner,
    /// An image input's shape (4-D, batch 1) and its layout, to mirror it; None for a tensor
    /// input, which is never mirrored (refused before it can be asked for).
    mirror_shape: Option<[usize; 4]>,
    layout: Layout,
    /// Mirror each input tensor left to right before the forward pass.
    mirror: bool,
}

impl Lane {
    /// Features of each sample into its row of `out`; returns (preprocess, forward) seconds.
    fn run(
        &mut self,
        samples: &[Sample],
        out: &mut [f32],
        model_path: &Path,
    ) -> Result<(f64, f64)> {
        let Some(dim) = out.len().checked_div(samples.len()) else {
            return Ok((0.0, 0.0));
        };
        let (mut preprocess, mut forward) = (0.0, 0.0);
        for (sample, row) in samples.iter().zip(out.chunks_mut(dim)) {
            let (p, f) = self.input_into(&sample.input, &sample.id, row, model_path)?;
            preprocess += p;
            forward += f;
        }
        Ok((preprocess, forward))
    }

    fn input_into(
        &mut self,
        sample: &SampleInput,
        what: &str,
        out: &mut [f32],
        model_path: &Path,
    ) -> Result<(f64, f64)> {
        let started = Instant::now();
        self.preprocessor
            .tensor_into(sample, what, &mut self.input)?;
        if self.mirror {
            let shape = self.mirror_shape.expect("only image inputs are mirrored");
            crate::feature_recipe::mirror(&mut self.input, shape, self.layout);
        }
        let preprocessed = Instant::now();
        self.runner.features_into(&self.input, out)?;
        let times = (
            (preprocessed - started).as_secs_f64(),
            preprocessed.elapsed().as_secs_f64(),
        );
        if !out.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteFeatures {
                what: format!("{what} through {}", model_path.display()),
            });
        }
        Ok(times)
    }
}

/// A share of a run of samples for a [`Worker`]: borrowed slices passed as raw parts, because
/// the worker thread outlives the borrow; [`FeatureExtractor::samples_into`] waits for every
/// worker's reply before it returns, so the slices are alive while a worker uses them.
struct Job {
    samples: *const Sample,
    count: usize,
    mirror: bool,
    out: *mut f32,
    out_len: usize,
}

// SAFETY: see `Job`: the caller blocks until the worker is done with the pointers.
unsafe impl Send for Job {}

/// A lane on a thread of its own that lives as long as the extractor: a thread spawned per run
/// would allocate tract's thread-local scratch afresh each time, and its allocations and the
/// main thread's would interleave differently in the heap from run to run.
#[derive(Debug)]
struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    replies: mpsc::Receiver<Result<(f64, f64)>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(mut lane: Lane, model_path: PathBuf) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, replies) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fastretrain-worker".into())
            .spawn(move || {
                single_threaded(|| {
                    while let Ok(job) = inbox.recv() {
                        // SAFETY: see `Job`.
                        let (samples, out) = unsafe {
                            (
                                std::slice::from_raw_parts(job.samples, job.count),
                                std::slice::from_raw_parts_mut(job.out, job.out_len),
                            )
                        };
                        lane.mirror = job.mirror;
                        if outbox.send(lane.run(samples, out, &model_path)).is_err() {
                            break;
                        }
                    }
                })
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start a worker thread: {e}")))?;
        Ok(Worker {
            jobs: Some(jobs),
            replies,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reusable buffers around one backbone. Runs of samples ([`Self::samples_into`]) are spread
/// over `workers` threads (the caller's and persistent worker threads), one image each with
/// tract single-threaded: on 2 cores that gives more images per second than one image on
/// tract's 2 matrix-product threads (docs/BENCHMARKS.md). Single images use tract's threads.
#[derive(Debug)]
pub struct FeatureExtractor {
    backbone: Backbone,
    /// Each image's features are the mean of its own and its mirror's (`--tta hflip`).
    flip_average: bool,
    /// The caller's lane (single images, and the first share of a run).
    lane: Lane,
    workers: Vec<Worker>,
    times: StageTimes,
}

/// Where the time of a run went, in seconds (what [`crate::retrainer::Retrainer::learn`]
/// reports; the benchmarks table it). With several workers, preprocess and forward split the
/// wall time of the parallel part in proportion to the threads' own times.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StageTimes {
    /// Reading and decoding samples.
    pub decode: f64,
    /// Resize, crop, normalise into the input tensor.
    pub preprocess: f64,
    /// The backbone's forward pass.
    pub forward: f64,
    /// Folding features into the statistics (rank-k updates).
    pub accumulate: f64,
}

impl FeatureExtractor {
    /// An extractor with one worker per thread of the backbone ([`Backbone::threads`]).
    pub fn new(backbone: Backbone) -> Result<Self> {
        let workers = backbone.threads();
        Self::with_workers(backbone, workers)
    }

    /// An extractor that computes up to `workers` (at least 1) images at once.
    pub fn with_workers(backbone: Backbone, workers: usize) -> Result<Self> {
        let lane = || -> Result<Lane> {
            let preprocessor = Preprocessor::new(backbone.spec());
            Ok(Lane {
                input: vec![0.0; preprocessor.input_len()],
                preprocessor,
                runner: backbone.runner()?,
                mirror_shape: <[usize; 4]>::try_from(backbone.input_shape())
                    .ok()
                    .filter(|_| backbone.spec().input.image().is_some()),
                layout: backbone.spec().input.layout(),
                mirror: false,
            })
        };
        let workers = (1..workers.max(1))
            .map(|_| Worker::spawn(lane()?, backbone.model_path().to_path_buf()))
            .collect::<Result<Vec<_>>>()?;
        Ok(FeatureExtractor {
            lane: lane()?,
            flip_average: false,
            backbone,
            workers,
            times: StageTimes::default(),
        })
    }

    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    pub fn dim(&self) -> usize {
        self.backbone.feature_dim()
    }

    /// Threads [`Self::samples_into`] uses.
    pub fn workers(&self) -> usize {
        1 + self.workers.len()
    }

    /// Test-time augmentation: each image's features become the mean of its own and its
    /// mirror's (for prediction and evaluation; learning adds mirrors as samples instead).
    /// Refused for a model fed with tensors: a tensor has no left and right.
    pub fn set_flip_average(&mut self, on: bool) -> Result<()> {
        if on {
            require_image_input(&self.backbone, "test-time flips (--tta hflip)")?;
        }
        self.flip_average = on;
        Ok(())
    }

    /// Features of one sample, written into `out` (length [`Self::dim`]). Non-finite
    /// features (a broken model or input) are an error naming `what`.
    pub fn input_into(&mut self, input: &SampleInput, what: &str, out: &mut [f32]) -> Result<()> {
        let model_path = self.backbone.model_path();
        let (mut preprocess, mut forward) = self.lane.input_into(input, what, out, model_path)?;
        if self.flip_average {
            let mut mirror = vec![0.0; out.len()];
            self.lane.mirror = true;
            let mirrored = self.lane.input_into(input, what, &mut mirror, model_path);
            self.lane.mirror = false;
            let (p, f) = mirrored?;
            average_into(out, &mirror);
            (preprocess, forward) = (preprocess + p, forward + f);
        }
        self.times.preprocess += preprocess;
        self.times.forward += forward;
        Ok(())
    }

    /// Features of `samples`, row `i` into `out[i·dim..(i+1)·dim]`, spread over the workers.
    /// The first failing sample's error is returned.
    pub fn samples_into(&mut self, samples: &[Sample], out: &mut [f32]) -> Result<()> {
        self.lane_samples_into(samples, out, false)?;
        if self.flip_average {
            let mut mirrored = vec![0.0; out.len()];
            self.lane_samples_into(samples, &mut mirrored, true)?;
            average_into(out, &mirrored);
        }
        Ok(())
    }

    /// [`Self::samples_into`] into `out` (resized), followed, when `mirrors`, by the rows of
    /// the same samples mirrored left to right (each input tensor reversed along its width):
    /// what `learn --augment hflip` folds in, and `forget` takes out again.
    pub fn samples_and_mirrors_into(
        &mut self,
        samples: &[Sample],
        out: &mut Vec<f32>,
        mirrors: bool,
    ) -> Result<()> {
        let rows = samples.len() * self.dim();
        out.resize(if mirrors { 2 * rows } else { rows }, 0.0);
        let (own, mirrored) = out.split_at_mut(rows);
        self.samples_into(samples, own)?;
        if mirrors {
            self.lane_samples_into(samples, mirrored, true)?;
        }
        Ok(())
    }

    fn lane_samples_into(
        &mut self,
        samples: &[Sample],
        out: &mut [f32],
        mirror: bool,
    ) -> Result<()> {
        self.lane.mirror = mirror;
        let result = self.spread_samples_into(samples, out, mirror);
        self.lane.mirror = false;
        result
    }

    fn spread_samples_into(
        &mut self,
        samples: &[Sample],
        out: &mut [f32],
        mirror: bool,
    ) -> Result<()> {
        let dim = self.dim();
        if out.len() != samples.len() * dim {
            return Err(Error::FeatureDim {
                what: "feature rows".into(),
                expected: samples.len() * dim,
                got: out.len(),
            });
        }
        if samples.is_empty() {
            return Ok(());
        }
        let model_path = self.backbone.model_path();
        if self.workers.is_empty() || samples.len() == 1 {
            let lane = &mut self.lane;
            let (preprocess, forward) = self
                .backbone
                .on_its_threads(|| lane.run(samples, out, model_path))?;
            self.times.preprocess += preprocess;
            self.times.forward += forward;
            return Ok(());
        }
        let per_lane = samples.len().div_ceil(self.workers());
        let started = Instant::now();
        let mut shares = samples.chunks(per_lane).zip(out.chunks_mut(per_lane * dim));
        let (own_samples, own_out) = shares.next().expect("at least one sample");
        let stopped =
            || Error::InvalidArgument("a feature worker thread stopped (panicked)".into());
        let (mut busy, mut results) = (Vec::new(), Vec::new());
        for (worker, (samples, out)) in self.workers.iter().zip(shares) {
            let job = Job {
                samples: samples.as_ptr(),
                count: samples.len(),
                mirror,
                out: out.as_mut_ptr(),
                out_len: out.len(),
            };
            let jobs = worker.jobs.as_ref().expect("open until dropped");
            match jobs.send(job) {
                Ok(()) => busy.push(worker),
                Err(_) => results.push(Err(stopped())),
            }
        }
        // A panic in our own share must not unwind past workers still writing into `out`.
        let own = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            single_threaded(|| self.lane.run(own_samples, own_out, model_path))
        }));
        // Every busy worker's reply is awaited before anything returns (see `Job`).
        for worker in &busy {
            results.push(worker.replies.recv().unwrap_or_else(|_| Err(stopped())));
        }
        results.push(own.unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        let wall = started.elapsed().as_secs_f64();
        let (mut preprocess, mut forward) = (0.0, 0.0);
        for result in results {
            let (p, f) = result?;
            preprocess += p;
            forward += f;
        }
        let share = preprocess / (preprocess + forward).max(1e-12);
        self.times.preprocess += wall * share;
        self.times.forward += wall * (1.0 - share);
        Ok(())
    }

    /// Preprocess and forward time since the last call (the other stages stay 0).
    pub fn take_times(&mut self) -> StageTimes {
        std::mem::take(&mut self.times)
    }

    /// Whether `sample` fits the model's input (its kind, shape and values), checked as it is
    /// read so that a bad sample is named (and `--skip-bad` passes over it) before it joins a
    /// batch.
    pub fn check_sample(&self, sample: &Sample) -> Result<()> {
        crate::preprocess::check_sample(&self.backbone.spec().input, &sample.input, &sample.id)
    }

    pub fn sample(&mut self, sample: &Sample) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.dim()];
        self.input_into(&sample.input, &sample.id, &mut out)?;
        Ok(out)
    }

    /// Features of one sample file: an image, or a `.npy` tensor.
    pub fn sample_file(&mut self, path: &Path) -> Result<Vec<f32>> {
        let input = read_sample_file(path)?;
        let mut out = vec![0.0; self.dim()];
        self.input_into(&input, &path.display().to_string(), &mut out)?;
        Ok(out)
    }
}

/// An error unless `backbone` takes images: mirroring (`what`) has no meaning for a tensor.
pub fn require_image_input(backbone: &Backbone, what: &str) -> Result<()> {
    match backbone.spec().input.tensor() {
        None => Ok(()),
        Some(t) => Err(Error::InvalidArgument(format!(
            "{what} mirror images left to right; {} takes tensors of shape {:?}, which have no \
             left and right",
            backbone.model_path().display(),
            t.shape
        ))),
    }
}

/// `out` becomes the mean of itself and `other`, value by value.
fn average_into(out: &mut [f32], other: &[f32]) {
    out.iter_mut()
        .zip(other)
        .for_each(|(o, m)| *o = 0.5 * (*o + m));
}

/// What [`extract_to_store`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtractReport {
    pub source: String,
    /// Records of this source the store already held (skipped now).
    pub resumed_after: u64,
    pub rows: u64,
    pub skipped: Vec<String>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Streams `source` through the backbone into a feature store, resuming after the
/// `resumed_after` records the store already holds for this source. Undecodable images stop
/// the run unless `skip_bad`; either way every complete chunk written so far stays.
pub fn extract_to_store(
    extractor: &mut FeatureExtractor,
    mut source: DataSource,
    writer: &mut StoreWriter,
    resumed_after: u64,
    skip_bad: bool,
    mut progress: impl FnMut(usize),
) -> Result<ExtractReport> {
    let started = Instant::now();
    let source_id = source.id();
    if extractor.backbone().recipe().augment != crate::feature_recipe::Augment::None {
        return Err(Error::InvalidArgument(
            "a feature store holds one row per record: extract without --augment (it is for \
             learn)"
                .into(),
        ));
    }
    source.skip_records(resumed_after as usize)?;
    let dim = extractor.dim();
    let input = extractor.backbone().spec().input.clone();
    let (mut pending, mut features) = (Vec::with_capacity(BATCH), Vec::new());
    // Runs the samples read so far and hands them to the writer, in record order.
    let mut store_pending = |pending: &mut Vec<Sample>, writer: &mut StoreWriter| -> Result<u64> {
        features.resize(pending.len() * dim, 0.0);
        extractor.samples_into(pending, &mut features)?;
        for (sample, row) in pending.iter().zip(features.chunks(dim)) {
            writer.push(&source_id, row, sample.require_label()?, &sample.id)?;
        }
        let stored = pending.len() as u64;
        pending.clear();
        Ok(stored)
    };
    let (mut rows, mut skipped) = (0u64, Vec::new());
    for (i, sample) in source.enumerate() {
        progress(resumed_after as usize + i + 1);
        match sample.and_then(|s| {
            s.require_label()?;
            crate::preprocess::check_sample(&input, &s.input, &s.id)?;
            Ok(s)
        }) {
            Ok(sample) => pending.push(sample),
            Err(e) if skip_bad && e.is_bad_sample() => {
                // The store counts records in order: what came before is stored first.
                rows += store_pending(&mut pending, writer)?;
                skipped.push(e.to_string());
                writer.skip(&source_id)?;
            }
            Err(e) => {
                // What was read before the error goes to the writer, as it would have
                // one sample at a time: its complete chunks stay in the store.
                store_pending(&mut pending, writer)?;
                return Err(e);
            }
        }
        if pending.len() == BATCH {
            rows += store_pending(&mut pending, writer)?;
        }
    }
    rows += store_pending(&mut pending, writer)?;
    writer.flush()?;
    if rows == 0 && resumed_after == 0 {
        return Err(Error::data(&source_id, "no usable samples"));
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(ExtractReport {
        source: source_id,
        resumed_after,
        rows,
        skipped,
        seconds,
        images_per_second: rows as f64 / seconds.max(1e-9),
    })
}
