//! The exact streaming head solver (the recomputation of dense layers by a Moore–Penrose
//! inverse, Yang et al., TPAMI 2019): Gram statistics and the ridge / Moore–Penrose solve, with
//! λ chosen by generalised cross-validation.
//!
//! With `x = [h; 1]` and one-hot targets `t ∈ {−1, +1}^c`, the statistics are
//! `G = Σ x xᵀ`, `B = Σ x tᵀ`, the sample count `n` and `Σ‖t‖²`. They are sums over samples,
//! so streaming in any number of batches, merging two devices' statistics, and adding a new
//! label (its column starts as `−Σx`, the bias column of G) are all exact. Memory is
//! O(d² + d·c) whatever the number of samples. Everything is f64; the hot update is a
//! rank-k update of the lower triangle (faer), which is the only part held in memory
//! (`panels`).
//!
//! This file keeps the statistics and their stored form; `solve` holds the ridge solve,
//! `gcv` the λ search, `panels` the packed triangle.

mod gcv;
mod panels;
mod solve;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

pub use gcv::{CrossValidation, LambdaSearch};
use panels::LowerPanels;

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

    /// Folds labelled rows in: `rows` is n × dim in any memory layout (a NumPy array's view, a
    /// transposed matrix), `labels` the n labels by name; a label not seen before gets a
    /// column. All or nothing: a batch of the wrong shape or with NaN/Inf changes nothing, not
    /// even the labels.
    pub fn learn_rows<F: Copy + Into<f64>>(
        &mut self,
        rows: ArrayView2<'_, F>,
        labels: &[impl AsRef<str>],
    ) -> Result<()> {
        self.fold_rows(rows, labels, 1.0)
    }

    /// Removes labelled rows folded in before (exact unlearning), as [`Self::learn_rows`] adds
    /// them; refused whole, as [`Self::forget`] is.
    pub fn forget_rows<F: Copy + Into<f64>>(
        &mut self,
        rows: ArrayView2<'_, F>,
        labels: &[impl AsRef<str>],
    ) -> Result<()> {
        self.fold_rows(rows, labels, -1.0)
    }

    fn fold_rows<F: Copy + Into<f64>>(
        &mut self,
        rows: ArrayView2<'_, F>,
        labels: &[impl AsRef<str>],
        sign: f64,
    ) -> Result<()> {
        let (n, d) = rows.dim();
        if d != self.dim {
            return Err(Error::FeatureDim {
                what: "rows".into(),
                expected: self.dim,
                got: d,
            });
        }
        if labels.len() != n {
            return Err(Error::InvalidArgument(format!(
                "{n} rows but {} labels",
                labels.len()
            )));
        }
        let copied: Vec<F>;
        let data = match rows.as_slice() {
            Some(row_major) => row_major,
            None => {
                copied = rows.iter().copied().collect();
                &copied
            }
        };
        // New labels are added only if the whole batch is accepted.
        let mut stats = self.clone();
        let columns: Vec<usize> = labels
            .iter()
            .map(|l| stats.label_index(l.as_ref()))
            .collect();
        if sign > 0.0 {
            stats.accumulate(data, &columns, "rows")?;
        } else {
            stats.forget(data, &columns, "rows")?;
        }
        *self = stats;
        Ok(())
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
