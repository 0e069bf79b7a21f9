//! The ONNX graph as trainable burn tensors: a small interpreter over the model's protobuf.
//!
//! Every float initializer a layer uses becomes a [`Param`] (kept flat; reshaped where used),
//! keyed by its initializer name so that training results can be written back into the same
//! `ModelProto` ([`super::export`]). Nodes run in file order (ONNX requires topological order).
//! Unsupported ops are refused when the graph is loaded, naming the op and the node.

use std::collections::{HashMap, HashSet};

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::error::{Error, Result};

mod load;
mod ops;
mod value;

use ops::{Context, Op, Value};
use value::{Act, Ints};

/// The ops the interpreter runs (the layers of CNN classifiers and the shape arithmetic
/// exporters write around them).
pub const SUPPORTED_OPS: &str = "Conv, BatchNormalization, Gemm, MatMul (+ Add) by a constant, \
     Relu, Clip, Sigmoid, Tanh, HardSigmoid, HardSwish, LeakyRelu, Add, Sub, Mul, Div, \
     GlobalAveragePool, GlobalMaxPool, MaxPool, AveragePool, ReduceMean, Flatten, Reshape, \
     Transpose, Concat, Split, Slice, Squeeze, Unsqueeze, Pad, Shape, Gather, Cast, Constant, \
     Identity, Dropout, Softmax, LogSoftmax";

/// A trainable (or running-statistic) tensor: an initializer of the model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Param {
    /// Initializer name in the ONNX file.
    pub name: String,
    pub dims: Vec<usize>,
    /// Row-major values (the training state between epochs; an SGD epoch works on device
    /// copies and writes them back at its end).
    pub values: Vec<f32>,
}

/// An initializer or `Constant` node output that no layer trains.
#[derive(Debug, Clone)]
enum Constant {
    Floats { values: Vec<f32>, dims: Vec<usize> },
    Ints(Ints),
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    op: Op,
    /// Input tensor names; empty for an absent optional input.
    inputs: Vec<String>,
    outputs: Vec<String>,
}

/// How the model writes its dense head (the export writes it back as a Gemm).
#[derive(Debug, Clone, PartialEq)]
pub enum HeadForm {
    Gemm,
    /// A MatMul by the weight, then (when `add_output` is given) the Add of the bias.
    MatMul {
        add_output: Option<String>,
    },
}

/// A convolution and the batch normalisation right after it, if any: what the fast-retraining
/// schedule freezes or trains as one layer.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    pub name: String,
    /// Indices into [`Graph::params`] trained with SGD (weights, biases, BN scale and shift).
    pub params: Vec<usize>,
    /// Node index of its batch normalisation.
    bn_node: Option<usize>,
}

/// Batch statistics of the batch normalisations run in training mode: (node, mean, biased
/// variance, values per channel). The tensors stay on the device (no autodiff): the running
/// statistics are updated there ([`Graph::update_running_stats`]).
pub struct BatchStats(pub Vec<(usize, Tensor<1>, Tensor<1>, usize)>);

/// What a forward pass returns.
pub struct Outputs {
    /// The dense head's input, one row per image.
    pub features: Tensor<2>,
    /// The head's output (None when the pass stopped at the features).
    pub logits: Option<Tensor<2>>,
    pub batch_stats: BatchStats,
}

/// The model as an interpreter program.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    pub params: Vec<Param>,
    constants: HashMap<String, Constant>,
    input: String,
    /// The input's batch as declared in the file, when it is a fixed number.
    declared_batch: Option<usize>,
    /// The dense head's input tensor (the penultimate features).
    pub feature_tensor: String,
    /// Node index of the dense head (the last dense layer).
    head_node: usize,
    pub head_form: HeadForm,
    /// Outputs of the nodes after the head (a Softmax, an Identity): not run in training, kept
    /// in the export.
    pub tail_outputs: Vec<String>,
    pub conv_layers: Vec<ConvLayer>,
    /// Values no longer needed after each node (freed early to keep memory down).
    drop_after: Vec<Vec<String>>,
}

impl Graph {
    /// Indices of the dense head's parameters (weight, then bias if any).
    pub fn head_params(&self) -> (usize, Option<usize>) {
        match self.nodes[self.head_node].op {
            Op::Gemm { weight, bias, .. } => (weight, bias),
            _ => unreachable!("head_node is a Gemm"),
        }
    }

    /// Indices of every dense layer's parameters.
    pub fn dense_params(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Gemm { weight, bias, .. } => Some(std::iter::once(weight).chain(bias)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The head as `classes × dim` weights (Gemm layout with transB) and a bias; replaces the
    /// model's own head (whatever its class count) and sets alpha = beta = 1.
    pub fn set_head(&mut self, weight_rows: Vec<f32>, bias: Vec<f32>) {
        let classes = bias.len();
        let dim = weight_rows.len() / classes.max(1);
        let (w, b) = self.head_params();
        self.params[w].values = weight_rows;
        self.params[w].dims = vec![classes, dim];
        match b {
            Some(b) => {
                self.params[b].values = bias;
                self.params[b].dims = vec![classes];
            }
            None => {
                self.params.push(Param {
                    name: format!("{}.bias", self.nodes[self.head_node].name),
                    dims: vec![classes],
                    values: bias,
                });
                let index = self.params.len() - 1;
                if let Op::Gemm { bias, .. } = &mut self.nodes[self.head_node].op {
                    *bias = Some(index);
                }
            }
        }
        if let Op::Gemm {
            trans_b,
            alpha,
            beta,
            ..
        } = &mut self.nodes[self.head_node].op
        {
            *trans_b = true;
            *alpha = 1.0;
            *beta = 1.0;
        }
    }

    /// Output classes of the head.
    pub fn classes(&self) -> usize {
        let (w, _) = self.head_params();
        match self.nodes[self.head_node].op {
            Op::Gemm { trans_b: true, .. } => self.params[w].dims[0],
            _ => self.params[w].dims.get(1).copied().unwrap_or(0),
        }
    }

    /// Name of the dense head's node (a bias [`Self::set_head`] adds is named after it).
    pub fn head_node_name(&self) -> &str {
        &self.nodes[self.head_node].name
    }

    /// The head's weight as the file names it.
    pub fn head_weight_name(&self) -> &str {
        &self.params[self.head_params().0].name
    }

    /// The parameters as tensors on `device` in `dtype`; those in `tracked` require gradients
    /// (`device` must then have autodiff enabled).
    pub fn param_tensors(
        &self,
        device: &Device,
        dtype: DType,
        tracked: &HashSet<usize>,
    ) -> Vec<Tensor<1>> {
        self.params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let t = flat_tensor(&p.values, device, dtype);
                if tracked.contains(&i) {
                    t.require_grad()
                } else {
                    t
                }
            })
            .collect()
    }

    /// The head's output tensor name (the logits the loss is taken on).
    pub fn head_output(&self) -> &str {
        &self.nodes[self.head_node].outputs[0]
    }

    /// Runs the graph on `x` (the model's 4-d input, in its layout). `train_bn` lists the
    /// batch-normalisation nodes run on batch statistics (training mode); the others use
    /// their running statistics. Stops after the features when `features_only`; nodes after
    /// the head (a Softmax) never run: the loss takes the head's output.
    pub fn forward(
        &self,
        x: Tensor<4>,
        params: &[Tensor<1>],
        train_bn: &HashSet<usize>,
        features_only: bool,
    ) -> Result<Outputs> {
        let device = x.device();
        let dtype = x.dtype();
        let mut values: HashMap<String, Value> = HashMap::new();
        values.insert(self.input.clone(), Value::Float(Act::R4(x)));
        let mut batch_stats = Vec::new();
        let fetch = |values: &HashMap<String, Value>, name: &str| -> Result<Option<Value>> {
            if name.is_empty() {
                return Ok(None);
            }
            if let Some(v) = values.get(name) {
                return Ok(Some(v.clone()));
            }
            match self.constants.get(name) {
                Some(Constant::Ints(i)) => Ok(Some(Value::Ints(i.clone()))),
                Some(Constant::Floats { values, dims }) => Ok(Some(Value::Float(Act::constant(
                    values, dims, &device, dtype,
                )?))),
                None => Err(Error::InvalidArgument(format!(
                    "input '{name}' was not computed"
                ))),
            }
        };
        for (i, node) in self.nodes.iter().enumerate().take(self.head_node + 1) {
            if features_only && i == self.head_node {
                break;
            }
            let fail = |e: Error| {
                let reason = match e {
                    Error::InvalidArgument(r) => r,
                    other => other.to_string(),
                };
                Error::InvalidArgument(format!("node '{}': {reason}", node.name))
            };
            let inputs = node
                .inputs
                .iter()
                .map(|name| fetch(&values, name))
                .collect::<Result<Vec<_>>>()
                .map_err(fail)?;
            let ctx = Context {
                params,
                param_info: &self.params,
                device: &device,
                dtype,
                train_bn: train_bn.contains(&i),
                declared_batch: self.declared_batch,
            };
            let (outputs, stat) = node.op.run(inputs, &ctx).map_err(fail)?;
            if let Some((mean, var, count)) = stat {
                batch_stats.push((i, mean, var, count));
            }
            for (name, value) in node.outputs.iter().zip(outputs) {
                if !name.is_empty() {
                    values.insert(name.clone(), value);
                }
            }
            for name in &self.drop_after[i] {
                values.remove(name);
            }
        }
        let rows = |name: &str| -> Result<Tensor<2>> {
            match values.get(name) {
                Some(Value::Float(t)) => t.clone().rows(),
                _ => Err(Error::InvalidArgument(format!(
                    "tensor '{name}' was not computed as a float tensor"
                ))),
            }
        };
        let features = rows(&self.feature_tensor)?;
        let logits = if features_only {
            None
        } else {
            Some(rows(self.head_output())?)
        };
        Ok(Outputs {
            features,
            logits,
            batch_stats: BatchStats(batch_stats),
        })
    }

    /// Folds batch statistics into the running mean and variance held in `weights` (the
    /// parameters as device tensors, indexed like [`Self::params`]; ONNX momentum convention:
    /// `running = momentum·running + (1 − momentum)·batch`, the variance made unbiased as
    /// PyTorch does). Returns the indices of the parameters it changed.
    pub fn update_running_stats(&self, stats: BatchStats, weights: &mut [Tensor<1>]) -> Vec<usize> {
        let mut changed = Vec::new();
        for (node, mean, var, count) in stats.0 {
            if let Op::BatchNorm {
                mean: m,
                var: v,
                momentum,
                ..
            } = self.nodes[node].op
            {
                let unbias = if count > 1 {
                    count as f32 / (count as f32 - 1.0)
                } else {
                    1.0
                };
                // The factors rounded to f32 first: the update is f32 arithmetic.
                let mo = momentum as f32;
                let rest = 1.0 - mo;
                let blend = |running: &Tensor<1>, batch: Tensor<1>| {
                    running.clone().mul_scalar(mo).add(batch.mul_scalar(rest))
                };
                weights[m] = blend(&weights[m], mean);
                weights[v] = blend(&weights[v], var.mul_scalar(unbias));
                changed.extend([m, v]);
            }
        }
        changed
    }

    /// Batch-normalisation nodes of the given conv layers (run in training mode with them).
    pub fn bn_nodes_of(&self, layers: &[usize]) -> HashSet<usize> {
        layers
            .iter()
            .filter_map(|&l| self.conv_layers[l].bn_node)
            .collect()
    }

    /// Every batch-normalisation node that follows no convolution (trained with the dense
    /// layers, always in training mode during SGD).
    pub fn loose_bn_nodes(&self) -> HashSet<usize> {
        let tied: HashSet<usize> = self.conv_layers.iter().filter_map(|l| l.bn_node).collect();
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| matches!(n.op, Op::BatchNorm { .. }) && !tied.contains(i))
            .map(|(i, _)| i)
            .collect()
    }

    /// Parameters of [`Self::loose_bn_nodes`].
    pub fn loose_bn_params(&self) -> Vec<usize> {
        self.loose_bn_nodes()
            .into_iter()
            .filter_map(|i| match self.nodes[i].op {
                Op::BatchNorm { scale, bias, .. } => Some([scale, bias]),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// A tensor of `shape` holding `values` (row major) on `device` in `dtype`.
pub fn tensor_from<const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    let data = match dtype {
        DType::F64 => TensorData::new(values.iter().map(|&v| v as f64).collect::<Vec<_>>(), shape),
        _ => TensorData::new(values.to_vec(), shape),
    };
    Tensor::from_data(data, (device, dtype))
}

/// A flat tensor of `values` on `device` in `dtype`.
pub fn flat_tensor(values: &[f32], device: &Device, dtype: DType) -> Tensor<1> {
    tensor_from(values, [values.len()], device, dtype)
}

/// The values of a tensor as f32, row major.
pub fn to_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidArgument(format!("cannot read a tensor back: {e:?}")))
}

/// The values of a tensor as f64, row major (gradient checks).
pub fn to_f64<const D: usize>(t: Tensor<D>) -> Result<Vec<f64>> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| Error::InvalidArgument(format!("cannot read a tensor back: {e:?}")))
}
