//! The frozen backbone: an ONNX image classifier run by tract up to its penultimate tensor.
//! This is the only module that runs tract; with the `onnxruntime` feature, the same model can
//! be run by onnxruntime instead ([`Engine`], [`crate::onnxruntime_engine`]), with the same
//! fingerprint and features.
//!
//! Loading finds the dense head (the last Gemm/MatMul whose weight is an initializer) and
//! takes its input as the feature tensor, unless the caller names one. The input shape is
//! fixed to a batch of one (faster per image than batching in tract 0.23) and the plan is
//! optimised once.

mod automatic;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::*;

pub use crate::durable::Fingerprint;
use crate::error::{Error, Result};
use crate::feature_recipe::{AUTOMATIC_STAGES, Augment, FeatureRecipe, Transform, apply_transform};
pub use crate::onnx::{DenseHeadInfo, find_dense_head, read_model_file};
use crate::onnx::{
    check_input, check_spec_file, dims, forget_intermediate_shapes, graph_of, graph_of_mut,
    image_input, show_dims,
};
use crate::spec::{InputSpec, Layout, ModelSpec, Preset};
pub use automatic::automatic_tensors;

/// The transform of the automatic recipe: none. On the full Fashion-MNIST the signed square
/// root gave +0.5 points to the penultimate tensor alone but −0.1 to the automatic recipe's
/// tensors (docs/METHODS.md, "Better features").
pub const DEFAULT_TRANSFORM: Transform = Transform::None;
/// The augmentation of the automatic recipe.
pub const DEFAULT_AUGMENT: Augment = Augment::None;

/// The tract release Cargo.toml pins.
const TRACT_VERSION: &str = "0.23.9";

static THREADS: OnceLock<usize> = OnceLock::new();
static ENGINE: OnceLock<(Engine, Option<PathBuf>)> = OnceLock::new();

/// What runs the forward pass. Both give the same features (within 1e-4), so states,
/// stores and packs do not record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// tract, built in (the edge build).
    #[default]
    Tract,
    /// onnxruntime's `libonnxruntime.so`, loaded at run time (cargo feature `onnxruntime`).
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl Engine {
    pub fn parse(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "tract" => Ok(Engine::Tract),
            "onnxruntime" | "ort" => Ok(Engine::OnnxRuntime),
            _ => Err(Error::InvalidArgument(format!(
                "unknown engine '{text}': tract or onnxruntime"
            ))),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Tract => "tract",
            Engine::OnnxRuntime => "onnxruntime",
        })
    }
}

/// Sets the engine of every backbone loaded without [`LoadOptions::engine`], process-wide
/// (the first call wins), and the onnxruntime library to load (else `$ORT_DYLIB_PATH`).
pub fn set_engine(engine: Engine, onnxruntime_library: Option<PathBuf>) {
    ENGINE.get_or_init(|| (engine, onnxruntime_library));
}

/// The engines this build can run.
pub const ENGINES_BUILT: &[Engine] = &[
    Engine::Tract,
    #[cfg(feature = "onnxruntime")]
    Engine::OnnxRuntime,
];

/// What [`set_engine`] chose (tract if it was not called).
pub fn engine() -> Engine {
    ENGINE.get().map_or(Engine::Tract, |(e, _)| *e)
}

/// The most threads the backbone may be given: more than any board or desktop has cores, far
/// fewer than make a thread pool fail to start (each thread takes a stack and a guard page:
/// 100,000 of them exhausted memory and tract's pool panicked).
pub const MAX_THREADS: usize = 256;

/// Sets how many cores the backbone uses, process-wide (the first call wins): a single image
/// runs on that many threads of tract's matrix products; streams of images
/// ([`crate::features::FeatureExtractor`]) run that many images at once instead. Clamped to
/// 1..=[`MAX_THREADS`] (the CLI and Python refuse values outside it before calling this).
pub fn set_threads(threads: usize) {
    let threads = threads.clamp(1, MAX_THREADS);
    THREADS.get_or_init(|| {
        if threads > 1 {
            tract_linalg::multithread::set_default_executor(
                tract_linalg::multithread::Executor::multithread(threads),
            );
        }
        threads
    });
}

/// What [`set_threads`] chose (1 if it was not called).
pub fn threads() -> usize {
    THREADS.get().copied().unwrap_or(1)
}

/// Runs `f` with tract's matrix products on the calling thread only, whatever
/// [`set_threads`] chose: for work that is already spread over threads one image each.
pub fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    tract_linalg::multithread::multithread_tract_scope(
        tract_linalg::multithread::Executor::SingleThread,
        f,
    )
}

/// One forward-pass context of a [`Backbone`] (tract's run state, kept between images).
/// Runners of one backbone share its plan and can work in parallel threads.
pub struct Runner {
    state: RunState,
    input_shape: [usize; 4],
    model_path: PathBuf,
    assembly: Arc<Assembly>,
}

/// One run's input as tract's tensor (`model` for the message).
fn input_tensor(shape: &[usize; 4], input: &[f32], model: &Path) -> Result<Tensor> {
    Tensor::from_shape(shape, input).map_err(|e| Error::Model {
        path: model.into(),
        reason: format!("bad input tensor: {e}"),
    })
}

/// A run context of the backbone's engine.
enum RunState {
    Tract(TypedSimpleState),
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(crate::onnxruntime_engine::OrtRunner),
}

/// The prepared model of the backbone's engine.
enum Plan {
    Tract(Arc<TypedRunnableModel>),
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(Arc<crate::onnxruntime_engine::OrtModel>),
}

/// How the plan's outputs become one feature vector: each output's shape (batch first) and
/// values per image, pooled or not, then the recipe's transform.
#[derive(Debug)]
struct Assembly {
    recipe: FeatureRecipe,
    layout: Layout,
    shapes: Vec<Vec<usize>>,
    values: Vec<usize>,
}

impl Assembly {
    fn new(recipe: FeatureRecipe, layout: Layout, shapes: Vec<Vec<usize>>) -> Self {
        let values = shapes.iter().map(|s| recipe.values_of(s, layout)).collect();
        Assembly {
            recipe,
            layout,
            shapes,
            values,
        }
    }

    /// Values of one image's feature vector.
    fn dim(&self) -> usize {
        self.values.iter().sum()
    }
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("model_path", &self.model_path)
            .finish()
    }
}

impl Runner {
    /// Runs one preprocessed input (see [`crate::preprocess::Preprocessor`]; the backbone's
    /// batch of them back to back) and writes their features into `out`.
    pub fn features_into(&mut self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let fail = |reason: String| Error::Model {
            path: self.model_path.clone(),
            reason,
        };
        match &mut self.state {
            RunState::Tract(state) => {
                let tensor = input_tensor(&self.input_shape, input, &self.model_path)?;
                let outputs = state
                    .run(tvec!(tensor.into()))
                    .map_err(|e| fail(format!("inference failed: {e:#}")))?;
                let views = outputs
                    .iter()
                    .map(|output| {
                        let view = output
                            .to_plain_array_view::<f32>()
                            .map_err(|e| fail(format!("feature tensor is not f32: {e}")))?;
                        view.to_slice()
                            .ok_or_else(|| fail("feature tensor is not contiguous".into()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.assembly
                    .assemble(&views, self.input_shape[0], out, &self.model_path)
            }
            #[cfg(feature = "onnxruntime")]
            RunState::OnnxRuntime(runner) => {
                let (assembly, batch, path) =
                    (&self.assembly, self.input_shape[0], &self.model_path);
                runner.run(self.input_shape, input, |outputs| {
                    let views: Vec<&[f32]> = outputs.iter().map(|(_, v)| *v).collect();
                    assembly.assemble(&views, batch, out, path)
                })
            }
        }
    }
}

/// The time one operation of tract's plan took, summed over the profiled runs
/// ([`crate::benchmark::profile_forward`]: milliseconds per run).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    pub seconds: f64,
}

impl Runner {
    /// Runs `input` `runs` times, timing each operation of tract's plan (`bench --profile`);
    /// in plan order. Empty for onnxruntime (its own profiler says the same).
    pub fn profile(&mut self, input: &[f32], runs: usize) -> Result<Vec<NodeTime>> {
        #[cfg_attr(not(feature = "onnxruntime"), allow(irrefutable_let_patterns))]
        let RunState::Tract(state) = &mut self.state else {
            return Ok(Vec::new());
        };
        let fail = |reason: String| Error::Model {
            path: self.model_path.clone(),
            reason,
        };
        let mut times: Vec<NodeTime> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for _ in 0..runs {
            let tensor = input_tensor(&self.input_shape, input, &self.model_path)?;
            state
                .run_plan_with_eval(tvec!(tensor.into()), |session, op_state, node, inputs| {
                    let started = std::time::Instant::now();
                    let outputs =
                        tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
                    let i = *index.entry(node.id).or_insert_with(|| {
                        times.push(NodeTime {
                            node: node.name.clone(),
                            op: node.op.name().to_string(),
                            seconds: 0.0,
                        });
                        times.len() - 1
                    });
                    times[i].seconds += started.elapsed().as_secs_f64();
                    outputs
                })
                .map_err(|e| fail(format!("inference failed: {e:#}")))?;
        }
        Ok(times)
    }
}

impl Assembly {
    /// Pools and concatenates one run's outputs (`batch` images each) into `out`, one row per
    /// image, then applies the recipe's transform.
    fn assemble(
        &self,
        outputs: &[&[f32]],
        batch: usize,
        out: &mut [f32],
        model: &Path,
    ) -> Result<()> {
        let got: usize = outputs.iter().map(|o| o.len()).sum();
        let expected: usize = self
            .shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum();
        if out.len() != self.dim() * batch || outputs.len() != self.shapes.len() || got != expected
        {
            return Err(Error::FeatureDim {
                what: model.display().to_string(),
                expected: out.len(),
                got: self.dim() * batch,
            });
        }
        let mut offset = 0;
        for ((data, shape), &values) in outputs.iter().zip(&self.shapes).zip(&self.values) {
            let per_image = data.len() / batch;
            for (image, rows) in data.chunks(per_image).zip(out.chunks_mut(self.dim())) {
                crate::feature_recipe::pool_into(
                    image,
                    shape,
                    !self.recipe.is_plain(),
                    self.layout,
                    &mut rows[offset..offset + values],
                );
            }
            offset += values;
        }
        if self.recipe.transform != Transform::None {
            out.chunks_mut(self.dim())
                .for_each(|row| apply_transform(self.recipe.transform, row));
        }
        Ok(())
    }
}

pub struct Backbone {
    plan: Plan,
    assembly: Arc<Assembly>,
    spec: ModelSpec,
    model_path: PathBuf,
    fingerprint: Fingerprint,
    head: Option<DenseHeadInfo>,
    /// Class names stored in the model by `export` (metadata `fastretrain.labels`).
    labels: Option<Vec<String>>,
    input_shape: [usize; 4],
}

/// How to prepare the backbone; the default is what every command uses.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The features to read: a tensor name or a recipe's descriptor
    /// ([`FeatureRecipe::parse`]); default: the spec's recipe, else the automatic one
    /// ([`automatic_tensors`] with [`DEFAULT_TRANSFORM`]).
    pub feature_tensor: Option<String>,
    /// Replaces the recipe's transform.
    pub transform: Option<Transform>,
    /// Replaces the recipe's augmentation.
    pub augment: Option<Augment>,
    /// The state (its file, its backbone) the model is loaded for: another model file is
    /// refused with a message saying so, before tract looks for the state's feature tensor.
    pub for_state: Option<(PathBuf, Fingerprint)>,
    /// Run the whole model to its (first) output instead of stopping at the features: the
    /// model's own classification.
    pub model_output: bool,
    /// The engine; default: [`engine`] (what [`set_engine`] chose).
    pub engine: Option<Engine>,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone")
            .field("model_path", &self.model_path)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Backbone {
    /// Loads `model` with its spec (`model.json` when `spec` is None). `feature_tensor`
    /// overrides both the spec and the automatic choice.
    pub fn load(
        model: &Path,
        spec: Option<ModelSpec>,
        feature_tensor: Option<&str>,
    ) -> Result<Self> {
        Self::load_with(
            model,
            spec,
            &LoadOptions {
                feature_tensor: feature_tensor.map(String::from),
                ..LoadOptions::default()
            },
        )
    }

    /// [`Self::load`] with every option.
    pub fn load_with(model: &Path, spec: Option<ModelSpec>, options: &LoadOptions) -> Result<Self> {
        let feature_tensor = options.feature_tensor.as_deref();
        // A pack is checked by its own checksum: the model file's sha256 is for ONNX files.
        let bytes = crate::onnx::read_model_bytes(model)?;
        if crate::pack::is_pack(&bytes) {
            return Self::load_packed(model, bytes, options);
        }
        let model_sha256 = crate::onnx::model_sha256(&bytes);
        let spec_path = ModelSpec::path_for_model(model);
        let spec_beside = spec.is_none();
        let spec = match spec {
            Some(s) => s,
            None => ModelSpec::load(&spec_path)?,
        };
        if let Some((state, backbone)) = &options.for_state
            && !backbone.model_sha256.eq_ignore_ascii_case(&model_sha256)
        {
            return Err(Error::BackboneMismatch {
                path: state.clone(),
                state: backbone.to_string(),
                model: format!("{} (sha256 {model_sha256})", model.display()),
            });
        }
        if let Some(expected) = &spec.sha256
            && !expected.eq_ignore_ascii_case(&model_sha256)
        {
            return Err(Error::Model {
                path: model.into(),
                reason: format!(
                    "sha256 is {model_sha256} but its spec expects {expected}; \
                     the file was changed or belongs to another spec"
                ),
            });
        }
        let bad = |reason: String| Error::Model {
            path: model.into(),
            reason,
        };
        let mut proto = crate::onnx::parse_model(&bytes, model)?;
        let graph = graph_of_mut(&mut proto, model)?;
        if spec_beside {
            check_spec_file(&spec, model, &spec_path)?;
        }
        check_input(graph, &spec, model, &spec_path)?;
        forget_intermediate_shapes(graph);
        let model_output = graph.output.first().map(|o| o.name.clone());
        let labels = proto
            .metadata_props
            .iter()
            .find(|p| p.key == crate::onnx::LABELS_KEY)
            .and_then(|p| serde_json::from_str::<Vec<String>>(&p.value).ok());
        let head = find_dense_head(&proto);
        let mut recipe = match (feature_tensor, FeatureRecipe::from_spec(&spec)?, &head) {
            _ if options.model_output => FeatureRecipe::plain(
                &model_output.ok_or_else(|| bad("the graph has no output".into()))?,
            ),
            (Some(descriptor), _, _) => FeatureRecipe::parse(descriptor)?,
            (None, Some(recipe), _) => recipe,
            (None, None, Some(h)) => FeatureRecipe::new(
                automatic_tensors(graph_of(&proto, model)?, &h.input, AUTOMATIC_STAGES),
                DEFAULT_TRANSFORM,
                DEFAULT_AUGMENT,
            )?,
            (None, None, None) => return Err(Error::NoDenseHead { path: model.into() }),
        };
        if !options.model_output && (options.transform.is_some() || options.augment.is_some()) {
            recipe = FeatureRecipe::new(
                recipe.tensors,
                options.transform.unwrap_or(recipe.transform),
                options.augment.unwrap_or(recipe.augment),
            )?;
        }
        let feature_tensor = recipe.descriptor();
        let input_shape = input_shape(&spec);
        // The file bytes and the protobuf are freed as soon as tract has its own copy of the
        // graph, so they do not add to the peak memory of optimising it.
        drop(bytes);
        let (plan, assembly) = match options.engine.unwrap_or_else(engine) {
            Engine::Tract => {
                let tensors = recipe.tensors.clone();
                let plan = (move || -> TractResult<_> {
                    let mut m = tract_onnx::onnx().model_for_proto_model(&proto)?;
                    drop(proto);
                    m = m.with_input_fact(0, f32::fact(input_shape).into())?;
                    m.select_outputs_by_name(tensors.iter().map(String::as_str))?;
                    m.into_optimized()?.into_runnable()
                })()
                .map_err(|e| {
                    bad(format!(
                        "cannot prepare it for tensor '{feature_tensor}': {e:#}"
                    ))
                })?;
                let assembly = assembly_of(&plan, recipe, spec.input.layout)
                    .map_err(|reason| bad(format!("tensor '{feature_tensor}' {reason}")))?;
                (Plan::Tract(plan), assembly)
            }
            Engine::OnnxRuntime => {
                onnxruntime_plan(proto, recipe, &spec, input_shape, model, &feature_tensor)?
            }
        };
        let feature_dim = assembly.dim();
        if let Some(expected) = spec.feature_dim
            && !options.model_output
            && options.feature_tensor.is_none()
            && expected != feature_dim
        {
            return Err(bad(format!(
                "tensor '{feature_tensor}' has {feature_dim} values, the spec says {expected}"
            )));
        }
        Ok(Backbone {
            plan,
            assembly: Arc::new(assembly),
            spec,
            model_path: model.into(),
            fingerprint: Fingerprint {
                model_sha256,
                feature_tensor,
                feature_dim,
            },
            head,
            labels,
            input_shape,
        })
    }

    /// A pack ([`crate::pack`]): its tract model is only optimised here, and its identity is
    /// the ONNX file's it was packed from.
    fn load_packed(model: &Path, bytes: Vec<u8>, options: &LoadOptions) -> Result<Self> {
        let (meta, typed) = crate::pack::read_pack(&bytes, model)?;
        drop(bytes);
        // Another model is said before another tensor of it: it says more.
        if let Some((state, backbone)) = &options.for_state
            && !backbone
                .model_sha256
                .eq_ignore_ascii_case(&meta.fingerprint.model_sha256)
        {
            return Err(Error::BackboneMismatch {
                path: state.clone(),
                state: backbone.to_string(),
                model: format!("{} (a pack of {})", model.display(), meta.fingerprint),
            });
        }
        crate::pack::check_request(
            &meta,
            options.model_output,
            options.feature_tensor.as_deref(),
            model,
        )?;
        let bad = |reason: String| Error::Model {
            path: model.into(),
            reason,
        };
        // The pack holds the graph already decluttered (`export::pack`): only tract's codegen
        // pass is left to run. Decluttering it again cost ~30 ms of start-up and gave a plan
        // with bit-identical features at the same speed (MobileNetV2, docs/FOOTPRINT.md).
        let mut typed = typed;
        if options.engine.unwrap_or_else(engine) != Engine::Tract {
            return Err(bad(
                "a pack is a tract model: run it with --engine tract, or give the ONNX file it \
                 was packed from to --engine onnxruntime"
                    .into(),
            ));
        }
        let plan = typed
            .optimize()
            .and_then(|()| typed.into_runnable())
            .map_err(|e| bad(format!("cannot prepare the packed model: {e:#}")))?;
        let recipe = FeatureRecipe::parse(&meta.fingerprint.feature_tensor)?;
        let assembly = assembly_of(&plan, recipe, meta.spec.input.layout).map_err(&bad)?;
        if assembly.dim() != meta.fingerprint.feature_dim {
            return Err(bad(format!(
                "the packed model gives {} features, its metadata says {}; pack it \
                 again with `fastretrain pack`",
                assembly.dim(),
                meta.fingerprint.feature_dim
            )));
        }
        Ok(Backbone {
            plan: Plan::Tract(plan),
            assembly: Arc::new(assembly),
            input_shape: input_shape(&meta.spec),
            spec: meta.spec,
            model_path: model.into(),
            fingerprint: meta.fingerprint,
            head: None,
            labels: meta.labels,
        })
    }

    /// The input tensor's shape: batch first, then the spec's layout.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// Values of one image's input tensor.
    pub fn input_len(&self) -> usize {
        self.input_shape[1..].iter().product()
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    pub fn feature_dim(&self) -> usize {
        self.fingerprint.feature_dim
    }

    /// The model's original dense head, if it has one.
    pub fn dense_head(&self) -> Option<&DenseHeadInfo> {
        self.head.as_ref()
    }

    /// The class names an exported model carries (metadata `fastretrain.labels`), in output
    /// order.
    pub fn labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }

    /// What runs the forward pass.
    pub fn engine(&self) -> Engine {
        match self.plan {
            Plan::Tract(_) => Engine::Tract,
            #[cfg(feature = "onnxruntime")]
            Plan::OnnxRuntime(_) => Engine::OnnxRuntime,
        }
    }

    /// The engine with its version (and, for onnxruntime, the library file).
    pub fn engine_description(&self) -> String {
        match &self.plan {
            Plan::Tract(_) => format!("tract {TRACT_VERSION}"),
            #[cfg(feature = "onnxruntime")]
            Plan::OnnxRuntime(model) => model.description(),
        }
    }

    /// A new forward-pass context (see [`Runner`]); a single image on it runs on
    /// [`threads`] threads with tract, on the calling thread with onnxruntime (whose
    /// streams run one image per worker).
    pub fn runner(&self) -> Result<Runner> {
        self.runner_on(1)
    }

    /// [`Self::runner`] whose onnxruntime session has `threads` intra-op threads (tract's
    /// threads are [`set_threads`]'s): for one image on several cores.
    pub fn runner_on(&self, threads: usize) -> Result<Runner> {
        let state = match &self.plan {
            Plan::Tract(plan) => RunState::Tract(plan.spawn().map_err(|e| Error::Model {
                path: self.model_path.clone(),
                reason: format!("cannot start a run: {e:#}"),
            })?),
            #[cfg(feature = "onnxruntime")]
            Plan::OnnxRuntime(model) => RunState::OnnxRuntime(model.runner(threads)?),
        };
        #[cfg(not(feature = "onnxruntime"))]
        let _ = threads;
        Ok(Runner {
            state,
            assembly: Arc::clone(&self.assembly),
            input_shape: self.input_shape,
            model_path: self.model_path.clone(),
        })
    }

    /// Runs one preprocessed input through a fresh [`Runner`] (for one-off calls; loops keep
    /// a runner).
    pub fn features_into(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        self.runner()?.features_into(input, out)
    }
}

/// The model prepared for onnxruntime: its graph's outputs replaced by the recipe's tensors
/// (onnxruntime then prunes what they do not need, the head included); the output shapes are
/// those of one run on zeros.
#[cfg(feature = "onnxruntime")]
fn onnxruntime_plan(
    mut proto: tract_onnx::pb::ModelProto,
    recipe: FeatureRecipe,
    spec: &ModelSpec,
    input_shape: [usize; 4],
    model: &Path,
    feature_tensor: &str,
) -> Result<(Plan, Assembly)> {
    let graph = graph_of_mut(&mut proto, model)?;
    let input = image_input(graph, model)?.name.clone();
    crate::onnx::set_float_outputs(graph, &recipe.tensors);
    let bytes = prost::Message::encode_to_vec(&proto);
    drop(proto);
    let library = ENGINE.get().and_then(|(_, library)| library.as_deref());
    let ort = crate::onnxruntime_engine::OrtModel::new(bytes, input, model, library)?;
    let zeros = vec![0.0; input_shape.iter().product()];
    let shapes = ort.runner(1)?.run(input_shape, &zeros, |outputs| {
        Ok(outputs
            .iter()
            .map(|(shape, _)| shape.clone())
            .collect::<Vec<_>>())
    })?;
    if shapes.len() != recipe.tensors.len() {
        return Err(Error::Model {
            path: model.into(),
            reason: format!(
                "onnxruntime gives {} outputs for the {} tensors of '{feature_tensor}'",
                shapes.len(),
                recipe.tensors.len()
            ),
        });
    }
    let assembly = Assembly::new(recipe, spec.input.layout, shapes);
    Ok((Plan::OnnxRuntime(Arc::new(ort)), assembly))
}

/// Without the `onnxruntime` feature: the error that says how to get it.
#[cfg(not(feature = "onnxruntime"))]
fn onnxruntime_plan(
    _proto: tract_onnx::pb::ModelProto,
    _recipe: FeatureRecipe,
    _spec: &ModelSpec,
    _input_shape: [usize; 4],
    _model: &Path,
    _feature_tensor: &str,
) -> Result<(Plan, Assembly)> {
    Err(Error::InvalidArgument(
        "this fastretrain was built without the onnxruntime engine: build it with \
         `cargo build --release --features onnxruntime`, or use --engine tract"
            .into(),
    ))
}

/// The plan's outputs, one per tensor of `recipe`, each with a fixed shape.
fn assembly_of(
    plan: &TypedRunnableModel,
    recipe: FeatureRecipe,
    layout: Layout,
) -> std::result::Result<Assembly, String> {
    let model = plan.model();
    let shapes = (0..model.outputs.len())
        .map(|i| {
            let fact = model.output_fact(i).map_err(|e| e.to_string())?;
            fact.shape
                .as_concrete()
                .map(<[usize]>::to_vec)
                .ok_or_else(|| "has no fixed shape".to_string())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if shapes.len() != recipe.tensors.len() {
        return Err(format!(
            "gives {} outputs for {} tensors",
            shapes.len(),
            recipe.tensors.len()
        ));
    }
    Ok(Assembly::new(recipe, layout, shapes))
}

/// One operation of the optimised plan, as `bench --plan` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanStep {
    pub node: String,
    pub op: String,
    /// tract's one-line description of the op (shapes, strides…).
    pub info: String,
    /// The shape of its first input.
    pub input: Vec<usize>,
    /// For a depthwise convolution: the data layout it runs in and the kernel that computes it
    /// on this machine.
    pub kernel: Option<String>,
    /// An activation fused into the op, as tract describes it (our tract-core patch fuses a
    /// ReLU6 into a channel-last depthwise convolution: "clamped to [0, 6]").
    pub fused_clamp: Option<String>,
    /// For a matrix product (a convolution run as one): its shape and tract's kernel for it.
    pub product: Option<MatrixProduct>,
}

/// A matrix product of the plan, C (m×n) = A (m×k) · B (k×n) then its fused operations, and
/// the kernel tract picked for it on this machine (e.g. `fma_mmm_f32_16x6`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MatrixProduct {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Whether C's m axis is contiguous (the tile's columns are whole vectors): the stores'
    /// speed depends on it (vendor/README.md, the column-stores patch).
    pub m_contiguous: bool,
    pub kernel: String,
}

fn matrix_product(node: &TypedNode) -> Option<MatrixProduct> {
    use tract_onnx::tract_core::ops::matmul::optimized::{OptMatMul, ProtoFusedSpec};
    let product = node.op_as::<OptMatMul>()?;
    let shape = product.c_fact.shape.as_concrete()?;
    let k = product.micro_ops.iter().find_map(|op| match op {
        ProtoFusedSpec::AddMatMul { geo, .. } => geo.k.as_i64().map(|k| k as usize),
        _ => None,
    })?;
    // The m axis is contiguous when every axis after it spans one item.
    let m_contiguous = product
        .c_m_axis
        .is_some_and(|axis| shape[axis + 1..].iter().all(|&d| d == 1));
    Some(MatrixProduct {
        m: product.c_m_axis.map_or(1, |axis| shape[axis]),
        k,
        n: product.c_n_axis.map_or(1, |axis| shape[axis]),
        m_contiguous,
        kernel: product.mmm.first()?.name().to_string(),
    })
}

/// What runs a depthwise convolution whose input has `shape` (batch first) and whose
/// description is `info` (tract drops a batch axis of 1: HWC or CHW then): channel-last (the
/// channels axis last, as after tract's axis changes) takes the `depthwise_c` kernel; channel-first the `depthwise_w` one, which is
/// vectorised only along contiguous rows (stride 1), else tract-core's scalar loop.
fn depthwise_kernel(shape: &[usize], info: &str) -> String {
    use tract_linalg::routines::{Func, best_for};
    let isa = tract_linalg::isa::native();
    let routine = |func| {
        best_for(func, tract_onnx::prelude::DatumType::F32, &isa).map(|r| r.name().to_string())
    };
    // The spatial axes are the equal pair (square inputs); the channels sit after them or before.
    let channel_last = match shape {
        [_, h, w, c] | [h, w, c] => h == w && w != c,
        _ => false,
    };
    let stride_one = info.contains("strides: 1,1");
    match (channel_last, stride_one) {
        (true, _) => format!(
            "channel-last: {}",
            routine(Func::DepthwiseC).unwrap_or_else(|| "generic loop (no kernel)".into())
        ),
        (false, true) => format!(
            "channel-first: {}",
            routine(Func::DepthwiseW).unwrap_or_else(|| "scalar loop (no kernel)".into())
        ),
        (false, false) => "channel-first, stride > 1: scalar loop".into(),
    }
}

/// The recipe of a loaded backbone.
impl Backbone {
    /// The operations of tract's optimised plan in run order (empty for onnxruntime, whose
    /// plan is its own).
    pub fn plan_steps(&self) -> Vec<PlanStep> {
        #[cfg_attr(not(feature = "onnxruntime"), allow(irrefutable_let_patterns))]
        let Plan::Tract(plan) = &self.plan else {
            return Vec::new();
        };
        let model = plan.model();
        plan.order_without_consts()
            .iter()
            .map(|&id| {
                let node = &model.nodes[id];
                let op = node.op.name().to_string();
                let info = node.op.info().unwrap_or_default().join("; ");
                let input = node
                    .inputs
                    .first()
                    .and_then(|i| model.outlet_fact(*i).ok())
                    .and_then(|f| f.shape.as_concrete().map(<[usize]>::to_vec))
                    .unwrap_or_default();
                let kernel = (op == "DepthWiseConv").then(|| depthwise_kernel(&input, &info));
                let fused_clamp = info
                    .split("; ")
                    .find(|part| part.starts_with("clamped"))
                    .map(str::to_string);
                PlanStep {
                    node: node.name.clone(),
                    op,
                    info,
                    input,
                    kernel,
                    fused_clamp,
                    product: matrix_product(node),
                }
            })
            .collect()
    }

    pub fn recipe(&self) -> &FeatureRecipe {
        &self.assembly.recipe
    }

    /// The shape (batch first) of each tensor the recipe reads, in its order.
    pub fn output_shapes(&self) -> &[Vec<usize>] {
        &self.assembly.shapes
    }
}

/// One image per run: tract 0.23 ran a batch of 8 at 1.5× the time per image of single images
/// (docs/BENCHMARKS.md), so streams run images side by side instead.
fn input_shape(spec: &ModelSpec) -> [usize; 4] {
    match spec.input.layout {
        Layout::Nchw => [1, 3, spec.input.height, spec.input.width],
        Layout::Nhwc => [1, spec.input.height, spec.input.width, 3],
    }
}

/// What `fastretrain spec` needs to know beyond the model itself.
#[derive(Debug, Clone)]
pub struct SpecRequest {
    pub preset: Preset,
    /// Input side for a model whose spatial size is not fixed in the graph (default 224).
    pub size: Option<usize>,
    /// Layout, when the graph does not tell (no axis of 3 channels at 1 or 3).
    pub layout: Option<Layout>,
    pub feature_tensor: Option<String>,
}

/// Writes the spec of `model` from its graph: sha256, input name, layout and size read from
/// the graph, preprocessing from the preset, and the feature tensor and its size found by
/// loading the model with that spec (so the spec is known to work).
pub fn make_spec(model: &Path, request: &SpecRequest) -> Result<ModelSpec> {
    let (bytes, sha256) = read_model_file(model)?;
    let proto = crate::onnx::parse_model(&bytes, model)?;
    drop(bytes);
    let bad = |reason: String| Error::Model {
        path: model.into(),
        reason,
    };
    let graph = graph_of(&proto, model)?;
    let input = image_input(graph, model)?;
    let dims = dims(input).unwrap_or_else(|| vec![None; 4]);
    if dims.len() != 4 {
        return Err(bad(format!(
            "input '{}' has shape {}; fastretrain feeds images as a 4-D tensor (NCHW or NHWC)",
            input.name,
            show_dims(&dims)
        )));
    }
    let layout = match (request.layout, dims[1], dims[3]) {
        (Some(layout), _, _) => layout,
        (None, Some(3), _) => Layout::Nchw,
        (None, _, Some(3)) => Layout::Nhwc,
        _ => {
            return Err(bad(format!(
                "cannot tell the layout of input '{}' {} (no axis of 3 colour channels): \
                 pass --layout NCHW or NHWC",
                input.name,
                show_dims(&dims)
            )));
        }
    };
    let (h, w) = match layout {
        Layout::Nchw => (dims[2], dims[3]),
        Layout::Nhwc => (dims[1], dims[2]),
    };
    let size = match (h, w, request.size) {
        (Some(h), Some(w), _) if h != w => {
            return Err(bad(format!(
                "input '{}' is {h}×{w}; fastretrain feeds square inputs (centre crop)",
                input.name
            )));
        }
        (Some(h), Some(_), Some(size)) if size as i64 != h => {
            return Err(Error::InvalidArgument(format!(
                "{}: the input is fixed at {h}×{h} in the graph; for a {size}×{size} input \
                 write a copy with `fastretrain resize-input --model {} --size {size} --out …` \
                 (it writes that copy's spec too)",
                model.display(),
                model.display()
            )));
        }
        (Some(h), Some(_), _) => h as usize,
        (_, _, Some(size)) => size,
        _ => 224,
    };
    let (channels, preprocess) = request.preset.preprocess(size);
    let mut spec = ModelSpec {
        name: model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
        file: model.file_name().map(|f| f.to_string_lossy().into_owned()),
        sha256: Some(sha256),
        input: InputSpec {
            name: Some(input.name.clone()),
            layout,
            channels,
            height: size,
            width: size,
        },
        preprocess,
        feature_tensor: request.feature_tensor.clone(),
        feature_tensors: None,
        feature_transform: None,
        augment: None,
        feature_dim: None,
    };
    drop(proto);
    let backbone = Backbone::load_with(
        model,
        Some(spec.clone()),
        &LoadOptions {
            feature_tensor: request.feature_tensor.clone(),
            ..LoadOptions::default()
        },
    )?;
    let recipe = backbone.recipe();
    if recipe.is_plain() {
        spec.feature_tensor = Some(recipe.tensors[0].clone());
    } else {
        spec.feature_tensor = None;
        spec.feature_tensors = Some(recipe.tensors.clone());
        spec.feature_transform = Some(recipe.transform);
        spec.augment = (recipe.augment != Augment::None).then_some(recipe.augment);
    }
    spec.feature_dim = Some(backbone.feature_dim());
    Ok(spec)
}
