//! The persisted state of one adapted model: which backbone it belongs to, the Gram
//! statistics, the labels, how far each data source has been read, and the solved head. Its
//! fields are read through methods and changed only by the operations that keep them
//! consistent (learn, fit, merge, forget, decay); `file` holds the file format.

mod file;

use std::path::{Path, PathBuf};

// The durable-file primitives were first defined here; their paths stay.
pub use crate::durable::{
    DurableWrite, Fingerprint, SourceRecord, StateLock, write_atomically, write_atomically_to,
};
use crate::error::{Error, Result};
use crate::fitting::{self, DEFAULT_BATCH, FitOptions, Method, gram_stats};
use crate::head::{FitReport, Head, LambdaSource};
use crate::solver::{GramStats, default_lambda_grid};
use crate::store::{FeatureBatches, FeatureStore};
pub use file::{FORMAT_VERSION, MAGIC};

/// Below this many samples a label gets a warning (see [`State::warnings`]).
pub const MIN_SAMPLES_PER_LABEL: f64 = 5.0;

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    backbone: Fingerprint,
    /// Where the model was when the state was made: the default for later commands.
    model_path: PathBuf,
    stats: GramStats,
    head: Option<Head>,
    sources: Vec<SourceRecord>,
    /// Whether a forgetting factor μ < 1 was ever applied: then subtracting samples is no
    /// longer exact, and `forget` refuses.
    decayed: bool,
}

/// What a state holds, read-only; it changes only through the operations below, which keep
/// the statistics, the sources read and the head consistent.
impl State {
    /// The backbone the statistics were learned with.
    pub fn backbone(&self) -> &Fingerprint {
        &self.backbone
    }

    /// Where the model was when the state was made: the default for later commands.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// The Gram statistics of everything learned (and not forgotten).
    pub fn stats(&self) -> &GramStats {
        &self.stats
    }

    /// The solved head, if the state has been fit.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// Each data source learned from, with how far it has been read.
    pub fn sources(&self) -> &[SourceRecord] {
        &self.sources
    }

    /// Whether a forgetting factor μ < 1 was ever applied (then `forget` refuses).
    pub fn decayed(&self) -> bool {
        self.decayed
    }
}

impl State {
    /// The statistics' column of `label`, added (with no samples) if it is new.
    pub fn label_index(&mut self, label: &str) -> usize {
        self.stats.label_index(label)
    }

    /// Folds a batch of feature rows (`labels` from [`Self::label_index`]) into the
    /// statistics, first discounting everything learned so far by the forgetting factor μ
    /// (`decay`, 0 < μ ≤ 1) if given. A rejected batch changes nothing, not even by the
    /// discount. Recording how far its source was read is [`Self::record_source`]'s.
    pub fn fold(
        &mut self,
        batch: &[f32],
        labels: &[usize],
        source_id: &str,
        decay: Option<f64>,
    ) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        if let Some(mu) = decay
            && mu < 1.0
        {
            // Check the batch first: a rejected batch must not leave a discount behind.
            let mut stats = self.stats.clone();
            stats.decay(mu)?;
            stats.accumulate(batch, labels, source_id)?;
            self.stats = stats;
            self.decayed = true;
            return Ok(());
        }
        self.stats.accumulate(batch, labels, source_id)
    }

    /// Refits the head by `options.method`: `gram` from the statistics, or any method by
    /// streaming `store` (a feature store of this backbone, made by `fastretrain extract`);
    /// λ as `options.lambda` says (GCV, or K-fold cross-validation, when absent).
    pub fn refit(
        &mut self,
        store: Option<&FeatureStore>,
        options: &FitOptions,
    ) -> Result<FitReport> {
        match store {
            None if options.method == Method::Gram => self.fit(options.lambda),
            None => Err(Error::InvalidArgument(format!(
                "the {} method streams stored features: give a feature store (made by \
                 `fastretrain extract`)",
                options.method.name()
            ))
            .for_setting("store")),
            Some(store) => {
                store.check_backbone(&self.backbone)?;
                let (head, report) = fitting::fit(store, options)?;
                self.head = Some(head);
                Ok(report)
            }
        }
    }

    /// Adds statistics learned elsewhere with the same backbone (a fleet's, summed by its
    /// server); labels are matched by name. Their sources are not known here, so nothing is
    /// recorded of them: refit afterwards.
    pub fn add_statistics(&mut self, other: &GramStats) -> Result<()> {
        self.stats.merge(other)
    }

    /// Replaces the head with one made elsewhere (a fleet's server, an identity head, the
    /// retrained network's). The statistics stay this state's own.
    pub fn set_head(&mut self, head: Head) -> Result<()> {
        head.validate().map_err(Error::InvalidArgument)?;
        self.head = Some(head);
        Ok(())
    }

    /// The state now belongs to another file of the model: a retrained network written to
    /// `model_path` whose bytes hash to `model_sha256`, with the same feature tensor.
    pub fn rebind(&mut self, model_sha256: String, model_path: PathBuf) {
        self.backbone.model_sha256 = model_sha256;
        self.model_path = model_path;
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
        crate::durable::sha256_hex(&bytes)
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

    /// The states at `paths` added up in order (at least one; the head is dropped: refit
    /// after merging), with [`Self::merge`]'s refusals, and also refusing a state that repeats
    /// an earlier input bit for bit anywhere in the list: the running sum no longer equals that
    /// input, and `distinct_sources` drops the source check that would otherwise catch it.
    pub fn merge_files(paths: &[PathBuf], distinct_sources: bool) -> Result<State> {
        let Some((first, rest)) = paths.split_first() else {
            return Err(Error::InvalidArgument("no states to merge".into()));
        };
        let mut merged = State::load(first)?;
        let mut digests = vec![(merged.statistics_digest(), first.clone())];
        for path in rest {
            let state = State::load(path)?;
            let digest = state.not_among(&digests, path)?;
            merged.merge(&state, path, distinct_sources)?;
            digests.push((digest, path.clone()));
        }
        Ok(merged)
    }

    /// This state's [`Self::statistics_digest`], refusing it when it is that of a state merged
    /// earlier (`earlier`: digests and the paths they came from): its samples would count twice,
    /// and `distinct_sources` drops the source check that would otherwise catch it.
    pub fn not_among(&self, earlier: &[(String, PathBuf)], path: &Path) -> Result<String> {
        let digest = self.statistics_digest();
        if self.stats.samples() > 0.0
            && let Some((_, first)) = earlier.iter().find(|(d, _)| *d == digest)
        {
            return Err(Error::InvalidArgument(format!(
                "{}: its statistics are bit for bit those of {} (the same state, or a copy \
                 of it): merging would count its {} samples twice",
                path.display(),
                first.display(),
                self.stats.samples()
            )));
        }
        Ok(digest)
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
}
