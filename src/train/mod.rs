//! Full fast retraining on the desktop (cargo feature `train`): the paper's §3.
//!
//! Each epoch freezes a random `round(N_conv·(1 − ra_e))` of the conv layers, runs one epoch of
//! SGD with momentum on the rest (frozen layers get no gradient), then — in the `fast` and
//! `sgd+mp` modes — extracts the training features with the updated network (forward only) and
//! refits the dense head in closed form with the edge solver ([`crate::state::State::fit`]),
//! and evaluates. Epoch 0 is the edge-only refit on the pretrained backbone: the floor, and
//! the head every mode starts from. The model runs in a small interpreter ([`graph`]) on burn
//! (autodiff over its `flex` CPU backend, or a GPU backend with `train-wgpu` / `train-cuda`).

pub mod graph;
mod options;
mod output;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{DType, Device, Tensor, activation};

use crate::backbone::Fingerprint;
use crate::data::{DataSource, Sample};
use crate::error::{Error, Result};
use crate::head::weights_view;
use crate::nalgebra::DMatrix;
use crate::preprocess::Preprocessor;
use crate::rng::SplitMix64;
use crate::spec::ModelSpec;
use crate::state::State;
pub use graph::Graph;
pub use options::{DeviceChoice, EpochMetrics, Mode, RetrainOptions, Schedule};
pub use output::{Checkpoint, RetrainOutput};

/// Labelled images in memory with the label index of each (labels sorted by name).
pub struct LabelledSet {
    pub samples: Vec<Sample>,
    pub targets: Vec<usize>,
    pub source_id: String,
}

impl LabelledSet {
    /// Indexes `samples` by `labels`; a label outside them is an error naming it.
    pub fn new(samples: Vec<Sample>, labels: &[String], source_id: String) -> Result<Self> {
        let targets = samples
            .iter()
            .map(|s| {
                let label = s.require_label()?;
                labels.iter().position(|l| l == label).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{}: label '{label}' is not among the training labels ({}); the head \
                         cannot predict it",
                        s.id,
                        labels.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LabelledSet {
            samples,
            targets,
            source_id,
        })
    }

    /// The sorted distinct labels of `samples` (at least two).
    pub fn labels_of(samples: &[Sample]) -> Result<Vec<String>> {
        let mut labels: Vec<String> = samples
            .iter()
            .map(|s| s.require_label().map(String::from))
            .collect::<Result<_>>()?;
        labels.sort();
        labels.dedup();
        if labels.len() < 2 {
            return Err(Error::InvalidArgument(format!(
                "the training data has {} label(s); a classifier needs at least 2",
                labels.len()
            )));
        }
        Ok(labels)
    }
}

/// Reads `model` for retraining: the interpreter graph, the model's spec (beside it) and the
/// file's sha256 (what checkpoints and the output state are tied to).
pub fn load_model(model: &Path) -> Result<(Graph, ModelSpec, String)> {
    // The model first: a missing model is "model file not found", not "its spec is missing".
    let (mut proto, sha256) = crate::onnx::read_model(model)?;
    let spec = ModelSpec::load(&ModelSpec::path_for_model(model))?;
    crate::onnx::qdq::dequantize(crate::onnx::graph_of_mut(&mut proto, model)?, model)?;
    Ok((Graph::from_proto(&proto, model)?, spec, sha256))
}

/// Every sample of `source` in memory (with the source's id): training revisits them each
/// epoch. Decoded images are small next to the network's activations.
pub fn read_samples(source: DataSource) -> Result<(Vec<Sample>, String)> {
    let id = source.id();
    let samples = source.collect::<Result<Vec<_>>>()?;
    if samples.is_empty() {
        return Err(Error::data(&id, "no samples"));
    }
    Ok((samples, id))
}

/// The network being retrained, with what training needs around it.
pub struct Trainer {
    pub graph: Graph,
    pub spec: ModelSpec,
    pub labels: Vec<String>,
    pub options: RetrainOptions,
    device: Device,
    dtype: DType,
    preprocessor: Preprocessor,
    /// Momentum buffers, one per parameter (empty until first used).
    velocity: Vec<Vec<f32>>,
}

/// What one refit made: the statistics-backed state (features of the current network) and λ.
pub struct Refit {
    pub state: State,
    pub lambda: f64,
}

impl Trainer {
    /// `graph` read from the model whose `spec` (at its own size) is given; trains at
    /// `options.size`.
    pub fn new(
        graph: Graph,
        spec: &ModelSpec,
        labels: Vec<String>,
        options: RetrainOptions,
    ) -> Result<Self> {
        if options.batch == 0 {
            return Err(
                Error::InvalidArgument("the batch must hold at least 1 image".into())
                    .for_setting("batch"),
            );
        }
        if options.epochs == 0 {
            return Err(
                Error::InvalidArgument("at least 1 epoch must run".into()).for_setting("epochs")
            );
        }
        if !(0.0..1.0).contains(&options.momentum) {
            return Err(Error::InvalidArgument(format!(
                "the momentum must be in [0, 1), got {}",
                options.momentum
            ))
            .for_setting("momentum"));
        }
        let Some((input, _)) = spec.image() else {
            return Err(Error::InvalidArgument(format!(
                "retrain trains image models; '{}' takes tensors (its spec's input is a \
                 tensor): adapt its head with `learn` instead",
                spec.name
            )));
        };
        let spec = if options.size == input.height && options.size == input.width {
            spec.clone()
        } else {
            spec.at_input_size(options.size)?
        };
        let device = options.device.device()?;
        let velocity = vec![Vec::new(); graph.params.len()];
        Ok(Trainer {
            preprocessor: Preprocessor::new(&spec),
            graph,
            spec,
            labels,
            options,
            device,
            dtype: DType::F32,
            velocity,
        })
    }

    /// Preprocessed images of `samples` as one tensor on `device` in the model's layout
    /// (N×3×H×W, or N×H×W×3 for an NHWC model such as tf2onnx writes).
    fn images(&mut self, samples: &[&Sample], device: &Device) -> Result<Tensor<4>> {
        let per = self.preprocessor.input_len();
        let mut data = vec![0.0f32; per * samples.len()];
        for (s, out) in samples.iter().zip(data.chunks_mut(per)) {
            self.preprocessor.tensor_into(&s.input, &s.id, out)?;
        }
        let n = samples.len();
        let shape = match self.spec.input.shape().as_slice() {
            [_, a, b, c] => [n, *a, *b, *c],
            other => unreachable!("an image input is 4-D, got {other:?}"),
        };
        Ok(graph::tensor_from(&data, shape, device, self.dtype))
    }

    /// Features of every sample (forward only, running statistics), as f32 rows: computed on
    /// the device chunk by chunk and read back once.
    pub fn features(&mut self, set: &LabelledSet) -> Result<Vec<f32>> {
        let rows = graph::to_f32(self.forward_all(set, true)?)?;
        if !rows.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteFeatures {
                what: "retrain features (the network diverged: lower the learning rate)".into(),
            }
            .for_setting("lr"));
        }
        Ok(rows)
    }

    /// The features (or, without `features_only`, the logits) of every sample of `set`, one
    /// row each, as one tensor on the device: the parameters go up once, the rows stay there
    /// (so a GPU is not made to wait for a read after every chunk).
    fn forward_all(&mut self, set: &LabelledSet, features_only: bool) -> Result<Tensor<2>> {
        let params = self
            .graph
            .param_tensors(&self.device, self.dtype, &HashSet::new());
        let device = self.device.clone();
        let mut parts = Vec::with_capacity(set.samples.len().div_ceil(64));
        for chunk in set.samples.chunks(64) {
            let refs: Vec<&Sample> = chunk.iter().collect();
            let x = self.images(&refs, &device)?;
            let out = self
                .graph
                .forward(x, &params, &HashSet::new(), features_only)?;
            parts.push(match out.logits {
                Some(logits) => logits,
                None => out.features,
            });
        }
        Ok(Tensor::cat(parts, 0))
    }

    /// Closed-form refit of the dense head from the training features (the edge solver), written
    /// back into the graph; momentum of the head is reset.
    pub fn refit(&mut self, set: &LabelledSet, fingerprint: Fingerprint) -> Result<Refit> {
        let rows = self.features(set)?;
        let dim = fingerprint.feature_dim;
        let mut state = State::new(fingerprint, Path::new(""));
        for label in &self.labels {
            state.label_index(label);
        }
        for (chunk, targets) in rows.chunks(64 * dim).zip(set.targets.chunks(64)) {
            state.fold(chunk, targets, &set.source_id, None)?;
        }
        state.record_source(
            &set.source_id,
            set.samples.len() as u64,
            set.samples.len() as u64,
        );
        let fit = state.fit(self.options.lambda)?;
        let head = state.head().expect("fit made a head");
        let (weight_rows, bias) = gemm_of_head(&head.weights, dim, self.labels.len());
        self.graph.set_head(weight_rows, bias);
        let (w, b) = self.graph.head_params();
        self.velocity.resize(self.graph.params.len(), Vec::new());
        self.velocity[w].clear();
        if let Some(b) = b {
            self.velocity[b].clear();
        }
        Ok(Refit {
            state,
            lambda: fit.lambda,
        })
    }

    /// Test accuracy of the whole network (its own head).
    pub fn accuracy(&mut self, set: &LabelledSet) -> Result<f64> {
        let classes = self.graph.classes();
        let logits = graph::to_f32(self.forward_all(set, false)?)?;
        let correct = logits
            .chunks(classes)
            .zip(&set.targets)
            .filter(|(row, t)| {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i);
                best == Some(**t)
            })
            .count();
        Ok(correct as f64 / set.samples.len().max(1) as f64)
    }

    /// The conv layers SGD trains in `epoch` (1-based): all, or for `fast` a random
    /// `N − round(N·(1 − ra))` of them (drawn from the seed and the epoch, so a resumed run draws
    /// the same).
    pub fn trained_layers(&self, epoch: usize) -> Vec<usize> {
        let n = self.graph.conv_layers.len();
        if self.options.mode != Mode::Fast {
            return (0..n).collect();
        }
        let frozen = (n as f64 * (1.0 - self.options.ra.at(epoch))).round() as usize;
        let mut rng = SplitMix64(self.options.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
        let mut trained: Vec<usize> = rng.permutation(n)[frozen.min(n)..].to_vec();
        trained.sort_unstable();
        trained
    }

    /// One epoch of SGD with momentum (PyTorch's rule: v = μv + g, w −= lr·v) over `set` in a
    /// seeded random order, training the dense layers, the given conv layers and batch
    /// normalisations that follow no conv. Returns the mean loss.
    ///
    /// Weights, momentum and running statistics live on the device for the whole epoch: they
    /// go up once at its start and come back once at its end (for the checkpoint), and nothing
    /// is read back between batches, so a GPU runs the epoch without waiting on the host.
    pub fn sgd_epoch(&mut self, set: &LabelledSet, epoch: usize, layers: &[usize]) -> Result<f64> {
        // The factors rounded to f32 first, as the update is in f32.
        let lr = self.options.lr.at(epoch) as f32;
        let momentum = self.options.momentum as f32;
        let mut tracked: HashSet<usize> = self.graph.dense_params().into_iter().collect();
        tracked.extend(self.graph.loose_bn_params());
        for &l in layers {
            tracked.extend(self.graph.conv_layers[l].params.iter().copied());
        }
        let mut train_bn = self.graph.bn_nodes_of(layers);
        train_bn.extend(self.graph.loose_bn_nodes());
        self.velocity.resize(self.graph.params.len(), Vec::new());
        let device = self.device.clone();
        let autodiff = device.clone().autodiff();
        let mut weights = self
            .graph
            .param_tensors(&device, self.dtype, &HashSet::new());
        let mut velocity: Vec<Option<Tensor<1>>> = self
            .velocity
            .iter()
            .map(|v| (!v.is_empty()).then(|| graph::flat_tensor(v, &device, self.dtype)))
            .collect();
        let mut changed: HashSet<usize> = HashSet::new();
        let order =
            SplitMix64(self.options.seed.wrapping_add(epoch as u64)).permutation(set.samples.len());
        let mut loss_sum: Option<Tensor<1>> = None;
        let mut batches = 0usize;
        for batch in order.chunks(self.options.batch) {
            let refs: Vec<&Sample> = batch.iter().map(|&i| &set.samples[i]).collect();
            let x = self.images(&refs, &autodiff)?;
            let targets: Vec<usize> = batch.iter().map(|&i| set.targets[i]).collect();
            let params: Vec<Tensor<1>> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let t = w.clone().autodiff();
                    if tracked.contains(&i) {
                        t.require_grad()
                    } else {
                        t
                    }
                })
                .collect();
            let out = self.graph.forward(x, &params, &train_bn, false)?;
            let loss = cross_entropy(out.logits.expect("full pass"), &targets, self.dtype);
            let grads = loss.backward();
            let loss = loss.without_autodiff();
            loss_sum = Some(match loss_sum {
                Some(sum) => sum.add(loss),
                None => loss,
            });
            for &i in &tracked {
                let Some(g) = params[i].grad(&grads) else {
                    continue;
                };
                let v = match velocity[i].take() {
                    Some(v) => v.mul_scalar(momentum).add(g),
                    None => g,
                };
                weights[i] = weights[i].clone().sub(v.clone().mul_scalar(lr));
                velocity[i] = Some(v);
                changed.insert(i);
            }
            changed.extend(
                self.graph
                    .update_running_stats(out.batch_stats, &mut weights),
            );
            batches += 1;
        }
        let mean_loss = match loss_sum {
            Some(sum) => graph::to_f32(sum)?[0] as f64 / batches as f64,
            None => 0.0,
        };
        if !mean_loss.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "epoch {epoch}: the loss became {mean_loss} (diverged); lower the learning rate"
            ))
            .for_setting("lr"));
        }
        for i in changed {
            self.graph.params[i].values = graph::to_f32(weights[i].clone())?;
        }
        for (host, v) in self.velocity.iter_mut().zip(velocity) {
            if let Some(v) = v {
                *host = graph::to_f32(v)?;
            }
        }
        Ok(mean_loss)
    }

    /// The momentum buffers (for checkpoints).
    pub fn velocity(&self) -> &[Vec<f32>] {
        &self.velocity
    }

    pub fn set_velocity(&mut self, velocity: Vec<Vec<f32>>) {
        self.velocity = velocity;
        self.velocity.resize(self.graph.params.len(), Vec::new());
    }
}

/// The edge head's `(dim + 1) × classes` weights (last row the bias) as the network's dense
/// layer: `classes × dim` rows (Gemm with transB) and the bias.
fn gemm_of_head(weights: &[f64], dim: usize, classes: usize) -> (Vec<f32>, Vec<f32>) {
    let w = weights_view(weights, dim, classes);
    // Gemm's rows (transB) are the head's columns: W's first `dim` rows read column by column.
    let rows = w.rows(0, dim).iter().map(|&v| v as f32).collect();
    let bias = w.row(dim).iter().map(|&v| v as f32).collect();
    (rows, bias)
}

/// The inverse of [`gemm_of_head`].
fn head_of_gemm(rows: &[f32], bias: &[f32], dim: usize, classes: usize) -> Vec<f64> {
    // W ((dim + 1) × classes) is Gemm's rows as columns, then the bias as its last row.
    let w = DMatrix::from_fn(dim + 1, classes, |i, c| {
        f64::from(if i < dim { rows[c * dim + i] } else { bias[c] })
    });
    // The head keeps W row major: W's transpose, column major.
    w.transpose().as_slice().to_vec()
}

/// Mean softmax cross-entropy of `logits` (N×C) against the class index of each row: the
/// SGD loss.
pub fn cross_entropy(logits: Tensor<2>, targets: &[usize], dtype: DType) -> Tensor<1> {
    let [n, classes] = logits.dims();
    let mut onehot = vec![0.0f32; n * classes];
    for (row, &t) in targets.iter().enumerate() {
        onehot[row * classes + t] = 1.0;
    }
    let onehot = graph::tensor_from(&onehot, [n, classes], &logits.device(), dtype);
    activation::log_softmax(logits, 1)
        .mul(onehot)
        .sum()
        .mul_scalar(-1.0 / n as f64)
}

/// What `retrain` needs beyond the options.
pub struct RetrainJob<'a> {
    pub model: &'a Path,
    pub train: LabelledSet,
    pub test: LabelledSet,
    pub out: PathBuf,
    pub checkpoint: PathBuf,
    pub resume: bool,
}

/// Runs the whole schedule (or the rest of it, with `resume`), calling `on_epoch` after each
/// epoch (0 first), checkpointing after each, and writes the retrained model.
pub fn retrain(
    job: RetrainJob<'_>,
    mut trainer: Trainer,
    model_sha256: &str,
    mut on_epoch: impl FnMut(&EpochMetrics) -> Result<()>,
) -> Result<RetrainOutput> {
    let mut metrics: Vec<EpochMetrics> = Vec::new();
    let mut last_refit: Option<Refit> = None;
    let start = if job.resume {
        // Any failure here is one of resuming: starting again without it is the way out.
        let resuming = |e: Error| e.for_setting("resume");
        let checkpoint = Checkpoint::load(&job.checkpoint).map_err(resuming)?;
        checkpoint.check(model_sha256, &trainer).map_err(resuming)?;
        checkpoint.restore(&mut trainer).map_err(resuming)?;
        metrics = checkpoint.metrics.clone();
        for m in &metrics {
            on_epoch(m)?;
        }
        metrics.last().map_or(0, |m| m.epoch + 1)
    } else {
        0
    };
    // The feature width, from one forward pass.
    let feature_dim = {
        let device = trainer.device.clone();
        let x = trainer.images(&[&job.train.samples[0]], &device)?;
        let params = trainer
            .graph
            .param_tensors(&device, trainer.dtype, &HashSet::new());
        let out = trainer.graph.forward(x, &params, &HashSet::new(), true)?;
        out.features.dims()[1]
    };
    let fingerprint = |graph: &Graph| Fingerprint {
        model_sha256: model_sha256.to_string(),
        feature_tensor: graph.feature_tensor.clone(),
        feature_dim,
    };
    for epoch in start..=trainer.options.epochs {
        let mode = trainer.options.mode;
        let mut m = EpochMetrics {
            mode: mode.name().into(),
            epoch,
            ra: None,
            lr: None,
            trained_convs: 0,
            frozen_convs: 0,
            train_loss: None,
            test_accuracy: 0.0,
            lambda: None,
            seconds_sgd: 0.0,
            seconds_refit: 0.0,
            seconds_eval: 0.0,
            seconds_train: 0.0,
            device_memory_bytes: None,
        };
        if epoch > 0 {
            let layers = trainer.trained_layers(epoch);
            m.ra = (mode == Mode::Fast).then(|| trainer.options.ra.at(epoch));
            m.lr = Some(trainer.options.lr.at(epoch));
            m.trained_convs = layers.len();
            m.frozen_convs = trainer.graph.conv_layers.len() - layers.len();
            let started = Instant::now();
            m.train_loss = Some(trainer.sgd_epoch(&job.train, epoch, &layers)?);
            m.seconds_sgd = started.elapsed().as_secs_f64();
        }
        if epoch == 0 || mode.refits() {
            let started = Instant::now();
            let refit = trainer.refit(&job.train, fingerprint(&trainer.graph))?;
            m.lambda = Some(refit.lambda);
            last_refit = Some(refit);
            m.seconds_refit = started.elapsed().as_secs_f64();
        } else {
            last_refit = None;
        }
        m.seconds_train = m.seconds_sgd + m.seconds_refit;
        let started = Instant::now();
        m.test_accuracy = trainer.accuracy(&job.test)?;
        m.seconds_eval = started.elapsed().as_secs_f64();
        // The epoch's tensors are gone; hand the pages the allocator kept for them back.
        trainer.device.memory_cleanup();
        m.device_memory_bytes = trainer
            .device
            .memory_pool_usage()
            .map(|usage| usage.bytes_reserved);
        metrics.push(m.clone());
        Checkpoint::new(model_sha256, &trainer, metrics.clone()).save(&job.checkpoint)?;
        on_epoch(&m)?;
    }
    let refit = match last_refit {
        Some(r) => r,
        // `sgd` keeps its SGD-trained head: the state gets the statistics of its features and
        // that head, so the retrained ONNX and its state predict alike (`fit` on the state
        // gives the closed-form head instead).
        None => {
            let params = trainer.graph.params.clone();
            let mut r = trainer.refit(&job.train, fingerprint(&trainer.graph))?;
            trainer.graph.params = params;
            let (w, b) = trainer.graph.head_params();
            let classes = trainer.graph.classes();
            let bias = b.map_or_else(
                || vec![0.0; classes],
                |b| trainer.graph.params[b].values.clone(),
            );
            if let Some(head) = r.state.head() {
                let mut sgd_head = head.clone();
                sgd_head.weights =
                    head_of_gemm(&trainer.graph.params[w].values, &bias, feature_dim, classes);
                r.state.set_head(sgd_head)?;
            }
            r
        }
    };
    output::write(&job, &trainer, refit.state, metrics)
}
