//! fastretrain as a C library, for a retrainer inside the device's own application (a camera
//! app in C or C++, a service, Kotlin or Swift through their FFI): `libfastretrain.so` and
//! `libfastretrain.a`, declared by `include/fastretrain.h` (generated from this file by
//! cbindgen, `capi/cbindgen.toml`).
//!
//! The rules every function follows (the header repeats them):
//! - **Status codes.** Every call that can fail returns a [`FastretrainStatus`];
//!   `FASTRETRAIN_STATUS_OK` is 0. On failure, [`fastretrain_last_error`] gives the library's
//!   message on the calling thread.
//! - **No panic crosses the boundary**: a panic inside the library is caught and returned as
//!   `FASTRETRAIN_STATUS_INTERNAL`; the handle it happened on then refuses further calls.
//!   (A library built with `panic = "abort"`, as the `edge` profile is, cannot catch them:
//!   build the C library with the release profile.)
//! - **Ownership.** Strings and buffers passed in are borrowed for the duration of the call.
//!   Handles are freed with [`fastretrain_free`]; decoded images with
//!   [`fastretrain_image_free`]. Strings the library returns (`fastretrain_last_error`,
//!   `fastretrain_version`) are owned by the library; label names are copied into the caller's
//!   buffer.
//! - **Threads.** A retrainer handle may move between threads but must not be used by two at
//!   once (the caller serialises its calls); different handles work in parallel.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use fastretrain_lib::backbone::{LoadOptions, MAX_THREADS};
use fastretrain_lib::data::{DataOptions, DataSource, SampleList};
use fastretrain_lib::ndarray::{ArrayViewD, IxDyn};
use fastretrain_lib::retrainer::{LearnOptions, Retrainer};
use fastretrain_lib::state::State;
use fastretrain_lib::Error;

/// What a call did. 0 is success; every other value comes with a message from
/// [`fastretrain_last_error`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastretrainStatus {
    Ok = 0,
    /// A null pointer, a buffer size or a value the library cannot take.
    InvalidArgument = 1,
    /// A file could not be read or written.
    Io = 2,
    /// The model or its spec is not usable (or a state belongs to another model).
    Model = 3,
    /// A state file is damaged, truncated or from a newer version.
    State = 4,
    /// Unusable data: an image that does not decode, a bad folder, non-finite features.
    Data = 5,
    /// A label the state does not know.
    UnknownLabel = 6,
    /// Anything else the library refused (the head cannot be solved, no head yet, …).
    Failed = 7,
    /// A bug inside the library (a caught panic). The handle must not be used again.
    Internal = 8,
}

/// A retrainer: the frozen backbone, the statistics and the head. Opaque.
pub struct FastretrainRetrainer {
    inner: Retrainer,
    /// Where [`fastretrain_save`] writes when given no path (the state opened, if any).
    path: Option<PathBuf>,
    /// Set when a panic left the retrainer in an unknown state.
    broken: bool,
}

/// An image decoded by the library: `height` rows of `width` pixels with `channels` (1 or 3)
/// 8-bit values each, rows `stride` bytes apart. Owned by the library: free it with
/// [`fastretrain_image_free`].
#[repr(C)]
pub struct FastretrainImage {
    pub pixels: *mut u8,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub stride: usize,
}

/// What a state holds.
#[repr(C)]
pub struct FastretrainInfo {
    /// Samples in the statistics (a real number: a forgetting factor scales it).
    pub samples: f64,
    /// Labels known to the statistics.
    pub labels: usize,
    /// The feature dimension d.
    pub dim: usize,
    /// 1 if the state has a head (`fastretrain_refit` has run), else 0.
    pub has_head: i32,
    /// The head's ridge λ; NaN without a head.
    pub lambda: f64,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// A failed call: its status and message.
struct Failure {
    status: FastretrainStatus,
    message: String,
}

impl Failure {
    fn invalid(message: impl Into<String>) -> Self {
        Failure {
            status: FastretrainStatus::InvalidArgument,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let status = match error.cause() {
            Error::Io { .. } | Error::Locked { .. } => FastretrainStatus::Io,
            Error::Model { .. }
            | Error::ModelNotFound { .. }
            | Error::NoDenseHead { .. }
            | Error::Spec { .. }
            | Error::BackboneMismatch { .. } => FastretrainStatus::Model,
            Error::CorruptState { .. } | Error::StateVersion { .. } => FastretrainStatus::State,
            Error::Image { .. }
            | Error::Tensor { .. }
            | Error::Data { .. }
            | Error::CorruptStore { .. }
            | Error::NonFiniteFeatures { .. }
            | Error::FeatureDim { .. } => FastretrainStatus::Data,
            Error::UnknownLabel { .. } => FastretrainStatus::UnknownLabel,
            Error::InvalidArgument(_) => FastretrainStatus::InvalidArgument,
            _ => FastretrainStatus::Failed,
        };
        Failure {
            status,
            message: error.to_string(),
        }
    }
}

fn set_last_error(message: String) {
    // A message with a NUL byte (from a file name) is cut there rather than lost.
    let message = match CString::new(message) {
        Ok(c) => c,
        Err(e) => {
            let end = e.nul_position();
            CString::new(&e.into_vec()[..end]).unwrap_or_default()
        }
    };
    LAST_ERROR.with(|last| *last.borrow_mut() = Some(message));
}

/// Runs one call: clears the thread's last error, catches panics, turns failures into a
/// status and a message.
fn call(f: impl FnOnce() -> Result<(), Failure>) -> FastretrainStatus {
    LAST_ERROR.with(|last| *last.borrow_mut() = None);
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => FastretrainStatus::Ok,
        Ok(Err(failure)) => {
            set_last_error(failure.message);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(format!(
                "internal error in fastretrain (please report it): {what}"
            ));
            FastretrainStatus::Internal
        }
    }
}

/// [`call`] on a retrainer handle: refuses a null or broken one, and marks it broken if the
/// call panics.
fn with_retrainer(
    handle: *mut FastretrainRetrainer,
    f: impl FnOnce(&mut FastretrainRetrainer) -> Result<(), Failure>,
) -> FastretrainStatus {
    // SAFETY: the caller passes a handle from `fastretrain_open` not yet freed, used by one
    // thread at a time (the header's contract); null is checked.
    let Some(retrainer) = (unsafe { handle.as_mut() }) else {
        return call(|| Err(Failure::invalid("the retrainer handle is null")));
    };
    if retrainer.broken {
        return call(|| {
            Err(Failure::invalid(
                "this retrainer failed inside the library earlier; free it and open the state \
                 again",
            ))
        });
    }
    let status = call(|| f(retrainer));
    if status == FastretrainStatus::Internal {
        retrainer.broken = true;
    }
    status
}

/// A borrowed C string as a path or text; `what` names it in the message.
fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{what} is null")));
    }
    // SAFETY: non-null and, by the header's contract, NUL-terminated for the call's duration.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

fn optional_path(ptr: *const c_char, what: &str) -> Result<Option<PathBuf>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    text(ptr, what).map(|t| Some(PathBuf::from(t)))
}

/// Writes `value` through `out`, refusing a null pointer.
fn put<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what} is null")));
    }
    // SAFETY: non-null and, by the header's contract, valid for a write of one T.
    unsafe { out.write(value) };
    Ok(())
}

/// `count` images of `height` rows, `width` × `channels` bytes each row, rows `stride` bytes
/// apart (0: packed), images `height × stride` bytes apart, copied into one packed array.
fn packed_pixels(
    pixels: *const u8,
    count: usize,
    width: usize,
    height: usize,
    channels: usize,
    stride: usize,
) -> Result<Vec<u8>, Failure> {
    if pixels.is_null() {
        return Err(Failure::invalid("pixels is null"));
    }
    if count == 0 || width == 0 || height == 0 {
        return Err(Failure::invalid(format!(
            "{count} image(s) of {width}×{height}: nothing to read"
        )));
    }
    if channels != 1 && channels != 3 {
        return Err(Failure::invalid(format!(
            "channels is {channels}: images have 1 (grey) or 3 (RGB) 8-bit channels"
        )));
    }
    let row = width
        .checked_mul(channels)
        .ok_or_else(|| Failure::invalid("width × channels overflows"))?;
    let stride = if stride == 0 { row } else { stride };
    if stride < row {
        return Err(Failure::invalid(format!(
            "stride {stride} is less than a row's {row} bytes (width {width} × {channels} \
             channels)"
        )));
    }
    let total = stride
        .checked_mul(height)
        .and_then(|b| b.checked_mul(count))
        .ok_or_else(|| Failure::invalid("the image buffer's size overflows"))?;
    // SAFETY: the header's contract: `pixels` holds `count × height × stride` bytes.
    let buffer = unsafe { std::slice::from_raw_parts(pixels, total) };
    let mut packed = Vec::with_capacity(count * height * row);
    for line in buffer.chunks(stride) {
        packed.extend_from_slice(&line[..row]);
    }
    Ok(packed)
}

/// The samples of a pixel buffer with their labels (None: unlabelled), as the library's list.
#[allow(clippy::too_many_arguments)]
fn pixel_samples(
    pixels: *const u8,
    count: usize,
    width: usize,
    height: usize,
    channels: usize,
    stride: usize,
    labels: Option<Vec<String>>,
) -> Result<SampleList, Failure> {
    let packed = packed_pixels(pixels, count, width, height, channels, stride)?;
    let view = ArrayViewD::from_shape(IxDyn(&[count, height, width, channels]), &packed)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    Ok(SampleList::from_images(view, labels)?)
}

/// `count` label names from a C array of strings.
fn label_names(labels: *const *const c_char, count: usize) -> Result<Vec<String>, Failure> {
    if labels.is_null() {
        return Err(Failure::invalid("labels is null"));
    }
    // SAFETY: the header's contract: `count` label pointers.
    let names = unsafe { std::slice::from_raw_parts(labels, count) };
    names
        .iter()
        .enumerate()
        .map(|(i, &p)| text(p, &format!("labels[{i}]")).map(String::from))
        .collect()
}

/// `count` float tensor samples of one sample's `shape` (`ndim` axes), one after another in
/// `values`, with their labels (None: unlabelled), as the library's list.
fn tensor_samples(
    values: *const f32,
    count: usize,
    shape: *const usize,
    ndim: usize,
    labels: Option<Vec<String>>,
) -> Result<SampleList, Failure> {
    if values.is_null() || shape.is_null() {
        return Err(Failure::invalid("values or shape is null"));
    }
    if count == 0 || ndim == 0 || ndim > 8 {
        return Err(Failure::invalid(format!(
            "{count} tensor(s) of {ndim} axes: give at least one sample of 1 to 8 axes"
        )));
    }
    // SAFETY: the header's contract: `shape` holds `ndim` sizes.
    let shape = unsafe { std::slice::from_raw_parts(shape, ndim) };
    let mut dims = vec![count];
    dims.extend_from_slice(shape);
    let total = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n > 0 && n <= isize::MAX as usize / 4)
        .ok_or_else(|| Failure::invalid(format!("shape {dims:?} is empty or overflows")))?;
    // SAFETY: the header's contract: `values` holds `count × product(shape)` floats.
    let values = unsafe { std::slice::from_raw_parts(values, total) };
    let view = ArrayViewD::from_shape(IxDyn(&dims), values)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    Ok(SampleList::from_tensors(view, labels)?)
}

/// Folds a list of labelled samples into the statistics.
fn learn_list(r: &mut FastretrainRetrainer, samples: SampleList) -> Result<(), Failure> {
    r.inner.stream(
        DataSource::List(samples),
        &LearnOptions::default(),
        |_| {},
        |_| Ok(()),
    )?;
    Ok(())
}

/// Takes a list of labelled samples out of the statistics and refits at `lambda`.
fn forget_list(
    r: &mut FastretrainRetrainer,
    samples: SampleList,
    lambda: f64,
) -> Result<(), Failure> {
    r.inner
        .forget(DataSource::List(samples), chosen_lambda(lambda), |_| {})?;
    Ok(())
}

/// The top labels of the one sample of `samples`.
fn predict_one(
    r: &mut FastretrainRetrainer,
    samples: SampleList,
    k: usize,
    labels_out: *mut usize,
    scores_out: *mut f64,
    found: *mut usize,
) -> Result<(), Failure> {
    let samples = DataSource::List(samples)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::from)?;
    let top = r.inner.predict(&samples, k)?;
    let first = top.into_iter().next().unwrap_or_default();
    put_top(r, &first, labels_out, scores_out, k, found)
}

/// The library's version ("0.1.0"), a static string.
#[no_mangle]
pub extern "C" fn fastretrain_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on this thread, or NULL if the last call succeeded.
/// Owned by the library; valid until the next call into the library on this thread.
#[no_mangle]
pub extern "C" fn fastretrain_last_error() -> *const c_char {
    LAST_ERROR.with(|last| {
        last.borrow()
            .as_ref()
            .map_or(std::ptr::null(), |m| m.as_ptr())
    })
}

/// Opens a retrainer into `*out`: the state file `state` if it exists (its model found as the
/// CLI finds it, unless `model` names it), else a new, empty state for `model` (an ONNX file
/// with its spec beside it, or a pack). `model` and `state` may be NULL (not both); `state` is
/// where [`fastretrain_save`] writes by default. `threads`: images run side by side, 0 for
/// one per core. On failure `*out` is set to NULL.
///
/// # Safety
/// `model` and `state` are NULL or NUL-terminated strings; `out` points to writable memory.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_open(
    model: *const c_char,
    state: *const c_char,
    threads: u32,
    out: *mut *mut FastretrainRetrainer,
) -> FastretrainStatus {
    call(|| {
        put(out, std::ptr::null_mut(), "out")?;
        let model = optional_path(model, "model")?;
        let state = optional_path(state, "state")?;
        let threads = match threads as usize {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS)),
            n if n <= MAX_THREADS => n,
            n => {
                return Err(Failure::invalid(format!(
                    "threads is {n}: at most {MAX_THREADS}"
                )))
            }
        };
        let options = LoadOptions {
            threads: Some(threads),
            ..LoadOptions::default()
        };
        let inner = Retrainer::open_or_create(model.as_deref(), state.as_deref(), &options)?;
        let handle = Box::new(FastretrainRetrainer {
            inner,
            path: state,
            broken: false,
        });
        put(out, Box::into_raw(handle), "out")
    })
}

/// Frees a retrainer (unsaved changes are lost). NULL is ignored.
///
/// # Safety
/// `retrainer` is NULL or a handle from [`fastretrain_open`] not yet freed.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_free(retrainer: *mut FastretrainRetrainer) {
    if !retrainer.is_null() {
        // SAFETY: the contract above; dropping never panics across the boundary (caught).
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(unsafe { Box::from_raw(retrainer) })
        }));
    }
}

/// Folds `count` labelled images into the statistics (the head is updated by
/// [`fastretrain_refit`]). The images lie one after another in `pixels`: each `height` rows of
/// `width` pixels of `channels` (1 or 3, RGB order) bytes, rows `stride` bytes apart (0: packed,
/// `width × channels`). `labels` holds `count` NUL-terminated label names. Each call is recorded
/// as one source in the state (named by a digest of its pixels and labels: the same call made
/// again adds nothing), so learn in batches rather than one image per call.
///
/// # Safety
/// `pixels` holds `count × height × stride` bytes (`stride` as resolved above); `labels`
/// holds `count` valid strings.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn fastretrain_learn_pixels(
    retrainer: *mut FastretrainRetrainer,
    pixels: *const u8,
    count: usize,
    width: usize,
    height: usize,
    channels: usize,
    stride: usize,
    labels: *const *const c_char,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let names = label_names(labels, count)?;
        let samples = pixel_samples(pixels, count, width, height, channels, stride, Some(names))?;
        learn_list(r, samples)
    })
}

/// Folds `count` labelled float tensor samples into the statistics, for a model fed with
/// tensors (its spec's input is a tensor: audio frames, sensor windows). One sample's shape is
/// `shape[0..ndim]` (the batch axis left out; it must be the model's); the samples lie one
/// after another in `values`, C order. NaN or infinite values are refused, naming the sample.
/// Each call is one source in the state, as for [`fastretrain_learn_pixels`].
///
/// # Safety
/// `shape` holds `ndim` sizes; `values` holds `count × shape[0] × … × shape[ndim-1]` floats;
/// `labels` holds `count` valid strings.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_learn_tensor(
    retrainer: *mut FastretrainRetrainer,
    values: *const f32,
    count: usize,
    shape: *const usize,
    ndim: usize,
    labels: *const *const c_char,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let names = label_names(labels, count)?;
        let samples = tensor_samples(values, count, shape, ndim, Some(names))?;
        learn_list(r, samples)
    })
}

/// Takes `count` labelled images (laid out as for [`fastretrain_learn_pixels`]) out of the
/// statistics (exact unlearning: the images must have been learned with these labels), then
/// refits the head at `lambda` (negative or NaN: chosen by GCV). All or nothing.
///
/// # Safety
/// As [`fastretrain_learn_pixels`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn fastretrain_forget_pixels(
    retrainer: *mut FastretrainRetrainer,
    pixels: *const u8,
    count: usize,
    width: usize,
    height: usize,
    channels: usize,
    stride: usize,
    labels: *const *const c_char,
    lambda: f64,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let names = label_names(labels, count)?;
        let samples = pixel_samples(pixels, count, width, height, channels, stride, Some(names))?;
        forget_list(r, samples, lambda)
    })
}

/// Takes `count` labelled tensor samples (laid out as for [`fastretrain_learn_tensor`]) out of
/// the statistics, then refits the head at `lambda` (negative or NaN: GCV). All or nothing.
///
/// # Safety
/// As [`fastretrain_learn_tensor`].
#[no_mangle]
pub unsafe extern "C" fn fastretrain_forget_tensor(
    retrainer: *mut FastretrainRetrainer,
    values: *const f32,
    count: usize,
    shape: *const usize,
    ndim: usize,
    labels: *const *const c_char,
    lambda: f64,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let names = label_names(labels, count)?;
        let samples = tensor_samples(values, count, shape, ndim, Some(names))?;
        forget_list(r, samples, lambda)
    })
}

/// Folds the labelled samples of `source` into the statistics: a sample folder
/// (`root/<label>/*.png|jpg`, or `*.npy` tensors), an IDX images file or a `.npy` array of
/// samples (labels beside it), as `fastretrain learn
/// --data` reads it; a source learned before resumes after what it absorbed. The head is
/// updated by [`fastretrain_refit`].
///
/// # Safety
/// `source` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_learn_source(
    retrainer: *mut FastretrainRetrainer,
    source: *const c_char,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let source = open_source(source)?;
        r.inner
            .stream(source, &LearnOptions::default(), |_| {}, |_| Ok(()))?;
        Ok(())
    })
}

/// Takes the samples of `source` (a folder, IDX or `.npy` array file learned before) out of the statistics
/// (exact unlearning), then refits the head at `lambda` (negative or NaN: chosen by GCV).
/// All or nothing: on failure the state is unchanged.
///
/// # Safety
/// `source` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_forget_source(
    retrainer: *mut FastretrainRetrainer,
    source: *const c_char,
    lambda: f64,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let source = open_source(source)?;
        r.inner.forget(source, chosen_lambda(lambda), |_| {})?;
        Ok(())
    })
}

/// The data source (folder, IDX or `.npy` array file) a C string names.
fn open_source(path: *const c_char) -> Result<DataSource, Failure> {
    Ok(DataSource::open(
        Path::new(text(path, "source")?),
        &DataOptions::default(),
    )?)
}

/// λ as the C calls give it: negative or NaN means "choose by GCV".
fn chosen_lambda(lambda: f64) -> Option<f64> {
    (lambda >= 0.0).then_some(lambda)
}

/// Solves the head from the statistics at ridge `lambda`, or at the GCV choice when `lambda`
/// is negative or NaN.
///
/// # Safety
/// `retrainer` is a handle from [`fastretrain_open`].
#[no_mangle]
pub unsafe extern "C" fn fastretrain_refit(
    retrainer: *mut FastretrainRetrainer,
    lambda: f64,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        r.inner.fit(chosen_lambda(lambda))?;
        Ok(())
    })
}

/// Writes one prediction's top labels: indices into the state's labels and their scores.
fn put_top(
    r: &FastretrainRetrainer,
    top: &[fastretrain_lib::head::Scored],
    labels_out: *mut usize,
    scores_out: *mut f64,
    k: usize,
    found: *mut usize,
) -> Result<(), Failure> {
    if labels_out.is_null() || scores_out.is_null() {
        return Err(Failure::invalid("labels_out or scores_out is null"));
    }
    let names = &r.inner.head()?.labels;
    let n = top.len().min(k);
    // SAFETY: the header's contract: both arrays hold `k` elements.
    let (labels, scores) = unsafe {
        (
            std::slice::from_raw_parts_mut(labels_out, k),
            std::slice::from_raw_parts_mut(scores_out, k),
        )
    };
    for (i, scored) in top.iter().take(n).enumerate() {
        labels[i] = names
            .iter()
            .position(|name| *name == scored.label)
            .ok_or_else(|| {
                Failure::invalid(format!("label '{}' is not in the head", scored.label))
            })?;
        scores[i] = scored.score;
    }
    put(found, n, "found")
}

/// Predicts one image (layout as in [`fastretrain_learn_pixels`], `count` 1): its `k` best
/// labels, best first, as indices into the state's labels ([`fastretrain_label_name`]) in
/// `labels_out` and their scores in `scores_out` (both caller arrays of `k` elements);
/// `*found` is how many were written (k, or fewer labels if the state has fewer).
///
/// # Safety
/// `pixels` holds `height × stride` bytes; `labels_out` and `scores_out` hold `k` elements.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn fastretrain_predict_pixels(
    retrainer: *mut FastretrainRetrainer,
    pixels: *const u8,
    width: usize,
    height: usize,
    channels: usize,
    stride: usize,
    k: usize,
    labels_out: *mut usize,
    scores_out: *mut f64,
    found: *mut usize,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let samples = pixel_samples(pixels, 1, width, height, channels, stride, None)?;
        predict_one(r, samples, k, labels_out, scores_out, found)
    })
}

/// Predicts one tensor sample of shape `shape[0..ndim]` (as in [`fastretrain_learn_tensor`],
/// `count` 1); results as in [`fastretrain_predict_pixels`].
///
/// # Safety
/// `shape` holds `ndim` sizes; `values` holds their product of floats; `labels_out` and
/// `scores_out` hold `k` elements.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn fastretrain_predict_tensor(
    retrainer: *mut FastretrainRetrainer,
    values: *const f32,
    shape: *const usize,
    ndim: usize,
    k: usize,
    labels_out: *mut usize,
    scores_out: *mut f64,
    found: *mut usize,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let samples = tensor_samples(values, 1, shape, ndim, None)?;
        predict_one(r, samples, k, labels_out, scores_out, found)
    })
}

/// [`fastretrain_predict_pixels`] for a sample file: an image (PNG or JPEG, decoded by the
/// library) or a `.npy` tensor of one sample.
///
/// # Safety
/// `path` is a NUL-terminated string; `labels_out` and `scores_out` hold `k` elements.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_predict_file(
    retrainer: *mut FastretrainRetrainer,
    path: *const c_char,
    k: usize,
    labels_out: *mut usize,
    scores_out: *mut f64,
    found: *mut usize,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let prediction = r.inner.predict_file(Path::new(text(path, "path")?), k)?;
        put_top(r, &prediction.top, labels_out, scores_out, k, found)
    })
}

/// Copies the name of label `index` (as [`fastretrain_predict_pixels`] reports it) into
/// `buffer` (`capacity` bytes, NUL-terminated); `*needed` gets the bytes the name takes with
/// its NUL, so a call with a small buffer says how much to give.
///
/// # Safety
/// `buffer` holds `capacity` bytes (it may be NULL when `capacity` is 0).
#[no_mangle]
pub unsafe extern "C" fn fastretrain_label_name(
    retrainer: *mut FastretrainRetrainer,
    index: usize,
    buffer: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let names = &r.inner.head()?.labels;
        let name = names.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "label index {index} is outside the head's {} labels",
                names.len()
            ))
        })?;
        let bytes = name.as_bytes();
        put(needed, bytes.len() + 1, "needed")?;
        if capacity < bytes.len() + 1 || buffer.is_null() {
            return Err(Failure::invalid(format!(
                "the buffer holds {capacity} bytes; the name needs {}",
                bytes.len() + 1
            )));
        }
        // SAFETY: the contract above: `buffer` holds `capacity` ≥ len + 1 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len());
            buffer.add(bytes.len()).write(0);
        }
        Ok(())
    })
}

/// The state's counts, labels and λ.
///
/// # Safety
/// `info` points to writable memory.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_info(
    retrainer: *mut FastretrainRetrainer,
    info: *mut FastretrainInfo,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let state = r.inner.state();
        let head = state.head();
        put(
            info,
            FastretrainInfo {
                samples: state.stats().samples(),
                labels: state.stats().labels().len(),
                dim: r.inner.dim(),
                has_head: i32::from(head.is_some()),
                lambda: head.map_or(f64::NAN, |h| h.lambda),
            },
            "info",
        )
    })
}

/// Saves the state atomically (a crash leaves the old file or the new one, never a mix) to
/// `path`, or to the state the retrainer was opened with when `path` is NULL.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_save(
    retrainer: *mut FastretrainRetrainer,
    path: *const c_char,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let path = match optional_path(path, "path")? {
            Some(path) => path,
            None => r.path.clone().ok_or_else(|| {
                Failure::invalid("no path given and the retrainer was opened without a state file")
            })?,
        };
        r.inner.state().save(&path)?;
        Ok(())
    })
}

/// Adds the statistics of the state file `other` (another device's, same model) to this one's;
/// samples both hold are refused (they would count twice). The head is dropped: refit next.
///
/// # Safety
/// `other` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_merge(
    retrainer: *mut FastretrainRetrainer,
    other: *const c_char,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let path = PathBuf::from(text(other, "other")?);
        let other = State::load(&path)?;
        r.inner.merge(&other, &path, false)?;
        Ok(())
    })
}

/// Writes the adapted model as one standard ONNX file `out` (the backbone and the new head;
/// its spec beside it), to run in any ONNX runtime.
///
/// # Safety
/// `out` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_export(
    retrainer: *mut FastretrainRetrainer,
    out: *const c_char,
) -> FastretrainStatus {
    with_retrainer(retrainer, |r| {
        let out = PathBuf::from(text(out, "out")?);
        fastretrain_lib::export::export(r.inner.state(), r.inner.model_path(), &out)?;
        Ok(())
    })
}

/// Decodes a PNG or JPEG file with the library's decoder into `*image` (free it with
/// [`fastretrain_image_free`]); on failure `image->pixels` is NULL.
///
/// # Safety
/// `path` is a NUL-terminated string; `image` points to writable memory.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_decode_image(
    path: *const c_char,
    image: *mut FastretrainImage,
) -> FastretrainStatus {
    call(|| {
        let empty = FastretrainImage {
            pixels: std::ptr::null_mut(),
            width: 0,
            height: 0,
            channels: 0,
            stride: 0,
        };
        put(image, empty, "image")?;
        let decoded =
            fastretrain_lib::preprocess::decode_image_file(Path::new(text(path, "path")?))?;
        let stride = decoded.width * decoded.channels;
        let pixels = Box::into_raw(decoded.data.into_boxed_slice()).cast::<u8>();
        put(
            image,
            FastretrainImage {
                pixels,
                width: decoded.width,
                height: decoded.height,
                channels: decoded.channels,
                stride,
            },
            "image",
        )
    })
}

/// Frees the pixels of an image from [`fastretrain_decode_image`] and sets them to NULL; an
/// image whose pixels are NULL is left alone.
///
/// # Safety
/// `image` is NULL or an image filled by [`fastretrain_decode_image`], not yet freed.
#[no_mangle]
pub unsafe extern "C" fn fastretrain_image_free(image: *mut FastretrainImage) {
    // SAFETY: the contract above.
    let Some(image) = (unsafe { image.as_mut() }) else {
        return;
    };
    if image.pixels.is_null() {
        return;
    }
    let len = image.stride * image.height;
    // SAFETY: `pixels` came from a boxed slice of exactly `stride × height` bytes.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(image.pixels, len)) });
    image.pixels = std::ptr::null_mut();
}
