//! Heads with hidden dense layers, refit by recomputation (Yang et al., TPAMI 2019;
//! PAPER.md §2): `H₁ = g([H₀, 1] W₁)`, …, `Ŷ = [H_L, 1] W_out`, with H₀ the backbone features.
//!
//! One iteration, all from streamed batches:
//! 1. a forward pass accumulates the Gram statistics of every hidden layer's output;
//! 2. the output layer is solved by ridge (PAPER.md §1);
//! 3. the targets are pulled back through it: the desired input of a layer with weights
//!    `[W; bᵀ]` is `P = (T − 1bᵀ) pinv_λ(W)`, `pinv_λ(W) = (WᵀW + λI)⁻¹Wᵀ = Wᵀ(WWᵀ + λI)⁻¹`
//!    (whichever inverse is smaller);
//! 4. P is min-max scaled per hidden unit into `[−0.9, 0.9]` (inside the activation's open
//!    range; not for identity), mapped through the inverse activation, and the hidden layer is
//!    solved by ridge from its own input: `W = (GᵢₙW + λI)⁻¹ Σ_k S_k z_kᵀ`;
//! 5. steps 3–4 repeat downwards through the hidden layers (each pulling back through the
//!    layer just solved), using the inputs of the forward pass of step 1.
//!
//! After the last iteration a final forward pass solves the output layer again. Since the
//! targets are one code per class, the pulled-back targets are one code per class too, so
//! `Σ x zᵀ = Σ_k S_k z_kᵀ` with `S_k` the per-class feature sums the Gram statistics already
//! hold: each iteration costs one pass over the data.
//!
//! ReLU has no inverse: a ReLU head can only have its output layer refit on random hidden
//! features (`iterations = 0`); with iterations it is refused.

use faer::Mat;

use crate::error::{Error, Result};
use crate::head::{Activation, DenseLayer, Head, LambdaSource, MethodName};
use crate::rng::SplitMix64;
use crate::solver::GramStats;
use crate::solver::batch_matrices;
use crate::store::FeatureBatches;

/// Pulled-back targets are scaled per unit into `[−PULL_BACK_RANGE, PULL_BACK_RANGE]`.
pub const PULL_BACK_RANGE: f64 = 0.9;

#[derive(Debug, Clone, PartialEq)]
pub struct RecomputeOptions {
    /// Hidden layer widths, from the features up.
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Pull-back iterations (0: only the output layer is solved, on random hidden features).
    pub iterations: usize,
    /// Seed of the initial hidden weights ([`initial_layers`]).
    pub seed: u64,
}

impl RecomputeOptions {
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.iter().any(|&w| w == 0 || w > 1 << 16) {
            return Err(Error::InvalidArgument(
                "recompute needs at least one hidden layer of width 1 to 65536".into(),
            )
            .for_setting("hidden"));
        }
        if self.activation.inverse(0.5).is_none() && self.iterations > 0 {
            return Err(Error::InvalidArgument(format!(
                "activation {} has no inverse, so its hidden layers cannot be recomputed; use \
                 bsig, sin or identity, or --iterations 0 to refit only the output layer",
                self.activation
            )));
        }
        Ok(())
    }
}

/// Initial hidden layers: weights uniform in `±√(3/(inputs+1))` (unit variance for unit-variance
/// inputs), drawn from splitmix64(`seed`) layer by layer, row by row.
pub fn initial_layers(
    dim: usize,
    widths: &[usize],
    activation: Activation,
    seed: u64,
) -> Vec<DenseLayer> {
    let mut rng = SplitMix64(seed);
    let mut inputs = dim;
    widths
        .iter()
        .map(|&outputs| {
            let a = (3.0 / (inputs + 1) as f64).sqrt();
            let weights = (0..(inputs + 1) * outputs)
                .map(|_| a * (2.0 * rng.uniform() - 1.0))
                .collect();
            let layer = DenseLayer {
                inputs,
                outputs,
                weights,
                activation,
            };
            inputs = outputs;
            layer
        })
        .collect()
}

fn layer_matrix(layer: &DenseLayer) -> Mat<f64> {
    let m = layer.outputs;
    Mat::from_fn(layer.inputs + 1, m, |i, j| layer.weights[i * m + j])
}

fn row_major(w: &Mat<f64>) -> Vec<f64> {
    (0..w.nrows())
        .flat_map(|i| (0..w.ncols()).map(move |j| w[(i, j)]))
        .collect()
}

/// One forward pass: the Gram statistics of each hidden layer's output.
fn hidden_stats(
    source: &dyn FeatureBatches,
    layers: &[DenseLayer],
    batch: usize,
) -> Result<Vec<GramStats>> {
    let labels = source.labels();
    let mut stats: Vec<GramStats> = layers
        .iter()
        .map(|l| {
            let mut s = GramStats::new(l.outputs);
            for label in labels {
                s.label_index(label);
            }
            s
        })
        .collect();
    let matrices: Vec<Mat<f64>> = layers.iter().map(layer_matrix).collect();
    source.for_each_batch(batch, &mut |features, ids| {
        let (mut x, _) = batch_matrices(features, ids, source.dim(), labels.len())?;
        for ((layer, w), stats) in layers.iter().zip(&matrices).zip(stats.iter_mut()) {
            let z = &x * w;
            let (b, m) = (z.nrows(), z.ncols());
            let h: Vec<f64> = (0..b)
                .flat_map(|r| (0..m).map(move |j| (r, j)))
                .map(|(r, j)| layer.activation.apply(z[(r, j)]))
                .collect();
            stats.accumulate(&h, ids, "hidden layer")?;
            x = Mat::from_fn(b, m + 1, |r, j| if j == m { 1.0 } else { h[r * m + j] });
        }
        Ok(())
    })?;
    Ok(stats)
}

/// `pinv_λ(A) = (AᵀA + λI)⁻¹Aᵀ = Aᵀ(AAᵀ + λI)⁻¹`, inverting the smaller Gram matrix.
fn regularised_pinv(a: faer::MatRef<'_, f64>, lambda: f64) -> Result<Mat<f64>> {
    let (r, s) = (a.nrows(), a.ncols());
    let small = if s <= r {
        a.transpose() * a
    } else {
        a * a.transpose()
    };
    let mut small = small;
    for i in 0..small.nrows() {
        small[(i, i)] += lambda;
    }
    let llt = small.llt(faer::Side::Lower).map_err(|_| {
        Error::Solver("recompute: pull-back matrix is not positive definite".into())
    })?;
    use faer::linalg::solvers::Solve;
    if s <= r {
        let mut at = a.transpose().to_owned();
        llt.solve_in_place(at.as_mut());
        Ok(at)
    } else {
        // Aᵀ M⁻¹ = (M⁻¹ A)ᵀ for symmetric M.
        let mut ma = a.to_owned();
        llt.solve_in_place(ma.as_mut());
        Ok(ma.transpose().to_owned())
    }
}

/// Desired pre-activations from desired outputs `p` (classes × units): scaled per unit into
/// the activation's range, then inverted.
fn to_preactivation(p: &Mat<f64>, activation: Activation) -> Mat<f64> {
    if activation == Activation::Identity {
        return p.clone();
    }
    let (c, m) = (p.nrows(), p.ncols());
    let mut z = Mat::zeros(c, m);
    for j in 0..m {
        let (lo, hi) = (0..c).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), k| {
            (lo.min(p[(k, j)]), hi.max(p[(k, j)]))
        });
        for k in 0..c {
            let scaled = if hi - lo > 1e-12 * hi.abs().max(1.0) {
                PULL_BACK_RANGE * (2.0 * (p[(k, j)] - lo) / (hi - lo) - 1.0)
            } else {
                0.0
            };
            z[(k, j)] = activation
                .inverse(scaled)
                .expect("validated: the activation has an inverse");
        }
    }
    z
}

/// Solves every hidden layer top-down from the output layer `out` (PAPER.md §2 steps 2–4).
fn pull_back(
    layers: &mut [DenseLayer],
    base: &GramStats,
    stats: &[GramStats],
    out: Mat<f64>,
    lambda: f64,
) -> Result<()> {
    let c = base.labels().len();
    // One target code per class: 2·onehot − 1.
    let mut codes = Mat::from_fn(c, c, |k, j| if k == j { 1.0 } else { -1.0 });
    let mut next = out;
    for l in (0..layers.len()).rev() {
        let m = layers[l].outputs;
        let (w, bias) = (next.subrows(0, m), next.row(m));
        let centred = Mat::from_fn(c, codes.ncols(), |k, j| codes[(k, j)] - bias[j]);
        let p = &centred * regularised_pinv(w, lambda)?;
        let z = to_preactivation(&p, layers[l].activation);
        let input = if l == 0 { base } else { &stats[l - 1] };
        let rhs = input.class_sums() * &z;
        let solved = input.solve_for(lambda, rhs.as_ref())?;
        layers[l].weights = row_major(&solved);
        next = solved;
        codes = z;
    }
    Ok(())
}

/// Fits a recomputed head on `source`; `base` are the Gram statistics of its features (labels
/// in the source's order).
pub fn fit_recompute(
    source: &dyn FeatureBatches,
    base: &GramStats,
    lambda: f64,
    lambda_source: LambdaSource,
    batch: usize,
    options: &RecomputeOptions,
) -> Result<Head> {
    options.validate()?;
    let mut layers = initial_layers(
        source.dim(),
        &options.hidden,
        options.activation,
        options.seed,
    );
    for iteration in 0..=options.iterations {
        let stats = hidden_stats(source, &layers, batch)?;
        let last = stats.last().expect("at least one hidden layer");
        let out = last.solve(lambda)?;
        if iteration == options.iterations {
            return Ok(Head {
                dim: source.dim(),
                labels: source.labels().to_vec(),
                weights: row_major(&out),
                hidden: layers,
                lambda,
                lambda_source,
                fitted_samples: source.rows() as f64,
                method: MethodName::Recompute,
            });
        }
        pull_back(&mut layers, base, &stats, out, lambda)?;
    }
    unreachable!("the last iteration returns")
}
