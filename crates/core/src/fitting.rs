//! Fitting a head from streamed feature batches (a feature store, or rows in memory) by the
//! papers' methods, PAPER.md §1–§2:
//! - `gram`: the exact one-shot ridge solve from Gram statistics (the default);
//! - `block-rls`: the block recursive form, `K = (G + λI)⁻¹` kept in f64 and updated per batch,
//!   so an up-to-date head exists after every batch; after the last batch it equals `gram`;
//! - `step`: the step form `W ← W + η (XbᵀXb + λI)⁻¹ Xbᵀ (Tb − XbW)`, over several passes
//!   (approximate; for fidelity to the first paper version and comparison);
//! - `recompute`: a head with hidden dense layers refit by Yang's pull-back ([`crate::recompute`]).
//!
//! λ is the user's, or chosen by generalised cross-validation on the features' Gram statistics
//! (one extra pass); every method and every layer then uses that λ.

use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{BlockStructure, matmul as triangular_matmul};
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, MatRef, Par, Side};

use crate::error::{Error, Result};
use crate::head::{Activation, FitReport, Head, LambdaSource, MethodName};
use crate::recompute::{RecomputeOptions, fit_recompute};
use crate::solver::{
    CrossValidation, GramStats, batch_matrices, default_lambda_grid, lowest_scoring,
};
use crate::store::FeatureBatches;

/// Rows per batch when the user does not choose (the Gram accumulation uses the same).
pub const DEFAULT_BATCH: usize = 64;

/// A fitting method with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Gram,
    BlockRls,
    Step {
        /// Learning rate η (the demo's "MP learning rate", 0.5).
        eta: f64,
        /// Passes over the data.
        passes: usize,
    },
    Recompute(RecomputeOptions),
}

/// The settings of every method, as a front end collects them (the CLI's flags, Python's
/// keywords); only the named method's are read.
#[derive(Debug, Clone, Copy)]
pub struct MethodSettings<'a> {
    /// `step`: learning rate η and passes over the data.
    pub eta: f64,
    pub passes: usize,
    /// `recompute`: hidden widths ("1024" or "512,256"), activation, iterations and the
    /// seed of the initial weights.
    pub hidden: &'a str,
    pub activation: &'a str,
    pub iterations: usize,
    pub seed: u64,
}

impl Method {
    /// The method called `name` (gram, block-rls, step, recompute) with its settings.
    pub fn from_name(name: &str, settings: &MethodSettings<'_>) -> Result<Method> {
        Ok(match name {
            "gram" => Method::Gram,
            "block-rls" => Method::BlockRls,
            "step" => Method::Step {
                eta: settings.eta,
                passes: settings.passes,
            },
            "recompute" => Method::Recompute(RecomputeOptions {
                hidden: parse_widths(settings.hidden)?,
                activation: Activation::parse(settings.activation)?,
                iterations: settings.iterations,
                seed: settings.seed,
            }),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown method '{other}': use gram, block-rls, step or recompute"
                ))
                .for_setting("method"));
            }
        })
    }

    pub fn name(&self) -> MethodName {
        match self {
            Method::Gram => MethodName::Gram,
            Method::BlockRls => MethodName::BlockRls,
            Method::Step { .. } => MethodName::Step,
            Method::Recompute(_) => MethodName::Recompute,
        }
    }

    /// Checks the settings before any data is read.
    pub fn validate(&self) -> Result<()> {
        match self {
            Method::Step { eta, passes } => {
                // Each step moves W a share η of the way to the batch's own fit: a relaxed
                // projection, which converges for 0 < η < 2 and diverges beyond.
                if !(*eta > 0.0 && *eta < 2.0) || *passes == 0 {
                    return Err(Error::InvalidArgument(format!(
                        "step needs 0 < η < 2 (1 fits each batch exactly; larger diverges) and \
                         at least one pass (got η = {eta}, {passes} passes)"
                    )));
                }
            }
            Method::Recompute(o) => o.validate()?,
            Method::Gram | Method::BlockRls => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub method: Method,
    /// Fixed λ; chosen by GCV when absent.
    pub lambda: Option<f64>,
    /// Rows per batch.
    pub batch: usize,
    /// Choose λ by K-fold cross-validation with this many folds instead of GCV (GCV's choice
    /// is still reported).
    pub folds: Option<usize>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            method: Method::Gram,
            lambda: None,
            batch: DEFAULT_BATCH,
            folds: None,
        }
    }
}

/// Gram statistics of `source`, with its labels in its own order.
pub fn gram_stats(source: &dyn FeatureBatches, batch: usize) -> Result<GramStats> {
    let mut stats = GramStats::new(source.dim());
    for label in source.labels() {
        stats.label_index(label);
    }
    source.for_each_batch(batch, &mut |features, labels| {
        stats.accumulate(features, labels, "feature batch")
    })?;
    Ok(stats)
}

/// The fold (of `folds`) of the `row`-th record of a source: a splitmix64 hash of its position,
/// so folds are fixed by the data's order, balanced in expectation, and the same on every run.
pub fn fold_of(row: u64, folds: usize) -> usize {
    (crate::rng::SplitMix64(row).next_u64() % folds as u64) as usize
}

/// Chooses λ by exact K-fold cross-validation: one pass over `source` builds the Gram
/// statistics of each fold ([`fold_of`]); for each fold k and each λ of `grid`, the head solved
/// on the other folds' statistics is scored on fold k's samples by
/// [`GramStats::squared_error`], which needs no sample again. The same numbers as refitting
/// and predicting K times, at the cost of K statistics in memory and K·|grid| solves.
pub fn cross_validate(
    source: &dyn FeatureBatches,
    folds: usize,
    grid: &[f64],
    batch: usize,
) -> Result<CrossValidation> {
    if !(2..=20).contains(&folds) {
        return Err(Error::InvalidArgument(format!(
            "cross-validation needs 2 to 20 folds, got {folds}"
        )));
    }
    if grid.is_empty() || grid.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
        return Err(Error::InvalidArgument(
            "the λ grid must hold positive finite numbers".into(),
        ));
    }
    let dim = source.dim();
    let empty = || {
        let mut stats = GramStats::new(dim);
        for label in source.labels() {
            stats.label_index(label);
        }
        stats
    };
    let mut fold_stats: Vec<GramStats> = (0..folds).map(|_| empty()).collect();
    let mut row = 0u64;
    let (mut rows, mut ids): (Vec<Vec<f32>>, Vec<Vec<usize>>) =
        (vec![Vec::new(); folds], vec![Vec::new(); folds]);
    source.for_each_batch(batch.max(1), &mut |features, labels| {
        for (x, &label) in features.chunks_exact(dim).zip(labels) {
            let k = fold_of(row, folds);
            rows[k].extend_from_slice(x);
            ids[k].push(label);
            row += 1;
        }
        for k in 0..folds {
            fold_stats[k].accumulate(&rows[k], &ids[k], "feature batch")?;
            rows[k].clear();
            ids[k].clear();
        }
        Ok(())
    })?;
    let mut error = vec![0.0; grid.len()];
    for k in 0..folds {
        if fold_stats[k].samples() == 0.0 {
            continue;
        }
        let mut training = empty();
        for (j, other) in fold_stats.iter().enumerate() {
            if j != k {
                training.merge(other)?;
            }
        }
        let held_out = fold_stats[k].gram();
        for (e, &lambda) in error.iter_mut().zip(grid) {
            *e += match training.solve(lambda) {
                Ok(w) => fold_stats[k].squared_error(held_out.as_ref(), w.as_ref()),
                Err(Error::Solver(_)) => f64::INFINITY,
                Err(other) => return Err(other),
            };
        }
    }
    let scale = row as f64 * source.labels().len().max(1) as f64;
    error.iter_mut().for_each(|e| *e /= scale);
    if error.iter().all(|e| e.is_infinite()) {
        return Err(Error::Solver(
            "no λ of the grid gives a positive definite G + λI on every fold".into(),
        ));
    }
    let best = lowest_scoring(grid, &error);
    Ok(CrossValidation {
        folds,
        fold_samples: fold_stats.iter().map(GramStats::samples).collect(),
        grid: grid.to_vec(),
        error,
        best,
    })
}

/// Fits a head on `source` with `options.method`.
// Not inlined: the edge binary's command dispatcher would otherwise carry its own copy
// (measured +3.4 KB in the edge build when the crates were split).
#[inline(never)]
pub fn fit(source: &dyn FeatureBatches, options: &FitOptions) -> Result<(Head, FitReport)> {
    let started = Instant::now();
    options.method.validate()?;
    if source.rows() == 0 || source.labels().is_empty() {
        return Err(Error::InvalidArgument(
            "no samples to fit on (the feature store is empty)".into(),
        ));
    }
    if let Some(l) = options.lambda
        && !(l.is_finite() && l > 0.0)
    {
        return Err(Error::InvalidArgument(format!(
            "λ must be a finite number > 0, got {l}"
        )));
    }
    let batch = options.batch.max(1);
    // Gram statistics are needed by `gram`, by GCV and by `recompute` (its first layer).
    let needs_stats =
        options.lambda.is_none() || matches!(options.method, Method::Gram | Method::Recompute(_));
    let stats = if needs_stats {
        Some(gram_stats(source, batch)?)
    } else {
        None
    };
    let (lambda, lambda_source, gcv) = match (options.lambda, &stats) {
        (Some(l), _) => (l, LambdaSource::Fixed, None),
        (None, Some(stats)) => {
            let search = stats.gcv(&default_lambda_grid())?;
            (search.best, LambdaSource::Gcv, Some(search))
        }
        (None, None) => unreachable!("statistics are computed when λ is not given"),
    };
    let cross_validation = match (options.lambda, options.folds) {
        (None, Some(folds)) => Some(cross_validate(
            source,
            folds,
            &default_lambda_grid(),
            batch,
        )?),
        _ => None,
    };
    let (lambda, lambda_source) = match &cross_validation {
        Some(cv) => (cv.best, LambdaSource::CrossValidation),
        None => (lambda, lambda_source),
    };
    let labels = source.labels().to_vec();
    let samples = source.rows() as f64;
    let linear = |w: Mat<f64>, method| {
        let mut head =
            Head::from_solution(w.as_ref(), labels.clone(), lambda, lambda_source, samples);
        head.method = method;
        head
    };
    let head = match &options.method {
        Method::Gram => {
            let stats = stats.as_ref().expect("computed for gram");
            linear(stats.solve(lambda)?, MethodName::Gram)
        }
        Method::BlockRls => {
            let mut rls = BlockRls::new(source.dim(), labels.len(), lambda)?;
            source.for_each_batch(batch, &mut |features, ids| rls.update(features, ids))?;
            linear(rls.into_weights(), MethodName::BlockRls)
        }
        Method::Step { eta, passes } => {
            let mut step = StepFit::new(source.dim(), labels.len(), lambda, *eta);
            for _ in 0..*passes {
                source.for_each_batch(batch, &mut |features, ids| step.update(features, ids))?;
            }
            linear(step.into_weights(), MethodName::Step)
        }
        Method::Recompute(o) => {
            let stats = stats.as_ref().expect("computed for recompute");
            fit_recompute(source, stats, lambda, lambda_source, batch, o)?
        }
    };
    let report = FitReport {
        method: options.method.name(),
        lambda,
        lambda_source,
        gcv,
        cross_validation,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((head, report))
}

/// Block recursive least squares (PAPER.md §1): `K = (G + λI)⁻¹` and `W = K B` kept up to
/// date batch by batch. Starting from `K = I/λ`, `W = 0` is the same as the paper's start from
/// the first batch; after the last batch `W` equals the one-shot ridge solution.
#[derive(Debug, Clone)]
pub struct BlockRls {
    dim: usize,
    classes: usize,
    k: Mat<f64>,
    w: Mat<f64>,
}

impl BlockRls {
    pub fn new(dim: usize, classes: usize, lambda: f64) -> Result<Self> {
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "block-rls needs λ > 0 (K starts as I/λ), got {lambda}"
            )));
        }
        let p = dim + 1;
        Ok(BlockRls {
            dim,
            classes,
            k: Mat::from_fn(p, p, |i, j| if i == j { 1.0 / lambda } else { 0.0 }),
            w: Mat::zeros(p, classes),
        })
    }

    /// Folds one batch in:
    /// `U = K Xᵀ`, `S = I + X U = L Lᵀ`, `K ← K − U S⁻¹ Uᵀ`, `W ← W + U S⁻¹ (T − X W)`
    /// (`U S⁻¹` is the updated `K Xᵀ`). A NaN/Inf batch is rejected and changes nothing.
    pub fn update<F: Copy + Into<f64>>(&mut self, features: &[F], labels: &[usize]) -> Result<()> {
        let (x, t) = batch_matrices(features, labels, self.dim, self.classes)?;
        let b = x.nrows();
        if b == 0 {
            return Ok(());
        }
        let par = Par::rayon(0);
        let u = &self.k * x.transpose(); // p × b
        let mut s = &x * &u; // b × b
        for i in 0..b {
            s[(i, i)] += 1.0;
        }
        let llt = s
            .llt(Side::Lower)
            .map_err(|_| Error::Solver("block-rls: I + X K Xᵀ is not positive definite".into()))?;
        // Y = L⁻¹ Uᵀ (b × p), so U S⁻¹ Uᵀ = Yᵀ Y; Z = L⁻¹ (T − X W), so U S⁻¹ (T − X W) = Yᵀ Z.
        let mut y = u.transpose().to_owned();
        solve_lower_triangular_in_place(llt.L(), y.as_mut(), par);
        let mut z = &t - &x * &self.w;
        solve_lower_triangular_in_place(llt.L(), z.as_mut(), par);
        triangular_matmul(
            self.k.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            y.transpose(),
            BlockStructure::Rectangular,
            y.as_ref(),
            BlockStructure::Rectangular,
            -1.0,
            par,
        );
        let p = self.k.nrows();
        for j in 0..p {
            for i in j + 1..p {
                self.k[(j, i)] = self.k[(i, j)];
            }
        }
        matmul(
            self.w.as_mut(),
            Accum::Add,
            y.transpose(),
            z.as_ref(),
            1.0,
            par,
        );
        Ok(())
    }

    /// The current head weights, (d+1) × c.
    pub fn weights(&self) -> MatRef<'_, f64> {
        self.w.as_ref()
    }

    pub fn into_weights(self) -> Mat<f64> {
        self.w
    }
}

/// The step form (PAPER.md §1): per batch `W ← W + η (XbᵀXb + λI)⁻¹ Xbᵀ (Tb − XbW)`, computed
/// as `η Xbᵀ (XbXbᵀ + λI)⁻¹ (Tb − XbW)` (the same matrix, a b × b solve instead of d × d).
#[derive(Debug, Clone)]
pub struct StepFit {
    dim: usize,
    classes: usize,
    lambda: f64,
    eta: f64,
    w: Mat<f64>,
}

impl StepFit {
    /// Starts from `W = 0`.
    pub fn new(dim: usize, classes: usize, lambda: f64, eta: f64) -> Self {
        StepFit {
            dim,
            classes,
            lambda,
            eta,
            w: Mat::zeros(dim + 1, classes),
        }
    }

    pub fn update<F: Copy + Into<f64>>(&mut self, features: &[F], labels: &[usize]) -> Result<()> {
        let (x, t) = batch_matrices(features, labels, self.dim, self.classes)?;
        let b = x.nrows();
        if b == 0 {
            return Ok(());
        }
        let mut a = &x * x.transpose();
        for i in 0..b {
            a[(i, i)] += self.lambda;
        }
        let llt = a.llt(Side::Lower).map_err(|_| {
            Error::Solver(format!(
                "step: XXᵀ + λI is not positive definite at λ = {}; use a larger λ",
                self.lambda
            ))
        })?;
        let mut e = &t - &x * &self.w;
        faer::linalg::solvers::Solve::solve_in_place(&llt, e.as_mut());
        matmul(
            self.w.as_mut(),
            Accum::Add,
            x.transpose(),
            e.as_ref(),
            self.eta,
            Par::rayon(0),
        );
        Ok(())
    }

    pub fn weights(&self) -> MatRef<'_, f64> {
        self.w.as_ref()
    }

    pub fn into_weights(self) -> Mat<f64> {
        self.w
    }
}

/// Parses `--hidden 512,256` into layer widths.
pub fn parse_widths(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|w| {
            w.trim()
                .parse::<usize>()
                .ok()
                .filter(|&w| (1..=1 << 16).contains(&w))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "hidden width '{w}' is not a number from 1 to 65536"
                    ))
                })
        })
        .collect()
}

/// The activation names `fit --activation` accepts, for messages.
pub fn activation_help() -> String {
    [
        Activation::Bsig,
        Activation::Sin,
        Activation::Identity,
        Activation::Relu,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect::<Vec<_>>()
    .join(", ")
}
