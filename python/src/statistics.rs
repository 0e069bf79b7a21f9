//! `Statistics`: the exact streaming ridge statistics of feature arrays (the engine under
//! `fastretrain.RidgeHead`), with their bytes for a fleet's server to add up.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use fastretrain::solver::{GramRecord, GramStats, default_lambda_grid};

use crate::{StateError, postcard_bytes, postcard_from, to_py};

/// Exact streaming ridge statistics of labelled feature rows (`G = Σ x xᵀ`, `B = Σ x tᵀ` with
/// `x = [h; 1]` and ±1 one-hot targets), as kept in a state.
#[pyclass(module = "fastretrain._core")]
pub(crate) struct Statistics {
    pub(crate) inner: GramStats,
}

#[pymethods]
impl Statistics {
    #[new]
    fn new(dim: usize) -> PyResult<Self> {
        if dim == 0 {
            return Err(PyValueError::new_err(
                "the feature dimension must be at least 1",
            ));
        }
        Ok(Statistics {
            inner: GramStats::new(dim),
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Labels in column order.
    #[getter]
    fn labels(&self) -> Vec<String> {
        self.inner.labels().to_vec()
    }

    #[getter]
    fn samples(&self) -> f64 {
        self.inner.samples()
    }

    #[getter]
    fn class_counts(&self) -> Vec<f64> {
        self.inner.class_counts().to_vec()
    }

    /// `Σ‖t‖²` over the samples (targets ±1): the constant part of the residual.
    #[getter]
    fn target_sq(&self) -> f64 {
        self.inner.target_sq()
    }

    /// Statistics from their parts: `gram` (dim + 1)² (its lower triangle is used, the last
    /// row the bias input), `cross` (dim + 1) × labels, the sample count, `Σ‖t‖²` and the
    /// per-label counts. Checked like a state file's: sizes, finite values, unique labels.
    #[staticmethod]
    fn from_arrays(
        gram: PyReadonlyArray2<'_, f64>,
        cross: PyReadonlyArray2<'_, f64>,
        labels: Vec<String>,
        samples: f64,
        target_sq: f64,
        class_counts: Vec<f64>,
    ) -> PyResult<Statistics> {
        let (g, b) = (gram.as_array(), cross.as_array());
        let p = g.nrows();
        if p < 2 || g.ncols() != p {
            return Err(PyValueError::new_err(format!(
                "gram must be square, (dim + 1)², with dim ≥ 1; got {:?}",
                g.dim()
            )));
        }
        if b.dim() != (p, labels.len()) {
            return Err(PyValueError::new_err(format!(
                "cross must be (dim + 1) × labels = ({p}, {}), got {:?}",
                labels.len(),
                b.dim()
            )));
        }
        let gram_lower = (0..p)
            .flat_map(|j| (j..p).map(move |i| (i, j)))
            .map(|(i, j)| g[(i, j)])
            .collect();
        let cross = (0..labels.len())
            .flat_map(|k| (0..p).map(move |i| (i, k)))
            .map(|(i, k)| b[(i, k)])
            .collect();
        let record = GramRecord {
            dim: p - 1,
            labels,
            gram_lower,
            cross,
            samples,
            target_sq,
            class_counts,
        };
        let inner = GramStats::from_record(record)
            .map_err(|e| PyValueError::new_err(format!("statistics are not usable: {e}")))?;
        Ok(Statistics { inner })
    }

    /// Folds labelled rows in (`x`: n × dim float64). All or nothing: a batch with NaN/Inf or
    /// of the wrong width is refused whole.
    fn accumulate(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        labels: Vec<String>,
    ) -> PyResult<()> {
        self.fold(py, x, labels, false)
    }

    /// Removes rows folded in before (exact unlearning).
    fn forget(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        labels: Vec<String>,
    ) -> PyResult<()> {
        self.fold(py, x, labels, true)
    }

    /// Adds another set of statistics (same dimension); labels are matched by name.
    fn merge(&mut self, other: &Statistics) -> PyResult<()> {
        self.inner.merge(&other.inner).map_err(to_py)
    }

    /// `W = (G + λI)⁻¹ B`: (dim + 1) × labels, the last row the bias.
    fn solve<'py>(&self, py: Python<'py>, lam: f64) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let w = py.detach(|| self.inner.solve(lam)).map_err(to_py)?;
        let array = Array2::from_shape_fn((w.nrows(), w.ncols()), |(i, j)| w[(i, j)]);
        Ok(array.into_pyarray(py))
    }

    /// GCV over `grid` (default 10⁻³ … 10⁴): (best λ, grid, scores).
    #[pyo3(signature = (grid=None))]
    fn gcv(&self, py: Python<'_>, grid: Option<Vec<f64>>) -> PyResult<(f64, Vec<f64>, Vec<f64>)> {
        let grid = grid.unwrap_or_else(default_lambda_grid);
        let search = py.detach(|| self.inner.gcv(&grid)).map_err(to_py)?;
        Ok((search.best, search.grid, search.gcv))
    }

    /// G as a full symmetric (dim + 1)² matrix.
    fn gram<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        let g = self.inner.gram();
        Array2::from_shape_fn((g.nrows(), g.ncols()), |(i, j)| g[(i, j)]).into_pyarray(py)
    }

    /// B, (dim + 1) × labels.
    fn cross<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        let b = self.inner.cross();
        Array2::from_shape_fn((b.nrows(), b.ncols()), |(i, j)| b[(i, j)]).into_pyarray(py)
    }

    fn copy(&self) -> Statistics {
        Statistics {
            inner: self.inner.clone(),
        }
    }

    /// The statistics as bytes (postcard, lower triangle of G), for pickling and storage.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = postcard_bytes(&self.inner.to_record())?;
        Ok(PyBytes::new(py, &bytes))
    }

    #[staticmethod]
    fn from_bytes(bytes: &[u8]) -> PyResult<Statistics> {
        let record: GramRecord = postcard_from(bytes)?;
        let inner = GramStats::from_record(record)
            .map_err(|e| StateError::new_err(format!("statistics bytes are not usable: {e}")))?;
        Ok(Statistics { inner })
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        let from_bytes = py.get_type::<Statistics>().getattr("from_bytes")?;
        Ok((from_bytes, (slf.borrow().to_bytes(py)?,)))
    }

    fn __repr__(&self) -> String {
        format!(
            "Statistics(dim={}, samples={}, labels={})",
            self.inner.dim(),
            self.inner.samples(),
            self.inner.labels().len()
        )
    }
}

impl Statistics {
    fn fold(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        labels: Vec<String>,
        forget: bool,
    ) -> PyResult<()> {
        let x = x.as_array();
        let (n, d) = x.dim();
        if d != self.inner.dim() {
            return Err(PyValueError::new_err(format!(
                "rows have {d} features, the statistics {}",
                self.inner.dim()
            )));
        }
        if labels.len() != n {
            return Err(PyValueError::new_err(format!(
                "{n} rows but {} labels",
                labels.len()
            )));
        }
        let stats = &mut self.inner;
        py.detach(|| {
            if forget {
                stats.forget_rows(x, &labels)
            } else {
                stats.learn_rows(x, &labels)
            }
        })
        .map_err(to_py)
    }
}
