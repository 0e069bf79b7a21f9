//! Writing a feature store: the header once, then one checksummed, fsynced chunk at a time;
//! reopening a store cuts an incomplete last chunk off and resumes after it.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use half::f16;

use super::{
    CHUNK_HEADER_LEN, CHUNK_MAGIC, ChunkMeta, DEFAULT_CHUNK_ROWS, FeatureStore, MAX_CHUNK_ROWS,
    Precision, STORE_MAGIC, STORE_VERSION, StoreHeader,
};
use crate::durable::{Fingerprint, write_atomically};
use crate::error::{Error, Result};

/// Appends features to a store, one fsynced chunk at a time.
pub struct StoreWriter {
    path: PathBuf,
    file: File,
    header: StoreHeader,
    /// The chunk being filled.
    source: String,
    consumed: u64,
    labels: Vec<String>,
    features: Vec<f32>,
    rows_written: u64,
}

impl StoreWriter {
    /// Starts a new store at `path` (which must not exist).
    pub fn create(path: &Path, header: StoreHeader) -> Result<Self> {
        let body = postcard::to_stdvec(&header)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode store header: {e}")))?;
        let mut bytes = Vec::with_capacity(16 + body.len() + 4);
        bytes.extend_from_slice(&STORE_MAGIC);
        bytes.extend_from_slice(&STORE_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        write_atomically(path, &bytes)?;
        Self::append_at(path, header, bytes.len() as u64)
    }

    /// Opens `path` for appending, or creates it. An existing store must hold features of
    /// `backbone` (and `precision`, when given); an incomplete chunk left by a crash is cut
    /// off. Returns the writer and the store as it was (for the records already consumed).
    pub fn open_or_create(
        path: &Path,
        backbone: &Fingerprint,
        model_path: &Path,
        precision: Option<Precision>,
        chunk_rows: Option<usize>,
    ) -> Result<(Self, Option<FeatureStore>)> {
        let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        if !exists {
            let chunk_rows = chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS);
            if chunk_rows == 0 || chunk_rows > MAX_CHUNK_ROWS as usize {
                return Err(Error::InvalidArgument(format!(
                    "chunk size must be 1 to {MAX_CHUNK_ROWS} rows, got {chunk_rows}"
                )));
            }
            let header = StoreHeader {
                backbone: backbone.clone(),
                // Absolute, like a state's: a state made from this store finds the model.
                model_path: std::fs::canonicalize(model_path)
                    .unwrap_or_else(|_| model_path.into())
                    .display()
                    .to_string(),
                precision: precision.unwrap_or(Precision::F16),
                chunk_rows: chunk_rows as u32,
            };
            return Ok((Self::create(path, header)?, None));
        }
        let store = FeatureStore::scan(path)?;
        store.check_backbone(backbone)?;
        if let Some(p) = precision
            && p != store.header.precision
        {
            return Err(Error::InvalidArgument(format!(
                "{} holds {} features; cannot append {p} (use another file or `convert`)",
                path.display(),
                store.header.precision
            )));
        }
        if let Some(rows) = chunk_rows
            && rows != store.header.chunk_rows as usize
        {
            return Err(Error::InvalidArgument(format!(
                "{} uses chunks of {} rows; cannot append with {rows}",
                path.display(),
                store.header.chunk_rows
            )));
        }
        let writer = Self::append_at(path, store.header.clone(), store.complete_len)?;
        Ok((writer, Some(store)))
    }

    /// Opens for appending after the first `complete_len` bytes (cutting off anything after).
    fn append_at(path: &Path, header: StoreHeader, complete_len: u64) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.set_len(complete_len)
            .and_then(|_| file.sync_all())
            .and_then(|_| file.seek(SeekFrom::Start(complete_len)).map(|_| ()))
            .map_err(|e| Error::io(path, e))?;
        Ok(StoreWriter {
            path: path.into(),
            file,
            header,
            source: String::new(),
            consumed: 0,
            labels: Vec::new(),
            features: Vec::new(),
            rows_written: 0,
        })
    }

    pub fn header(&self) -> &StoreHeader {
        &self.header
    }

    /// Rows this writer has written (complete chunks only).
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Checks that a row can be stored: right length, finite, and in f16's range.
    fn check_row(&self, features: &[f32], what: &str) -> Result<()> {
        let dim = self.header.backbone.feature_dim;
        if features.len() != dim {
            return Err(Error::FeatureDim {
                what: what.into(),
                expected: dim,
                got: features.len(),
            });
        }
        if !features.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteFeatures { what: what.into() });
        }
        if self.header.precision == Precision::F16
            && let Some(v) = features.iter().find(|v| v.abs() > f16::MAX.to_f32())
        {
            return Err(Error::InvalidArgument(format!(
                "{what}: feature value {v} is outside f16's range; use an f32 store \
                 (--precision f32)"
            )));
        }
        Ok(())
    }

    /// Adds one row from `source`; writes a chunk when it is full.
    pub fn push(&mut self, source: &str, features: &[f32], label: &str, what: &str) -> Result<()> {
        self.check_row(features, what)?;
        self.switch_source(source)?;
        self.features.extend_from_slice(features);
        self.labels.push(label.to_string());
        self.consumed += 1;
        if self.labels.len() == self.header.chunk_rows as usize {
            self.flush()?;
        }
        Ok(())
    }

    /// Counts a record of `source` that was read but not stored (an undecodable image).
    pub fn skip(&mut self, source: &str) -> Result<()> {
        self.switch_source(source)?;
        self.consumed += 1;
        Ok(())
    }

    fn switch_source(&mut self, source: &str) -> Result<()> {
        if self.source != source {
            self.flush()?;
            self.source = source.to_string();
        }
        Ok(())
    }

    /// Writes the chunk being filled (if it holds anything) and fsyncs it.
    pub fn flush(&mut self) -> Result<()> {
        if self.consumed == 0 {
            return Ok(());
        }
        let meta = ChunkMeta {
            source: self.source.clone(),
            consumed: self.consumed,
            labels: std::mem::take(&mut self.labels),
        };
        let features = std::mem::take(&mut self.features);
        self.write_chunk(&meta, &features)?;
        self.consumed = 0;
        self.features = features;
        self.features.clear();
        Ok(())
    }

    pub(super) fn write_chunk(&mut self, meta: &ChunkMeta, features: &[f32]) -> Result<()> {
        let meta_bytes = postcard::to_stdvec(meta)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode chunk: {e}")))?;
        let rows = meta.labels.len();
        let precision = self.header.precision;
        let mut bytes =
            Vec::with_capacity(CHUNK_HEADER_LEN as usize + meta_bytes.len() + features.len() * 4);
        bytes.extend_from_slice(&CHUNK_MAGIC);
        bytes.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(rows as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]); // crc, filled below
        bytes.extend_from_slice(&meta_bytes);
        for &v in features {
            match precision {
                Precision::F16 => bytes.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
                Precision::F32 => bytes.extend_from_slice(&v.to_le_bytes()),
            }
        }
        let crc = crc32fast::hash(&bytes[CHUNK_HEADER_LEN as usize..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        let path = &self.path;
        self.file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| {
                Error::io(
                    path,
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "could not append features ({e}); the complete chunks before \
                             are kept and the next `extract` resumes after them"
                        ),
                    ),
                )
            })?;
        self.rows_written += rows as u64;
        Ok(())
    }
}
