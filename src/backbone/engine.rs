//! What runs the forward pass (tract, or onnxruntime with that feature) and on how many
//! threads: chosen once per process, before the first model is loaded.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{Error, Result};

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

/// The onnxruntime library named with [`set_engine`], if any.
#[cfg(feature = "onnxruntime")]
pub(super) fn onnxruntime_library() -> Option<&'static std::path::Path> {
    ENGINE.get().and_then(|(_, library)| library.as_deref())
}

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
