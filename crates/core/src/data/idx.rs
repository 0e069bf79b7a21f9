//! A pair of IDX files (the MNIST / Fashion-MNIST format, optionally gzip-compressed): images
//! and labels read one sample at a time.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{DataOptions, Sample, read_label_names};
use crate::error::{Error, Result};
use crate::preprocess::{Pixels, SampleInput};

fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = BufReader::new(file);
    Ok(if path.extension().and_then(|e| e.to_str()) == Some("gz") {
        Box::new(BufReader::new(GzDecoder::new(reader)))
    } else {
        Box::new(reader)
    })
}

/// Reads an IDX header: the element type must be unsigned bytes; returns the dimensions.
fn read_idx_header(reader: &mut dyn Read, path: &Path, ndim: u8) -> Result<Vec<usize>> {
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|e| Error::data(path, format!("not an IDX file: cannot read header ({e})")))?;
    if magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != ndim {
        return Err(Error::data(
            path,
            format!(
                "not an IDX file of unsigned bytes with {ndim} dimension(s) (magic \
                 {:02x}{:02x}{:02x}{:02x}); data is an image folder (root/<label>/*.png|jpg) or \
                 an IDX images file (MNIST format, .gz allowed)",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    (0..ndim)
        .map(|_| {
            let mut d = [0u8; 4];
            reader
                .read_exact(&mut d)
                .map_err(|_| Error::data(path, "IDX header is truncated"))?;
            Ok(u32::from_be_bytes(d) as usize)
        })
        .collect()
}

/// The labels file that goes with an images file: `*-images-idx3-ubyte*` → `*-labels-idx1-ubyte*`.
pub fn default_idx_labels(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    name.contains("images-idx3")
        .then(|| images.with_file_name(name.replace("images-idx3", "labels-idx1")))
}

/// IDX images + labels, read in step.
pub struct IdxSource {
    pub(super) images_path: PathBuf,
    labels_path: PathBuf,
    images: Box<dyn Read + Send>,
    labels: Box<dyn Read + Send>,
    names: Option<Vec<String>>,
    rows: usize,
    cols: usize,
    pub(super) count: usize,
    next: usize,
    failed: bool,
}

impl IdxSource {
    pub fn open(images_path: &Path, options: &DataOptions) -> Result<Self> {
        // The images file is read first: a file that is not IDX at all (a CSV, a photo) is
        // reported as such, not as a missing labels file.
        let mut images = open_maybe_gz(images_path)?;
        let dims = read_idx_header(images.as_mut(), images_path, 3)?;
        let labels_path = match &options.idx_labels {
            Some(p) => p.clone(),
            None => default_idx_labels(images_path).ok_or_else(|| {
                Error::data(
                    images_path,
                    "cannot tell which labels file goes with these IDX images; name it",
                )
                .for_setting("labels")
            })?,
        };
        let mut labels = open_maybe_gz(&labels_path)?;
        let (n, rows, cols) = (dims[0], dims[1], dims[2]);
        let n_labels = read_idx_header(labels.as_mut(), &labels_path, 1)?[0];
        if n != n_labels {
            return Err(Error::data(
                &labels_path,
                format!("holds {n_labels} labels but the images file holds {n} images"),
            ));
        }
        if rows == 0 || cols == 0 || (rows as u64) * (cols as u64) > crate::preprocess::MAX_PIXELS {
            return Err(Error::data(
                images_path,
                format!("image size {rows}×{cols} in the header is not plausible"),
            ));
        }
        let names_path = options.label_names.clone().or_else(|| {
            let p = images_path.with_file_name("labels.txt");
            p.is_file().then_some(p)
        });
        let names = names_path.map(|p| read_label_names(&p)).transpose()?;
        Ok(IdxSource {
            images_path: images_path.into(),
            labels_path,
            images,
            labels,
            names,
            rows,
            cols,
            count: options.limit.map_or(n, |l| l.min(n)),
            next: 0,
            failed: false,
        })
    }

    pub(super) fn skip_records(&mut self, n: usize) -> Result<()> {
        let n = n.min(self.count - self.next);
        let skip_bytes = |reader: &mut Box<dyn Read + Send>, bytes: u64, path: &Path| {
            let copied = std::io::copy(&mut reader.take(bytes), &mut std::io::sink())
                .map_err(|e| Error::io(path, e))?;
            if copied < bytes {
                return Err(Error::data(
                    path,
                    "file ends before the records already learned",
                ));
            }
            Ok(())
        };
        skip_bytes(&mut self.labels, n as u64, &self.labels_path)?;
        skip_bytes(
            &mut self.images,
            (n * self.rows * self.cols) as u64,
            &self.images_path,
        )?;
        self.next += n;
        Ok(())
    }

    fn read_one(&mut self) -> Result<Sample> {
        let index = self.next;
        let mut label = [0u8; 1];
        self.labels.read_exact(&mut label).map_err(|e| {
            Error::data(
                &self.labels_path,
                format!("ends after {index} of {} labels ({e})", self.count),
            )
        })?;
        let mut data = vec![0u8; self.rows * self.cols];
        self.images.read_exact(&mut data).map_err(|e| {
            Error::data(
                &self.images_path,
                format!("ends after {index} of {} images ({e})", self.count),
            )
        })?;
        let label = match &self.names {
            Some(names) => names.get(label[0] as usize).cloned().ok_or_else(|| {
                Error::data(
                    &self.labels_path,
                    format!(
                        "record {index} has label {} but only {} names are given",
                        label[0],
                        names.len()
                    ),
                )
            })?,
            None => label[0].to_string(),
        };
        Ok(Sample {
            id: format!("{}#{index}", self.images_path.display()),
            label: Some(label),
            input: SampleInput::Pixels(Pixels::grey(self.cols, self.rows, data)),
        })
    }
}

impl Iterator for IdxSource {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.count {
            return None;
        }
        let sample = self.read_one();
        self.next += 1;
        self.failed = sample.is_err();
        Some(sample)
    }
}
