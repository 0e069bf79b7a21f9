//! The exact streaming head solver (PAPER.md §1): Gram statistics and the ridge / Moore–Penrose
//! solve, with λ chosen by generalised cross-validation.
//!
//! With `x = [h; 1]` and one-hot targets `t ∈ {−1, +1}^c`, the statistics are
//! `G = Σ x xᵀ`, `B = Σ x tᵀ`, the sample count `n` and `Σ‖t‖²`. They are sums over samples,
//! so streaming in any number of batches, merging two devices' statistics, and adding a new
//! label (its column starts as `−Σx`, the bias column of G) are all exact. Memory is
//! O(d² + d·c) whatever the number of samples. Everything is f64; the hot update is a
//! rank-k update of the lower triangle (faer), which is the only part held in memory
//! ([`LowerPanels`]).

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::{factor as llt_factor, solve as llt_solve};
use faer::linalg::evd::tridiag;
use faer::linalg::matmul::matmul;
use faer::linalg::qr::no_pivoting::factor::recommended_block_size;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The λ of `grid` whose score is lowest (the first of equals); `grid` is not empty.
pub fn lowest_scoring(grid: &[f64], scores: &[f64]) -> f64 {
    grid[scores
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("grid is not empty")]
}

/// The default λ grid for GCV: 10⁻³ … 10⁴ in half-decade steps.
pub fn default_lambda_grid() -> Vec<f64> {
    (-6..=8).map(|e| 10f64.powf(e as f64 / 2.0)).collect()
}

/// Sufficient statistics of a labelled feature stream.
#[derive(Debug, Clone, PartialEq)]
pub struct GramStats {
    /// Feature dimension d (the bias input makes it d + 1 inside).
    dim: usize,
    /// Labels in column order.
    labels: Vec<String>,
    /// The lower triangle of the (d+1)² matrix G.
    gram: LowerPanels,
    /// (d+1) × c, column major.
    cross: Vec<f64>,
    samples: f64,
    target_sq: f64,
    class_counts: Vec<f64>,
}

/// The statistics in their stored form: the lower triangle only, packed by columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GramRecord {
    pub dim: usize,
    pub labels: Vec<String>,
    pub gram_lower: Vec<f64>,
    pub cross: Vec<f64>,
    pub samples: f64,
    pub target_sq: f64,
    pub class_counts: Vec<f64>,
}

/// Result of a λ search.
#[derive(Debug, Clone, Serialize)]
pub struct LambdaSearch {
    pub grid: Vec<f64>,
    pub gcv: Vec<f64>,
    pub best: f64,
}

/// Result of a K-fold cross-validation search ([`crate::fitting::cross_validate`]).
#[derive(Debug, Clone, Serialize)]
pub struct CrossValidation {
    pub folds: usize,
    /// Samples in each fold.
    pub fold_samples: Vec<f64>,
    pub grid: Vec<f64>,
    /// Mean squared error of the held-out targets per λ (over all samples and classes);
    /// +∞ where a fold's `G + λI` is not positive definite.
    pub error: Vec<f64>,
    pub best: f64,
}

impl GramStats {
    pub fn new(dim: usize) -> Self {
        let p = dim + 1;
        GramStats {
            dim,
            labels: Vec::new(),
            gram: LowerPanels::zeros(p),
            cross: Vec::new(),
            samples: 0.0,
            target_sq: 0.0,
            class_counts: Vec::new(),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn samples(&self) -> f64 {
        self.samples
    }

    pub fn class_counts(&self) -> &[f64] {
        &self.class_counts
    }

    /// `Σ‖t‖²` over the samples (targets ±1).
    pub fn target_sq(&self) -> f64 {
        self.target_sq
    }

    fn p(&self) -> usize {
        self.dim + 1
    }

    /// Σx over all samples so far: the bias row of the lower triangle.
    fn sum_x(&self) -> Vec<f64> {
        let p = self.p();
        (0..p).map(|i| self.gram.get(p - 1, i)).collect()
    }

    /// The column of `label`, adding it if new. Samples seen before get −1 for it.
    pub fn label_index(&mut self, label: &str) -> usize {
        if let Some(i) = self.labels.iter().position(|l| l == label) {
            return i;
        }
        let minus_sum: Vec<f64> = self.sum_x().iter().map(|v| -v).collect();
        self.cross.extend(minus_sum);
        self.labels.push(label.to_string());
        self.class_counts.push(0.0);
        self.target_sq += self.samples;
        self.labels.len() - 1
    }

    /// Folds a batch in: `features` is `labels.len()` rows of `dim` values (row major);
    /// `labels` are column indices from [`Self::label_index`]. A batch with NaN/Inf or of the
    /// wrong shape is rejected whole and the statistics stay unchanged.
    pub fn accumulate<F: Copy + Into<f64>>(
        &mut self,
        features: &[F],
        labels: &[usize],
        what: &str,
    ) -> Result<()> {
        self.fold(features, labels, what, 1.0)
    }

    /// Removes a batch that was folded in before (exact unlearning): subtracts its `x xᵀ` and
    /// `x tᵀ`. Refused whole, changing nothing, if the batch holds more samples of a label
    /// than the statistics do.
    pub fn forget<F: Copy + Into<f64>>(
        &mut self,
        features: &[F],
        labels: &[usize],
        what: &str,
    ) -> Result<()> {
        let mut counts = vec![0.0; self.labels.len()];
        for &l in labels {
            if let Some(n) = counts.get_mut(l) {
                *n += 1.0;
            }
        }
        for (k, n) in counts.iter().enumerate() {
            if *n > self.class_counts[k] + 0.5 {
                return Err(Error::InvalidArgument(format!(
                    "{what}: cannot forget {n} samples of '{}': the statistics hold only {}",
                    self.labels[k], self.class_counts[k]
                )));
            }
        }
        self.fold(features, labels, what, -1.0)?;
        // A label with no samples left is dropped, as if it had never been seen: each
        // remaining sample had −1 for it, which leaves Σ‖t‖² with it.
        while let Some(k) = self.class_counts.iter().position(|&n| n < 0.5) {
            let p = self.p();
            self.cross.drain(k * p..(k + 1) * p);
            self.class_counts.remove(k);
            self.labels.remove(k);
            self.target_sq -= self.samples;
        }
        Ok(())
    }

    /// Discounts everything learned so far by the forgetting factor μ (0 < μ ≤ 1), so that
    /// newer samples weigh more: `G ← μG`, `B ← μB` (PAPER.md §1, drift).
    pub fn decay(&mut self, mu: f64) -> Result<()> {
        if !(mu > 0.0 && mu <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "the forgetting factor μ must be in (0, 1], got {mu}"
            )));
        }
        if mu == 1.0 {
            return Ok(());
        }
        self.gram.values.iter_mut().for_each(|v| *v *= mu);
        self.cross.iter_mut().for_each(|v| *v *= mu);
        self.class_counts.iter_mut().for_each(|v| *v *= mu);
        self.samples *= mu;
        self.target_sq *= mu;
        Ok(())
    }

    /// Adds (`sign` 1) or subtracts (`sign` −1) a batch's contribution.
    fn fold<F: Copy + Into<f64>>(
        &mut self,
        features: &[F],
        labels: &[usize],
        what: &str,
        sign: f64,
    ) -> Result<()> {
        let (d, p, c, b) = (self.dim, self.p(), self.labels.len(), labels.len());
        if features.len() != b * d {
            return Err(Error::FeatureDim {
                what: what.into(),
                expected: d,
                got: features.len() / b.max(1),
            });
        }
        if !features.iter().all(|&v| v.into().is_finite()) {
            return Err(Error::NonFiniteFeatures { what: what.into() });
        }
        if let Some(bad) = labels.iter().find(|&&l| l >= c) {
            return Err(Error::InvalidArgument(format!(
                "{what}: label column {bad} does not exist ({c} labels)"
            )));
        }
        if b == 0 {
            return Ok(());
        }
        // X (b × p) and T (b × c), column major.
        let mut x = vec![1.0f64; b * p];
        for r in 0..b {
            for j in 0..d {
                x[j * b + r] = features[r * d + j].into();
            }
        }
        let mut t = vec![-1.0f64; b * c];
        for (r, &l) in labels.iter().enumerate() {
            t[l * b + r] = 1.0;
            self.class_counts[l] += sign;
        }
        let x = MatRef::from_column_major_slice(&x, b, p);
        let t = MatRef::from_column_major_slice(&t, b, c);
        let par = Par::rayon(0);
        self.gram.add_gram_of(x, sign, par);
        matmul(
            MatMut::from_column_major_slice_mut(&mut self.cross, p, c),
            Accum::Add,
            x.transpose(),
            t,
            sign,
            par,
        );
        self.samples += sign * b as f64;
        self.target_sq += sign * (b * c) as f64;
        Ok(())
    }

    /// Adds another device's statistics (same backbone). Labels are matched by name; a label
    /// only one side knows counts as −1 for the other side's samples, exactly as if all
    /// samples had streamed through one device.
    pub fn merge(&mut self, other: &GramStats) -> Result<()> {
        if other.dim != self.dim {
            return Err(Error::InvalidArgument(format!(
                "cannot merge statistics of dimension {} into {}",
                other.dim, self.dim
            )));
        }
        for label in &other.labels {
            self.label_index(label);
        }
        let p = self.p();
        let other_sum = other.sum_x();
        for (j, label) in self.labels.iter().enumerate() {
            let col = &mut self.cross[j * p..(j + 1) * p];
            match other.labels.iter().position(|l| l == label) {
                Some(k) => {
                    col.iter_mut()
                        .zip(&other.cross[k * p..(k + 1) * p])
                        .for_each(|(a, b)| *a += b);
                    self.class_counts[j] += other.class_counts[k];
                }
                None => {
                    col.iter_mut().zip(&other_sum).for_each(|(a, b)| *a -= b);
                    self.target_sq += other.samples;
                }
            }
        }
        // Same dimension, same layout: every stored value (the diagonal blocks' upper parts
        // included, which hold the symmetric sums) adds up elementwise, in a fixed order.
        self.gram
            .values
            .iter_mut()
            .zip(&other.gram.values)
            .for_each(|(a, b)| *a += b);
        self.samples += other.samples;
        self.target_sq += other.target_sq;
        Ok(())
    }

    /// G as a full symmetric matrix (lower triangle mirrored).
    pub fn gram(&self) -> Mat<f64> {
        let p = self.p();
        Mat::from_fn(p, p, |i, j| {
            let (r, c) = if i >= j { (i, j) } else { (j, i) };
            self.gram.get(r, c)
        })
    }

    pub fn cross(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.cross, self.p(), self.labels.len())
    }

    fn check_solvable(&self) -> Result<()> {
        if self.samples <= 0.0 {
            return Err(Error::Solver(
                "no samples learned yet: nothing to fit".into(),
            ));
        }
        if self.labels.is_empty() {
            return Err(Error::Solver(
                "no labels learned yet: nothing to fit".into(),
            ));
        }
        Ok(())
    }

    /// Squared error of `w` ((d+1) × c) on the samples of these statistics:
    /// `Σ‖t − [x,1]W‖² = Σ‖t‖² − 2 tr(WᵀB) + tr(WᵀGW)`, exactly, from the statistics alone.
    /// `g` is [`Self::gram`], made once by a caller that scores many W.
    pub fn squared_error(&self, g: MatRef<'_, f64>, w: MatRef<'_, f64>) -> f64 {
        let mut gw = Mat::<f64>::zeros(self.p(), w.ncols());
        faer::linalg::matmul::matmul(gw.as_mut(), faer::Accum::Replace, g, w, 1.0, Par::rayon(0));
        let cross = self.cross();
        let (mut wgw, mut wb) = (0.0, 0.0);
        for j in 0..w.ncols() {
            for i in 0..self.p() {
                wgw += w[(i, j)] * gw[(i, j)];
                wb += w[(i, j)] * cross[(i, j)];
            }
        }
        (self.target_sq - 2.0 * wb + wgw).max(0.0)
    }

    /// `W = (G + λI)⁻¹ B` by Cholesky; (d+1) × c.
    pub fn solve(&self, lambda: f64) -> Result<Mat<f64>> {
        self.solve_for(lambda, self.cross())
    }

    /// Per-class sums `Σ_{samples of class k} x`, (d+1) × c: from `B = 2S − Σx 1ᵀ`.
    pub fn class_sums(&self) -> Mat<f64> {
        let sum = self.sum_x();
        let cross = self.cross();
        Mat::from_fn(self.p(), self.labels.len(), |i, k| {
            (cross[(i, k)] + sum[i]) / 2.0
        })
    }

    /// `(G + λI)⁻¹ R` by Cholesky for any right-hand side R with d+1 rows.
    pub fn solve_for(&self, lambda: f64, rhs: MatRef<'_, f64>) -> Result<Mat<f64>> {
        self.check_solvable()?;
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "λ must be a finite number ≥ 0, got {lambda}"
            )));
        }
        let mut factor = Mat::zeros(self.p(), self.p());
        if !self.cholesky_shifted(lambda, &mut factor) {
            return Err(Error::Solver(format!(
                "G + λI is not positive definite at λ = {lambda}; use a larger --lambda"
            )));
        }
        Ok(solve_with_factor(&factor, rhs))
    }

    /// Writes the Cholesky factor L of `G + λI` into the lower triangle of `factor` (the upper
    /// triangle is left as it was and never read); false when `G + λI` is not positive
    /// definite. One (d+1)² buffer, filled straight from the stored lower triangle: no
    /// mirrored copy of G and no second matrix for the factor (the refit's peak memory).
    fn cholesky_shifted(&self, lambda: f64, factor: &mut Mat<f64>) -> bool {
        let p = self.p();
        self.gram.copy_lower_into(factor.as_mut());
        for j in 0..p {
            factor[(j, j)] += lambda;
        }
        let par = Par::rayon(0);
        let mut scratch = MemBuffer::new(llt_factor::cholesky_in_place_scratch::<f64>(
            p,
            par,
            Default::default(),
        ));
        llt_factor::cholesky_in_place(
            factor.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut scratch),
            Default::default(),
        )
        .is_ok()
    }

    /// Generalised cross-validation score for each λ:
    /// `GCV(λ) = (RSS/(n·c)) / (1 − df/n)²` with `df = Σ Λᵢ/(Λᵢ+λ)` (eigenvalues Λ of G) and
    /// `RSS = Σ‖t‖² − tr(WᵀB) − λ‖W‖²` for `W = (G + λI)⁻¹B` (since `GW = B − λW`).
    ///
    /// Memory is what decides the method: the eigenvalues alone need no eigenvector matrix,
    /// and each λ's W comes from a Cholesky factor in one reused buffer, so the search holds
    /// one (d+1)² matrix beside G where a full eigendecomposition held three or more (learn's
    /// peak on a board, docs/FOOTPRINT.md); the eigenvalues are taken from that same buffer
    /// before the first factorisation. A λ at which `G + λI` is numerically not positive
    /// definite scores +∞.
    pub fn gcv(&self, grid: &[f64]) -> Result<LambdaSearch> {
        self.check_solvable()?;
        if grid.is_empty() || grid.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
            return Err(Error::InvalidArgument(
                "the λ grid must hold positive finite numbers".into(),
            ));
        }
        let p = self.p();
        let mut factor = Mat::zeros(p, p);
        let eig: Vec<f64> = self
            .eigenvalues_in(&mut factor)?
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let (n, c) = (self.samples, self.labels.len() as f64);
        let cross = self.cross();
        let gcv: Vec<f64> = grid
            .iter()
            .map(|&lambda| {
                if !self.cholesky_shifted(lambda, &mut factor) {
                    return f64::INFINITY;
                }
                let w = solve_with_factor(&factor, cross);
                let (mut wb, mut ww) = (0.0, 0.0);
                for j in 0..w.ncols() {
                    for i in 0..p {
                        wb += w[(i, j)] * cross[(i, j)];
                        ww += w[(i, j)] * w[(i, j)];
                    }
                }
                let df: f64 = eig.iter().map(|e| e / (e + lambda)).sum();
                let rss = (self.target_sq - wb - lambda * ww).max(0.0);
                let denom = 1.0 - df / n;
                if denom <= 0.0 {
                    f64::INFINITY
                } else {
                    (rss / (n * c)) / (denom * denom)
                }
            })
            .collect();
        if gcv.iter().all(|score| score.is_infinite()) {
            return Err(Error::Solver(format!(
                "G + λI is not positive definite at any λ of the grid (up to {:e}): statistics \
                 with noise added (differential privacy) need a grid reaching above the noise",
                grid.iter().copied().fold(0.0, f64::max)
            )));
        }
        let best = lowest_scoring(grid, &gcv);
        Ok(LambdaSearch {
            grid: grid.to_vec(),
            gcv,
            best,
        })
    }

    /// The eigenvalues of G, worked out in `buffer` ((d+1)², overwritten): G's lower triangle
    /// is reduced to tridiagonal form in place (faer), and the tridiagonal matrix's eigenvalues
    /// found by the implicit QL algorithm in O(d) more memory. faer's eigenvalue routine
    /// copies the matrix first: one more (d+1)² matrix at the refit's peak (docs/FOOTPRINT.md).
    fn eigenvalues_in(&self, buffer: &mut Mat<f64>) -> Result<Vec<f64>> {
        let p = self.p();
        self.gram.copy_lower_into(buffer.as_mut());
        let par = Par::rayon(0);
        let block = recommended_block_size::<f64>(p, p);
        let mut householder = Mat::<f64>::zeros(block, p - 1);
        let mut scratch = MemBuffer::new(tridiag::tridiag_in_place_scratch::<f64>(
            p,
            par,
            Default::default(),
        ));
        tridiag::tridiag_in_place(
            buffer.as_mut(),
            householder.as_mut(),
            par,
            MemStack::new(&mut scratch),
            Default::default(),
        );
        let mut diagonal: Vec<f64> = (0..p).map(|i| buffer[(i, i)]).collect();
        let mut off_diagonal: Vec<f64> = (0..p)
            .map(|i| if i + 1 < p { buffer[(i + 1, i)] } else { 0.0 })
            .collect();
        tridiagonal_eigenvalues(&mut diagonal, &mut off_diagonal)?;
        Ok(diagonal)
    }

    pub fn to_record(&self) -> GramRecord {
        let p = self.p();
        let mut gram_lower = Vec::with_capacity(p * (p + 1) / 2);
        for j in 0..p {
            gram_lower.extend_from_slice(self.gram.column_from_diagonal(j));
        }
        GramRecord {
            dim: self.dim,
            labels: self.labels.clone(),
            gram_lower,
            cross: self.cross.clone(),
            samples: self.samples,
            target_sq: self.target_sq,
            class_counts: self.class_counts.clone(),
        }
    }

    /// Rebuilds statistics from their stored form, checking every size.
    pub fn from_record(r: GramRecord) -> std::result::Result<Self, String> {
        let p = r.dim.checked_add(1).ok_or("dimension overflows")?;
        let c = r.labels.len();
        if r.dim == 0 || r.dim > 1 << 16 {
            return Err(format!("implausible feature dimension {}", r.dim));
        }
        if r.gram_lower.len() != p * (p + 1) / 2
            || r.cross.len() != p * c
            || r.class_counts.len() != c
        {
            return Err("statistics sizes do not match the dimension and labels".into());
        }
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !finite(&r.gram_lower)
            || !finite(&r.cross)
            || !r.samples.is_finite()
            || !r.target_sq.is_finite()
        {
            return Err("statistics hold NaN or infinite values".into());
        }
        let mut unique = r.labels.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != c {
            return Err("duplicate labels".into());
        }
        let mut gram = LowerPanels::zeros(p);
        let mut k = 0;
        for j in 0..p {
            let len = p - j;
            gram.column_from_diagonal_mut(j)
                .copy_from_slice(&r.gram_lower[k..k + len]);
            k += len;
        }
        Ok(GramStats {
            dim: r.dim,
            labels: r.labels,
            gram,
            cross: r.cross,
            samples: r.samples,
            target_sq: r.target_sq,
            class_counts: r.class_counts,
        })
    }
}

/// The lower triangle of a symmetric p × p matrix in column panels of [`PANEL`] columns: panel
/// k holds columns `j0 = k·PANEL .. j0 + w` from row `j0` down, as a dense (p − j0) × w column-
/// major block. It holds about half of a full matrix (13 MB → 6.6 MB for 1,280 features, the
/// largest thing `learn` keeps besides the model), yet each panel is a plain matrix, so a
/// batch's `XᵀX` is one dense product per panel. The w × w diagonal blocks are stored whole;
/// the values above their diagonal are scratch, never read.
#[derive(Debug, Clone)]
struct LowerPanels {
    p: usize,
    /// Offset of each panel in `values`, and the total length at the end.
    starts: Vec<usize>,
    values: Vec<f64>,
}

/// Columns per panel: the storage beyond the triangle is p·PANEL/2 values (0.3 MB at 1,281).
const PANEL: usize = 64;

impl LowerPanels {
    fn zeros(p: usize) -> Self {
        let mut starts = Vec::with_capacity(p.div_ceil(PANEL) + 1);
        let mut len = 0;
        for j0 in (0..p).step_by(PANEL) {
            starts.push(len);
            len += (p - j0) * PANEL.min(p - j0);
        }
        starts.push(len);
        LowerPanels {
            p,
            starts,
            values: vec![0.0; len],
        }
    }

    /// Index of (r, c) for r ≥ c, or any (r, c) inside a diagonal block.
    fn index(&self, r: usize, c: usize) -> usize {
        let j0 = c / PANEL * PANEL;
        self.starts[c / PANEL] + (c - j0) * (self.p - j0) + (r - j0)
    }

    fn get(&self, r: usize, c: usize) -> f64 {
        self.values[self.index(r, c)]
    }

    /// Column j from the diagonal down (p − j values), contiguous in its panel.
    fn column_from_diagonal(&self, j: usize) -> &[f64] {
        let i = self.index(j, j);
        &self.values[i..i + self.p - j]
    }

    fn column_from_diagonal_mut(&mut self, j: usize) -> &mut [f64] {
        let i = self.index(j, j);
        let len = self.p - j;
        &mut self.values[i..i + len]
    }

    /// The panels as matrices: (first column, the (p − j0) × w block).
    fn panels_mut(&mut self) -> impl Iterator<Item = (usize, MatMut<'_, f64>)> {
        let p = self.p;
        let mut rest = self.values.as_mut_slice();
        (0..p).step_by(PANEL).map(move |j0| {
            let (w, rows) = (PANEL.min(p - j0), p - j0);
            let (panel, tail) = std::mem::take(&mut rest).split_at_mut(rows * w);
            rest = tail;
            (j0, MatMut::from_column_major_slice_mut(panel, rows, w))
        })
    }

    /// `G ← G + sign · XᵀX` for a batch X (b × p): one product per panel.
    fn add_gram_of(&mut self, x: MatRef<'_, f64>, sign: f64, par: Par) {
        let p = self.p;
        for (j0, panel) in self.panels_mut() {
            let w = panel.ncols();
            matmul(
                panel,
                Accum::Add,
                x.subcols(j0, p - j0).transpose(),
                x.subcols(j0, w),
                sign,
                par,
            );
        }
    }

    /// Writes the lower triangle into `out` (p × p); its upper triangle is left as it was.
    fn copy_lower_into(&self, mut out: MatMut<'_, f64>) {
        for j in 0..self.p {
            for (i, v) in self.column_from_diagonal(j).iter().enumerate() {
                out[(j + i, j)] = *v;
            }
        }
    }
}

/// Replaces `d` (the diagonal of a symmetric tridiagonal matrix, whose off-diagonal `e[i]`
/// couples rows i and i + 1; `e` is overwritten) with its eigenvalues, unordered: the implicit
/// QL algorithm with Wilkinson shifts (Numerical Recipes' `tqli`, without eigenvectors).
fn tridiagonal_eigenvalues(d: &mut [f64], e: &mut [f64]) -> Result<()> {
    let n = d.len();
    // An off-diagonal element below ε‖T‖ is dropped, even where the diagonal beside it is tiny
    // too (the null space of a G learned from fewer samples than features, where a test
    // relative to the neighbours never passes): that perturbs the eigenvalues by at most ε‖T‖,
    // the accuracy of any backward-stable method, and far below the smallest λ of the grid.
    let norm = (0..n).map(|i| d[i].abs() + e[i].abs()).fold(0.0, f64::max);
    for l in 0..n {
        let mut iterations = 0;
        loop {
            // The first negligible off-diagonal element at or after l splits the matrix.
            let mut m = l;
            while m + 1 < n {
                if e[m].abs() <= f64::EPSILON * norm {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > 60 {
                return Err(Error::Solver(
                    "eigenvalues of G did not converge (60 QL iterations)".into(),
                ));
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut deflated = false;
            for i in (l..m).rev() {
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    // Underflow: the matrix splits at i + 1; start over from l.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(())
}

impl PartialEq for LowerPanels {
    fn eq(&self, other: &Self) -> bool {
        self.p == other.p
            && (0..self.p).all(|j| self.column_from_diagonal(j) == other.column_from_diagonal(j))
    }
}

/// `(L Lᵀ)⁻¹ R` for the Cholesky factor L in the lower triangle of `factor`.
fn solve_with_factor(factor: &Mat<f64>, rhs: MatRef<'_, f64>) -> Mat<f64> {
    let mut w = rhs.to_owned();
    llt_solve::solve_in_place(
        factor.as_ref(),
        w.as_mut(),
        Par::rayon(0),
        MemStack::new(&mut MemBuffer::new(faer::dyn_stack::StackReq::EMPTY)),
    );
    w
}

/// A batch as `X = [H, 1]` (b × (d+1)) and ±1 targets `T` (b × c). Rejects NaN/Inf.
pub fn batch_matrices<F: Copy + Into<f64>>(
    features: &[F],
    labels: &[usize],
    dim: usize,
    classes: usize,
) -> Result<(Mat<f64>, Mat<f64>)> {
    let b = labels.len();
    if features.len() != b * dim {
        return Err(Error::FeatureDim {
            what: "feature batch".into(),
            expected: dim,
            got: features.len() / b.max(1),
        });
    }
    if !features.iter().all(|&v| v.into().is_finite()) {
        return Err(Error::NonFiniteFeatures {
            what: "feature batch".into(),
        });
    }
    if labels.iter().any(|&l| l >= classes) {
        return Err(Error::InvalidArgument(
            "feature batch: label index out of range".into(),
        ));
    }
    let x = Mat::from_fn(b, dim + 1, |r, j| {
        if j == dim {
            1.0
        } else {
            features[r * dim + j].into()
        }
    });
    let t = Mat::from_fn(b, classes, |r, k| if labels[r] == k { 1.0 } else { -1.0 });
    Ok((x, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<f32>, Vec<&'static str>) {
        let feats: Vec<f32> = (0..40)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let labels = vec!["a", "b", "c", "a", "b", "c", "a", "b", "a", "c"];
        (feats, labels)
    }

    fn learn(stats: &mut GramStats, feats: &[f32], labels: &[&str]) {
        let idx: Vec<usize> = labels.iter().map(|l| stats.label_index(l)).collect();
        stats.accumulate(feats, &idx, "test").unwrap();
    }

    #[test]
    fn new_label_later_equals_knowing_it_from_the_start() {
        let (f, l) = toy();
        let mut all = GramStats::new(4);
        learn(&mut all, &f, &l);
        let mut parts = GramStats::new(4);
        learn(&mut parts, &f[..8], &l[..2]); // only a, b
        learn(&mut parts, &f[8..], &l[2..]);
        assert_eq!(parts.labels(), all.labels());
        for (a, b) in parts.to_record().cross.iter().zip(&all.to_record().cross) {
            assert!((a - b).abs() < 1e-12);
        }
        assert_eq!(parts.to_record().target_sq, all.to_record().target_sq);
    }

    #[test]
    fn nan_batch_is_rejected_and_changes_nothing() {
        let (mut f, l) = toy();
        let mut s = GramStats::new(4);
        learn(&mut s, &f[..8], &l[..2]);
        let before = s.clone();
        f[9] = f32::NAN;
        let idx = vec![0, 1];
        assert!(matches!(
            s.accumulate(&f[8..16], &idx, "x"),
            Err(Error::NonFiniteFeatures { .. })
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn record_round_trip() {
        let (f, l) = toy();
        let mut s = GramStats::new(4);
        learn(&mut s, &f, &l);
        assert_eq!(GramStats::from_record(s.to_record()).unwrap(), s);
    }

    /// The panel layout against a plain sum of outer products, for dimensions below, at and
    /// across panel boundaries, and through the stored record.
    #[test]
    fn panels_hold_the_lower_triangle_of_the_gram_matrix() {
        for dim in [1, 62, 63, 64, 130] {
            let rows = 5;
            let feats: Vec<f32> = (0..rows * dim)
                .map(|i| ((i * 7919 % 97) as f32 - 48.0) / 17.0)
                .collect();
            let mut s = GramStats::new(dim);
            let idx = vec![s.label_index("a"); rows];
            s.accumulate(&feats, &idx, "test").unwrap();
            s.accumulate(&feats[dim..], &idx[1..], "test").unwrap();
            let p = dim + 1;
            let x = |r: usize, j: usize| {
                if j == dim {
                    1.0
                } else {
                    feats[r * dim + j] as f64
                }
            };
            let g = s.gram();
            for i in 0..p {
                for j in 0..p {
                    let expected: f64 = (0..rows).map(|r| x(r, i) * x(r, j)).sum::<f64>()
                        + (1..rows).map(|r| x(r, i) * x(r, j)).sum::<f64>();
                    assert!((g[(i, j)] - expected).abs() < 1e-9, "dim {dim} ({i}, {j})");
                }
            }
            let loaded = GramStats::from_record(s.to_record()).unwrap();
            assert_eq!(loaded, s);
            assert_eq!(loaded.gram(), g);
        }
    }

    /// The in-place eigenvalues against faer's own routine, on a Gram matrix with a spread
    /// of eigenvalues (and exact zeros: fewer samples than dimensions).
    #[test]
    fn in_place_eigenvalues_equal_faers() {
        for (dim, rows) in [(1, 3), (5, 40), (70, 30), (130, 300), (400, 5)] {
            let feats: Vec<f32> = (0..rows * dim)
                .map(|i| (((i * 7919) % 211) as f32 - 105.0) / (1.0 + (i % dim) as f32))
                .collect();
            let mut s = GramStats::new(dim);
            let idx = vec![s.label_index("a"); rows];
            s.accumulate(&feats, &idx, "test").unwrap();
            let mut ours = s.eigenvalues_in(&mut Mat::zeros(dim + 1, dim + 1)).unwrap();
            let mut theirs = s
                .gram()
                .self_adjoint_eigenvalues(faer::Side::Lower)
                .unwrap();
            ours.sort_by(f64::total_cmp);
            theirs.sort_by(f64::total_cmp);
            let scale = theirs.last().unwrap().abs();
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((a - b).abs() <= 1e-12 * scale, "dim {dim}: {a} vs {b}");
            }
        }
    }
}
