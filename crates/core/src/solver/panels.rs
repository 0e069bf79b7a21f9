//! The packed lower triangle of G: the only (d+1)² thing the statistics hold in memory.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// The lower triangle of a symmetric p × p matrix in column panels of [`PANEL`] columns: panel
/// k holds columns `j0 = k·PANEL .. j0 + w` from row `j0` down, as a dense (p − j0) × w column-
/// major block. It holds about half of a full matrix (13 MB → 6.6 MB for 1,280 features, the
/// largest thing `learn` keeps besides the model), yet each panel is a plain matrix, so a
/// batch's `XᵀX` is one dense product per panel. The w × w diagonal blocks are stored whole;
/// the values above their diagonal are scratch, never read.
#[derive(Debug, Clone)]
pub(super) struct LowerPanels {
    pub(super) p: usize,
    /// Offset of each panel in `values`, and the total length at the end.
    pub(super) starts: Vec<usize>,
    pub(super) values: Vec<f64>,
}

/// Columns per panel: the storage beyond the triangle is p·PANEL/2 values (0.3 MB at 1,281).
const PANEL: usize = 64;

impl LowerPanels {
    pub(super) fn zeros(p: usize) -> Self {
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
    pub(super) fn index(&self, r: usize, c: usize) -> usize {
        let j0 = c / PANEL * PANEL;
        self.starts[c / PANEL] + (c - j0) * (self.p - j0) + (r - j0)
    }

    pub(super) fn get(&self, r: usize, c: usize) -> f64 {
        self.values[self.index(r, c)]
    }

    /// Column j from the diagonal down (p − j values), contiguous in its panel.
    pub(super) fn column_from_diagonal(&self, j: usize) -> &[f64] {
        let i = self.index(j, j);
        &self.values[i..i + self.p - j]
    }

    pub(super) fn column_from_diagonal_mut(&mut self, j: usize) -> &mut [f64] {
        let i = self.index(j, j);
        let len = self.p - j;
        &mut self.values[i..i + len]
    }

    /// The panels as matrices: (first column, the (p − j0) × w block).
    pub(super) fn panels_mut(&mut self) -> impl Iterator<Item = (usize, MatMut<'_, f64>)> {
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
    pub(super) fn add_gram_of(&mut self, x: MatRef<'_, f64>, sign: f64, par: Par) {
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
    pub(super) fn copy_lower_into(&self, mut out: MatMut<'_, f64>) {
        for j in 0..self.p {
            for (i, v) in self.column_from_diagonal(j).iter().enumerate() {
                out[(j + i, j)] = *v;
            }
        }
    }
}

impl PartialEq for LowerPanels {
    fn eq(&self, other: &Self) -> bool {
        self.p == other.p
            && (0..self.p).all(|j| self.column_from_diagonal(j) == other.column_from_diagonal(j))
    }
}
