//! The library's one error type. Every message names the file (or input) and what to do about
//! it, in the library's terms: an error caused by a setting carries the setting's name
//! ([`Error::Setting`]), and a front end (the CLI, Python) adds how its users set it.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // The cause is part of the message (not a `#[source]`), so that it is printed once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: cannot read image: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    /// A tensor sample that cannot be used (an unreadable `.npy`, a wrong shape or dtype,
    /// NaN or infinite values); `path` names the file and, for arrays, the sample's index.
    #[error("{}: cannot use tensor sample: {reason}", path.display())]
    Tensor { path: PathBuf, reason: String },
    #[error("{}: not a usable ONNX model: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    #[error("model file not found: {}{}", path.display(),
        recorded_in.as_ref().map(|s| format!(" (recorded in {})", s.display())).unwrap_or_default())]
    ModelNotFound {
        path: PathBuf,
        /// The state that named it, if any.
        recorded_in: Option<PathBuf>,
    },
    #[error(
        "{}: no dense head found (no Gemm/MatMul whose weight is an initializer); \
         name the feature tensor to read explicitly",
        path.display()
    )]
    NoDenseHead { path: PathBuf },
    #[error("{}: bad model spec: {reason}", path.display())]
    Spec { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Data { path: PathBuf, reason: String },
    #[error("{}: state file is damaged ({reason}); nothing was changed", path.display())]
    CorruptState { path: PathBuf, reason: String },
    #[error("{}: feature store is not usable ({reason}); nothing was changed", path.display())]
    CorruptStore { path: PathBuf, reason: String },
    #[error(
        "{}: state file format version {found} is newer than this build reads ({supported}); \
         upgrade fastretrain",
        path.display()
    )]
    StateVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{}: state was learned with another backbone ({state}) but the model is {model}; \
         use the same model file or a new state",
        path.display()
    )]
    BackboneMismatch {
        path: PathBuf,
        state: String,
        model: String,
    },
    #[error("{what}: features contain NaN or infinite values; the batch was rejected")]
    NonFiniteFeatures { what: String },
    #[error("{what}: expected {expected} features per sample, got {got}")]
    FeatureDim {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("label '{label}' is not known to this state (known: {known})")]
    UnknownLabel { label: String, known: String },
    #[error(
        "{}: another fastretrain process is writing this state; try again when it has finished",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("{0}")]
    Solver(String),
    /// `error`, caused by the value of the setting `setting` (named as the CLI's flag is,
    /// without dashes: `lambda`, `decay`, `labels`, …).
    #[error("{error}")]
    Setting {
        setting: &'static str,
        error: Box<Error>,
    },
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// This error, marked as caused by the setting `setting` (see [`Error::Setting`]).
    pub fn for_setting(self, setting: &'static str) -> Self {
        Error::Setting {
            setting,
            error: Box::new(self),
        }
    }

    /// The error itself, without the setting that caused it.
    pub fn cause(&self) -> &Error {
        match self {
            Error::Setting { error, .. } => error.cause(),
            other => other,
        }
    }

    /// Whether this is one sample that cannot be read or used (an undecodable image, a bad
    /// tensor), which `--skip-bad` passes over, rather than a failure of the whole run.
    pub fn is_bad_sample(&self) -> bool {
        matches!(self, Error::Image { .. } | Error::Tensor { .. })
    }

    /// Unusable data at `path` (a sample file, a label list, a data folder), with the reason.
    pub fn data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
