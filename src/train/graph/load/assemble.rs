//! The graph's structure once its nodes are read: the dense head and the tail after it, the
//! convolution layers (what the random share of trained layers is drawn from), and when each
//! value can be freed.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::super::ops::{Op, Unary};
use super::super::{Constant, ConvLayer, Graph, HeadForm, Node, Param};
use crate::error::{Error, Result};

impl Graph {
    /// The head, the tail after it, the conv layers and when each value can be freed.
    pub(super) fn assemble(
        nodes: Vec<Node>,
        params: Vec<Param>,
        constants: HashMap<String, Constant>,
        input: String,
        declared_batch: Option<usize>,
        graph: &tract_onnx::pb::GraphProto,
        path: &Path,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Model {
            path: path.into(),
            reason,
        };
        let head_node = nodes
            .iter()
            .rposition(|n| matches!(n.op, Op::Gemm { .. }))
            .ok_or_else(|| Error::NoDenseHead { path: path.into() })?;
        // After the head only a Softmax / LogSoftmax / Identity / Cast chain to the graph's
        // output (a half-precision model casts its scores back to float32).
        let mut last = nodes[head_node].outputs[0].clone();
        let mut tail_outputs = Vec::new();
        for n in &nodes[head_node + 1..] {
            let chained = n.inputs.first() == Some(&last)
                && matches!(
                    n.op,
                    Op::Softmax { .. } | Op::Unary(Unary::Identity) | Op::CastToFloat
                );
            if !chained {
                return Err(bad(format!(
                    "node '{}' follows the last dense layer ('{}'): `retrain` needs the dense \
                     head to be the last layer (a Softmax or LogSoftmax after it is kept)",
                    n.name, nodes[head_node].name
                )));
            }
            last = n.outputs[0].clone();
            tail_outputs.push(last.clone());
        }
        let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        if !graph_outputs.contains(last.as_str()) {
            return Err(bad(format!(
                "the last dense layer ('{}') is not the graph's output: `retrain` needs the \
                 dense head to be the last layer",
                nodes[head_node].name
            )));
        }
        let head_form =
            if graph.node.iter().any(|n| {
                n.op_type == "MatMul" && n.output.first() == Some(&nodes[head_node].outputs[0])
            }) {
                HeadForm::MatMul { add_output: None }
            } else if graph.node.iter().any(|n| {
                n.op_type == "Add" && n.output.first() == Some(&nodes[head_node].outputs[0])
            }) {
                HeadForm::MatMul {
                    add_output: Some(nodes[head_node].outputs[0].clone()),
                }
            } else {
                HeadForm::Gemm
            };
        let feature_tensor = nodes[head_node].inputs[0].clone();
        let conv_layers = nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Conv { weight, bias, .. } => {
                    let mut params: Vec<usize> = std::iter::once(*weight).chain(*bias).collect();
                    let bn_node = nodes.iter().position(|m| {
                        matches!(m.op, Op::BatchNorm { .. }) && m.inputs[0] == n.outputs[0]
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
            if name != feature_tensor && !name.is_empty() {
                drop_after[i].push(name.to_string());
            }
        }
        Ok(Graph {
            nodes,
            params,
            constants,
            input,
            declared_batch,
            feature_tensor,
            head_node,
            head_form,
            tail_outputs,
            conv_layers,
            drop_after,
        })
    }
}
