//! What a retrain leaves on disk: a checkpoint after every epoch (what `--resume` continues
//! from), and at the end the retrained ONNX model (same graph, updated initializers, input at
//! the training size) with its spec and an edge state beside it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tract_onnx::pb::{
    NodeProto, TensorProto, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

use super::graph::{HeadForm, Param};
use super::{EpochMetrics, RetrainJob, RetrainOptions, Trainer};
use crate::error::{Error, Result};
use crate::onnx::build::{float_tensor, int_attribute};
use crate::onnx::{graph_of_mut, set_input_size, set_metadata, write_model_with_spec};
use crate::state::{State, write_atomically};

/// Format 02 added the device memory to each epoch's metrics.
const CHECKPOINT_MAGIC: &[u8; 8] = b"FRCKPT02";

/// The training state after an epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub model_sha256: String,
    pub options: RetrainOptions,
    pub labels: Vec<String>,
    pub params: Vec<Param>,
    pub velocity: Vec<Vec<f32>>,
    /// Epochs done so far, 0 first.
    pub metrics: Vec<EpochMetrics>,
}

impl Checkpoint {
    pub fn new(model_sha256: &str, trainer: &Trainer, metrics: Vec<EpochMetrics>) -> Self {
        Checkpoint {
            model_sha256: model_sha256.into(),
            options: trainer.options.clone(),
            labels: trainer.labels.clone(),
            params: trainer.graph.params.clone(),
            velocity: trainer.velocity().to_vec(),
            metrics,
        }
    }

    /// Magic, crc32 and length of the postcard payload, then the payload; written atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let payload = postcard::to_stdvec(self)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the checkpoint: {e}")))?;
        let mut bytes = Vec::with_capacity(payload.len() + 20);
        bytes.extend_from_slice(CHECKPOINT_MAGIC);
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&payload);
        write_atomically(path, &bytes)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: &str| Error::Data {
            path: path.into(),
            reason: format!("{reason}; start again without resuming"),
        };
        if bytes.len() >= 8
            && bytes[..6] == CHECKPOINT_MAGIC[..6]
            && bytes[..8] != *CHECKPOINT_MAGIC
        {
            return Err(bad(
                "the checkpoint was written by another version of fastretrain",
            ));
        }
        if bytes.len() < 20 || &bytes[..8] != CHECKPOINT_MAGIC {
            return Err(bad("not a fastretrain retrain checkpoint"));
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
        let payload = &bytes[20..];
        if payload.len() != len {
            return Err(bad("the checkpoint is truncated"));
        }
        if crc32fast::hash(payload) != crc {
            return Err(bad("the checkpoint is damaged (checksum mismatch)"));
        }
        postcard::from_bytes(payload)
            .map_err(|e| bad(&format!("cannot decode the checkpoint: {e}")))
    }

    /// The checkpoint must come from the same model, options and labels as this run.
    pub fn check(&self, model_sha256: &str, trainer: &Trainer) -> Result<()> {
        let differs = |what: &str| {
            Err(Error::InvalidArgument(format!(
                "the checkpoint was made with another {what}; resume with the same model, data \
                 and options, or start again without resuming"
            )))
        };
        if self.model_sha256 != model_sha256 {
            return differs("model");
        }
        if self.options != trainer.options {
            return differs("set of options");
        }
        if self.labels != trainer.labels {
            return differs("set of labels");
        }
        if self.metrics.is_empty() {
            return differs("run (it has no finished epoch)");
        }
        Ok(())
    }

    /// Puts the checkpoint's weights and momentum into `trainer`.
    pub fn restore(&self, trainer: &mut Trainer) -> Result<()> {
        let (w, b) = trainer.graph.head_params();
        let find = |name: &str| self.params.iter().find(|p| p.name == name);
        let head_w = find(&trainer.graph.params[w].name);
        let head_b = b
            .and_then(|b| find(&trainer.graph.params[b].name))
            .or_else(|| find(&format!("{}.bias", trainer.graph.head_node_name())));
        let (Some(head_w), Some(head_b)) = (head_w, head_b) else {
            return Err(Error::InvalidArgument(
                "the checkpoint has no dense head; start again without resuming".into(),
            ));
        };
        trainer
            .graph
            .set_head(head_w.values.clone(), head_b.values.clone());
        if trainer.graph.params.len() != self.params.len() {
            return Err(Error::InvalidArgument(
                "the checkpoint's parameters do not match the model; start again without \
                 resuming"
                    .into(),
            ));
        }
        for p in &mut trainer.graph.params {
            let saved = find(&p.name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the checkpoint lacks parameter '{}'; start again without resuming",
                    p.name
                ))
            })?;
            *p = saved.clone();
        }
        trainer.set_velocity(self.velocity.clone());
        Ok(())
    }
}

/// Files a finished retrain wrote.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainOutput {
    pub model: PathBuf,
    pub spec: PathBuf,
    /// Edge state: the final network's feature statistics and MP head (`eval`, `learn` use it).
    pub state: PathBuf,
    pub sha256: String,
    pub metrics: Vec<EpochMetrics>,
}

fn float_initializer(p: &Param) -> TensorProto {
    let dims: Vec<i64> = p.dims.iter().map(|&d| d as i64).collect();
    float_tensor(&p.name, &dims, p.values.iter().copied())
}

/// Writes the retrained ONNX (+ spec) to `job.out` and the edge state to `job.out` with
/// `.frs`.
pub(super) fn write(
    job: &RetrainJob<'_>,
    trainer: &Trainer,
    mut state: State,
    metrics: Vec<EpochMetrics>,
) -> Result<RetrainOutput> {
    let (mut proto, _) = crate::onnx::read_model(job.model)?;
    let graph = graph_of_mut(&mut proto, job.model)?;
    // As the interpreter read it: a quantized model's weights in float32.
    crate::onnx::qdq::dequantize(graph, job.model)?;
    // An Identity of an initializer (the legacy exporter's shared tensors) became a parameter
    // of its own, written as an initializer under the Identity's output name.
    let names: std::collections::HashSet<&str> = trainer
        .graph
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    graph.node.retain(|n| {
        !(n.op_type == "Identity" && n.output.first().is_some_and(|o| names.contains(o.as_str())))
    });
    for p in &trainer.graph.params {
        let tensor = float_initializer(p);
        match graph.initializer.iter_mut().find(|t| t.name == p.name) {
            // A half-precision model keeps its weights' type (trained in f32, rounded back).
            Some(t) if t.data_type == DataType::Float16 as i32 => {
                *t = TensorProto {
                    data_type: t.data_type,
                    raw_data: p
                        .values
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect(),
                    ..tensor
                }
            }
            Some(t) => *t = tensor,
            None => graph.initializer.push(tensor),
        }
    }
    // The head: its node takes the (possibly new) bias, in Gemm(transB) form with unit scales
    // (a MatMul head, and the Add of its bias, become that Gemm).
    let (w, b) = trainer.graph.head_params();
    let weight_name = trainer.graph.params[w].name.clone();
    let head_output = trainer.graph.head_output().to_string();
    let classes = trainer.graph.classes() as i64;
    if let HeadForm::MatMul {
        add_output: Some(add),
    } = &trainer.graph.head_form
    {
        graph
            .node
            .retain(|n| !(n.op_type == "Add" && n.output.first() == Some(add)));
    }
    let is_head = |n: &NodeProto| {
        matches!(n.op_type.as_str(), "Gemm" | "MatMul") && n.input.get(1) == Some(&weight_name)
    };
    if let Some(node) = graph.node.iter_mut().find(|n| is_head(n)) {
        node.op_type = "Gemm".into();
        node.output = vec![head_output.clone()];
        node.input.truncate(2);
        if let Some(b) = b {
            node.input.push(trainer.graph.params[b].name.clone());
        }
        node.attribute
            .retain(|a| !matches!(a.name.as_str(), "transA" | "transB" | "alpha" | "beta"));
        node.attribute.push(int_attribute("transB", 1));
    }
    // The graph's output (the head's, or a Softmax's after it) has the data's classes.
    let scores: Vec<&String> = std::iter::once(&head_output)
        .chain(&trainer.graph.tail_outputs)
        .collect();
    for o in graph
        .output
        .iter_mut()
        .filter(|o| scores.contains(&&o.name))
    {
        if let Some(type_proto::Value::TensorType(t)) =
            o.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(dims) = t.shape.as_mut().map(|s| &mut s.dim)
            && let Some(last) = dims.last_mut()
        {
            last.value = Some(tensor_shape_proto::dimension::Value::DimValue(classes));
        }
    }
    // The classes' names, so that the retrained model names them when run as it is.
    set_metadata(
        &mut proto,
        &trainer.labels,
        [(
            "fastretrain.method",
            format!("retrain {}", trainer.options.mode.name()),
        )],
    );
    let size = trainer.options.size;
    set_input_size(&mut proto, trainer.spec.input.layout(), size, job.model)?;
    let mut spec = trainer.spec.clone();
    spec.name = format!("{} retrained ({})", spec.name, trainer.options.mode.name());
    let report = write_model_with_spec(&proto, spec, size, &job.out)?;
    let state_path = job.out.with_extension("frs");
    state.rebind(
        report.sha256.clone(),
        std::fs::canonicalize(&job.out).unwrap_or_else(|_| job.out.clone()),
    );
    state.save(&state_path)?;
    Ok(RetrainOutput {
        model: report.out,
        spec: report.spec,
        state: state_path,
        sha256: report.sha256,
        metrics,
    })
}
