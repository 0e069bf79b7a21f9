//! Reading the ONNX graph into the interpreter: every node checked against the supported ops,
//! its attributes read, its float initializers turned into parameters.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto};

use super::{ConvLayer, Graph, Node, Op, Param, SUPPORTED_OPS};
use crate::error::{Error, Result};
use crate::onnx::{float_values, graph_of};

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attribute(node, name).map(|a| a.ints.clone())
}

fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attribute(node, name).map_or(default, |a| a.i)
}

fn float(node: &NodeProto, name: &str, default: f64) -> f64 {
    attribute(node, name).map_or(default, |a| a.f as f64)
}

/// Strides, (begin, end) padding and dilations of a 2-d window op (Conv, MaxPool) with ONNX's
/// defaults; None unless the attributes are 2-d.
#[allow(clippy::type_complexity)]
fn window(n: &NodeProto) -> Option<([usize; 2], [(usize, usize); 2], [usize; 2])> {
    let pads = ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
    let strides = ints(n, "strides").unwrap_or_else(|| vec![1, 1]);
    let dilations = ints(n, "dilations").unwrap_or_else(|| vec![1, 1]);
    if pads.len() != 4 || strides.len() != 2 || dilations.len() != 2 {
        return None;
    }
    let u = |v: i64| v.max(0) as usize;
    let at_least_one = |v: &[i64]| [v[0].max(1) as usize, v[1].max(1) as usize];
    Some((
        at_least_one(&strides),
        [(u(pads[0]), u(pads[2])), (u(pads[1]), u(pads[3]))],
        at_least_one(&dilations),
    ))
}

impl Graph {
    /// Reads the graph of `proto` (`path` is for messages).
    pub fn from_proto(proto: &ModelProto, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Model {
            path: path.into(),
            reason,
        };
        let graph = graph_of(proto, path)?;
        let initializers: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let input = graph
            .input
            .iter()
            .find(|i| !initializers.contains_key(i.name.as_str()))
            .ok_or_else(|| bad("the graph has no input".into()))?
            .name
            .clone();
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
        let scalar = |name: &str| -> Option<f64> {
            initializers
                .get(name)
                .and_then(|t| float_values(t))
                .and_then(|v| v.first().map(|&x| x as f64))
        };
        let mut nodes = Vec::with_capacity(graph.node.len());
        for n in &graph.node {
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
            let arity = |k: usize| -> Result<()> {
                if n.input.len() < k || n.output.is_empty() {
                    return Err(unsupported(format!("needs {k} inputs and an output")));
                }
                Ok(())
            };
            let op = match n.op_type.as_str() {
                "Conv" => {
                    arity(2)?;
                    if attribute(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET")
                    {
                        return Err(unsupported("auto_pad is not supported".into()));
                    }
                    let (stride, padding, dilation) = window(n)
                        .ok_or_else(|| unsupported("only 2-d convolutions are supported".into()))?;
                    Op::Conv {
                        weight: param(&n.input[1], "weight")?,
                        bias: match n.input.get(2).filter(|s| !s.is_empty()) {
                            Some(b) => Some(param(b, "bias")?),
                            None => None,
                        },
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
                    Op::BatchNorm {
                        scale: param(&n.input[1], "scale")?,
                        bias: param(&n.input[2], "bias")?,
                        mean: param(&n.input[3], "mean")?,
                        var: param(&n.input[4], "variance")?,
                        epsilon: float(n, "epsilon", 1e-5),
                        momentum: float(n, "momentum", 0.9),
                    }
                }
                "Relu" => {
                    arity(1)?;
                    Op::Relu
                }
                "Clip" => {
                    arity(1)?;
                    // Opset ≥ 11: bounds are inputs (initializers); before: attributes.
                    let bound = |i: usize, attr: &str, default: f64| -> Result<f64> {
                        match n.input.get(i).filter(|s| !s.is_empty()) {
                            Some(name) => scalar(name).ok_or_else(|| {
                                unsupported(format!("bound '{name}' is not a constant"))
                            }),
                            None => Ok(float(n, attr, default)),
                        }
                    };
                    Op::Clip {
                        min: bound(1, "min", f64::NEG_INFINITY)?,
                        max: bound(2, "max", f64::INFINITY)?,
                    }
                }
                "Add" => {
                    arity(2)?;
                    Op::Add
                }
                "GlobalAveragePool" => {
                    arity(1)?;
                    Op::GlobalAveragePool
                }
                "MaxPool" => {
                    arity(1)?;
                    let kernel = ints(n, "kernel_shape").unwrap_or_default();
                    let (stride, padding, dilation) = window(n)
                        .filter(|_| kernel.len() == 2)
                        .ok_or_else(|| unsupported("only 2-d pooling is supported".into()))?;
                    Op::MaxPool {
                        options: MaxPoolOptions {
                            kernel_size: [kernel[0].max(1) as usize, kernel[1].max(1) as usize],
                            stride,
                            padding,
                            dilation,
                            ceil_mode: int(n, "ceil_mode", 0) != 0,
                        },
                    }
                }
                "Flatten" => {
                    arity(1)?;
                    if int(n, "axis", 1) != 1 {
                        return Err(unsupported("only axis 1 is supported".into()));
                    }
                    Op::Flatten
                }
                "Gemm" => {
                    arity(2)?;
                    if int(n, "transA", 0) != 0 {
                        return Err(unsupported("transA is not supported".into()));
                    }
                    Op::Gemm {
                        weight: param(&n.input[1], "weight")?,
                        bias: match n.input.get(2).filter(|s| !s.is_empty()) {
                            Some(b) => Some(param(b, "bias")?),
                            None => None,
                        },
                        trans_b: int(n, "transB", 0) != 0,
                        alpha: float(n, "alpha", 1.0),
                        beta: float(n, "beta", 1.0),
                    }
                }
                other => {
                    return Err(bad(format!(
                        "node '{label}' uses op '{other}', which `retrain` does not support \
                         (supported: {SUPPORTED_OPS})"
                    )));
                }
            };
            let inputs = match op {
                Op::Add => n.input[..2].to_vec(),
                _ => n.input[..1].to_vec(),
            };
            nodes.push(Node {
                name: label,
                op,
                inputs,
                output: n.output[0].clone(),
            });
        }
        let head_node = nodes
            .iter()
            .rposition(|n| matches!(n.op, Op::Gemm { .. }))
            .ok_or_else(|| Error::NoDenseHead { path: path.into() })?;
        let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        if !graph_outputs.contains(nodes[head_node].output.as_str()) {
            return Err(bad(format!(
                "the last Gemm ('{}') is not the graph's output: `retrain` needs the dense head \
                 to be the last layer",
                nodes[head_node].name
            )));
        }
        let feature_tensor = nodes[head_node].inputs[0].clone();
        let conv_layers = nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Conv { weight, bias, .. } => {
                    let mut params: Vec<usize> = std::iter::once(*weight).chain(*bias).collect();
                    let bn_node = nodes.iter().position(|m| {
                        matches!(m.op, Op::BatchNorm { .. }) && m.inputs[0] == n.output
                    });
                    if let Some(b) = bn_node
                        && let Op::BatchNorm { scale, bias, .. } = nodes[b].op
                    {
                        params.extend([scale, bias]);
                    }
                    Some(ConvLayer {
                        name: n.name.clone(),
                        params,
                        bn_node,
                    })
                }
                _ => None,
            })
            .collect();
        // Free each value after its last use.
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for input in &n.inputs {
                last_use.insert(input.as_str(), i);
            }
        }
        let mut drop_after = vec![Vec::new(); nodes.len()];
        for (name, i) in last_use {
            if name != feature_tensor {
                drop_after[i].push(name.to_string());
            }
        }
        Ok(Graph {
            nodes,
            params,
            input,
            feature_tensor,
            head_node,
            conv_layers,
            drop_after,
        })
    }
}
