//! The feature store: a data set's penultimate features on disk (f16 by default, half the bytes
//! of f32), with their labels, so that every fitting method can stream them batch by batch
//! without running the backbone again.
//!
//! File layout (all integers little endian):
//! - header: `magic "FRSTORE\0" | version u32 | header length u32 | header (postcard) | crc32 u32`
//!   where the header names the backbone (its [`Fingerprint`]), the precision and the chunk size;
//! - then chunks, appended one after another: `"CHNK" | meta length u32 | rows u32 | crc32 u32 |
//!   meta (postcard: source, records consumed, labels) | rows × dim features`; the crc32 covers
//!   meta and features.
//!
//! # Crash safety
//! The store is append-only. The header is written whole (temporary file + rename) before any
//! chunk; each chunk is written with one `write_all` and fsynced. A kill leaves every complete
//! chunk and at most one incomplete chunk at the end: readers refuse such a file with a message
//! saying how to complete it, and the next `extract` cuts the incomplete chunk off and resumes
//! after the records the complete chunks hold. Chunks start at fixed row boundaries (multiples
//! of the chunk size within a source), so a resumed store is byte-identical to an uninterrupted
//! one.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};

use crate::durable::{Fingerprint, SourceRecord};
use crate::error::{Error, Result};

mod writer;
pub use writer::StoreWriter;

pub const STORE_MAGIC: [u8; 8] = *b"FRSTORE\0";
pub const STORE_VERSION: u32 = 1;
const CHUNK_MAGIC: [u8; 4] = *b"CHNK";
const CHUNK_HEADER_LEN: u64 = 16;
/// Rows per chunk when the user does not choose.
pub const DEFAULT_CHUNK_ROWS: usize = 256;
const MAX_META_LEN: u32 = 1 << 24;
const MAX_CHUNK_ROWS: u32 = 1 << 20;
const MAX_HEADER_LEN: u32 = 1 << 16;

/// How features are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    F16,
    F32,
}

impl Precision {
    pub fn bytes(self) -> usize {
        match self {
            Precision::F16 => 2,
            Precision::F32 => 4,
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f16" => Ok(Precision::F16),
            "f32" => Ok(Precision::F32),
            _ => Err(Error::InvalidArgument(format!(
                "unknown precision '{s}': use f16 or f32"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F16 => "f16",
            Precision::F32 => "f32",
        })
    }
}

/// What a store holds features of, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHeader {
    pub backbone: Fingerprint,
    /// Where the model was when the store was made (the default for states made from it).
    pub model_path: String,
    pub precision: Precision,
    /// Rows per chunk (the last chunk of a source may hold fewer).
    pub chunk_rows: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkMeta {
    /// The data source the rows came from (its stable id).
    source: String,
    /// Records of that source this chunk accounts for (rows plus skipped records).
    consumed: u64,
    labels: Vec<String>,
}

#[derive(Debug, Clone)]
struct ChunkEntry {
    /// Byte offset of the chunk's header.
    offset: u64,
    rows: u32,
    meta_len: u32,
    crc: u32,
}

/// Receives one batch: row-major features and label indices.
pub type BatchFn<'a> = dyn FnMut(&[f32], &[usize]) -> Result<()> + 'a;

/// Labelled feature rows that can be streamed in batches, as often as a method needs passes.
pub trait FeatureBatches {
    /// Features per row.
    fn dim(&self) -> usize;
    /// All labels, in first-seen order; batches give indices into this list.
    fn labels(&self) -> &[String];
    fn rows(&self) -> u64;
    /// Calls `f(features, labels)` for consecutive batches of at most `batch` rows (row-major
    /// features, label indices), always in the same order.
    fn for_each_batch(&self, batch: usize, f: &mut BatchFn<'_>) -> Result<()>;
}

/// Feature rows held in memory (tests, and library users who have their own features).
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub dim: usize,
    pub labels: Vec<String>,
    /// rows × dim, row major.
    pub features: Vec<f32>,
    pub label_ids: Vec<usize>,
}

impl FeatureBatches for FeatureSet {
    fn dim(&self) -> usize {
        self.dim
    }

    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn rows(&self) -> u64 {
        self.label_ids.len() as u64
    }

    fn for_each_batch(&self, batch: usize, f: &mut BatchFn<'_>) -> Result<()> {
        let batch = batch.max(1);
        for (start, ids) in (0..).step_by(batch).zip(self.label_ids.chunks(batch)) {
            f(
                &self.features[start * self.dim..(start + ids.len()) * self.dim],
                ids,
            )?;
        }
        Ok(())
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptStore {
        path: path.into(),
        reason: reason.into(),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// A store opened for reading: its header and an index of its chunks. Opening reads the whole
/// file once and checks every chunk's checksum, so damage is reported before any work starts.
#[derive(Debug)]
pub struct FeatureStore {
    path: PathBuf,
    header: StoreHeader,
    chunks: Vec<ChunkEntry>,
    labels: Vec<String>,
    rows: u64,
    /// Records consumed and rows stored, per source.
    sources: Vec<SourceRecord>,
    /// Where the complete chunks end.
    complete_len: u64,
    /// Why the bytes after `complete_len` are not a complete chunk, if there are any.
    incomplete_tail: Option<String>,
}

impl FeatureStore {
    /// Opens a store for reading; a store that ends in an incomplete chunk is refused.
    pub fn open(path: &Path) -> Result<Self> {
        let store = Self::scan(path)?;
        if let Some(reason) = &store.incomplete_tail {
            return Err(corrupt(
                path,
                format!(
                    "{reason} (an interrupted extract?); run the same `extract` again to \
                     complete it"
                ),
            ));
        }
        Ok(store)
    }

    /// Reads the header and indexes the chunks, noting (not refusing) an incomplete tail.
    fn scan(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        let mut fixed = [0u8; 16];
        reader
            .read_exact(&mut fixed)
            .map_err(|_| corrupt(path, "not a fastretrain feature store (file too short)"))?;
        if fixed[..8] != STORE_MAGIC {
            return Err(corrupt(
                path,
                "not a fastretrain feature store (bad magic bytes)",
            ));
        }
        let version = read_u32(&fixed, 8);
        if version != STORE_VERSION {
            return Err(corrupt(
                path,
                format!("store format version {version}; this build reads {STORE_VERSION}"),
            ));
        }
        let header_len = read_u32(&fixed, 12);
        if header_len > MAX_HEADER_LEN || 16 + header_len as u64 + 4 > file_len {
            return Err(corrupt(path, "store header is truncated or damaged"));
        }
        let mut header_bytes = vec![0u8; header_len as usize + 4];
        reader
            .read_exact(&mut header_bytes)
            .map_err(|e| Error::io(path, e))?;
        let (header_body, crc) = header_bytes.split_at(header_len as usize);
        if crc32fast::hash(header_body) != read_u32(crc, 0) {
            return Err(corrupt(path, "store header checksum mismatch"));
        }
        let header: StoreHeader = postcard::from_bytes(header_body)
            .map_err(|e| corrupt(path, format!("cannot decode the store header: {e}")))?;
        let dim = header.backbone.feature_dim;
        if dim == 0 || dim > 1 << 16 || header.chunk_rows == 0 || header.chunk_rows > MAX_CHUNK_ROWS
        {
            return Err(corrupt(
                path,
                "implausible dimension or chunk size in header",
            ));
        }
        let mut store = FeatureStore {
            path: path.into(),
            header,
            chunks: Vec::new(),
            labels: Vec::new(),
            rows: 0,
            sources: Vec::new(),
            complete_len: 16 + header_len as u64 + 4,
            incomplete_tail: None,
        };
        let row_bytes = (dim * store.header.precision.bytes()) as u64;
        let mut offset = store.complete_len;
        while offset < file_len {
            let tail = |what: &str| Some(format!("the store ends in {what} at byte {offset}"));
            if file_len - offset < CHUNK_HEADER_LEN {
                store.incomplete_tail = tail("a truncated chunk header");
                break;
            }
            let mut ch = [0u8; CHUNK_HEADER_LEN as usize];
            reader.read_exact(&mut ch).map_err(|e| Error::io(path, e))?;
            let (meta_len, rows, crc) = (read_u32(&ch, 4), read_u32(&ch, 8), read_u32(&ch, 12));
            if ch[..4] != CHUNK_MAGIC || meta_len > MAX_META_LEN || rows > MAX_CHUNK_ROWS {
                return Err(corrupt(
                    path,
                    format!("damaged chunk header at byte {offset}"),
                ));
            }
            let body_len = meta_len as u64 + rows as u64 * row_bytes;
            if file_len - offset - CHUNK_HEADER_LEN < body_len {
                store.incomplete_tail = tail("a truncated chunk");
                break;
            }
            let mut body = vec![0u8; body_len as usize];
            reader
                .read_exact(&mut body)
                .map_err(|e| Error::io(path, e))?;
            let is_last = offset + CHUNK_HEADER_LEN + body_len == file_len;
            let meta = if crc32fast::hash(&body) == crc {
                postcard::from_bytes::<ChunkMeta>(&body[..meta_len as usize]).ok()
            } else {
                None
            };
            let Some(meta) = meta else {
                if is_last {
                    // A torn last write: complete in length, wrong inside.
                    store.incomplete_tail = tail("a damaged last chunk");
                    break;
                }
                return Err(corrupt(
                    path,
                    format!("checksum mismatch in the chunk at byte {offset}"),
                ));
            };
            if meta.labels.len() != rows as usize || meta.consumed < rows as u64 {
                return Err(corrupt(
                    path,
                    format!("chunk at byte {offset} does not match its row count"),
                ));
            }
            for label in &meta.labels {
                if !store.labels.contains(label) {
                    store.labels.push(label.clone());
                }
            }
            match store.sources.iter_mut().find(|s| s.id == meta.source) {
                Some(s) => {
                    s.consumed += meta.consumed;
                    s.samples += rows as u64;
                }
                None => store.sources.push(SourceRecord {
                    id: meta.source,
                    consumed: meta.consumed,
                    samples: rows as u64,
                }),
            }
            store.chunks.push(ChunkEntry {
                offset,
                rows,
                meta_len,
                crc,
            });
            store.rows += rows as u64;
            offset += CHUNK_HEADER_LEN + body_len;
            store.complete_len = offset;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &StoreHeader {
        &self.header
    }

    pub fn backbone(&self) -> &Fingerprint {
        &self.header.backbone
    }

    /// Records of source `id` the store accounts for (rows plus skipped records).
    pub fn consumed(&self, id: &str) -> u64 {
        self.sources
            .iter()
            .find(|s| s.id == id)
            .map_or(0, |s| s.consumed)
    }

    /// Per source: records read and rows stored.
    pub fn sources(&self) -> &[SourceRecord] {
        &self.sources
    }

    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Size of the complete chunks and header in bytes.
    pub fn bytes(&self) -> u64 {
        self.complete_len
    }

    /// Fails unless the store holds features of `backbone`.
    pub fn check_backbone(&self, backbone: &Fingerprint) -> Result<()> {
        if &self.header.backbone != backbone {
            return Err(Error::BackboneMismatch {
                path: self.path.clone(),
                state: self.header.backbone.to_string(),
                model: backbone.to_string(),
            });
        }
        Ok(())
    }

    /// Calls `f(meta, features as f32)` for every chunk in order, checking each checksum.
    fn for_each_chunk(&self, mut f: impl FnMut(&ChunkMeta, &[f32]) -> Result<()>) -> Result<()> {
        let path = &self.path;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let (dim, precision) = (self.header.backbone.feature_dim, self.header.precision);
        let mut body = Vec::new();
        let mut features = Vec::new();
        let mut position = None;
        for chunk in &self.chunks {
            if position != Some(chunk.offset) {
                reader
                    .seek(SeekFrom::Start(chunk.offset))
                    .map_err(|e| Error::io(path, e))?;
            }
            let rows = chunk.rows as usize;
            let body_len = chunk.meta_len as usize + rows * dim * precision.bytes();
            body.resize(CHUNK_HEADER_LEN as usize + body_len, 0);
            reader
                .read_exact(&mut body)
                .map_err(|e| Error::io(path, e))?;
            position = Some(chunk.offset + body.len() as u64);
            let body = &body[CHUNK_HEADER_LEN as usize..];
            if crc32fast::hash(body) != chunk.crc {
                return Err(corrupt(
                    path,
                    format!("checksum mismatch in the chunk at byte {}", chunk.offset),
                ));
            }
            let (meta_bytes, raw) = body.split_at(chunk.meta_len as usize);
            let meta: ChunkMeta = postcard::from_bytes(meta_bytes)
                .map_err(|e| corrupt(path, format!("cannot decode chunk: {e}")))?;
            features.clear();
            match precision {
                Precision::F16 => features.extend(
                    raw.chunks_exact(2)
                        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
                Precision::F32 => features.extend(
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
                ),
            }
            f(&meta, &features)?;
        }
        Ok(())
    }

    /// Copies the store into a new one at `out` with another precision (same chunks).
    pub fn convert(&self, out: &Path, precision: Precision) -> Result<FeatureStore> {
        if out.exists() {
            return Err(Error::InvalidArgument(format!(
                "{} exists; convert writes a new store",
                out.display()
            )));
        }
        let header = StoreHeader {
            precision,
            ..self.header.clone()
        };
        let mut writer = StoreWriter::create(out, header)?;
        self.for_each_chunk(|meta, features| writer.write_chunk(meta, features))?;
        drop(writer);
        FeatureStore::open(out)
    }
}

impl FeatureBatches for FeatureStore {
    fn dim(&self) -> usize {
        self.header.backbone.feature_dim
    }

    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn rows(&self) -> u64 {
        self.rows
    }

    fn for_each_batch(&self, batch: usize, f: &mut BatchFn<'_>) -> Result<()> {
        let (batch, dim) = (batch.max(1), self.dim());
        let mut features = Vec::with_capacity(batch * dim);
        let mut ids = Vec::with_capacity(batch);
        self.for_each_chunk(|meta, chunk| {
            for (row, label) in chunk.chunks_exact(dim).zip(&meta.labels) {
                features.extend_from_slice(row);
                ids.push(
                    self.labels
                        .iter()
                        .position(|l| l == label)
                        .expect("labels were indexed at open"),
                );
                if ids.len() == batch {
                    f(&features, &ids)?;
                    features.clear();
                    ids.clear();
                }
            }
            Ok(())
        })?;
        if !ids.is_empty() {
            f(&features, &ids)?;
        }
        Ok(())
    }
}
