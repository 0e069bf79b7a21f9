//! `fastretrain._core`: the Python face of the library. Two classes: `Statistics` (the exact
//! streaming ridge statistics on feature arrays, under `fastretrain.RidgeHead`) and `Retrainer`
//! (a model's state: learn, fit, predict, evaluate, forget, merge, export). Heavy work runs with
//! the interpreter released; library errors become `fastretrain.Error` subclasses carrying the
//! library's message. The pure-Python layer (`fastretrain/__init__.py`) adds the scikit-learn
//! estimator and argument conveniences.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use numpy::ndarray::{Array1, Array2, ArrayView2};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyReadonlyArrayDyn};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sha2::{Digest, Sha256};

use fastretrain::Error as LibError;
use fastretrain::backbone::Backbone;
use fastretrain::data::{DataOptions, DataSource, Sample, SampleList, Shard, check_label};
use fastretrain::fitting::{self, FitOptions, Method, parse_widths};
use fastretrain::head::{Activation, Head, LambdaSource, MethodName};
use fastretrain::preprocess::Pixels;
use fastretrain::recompute::RecomputeOptions;
use fastretrain::retrainer::{LearnOptions, Retrainer as LibRetrainer};
use fastretrain::solver::{GramRecord, GramStats, default_lambda_grid};
use fastretrain::state::State;
use fastretrain::store::FeatureStore;

create_exception!(fastretrain, Error, PyException, "Any error of fastretrain.");
create_exception!(
    fastretrain,
    DataError,
    Error,
    "Unreadable or unusable data."
);
create_exception!(
    fastretrain,
    ModelError,
    Error,
    "A model file that cannot be used."
);
create_exception!(
    fastretrain,
    StateError,
    Error,
    "A damaged, foreign or mismatched state."
);
create_exception!(
    fastretrain,
    SolverError,
    Error,
    "The head cannot be solved."
);

/// The library's error as the matching Python exception, with its message.
fn to_py(e: LibError) -> PyErr {
    let message = e.to_string();
    match e {
        LibError::Io { .. }
        | LibError::Image { .. }
        | LibError::Data { .. }
        | LibError::NonFiniteFeatures { .. }
        | LibError::UnknownLabel { .. }
        | LibError::FeatureDim { .. } => DataError::new_err(message),
        LibError::Model { .. }
        | LibError::ModelNotFound { .. }
        | LibError::NoDenseHead { .. }
        | LibError::Spec { .. } => ModelError::new_err(message),
        LibError::CorruptState { .. }
        | LibError::CorruptStore { .. }
        | LibError::StateVersion { .. }
        | LibError::BackboneMismatch { .. }
        | LibError::Locked { .. } => StateError::new_err(message),
        LibError::Solver(_) => SolverError::new_err(message),
        LibError::InvalidArgument(_) => PyValueError::new_err(message),
        #[allow(unreachable_patterns)]
        _ => Error::new_err(message),
    }
}

fn json_to_py<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| Error::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// Rows of a float64 C-contiguous array as one slice (the Python layer converts).
fn rows<'a>(x: &'a ArrayView2<'a, f64>) -> PyResult<&'a [f64]> {
    x.as_slice()
        .ok_or_else(|| PyValueError::new_err("features must be a C-contiguous float64 array"))
}

/// Exact streaming ridge statistics of labelled feature rows (`G = Σ x xᵀ`, `B = Σ x tᵀ` with
/// `x = [h; 1]` and ±1 one-hot targets), as kept in a state.
#[pyclass(module = "fastretrain._core")]
struct Statistics {
    inner: GramStats,
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
        let data = rows(&x)?;
        // New labels are added only if the whole batch is accepted.
        let mut stats = self.inner.clone();
        let columns: Vec<usize> = labels.iter().map(|l| stats.label_index(l)).collect();
        py.detach(|| {
            if forget {
                stats.forget(data, &columns, "rows")
            } else {
                stats.accumulate(data, &columns, "rows")
            }
        })
        .map_err(to_py)?;
        self.inner = stats;
        Ok(())
    }
}

fn postcard_bytes(value: &impl serde::Serialize) -> PyResult<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::new_err(e.to_string()))
}

fn postcard_from<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> PyResult<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| StateError::new_err(format!("statistics bytes are not usable: {e}")))
}

/// Images from NumPy: uint8, (n, h, w) grey or (n, h, w, 3) RGB.
fn images_of(
    images: &PyReadonlyArrayDyn<'_, u8>,
) -> PyResult<(Vec<u8>, usize, usize, usize, usize)> {
    let view = images.as_array();
    let shape = view.shape().to_vec();
    let (n, h, w, c) = match shape.as_slice() {
        [n, h, w] => (*n, *h, *w, 1),
        [n, h, w, 3] => (*n, *h, *w, 3),
        [n, h, w, 1] => (*n, *h, *w, 1),
        _ => {
            return Err(PyValueError::new_err(format!(
                "images must be uint8 of shape (n, height, width) or (n, height, width, 3), got {shape:?}"
            )));
        }
    };
    if h == 0 || w == 0 {
        return Err(PyValueError::new_err("images must not be empty"));
    }
    Ok((view.iter().copied().collect(), n, h, w, c))
}

/// A [`SampleList`] over images copied out of a NumPy array, named by a digest of the pixels
/// and labels (so the same arrays learned twice resume like the same folder would).
fn image_list(
    images: &PyReadonlyArrayDyn<'_, u8>,
    labels: Option<Vec<String>>,
) -> PyResult<(SampleList, usize)> {
    let (pixels, n, h, w, c) = images_of(images)?;
    if let Some(l) = &labels {
        if l.len() != n {
            return Err(PyValueError::new_err(format!(
                "{n} images but {} labels",
                l.len()
            )));
        }
        // The same rule as for labels from folders and IDX files.
        for label in l {
            check_label(label, Path::new("images")).map_err(to_py)?;
        }
    }
    let mut digest = Sha256::new();
    digest.update(&pixels);
    for l in labels.iter().flatten() {
        digest.update(l.as_bytes());
        digest.update([0]);
    }
    let id = format!("arrays:{:x}", digest.finalize());
    let per = h * w * c;
    let items = (0..n).map(move |i| {
        let data = pixels[i * per..(i + 1) * per].to_vec();
        Ok(Sample {
            id: format!("image {i}"),
            label: labels.as_ref().map(|l| l[i].clone()),
            pixels: Pixels {
                width: w,
                height: h,
                channels: c,
                data,
            },
        })
    });
    Ok((SampleList::new(id, n, items), n))
}

fn file_list(paths: Vec<PathBuf>, labels: Option<Vec<String>>) -> PyResult<SampleList> {
    if let Some(l) = &labels
        && l.len() != paths.len()
    {
        return Err(PyValueError::new_err(format!(
            "{} paths but {} labels",
            paths.len(),
            l.len()
        )));
    }
    let mut digest = Sha256::new();
    for p in &paths {
        digest.update(p.display().to_string().as_bytes());
        digest.update([0]);
    }
    for l in labels.iter().flatten() {
        digest.update(l.as_bytes());
        digest.update([0]);
    }
    let id = format!("files:{:x}", digest.finalize());
    let files = match labels {
        Some(labels) => paths
            .into_iter()
            .zip(labels.into_iter().map(Some))
            .collect(),
        None => paths.into_iter().map(|p| (p, None)).collect(),
    };
    SampleList::files(id, files).map_err(to_py)
}

/// Where samples come from: exactly one of a path (folder or IDX), image files, or arrays.
fn source_of(
    source: Option<PathBuf>,
    paths: Option<Vec<PathBuf>>,
    images: Option<PyReadonlyArrayDyn<'_, u8>>,
    labels: Option<Vec<String>>,
    limit: Option<usize>,
) -> PyResult<DataSource> {
    match (source, paths, images) {
        (Some(path), None, None) => {
            if labels.is_some() {
                return Err(PyValueError::new_err(
                    "labels come from the source itself (folder names, IDX labels)",
                ));
            }
            DataSource::open(
                &path,
                &DataOptions {
                    limit,
                    ..Default::default()
                },
            )
            .map_err(to_py)
        }
        (None, Some(paths), None) => Ok(DataSource::List(file_list(paths, labels)?)),
        (None, None, Some(images)) => Ok(DataSource::List(image_list(&images, labels)?.0)),
        _ => Err(PyValueError::new_err(
            "give exactly one of: a source path, paths=[image files], images=uint8 array",
        )),
    }
}

/// The samples of a source, decoded (for features / scores / predict).
fn samples_of(source: DataSource) -> PyResult<Vec<Sample>> {
    source.collect::<Result<Vec<_>, _>>().map_err(to_py)
}

/// A model's retraining state: the frozen backbone plus the statistics and head.
#[pyclass(module = "fastretrain._core")]
struct Retrainer {
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
        let threads =
            threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        fastretrain::backbone::set_threads(threads);
        let inner = py
            .detach(|| match &state {
                Some(path) if path.exists() => {
                    LibRetrainer::open(path, model.as_deref(), feature_tensor.as_deref())
                }
                _ => {
                    let model = model.as_deref().ok_or_else(|| {
                        LibError::InvalidArgument(
                            "a new state needs model= (an ONNX file with its spec beside it, \
                             or a pack)"
                                .into(),
                        )
                    })?;
                    LibRetrainer::fresh(Backbone::load(model, None, feature_tensor.as_deref())?)
                }
            })
            .map_err(to_py)?;
        Ok(Retrainer {
            inner: Mutex::new(inner),
            path: Mutex::new(state),
        })
    }

    /// Streams labelled samples into the statistics, then refits the head (λ by GCV unless
    /// given). A source path already read from resumes after what it absorbed.
    #[pyo3(signature = (source=None, *, paths=None, images=None, labels=None, limit=None, lam=None, relearn=false, skip_bad=false, shard=None))]
    #[allow(clippy::too_many_arguments)]
    fn learn<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        labels: Option<Vec<String>>,
        limit: Option<usize>,
        lam: Option<f64>,
        relearn: bool,
        skip_bad: bool,
        shard: Option<(usize, usize)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if (paths.is_some() || images.is_some()) && labels.is_none() {
            return Err(PyValueError::new_err(
                "learning needs labels= for paths or images",
            ));
        }
        let mut source = source_of(source, paths, images, labels, limit)?;
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
    #[pyo3(signature = (source=None, *, paths=None, images=None, labels=None, lam=None))]
    fn forget<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        labels: Option<Vec<String>>,
        lam: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = source_of(source, paths, images, labels, None)?;
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
        let method = match method {
            "gram" => Method::Gram,
            "block-rls" => Method::BlockRls,
            "step" => Method::Step { eta, passes },
            "recompute" => Method::Recompute(RecomputeOptions {
                hidden: parse_widths(hidden).map_err(to_py)?,
                activation: Activation::parse(activation).map_err(to_py)?,
                iterations,
                seed,
            }),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown method '{other}': use gram, block-rls, step or recompute"
                )));
            }
        };
        let report = self.with(py, |r| match store {
            None if method == Method::Gram => r.fit(lam),
            None => Err(LibError::InvalidArgument(
                "this method streams stored features: give store= (made by `fastretrain extract`)"
                    .into(),
            )),
            Some(path) => {
                let store = FeatureStore::open(&path)?;
                store.check_backbone(&r.state().backbone)?;
                let options = FitOptions {
                    method,
                    lambda: lam,
                    batch: batch.unwrap_or(fitting::DEFAULT_BATCH),
                    ..FitOptions::default()
                };
                let (head, report) = fitting::fit(&store, &options)?;
                r.state_mut().head = Some(head);
                Ok(report)
            }
        })?;
        json_to_py(py, &report)
    }

    /// Penultimate features, n × dim float32.
    #[pyo3(signature = (source=None, *, paths=None, images=None, limit=None))]
    fn features<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let samples = samples_of(source_of(source, paths, images, None, limit)?)?;
        let n = samples.len();
        let (features, dim) = self.with(py, |r| Ok((r.features(&samples)?, r.dim())))?;
        let array = Array2::from_shape_vec((n, dim), features)
            .map_err(|e| Error::new_err(e.to_string()))?;
        Ok(array.into_pyarray(py))
    }

    /// Head scores (decision values), n × labels float64, columns in `labels` order.
    #[pyo3(signature = (source=None, *, paths=None, images=None, limit=None))]
    fn scores<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let samples = samples_of(source_of(source, paths, images, None, limit)?)?;
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
    #[pyo3(signature = (source=None, *, paths=None, images=None, labels=None, limit=None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        source: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        images: Option<PyReadonlyArrayDyn<'py, u8>>,
        labels: Option<Vec<String>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = source_of(source, paths, images, labels, limit)?;
        let report = self.with(py, |r| r.evaluate(source, |_| {}))?;
        json_to_py(py, &report)
    }

    /// Adds the statistics of another state file (same backbone), then refits. A source both
    /// states learned is refused (its samples would count twice) unless `distinct_sources`
    /// says they are different data under the same name.
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
            let state = r.state_mut();
            state.merge(&theirs, &other, distinct_sources)?;
            state.fit(lam)
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
        let inner = self.with(py, |r| Ok(r.state().stats.clone()))?;
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
            state.stats.merge(&theirs)?;
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
        let w = weights.as_array();
        let mut unique = labels.clone();
        unique.sort();
        unique.dedup();
        if labels.is_empty() || unique.len() != labels.len() {
            return Err(PyValueError::new_err(
                "a head needs at least one label, each named once",
            ));
        }
        let shape = w.dim();
        let weights: Vec<f64> = w.iter().copied().collect(); // row major, as a head keeps them
        self.with(py, move |r| {
            let dim = r.dim();
            if shape != (dim + 1, labels.len()) {
                return Err(LibError::InvalidArgument(format!(
                    "head weights must be (dim + 1) × labels = ({}, {}), got {shape:?}",
                    dim + 1,
                    labels.len(),
                )));
            }
            let head = Head {
                dim,
                labels,
                hidden: Vec::new(),
                weights,
                lambda: lam,
                lambda_source: LambdaSource::Fixed,
                fitted_samples: samples,
                method: MethodName::Gram,
            };
            head.validate().map_err(LibError::InvalidArgument)?;
            r.state_mut().head = Some(head);
            Ok(())
        })
    }

    /// The backbone this state belongs to: `{"model_sha256", "feature_tensor", "feature_dim"}`.
    #[getter]
    fn fingerprint<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let fingerprint = self.with(py, |r| Ok(r.state().backbone.clone()))?;
        json_to_py(py, &fingerprint)
    }

    /// G (full, (d+1)²), B ((d+1) × labels), per-label counts and the labels, as NumPy.
    fn statistics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stats = self.with(py, |r| Ok(r.state().stats.clone()))?;
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
                .head
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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Statistics>()?;
    m.add_class::<Retrainer>()?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("StateError", py.get_type::<StateError>())?;
    m.add("SolverError", py.get_type::<SolverError>())?;
    m.add("default_lambda_grid", default_lambda_grid())?;
    Ok(())
}
