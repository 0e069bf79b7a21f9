//! Samples handed in from Python: NumPy image arrays, lists of files with labels, folders and
//! IDX files, as the library's sample lists and data sources.

use std::path::{Path, PathBuf};

use numpy::PyReadonlyArrayDyn;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sha2::{Digest, Sha256};

use fastretrain::data::{DataOptions, DataSource, Sample, SampleList, check_label};
use fastretrain::preprocess::Pixels;

use crate::to_py;

/// Images from NumPy: uint8, (n, h, w) grey or (n, h, w, 3) RGB.
pub(crate) fn images_of(
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
pub(crate) fn image_list(
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

pub(crate) fn file_list(paths: Vec<PathBuf>, labels: Option<Vec<String>>) -> PyResult<SampleList> {
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
        (None, Some(paths), None) => Ok(DataSource::List(file_list(paths, labels)?)),
        (None, None, Some(images)) => Ok(DataSource::List(image_list(&images, labels)?.0)),
        _ => Err(PyValueError::new_err(
            "give exactly one of: a source path, paths=[image files], images=uint8 array",
        )),
    }
}

/// The samples of a source, decoded (for features / scores / predict).
pub(crate) fn samples_of(source: DataSource) -> PyResult<Vec<Sample>> {
    source.collect::<Result<Vec<_>, _>>().map_err(to_py)
}
