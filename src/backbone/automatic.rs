//! The automatic feature recipe's tensors: which stage outputs of an ONNX graph are read beside
//! the penultimate one, found from the graph's structure alone (block outputs grouped into
//! stages by width), so that a model of any CNN family gets them without a spec entry.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::GraphProto;

/// Element-wise activations: a tensor they consume is still inside a block.
const ACTIVATIONS: &[&str] = &[
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "PRelu",
    "Softplus",
    "Gelu",
    "Mish",
];
/// Operations that only reshape or pool the tensor they read.
const PASS_THROUGH: &[&str] = &[
    "Flatten",
    "Reshape",
    "GlobalAveragePool",
    "ReduceMean",
    "Squeeze",
    "Identity",
];

/// The automatic recipe's tensors: `penultimate` first, then the outputs of the last
/// `stages` stages before it, latest first.
///
/// A *block output* is a tensor every path from the input to the output goes through (no
/// skip connection jumps over it) that ends a block: a residual sum (`Add`), an activation of
/// one, or a convolution (or batch norm) that no activation follows (a linear bottleneck).
/// A *stage* is a run of consecutive block outputs of one width (channels, read from the
/// convolution weights); its output is the last of the run. The stage that ends in the
/// tensor the penultimate one is pooled from is the penultimate itself and is left out.
/// A model with no such blocks (VGG, a plain chain) gets the penultimate tensor alone.
pub fn automatic_tensors(graph: &GraphProto, penultimate: &str, stages: usize) -> Vec<String> {
    let mut tensors = vec![penultimate.to_string()];
    let outputs = stage_outputs(graph, penultimate);
    tensors.extend(outputs.into_iter().rev().take(stages));
    tensors
}

fn stage_outputs(graph: &GraphProto, penultimate: &str) -> Vec<String> {
    let nodes = &graph.node;
    let n = nodes.len();
    let mut constant: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for input in node.input.iter().filter(|s| !s.is_empty()) {
            consumers.entry(input.as_str()).or_default().push(i);
        }
        if node
            .input
            .iter()
            .all(|s| s.is_empty() || constant.contains(s.as_str()))
        {
            constant.extend(node.output.iter().map(String::as_str));
        }
        for output in &node.output {
            producer.insert(output.as_str(), i);
        }
    }
    let last_use = |t: &str| -> usize {
        if graph.output.iter().any(|o| o.name == t) {
            return n;
        }
        consumers
            .get(t)
            .and_then(|c| c.iter().max().copied())
            .unwrap_or(0)
    };
    let op = |t: &str| producer.get(t).map(|&i| nodes[i].op_type.as_str());
    // The tensor the penultimate one is reshaped or pooled from.
    let mut source = penultimate;
    while let Some(&i) = producer.get(source) {
        if !PASS_THROUGH.contains(&nodes[i].op_type.as_str()) {
            break;
        }
        match nodes[i].input.first() {
            Some(input) => source = input,
            None => break,
        }
    }
    let Some(&end) = producer.get(source) else {
        return Vec::new();
    };
    // Block outputs, in graph order, before the source.
    let mut live = graph
        .input
        .iter()
        .filter(|i| !constant.contains(i.name.as_str()))
        .map(|i| last_use(&i.name))
        .max()
        .unwrap_or(0);
    let mut blocks: Vec<(&str, Option<usize>)> = Vec::new();
    for (i, node) in nodes.iter().enumerate().take(end + 1) {
        let outputs: Vec<&str> = node.output.iter().map(String::as_str).collect();
        let is_cut = live <= i && outputs.len() == 1 && !constant.contains(outputs[0]);
        for t in &outputs {
            if !constant.contains(t) {
                live = live.max(last_use(t));
            }
        }
        if !is_cut {
            continue;
        }
        let t = outputs[0];
        let kind = node.op_type.as_str();
        let followers: Vec<&str> = consumers
            .get(t)
            .map(|c| c.iter().map(|&j| nodes[j].op_type.as_str()).collect())
            .unwrap_or_default();
        let block_end = match kind {
            "Add" | "Sum" => true,
            k if ACTIVATIONS.contains(&k) => node
                .input
                .first()
                .is_some_and(|x| matches!(op(x), Some("Add" | "Sum"))),
            "Conv" | "BatchNormalization" => {
                !followers.is_empty()
                    && followers
                        .iter()
                        .all(|f| !ACTIVATIONS.contains(f) && *f != "BatchNormalization")
            }
            _ => false,
        };
        if block_end {
            blocks.push((t, channels(graph, &producer, t, 8)));
        }
    }
    // The last of each run of one width; the run holding the source is the penultimate.
    let mut outputs: Vec<String> = Vec::new();
    for (i, (t, width)) in blocks.iter().enumerate() {
        let run_ends = blocks.get(i + 1).is_none_or(|next| next.1 != *width);
        if run_ends && width.is_some() {
            outputs.push(t.to_string());
        }
    }
    if blocks.last().is_some_and(|b| b.0 == source) {
        outputs.pop();
    }
    outputs
}

/// Channels of a tensor, from the weights of the convolution (or batch norm) that made it,
/// looking back through sums and activations.
fn channels(
    graph: &GraphProto,
    producer: &HashMap<&str, usize>,
    tensor: &str,
    depth: usize,
) -> Option<usize> {
    let node = &graph.node[*producer.get(tensor)?];
    let init_dim = |name: &str| {
        graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.dims.first().copied())
            .and_then(|d| usize::try_from(d).ok())
    };
    match node.op_type.as_str() {
        "Conv" => init_dim(node.input.get(1)?),
        "BatchNormalization" => init_dim(node.input.get(1)?),
        _ if depth == 0 => None,
        _ => node
            .input
            .iter()
            .filter(|i| producer.contains_key(i.as_str()))
            .find_map(|i| channels(graph, producer, i, depth - 1)),
    }
}
