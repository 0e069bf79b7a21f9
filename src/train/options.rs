//! What a retraining run is told: the mode, the device, the per-epoch schedules, the options;
//! and what it reports per epoch.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::graph;
use crate::error::{Error, Result};

/// What SGD trains each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The paper: a random share of the conv layers (schedule `ra`) + MP refit of the head.
    Fast,
    /// Plain fine-tuning: every layer, no refit.
    Sgd,
    /// Yang 2019: every layer, then the MP refit of the head.
    SgdMp,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "fast" => Ok(Mode::Fast),
            "sgd" => Ok(Mode::Sgd),
            "sgd+mp" => Ok(Mode::SgdMp),
            other => Err(Error::InvalidArgument(format!(
                "unknown mode '{other}' (use fast, sgd or sgd+mp)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Sgd => "sgd",
            Mode::SgdMp => "sgd+mp",
        }
    }

    pub(super) fn refits(self) -> bool {
        self != Mode::Sgd
    }
}

/// Where the tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceChoice {
    Cpu,
    Wgpu,
    Cuda,
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "wgpu" => Ok(DeviceChoice::Wgpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            other => Err(Error::InvalidArgument(format!(
                "unknown device '{other}' (use cpu, wgpu or cuda)"
            ))),
        }
    }

    /// The burn device, checked to be usable: a GPU that is absent is an error that names the
    /// fallback (`--device cpu`), never a silent switch.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::flex()),
            DeviceChoice::Wgpu => gpu_device("wgpu", "train-wgpu", WGPU),
            DeviceChoice::Cuda => gpu_device("cuda", "train-cuda", CUDA),
        }
    }
}

/// How to make a device of each GPU backend this build has (None: not compiled in).
#[cfg(feature = "train-wgpu")]
const WGPU: Option<fn() -> Device> = Some(|| Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
#[cfg(not(feature = "train-wgpu"))]
const WGPU: Option<fn() -> Device> = None;
#[cfg(feature = "train-cuda")]
const CUDA: Option<fn() -> Device> = Some(|| Device::cuda(0));
#[cfg(not(feature = "train-cuda"))]
const CUDA: Option<fn() -> Device> = None;

/// A GPU device if this build has its backend and a tensor can be made on it.
fn gpu_device(name: &str, feature: &str, make: Option<fn() -> Device>) -> Result<Device> {
    let absent = |why: String| {
        Error::InvalidArgument(format!(
            "--device {name}: {why}; use --device cpu (the flex CPU backend) instead"
        ))
    };
    let Some(make) = make else {
        return Err(absent(format!(
            "this build has no {name} backend (rebuild with `--features {feature}`)"
        )));
    };
    // Backends panic when no adapter exists: probe once with the panic message silenced.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let device = make();
        let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &device);
        graph::to_f32(t.add_scalar(1.0)).ok().map(|_| device)
    });
    std::panic::set_hook(previous);
    match probe {
        Ok(Some(device)) => Ok(device),
        Ok(None) | Err(_) => Err(absent(format!("no usable {name} device was found"))),
    }
}

/// Per-epoch schedules, parsed from `--ra 1,1,.75` and `--lr 1e-3x3,1e-4x3,1e-5x2` (`vxN`
/// repeats v N times); an epoch past the end uses the last value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule(pub Vec<f64>);

impl Schedule {
    pub fn parse(s: &str, what: &str, range: std::ops::RangeInclusive<f64>) -> Result<Self> {
        let bad = |why: String| Error::InvalidArgument(format!("{what} '{s}': {why}"));
        let mut values = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (value, times) = match part.split_once('x') {
                Some((v, n)) => (v, n.parse::<usize>().map_err(|e| bad(e.to_string()))?),
                None => (part, 1),
            };
            let value: f64 = value
                .parse()
                .map_err(|_| bad(format!("'{value}' is not a number")))?;
            if !range.contains(&value) {
                return Err(bad(format!(
                    "{value} is outside [{}, {}]",
                    range.start(),
                    range.end()
                )));
            }
            values.extend(std::iter::repeat_n(value, times));
        }
        if values.is_empty() {
            return Err(bad("no values".into()));
        }
        Ok(Schedule(values))
    }

    /// The value for epoch `e` (1-based).
    pub fn at(&self, e: usize) -> f64 {
        self.0[(e.max(1) - 1).min(self.0.len() - 1)]
    }
}

/// Everything that decides a run (a checkpoint only resumes the run it was made by).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainOptions {
    pub mode: Mode,
    pub epochs: usize,
    /// Activation rate per epoch (share of conv layers trained; `fast` only).
    pub ra: Schedule,
    pub lr: Schedule,
    pub momentum: f64,
    pub batch: usize,
    /// Square input size the network is trained (and exported) at.
    pub size: usize,
    pub seed: u64,
    /// Ridge λ for the MP refit; GCV when None.
    pub lambda: Option<f64>,
    pub device: DeviceChoice,
}

/// One line of the metrics file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub mode: String,
    /// 0: the edge-only refit on the pretrained backbone (no SGD).
    pub epoch: usize,
    pub ra: Option<f64>,
    pub lr: Option<f64>,
    pub trained_convs: usize,
    pub frozen_convs: usize,
    /// Mean cross-entropy over the epoch's SGD steps.
    pub train_loss: Option<f64>,
    pub test_accuracy: f64,
    pub lambda: Option<f64>,
    pub seconds_sgd: f64,
    pub seconds_refit: f64,
    pub seconds_eval: f64,
    /// SGD + refit (what the paper's time comparison counts; evaluation excluded).
    pub seconds_train: f64,
    /// Bytes the device's allocator still reserves once the epoch is over and its memory
    /// cleaned up (None on the CPU backend, which does not report it): level from epoch to
    /// epoch when nothing leaks.
    pub device_memory_bytes: Option<u64>,
}
