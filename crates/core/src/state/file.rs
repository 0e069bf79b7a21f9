//! The state file (all integers little endian):
//! `magic "FRSTATE\0" | format version u32 | payload length u64 | payload (postcard) | sha256`
//! where the sha256 covers everything before it.
//!
//! # What is written when, and why a crash cannot corrupt a state
//! - The state file is only ever replaced whole, by [`write_atomically`]: the new bytes go to a
//!   temporary file in the same folder, which is fsynced, then renamed over the state (an
//!   atomic replace on POSIX file systems), then the folder is fsynced so the rename survives
//!   a power cut. A crash before the rename leaves the old file (and a stray temporary file,
//!   never read); after it, the new one. A failed write (full disk, read-only folder) removes
//!   the temporary file and leaves the old state untouched.
//! - `learn` writes at the end, and with `--checkpoint-every N` also after each batch boundary
//!   past N samples. Each write holds statistics and per-source read counts that agree: the
//!   records counted as read are exactly the ones folded into G and B. A later `learn` on the
//!   same source skips those records, so a killed run resumes without skipping or counting
//!   twice; at batch-aligned checkpoints the result is bit-identical to an uninterrupted run.
//! - Loading checks magic, version, length and checksum before decoding, then every size and
//!   value; a damaged file is an error, never a panic, and is never overwritten by a failed
//!   command.
//! - Writers (`learn`, `fit`, `merge`) hold [`StateLock`](crate::durable::StateLock) for their whole read-modify-write,
//!   so concurrent writers queue instead of losing each other's update. Readers need no lock.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::State;
use crate::durable::{CHECKSUM_LEN, Fingerprint, SourceRecord, write_atomically};
use crate::error::{Error, Result};
use crate::head::Head;
use crate::solver::{GramRecord, GramStats};

pub const MAGIC: [u8; 8] = *b"FRSTATE\0";
/// Version 2 added hidden layers and the method to the head, and the decay flag; version 1
/// files are still read.
pub const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: usize = 8 + 4 + 8;

/// The payload; `S` is [`GramRecord`] except when a command reads the head alone.
#[derive(Serialize, Deserialize)]
struct Payload<S = GramRecord> {
    backbone: Fingerprint,
    model_path: String,
    stats: S,
    head: Option<Head>,
    sources: Vec<SourceRecord>,
    decayed: bool,
}

/// The statistics as `predict` reads them: walked over in the encoding of [`GramRecord`]
/// (its field order), keeping the dimension and dropping every number of G, B and the counts
/// without allocating them: most of a state's bytes and of its decoding time (docs/FOOTPRINT.md,
/// start-up).
#[derive(Deserialize)]
struct SkippedStatistics {
    dim: usize,
    _labels: Vec<String>,
    _gram_lower: SkippedNumbers,
    _cross: SkippedNumbers,
    _samples: f64,
    _target_sq: f64,
    _class_counts: SkippedNumbers,
}

/// A sequence of f64 read and dropped.
struct SkippedNumbers;

impl<'de> Deserialize<'de> for SkippedNumbers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Numbers;
        impl<'de> serde::de::Visitor<'de> for Numbers {
            type Value = SkippedNumbers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of numbers")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<SkippedNumbers, A::Error> {
                while seq.next_element::<f64>()?.is_some() {}
                Ok(SkippedNumbers)
            }
        }
        d.deserialize_seq(Numbers)
    }
}

/// The version 1 payload, read and upgraded on load.
mod v1 {
    use serde::Deserialize;

    use super::{Fingerprint, GramRecord, SourceRecord};
    use crate::head::{Head, LambdaSource, MethodName};

    #[derive(Deserialize)]
    pub struct Payload {
        backbone: Fingerprint,
        model_path: String,
        stats: GramRecord,
        head: Option<HeadV1>,
        sources: Vec<SourceRecord>,
    }

    #[derive(Deserialize)]
    struct HeadV1 {
        dim: usize,
        labels: Vec<String>,
        weights: Vec<f64>,
        lambda: f64,
        lambda_source: LambdaSource,
        fitted_samples: f64,
    }

    impl From<Payload> for super::Payload {
        fn from(p: Payload) -> Self {
            super::Payload {
                backbone: p.backbone,
                model_path: p.model_path,
                stats: p.stats,
                head: p.head.map(|h| Head {
                    dim: h.dim,
                    labels: h.labels,
                    hidden: Vec::new(),
                    weights: h.weights,
                    lambda: h.lambda,
                    lambda_source: h.lambda_source,
                    fitted_samples: h.fitted_samples,
                    method: MethodName::Gram,
                }),
                sources: p.sources,
                decayed: false,
            }
        }
    }
}
impl State {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let payload = Payload {
            backbone: self.backbone.clone(),
            model_path: self.model_path.display().to_string(),
            stats: self.stats.to_record(),
            head: self.head.clone(),
            sources: self.sources.clone(),
            decayed: self.decayed,
        };
        let body = postcard::to_stdvec(&payload)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode state: {e}")))?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        crate::durable::append_checksum(&mut out);
        Ok(out)
    }

    /// Decodes and verifies a state; `path` is only used in messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let (version, payload) = Self::checked_payload(bytes, path)?;
        Self::from_payload_version(payload, version, path)
    }

    /// Reads a state for prediction: checked whole like [`Self::load`] (magic, version, length,
    /// checksum, head), but without its statistics, as after [`Self::drop_statistics`]. Such a
    /// state must not be saved.
    pub fn load_head_only(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (version, payload) = Self::checked_payload(&bytes, path)?;
        if version == 1 {
            let mut state = Self::from_payload_version(payload, version, path)?;
            state.drop_statistics();
            return Ok(state);
        }
        let corrupt = |reason: &str| corrupt_state(path, reason);
        let payload: Payload<SkippedStatistics> =
            postcard::from_bytes(payload).map_err(|e| corrupt(&format!("cannot decode: {e}")))?;
        if payload.stats.dim != payload.backbone.feature_dim {
            return Err(corrupt("statistics dimension differs from the backbone's"));
        }
        if let Some(head) = &payload.head {
            head.validate().map_err(|e| corrupt(&e))?;
            if head.dim != payload.stats.dim {
                return Err(corrupt("head dimension differs from the statistics'"));
            }
        }
        Ok(State {
            backbone: payload.backbone,
            model_path: payload.model_path.into(),
            stats: GramStats::new(0),
            head: payload.head,
            sources: payload.sources,
            decayed: payload.decayed,
        })
    }

    /// The format version and the payload of a state file whose magic, version, length and
    /// checksum are right.
    fn checked_payload<'a>(bytes: &'a [u8], path: &Path) -> Result<(u32, &'a [u8])> {
        let corrupt = |reason: &str| corrupt_state(path, reason);
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err(corrupt("not a fastretrain state file (bad magic bytes)"));
        }
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(corrupt("file is truncated"));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(Error::StateVersion {
                path: path.into(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(corrupt("format version 0 does not exist"));
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        // A damaged length can be anything: no arithmetic on it may overflow (found by fuzzing).
        let expected = len.checked_add((HEADER_LEN + CHECKSUM_LEN) as u64);
        let Some(expected) = expected else {
            return Err(corrupt("file is truncated (impossible payload length)"));
        };
        if (bytes.len() as u64) < expected {
            return Err(corrupt("file is truncated"));
        }
        if (bytes.len() as u64) > expected {
            return Err(corrupt("unexpected bytes after the end of the state"));
        }
        let end = HEADER_LEN + len as usize;
        if crate::durable::strip_checksum(bytes).is_none() {
            return Err(corrupt("checksum mismatch"));
        }
        Ok((version, &bytes[HEADER_LEN..end]))
    }

    /// Decodes and validates the payload alone (no header, no checksum). Public so that the
    /// fuzz targets reach the decoder behind the checksum.
    #[doc(hidden)]
    pub fn from_payload(payload: &[u8], path: &Path) -> Result<Self> {
        Self::from_payload_version(payload, FORMAT_VERSION, path)
    }

    fn from_payload_version(payload: &[u8], version: u32, path: &Path) -> Result<Self> {
        let corrupt = |reason: &str| corrupt_state(path, reason);
        let decode_error = |e: postcard::Error| corrupt(&format!("cannot decode: {e}"));
        let payload: Payload = if version == 1 {
            postcard::from_bytes::<v1::Payload>(payload)
                .map_err(decode_error)?
                .into()
        } else {
            postcard::from_bytes(payload).map_err(decode_error)?
        };
        if payload.stats.dim != payload.backbone.feature_dim {
            return Err(corrupt("statistics dimension differs from the backbone's"));
        }
        let stats = GramStats::from_record(payload.stats).map_err(|e| corrupt(&e))?;
        if let Some(head) = &payload.head {
            head.validate().map_err(|e| corrupt(&e))?;
            if head.dim != stats.dim() {
                return Err(corrupt("head dimension differs from the statistics'"));
            }
        }
        Ok(State {
            backbone: payload.backbone,
            model_path: payload.model_path.into(),
            stats,
            head: payload.head,
            sources: payload.sources,
            decayed: payload.decayed,
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Writes the state atomically (see the module docs).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomically(path, &self.to_bytes()?)
    }
}

fn corrupt_state(path: &Path, reason: &str) -> Error {
    Error::CorruptState {
        path: path.into(),
        reason: reason.into(),
    }
}
