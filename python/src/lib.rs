//! `fastretrain._core`: the Python face of the library. Two classes: `Statistics` (the exact
//! streaming ridge statistics on feature arrays, under `fastretrain.RidgeHead`) and `Retrainer`
//! (a model's state: learn, fit, predict, evaluate, forget, merge, export). Heavy work runs with
//! the interpreter released; library errors become `fastretrain.Error` subclasses carrying the
//! library's message. The pure-Python layer (`fastretrain/__init__.py`) adds the scikit-learn
//! estimator and argument conveniences.

mod retrainer;
mod samples;
mod statistics;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use fastretrain::Error as LibError;
use fastretrain::solver::default_lambda_grid;

use retrainer::Retrainer;
use statistics::Statistics;

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
pub(crate) fn to_py(e: LibError) -> PyErr {
    let message = e.to_string();
    // An error caused by a setting is raised as what it is (the keyword names the setting).
    match e.cause() {
        LibError::Io { .. }
        | LibError::Image { .. }
        | LibError::Tensor { .. }
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

pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| Error::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

pub(crate) fn postcard_bytes(value: &impl serde::Serialize) -> PyResult<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::new_err(e.to_string()))
}

pub(crate) fn postcard_from<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> PyResult<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| StateError::new_err(format!("statistics bytes are not usable: {e}")))
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
