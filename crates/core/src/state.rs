//! The persisted state of one adapted model: which backbone it belongs to, the Gram
//! statistics, the labels, how far each data source has been read, and the solved head.
//!
//! File layout (all integers little endian):
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
//! - Writers (`learn`, `fit`, `merge`) hold [`StateLock`] for their whole read-modify-write,
//!   so concurrent writers queue instead of losing each other's update. Readers need no lock.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::durable::hex;
// The durable-file primitives were first defined here; their paths stay.
pub use crate::durable::{
    DurableWrite, Fingerprint, SourceRecord, StateLock, write_atomically, write_atomically_to,
};
use crate::error::{Error, Result};
use crate::fitting::{DEFAULT_BATCH, gram_stats};
use crate::head::{FitReport, Head, LambdaSource};
use crate::solver::{GramRecord, GramStats, default_lambda_grid};
use crate::store::{FeatureBatches, FeatureStore};

pub const MAGIC: [u8; 8] = *b"FRSTATE\0";
/// Version 2 added hidden layers and the method to the head, and the decay flag; version 1
/// files are still read.
pub const FORMAT_VERSION: u32 = 2;
/// Below this many samples a label gets a warning (see [`State::warnings`]).
pub const MIN_SAMPLES_PER_LABEL: f64 = 5.0;
const HEADER_LEN: usize = 8 + 4 + 8;
const CHECKSUM_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub backbone: Fingerprint,
    /// Where the model was when the state was made: the default for later commands.
    pub model_path: PathBuf,
    pub stats: GramStats,
    pub head: Option<Head>,
    pub sources: Vec<SourceRecord>,
    /// Whether a forgetting factor μ < 1 was ever applied: then subtracting samples is no
    /// longer exact, and `forget` refuses.
    pub decayed: bool,
}

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
    /// A new, empty state; the model path is recorded absolute (canonical), so that the state
    /// finds its model from any working directory.
    pub fn new(backbone: Fingerprint, model_path: &Path) -> Self {
        State {
            stats: GramStats::new(backbone.feature_dim),
            backbone,
            model_path: std::fs::canonicalize(model_path).unwrap_or_else(|_| model_path.into()),
            head: None,
            sources: Vec::new(),
            decayed: false,
        }
    }

    /// The model file this state was learned with: the recorded path if it is there (an older
    /// state's relative path is taken from the working directory, as it was written), else a
    /// file of the same name beside the state (a state moved together with its model), else
    /// the recorded path relative to the state's folder. `state_path` is the state's file.
    pub fn model_file(&self, state_path: &Path) -> Result<PathBuf> {
        let recorded = &self.model_path;
        if recorded.is_file() {
            return Ok(recorded.clone());
        }
        let folder = state_path.parent().unwrap_or(Path::new(""));
        let beside = recorded.file_name().map(|name| folder.join(name));
        let relative = recorded.is_relative().then(|| folder.join(recorded));
        [beside, relative]
            .into_iter()
            .flatten()
            .find(|p| p.is_file())
            .ok_or_else(|| Error::ModelNotFound {
                path: recorded.clone(),
                recorded_in: Some(state_path.into()),
            })
    }

    /// What a user should know about the labels learned so far: a single label (the head
    /// then predicts it for everything) and labels with very few samples.
    pub fn warnings(&self) -> Vec<String> {
        let labels = self.stats.labels();
        let counts = self.stats.class_counts();
        let mut warnings = Vec::new();
        if labels.len() == 1 {
            warnings.push(format!(
                "only one label ('{}') has been learned: the head predicts it for every input; \
                 learn samples of at least two labels",
                labels[0]
            ));
        }
        let few: Vec<String> = labels
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n < MIN_SAMPLES_PER_LABEL)
            .map(|(l, n)| format!("'{l}' ({n})"))
            .collect();
        if !few.is_empty() {
            warnings.push(format!(
                "labels with fewer than {MIN_SAMPLES_PER_LABEL} samples: {}; their predictions \
                 will be unreliable",
                few.join(", ")
            ));
        }
        warnings
    }

    /// Frees the statistics, keeping the head, sources and fingerprint: for commands that only
    /// predict. Such a state must not be saved.
    pub fn drop_statistics(&mut self) {
        self.stats = GramStats::new(0);
    }

    /// Adds to the counts of source `id`.
    pub fn record_source(&mut self, id: &str, consumed: u64, samples: u64) {
        match self.sources.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.consumed += consumed;
                s.samples += samples;
            }
            None => self.sources.push(SourceRecord {
                id: id.into(),
                consumed,
                samples,
            }),
        }
    }

    /// Records of `id` already read by earlier runs.
    pub fn consumed(&self, id: &str) -> u64 {
        self.sources
            .iter()
            .find(|s| s.id == id)
            .map_or(0, |s| s.consumed)
    }

    /// Refuses to learn source `id` where the state holds an overlapping part of the same
    /// source (the whole and a shard of it, or shards of another count): its records would
    /// be counted twice.
    pub fn check_no_overlap(&self, id: &str) -> Result<()> {
        match self
            .sources
            .iter()
            .find(|s| crate::data::overlapping_sources(&s.id, id))
        {
            Some(s) => Err(Error::InvalidArgument(format!(
                "the state already holds '{}', which overlaps '{id}': learn every part of a \
                 source with the same --shard count (or all of it without --shard)",
                s.id
            ))),
            None => Ok(()),
        }
    }

    /// sha256 of the statistics alone (not the head or sources): equal digests mean
    /// bit-identical G, B, counts and labels.
    pub fn statistics_digest(&self) -> String {
        let bytes = postcard::to_stdvec(&self.stats.to_record()).unwrap_or_default();
        hex(&Sha256::digest(&bytes))
    }

    /// Re-solves the head from the statistics (no backbone needed): at `lambda`, or at the
    /// λ that generalised cross-validation picks from the default grid.
    pub fn fit(&mut self, lambda: Option<f64>) -> Result<FitReport> {
        let started = std::time::Instant::now();
        let stats = &self.stats;
        let (lambda, source, gcv) = match lambda {
            Some(l) => (l, LambdaSource::Fixed, None),
            None => {
                let search = stats.gcv(&default_lambda_grid())?;
                (search.best, LambdaSource::Gcv, Some(search))
            }
        };
        let solution = stats.solve(lambda)?;
        self.head = Some(Head::from_solution(
            solution.as_ref(),
            stats.labels().to_vec(),
            lambda,
            source,
            stats.samples(),
        ));
        Ok(FitReport {
            method: crate::head::MethodName::Gram,
            lambda,
            lambda_source: source,
            gcv,
            cross_validation: None,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Adds another state's statistics and source counts (same backbone required; `path`
    /// names `other` in messages). The head is dropped: refit after merging.
    ///
    /// Refused where samples would count twice: bit-identical statistics (a state merged with
    /// itself or a copy of it), a source both states hold (sources are named by their path,
    /// so both learned its first records), or overlapping parts of one source. Devices that
    /// learned different data under the same path pass `distinct_sources`, which drops the
    /// second check only.
    pub fn merge(&mut self, other: &State, path: &Path, distinct_sources: bool) -> Result<()> {
        other.check_backbone(&self.backbone, path)?;
        if other.stats.samples() > 0.0 && other.statistics_digest() == self.statistics_digest() {
            return Err(Error::InvalidArgument(format!(
                "{}: its statistics are bit for bit those already merged (the same state, or \
                 a copy of it): merging would count its {} samples twice",
                path.display(),
                other.stats.samples()
            )));
        }
        for s in &other.sources {
            if !distinct_sources && self.sources.iter().any(|mine| mine.id == s.id) {
                return Err(Error::InvalidArgument(format!(
                    "{}: both states learned '{}', so its samples would count twice; if they \
                     are different data that happen to have the same path on two devices, \
                     merge with distinct sources (`merge --distinct-sources`)",
                    path.display(),
                    s.id
                )));
            }
            self.check_no_overlap(&s.id)?;
        }
        self.stats.merge(&other.stats)?;
        self.decayed |= other.decayed;
        for s in &other.sources {
            self.record_source(&s.id, s.consumed, s.samples);
        }
        self.head = None;
        Ok(())
    }

    /// A new state whose statistics are those of stored features (made by `extract`): its
    /// sources are the store's, so a later `learn` on the same data resumes after them.
    pub fn from_features(store: &FeatureStore) -> Result<Self> {
        let mut state = State::new(
            store.backbone().clone(),
            Path::new(&store.header().model_path),
        );
        state.stats = gram_stats(store, DEFAULT_BATCH)?;
        state.sources = store.sources().to_vec();
        Ok(state)
    }

    /// Removes the samples of `features` from the statistics (exact unlearning), without
    /// refitting. All or nothing: on any error (an unknown label, more samples of a label than
    /// were learned, NaN/Inf) the statistics are unchanged. Refused on decayed statistics,
    /// where subtracting is no longer exact.
    pub fn forget_statistics(&mut self, features: &dyn FeatureBatches) -> Result<()> {
        if self.decayed {
            return Err(Error::InvalidArgument(
                "this state was learned with --decay < 1: old samples were discounted, so \
                 they can no longer be subtracted exactly; forget is refused"
                    .into(),
            ));
        }
        if features.dim() != self.stats.dim() {
            return Err(Error::FeatureDim {
                what: "features to forget".into(),
                expected: self.stats.dim(),
                got: features.dim(),
            });
        }
        let mut stats = self.stats.clone();
        let mut mapped = Vec::new();
        features.for_each_batch(DEFAULT_BATCH, &mut |rows, ids| {
            // Columns are looked up per batch: an earlier batch may have removed every sample
            // of a label, which drops it and shifts the columns after it.
            mapped.clear();
            for &i in ids {
                let label = &features.labels()[i];
                let column = stats
                    .labels()
                    .iter()
                    .position(|k| k == label)
                    .ok_or_else(|| Error::UnknownLabel {
                        label: label.clone(),
                        known: stats.labels().join(", "),
                    })?;
                mapped.push(column);
            }
            stats.forget(rows, &mapped, "features to forget")
        })?;
        self.stats = stats;
        Ok(())
    }

    /// [`Self::forget_statistics`], then a refit of the head; all or nothing.
    pub fn forget(
        &mut self,
        features: &dyn FeatureBatches,
        lambda: Option<f64>,
    ) -> Result<FitReport> {
        let previous = self.stats.clone();
        self.forget_statistics(features)?;
        match self.fit(lambda) {
            Ok(report) => Ok(report),
            Err(e) => {
                self.stats = previous;
                Err(e)
            }
        }
    }

    /// Lowers the sample count of source `id` after `n` of its samples were forgotten; a
    /// source with nothing left is dropped, so learning it again reads it from the start.
    pub fn forget_source(&mut self, id: &str, n: u64) {
        if let Some(i) = self.sources.iter().position(|s| s.id == id) {
            let s = &mut self.sources[i];
            s.samples = s.samples.saturating_sub(n);
            if s.samples == 0 {
                self.sources.remove(i);
            }
        }
    }

    /// Fails unless this state was learned with `backbone`.
    pub fn check_backbone(&self, backbone: &Fingerprint, path: &Path) -> Result<()> {
        if &self.backbone != backbone {
            return Err(Error::BackboneMismatch {
                path: path.into(),
                state: self.backbone.to_string(),
                model: backbone.to_string(),
            });
        }
        Ok(())
    }

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
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
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
        if Sha256::digest(&bytes[..end]).as_slice() != &bytes[end..] {
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
