//! Choosing λ: generalised cross-validation over a grid, from the eigenvalues of G (reduced to
//! tridiagonal form in place, then the implicit QL algorithm) and one Cholesky factor per λ.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::tridiag;
use faer::linalg::qr::no_pivoting::factor::recommended_block_size;
use faer::{Mat, Par};
use serde::Serialize;

use super::solve::solve_with_factor;
use super::{GramStats, lowest_scoring};
use crate::error::{Error, Result};

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
    pub(super) fn eigenvalues_in(&self, buffer: &mut Mat<f64>) -> Result<Vec<f64>> {
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
