//! Accuracy, per-class accuracy and the confusion matrix of a head, on images (through the
//! backbone, by the `fastretrain` crate's `retrainer`) or on stored features.

use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::head::{Head, argmax};
use crate::store::FeatureBatches;

#[derive(Debug, Clone, Serialize)]
pub struct ClassAccuracy {
    pub label: String,
    pub samples: u64,
    pub correct: u64,
    /// None (JSON null, "—" in text) for a label with no samples in the evaluated data.
    pub accuracy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub samples: u64,
    pub accuracy: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]`, in the head's label order.
    pub labels: Vec<String>,
    pub confusion: Vec<Vec<u64>>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// A confusion matrix being filled, in a head's label order.
#[derive(Debug, Clone)]
pub struct Confusion {
    labels: Vec<String>,
    /// Also take a label that is a class number ("3") for that class: for a model's own
    /// outputs, whose classes are numbered.
    numbered: bool,
    counts: Vec<Vec<u64>>,
    started: Instant,
}

impl Confusion {
    pub fn new(head: &Head) -> Self {
        let c = head.classes();
        Confusion {
            labels: head.labels.clone(),
            numbered: false,
            counts: vec![vec![0; c]; c],
            started: Instant::now(),
        }
    }

    /// Takes class numbers as labels too (see [`Confusion::truth`]).
    pub fn numbered(mut self, numbered: bool) -> Self {
        self.numbered = numbered;
        self
    }

    /// The head's column for a true label; an unknown label is an error.
    pub fn truth(&self, label: &str) -> Result<usize> {
        let by_number = || {
            label
                .parse::<usize>()
                .ok()
                .filter(|i| self.numbered && *i < self.labels.len())
        };
        self.labels
            .iter()
            .position(|l| l == label)
            .or_else(by_number)
            .ok_or_else(|| Error::UnknownLabel {
                label: label.into(),
                known: self.labels.join(", "),
            })
    }

    pub fn add(&mut self, truth: usize, scores: &[f64]) {
        self.counts[truth][argmax(scores)] += 1;
    }

    pub fn report(self) -> Result<EvalReport> {
        let samples: u64 = self.counts.iter().flatten().sum();
        if samples == 0 {
            return Err(Error::InvalidArgument("no samples to evaluate".into()));
        }
        let c = self.labels.len();
        let correct: u64 = (0..c).map(|i| self.counts[i][i]).sum();
        let per_class = self
            .labels
            .iter()
            .zip(&self.counts)
            .enumerate()
            .map(|(i, (label, row))| {
                let n: u64 = row.iter().sum();
                ClassAccuracy {
                    label: label.clone(),
                    samples: n,
                    correct: row[i],
                    accuracy: (n > 0).then(|| row[i] as f64 / n as f64),
                }
            })
            .collect();
        let seconds = self.started.elapsed().as_secs_f64();
        Ok(EvalReport {
            samples,
            accuracy: correct as f64 / samples as f64,
            per_class,
            labels: self.labels,
            confusion: self.counts,
            seconds,
            images_per_second: samples as f64 / seconds.max(1e-9),
        })
    }
}

/// Evaluates `head` on stored features (no backbone needed).
pub fn evaluate_features(head: &Head, source: &dyn FeatureBatches) -> Result<EvalReport> {
    if source.dim() != head.dim {
        return Err(Error::FeatureDim {
            what: "stored features".into(),
            expected: head.dim,
            got: source.dim(),
        });
    }
    let mut confusion = Confusion::new(head);
    let truth: Vec<usize> = source
        .labels()
        .iter()
        .map(|l| confusion.truth(l))
        .collect::<Result<_>>()?;
    let dim = source.dim();
    source.for_each_batch(256, &mut |features, ids| {
        for (row, &id) in features.chunks_exact(dim).zip(ids) {
            if !row.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFiniteFeatures {
                    what: "stored features".into(),
                });
            }
            confusion.add(truth[id], &head.scores(row)?);
        }
        Ok(())
    })?;
    confusion.report()
}
