//! The edge retrainer: stream samples through the frozen backbone into a state, refit the
//! head, evaluate and predict. The CLI is a thin shell over this.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::backbone::Backbone;
use crate::data::DataSource;
use crate::error::{Error, Result};
use crate::features::FeatureExtractor;
use crate::head::{FitReport, Head, Scored, argmax};
use crate::state::State;

/// Samples folded into the Gram matrix per rank-k update.
const BATCH: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct LearnOptions {
    /// Fixed λ; chosen by GCV when absent.
    pub lambda: Option<f64>,
    /// Skip images that cannot be decoded (reported) instead of failing.
    pub skip_bad: bool,
    /// Read the source from its start even if the state already absorbed part of it.
    pub relearn: bool,
    /// Hand the state to the checkpoint callback after about this many samples
    /// (rounded up to whole batches).
    pub checkpoint_every: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LearnReport {
    pub source: String,
    /// Records of this source absorbed by earlier runs and skipped now.
    pub resumed_after: u64,
    pub samples: u64,
    pub skipped: Vec<String>,
    pub total_samples: f64,
    pub labels: Vec<String>,
    pub seconds_features: f64,
    pub images_per_second: f64,
    pub fit: FitReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassAccuracy {
    pub label: String,
    pub samples: u64,
    pub correct: u64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub samples: u64,
    pub accuracy: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]`, in the state's label order.
    pub labels: Vec<String>,
    pub confusion: Vec<Vec<u64>>,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub file: String,
    pub top: Vec<Scored>,
}

pub struct Retrainer {
    extractor: FeatureExtractor,
    state: State,
}

impl Retrainer {
    /// Pairs a backbone with a state; fails if the state was learned with another backbone.
    /// `state_path` is only used in messages.
    pub fn new(backbone: Backbone, state: State, state_path: &Path) -> Result<Self> {
        state.check_backbone(backbone.fingerprint(), state_path)?;
        Ok(Retrainer {
            extractor: FeatureExtractor::new(backbone),
            state,
        })
    }

    /// A fresh, empty state for `backbone`.
    pub fn fresh(backbone: Backbone) -> Self {
        let state = State::new(backbone.fingerprint().clone(), backbone.model_path());
        Retrainer {
            extractor: FeatureExtractor::new(backbone),
            state,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn into_state(self) -> State {
        self.state
    }

    pub fn head(&self) -> Result<&Head> {
        self.state.head.as_ref().ok_or_else(|| {
            Error::Solver("the state has no head yet: run `learn` (or `fit`) first".into())
        })
    }

    /// Streams `source` into the statistics, then refits the head.
    ///
    /// Resuming: a source the state has already read from is continued after the records it
    /// absorbed (unless `relearn`). Checkpoints: with `checkpoint_every`, after each batch
    /// boundary past that many samples, the source's counts are brought up to date and
    /// `checkpoint` gets the state, which then holds exactly the records read so far; the
    /// head is refit only at the end. Without checkpoints nothing leaves this function
    /// before success, so a failure leaves the state file as it was.
    pub fn learn(
        &mut self,
        mut source: DataSource,
        options: &LearnOptions,
        mut progress: impl FnMut(usize),
        mut checkpoint: impl FnMut(&State) -> Result<()>,
    ) -> Result<LearnReport> {
        let started = Instant::now();
        let source_id = source.id();
        let resumed_after = if options.relearn {
            0
        } else {
            self.state.consumed(&source_id)
        };
        source.skip_records(resumed_after as usize)?;
        let every = options
            .checkpoint_every
            .map(|n| n.div_ceil(BATCH).max(1) * BATCH);
        let dim = self.extractor.dim();
        let mut batch = Vec::with_capacity(BATCH * dim);
        let mut batch_labels = Vec::with_capacity(BATCH);
        let mut feature = vec![0.0f32; dim];
        let (mut samples, mut skipped) = (0u64, Vec::new());
        // Counts not yet recorded in the state, and samples since the last checkpoint.
        let (mut consumed_pending, mut samples_pending, mut since_checkpoint) = (0u64, 0u64, 0);
        for (i, sample) in source.enumerate() {
            progress(resumed_after as usize + i + 1);
            consumed_pending += 1;
            let sample = match sample {
                Ok(s) => s,
                Err(e @ Error::Image { .. }) if options.skip_bad => {
                    skipped.push(e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let label = sample.label.as_deref().ok_or_else(|| {
                Error::InvalidArgument(format!("{}: sample has no label", sample.id))
            })?;
            self.extractor
                .pixels_into(&sample.pixels, &sample.id, &mut feature)?;
            batch.extend_from_slice(&feature);
            batch_labels.push(self.state.stats.label_index(label));
            samples += 1;
            samples_pending += 1;
            if batch_labels.len() == BATCH {
                self.state
                    .stats
                    .accumulate(&batch, &batch_labels, &source_id)?;
                batch.clear();
                batch_labels.clear();
                since_checkpoint += BATCH;
                if every.is_some_and(|n| since_checkpoint >= n) {
                    self.state
                        .record_source(&source_id, consumed_pending, samples_pending);
                    (consumed_pending, samples_pending, since_checkpoint) = (0, 0, 0);
                    checkpoint(&self.state)?;
                }
            }
        }
        self.state
            .stats
            .accumulate(&batch, &batch_labels, &source_id)?;
        self.state
            .record_source(&source_id, consumed_pending, samples_pending);
        if samples == 0 && resumed_after == 0 {
            return Err(Error::data(&source_id, "no usable samples"));
        }
        let seconds_features = started.elapsed().as_secs_f64();
        let fit = self.fit(options.lambda)?;
        Ok(LearnReport {
            source: source_id,
            resumed_after,
            samples,
            skipped,
            total_samples: self.state.stats.samples(),
            labels: self.state.stats.labels().to_vec(),
            seconds_features,
            images_per_second: samples as f64 / seconds_features.max(1e-9),
            fit,
        })
    }

    /// Re-solves the head from the statistics: at `lambda`, or at the GCV choice.
    pub fn fit(&mut self, lambda: Option<f64>) -> Result<FitReport> {
        self.state.fit(lambda)
    }

    /// Accuracy, per-class accuracy and confusion matrix on a labelled source.
    pub fn evaluate(
        &mut self,
        source: DataSource,
        mut progress: impl FnMut(usize),
    ) -> Result<EvalReport> {
        let started = Instant::now();
        let head = self.head()?.clone();
        let c = head.classes();
        let mut confusion = vec![vec![0u64; c]; c];
        let mut feature = vec![0.0f32; self.extractor.dim()];
        for (i, sample) in source.enumerate() {
            progress(i + 1);
            let sample = sample?;
            let label = sample.label.as_deref().ok_or_else(|| {
                Error::InvalidArgument(format!("{}: sample has no label", sample.id))
            })?;
            let truth =
                head.labels
                    .iter()
                    .position(|l| l == label)
                    .ok_or_else(|| Error::UnknownLabel {
                        label: label.into(),
                        known: head.labels.join(", "),
                    })?;
            self.extractor
                .pixels_into(&sample.pixels, &sample.id, &mut feature)?;
            confusion[truth][argmax(&head.scores(&feature)?)] += 1;
        }
        let samples: u64 = confusion.iter().flatten().sum();
        if samples == 0 {
            return Err(Error::InvalidArgument("no samples to evaluate".into()));
        }
        let correct: u64 = (0..c).map(|i| confusion[i][i]).sum();
        let per_class = head
            .labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                let n: u64 = confusion[i].iter().sum();
                ClassAccuracy {
                    label: label.clone(),
                    samples: n,
                    correct: confusion[i][i],
                    accuracy: if n == 0 {
                        0.0
                    } else {
                        confusion[i][i] as f64 / n as f64
                    },
                }
            })
            .collect();
        let seconds = started.elapsed().as_secs_f64();
        Ok(EvalReport {
            samples,
            accuracy: correct as f64 / samples as f64,
            per_class,
            labels: head.labels.clone(),
            confusion,
            seconds,
            images_per_second: samples as f64 / seconds.max(1e-9),
        })
    }

    /// Top-`k` labels of an image file.
    pub fn predict_file(&mut self, path: &Path, k: usize) -> Result<Prediction> {
        let feature = self.extractor.image_file(path)?;
        Ok(Prediction {
            file: path.display().to_string(),
            top: self.head()?.top_k(&feature, k)?,
        })
    }
}
