//! The ridge / Moore–Penrose solve of the head from the statistics: `W = (G + λI)⁻¹ B`
//! through a Cholesky factor (faer), and the quantities built from G and B.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::{factor as llt_factor, solve as llt_solve};
use faer::{Mat, MatRef, Par};

use super::GramStats;
use crate::error::{Error, Result};

impl GramStats {
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

    pub(super) fn check_solvable(&self) -> Result<()> {
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
                "G + λI is not positive definite at λ = {lambda}; use a larger λ"
            ))
            .for_setting("lambda"));
        }
        Ok(solve_with_factor(&factor, rhs))
    }

    /// Writes the Cholesky factor L of `G + λI` into the lower triangle of `factor` (the upper
    /// triangle is left as it was and never read); false when `G + λI` is not positive
    /// definite. One (d+1)² buffer, filled straight from the stored lower triangle: no
    /// mirrored copy of G and no second matrix for the factor (the refit's peak memory).
    pub(super) fn cholesky_shifted(&self, lambda: f64, factor: &mut Mat<f64>) -> bool {
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
}

/// `(L Lᵀ)⁻¹ R` for the Cholesky factor L in the lower triangle of `factor`.
pub(super) fn solve_with_factor(factor: &Mat<f64>, rhs: MatRef<'_, f64>) -> Mat<f64> {
    let mut w = rhs.to_owned();
    llt_solve::solve_in_place(
        factor.as_ref(),
        w.as_mut(),
        Par::rayon(0),
        MemStack::new(&mut MemBuffer::new(faer::dyn_stack::StackReq::EMPTY)),
    );
    w
}
