//! The edge retrainer: stream samples through the frozen backbone into a state, refit the
//! head, evaluate and predict. The CLI is a thin shell over this.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::backbone::{Backbone, LoadOptions};
use crate::data::{DataSource, Sample};
use crate::error::{Error, Result};
use crate::evaluation::{Confusion, EvalReport};
use crate::feature_recipe::Augment;
use crate::features::{BATCH, FeatureExtractor, StageTimes};
use crate::head::{FitReport, Head, Scored};
use crate::state::State;
use crate::store::FeatureSet;

#[derive(Debug, Clone, Default)]
pub struct LearnOptions {
    /// Fixed λ; chosen by GCV when absent.
    pub lambda: Option<f64>,
    /// Skip images that cannot be decoded (reported) instead of failing.
    pub skip_bad: bool,
    /// Read the source from its start even if the state already absorbed part of it.
    pub relearn: bool,
    /// Hand the state to the checkpoint callback after about this many samples
    /// (rounded up to whole batches).
    pub checkpoint_every: Option<usize>,
    /// Forgetting factor μ in (0, 1]: before each batch of 64 samples the statistics so far
    /// are multiplied by μ (drift). None or 1: no decay.
    pub decay: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub source: String,
    pub forgotten: u64,
    pub total_samples: f64,
    pub labels: Vec<String>,
    pub seconds: f64,
    pub fit: FitReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct LearnReport {
    pub source: String,
    /// Records of this source absorbed by earlier runs and skipped now.
    pub resumed_after: u64,
    pub samples: u64,
    pub skipped: Vec<String>,
    pub total_samples: f64,
    pub labels: Vec<String>,
    pub seconds_features: f64,
    pub images_per_second: f64,
    /// Where `seconds_features` went.
    pub stages: StageTimes,
    /// What ran the backbone, e.g. `tract 0.23.9`.
    pub engine: String,
    pub fit: FitReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub file: String,
    pub top: Vec<Scored>,
}

/// What streaming a source into the statistics did: a [`LearnReport`] before the refit
/// ([`Retrainer::stream`]).
#[derive(Debug, Clone)]
pub struct Streamed {
    pub source: String,
    pub resumed_after: u64,
    pub samples: u64,
    pub skipped: Vec<String>,
    pub seconds_features: f64,
    pub stages: StageTimes,
    pub engine: String,
}

impl Streamed {
    /// The learn report once `state` (the one streamed into) has been refit.
    pub fn report(self, state: &State, fit: FitReport) -> LearnReport {
        LearnReport {
            images_per_second: self.samples as f64 / self.seconds_features.max(1e-9),
            source: self.source,
            resumed_after: self.resumed_after,
            samples: self.samples,
            skipped: self.skipped,
            total_samples: state.stats().samples(),
            labels: state.stats().labels().to_vec(),
            seconds_features: self.seconds_features,
            stages: self.stages,
            engine: self.engine,
            fit,
        }
    }
}

pub struct Retrainer {
    extractor: FeatureExtractor,
    state: State,
    /// Classifying with the model's own outputs (see [`Retrainer::model_as_is`]).
    as_is: bool,
    /// The statistics digests of the states merged in (and their paths): a second merge of one
    /// of them is refused (see [`Retrainer::merge`]).
    merged: Vec<(String, PathBuf)>,
}

impl Retrainer {
    /// Pairs a backbone with a state; fails if the state was learned with another backbone.
    /// `state_path` is only used in messages.
    pub fn new(backbone: Backbone, state: State, state_path: &Path) -> Result<Self> {
        state.check_backbone(backbone.fingerprint(), state_path)?;
        Ok(Retrainer {
            extractor: FeatureExtractor::new(backbone)?,
            state,
            as_is: false,
            merged: Vec::new(),
        })
    }

    /// Opens a saved state with its backbone: the model it was learned with (found from any
    /// working directory, see [`State::model_file`]) unless `model` names the file, and the
    /// state's feature tensor unless `feature_tensor` names another; a model file other than
    /// the state's is refused.
    pub fn open(
        state_path: &Path,
        model: Option<&Path>,
        feature_tensor: Option<&str>,
    ) -> Result<Self> {
        let options = LoadOptions {
            feature_tensor: feature_tensor.map(String::from),
            ..LoadOptions::default()
        };
        Self::open_with(state_path, model, &options)
    }

    /// [`Self::open`] with the backbone loaded by `options` (its threads, engine; its
    /// `feature_tensor` replaces the state's).
    pub fn open_with(
        state_path: &Path,
        model: Option<&Path>,
        options: &LoadOptions,
    ) -> Result<Self> {
        let state = State::load(state_path)?;
        let backbone = Self::backbone_with(&state, state_path, model, options)?;
        Self::new(backbone, state, state_path)
    }

    /// The backbone of a saved state (see [`Self::open`]).
    pub fn backbone_for(
        state: &State,
        state_path: &Path,
        model: Option<&Path>,
        feature_tensor: Option<&str>,
    ) -> Result<Backbone> {
        let options = LoadOptions {
            feature_tensor: feature_tensor.map(String::from),
            ..LoadOptions::default()
        };
        Self::backbone_with(state, state_path, model, &options)
    }

    /// The backbone of a saved state, loaded by `options` (see [`Self::open_with`]).
    pub fn backbone_with(
        state: &State,
        state_path: &Path,
        model: Option<&Path>,
        options: &LoadOptions,
    ) -> Result<Backbone> {
        let path = match model {
            Some(path) => path.to_path_buf(),
            None => state.model_file(state_path)?,
        };
        let options = LoadOptions {
            feature_tensor: Some(
                options
                    .feature_tensor
                    .clone()
                    .unwrap_or_else(|| state.backbone().feature_tensor.clone()),
            ),
            for_state: Some((state_path.into(), state.backbone().clone())),
            ..options.clone()
        };
        Backbone::load_with(&path, None, &options)
    }

    /// What an application opens: `state` if that file exists (its model found as
    /// [`Self::open_with`] finds it, unless `model` names it), else a fresh state for `model`
    /// (an ONNX file with its spec beside it, or a pack). The Python and C bindings' constructor.
    pub fn open_or_create(
        model: Option<&Path>,
        state: Option<&Path>,
        options: &LoadOptions,
    ) -> Result<Self> {
        match state {
            Some(path) if path.exists() => Self::open_with(path, model, options),
            _ => {
                let model = model.ok_or_else(|| {
                    Error::InvalidArgument(
                        "a new state needs a model (an ONNX file with its spec beside it, or a \
                         pack)"
                            .into(),
                    )
                })?;
                Self::fresh(Backbone::load_with(model, None, options)?)
            }
        }
    }

    /// A fresh, empty state for `backbone`.
    pub fn fresh(backbone: Backbone) -> Result<Self> {
        let state = State::new(backbone.fingerprint().clone(), backbone.model_path());
        Ok(Retrainer {
            extractor: FeatureExtractor::new(backbone)?,
            state,
            as_is: false,
            merged: Vec::new(),
        })
    }

    /// Classifies with the model as it is, no state: `backbone` loaded to the model's own
    /// output ([`crate::backbone::LoadOptions::model_output`]), scores are its output values,
    /// classes named by `class_names` (one per output), else by the names an exported model
    /// carries, else numbered 0, 1, …. Evaluation then
    /// takes labels that are class names or class numbers.
    pub fn model_as_is(backbone: Backbone, class_names: Option<Vec<String>>) -> Result<Self> {
        let classes = backbone.feature_dim();
        let class_names = class_names.or_else(|| backbone.labels().map(<[String]>::to_vec));
        let labels = match class_names {
            Some(names) if names.len() != classes => {
                return Err(Error::InvalidArgument(format!(
                    "{} class names were given, but {} has {classes} outputs",
                    names.len(),
                    backbone.model_path().display()
                )));
            }
            Some(names) => names,
            None => (0..classes).map(|i| i.to_string()).collect(),
        };
        let mut state = State::new(backbone.fingerprint().clone(), backbone.model_path());
        state.set_head(Head::identity(labels))?;
        Ok(Retrainer {
            extractor: FeatureExtractor::new(backbone)?,
            state,
            as_is: true,
            merged: Vec::new(),
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state, for changes that need no backbone (a head fit from a store).
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// Adds another state's statistics ([`State::merge`], which drops the head: refit after).
    /// Beyond its refusals, a state whose statistics are those of one merged into this
    /// retrainer before is refused too, also with `distinct_sources`, as `merge` of the CLI
    /// refuses a file listed twice.
    pub fn merge(&mut self, other: &State, path: &Path, distinct_sources: bool) -> Result<()> {
        let digest = other.not_among(&self.merged, path)?;
        self.state.merge(other, path, distinct_sources)?;
        self.merged.push((digest, path.to_path_buf()));
        Ok(())
    }

    pub fn into_state(self) -> State {
        self.state
    }

    pub fn head(&self) -> Result<&Head> {
        self.state.head().ok_or_else(|| {
            Error::Solver("the state has no head yet: run `learn` (or `fit`) first".into())
        })
    }

    /// Streams `source` into the statistics, then refits the head.
    ///
    /// Resuming: a source the state has already read from is continued after the records it
    /// absorbed (unless `relearn`). Checkpoints: with `checkpoint_every`, after each batch
    /// boundary past that many samples, the source's counts are brought up to date and
    /// `checkpoint` gets the state, which then holds exactly the records read so far; the
    /// head is refit only at the end. Without checkpoints nothing leaves this function
    /// before success, so a failure leaves the state file as it was.
    pub fn learn(
        &mut self,
        source: DataSource,
        options: &LearnOptions,
        progress: impl FnMut(usize),
        checkpoint: impl FnMut(&State) -> Result<()>,
    ) -> Result<LearnReport> {
        let streamed = self.stream(source, options, progress, checkpoint)?;
        let fit = self.fit(options.lambda)?;
        Ok(streamed.report(&self.state, fit))
    }

    /// [`Self::learn`] for a device short of memory: streams `source`, then frees the backbone
    /// (plan, weights, workers' buffers) before the refit, so that the network's memory and
    /// the refit's never add up (docs/FOOTPRINT.md); returns the refit state. The CLI's `learn`.
    pub fn learn_and_release(
        mut self,
        source: DataSource,
        options: &LearnOptions,
        progress: impl FnMut(usize),
        checkpoint: impl FnMut(&State) -> Result<()>,
    ) -> Result<(State, LearnReport)> {
        let streamed = self.stream(source, options, progress, checkpoint)?;
        let mut state = self.into_state();
        let fit = state.fit(options.lambda)?;
        let report = streamed.report(&state, fit);
        Ok((state, report))
    }

    /// [`Self::learn`] without the refit (`options.lambda` unused): for a caller that frees
    /// the backbone first, as [`Self::learn_and_release`] does.
    pub fn stream(
        &mut self,
        mut source: DataSource,
        options: &LearnOptions,
        mut progress: impl FnMut(usize),
        mut checkpoint: impl FnMut(&State) -> Result<()>,
    ) -> Result<Streamed> {
        let started = Instant::now();
        if let Some(mu) = options.decay
            && !(mu > 0.0 && mu <= 1.0)
        {
            return Err(Error::InvalidArgument(format!(
                "the forgetting factor μ must be in (0, 1], got {mu}"
            ))
            .for_setting("decay"));
        }
        let source_id = source.id();
        self.state.check_no_overlap(&source_id)?;
        let resumed_after = if options.relearn {
            0
        } else {
            self.state.consumed(&source_id)
        };
        source.skip_records(resumed_after as usize)?;
        let every = options
            .checkpoint_every
            .map(|n| n.div_ceil(BATCH).max(1) * BATCH);
        let dim = self.extractor.dim();
        let mirrors = self.extractor.backbone().recipe().augment == Augment::HorizontalFlip;
        let mut pending: Vec<Sample> = Vec::with_capacity(BATCH);
        let mut features = Vec::with_capacity(2 * BATCH * dim);
        let (mut samples, mut skipped) = (0u64, Vec::new());
        // Counts not yet recorded in the state, and samples since the last checkpoint.
        let (mut consumed_pending, mut samples_pending, mut since_checkpoint) = (0u64, 0u64, 0);
        self.extractor.take_times();
        let (mut decode, mut accumulate) = (0.0, 0.0);
        let mut records = source.enumerate();
        loop {
            let fetching = Instant::now();
            let next = records.next();
            decode += fetching.elapsed().as_secs_f64();
            let last = next.is_none();
            if let Some((i, sample)) = next {
                progress(resumed_after as usize + i + 1);
                consumed_pending += 1;
                let usable = sample.and_then(|s| {
                    s.require_label()?;
                    self.extractor.check_sample(&s)?;
                    Ok(s)
                });
                match usable {
                    Ok(s) => pending.push(s),
                    Err(e) if options.skip_bad && e.is_bad_sample() => {
                        skipped.push(e.to_string());
                    }
                    Err(e) => return Err(e),
                }
                if pending.len() < BATCH {
                    continue;
                }
            }
            self.extractor
                .samples_and_mirrors_into(&pending, &mut features, mirrors)?;
            let mut labels = pending
                .iter()
                .map(|s| Ok(self.state.label_index(s.require_label()?)))
                .collect::<Result<Vec<_>>>()?;
            if mirrors {
                labels.extend_from_within(..);
            }
            let folding = Instant::now();
            self.state
                .fold(&features, &labels, &source_id, options.decay)?;
            accumulate += folding.elapsed().as_secs_f64();
            samples += labels.len() as u64;
            samples_pending += labels.len() as u64;
            since_checkpoint += pending.len();
            pending.clear();
            if last {
                break;
            }
            if every.is_some_and(|n| since_checkpoint >= n) {
                self.state
                    .record_source(&source_id, consumed_pending, samples_pending);
                (consumed_pending, samples_pending, since_checkpoint) = (0, 0, 0);
                checkpoint(&self.state)?;
            }
        }
        self.state
            .record_source(&source_id, consumed_pending, samples_pending);
        let stages = StageTimes {
            decode,
            accumulate,
            ..self.extractor.take_times()
        };
        if samples == 0 && resumed_after == 0 {
            return Err(Error::data(&source_id, "no usable samples"));
        }
        Ok(Streamed {
            source: source_id,
            resumed_after,
            samples,
            skipped,
            seconds_features: started.elapsed().as_secs_f64(),
            stages,
            engine: self.extractor.backbone().engine_description(),
        })
    }

    /// Forgets the samples of `source` (exact unlearning, see [`State::forget`]): their
    /// features are recomputed through the backbone and subtracted, then the head is refit.
    /// All or nothing: on any error the state is unchanged.
    pub fn forget(
        &mut self,
        source: DataSource,
        lambda: Option<f64>,
        mut progress: impl FnMut(usize),
    ) -> Result<ForgetReport> {
        let started = Instant::now();
        let source_id = source.id();
        let dim = self.extractor.dim();
        let mirrors = self.extractor.backbone().recipe().augment == Augment::HorizontalFlip;
        let mut rows = FeatureSet {
            dim,
            labels: Vec::new(),
            features: Vec::new(),
            label_ids: Vec::new(),
        };
        let before = self.state.clone();
        let mut forgotten = 0u64;
        let subtract_all = || -> Result<()> {
            let mut pending: Vec<Sample> = Vec::with_capacity(BATCH);
            let mut records = source.enumerate().peekable();
            while let Some((i, sample)) = records.next() {
                progress(i + 1);
                let sample = sample?;
                sample.require_label()?;
                pending.push(sample);
                if pending.len() < BATCH && records.peek().is_some() {
                    continue;
                }
                // Samples learned with their mirrors are forgotten with them.
                self.extractor
                    .samples_and_mirrors_into(&pending, &mut rows.features, mirrors)?;
                rows.label_ids.clear();
                for sample in pending.drain(..) {
                    let label = sample.require_label()?;
                    let id = match rows.labels.iter().position(|l| l == label) {
                        Some(i) => i,
                        None => {
                            rows.labels.push(label.to_string());
                            rows.labels.len() - 1
                        }
                    };
                    rows.label_ids.push(id);
                }
                if mirrors {
                    rows.label_ids.extend_from_within(..);
                }
                self.state.forget_statistics(&rows)?;
                forgotten += rows.label_ids.len() as u64;
            }
            Ok(())
        };
        if let Err(e) = subtract_all() {
            self.state = before;
            return Err(e);
        }
        if forgotten == 0 {
            return Err(Error::data(&source_id, "no samples to forget"));
        }
        let fit = match self.state.fit(lambda) {
            Ok(fit) => fit,
            Err(e) => {
                self.state = before;
                return Err(e);
            }
        };
        self.state.forget_source(&source_id, forgotten);
        Ok(ForgetReport {
            source: source_id,
            forgotten,
            total_samples: self.state.stats().samples(),
            labels: self.state.stats().labels().to_vec(),
            seconds: started.elapsed().as_secs_f64(),
            fit,
        })
    }

    /// Re-solves the head from the statistics: at `lambda`, or at the GCV choice.
    pub fn fit(&mut self, lambda: Option<f64>) -> Result<FitReport> {
        self.state.fit(lambda)
    }

    /// Accuracy, per-class accuracy and confusion matrix on a labelled source.
    pub fn evaluate(
        &mut self,
        source: DataSource,
        mut progress: impl FnMut(usize),
    ) -> Result<EvalReport> {
        let head = self.head()?.clone();
        let mut confusion = Confusion::new(&head).numbered(self.as_is);
        let dim = self.extractor.dim();
        let (mut pending, mut features) = (Vec::with_capacity(BATCH), Vec::new());
        let mut truths = Vec::with_capacity(BATCH);
        let mut records = source.enumerate().peekable();
        while let Some((i, sample)) = records.next() {
            progress(i + 1);
            let sample = sample?;
            truths.push(confusion.truth(sample.require_label()?)?);
            pending.push(sample);
            if pending.len() < BATCH && records.peek().is_some() {
                continue;
            }
            features.resize(pending.len() * dim, 0.0);
            self.extractor.samples_into(&pending, &mut features)?;
            for (truth, feature) in truths.drain(..).zip(features.chunks(dim)) {
                confusion.add(truth, &head.scores(feature)?);
            }
            pending.clear();
        }
        confusion.report()
    }

    /// Penultimate features of `samples`, row major (`samples.len()` × [`Self::dim`]).
    pub fn features(&mut self, samples: &[Sample]) -> Result<Vec<f32>> {
        let mut out = vec![0.0; samples.len() * self.extractor.dim()];
        for (chunk, rows) in samples
            .chunks(BATCH)
            .zip(out.chunks_mut(BATCH * self.extractor.dim()))
        {
            self.extractor.samples_into(chunk, rows)?;
        }
        Ok(out)
    }

    /// Test-time flip averaging for [`Self::evaluate`], [`Self::predict_file`] and
    /// [`Self::features`]: each image's features are the mean of its own and its mirror's.
    /// Refused for a model fed with tensors.
    pub fn set_flip_average(&mut self, on: bool) -> Result<()> {
        self.extractor.set_flip_average(on)
    }

    /// The model file the backbone was loaded from (what `export` rewrites).
    pub fn model_path(&self) -> &Path {
        self.extractor.backbone().model_path()
    }

    /// The feature dimension d.
    pub fn dim(&self) -> usize {
        self.extractor.dim()
    }

    /// Top-`k` labels of each sample, in order (images in memory:
    /// [`crate::data::SampleList::from_images`]).
    pub fn predict(&mut self, samples: &[Sample], k: usize) -> Result<Vec<Vec<Scored>>> {
        let dim = self.dim().max(1);
        let features = self.features(samples)?;
        let head = self.head()?;
        features.chunks(dim).map(|row| head.top_k(row, k)).collect()
    }

    /// Top-`k` labels of each sample in a file: one image or `.npy` tensor, or each sample
    /// of a `.npy` array of them (shape (N, …) for a model fed with tensors of shape …),
    /// named `file#index`.
    pub fn predict_path(&mut self, path: &Path, k: usize) -> Result<Vec<Prediction>> {
        let rank = self
            .extractor
            .backbone()
            .spec()
            .input
            .tensor()
            .map(|t| t.shape.len());
        let is_array = crate::data::is_npy_name(path)
            && rank.is_some_and(|r| crate::data::npy_shape(path).is_ok_and(|s| s.len() == r + 1));
        if !is_array {
            return Ok(vec![self.predict_file(path, k)?]);
        }
        let mut source = crate::data::NpyArraySource::open_unlabelled(path)?;
        let mut predictions = Vec::new();
        loop {
            let batch = source.by_ref().take(BATCH).collect::<Result<Vec<_>>>()?;
            if batch.is_empty() {
                return Ok(predictions);
            }
            for (sample, top) in batch.iter().zip(self.predict(&batch, k)?) {
                predictions.push(Prediction {
                    file: sample.id.clone(),
                    top,
                });
            }
        }
    }

    /// Top-`k` labels of a sample file: an image, or a `.npy` tensor.
    pub fn predict_file(&mut self, path: &Path, k: usize) -> Result<Prediction> {
        let feature = self.extractor.sample_file(path)?;
        Ok(Prediction {
            file: path.display().to_string(),
            top: self.head()?.top_k(&feature, k)?,
        })
    }
}
