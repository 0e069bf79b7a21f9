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
mod engine;
mod make_spec;
mod plan;
mod runner;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

pub use crate::durable::Fingerprint;
use crate::error::{Error, Result};
use crate::feature_recipe::{AUTOMATIC_STAGES, Augment, FeatureRecipe, Transform};
pub use crate::onnx::{DenseHeadInfo, find_dense_head, read_model_file};
use crate::onnx::{
    check_input, check_spec_file, forget_intermediate_shapes, graph_of, graph_of_mut,
};
use crate::spec::{Layout, ModelInput, ModelSpec};
pub use automatic::automatic_tensors;
pub use engine::{
    ENGINES_BUILT, Engine, MAX_THREADS, engine, set_engine, set_threads, single_threaded, threads,
};
pub use make_spec::{SpecRequest, make_spec};
pub use plan::{MatrixProduct, PlanStep};
use runner::{Assembly, Plan, RunState};
pub use runner::{NodeTime, Runner};

/// The transform of the automatic recipe: none. On the full Fashion-MNIST the signed square
/// root gave +0.5 points to the penultimate tensor alone but −0.1 to the automatic recipe's
/// tensors (docs/METHODS.md, "Better features").
pub const DEFAULT_TRANSFORM: Transform = Transform::None;
/// The augmentation of the automatic recipe.
pub const DEFAULT_AUGMENT: Augment = Augment::None;

/// The tract release Cargo.toml pins.
const TRACT_VERSION: &str = "0.23.9";

pub struct Backbone {
    plan: Plan,
    assembly: Arc<Assembly>,
    spec: ModelSpec,
    model_path: PathBuf,
    fingerprint: Fingerprint,
    head: Option<DenseHeadInfo>,
    /// Class names stored in the model by `export` (metadata `fastretrain.labels`).
    labels: Option<Vec<String>>,
    input_shape: Vec<usize>,
    /// Cores this backbone uses, and tract's executor for them when they were given at load
    /// (None: the process default, [`set_threads`]).
    threads: usize,
    executor: Option<tract_linalg::multithread::Executor>,
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
    /// Cores this backbone uses (1 to [`MAX_THREADS`]): a single image runs on that many
    /// threads of tract's matrix products, a stream of images runs that many at once. Default:
    /// the process default, [`threads`] (what [`set_threads`] chose). Two backbones of one
    /// process may use different counts.
    pub threads: Option<usize>,
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
        let spec_path = ModelSpec::path_for_model(model);
        let spec_beside = spec.is_none();
        let spec = match spec {
            Some(s) => s,
            None => ModelSpec::load(&spec_path)?,
        };
        let (mut proto, model_sha256) = crate::onnx::parse_model_file(&bytes, model)?;
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
            // Stage outputs of a model fed with tensors (1-D convolutions: (N, C, L)) are not
            // pooled, so its automatic recipe is the penultimate tensor alone.
            (None, None, Some(h)) => FeatureRecipe::new(
                automatic_tensors(
                    graph_of(&proto, model)?,
                    &h.input,
                    match spec.input {
                        ModelInput::Image(_) => AUTOMATIC_STAGES,
                        ModelInput::Tensor(_) => 0,
                    },
                ),
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
        if recipe.augment != Augment::None
            && let Some(t) = spec.input.tensor()
        {
            return Err(Error::InvalidArgument(format!(
                "augment '{}' mirrors images; {} takes tensors of shape {:?}: learn it \
                 without augmentation",
                recipe.augment.name(),
                model.display(),
                t.shape
            ))
            .for_setting("augment"));
        }
        let feature_tensor = recipe.descriptor();
        let input_shape = spec.input.shape();
        // The file bytes and the protobuf are freed as soon as tract has its own copy of the
        // graph, so they do not add to the peak memory of optimising it.
        drop(bytes);
        let (plan, assembly) = match options.engine.unwrap_or_else(engine) {
            Engine::Tract => {
                let tensors = recipe.tensors.clone();
                let input_shape = input_shape.clone();
                let input_type = crate::onnx::input_datum_type(graph_of(&proto, model)?, model)?;
                let plan = (move || -> TractResult<_> {
                    let mut m = tract_onnx::onnx().model_for_proto_model(&proto)?;
                    drop(proto);
                    m =
                        m.with_input_fact(0, TypedFact::dt_shape(input_type, &input_shape).into())?;
                    m.select_outputs_by_name(tensors.iter().map(String::as_str))?;
                    m.into_optimized()?.into_runnable()
                })()
                .map_err(|e| {
                    bad(format!(
                        "cannot prepare it for tensor '{feature_tensor}': {e:#}"
                    ))
                })?;
                let assembly = assembly_of(&plan, recipe, spec.input.layout())
                    .map_err(|reason| bad(format!("tensor '{feature_tensor}' {reason}")))?;
                (Plan::Tract(plan), assembly)
            }
            Engine::OnnxRuntime => {
                onnxruntime_plan(proto, recipe, &spec, &input_shape, model, &feature_tensor)?
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
        let (threads, executor) = threads_of(options)?;
        Ok(Backbone {
            threads,
            executor,
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
        let assembly = assembly_of(&plan, recipe, meta.spec.input.layout()).map_err(&bad)?;
        if assembly.dim() != meta.fingerprint.feature_dim {
            return Err(bad(format!(
                "the packed model gives {} features, its metadata says {}; pack it \
                 again with `fastretrain pack`",
                assembly.dim(),
                meta.fingerprint.feature_dim
            )));
        }
        let (threads, executor) = threads_of(options)?;
        Ok(Backbone {
            threads,
            executor,
            plan: Plan::Tract(plan),
            assembly: Arc::new(assembly),
            input_shape: meta.spec.input.shape(),
            spec: meta.spec,
            model_path: model.into(),
            fingerprint: meta.fingerprint,
            head: None,
            labels: meta.labels,
        })
    }

    /// The input tensor's shape: batch first, then the spec's layout.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
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
            input_shape: self.input_shape.clone(),
            model_path: self.model_path.clone(),
        })
    }

    /// Runs one preprocessed input through a fresh [`Runner`] (for one-off calls; loops keep
    /// a runner).
    pub fn features_into(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let mut runner = self.runner()?;
        self.on_its_threads(|| runner.features_into(input, out))
    }

    /// The cores this backbone uses ([`LoadOptions::threads`]).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` (forward passes of this backbone's runners) with tract's matrix products on
    /// this backbone's threads, when they were given at load; else on the process default's.
    pub fn on_its_threads<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.executor {
            Some(executor) => {
                tract_linalg::multithread::multithread_tract_scope(executor.clone(), f)
            }
            None => f(),
        }
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
    input_shape: &[usize],
    model: &Path,
    feature_tensor: &str,
) -> Result<(Plan, Assembly)> {
    let graph = graph_of_mut(&mut proto, model)?;
    let input = crate::onnx::image_input(graph, model)?.name.clone();
    crate::onnx::set_float_io(graph, &input, &recipe.tensors);
    let bytes = prost::Message::encode_to_vec(&proto);
    drop(proto);
    let library = engine::onnxruntime_library();
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
    let assembly = Assembly::new(recipe, spec.input.layout(), shapes);
    Ok((Plan::OnnxRuntime(Arc::new(ort)), assembly))
}

/// Without the `onnxruntime` feature: the error that says how to get it.
#[cfg(not(feature = "onnxruntime"))]
fn onnxruntime_plan(
    _proto: tract_onnx::pb::ModelProto,
    _recipe: FeatureRecipe,
    _spec: &ModelSpec,
    _input_shape: &[usize],
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

impl Backbone {
    /// The recipe of a loaded backbone.
    pub fn recipe(&self) -> &FeatureRecipe {
        &self.assembly.recipe
    }

    /// The shape (batch first) of each tensor the recipe reads, in its order.
    pub fn output_shapes(&self) -> &[Vec<usize>] {
        &self.assembly.shapes
    }
}

/// The thread count of `options` (checked) and tract's executor for it; the process default
/// (no executor of its own) when none is given.
fn threads_of(
    options: &LoadOptions,
) -> Result<(usize, Option<tract_linalg::multithread::Executor>)> {
    match options.threads {
        None => Ok((threads(), None)),
        Some(n) if (1..=MAX_THREADS).contains(&n) => Ok((
            n,
            Some(if n == 1 {
                tract_linalg::multithread::Executor::SingleThread
            } else {
                tract_linalg::multithread::Executor::multithread(n)
            }),
        )),
        Some(n) => Err(
            Error::InvalidArgument(format!("{n} threads is outside 1..={MAX_THREADS}"))
                .for_setting("threads"),
        ),
    }
}
