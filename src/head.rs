//! The refit dense head: `scores = [h, 1] · W`, one column per label. Scores are the head's
//! raw outputs (targets were ±1), highest first.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::solver::LambdaSearch;

/// How λ was chosen for the current head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LambdaSource {
    /// Generalised cross-validation over the default grid.
    Gcv,
    /// Given by the user.
    Fixed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Feature dimension d (without the bias input).
    pub dim: usize,
    pub labels: Vec<String>,
    /// (d + 1) × c, row major; the last row is the bias.
    pub weights: Vec<f64>,
    pub lambda: f64,
    pub lambda_source: LambdaSource,
    /// Samples in the statistics when this head was solved (less than the state's count
    /// after a checkpoint: run `fit`).
    pub fitted_samples: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub lambda: f64,
    pub lambda_source: LambdaSource,
    pub gcv: Option<LambdaSearch>,
    pub seconds: f64,
}

/// One ranked label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub label: String,
    pub score: f64,
}

impl Head {
    /// Builds a head from the solver's (d+1) × c solution.
    pub fn from_solution(
        solution: faer::MatRef<'_, f64>,
        labels: Vec<String>,
        lambda: f64,
        lambda_source: LambdaSource,
        fitted_samples: f64,
    ) -> Self {
        let (p, c) = (solution.nrows(), solution.ncols());
        let mut weights = Vec::with_capacity(p * c);
        for i in 0..p {
            for j in 0..c {
                weights.push(solution[(i, j)]);
            }
        }
        Head {
            dim: p - 1,
            labels,
            weights,
            lambda,
            lambda_source,
            fitted_samples,
        }
    }

    pub fn classes(&self) -> usize {
        self.labels.len()
    }

    /// Checks sizes and values of a head read from disk.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.weights.len() != (self.dim + 1) * self.labels.len() {
            return Err("head weights do not match its dimension and labels".into());
        }
        if !self.weights.iter().all(|w| w.is_finite()) || !self.lambda.is_finite() {
            return Err("head holds NaN or infinite values".into());
        }
        Ok(())
    }

    /// Raw scores for one feature vector.
    pub fn scores(&self, features: &[f32]) -> Result<Vec<f64>> {
        if features.len() != self.dim {
            return Err(Error::FeatureDim {
                what: "head input".into(),
                expected: self.dim,
                got: features.len(),
            });
        }
        let c = self.classes();
        let mut out = self.weights[self.dim * c..].to_vec(); // bias row
        for (i, &h) in features.iter().enumerate() {
            let row = &self.weights[i * c..(i + 1) * c];
            for (o, w) in out.iter_mut().zip(row) {
                *o += h as f64 * w;
            }
        }
        Ok(out)
    }

    /// Index of the best-scoring label.
    pub fn predict(&self, features: &[f32]) -> Result<usize> {
        Ok(argmax(&self.scores(features)?))
    }

    /// The `k` best labels with their scores, best first.
    pub fn top_k(&self, features: &[f32], k: usize) -> Result<Vec<Scored>> {
        let scores = self.scores(features)?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        Ok(order
            .into_iter()
            .take(k)
            .map(|i| Scored {
                label: self.labels[i].clone(),
                score: scores[i],
            })
            .collect())
    }

    /// The weights as a nalgebra matrix ((d + 1) × c), for callers that work in nalgebra.
    pub fn weights_matrix(&self) -> nalgebra::DMatrix<f64> {
        nalgebra::DMatrix::from_row_slice(self.dim + 1, self.classes(), &self.weights)
    }
}

pub(crate) fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}
