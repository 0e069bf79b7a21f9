//! Samples handed in from Python: NumPy image arrays, lists of files with labels, folders and
//! IDX files, as the library's sample lists and data sources.

use std::path::PathBuf;

use numpy::PyReadonlyArrayDyn;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use fastretrain::data::{DataOptions, DataSource, Sample, SampleList};

use crate::to_py;

/// Where samples come from: exactly one of a path (folder or IDX), image files, or arrays.
pub(crate) fn source_of(
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
        (None, Some(paths), None) => Ok(DataSource::List(
            SampleList::from_files(paths, labels).map_err(to_py)?,
        )),
        (None, None, Some(images)) => Ok(DataSource::List(
            SampleList::from_images(images.as_array(), labels).map_err(to_py)?,
        )),
        _ => Err(PyValueError::new_err(
            "give exactly one of: a source path, paths=[image files], images=uint8 array",
        )),
    }
}

/// The samples of a source, decoded (for features / scores / predict).
pub(crate) fn samples_of(source: DataSource) -> PyResult<Vec<Sample>> {
    source.collect::<Result<Vec<_>, _>>().map_err(to_py)
}
