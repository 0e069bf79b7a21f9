//! `Retrainer`: one model and its state, as the CLI's commands work on them (learn, fit,
//! predict, evaluate, forget, merge, export), with the interpreter released while it works.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use numpy::ndarray::{Array1, Array2};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyReadonlyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use fastretrain::Error as LibError;
use fastretrain::backbone::LoadOptions;
use fastretrain::data::Shard;
use fastretrain::fitting::{self, FitOptions, Method, MethodSettings};
use fastretrain::head::Head;
use fastretrain::retrainer::{LearnOptions, Retrainer as LibRetrainer};
use fastretrain::state::State;
use fastretrain::store::FeatureStore;

use crate::samples::{samples_of, source_of};
use crate::statistics::Statistics;
use crate::{Error, json_to_py, to_py};

/// A model's retraining state: the frozen backbone plus the statistics and head.
#[pyclass(module = "fastretrain._core")]
pub(crate) struct Retrainer {
    inner: Mutex<LibRetrainer>,
    /// Where `save()` writes by default (the file opened, if any).
    path: Mutex<Option<PathBuf>>,
}

impl Retrainer {
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut LibRetrainer) -> Result<R, LibError> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let mut guard = self
                .inner
                .lock()
                .map_err(|_| Error::new_err("an earlier call failed inside the retrainer"))?;
            f(&mut guard).map_err(to_py)
        })
    }
}

#[pymethods]
impl Retrainer {
    /// Opens `state` if the file exists (its model found as `learn` finds it, unless `model`
    /// names it), else starts an empty state for `model`. `threads`: images run side by side.
    #[new]
    #[pyo3(signature = (model=None, state=None, feature_tensor=None, threads=None))]
    fn new(
        py: Python<'_>,
        model: Option<PathBuf>,
        state: Option<PathBuf>,
        feature_tensor: Option<String>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let max = fastretrain::backbone::MAX_THREADS;
        if let Some(n) = threads.filter(|n| !(1..=max).contains(n)) {
            return Err(PyValueError::new_err(format!(
                "threads={n} is outside 1..={max}"
            )));
        }
        // Default: one per core, at most the backbone's limit (a machine may have more).
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(max))
        });
        // This retrainer's own: another in the same process may use another count.
        let options = LoadOptions {
            feature_tensor,
            threads: Some(threads),
            ..LoadOptions::default()
        };
        let inner = py
            .detach(|| LibRetrainer::open_or_create(model.as_deref(), state.as_deref(), &options))
            .map_err(to_py)?;
        Ok(Retrainer {
            inner: Mutex::new(inner),
            path: Mutex::new(state),
        })
    }

    /// Streams labelled samples into the statistics, then refits the head (λ by GCV unless
    /// given). A source path already read from resumes after what it absorbed.
    #[pyo3(signature = (source=None, *, paths=None, images=None, tensors=None, labels=None, limit=None, lam=None, relearn=false, skip_bad=false, shard=None))]
    #[allow(clippy::too_many_arguments)]
    fn learn<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        tensors: Option<Bound<'py, PyAny>>,
        labels: Option<Vec<String>>,
        limit: Option<usize>,
        lam: Option<f64>,
        relearn: bool,
        skip_bad: bool,
        shard: Option<(usize, usize)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if (paths.is_some() || images.is_some() || tensors.is_some()) && labels.is_none() {
            return Err(PyValueError::new_err(
                "learning needs labels= for paths, images or tensors",
            ));
        }
        let mut source = source_of(source, paths, images, tensors, labels, limit)?;
        if let Some((index, count)) = shard {
            let shard = Shard::new(index, count).map_err(to_py)?;
            source = py.detach(|| source.into_shard(shard)).map_err(to_py)?;
        }
        let options = LearnOptions {
            lambda: lam,
            skip_bad,
            relearn,
            ..Default::default()
        };
        let report = self.with(py, |r| r.learn(source, &options, |_| {}, |_| Ok(())))?;
        json_to_py(py, &report)
    }

    /// Removes the samples of a source learned before (exact unlearning), then refits.
    #[pyo3(signature = (source=None, *, paths=None, images=None, tensors=None, labels=None, lam=None))]
    #[allow(clippy::too_many_arguments)]
    fn forget<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        tensors: Option<Bound<'py, PyAny>>,
        labels: Option<Vec<String>>,
        lam: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = source_of(source, paths, images, tensors, labels, None)?;
        let report = self.with(py, |r| r.forget(source, lam, |_| {}))?;
        json_to_py(py, &report)
    }

    /// Refits the head: `gram` from the statistics (λ by GCV unless given), or `block-rls`,
    /// `step`, `recompute` streaming a feature store (`store=`, made by `fastretrain extract`).
    #[pyo3(signature = (lam=None, *, method="gram", store=None, batch=None, eta=0.5, passes=1, hidden="1024", activation="bsig", iterations=2, seed=1))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &self,
        py: Python<'py>,
        lam: Option<f64>,
        method: &str,
        store: Option<PathBuf>,
        batch: Option<usize>,
        eta: f64,
        passes: usize,
        hidden: &str,
        activation: &str,
        iterations: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let method = Method::from_name(
            method,
            &MethodSettings {
                eta,
                passes,
                hidden,
                activation,
                iterations,
                seed,
            },
        )
        .map_err(to_py)?;
        let report = self.with(py, |r| {
            let store = store.as_deref().map(FeatureStore::open).transpose()?;
            let options = FitOptions {
                method,
                lambda: lam,
                batch: batch.unwrap_or(fitting::DEFAULT_BATCH),
                ..FitOptions::default()
            };
            r.state_mut().refit(store.as_ref(), &options)
        })?;
        json_to_py(py, &report)
    }

    /// Penultimate features, n × dim float32.
    #[pyo3(signature = (source=None, *, paths=None, images=None, tensors=None, limit=None))]
    fn features<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        tensors: Option<Bound<'py, PyAny>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let samples = samples_of(source_of(source, paths, images, tensors, None, limit)?)?;
        let n = samples.len();
        let (features, dim) = self.with(py, |r| Ok((r.features(&samples)?, r.dim())))?;
        let array = Array2::from_shape_vec((n, dim), features)
            .map_err(|e| Error::new_err(e.to_string()))?;
        Ok(array.into_pyarray(py))
    }

    /// Head scores (decision values), n × labels float64, columns in `labels` order.
    #[pyo3(signature = (source=None, *, paths=None, images=None, tensors=None, limit=None))]
    fn scores<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        tensors: Option<Bound<'py, PyAny>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let samples = samples_of(source_of(source, paths, images, tensors, None, limit)?)?;
        let n = samples.len();
        let (scores, classes) = self.with(py, |r| {
            let features = r.features(&samples)?;
            let head = r.head()?;
            let mut scores = Vec::with_capacity(n * head.classes());
            for row in features.chunks(head.dim.max(1)) {
                scores.extend(head.scores(row)?);
            }
            Ok((scores, head.classes()))
        })?;
        let array = Array2::from_shape_vec((n, classes), scores)
            .map_err(|e| Error::new_err(e.to_string()))?;
        Ok(array.into_pyarray(py))
    }

    /// Accuracy, per-class accuracy and confusion matrix on labelled samples.
    #[pyo3(signature = (source=None, *, paths=None, images=None, tensors=None, labels=None, limit=None))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        tensors: Option<Bound<'py, PyAny>>,
        labels: Option<Vec<String>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = source_of(source, paths, images, tensors, labels, limit)?;
        let report = self.with(py, |r| r.evaluate(source, |_| {}))?;
        json_to_py(py, &report)
    }

    /// Adds the statistics of another state file (same backbone), then refits. A source both
    /// states learned is refused (its samples would count twice) unless `distinct_sources`
    /// says they are different data under the same name; a state merged into this retrainer
    /// before is refused either way.
    #[pyo3(signature = (other, *, lam=None, distinct_sources=false))]
    fn merge<'py>(
        &self,
        py: Python<'py>,
        other: PathBuf,
        lam: Option<f64>,
        distinct_sources: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let report = self.with(py, |r| {
            let theirs = State::load(&other)?;
            r.merge(&theirs, &other, distinct_sources)?;
            r.state_mut().fit(lam)
        })?;
        json_to_py(py, &report)
    }

    /// Writes the adapted model as ONNX (the backbone with the refit head).
    #[pyo3(signature = (out, *, model=None))]
    fn export<'py>(
        &self,
        py: Python<'py>,
        out: PathBuf,
        model: Option<PathBuf>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let state_path = self.path.lock().ok().and_then(|p| p.clone());
        let report = self.with(py, |r| {
            let model = match model {
                Some(m) => m,
                None => r
                    .state()
                    .model_file(state_path.as_deref().unwrap_or(Path::new(".")))?,
            };
            fastretrain::export::export(r.state(), &model, &out)
        })?;
        json_to_py(py, &report)
    }

    /// Saves the state (atomically, checksummed) to `path`, or to the file it was opened from.
    #[pyo3(signature = (path=None))]
    fn save(&self, py: Python<'_>, path: Option<PathBuf>) -> PyResult<()> {
        let mut remembered = self
            .path
            .lock()
            .map_err(|_| Error::new_err("an earlier call failed inside the retrainer"))?;
        let path = path.or_else(|| remembered.clone()).ok_or_else(|| {
            PyValueError::new_err("save() needs a path: this state was not opened from a file")
        })?;
        self.with(py, |r| r.state().save(&path))?;
        *remembered = Some(path);
        Ok(())
    }

    /// A copy of the statistics as a `Statistics` object (to send, merge or solve elsewhere).
    fn to_statistics(&self, py: Python<'_>) -> PyResult<Statistics> {
        let inner = self.with(py, |r| Ok(r.state().stats().clone()))?;
        Ok(Statistics { inner })
    }

    /// Adds statistics learned elsewhere with the same backbone (same feature dimension),
    /// then refits (λ by GCV unless given). Exactly what `merge` does with a state file.
    #[pyo3(signature = (stats, *, lam=None))]
    fn merge_statistics<'py>(
        &self,
        py: Python<'py>,
        stats: &Statistics,
        lam: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let theirs = stats.inner.clone();
        let report = self.with(py, move |r| {
            let state = r.state_mut();
            state.add_statistics(&theirs)?;
            state.fit(lam)
        })?;
        json_to_py(py, &report)
    }

    /// Replaces the head with one solved elsewhere (a fleet's): `weights` (dim + 1) × labels,
    /// the last row the bias, and its λ. The statistics stay this state's own; a later `fit`
    /// or `learn` solves from them again.
    #[pyo3(signature = (weights, labels, lam, *, samples=0.0))]
    fn set_head(
        &self,
        py: Python<'_>,
        weights: PyReadonlyArray2<'_, f64>,
        labels: Vec<String>,
        lam: f64,
        samples: f64,
    ) -> PyResult<()> {
        let weights = weights.as_array().to_owned();
        self.with(py, move |r| {
            let head = Head::from_weights(weights.view(), r.dim(), labels, lam, samples)?;
            r.state_mut().set_head(head)
        })
    }

    /// The backbone this state belongs to: `{"model_sha256", "feature_tensor", "feature_dim"}`.
    #[getter]
    fn fingerprint<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fingerprint = self.with(py, |r| Ok(r.state().backbone().clone()))?;
        json_to_py(py, &fingerprint)
    }

    /// G (full, (d+1)²), B ((d+1) × labels), per-label counts and the labels, as NumPy.
    fn statistics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stats = self.with(py, |r| Ok(r.state().stats().clone()))?;
        let g = stats.gram();
        let b = stats.cross();
        let dict = pyo3::types::PyDict::new(py);
        dict.set_item(
            "gram",
            Array2::from_shape_fn((g.nrows(), g.ncols()), |(i, j)| g[(i, j)]).into_pyarray(py),
        )?;
        dict.set_item(
            "cross",
            Array2::from_shape_fn((b.nrows(), b.ncols()), |(i, j)| b[(i, j)]).into_pyarray(py),
        )?;
        dict.set_item(
            "counts",
            Array1::from_vec(stats.class_counts().to_vec()).into_pyarray(py),
        )?;
        dict.set_item("labels", stats.labels().to_vec())?;
        dict.set_item("samples", stats.samples())?;
        Ok(dict.into_any())
    }

    /// The head's labels, in score column order (empty before the first fit).
    #[getter]
    fn labels(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with(py, |r| {
            Ok(r.state()
                .head()
                .as_ref()
                .map(|h| h.labels.clone())
                .unwrap_or_default())
        })
    }

    /// sha256 of the statistics alone: equal digests mean equal statistics.
    #[getter]
    fn statistics_digest(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |r| Ok(r.state().statistics_digest()))
    }

    /// The head's weights, (m + 1) × labels (the last row the bias), and λ.
    fn head<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyArray2<f64>>, f64)> {
        let (weights, rows, cols, lambda) = self.with(py, |r| {
            let h = r.head()?;
            Ok((
                h.weights.clone(),
                h.weights.len() / h.classes().max(1),
                h.classes(),
                h.lambda,
            ))
        })?;
        let array = Array2::from_shape_vec((rows, cols), weights)
            .map_err(|e| Error::new_err(e.to_string()))?;
        Ok((array.into_pyarray(py), lambda))
    }

    #[getter]
    fn dim(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |r| Ok(r.dim()))
    }
}
