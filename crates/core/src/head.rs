//! The refit dense head: `scores = [h, 1] · W`, one column per label, optionally after hidden
//! dense layers `h ← g([h, 1] · Wᵢ)` (heads refit by recomputation, PAPER.md §2). Scores are
//! the head's raw outputs (targets were ±1), highest first.

use nalgebra::{DMatrixView, Dyn};
use ndarray::ArrayView2;
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
    /// Exact K-fold cross-validation over the default grid, from fold statistics
    /// ([`crate::fitting::cross_validate`]).
    CrossValidation,
}

/// Which fitting method produced a head (see [`crate::fitting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    Gram,
    BlockRls,
    Step,
    Recompute,
    /// The model's own dense layer, read from the ONNX file unchanged (`export --original-head`).
    Original,
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MethodName::Gram => "gram",
            MethodName::BlockRls => "block-rls",
            MethodName::Step => "step",
            MethodName::Recompute => "recompute",
            MethodName::Original => "original",
        })
    }
}

/// Activation of a hidden dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Bipolar sigmoid `2σ(z) − 1` (= tanh(z/2)); inverse `ln((1+p)/(1−p))`.
    Bsig,
    /// `sin z`; inverse `asin p`.
    Sin,
    Identity,
    /// `max(z, 0)`: no inverse, so such layers cannot be recomputed.
    Relu,
}

impl Activation {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bsig" | "sigmoid" => Ok(Activation::Bsig),
            "sin" => Ok(Activation::Sin),
            "identity" | "linear" => Ok(Activation::Identity),
            "relu" => Ok(Activation::Relu),
            _ => Err(Error::InvalidArgument(format!(
                "unknown activation '{s}': use bsig (2σ(z)−1), sin, identity or relu"
            ))),
        }
    }

    pub fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Bsig => 2.0 / (1.0 + (-z).exp()) - 1.0,
            Activation::Sin => z.sin(),
            Activation::Identity => z,
            Activation::Relu => z.max(0.0),
        }
    }

    /// The inverse on the open range the pull-back maps targets into; `None` for ReLU.
    pub fn inverse(self, p: f64) -> Option<f64> {
        match self {
            Activation::Bsig => Some(((1.0 + p) / (1.0 - p)).ln()),
            Activation::Sin => Some(p.asin()),
            Activation::Identity => Some(p),
            Activation::Relu => None,
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Activation::Bsig => "bsig",
            Activation::Sin => "sin",
            Activation::Identity => "identity",
            Activation::Relu => "relu",
        })
    }
}

/// A hidden dense layer: `out = g([in, 1] · W)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseLayer {
    pub inputs: usize,
    pub outputs: usize,
    /// (inputs + 1) × outputs, row major; the last row is the bias.
    pub weights: Vec<f64>,
    pub activation: Activation,
}

impl DenseLayer {
    /// `g([x, 1] · W)` for one row.
    pub fn forward(&self, x: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&affine(&self.weights, self.outputs, x));
        for o in out.iter_mut() {
            *o = self.activation.apply(*o);
        }
    }
}

/// The weights of a layer kept as (inputs + 1) × outputs, row major, the last row the bias,
/// seen in place as a nalgebra matrix of that shape (no copy).
pub fn weights_view(
    weights: &[f64],
    inputs: usize,
    outputs: usize,
) -> DMatrixView<'_, f64, Dyn, Dyn> {
    DMatrixView::from_slice_with_strides(weights, inputs + 1, outputs, outputs, 1)
}

/// `[x, 1] · W` for one row `x` and weights stored as [`weights_view`] sees them: a plain
/// loop over W's rows, each scaled by its input and added to the bias row.
fn affine(weights: &[f64], outputs: usize, x: &[f64]) -> Vec<f64> {
    let mut out = weights[x.len() * outputs..].to_vec(); // bias row
    for (i, v) in x.iter().enumerate() {
        for (o, w) in out.iter_mut().zip(&weights[i * outputs..(i + 1) * outputs]) {
            *o += v * w;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Feature dimension d (without the bias input).
    pub dim: usize,
    pub labels: Vec<String>,
    /// Hidden layers from the features up; empty for a linear head.
    pub hidden: Vec<DenseLayer>,
    /// Output layer, (m + 1) × c, row major, m = the last hidden width (or d); the last row
    /// is the bias.
    pub weights: Vec<f64>,
    pub lambda: f64,
    pub lambda_source: LambdaSource,
    /// Samples in the statistics when this head was solved (less than the state's count
    /// after a checkpoint: run `fit`).
    pub fitted_samples: f64,
    pub method: MethodName,
}

#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub method: MethodName,
    pub lambda: f64,
    pub lambda_source: LambdaSource,
    pub gcv: Option<LambdaSearch>,
    /// The K-fold search, when λ was chosen by it (GCV's search is then reported beside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_validation: Option<crate::solver::CrossValidation>,
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
            hidden: Vec::new(),
            weights,
            lambda,
            lambda_source,
            fitted_samples,
            method: MethodName::Gram,
        }
    }

    /// The identity on `labels.len()` inputs: scores are the inputs themselves. With the
    /// model's own output as the "features", it classifies with the model as it is.
    pub fn identity(labels: Vec<String>) -> Self {
        let c = labels.len();
        let mut weights = vec![0.0; (c + 1) * c];
        for i in 0..c {
            weights[i * c + i] = 1.0;
        }
        Self::original(c, labels, weights)
    }

    /// A linear head taken from a model as it is (nothing fitted): `weights` as in
    /// [`Head::weights`], (dim + 1) × labels.
    pub fn original(dim: usize, labels: Vec<String>, weights: Vec<f64>) -> Self {
        Head {
            dim,
            labels,
            hidden: Vec::new(),
            weights,
            lambda: 0.0,
            lambda_source: LambdaSource::Fixed,
            fitted_samples: 0.0,
            method: MethodName::Original,
        }
    }

    /// Width of the output layer's input (the last hidden width, or d).
    pub fn output_inputs(&self) -> usize {
        self.hidden.last().map_or(self.dim, |l| l.outputs)
    }

    pub fn classes(&self) -> usize {
        self.labels.len()
    }

    /// Checks sizes and values of a head read from disk.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut inputs = self.dim;
        for layer in &self.hidden {
            if layer.inputs != inputs
                || layer.outputs == 0
                || layer.outputs > 1 << 16
                || Some(layer.weights.len()) != (layer.inputs + 1).checked_mul(layer.outputs)
            {
                return Err("hidden layer sizes do not chain".into());
            }
            if !layer.weights.iter().all(|w| w.is_finite()) {
                return Err("head holds NaN or infinite values".into());
            }
            inputs = layer.outputs;
        }
        if Some(self.weights.len()) != (inputs + 1).checked_mul(self.labels.len()) {
            return Err("head weights do not match its dimension and labels".into());
        }
        if !self.weights.iter().all(|w| w.is_finite()) || !self.lambda.is_finite() {
            return Err("head holds NaN or infinite values".into());
        }
        Ok(())
    }

    /// The output layer's scores for a row of its input (hidden activations or features).
    fn output_scores(&self, x: &[f64]) -> Vec<f64> {
        affine(&self.weights, self.classes(), x)
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
        let mut x: Vec<f64> = features.iter().map(|&v| v as f64).collect();
        for layer in &self.hidden {
            let mut out = vec![0.0; layer.outputs];
            layer.forward(&x, &mut out);
            x = out;
        }
        Ok(self.output_scores(&x))
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

    /// A linear head solved elsewhere (a fleet's server): `weights` is (dim + 1) × labels, the
    /// last row the bias, for features of `dim` values; each label named once.
    pub fn from_weights(
        weights: ArrayView2<'_, f64>,
        dim: usize,
        labels: Vec<String>,
        lambda: f64,
        fitted_samples: f64,
    ) -> Result<Head> {
        let mut unique = labels.clone();
        unique.sort();
        unique.dedup();
        if labels.is_empty() || unique.len() != labels.len() {
            return Err(Error::InvalidArgument(
                "a head needs at least one label, each named once".into(),
            ));
        }
        let shape = weights.dim();
        if shape != (dim + 1, labels.len()) {
            return Err(Error::InvalidArgument(format!(
                "head weights must be (dim + 1) × labels = ({}, {}), got {shape:?}",
                dim + 1,
                labels.len(),
            )));
        }
        let head = Head {
            dim,
            labels,
            hidden: Vec::new(),
            weights: weights.iter().copied().collect(), // row major, as a head keeps them
            lambda,
            lambda_source: LambdaSource::Fixed,
            fitted_samples,
            method: MethodName::Gram,
        };
        head.validate().map_err(Error::InvalidArgument)?;
        Ok(head)
    }

    /// The output layer's weights as a nalgebra matrix ((m + 1) × c, the last row the bias),
    /// viewed in place.
    pub fn weights_matrix(&self) -> DMatrixView<'_, f64, Dyn, Dyn> {
        weights_view(&self.weights, self.output_inputs(), self.classes())
    }
}

/// Index of the largest value (the last of equals); 0 for an empty slice.
pub fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}
