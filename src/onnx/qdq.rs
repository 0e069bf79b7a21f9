//! Quantized models (QDQ: the `QuantizeLinear`/`DequantizeLinear` pairs that
//! onnxruntime.quantization writes) made retrainable: the weights are dequantized into float32
//! initializers, and each quantize-dequantize pair on an activation is taken out (its readers
//! read the tensor it quantized; an Identity keeps a graph output's name).
//! Training then runs in float32 on the values the quantized model stands for; the retrained
//! model is a float32 model (quantize it again for the board).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use tract_onnx::pb::{GraphProto, NodeProto, TensorProto, tensor_proto::DataType};

use super::build::{float_tensor, node};
use crate::error::{Error, Result};

/// Rewrites `graph` as described in the module docs; returns how many nodes it rewrote.
pub(crate) fn dequantize(graph: &mut GraphProto, model: &Path) -> Result<usize> {
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut rewritten = 0;
    let mut weights = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut renamed: HashMap<String, String> = HashMap::new();
    // Which nodes read each tensor: a QuantizeLinear whose output only DequantizeLinear nodes
    // read is a fake-quantization of an activation.
    let mut readers: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            readers.entry(i.as_str()).or_default().push(n);
        }
    }
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut pairs: HashMap<String, String> = HashMap::new(); // Q output -> Q input
    for n in &graph.node {
        if n.op_type == "QuantizeLinear"
            && let (Some(input), Some(output)) = (n.input.first(), n.output.first())
            && !graph_outputs.contains(output.as_str())
            && readers
                .get(output.as_str())
                .is_some_and(|r| r.iter().all(|d| d.op_type == "DequantizeLinear"))
        {
            pairs.insert(output.clone(), input.clone());
        }
    }
    for n in &graph.node {
        let output = n.output.first().cloned().unwrap_or_default();
        match n.op_type.as_str() {
            "DequantizeLinear"
                if n.input
                    .iter()
                    .all(|i| initializers.contains_key(i.as_str())) =>
            {
                let values = dequantized(n, &initializers).map_err(|reason| Error::Model {
                    path: model.into(),
                    reason: format!("node '{}' (DequantizeLinear): {reason}", n.name),
                })?;
                let dims = initializers[n.input[0].as_str()].dims.clone();
                weights.push(float_tensor(&output, &dims, values.into_iter()));
                rewritten += 1;
            }
            "DequantizeLinear" if n.input.first().is_some_and(|i| pairs.contains_key(i)) => {
                // Its readers read the quantized tensor's source instead; a graph output keeps
                // its name through an Identity.
                let source = &pairs[&n.input[0]];
                if graph_outputs.contains(output.as_str()) {
                    nodes.push(node("Identity", &n.name, &[source], &output));
                } else {
                    renamed.insert(output, source.clone());
                }
                rewritten += 1;
            }
            "QuantizeLinear" if pairs.contains_key(&output) => rewritten += 1,
            _ => nodes.push(n.clone()),
        }
    }
    // (A pair may quantize what another pair gave back: followed to the end.)
    for name in nodes.iter_mut().flat_map(|n| n.input.iter_mut()) {
        while let Some(source) = renamed.get(name.as_str()) {
            name.clone_from(source);
        }
    }
    graph.node = nodes;
    graph.initializer.extend(weights);
    // The integer weights, scales and zero points nothing reads any more.
    let read: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    graph.initializer.retain(|t| read.contains(&t.name));
    // A graph input listed for a weight that is gone (older exporters list weights as inputs).
    graph.input.retain(|i| read.contains(&i.name));
    Ok(rewritten)
}

/// `(x - zero_point) * scale`, per tensor or per channel along `axis`.
fn dequantized(
    n: &NodeProto,
    initializers: &HashMap<&str, &TensorProto>,
) -> std::result::Result<Vec<f32>, String> {
    let x = initializers[n.input[0].as_str()];
    let q = integer_values(x).ok_or("its input is not an integer tensor")?;
    let scale =
        super::float_values(initializers[n.input[1].as_str()]).ok_or("its scale is not float")?;
    let zero = match n.input.get(2).filter(|z| !z.is_empty()) {
        Some(z) => {
            integer_values(initializers[z.as_str()]).ok_or("its zero point is not an integer")?
        }
        None => vec![0],
    };
    if scale.is_empty() || zero.is_empty() {
        return Err("empty scale or zero point".into());
    }
    let dims: Vec<usize> = x.dims.iter().map(|&d| d.max(0) as usize).collect();
    let per_channel = scale.len() > 1;
    let (channels, inner) = if per_channel {
        let rank = dims.len() as i64;
        let axis = n
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map_or(1, |a| a.i);
        let axis = if axis < 0 { axis + rank } else { axis };
        let axis = usize::try_from(axis)
            .ok()
            .filter(|&a| a < dims.len())
            .ok_or("its axis is outside the tensor")?;
        if dims[axis] != scale.len() {
            return Err(format!(
                "{} scales for {} channels on axis {axis}",
                scale.len(),
                dims[axis]
            ));
        }
        (dims[axis], dims[axis + 1..].iter().product::<usize>())
    } else {
        (1, 1)
    };
    Ok(q.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / inner) % channels;
            let z = zero[c.min(zero.len() - 1)];
            (v - z) as f32 * scale[c]
        })
        .collect())
}

/// The values of an int8, uint8 or int32 tensor.
fn integer_values(t: &TensorProto) -> Option<Vec<i64>> {
    let raw = &t.raw_data;
    let values = match DataType::try_from(t.data_type).ok()? {
        DataType::Int8 if !raw.is_empty() => raw.iter().map(|&b| i64::from(b as i8)).collect(),
        DataType::Uint8 if !raw.is_empty() => raw.iter().map(|&b| i64::from(b)).collect(),
        DataType::Int32 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        DataType::Int8 | DataType::Uint8 | DataType::Int32 => {
            t.int32_data.iter().map(|&v| i64::from(v)).collect()
        }
        _ => return None,
    };
    Some(values)
}
