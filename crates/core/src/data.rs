//! Where samples come from: an image folder in torchvision's ImageFolder layout
//! (`root/<label>/*.png|jpg`) or a pair of IDX files (the MNIST / Fashion-MNIST format,
//! optionally gzip-compressed). Both stream: one image in memory at a time.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::error::{Error, Result};
use crate::preprocess::{Pixels, decode_image_file};

/// One labelled (or unlabelled) image.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Where it came from: a file path, or `file#index` for IDX records.
    pub id: String,
    pub label: Option<String>,
    pub pixels: Pixels,
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
    /// IDX labels file; derived from the images file name when absent.
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

    /// Image files with their labels (None: unlabelled, for predicting).
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
                pixels: decode_image_file(&path)?,
            })
        });
        Ok(Self::new(id, len, items))
    }
}

impl DataSource {
    /// A folder is read as ImageFolder; a file as IDX images.
    pub fn open(path: &Path, options: &DataOptions) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let source = if meta.is_dir() {
            DataSource::Folder(ImageFolder::open(path, options.limit)?)
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
            DataSource::Idx(_) | DataSource::List(_) => Vec::new(),
        }
    }

    /// A stable name for this source, recorded in states: its canonical path.
    pub fn id(&self) -> String {
        let path = match self {
            DataSource::Folder(f) => &f.root,
            DataSource::Idx(i) => &i.images_path,
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

    /// Passes over the next `n` records without decoding images (resuming a source).
    pub fn skip_records(&mut self, n: usize) -> Result<()> {
        match self {
            DataSource::Folder(f) => {
                f.next = (f.next + n).min(f.files.len());
                Ok(())
            }
            DataSource::Idx(i) => i.skip_records(n),
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

/// Image types people keep photos in (cameras write BMP, phones WebP/HEIC) that the built-in
/// decoders do not read: an image folder counts them, so none is left out without a word.
const UNREAD_IMAGE_TYPES: [&str; 9] = [
    "bmp", "webp", "gif", "tif", "tiff", "heic", "heif", "avif", "jxl",
];

/// The lower-cased extension of `path` if it names an image type the decoders do not read.
fn unread_image_type(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    UNREAD_IMAGE_TYPES.contains(&ext.as_str()).then_some(ext)
}

/// Extensions as a user writes them: ".bmp, .webp".
fn dotted(types: &[String]) -> String {
    types
        .iter()
        .map(|t| format!(".{t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        .unwrap_or(false)
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

/// `root/<label>/*.png|jpg|jpeg`, labels and files in sorted order.
pub struct ImageFolder {
    root: PathBuf,
    files: Vec<(PathBuf, String)>,
    next: usize,
    /// Per label, the image files of types the decoders do not read (left out).
    unread: Vec<UnreadImages>,
}

/// Image files of one label that an [`ImageFolder`] leaves out: types it does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadImages {
    pub label: String,
    pub count: usize,
    /// Their extensions, lower case, each once (sorted).
    pub types: Vec<String>,
}

impl ImageFolder {
    pub fn open(root: &Path, limit: Option<usize>) -> Result<Self> {
        let read_dir = |dir: &Path| -> Result<Vec<PathBuf>> {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
                .collect::<Result<Vec<_>>>()?;
            entries.sort();
            Ok(entries)
        };
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for class_dir in read_dir(root)? {
            if !class_dir.is_dir() {
                continue;
            }
            let label = class_dir
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::data(&class_dir, "folder name is not valid UTF-8"))?
                .to_string();
            check_label(&label, &class_dir)?;
            let (mut readable, mut unread) = (0usize, Vec::new());
            for file in read_dir(&class_dir)? {
                if !file.is_file() {
                    continue;
                }
                if is_image_name(&file) {
                    files.push((file, label.clone()));
                    readable += 1;
                } else if let Some(ext) = unread_image_type(&file) {
                    unread.push(ext);
                }
            }
            if unread.is_empty() {
                continue;
            }
            let count = unread.len();
            unread.sort();
            unread.dedup();
            if readable == 0 {
                // Leaving the label out would drop a class without a word.
                return Err(Error::data(
                    &class_dir,
                    format!(
                        "label '{label}' has {count} image(s), all of types this build does not \
                         decode ({}); convert them to PNG or JPEG, or move the folder out",
                        dotted(&unread)
                    ),
                ));
            }
            skipped.push(UnreadImages {
                label,
                count,
                types: unread,
            });
        }
        if files.is_empty() {
            return Err(Error::data(
                root,
                "no images found (expected root/<label>/*.png|jpg|jpeg)",
            ));
        }
        if let Some(limit) = limit {
            files.truncate(limit);
        }
        Ok(ImageFolder {
            root: root.into(),
            files,
            next: 0,
            unread: skipped,
        })
    }

    /// Per label, the image files left out because their type is not decoded.
    pub fn unread(&self) -> &[UnreadImages] {
        &self.unread
    }
}

impl Iterator for ImageFolder {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Self::Item> {
        let (path, label) = self.files.get(self.next)?.clone();
        self.next += 1;
        Some(decode_image_file(&path).map(|pixels| Sample {
            id: path.display().to_string(),
            label: Some(label),
            pixels,
        }))
    }
}

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
    images_path: PathBuf,
    labels_path: PathBuf,
    images: Box<dyn Read + Send>,
    labels: Box<dyn Read + Send>,
    names: Option<Vec<String>>,
    rows: usize,
    cols: usize,
    count: usize,
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
                    "cannot tell which labels file goes with these IDX images; pass --labels",
                )
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

    fn skip_records(&mut self, n: usize) -> Result<()> {
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
            pixels: Pixels::grey(self.cols, self.rows, data),
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
