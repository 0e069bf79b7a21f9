//! Where samples come from: a folder in torchvision's ImageFolder layout
//! (`root/<label>/*.png|jpg`, or `*.npy` tensors), a pair of IDX files (the MNIST /
//! Fashion-MNIST format, optionally gzip-compressed), a `.npy` array of samples with its
//! labels, or the caller's own list. All stream: one sample in memory at a time.

mod folder;
mod idx;
mod npy;

use std::path::{Path, PathBuf};

use ndarray::ArrayViewD;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::preprocess::{Pixels, SampleInput, TensorSample};
use folder::dotted;
pub use folder::{ImageFolder, UnreadImages, read_sample_file};
pub use idx::{IdxSource, default_idx_labels};
pub use npy::{
    NpyArraySource, default_npy_labels, has_npy_magic, is_npy_name, npy_shape, read_npy_sample,
};

/// One labelled (or unlabelled) sample: an image or a tensor.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Where it came from: a file path, or `file#index` for records of IDX and array files.
    pub id: String,
    pub label: Option<String>,
    pub input: SampleInput,
}

impl Sample {
    /// The label, or an error naming the sample (learning and evaluating need one).
    pub fn require_label(&self) -> Result<&str> {
        self.label
            .as_deref()
            .ok_or_else(|| Error::InvalidArgument(format!("{}: sample has no label", self.id)))
    }
}

/// How to open a data path.
#[derive(Debug, Clone, Default)]
pub struct DataOptions {
    /// Labels file of an IDX images file or a `.npy` array; derived from its name when absent.
    pub idx_labels: Option<PathBuf>,
    /// Names for IDX label numbers, one per line; `labels.txt` beside the images by default.
    pub label_names: Option<PathBuf>,
    /// Stop after this many samples.
    pub limit: Option<usize>,
    /// Read one contiguous part of the source (after `limit`), for spreading a data set over
    /// machines: the parts' states merge into the state of the whole.
    pub shard: Option<Shard>,
}

/// Part `index` (0-based) of `count` contiguous parts of a source of n records: records
/// `index·n/count .. (index+1)·n/count`. A shard is recorded in states as its own source
/// (`<source>#shard i/k`), so each part resumes on its own and shards of one source merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// A shard `index` of `count`; refused unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::InvalidArgument(format!(
                "shard {index}/{count} does not exist: shards are numbered 0 … count − 1"
            )));
        }
        Ok(Shard { index, count })
    }

    /// `"i/k"`, as the command line writes it.
    pub fn parse(text: &str) -> Result<Self> {
        let parsed = text
            .split_once('/')
            .and_then(|(i, k)| Some((i.trim().parse().ok()?, k.trim().parse().ok()?)));
        let Some((index, count)) = parsed else {
            return Err(Error::InvalidArgument(format!(
                "a shard is written i/k (part i of k, from 0), got '{text}'"
            )));
        };
        Self::new(index, count)
    }

    /// The records of a source of `len` records that this shard holds.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        // u128: index · len cannot overflow.
        let at = |i: usize| (i as u128 * len as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

/// The mark that [`DataSource::id`] puts between a source and its shard.
const SHARD_MARK: &str = "#shard ";

/// The source a source id names, without its shard: equal for every shard of one source.
pub fn unsharded_id(id: &str) -> &str {
    id.split_once(SHARD_MARK).map_or(id, |(base, _)| base)
}

/// Whether two ids are parts of one source that cannot both be in a state: the whole and a
/// shard, or shards of different counts (their records overlap).
pub fn overlapping_sources(a: &str, b: &str) -> bool {
    // The shard count of an id ("k" of "#shard i/k"), None for a whole source.
    let count = |id: &str| {
        id.split_once(SHARD_MARK)
            .and_then(|(_, shard)| shard.split_once('/'))
            .map(|(_, k)| k.to_string())
    };
    a != b && unsharded_id(a) == unsharded_id(b) && count(a) != count(b)
}

/// A streamed data set.
pub enum DataSource {
    Folder(ImageFolder),
    Idx(IdxSource),
    /// A `.npy` array of samples with its labels.
    Npy(NpyArraySource),
    /// Samples handed over by the caller (a list of image files, images in memory).
    List(SampleList),
    /// One shard of a source: the records before it already passed over.
    Shard {
        inner: Box<DataSource>,
        shard: Shard,
        remaining: usize,
    },
}

/// Samples that come from the caller rather than a path: each is produced when it is read
/// (a file decoded, an image copied out of a caller's array), so a long list streams like a
/// folder does. Its id names it in the state's source records.
pub struct SampleList {
    id: String,
    len: usize,
    items: Box<dyn Iterator<Item = Result<Sample>> + Send>,
}

impl SampleList {
    /// `len` samples yielded by `items`; `id` names the list in the state (a digest of its
    /// content makes a re-read list resume like a re-read folder).
    pub fn new(
        id: String,
        len: usize,
        items: impl Iterator<Item = Result<Sample>> + Send + 'static,
    ) -> Self {
        SampleList {
            id,
            len,
            items: Box::new(items),
        }
    }

    /// Images held in memory as one 8-bit array, (n, height, width) grey or
    /// (n, height, width, channels) with 1 or 3 channels (a NumPy array, a camera's frames),
    /// with their labels (None: unlabelled, for predicting). Named by a digest of the pixels and
    /// labels, so the same images learned twice resume as the same folder would.
    pub fn from_images(images: ArrayViewD<'_, u8>, labels: Option<Vec<String>>) -> Result<Self> {
        let shape = images.shape().to_vec();
        let (n, height, width, channels) = match shape.as_slice() {
            [n, h, w] => (*n, *h, *w, 1),
            [n, h, w, 3] => (*n, *h, *w, 3),
            [n, h, w, 1] => (*n, *h, *w, 1),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "images must be 8-bit of shape (n, height, width) or (n, height, width, 3), \
                     got {shape:?}"
                )));
            }
        };
        if height == 0 || width == 0 {
            return Err(Error::InvalidArgument("images must not be empty".into()));
        }
        if let Some(labels) = &labels {
            if labels.len() != n {
                return Err(Error::InvalidArgument(format!(
                    "{n} images but {} labels",
                    labels.len()
                )));
            }
            // The same rule as for labels from folders and IDX files.
            for label in labels {
                check_label(label, Path::new("images"))?;
            }
        }
        let pixels: Vec<u8> = images.iter().copied().collect();
        let mut digest = Sha256::new();
        digest.update(&pixels);
        for label in labels.iter().flatten() {
            digest.update(label.as_bytes());
            digest.update([0]);
        }
        let id = format!("arrays:{:x}", digest.finalize());
        let per_image = height * width * channels;
        let items = (0..n).map(move |i| {
            Ok(Sample {
                id: format!("image {i}"),
                label: labels.as_ref().map(|l| l[i].clone()),
                input: SampleInput::Pixels(Pixels {
                    width,
                    height,
                    channels,
                    data: pixels[i * per_image..(i + 1) * per_image].to_vec(),
                }),
            })
        });
        Ok(SampleList::new(id, n, items))
    }

    /// Float tensor samples held in memory as one array of shape (n, …) (a NumPy array, an
    /// application's buffer of log-mel frames or sensor windows), with their labels (None:
    /// unlabelled, for predicting). Each sample has the shape after the first axis. Named by a
    /// digest of the values and labels, so the same samples learned twice resume.
    pub fn from_tensors(tensors: ArrayViewD<'_, f32>, labels: Option<Vec<String>>) -> Result<Self> {
        let Some((&n, shape)) = tensors.shape().split_first() else {
            return Err(Error::InvalidArgument(
                "tensors must have shape (n, …): n samples along the first axis".into(),
            ));
        };
        let shape = shape.to_vec();
        if let Some(labels) = &labels {
            if labels.len() != n {
                return Err(Error::InvalidArgument(format!(
                    "{n} tensors but {} labels",
                    labels.len()
                )));
            }
            for label in labels {
                check_label(label, Path::new("tensors"))?;
            }
        }
        let values: Vec<f32> = tensors.iter().copied().collect();
        let mut digest = Sha256::new();
        for v in &values {
            digest.update(v.to_le_bytes());
        }
        for s in &shape {
            digest.update((*s as u64).to_le_bytes());
        }
        for label in labels.iter().flatten() {
            digest.update(label.as_bytes());
            digest.update([0]);
        }
        let id = format!("tensors:{:x}", digest.finalize());
        let per_sample = shape.iter().product::<usize>();
        let items = (0..n).map(move |i| {
            Ok(Sample {
                id: format!("tensor {i}"),
                label: labels.as_ref().map(|l| l[i].clone()),
                input: SampleInput::Tensor(TensorSample {
                    shape: shape.clone(),
                    data: values[i * per_sample..(i + 1) * per_sample].to_vec(),
                }),
            })
        });
        Ok(SampleList::new(id, n, items))
    }

    /// Sample files (images, or `.npy` tensors) with their labels (None: unlabelled, for
    /// predicting), named by a digest of
    /// the paths and labels (the same list read again resumes as a folder would).
    pub fn from_files(paths: Vec<PathBuf>, labels: Option<Vec<String>>) -> Result<Self> {
        if let Some(labels) = &labels
            && labels.len() != paths.len()
        {
            return Err(Error::InvalidArgument(format!(
                "{} paths but {} labels",
                paths.len(),
                labels.len()
            )));
        }
        let mut digest = Sha256::new();
        for path in &paths {
            digest.update(path.display().to_string().as_bytes());
            digest.update([0]);
        }
        for label in labels.iter().flatten() {
            digest.update(label.as_bytes());
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
        Self::files(id, files)
    }

    /// Sample files (images, or `.npy` tensors) with their labels (None: unlabelled, for
    /// predicting).
    pub fn files(id: String, files: Vec<(PathBuf, Option<String>)>) -> Result<Self> {
        for (path, label) in &files {
            if let Some(label) = label {
                check_label(label, path)?;
            }
        }
        let len = files.len();
        let items = files.into_iter().map(|(path, label)| {
            Ok(Sample {
                id: path.display().to_string(),
                label,
                input: read_sample_file(&path)?,
            })
        });
        Ok(Self::new(id, len, items))
    }
}

impl DataSource {
    /// A folder is read as ImageFolder; a file as a `.npy` array of samples (by its content)
    /// or IDX images.
    pub fn open(path: &Path, options: &DataOptions) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let source = if meta.is_dir() {
            DataSource::Folder(ImageFolder::open(path, options.limit)?)
        } else if has_npy_magic(path) {
            DataSource::Npy(NpyArraySource::open(path, options)?)
        } else {
            DataSource::Idx(IdxSource::open(path, options)?)
        };
        match options.shard {
            Some(shard) => source.into_shard(shard),
            None => Ok(source),
        }
    }

    /// This source's part `shard` (its earlier records passed over now).
    pub fn into_shard(mut self, shard: Shard) -> Result<Self> {
        let range = shard.range(self.len());
        self.skip_records(range.start)?;
        Ok(DataSource::Shard {
            inner: Box::new(self),
            shard,
            remaining: range.len(),
        })
    }

    /// Number of samples that will be yielded.
    pub fn len(&self) -> usize {
        match self {
            DataSource::Folder(f) => f.files.len(),
            DataSource::Idx(i) => i.count,
            DataSource::Npy(a) => a.count,
            DataSource::List(l) => l.len,
            DataSource::Shard { remaining, .. } => *remaining,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the source leaves out and a user should hear about: one line per label of an
    /// image folder whose files include types the decoders do not read.
    pub fn warnings(&self) -> Vec<String> {
        match self {
            DataSource::Folder(f) => f
                .unread()
                .iter()
                .map(|u| {
                    format!(
                        "{}: label '{}': {} image(s) left out, of types this build does not \
                         decode ({}); convert them to PNG or JPEG to learn from them",
                        f.root.display(),
                        u.label,
                        u.count,
                        dotted(&u.types)
                    )
                })
                .collect(),
            DataSource::Shard { inner, .. } => inner.warnings(),
            DataSource::Idx(_) | DataSource::Npy(_) | DataSource::List(_) => Vec::new(),
        }
    }

    /// A stable name for this source, recorded in states: its canonical path.
    pub fn id(&self) -> String {
        let path = match self {
            DataSource::Folder(f) => &f.root,
            DataSource::Idx(i) => &i.images_path,
            DataSource::Npy(a) => &a.path,
            DataSource::List(l) => return l.id.clone(),
            DataSource::Shard { inner, shard, .. } => {
                return format!("{}{SHARD_MARK}{}/{}", inner.id(), shard.index, shard.count);
            }
        };
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string()
    }

    /// Passes over the next `n` records without decoding them (resuming a source).
    pub fn skip_records(&mut self, n: usize) -> Result<()> {
        match self {
            DataSource::Folder(f) => {
                f.next = (f.next + n).min(f.files.len());
                Ok(())
            }
            DataSource::Idx(i) => i.skip_records(n),
            DataSource::Npy(a) => a.skip_records(n),
            DataSource::List(l) => {
                // A list has no index to seek: its skipped items are produced and dropped.
                for _ in 0..n {
                    l.items.next();
                }
                Ok(())
            }
            DataSource::Shard {
                inner, remaining, ..
            } => {
                let n = n.min(*remaining);
                *remaining -= n;
                inner.skip_records(n)
            }
        }
    }
}

impl Iterator for DataSource {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            DataSource::Folder(f) => f.next(),
            DataSource::Idx(i) => i.next(),
            DataSource::Npy(a) => a.next(),
            DataSource::List(l) => l.items.next(),
            DataSource::Shard {
                inner, remaining, ..
            } => {
                *remaining = remaining.checked_sub(1)?;
                inner.next()
            }
        }
    }
}

/// Labels are free text (unicode, separators) but must be printable: no control characters,
/// not empty, at most 256 bytes.
pub fn check_label(label: &str, path: &Path) -> Result<()> {
    if label.is_empty() || label.len() > 256 || label.chars().any(char::is_control) {
        return Err(Error::data(
            path,
            format!(
                "label {label:?} is not usable: labels must be 1 to 256 bytes without control characters"
            ),
        ));
    }
    Ok(())
}

/// A label names file: one name per line (label number = line number, from 0), blank lines
/// ignored.
pub fn read_label_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(Error::data(path, "label names file is empty"));
    }
    for name in &names {
        check_label(name, path)?;
    }
    Ok(names)
}
