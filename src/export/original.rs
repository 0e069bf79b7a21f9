//! The model's own dense head, read back as a [`Head`]: exporting it gives back the model's own
//! outputs, which checks that `export` keeps the backbone intact.

use std::path::Path;

use tract_onnx::pb::GraphProto;

use super::{ExportFeatures, ExportReport, write_export};
use crate::error::{Error, Result};
use crate::head::Head;
use crate::onnx::{find_dense_head, float_values, parse_model};

/// The model's own final dense layer as a [`Head`] (labels "0", "1", … in output order) and
/// its input tensor. Exporting it gives back the model's own outputs, which checks that
/// `export` keeps the backbone intact.
pub fn original_head(model: &[u8], model_path: &Path) -> Result<(Head, String)> {
    let bad = |reason: String| Error::Model {
        path: model_path.into(),
        reason,
    };
    let proto = parse_model(model, model_path)?;
    let info = find_dense_head(&proto).ok_or_else(|| Error::NoDenseHead {
        path: model_path.into(),
    })?;
    let graph = proto.graph.as_ref().expect("find_dense_head found a graph");
    let node = graph
        .node
        .iter()
        .find(|n| n.output.first() == Some(&info.output) && n.input.get(1) == Some(&info.weight))
        .expect("find_dense_head found this node");
    let attribute = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let int_attr = |name: &str| attribute(name).map_or(0, |a| a.i);
    let float_attr = |name: &str| attribute(name).map_or(1.0, |a| a.f);
    let (alpha, beta) = if node.op_type == "Gemm" {
        (float_attr("alpha"), float_attr("beta"))
    } else {
        (1.0, 1.0)
    };
    if node.op_type == "Gemm" && int_attr("transA") != 0 {
        return Err(bad(format!(
            "the dense head '{}' transposes its input (transA); cannot read it",
            info.node_name
        )));
    }
    let initializer = |name: &str| graph.initializer.iter().find(|t| t.name == name);
    let weight = initializer(&info.weight).ok_or_else(|| {
        bad(format!(
            "the dense head's weight '{}' is quantized (a DequantizeLinear of int8 values): \
             its own head is re-attached from a float model",
            info.weight
        ))
    })?;
    let values = float_values(weight).ok_or_else(|| {
        bad(format!(
            "dense weight '{}' is not a float tensor",
            info.weight
        ))
    })?;
    let (rows, cols) = match weight.dims[..] {
        [r, c] if r > 0 && c > 0 && (r * c) as usize == values.len() => (r as usize, c as usize),
        _ => {
            return Err(bad(format!(
                "dense weight '{}' is not a matrix",
                info.weight
            )));
        }
    };
    // Head weights are inputs × outputs; Gemm's B is outputs × inputs when transB = 1.
    let trans_b = node.op_type == "Gemm" && int_attr("transB") != 0;
    let (inputs, outputs) = if trans_b { (cols, rows) } else { (rows, cols) };
    let mut weights = vec![0.0f64; (inputs + 1) * outputs];
    for i in 0..inputs {
        for o in 0..outputs {
            let w = if trans_b {
                values[o * cols + i]
            } else {
                values[i * cols + o]
            };
            weights[i * outputs + o] = (alpha * w) as f64;
        }
    }
    if let Some(bias_name) = node.input.get(2).filter(|n| !n.is_empty()) {
        let bias = initializer(bias_name)
            .and_then(float_values)
            .filter(|b| b.len() == outputs)
            .ok_or_else(|| {
                bad(format!(
                    "dense bias '{bias_name}' is not a float32 initializer of {outputs} values"
                ))
            })?;
        for (o, b) in bias.iter().enumerate() {
            weights[inputs * outputs + o] = (beta * b) as f64;
        }
    } else if let Some(bias) = matmul_bias(graph, &info.output, outputs) {
        // MatMul + Add (Keras' Dense as tf2onnx writes it, and other exporters).
        for (o, b) in bias.iter().enumerate() {
            weights[inputs * outputs + o] = f64::from(*b);
        }
    }
    let labels = (0..outputs).map(|o| o.to_string()).collect();
    let head = Head::original(inputs, labels, weights);
    head.validate().map_err(bad)?;
    Ok((head, info.input))
}

/// The bias of a MatMul head: the float initializer of `outputs` values that an `Add` node adds
/// to the MatMul's output, if there is one.
fn matmul_bias(graph: &GraphProto, matmul_output: &str, outputs: usize) -> Option<Vec<f32>> {
    let add = graph
        .node
        .iter()
        .find(|n| n.op_type == "Add" && n.input.iter().any(|i| i == matmul_output))?;
    let other = add.input.iter().find(|i| *i != matmul_output)?;
    graph
        .initializer
        .iter()
        .find(|t| &t.name == other)
        .and_then(float_values)
        .filter(|b| b.len() == outputs)
}

/// Exports `model` with its own dense head re-attached by the exporter (see
/// [`original_head`]) to `out`, atomically.
pub fn export_original(model: &Path, out: &Path) -> Result<ExportReport> {
    let whole = crate::onnx::read_whole_model(model)?;
    let (head, feature_tensor) = original_head(&whole.bytes, model)?;
    let mut report = write_export(
        &whole.bytes,
        model,
        &ExportFeatures::plain(&feature_tensor),
        &head,
        out,
    )?;
    report.data_files_inlined = whole.data_files;
    Ok(report)
}
