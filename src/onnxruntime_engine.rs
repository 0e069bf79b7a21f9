//! The optional onnxruntime engine (cargo feature `onnxruntime`, `--engine onnxruntime`): the
//! same frozen forward pass as tract's, run by a `libonnxruntime.so` found at run time (the
//! onnxruntime PyPI wheel ships one for x86_64 and aarch64 in `onnxruntime/capi/`). Nothing is
//! linked or downloaded at build time. [`crate::backbone`] decides what to read and how to
//! assemble it; this module only turns an input tensor into the recipe's output tensors.
//!
//! Like tract's runners, each [`OrtRunner`] is one session with one intra-op thread (on the
//! calling thread): a stream of images runs one image per worker, and a single image is run
//! on [`crate::backbone::threads`] threads.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::error::{Error, Result};

/// Environment variable naming the library (ort's own name for it).
pub const LIBRARY_VARIABLE: &str = "ORT_DYLIB_PATH";

/// The library loaded by the first model, and onnxruntime's one environment of the process.
struct Loaded {
    library: PathBuf,
    environment: Environment,
}

static LOADED: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();

/// Loads onnxruntime once per process: from `library` if given, else `$ORT_DYLIB_PATH`, else
/// the system's `libonnxruntime.so` (the dynamic linker's search path).
fn load(library: Option<&Path>) -> Result<&'static Loaded> {
    let loaded = LOADED.get_or_init(|| {
        let library = library
            .map(Path::to_path_buf)
            .or_else(|| {
                std::env::var_os(LIBRARY_VARIABLE)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| {
                format!(
                    "{}onnxruntime{}",
                    std::env::consts::DLL_PREFIX,
                    std::env::consts::DLL_SUFFIX
                )
                .into()
            });
        let environment = ort::init_from(&library)
            .map_err(|e| e.to_string())?
            .with_name("fastretrain")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Loaded {
            library,
            environment,
        })
    });
    loaded.as_ref().map_err(|reason| {
        Error::InvalidArgument(format!(
            "cannot load onnxruntime for --engine onnxruntime: {reason}. Name the library with \
             --onnxruntime-lib PATH or ${LIBRARY_VARIABLE} (`pip install onnxruntime` puts \
             libonnxruntime.so.* in site-packages/onnxruntime/capi/), or use --engine tract"
        ))
    })
}

/// A model prepared for onnxruntime: the ONNX bytes whose outputs are the tensors to read.
pub struct OrtModel {
    bytes: Vec<u8>,
    input: String,
    model_path: PathBuf,
    loaded: &'static Loaded,
}

impl std::fmt::Debug for OrtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtModel")
            .field("model_path", &self.model_path)
            .field("library", &self.loaded.library)
            .finish()
    }
}

impl OrtModel {
    /// `bytes`: an ONNX model whose graph outputs are the tensors to read, in order;
    /// `input`: its image input's name.
    pub fn new(
        bytes: Vec<u8>,
        input: String,
        model_path: &Path,
        library: Option<&Path>,
    ) -> Result<Self> {
        Ok(OrtModel {
            bytes,
            input,
            model_path: model_path.into(),
            loaded: load(library)?,
        })
    }

    /// E.g. `onnxruntime (/…/libonnxruntime.so.1.32.0)` (onnxruntime's C API does not say
    /// its version through ort; the wheel's file name does).
    pub fn description(&self) -> String {
        format!("onnxruntime ({})", self.loaded.library.display())
    }

    /// A session of its own, running on `threads` threads (1: the calling thread only).
    pub fn runner(&self, threads: usize) -> Result<OrtRunner> {
        let fail = |e: &dyn std::fmt::Display| Error::Model {
            path: self.model_path.clone(),
            reason: format!("onnxruntime cannot prepare it: {e}"),
        };
        let session = Session::builder(&self.loaded.environment)
            .map_err(|e| fail(&e))?
            .with_log_level(LogLevel::Error)
            .map_err(|e| fail(&e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail(&e))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| fail(&e))?
            .with_inter_threads(1)
            .map_err(|e| fail(&e))?
            .commit_from_memory(&self.bytes)
            .map_err(|e| fail(&e))?;
        Ok(OrtRunner {
            session,
            input: self.input.clone(),
            model_path: self.model_path.clone(),
        })
    }
}

/// One onnxruntime session of an [`OrtModel`].
pub struct OrtRunner {
    session: Session,
    input: String,
    model_path: PathBuf,
}

impl OrtRunner {
    /// Runs `input` (shape `shape`) and hands each output's shape and values, in the model's
    /// output order, to `consume`.
    pub fn run<R>(
        &mut self,
        shape: &[usize],
        input: &[f32],
        consume: impl FnOnce(&[(Vec<usize>, &[f32])]) -> Result<R>,
    ) -> Result<R> {
        let fail = |reason: String| Error::Model {
            path: self.model_path.clone(),
            reason,
        };
        let tensor = TensorRef::from_array_view((shape.to_vec(), input))
            .map_err(|e| fail(format!("bad input tensor: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| fail(format!("inference failed: {e}")))?;
        let views = (0..outputs.len())
            .map(|i| {
                let (shape, values) = outputs[i]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| fail(format!("feature tensor is not f32: {e}")))?;
                Ok((shape.iter().map(|&d| d.max(0) as usize).collect(), values))
            })
            .collect::<Result<Vec<_>>>()?;
        consume(&views)
    }
}
