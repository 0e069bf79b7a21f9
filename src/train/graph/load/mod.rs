//! Reading the ONNX graph into the interpreter: every node checked against the supported ops,
//! its attributes read (the attribute forms of older opsets turned into the constant inputs of
//! newer ones, so each op runs one way), the initializers of trainable layers turned into
//! parameters and every other initializer or `Constant` into a constant.

mod assemble;
mod attributes;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};
use tract_onnx::pb::{
    ModelProto, TensorProto, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

use attributes::{
    attribute, constant_node, constant_of, float, has_auto_pad, int, ints, optional_input,
    param_inputs, string, window,
};

use super::ops::{Op, Unary};
use super::value::{Binary, Ints};
use super::{Constant, Graph, Node, Param, SUPPORTED_OPS};
use crate::error::{Error, Result};
use crate::onnx::{float_values, graph_of};

impl Graph {
    /// Reads the graph of `proto` (`path` is for messages).
    pub fn from_proto(proto: &ModelProto, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Model {
            path: path.into(),
            reason,
        };
        let graph = graph_of(proto, path)?;
        let mut initializers: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        // The legacy PyTorch exporter writes one initializer for equal tensors (zero biases) and
        // an Identity of it for each further use: each such use is its own initializer here
        // (trained on its own; the export writes it out and drops the Identity).
        let mut aliases = HashSet::new();
        for (i, n) in graph.node.iter().enumerate() {
            if n.op_type == "Identity"
                && let (Some(from), Some(to)) = (n.input.first(), n.output.first())
                && let Some(&t) = initializers.get(from.as_str())
            {
                initializers.insert(to.as_str(), t);
                aliases.insert(i);
            }
        }
        let input_info = graph
            .input
            .iter()
            .find(|i| !initializers.contains_key(i.name.as_str()))
            .ok_or_else(|| bad("the graph has no input".into()))?;
        let input = input_info.name.clone();
        let declared_batch = match input_info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .and_then(|s| s.dim.first())
                .and_then(|d| match d.value {
                    Some(tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                        Some(v as usize)
                    }
                    _ => None,
                }),
            _ => None,
        };
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(13, |o| o.version);

        // A MatMul by a constant weight whose only consumer is an Add of a constant bias is one
        // dense layer (tf2onnx's Dense): the Add is folded into it.
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for input in &n.input {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        let mut fused_add: HashMap<usize, usize> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            if n.op_type != "MatMul" || n.input.len() < 2 || n.output.is_empty() {
                continue;
            }
            if !initializers.contains_key(n.input[1].as_str()) {
                continue;
            }
            if let Some(&[j]) = consumers.get(n.output[0].as_str()).map(Vec::as_slice) {
                let add = &graph.node[j];
                let other = add.input.iter().find(|x| **x != n.output[0]);
                if add.op_type == "Add"
                    && add.input.len() == 2
                    && other.is_some_and(|b| {
                        initializers
                            .get(b.as_str())
                            .is_some_and(|t| t.dims.len() == 1)
                    })
                {
                    fused_add.insert(i, j);
                }
            }
        }
        let folded: HashSet<usize> = fused_add.values().copied().collect();

        let mut params: Vec<Param> = Vec::new();
        let mut param_index: HashMap<String, usize> = HashMap::new();
        let mut param = |name: &str, what: &str| -> Result<usize> {
            if let Some(&i) = param_index.get(name) {
                return Ok(i);
            }
            let t = initializers.get(name).ok_or_else(|| {
                bad(format!(
                    "{what} '{name}' is not an initializer (computed weights are not supported)"
                ))
            })?;
            let values = float_values(t)
                .ok_or_else(|| bad(format!("{what} '{name}' is not a float tensor")))?;
            let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            if dims.iter().product::<usize>() != values.len() {
                return Err(bad(format!(
                    "initializer '{name}' has the wrong number of values"
                )));
            }
            params.push(Param {
                name: name.to_string(),
                dims,
                values,
            });
            param_index.insert(name.to_string(), params.len() - 1);
            Ok(params.len() - 1)
        };
        // Every initializer no layer trains, and every Constant node, is a constant.
        let trained: HashSet<&str> = graph
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                let mut names: Vec<&str> = param_inputs(&n.op_type)
                    .iter()
                    .filter_map(|&k| n.input.get(k).map(String::as_str))
                    .collect();
                if let Some(&j) = fused_add.get(&i) {
                    names.extend(
                        graph.node[j]
                            .input
                            .iter()
                            .filter(|x| **x != n.output[0])
                            .map(String::as_str),
                    );
                }
                names
            })
            .collect();
        let mut constants: HashMap<String, Constant> = initializers
            .iter()
            .filter(|(name, _)| !trained.contains(*name))
            .filter_map(|(name, t)| constant_of(t).map(|c| (name.to_string(), c)))
            .collect();
        let float_scalar = |constants: &HashMap<String, Constant>, name: &str| -> Option<f64> {
            match constants.get(name)? {
                Constant::Floats { values, .. } => values.first().map(|&v| v as f64),
                Constant::Ints(i) => i.values.first().map(|&v| v as f64),
            }
        };

        let mut nodes = Vec::with_capacity(graph.node.len());
        for (index, n) in graph.node.iter().enumerate() {
            if folded.contains(&index) || aliases.contains(&index) {
                continue;
            }
            let label = if n.name.is_empty() {
                n.output.first().cloned().unwrap_or_default()
            } else {
                n.name.clone()
            };
            let unsupported = |what: String| {
                bad(format!(
                    "node '{label}' ({}): {what}; `retrain` supports {SUPPORTED_OPS}",
                    n.op_type
                ))
            };
            if n.output.is_empty() {
                return Err(unsupported("has no output".into()));
            }
            let arity = |k: usize| -> Result<()> {
                if n.input.len() < k {
                    return Err(unsupported(format!("needs {k} inputs")));
                }
                Ok(())
            };
            let mut inputs: Vec<String> = n.input.clone();
            let mut outputs: Vec<String> = n.output.clone();
            // An attribute of an older opset as the constant input a newer one takes.
            let mut as_input = |constants: &mut HashMap<String, Constant>,
                                position: usize,
                                values: Option<Vec<i64>>| {
                if let Some(values) = values {
                    let name = format!("{label}::input{position}");
                    constants.insert(name.clone(), Constant::Ints(Ints::vector(values)));
                    inputs.resize(inputs.len().max(position), String::new());
                    inputs.insert(position, name);
                    inputs.truncate(position + 1);
                }
            };
            let op = match n.op_type.as_str() {
                "Constant" => {
                    let c = constant_node(n)
                        .ok_or_else(|| unsupported("a constant of another type".into()))?;
                    constants.insert(n.output[0].clone(), c);
                    continue;
                }
                "Conv" => {
                    arity(2)?;
                    if has_auto_pad(n) {
                        return Err(unsupported("auto_pad is not supported".into()));
                    }
                    let (stride, padding, dilation) = window(n)
                        .ok_or_else(|| unsupported("only 2-d convolutions are supported".into()))?;
                    inputs.truncate(1);
                    Op::Conv {
                        weight: param(&n.input[1], "weight")?,
                        bias: optional_input(n, 2).map(|b| param(b, "bias")).transpose()?,
                        options: ConvOptions {
                            stride,
                            padding,
                            dilation,
                            groups: int(n, "group", 1).max(1) as usize,
                        },
                    }
                }
                "BatchNormalization" => {
                    arity(5)?;
                    inputs.truncate(1);
                    outputs.truncate(1);
                    Op::BatchNorm {
                        scale: param(&n.input[1], "scale")?,
                        bias: param(&n.input[2], "bias")?,
                        mean: param(&n.input[3], "mean")?,
                        var: param(&n.input[4], "variance")?,
                        epsilon: float(n, "epsilon", 1e-5),
                        momentum: float(n, "momentum", 0.9),
                    }
                }
                "Gemm" => {
                    arity(2)?;
                    if int(n, "transA", 0) != 0 {
                        return Err(unsupported("transA is not supported".into()));
                    }
                    inputs.truncate(1);
                    Op::Gemm {
                        weight: param(&n.input[1], "weight")?,
                        bias: optional_input(n, 2).map(|b| param(b, "bias")).transpose()?,
                        trans_b: int(n, "transB", 0) != 0,
                        alpha: float(n, "alpha", 1.0),
                        beta: float(n, "beta", 1.0),
                    }
                }
                "MatMul" => {
                    arity(2)?;
                    let weight = initializers
                        .get(n.input[1].as_str())
                        .filter(|t| t.dims.len() == 2)
                        .ok_or_else(|| {
                            unsupported(
                                "only a MatMul by a constant 2-d weight is supported".into(),
                            )
                        })?;
                    let bias = match fused_add.get(&index) {
                        Some(&j) => {
                            let add = &graph.node[j];
                            let b = add
                                .input
                                .iter()
                                .find(|x| **x != n.output[0])
                                .expect("fused");
                            outputs = add.output.clone();
                            Some(param(b, "bias")?)
                        }
                        None => None,
                    };
                    inputs.truncate(1);
                    Op::Gemm {
                        weight: param(&weight.name, "weight")?,
                        bias,
                        trans_b: false,
                        alpha: 1.0,
                        beta: 1.0,
                    }
                }
                "Relu" => Op::Unary(Unary::Relu),
                "Sigmoid" => Op::Unary(Unary::Sigmoid),
                "Tanh" => Op::Unary(Unary::Tanh),
                "HardSigmoid" => Op::Unary(Unary::HardSigmoid {
                    alpha: float(n, "alpha", 0.2),
                    beta: float(n, "beta", 0.5),
                }),
                "HardSwish" => Op::Unary(Unary::HardSwish),
                "LeakyRelu" => Op::Unary(Unary::LeakyRelu {
                    alpha: float(n, "alpha", 0.01),
                }),
                "Identity" => Op::Unary(Unary::Identity),
                "Dropout" => {
                    // Inference: the identity (its optional mask output is not supported).
                    outputs.truncate(1);
                    inputs.truncate(1);
                    Op::Unary(Unary::Identity)
                }
                "Clip" => {
                    arity(1)?;
                    // Opset ≥ 11: bounds are inputs (constants); before: attributes.
                    let bound = |i: usize, attr: &str, default: f64| -> Result<f64> {
                        match n.input.get(i).filter(|s| !s.is_empty()) {
                            Some(name) => float_scalar(&constants, name).ok_or_else(|| {
                                unsupported(format!("bound '{name}' is not a constant"))
                            }),
                            None => Ok(float(n, attr, default)),
                        }
                    };
                    let (min, max) = (
                        bound(1, "min", f64::NEG_INFINITY)?,
                        bound(2, "max", f64::INFINITY)?,
                    );
                    inputs.truncate(1);
                    Op::Unary(Unary::Clip { min, max })
                }
                "Add" | "Sub" | "Mul" | "Div" => {
                    arity(2)?;
                    inputs.truncate(2);
                    Op::Binary(match n.op_type.as_str() {
                        "Add" => Binary::Add,
                        "Sub" => Binary::Sub,
                        "Mul" => Binary::Mul,
                        _ => Binary::Div,
                    })
                }
                "GlobalAveragePool" => Op::GlobalAveragePool,
                "GlobalMaxPool" => Op::GlobalMaxPool,
                "MaxPool" | "AveragePool" => {
                    arity(1)?;
                    if has_auto_pad(n) {
                        return Err(unsupported("auto_pad is not supported".into()));
                    }
                    let kernel = ints(n, "kernel_shape").unwrap_or_default();
                    let (stride, padding, dilation) = window(n)
                        .filter(|_| kernel.len() == 2)
                        .ok_or_else(|| unsupported("only 2-d pooling is supported".into()))?;
                    let kernel_size = [kernel[0].max(1) as usize, kernel[1].max(1) as usize];
                    let ceil_mode = int(n, "ceil_mode", 0) != 0;
                    if n.op_type == "MaxPool" {
                        if n.output.len() > 1 {
                            return Err(unsupported("the indices output is not supported".into()));
                        }
                        Op::MaxPool {
                            options: MaxPoolOptions {
                                kernel_size,
                                stride,
                                padding,
                                dilation,
                                ceil_mode,
                            },
                        }
                    } else {
                        if dilation != [1, 1] {
                            return Err(unsupported("dilated average pooling".into()));
                        }
                        Op::AveragePool {
                            options: AvgPoolOptions {
                                kernel_size,
                                stride,
                                padding,
                                count_include_pad: int(n, "count_include_pad", 0) != 0,
                                ceil_mode,
                            },
                        }
                    }
                }
                "Flatten" => Op::Flatten {
                    axis: int(n, "axis", 1),
                },
                "Reshape" => {
                    arity(2)?;
                    Op::Reshape {
                        allow_zero: int(n, "allowzero", 0) != 0,
                    }
                }
                "Transpose" => Op::Transpose {
                    perm: ints(n, "perm").map(|p| p.iter().map(|&v| v.max(0) as usize).collect()),
                },
                "Concat" => Op::Concat {
                    axis: int(n, "axis", 0),
                },
                "Split" => {
                    if opset < 13 {
                        as_input(&mut constants, 1, ints(n, "split"));
                    }
                    Op::Split {
                        axis: int(n, "axis", 0),
                        outputs: int(n, "num_outputs", n.output.len() as i64).max(1) as usize,
                    }
                }
                "Slice" => {
                    if opset < 10 {
                        let starts = ints(n, "starts");
                        let ends = ints(n, "ends");
                        let axes = ints(n, "axes");
                        as_input(&mut constants, 1, starts);
                        as_input(&mut constants, 2, ends);
                        as_input(&mut constants, 3, axes);
                    }
                    Op::Slice
                }
                "Squeeze" | "Unsqueeze" => {
                    if opset < 13 {
                        as_input(&mut constants, 1, ints(n, "axes"));
                    }
                    if n.op_type == "Squeeze" {
                        Op::Squeeze
                    } else {
                        Op::Unsqueeze
                    }
                }
                "ReduceMean" => {
                    if opset < 18 {
                        as_input(&mut constants, 1, ints(n, "axes"));
                    }
                    Op::ReduceMean {
                        keep: int(n, "keepdims", 1) != 0,
                        noop_with_empty_axes: int(n, "noop_with_empty_axes", 0) != 0,
                    }
                }
                "Softmax" | "LogSoftmax" => Op::Softmax {
                    axis: int(n, "axis", if opset < 13 { 1 } else { -1 }),
                    log: n.op_type == "LogSoftmax",
                },
                "Pad" => {
                    if opset < 11 {
                        as_input(&mut constants, 1, ints(n, "pads"));
                    }
                    let mode = match string(n, "mode").as_deref().unwrap_or("constant") {
                        "constant" => PadMode::Constant(float(n, "value", 0.0) as f32),
                        "reflect" => PadMode::Reflect,
                        "edge" => PadMode::Edge,
                        other => return Err(unsupported(format!("pad mode '{other}'"))),
                    };
                    Op::Pad { mode }
                }
                "Shape" => Op::Shape {
                    start: int(n, "start", 0),
                    end: attribute(n, "end").map(|a| a.i),
                },
                "Gather" => {
                    arity(2)?;
                    Op::Gather {
                        axis: int(n, "axis", 0),
                    }
                }
                "Cast" => {
                    let to = DataType::try_from(int(n, "to", 0) as i32).ok();
                    match to {
                        Some(DataType::Float | DataType::Double | DataType::Float16) => {
                            Op::CastToFloat
                        }
                        Some(DataType::Int64 | DataType::Int32) => Op::CastToInt,
                        _ => return Err(unsupported("a cast to another type".into())),
                    }
                }
                other => {
                    return Err(bad(format!(
                        "node '{label}' uses op '{other}', which `retrain` does not support \
                         (supported: {SUPPORTED_OPS})"
                    )));
                }
            };
            if inputs.iter().all(String::is_empty) {
                return Err(unsupported("has no input".into()));
            }
            nodes.push(Node {
                name: label,
                op,
                inputs,
                outputs,
            });
        }
        Self::assemble(nodes, params, constants, input, declared_batch, graph, path)
    }
}
