//! Samples handed in from Python: NumPy image arrays, float tensor arrays, lists of files with
//! labels, folders, IDX and `.npy` array files, as the library's sample lists and data sources.

use std::path::PathBuf;

use numpy::{PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use fastretrain::data::{DataOptions, DataSource, Sample, SampleList};

use crate::to_py;

/// Where samples come from: exactly one of a path (folder, IDX or `.npy` array file), sample
/// files, image arrays or tensor arrays.
pub(crate) fn source_of(
    source: Option<PathBuf>,
    paths: Option<Vec<PathBuf>>,
    images: Option<PyReadonlyArrayDyn<'_, u8>>,
    tensors: Option<Bound<'_, PyAny>>,
    labels: Option<Vec<String>>,
    limit: Option<usize>,
) -> PyResult<DataSource> {
    if let Some(tensors) = tensors {
        if source.is_some() || paths.is_some() || images.is_some() {
            return Err(PyValueError::new_err(
                "give exactly one of: a source path, paths=[sample files], images=uint8 array, \
                 tensors=float32 array",
            ));
        }
        return tensor_source(&tensors, labels);
    }
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
        (None, Some(paths), None) => Ok(DataSource::List(
            SampleList::from_files(paths, labels).map_err(to_py)?,
        )),
        (None, None, Some(images)) => Ok(DataSource::List(
            SampleList::from_images(images.as_array(), labels).map_err(to_py)?,
        )),
        _ => Err(PyValueError::new_err(
            "give exactly one of: a source path, paths=[sample files], images=uint8 array, \
             tensors=float32 array",
        )),
    }
}

/// Float tensor samples from a NumPy array of shape (n, …): float32 as it is, float64
/// converted to float32 (what the model takes); any other dtype is refused.
fn tensor_source(tensors: &Bound<'_, PyAny>, labels: Option<Vec<String>>) -> PyResult<DataSource> {
    let list = if let Ok(array) = tensors.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        SampleList::from_tensors(array.as_array(), labels)
    } else if let Ok(array) = tensors.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        let converted = array.as_array().mapv(|v| v as f32);
        SampleList::from_tensors(converted.view(), labels)
    } else {
        let dtype = tensors
            .cast::<PyUntypedArray>()
            .map(|a| a.dtype().to_string())
            .unwrap_or_else(|_| tensors.get_type().to_string());
        return Err(PyTypeError::new_err(format!(
            "tensors must be a float32 NumPy array of shape (n, …), got {dtype}"
        )));
    };
    Ok(DataSource::List(list.map_err(to_py)?))
}

/// The samples of a source, decoded (for features / scores / predict).
pub(crate) fn samples_of(source: DataSource) -> PyResult<Vec<Sample>> {
    source.collect::<Result<Vec<_>, _>>().map_err(to_py)
}
