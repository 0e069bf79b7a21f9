//! NumPy `.npy` files: one tensor sample per file (in a folder `root/<label>/*.npy`), or one
//! array of N samples (first axis) with a labels file beside it, read one sample at a time so
//! memory does not grow with N. Float arrays (float16/32/64, little-endian, C order) become
//! f32 values; labels are integers (`.npy`) or text, one per line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{DataOptions, Sample, check_label, read_label_names};
use crate::error::{Error, Result};
use crate::preprocess::{SampleInput, TensorSample};
use crate::spec::MAX_TENSOR_VALUES;

/// The element types a `.npy` file may hold here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    Float(usize),
    Int(usize),
    Unsigned(usize),
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::Float(n) | Dtype::Int(n) | Dtype::Unsigned(n) => n,
        }
    }
}

/// What a `.npy` header says: element type, shape, and where the data begins.
#[derive(Debug, Clone)]
struct Header {
    dtype: Dtype,
    descr: String,
    shape: Vec<usize>,
    data_offset: u64,
}

/// Whether `path` is named like a NumPy array file.
pub fn is_npy_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Whether the file starts with the `.npy` magic (a data path is opened by its content).
pub fn has_npy_magic(path: &Path) -> bool {
    let mut magic = [0u8; 6];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"\x93NUMPY")
}

fn read_header(reader: &mut impl Read, path: &Path) -> Result<Header> {
    let bad = |reason: String| Error::Tensor {
        path: path.into(),
        reason,
    };
    let mut start = [0u8; 8];
    reader
        .read_exact(&mut start)
        .map_err(|e| bad(format!("not a .npy file: cannot read its header ({e})")))?;
    if &start[..6] != b"\x93NUMPY" {
        return Err(bad(
            "not a .npy file (no \\x93NUMPY magic); save arrays with \
                        numpy.save"
                .into(),
        ));
    }
    let (len_bytes, prefix) = match start[6] {
        1 => (2, 10u64),
        2 | 3 => (4, 12u64),
        v => {
            return Err(bad(format!(
                ".npy format version {v} is not known (1 to 3 are)"
            )));
        }
    };
    let mut len = [0u8; 4];
    reader
        .read_exact(&mut len[..len_bytes])
        .map_err(|_| bad(".npy header is truncated".into()))?;
    let header_len = u32::from_le_bytes(len) as usize;
    if header_len > 1 << 20 {
        return Err(bad(format!(
            ".npy header of {header_len} bytes is not plausible"
        )));
    }
    let mut text = vec![0u8; header_len];
    reader
        .read_exact(&mut text)
        .map_err(|_| bad(".npy header is truncated".into()))?;
    let text = String::from_utf8_lossy(&text);
    let descr = dict_value(&text, "descr")
        .and_then(|v| v.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| bad(format!("cannot read the element type in header {text:?}")))?
        .to_string();
    let fortran = dict_value(&text, "fortran_order")
        .ok_or_else(|| bad(format!("cannot read fortran_order in header {text:?}")))?;
    if fortran.starts_with("True") {
        return Err(bad(
            "the array is stored in Fortran order; save it in C order: \
                        numpy.save(path, numpy.ascontiguousarray(x))"
                .into(),
        ));
    }
    let shape = dict_value(&text, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .and_then(|dims| {
            dims.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| d.trim_end_matches('L').parse::<usize>().ok())
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| bad(format!("cannot read the shape in header {text:?}")))?;
    let dtype = parse_descr(&descr).map_err(bad)?;
    Ok(Header {
        dtype,
        descr,
        shape,
        data_offset: prefix + header_len as u64,
    })
}

/// The text after `'key':` in the header's dict literal.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(&format!("'{key}'"))?;
    let rest = text[at + key.len() + 2..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

fn parse_descr(descr: &str) -> std::result::Result<Dtype, String> {
    let (order, code) = descr.split_at(descr.len().min(1));
    if order == ">" {
        return Err(format!(
            "element type '{descr}' is big-endian; save it as little-endian: x.astype('<f4')"
        ));
    }
    if !matches!(order, "<" | "|" | "=") {
        return Err(format!("element type '{descr}' is not a plain number type"));
    }
    let size = code.get(1..).and_then(|n| n.parse::<usize>().ok());
    Ok(match (code.chars().next(), size) {
        (Some('f'), Some(n @ (2 | 4 | 8))) => Dtype::Float(n),
        (Some('i'), Some(n @ (1 | 2 | 4 | 8))) => Dtype::Int(n),
        (Some('u'), Some(n @ (1 | 2 | 4 | 8))) => Dtype::Unsigned(n),
        _ => {
            return Err(format!(
                "element type '{descr}' is not a float16/32/64 or integer type"
            ));
        }
    })
}

/// `bytes` of float elements of `dtype` as f32 values (float64 rounded, float16 widened).
fn floats(bytes: &[u8], dtype: Dtype, out: &mut Vec<f32>) {
    out.clear();
    match dtype {
        Dtype::Float(2) => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        Dtype::Float(4) => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        Dtype::Float(8) => out.extend(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")) as f32),
        ),
        _ => unreachable!("checked to be a float type"),
    }
}

/// An integer element as i128 (every int and uint type fits).
fn integer(bytes: &[u8], dtype: Dtype) -> i128 {
    let mut wide = [0u8; 16];
    wide[..bytes.len()].copy_from_slice(bytes);
    match dtype {
        Dtype::Unsigned(_) => u128::from_le_bytes(wide) as i128,
        Dtype::Int(n) => {
            // Sign-extend from n bytes.
            let shift = 128 - 8 * n as u32;
            (i128::from_le_bytes(wide) << shift) >> shift
        }
        Dtype::Float(_) => unreachable!("checked to be an integer type"),
    }
}

fn require_float(header: &Header, path: &Path) -> Result<()> {
    match header.dtype {
        Dtype::Float(_) => Ok(()),
        _ => Err(Error::Tensor {
            path: path.into(),
            reason: format!(
                "element type '{}' is not a float type; samples are float16/32/64 \
                 (x.astype('float32'))",
                header.descr
            ),
        }),
    }
}

/// The values of `shape`, refused over [`MAX_TENSOR_VALUES`].
fn values_in(shape: &[usize], path: &Path) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR_VALUES)
        .ok_or_else(|| Error::Tensor {
            path: path.into(),
            reason: format!("shape {shape:?} is over {MAX_TENSOR_VALUES} values per sample"),
        })
}

/// The shape stored in a `.npy` file's header (to tell one sample from an array of them).
pub fn npy_shape(path: &Path) -> Result<Vec<usize>> {
    let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    Ok(read_header(&mut reader, path)?.shape)
}

/// One `.npy` file as one tensor sample: its whole array, shape as stored.
pub fn read_npy_sample(path: &Path) -> Result<TensorSample> {
    let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let header = read_header(&mut reader, path)?;
    require_float(&header, path)?;
    let n = values_in(&header.shape, path)?;
    let mut bytes = vec![0u8; n * header.dtype.size()];
    let read = read_fully(&mut reader, &mut bytes).map_err(|e| Error::io(path, e))?;
    if read < bytes.len() {
        return Err(Error::Tensor {
            path: path.into(),
            reason: format!(
                "file is truncated: {} of the {n} values of shape {:?} are there",
                read / header.dtype.size(),
                header.shape
            ),
        });
    }
    let mut data = Vec::new();
    floats(&bytes, header.dtype, &mut data);
    Ok(TensorSample {
        shape: header.shape,
        data,
    })
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_fully(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The labels file that goes with an array file: `x.npy` → `x-labels.npy` or `x-labels.txt`,
/// whichever exists.
pub fn default_npy_labels(array: &Path) -> Option<PathBuf> {
    let stem = array.file_stem()?.to_str()?;
    ["npy", "txt"]
        .iter()
        .map(|ext| array.with_file_name(format!("{stem}-labels.{ext}")))
        .find(|p| p.is_file())
}

/// The labels of an array's samples, read in step with them.
enum LabelReader {
    /// An integer `.npy` of shape (N,), numbers named by `names` when given.
    Numbers {
        reader: BufReader<File>,
        dtype: Dtype,
        names: Option<Vec<String>>,
    },
    /// A text file, one label per line.
    Lines(std::io::Lines<BufReader<File>>),
}

/// One `.npy` array of N samples (shape (N, …)) with its labels: samples read one at a time.
pub struct NpyArraySource {
    pub(super) path: PathBuf,
    labels_path: PathBuf,
    reader: BufReader<File>,
    /// None: unlabelled samples, for predicting.
    labels: Option<LabelReader>,
    header: Header,
    sample_shape: Vec<usize>,
    sample_bytes: usize,
    pub(super) count: usize,
    next: usize,
    failed: bool,
}

impl NpyArraySource {
    /// The array at `path` with its labels (named by `options.idx_labels`, or found beside it).
    pub fn open(path: &Path, options: &DataOptions) -> Result<Self> {
        Self::open_with(path, options, true)
    }

    /// The array's samples without labels, for predicting.
    pub fn open_unlabelled(path: &Path) -> Result<Self> {
        Self::open_with(path, &DataOptions::default(), false)
    }

    fn open_with(path: &Path, options: &DataOptions, labelled: bool) -> Result<Self> {
        let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
        let header = read_header(&mut reader, path)?;
        require_float(&header, path)?;
        let Some((&n, sample_shape)) = header.shape.split_first() else {
            return Err(Error::Tensor {
                path: path.into(),
                reason: "a 0-d array holds no samples; an array of samples has shape \
                         (N, …), N samples along its first axis"
                    .into(),
            });
        };
        let sample_bytes = values_in(sample_shape, path)? * header.dtype.size();
        let file_len = reader
            .get_ref()
            .metadata()
            .map_err(|e| Error::io(path, e))?
            .len();
        let stored = file_len.saturating_sub(header.data_offset) / sample_bytes.max(1) as u64;
        if stored < n as u64 {
            return Err(Error::Tensor {
                path: path.into(),
                reason: format!(
                    "file is truncated: the header says {n} samples of shape {sample_shape:?}, \
                     the file holds {stored}"
                ),
            });
        }
        let labels_path = match &options.idx_labels {
            _ if !labelled => PathBuf::new(),
            Some(p) => p.clone(),
            None => default_npy_labels(path).ok_or_else(|| {
                Error::data(
                    path,
                    format!(
                        "no labels for this array: name its labels file (an integer .npy of \
                         shape ({n},) or a text file, one label per line), or put it beside \
                         as {}",
                        path.file_stem()
                            .map(|s| format!("{}-labels.npy", s.to_string_lossy()))
                            .unwrap_or_default()
                    ),
                )
                .for_setting("labels")
            })?,
        };
        let labels = labelled
            .then(|| open_labels(&labels_path, n, path, options))
            .transpose()?;
        Ok(NpyArraySource {
            path: path.into(),
            labels_path,
            reader,
            labels,
            sample_shape: sample_shape.to_vec(),
            sample_bytes,
            header,
            count: options.limit.map_or(n, |l| l.min(n)),
            next: 0,
            failed: false,
        })
    }

    pub(super) fn skip_records(&mut self, n: usize) -> Result<()> {
        let n = n.min(self.count - self.next);
        for _ in 0..n {
            self.next_label()?;
        }
        self.next += n;
        let at = self.header.data_offset + (self.next * self.sample_bytes) as u64;
        self.reader
            .seek(SeekFrom::Start(at))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    fn next_label(&mut self) -> Result<Option<String>> {
        let index = self.next;
        let path = &self.labels_path;
        let ended = |e: String| Error::data(path, format!("ends before label {index} ({e})"));
        let Some(labels) = &mut self.labels else {
            return Ok(None);
        };
        let label = match labels {
            LabelReader::Numbers {
                reader,
                dtype,
                names,
            } => {
                let mut bytes = [0u8; 8];
                let bytes = &mut bytes[..dtype.size()];
                reader.read_exact(bytes).map_err(|e| ended(e.to_string()))?;
                let number = integer(bytes, *dtype);
                match names {
                    Some(names) => usize::try_from(number)
                        .ok()
                        .and_then(|i| names.get(i).cloned())
                        .ok_or_else(|| {
                            Error::data(
                                path,
                                format!(
                                    "record {index} has label {number} but only {} names are \
                                     given",
                                    names.len()
                                ),
                            )
                        }),
                    None => Ok(number.to_string()),
                }?
            }
            LabelReader::Lines(lines) => {
                let line = lines
                    .next()
                    .ok_or_else(|| ended("end of file".into()))?
                    .map_err(|e| Error::io(path, e))?;
                let label = line.trim_end_matches('\r').to_string();
                let line = format!("{} line {}", path.display(), index + 1);
                check_label(&label, Path::new(&line))?;
                label
            }
        };
        Ok(Some(label))
    }

    fn read_one(&mut self) -> Result<Sample> {
        let index = self.next;
        let label = self.next_label()?;
        let mut bytes = vec![0u8; self.sample_bytes];
        self.reader.read_exact(&mut bytes).map_err(|e| {
            Error::data(
                &self.path,
                format!("ends after {index} of {} samples ({e})", self.count),
            )
        })?;
        let mut data = Vec::new();
        floats(&bytes, self.header.dtype, &mut data);
        Ok(Sample {
            id: format!("{}#{index}", self.path.display()),
            label,
            input: SampleInput::Tensor(TensorSample {
                shape: self.sample_shape.clone(),
                data,
            }),
        })
    }
}

/// Opens the labels of an array of `n` samples: an integer `.npy` of shape (n,) (names from
/// `label_names` or `labels.txt` beside the array, as for IDX), or a text file of n lines.
fn open_labels(path: &Path, n: usize, array: &Path, options: &DataOptions) -> Result<LabelReader> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    if has_npy_magic(path) {
        let header = read_header(&mut reader, path)?;
        let shape_ok = matches!(header.shape.as_slice(), [m] | [m, 1] if *m == n);
        if !shape_ok {
            return Err(Error::data(
                path,
                format!(
                    "labels of shape {:?}, but the array {} holds {n} samples: labels are \
                     shape ({n},)",
                    header.shape,
                    array.display()
                ),
            ));
        }
        if matches!(header.dtype, Dtype::Float(_)) {
            return Err(Error::data(
                path,
                format!(
                    "labels of element type '{}': label numbers are integers \
                     (y.astype('int64')), or give a text file of label names",
                    header.descr
                ),
            ));
        }
        let names_path = options.label_names.clone().or_else(|| {
            let p = array.with_file_name("labels.txt");
            p.is_file().then_some(p)
        });
        let names = names_path.map(|p| read_label_names(&p)).transpose()?;
        return Ok(LabelReader::Numbers {
            reader,
            dtype: header.dtype,
            names,
        });
    }
    // A text file: its lines are counted first, so a short or long one is refused up front.
    let lines = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?)
        .lines()
        .count();
    if lines != n {
        return Err(Error::data(
            path,
            format!(
                "holds {lines} label lines, but the array {} holds {n} samples",
                array.display()
            ),
        ));
    }
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    Ok(LabelReader::Lines(reader.lines()))
}

impl Iterator for NpyArraySource {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors() {
        assert_eq!(parse_descr("<f4"), Ok(Dtype::Float(4)));
        assert_eq!(parse_descr("|u1"), Ok(Dtype::Unsigned(1)));
        assert_eq!(parse_descr("<i8"), Ok(Dtype::Int(8)));
        assert!(parse_descr(">f4").unwrap_err().contains("big-endian"));
        assert!(parse_descr("<c8").is_err());
        assert!(parse_descr("|O").is_err());
        assert_eq!(integer(&[0xff], Dtype::Int(1)), -1);
        assert_eq!(integer(&[0xff], Dtype::Unsigned(1)), 255);
    }
}
