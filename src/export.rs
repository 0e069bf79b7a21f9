//! Export of an adapted model as a standard ONNX file: the original backbone graph up to the
//! feature tensor, then the refit head (its hidden layers, if any, and the output layer) as
//! Gemm nodes with f32 initializers, under the original output name, with the labels in the
//! model's metadata. The model's own dense head and anything else the new output does not need
//! is pruned. Any ONNX runtime (onnxruntime, tract) runs the result; the edge commands accept it
//! as a new backbone.

use std::path::{Path, PathBuf};

use prost::Message;
use serde::Serialize;
use tract_onnx::pb::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto,
    type_proto,
};
use tract_onnx::prelude::{DatumExt, Framework, InferenceModelExt, TractResult, TypedModel};

use crate::error::{Error, Result};
use crate::feature_recipe::{FeatureRecipe, Transform, channel_axis};
use crate::head::{Activation, DenseLayer, Head};
pub use crate::onnx::{LABELS_KEY, ResizeReport};
use crate::onnx::{
    find_dense_head, float_values, graph_of_mut, parse_model, read_model_file, set_input_size,
    set_metadata, write_model_with_spec,
};
use crate::pack::PackMeta;
use crate::spec::ModelSpec;
use crate::state::{State, write_atomically};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub out: PathBuf,
    pub output: String,
    pub classes: usize,
    pub labels: Vec<String>,
    pub hidden: Vec<usize>,
    pub bytes: usize,
    pub nodes_removed: usize,
}

fn float_tensor(name: &str, dims: &[i64], values: impl Iterator<Item = f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: values.flat_map(f32::to_le_bytes).collect(),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// Appends `Gemm(x, W, b)` (and the activation) for weights stored (inputs + 1) × outputs,
/// row major, bias last; returns the output tensor name.
fn append_dense(graph: &mut GraphProto, prefix: &str, x: &str, layer: &DenseLayer, output: &str) {
    let (inputs, outputs) = (layer.inputs, layer.outputs);
    let (weights, activation) = (&layer.weights, layer.activation);
    let (w, b) = (format!("{prefix}/weight"), format!("{prefix}/bias"));
    graph.initializer.push(float_tensor(
        &w,
        &[inputs as i64, outputs as i64],
        weights[..inputs * outputs].iter().map(|&v| v as f32),
    ));
    graph.initializer.push(float_tensor(
        &b,
        &[outputs as i64],
        weights[inputs * outputs..].iter().map(|&v| v as f32),
    ));
    let z = if activation == Activation::Identity {
        output.to_string()
    } else {
        format!("{prefix}/z")
    };
    graph
        .node
        .push(node("Gemm", &format!("{prefix}/gemm"), &[x, &w, &b], &z));
    let act = |op: &str, inputs: &[&str], out: &str, graph: &mut GraphProto| {
        graph.node.push(node(
            op,
            &format!("{prefix}/{}", op.to_lowercase()),
            inputs,
            out,
        ));
    };
    match activation {
        Activation::Identity => {}
        Activation::Relu => act("Relu", &[&z], output, graph),
        Activation::Sin => act("Sin", &[&z], output, graph),
        Activation::Bsig => {
            // 2σ(z) − 1
            let (s, two, one, d) = (
                format!("{prefix}/sigmoid"),
                format!("{prefix}/two"),
                format!("{prefix}/one"),
                format!("{prefix}/double"),
            );
            graph
                .initializer
                .push(float_tensor(&two, &[], std::iter::once(2.0)));
            graph
                .initializer
                .push(float_tensor(&one, &[], std::iter::once(1.0)));
            act("Sigmoid", &[&z], &s, graph);
            act("Mul", &[&s, &two], &d, graph);
            act("Sub", &[&d, &one], output, graph);
        }
    }
}

/// Keeps only the nodes, initializers and value infos `outputs` need.
fn prune(graph: &mut GraphProto, outputs: &[String]) -> usize {
    let mut needed: std::collections::HashSet<String> = outputs.iter().cloned().collect();
    let mut keep = vec![false; graph.node.len()];
    for (i, n) in graph.node.iter().enumerate().rev() {
        if n.output.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    let before = graph.node.len();
    let mut k = keep.into_iter();
    graph.node.retain(|_| k.next().unwrap_or(false));
    graph.initializer.retain(|t| needed.contains(&t.name));
    graph.value_info.retain(|v| needed.contains(&v.name));
    graph.input.retain(|v| needed.contains(&v.name));
    before - graph.node.len()
}

/// How one tensor of a feature recipe becomes part of the feature vector in the exported graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Flattened after the batch axis.
    Flatten,
    /// Global average pool of an NCHW tensor.
    Nchw,
    /// Global average pool of an NHWC tensor (transposed to NCHW first).
    Nhwc,
}

/// The feature part of an exported graph: the tensors read, how each is pooled, and the
/// transform ([`crate::feature_recipe`]); `descriptor` is what the metadata records.
#[derive(Debug, Clone)]
pub struct ExportFeatures {
    pub tensors: Vec<(String, Pooling)>,
    pub transform: Transform,
    pub descriptor: String,
    /// Test-time flip averaging: each image runs with its mirror in one batch of 2N, and the
    /// features of the two halves are averaged before the head (`predict --tta hflip`).
    /// The width axis of the graph input.
    pub flip_average: Option<usize>,
}

impl ExportFeatures {
    /// One tensor, flattened: the features of a plain recipe.
    pub fn plain(tensor: &str) -> Self {
        ExportFeatures {
            tensors: vec![(tensor.to_string(), Pooling::Flatten)],
            transform: Transform::None,
            descriptor: tensor.to_string(),
            flip_average: None,
        }
    }
}

/// Rewrites `model` (ONNX bytes) with `head` on `feature_tensor`; returns the new bytes.
pub fn export_bytes(
    model: &[u8],
    model_path: &Path,
    feature_tensor: &str,
    head: &Head,
) -> Result<(Vec<u8>, ExportReport)> {
    export_features_bytes(
        model,
        model_path,
        &ExportFeatures::plain(feature_tensor),
        head,
    )
}

/// Appends the nodes that make the feature vector (pooling, concatenation, transform) and
/// returns its tensor name.
fn append_features(graph: &mut GraphProto, features: &ExportFeatures, dim: usize) -> String {
    let mut parts = Vec::new();
    for (i, (tensor, pooling)) in features.tensors.iter().enumerate() {
        let p = format!("fastretrain/features/{i}");
        let mut x = tensor.clone();
        if *pooling == Pooling::Nhwc {
            let t = format!("{p}/nchw");
            let mut transpose = node("Transpose", &t, &[&x], &t);
            transpose
                .attribute
                .push(ints_attribute("perm", &[0, 3, 1, 2]));
            graph.node.push(transpose);
            x = t;
        }
        if *pooling != Pooling::Flatten {
            let g = format!("{p}/pool");
            graph.node.push(node("GlobalAveragePool", &g, &[&x], &g));
            x = g;
        }
        let f = format!("{p}/flat");
        let mut flatten = node("Flatten", &f, &[&x], &f);
        flatten.attribute.push(int_attribute("axis", 1));
        graph.node.push(flatten);
        parts.push(f);
    }
    let mut x = if parts.len() == 1 {
        parts.remove(0)
    } else {
        let c = "fastretrain/features/concat".to_string();
        let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut concat = node("Concat", &c, &inputs, &c);
        concat.attribute.push(int_attribute("axis", 1));
        graph.node.push(concat);
        c
    };
    let op = |graph: &mut GraphProto, op: &str, inputs: &[&str]| -> String {
        let name = format!("fastretrain/features/{}", op.to_lowercase());
        let name = format!("{name}{}", graph.node.len());
        graph.node.push(node(op, &name, inputs, &name));
        name
    };
    if features.transform.signed_sqrt() {
        // sign(x)·√|x|
        let sign = op(graph, "Sign", &[&x]);
        let abs = op(graph, "Abs", &[&x]);
        let root = op(graph, "Sqrt", &[&abs]);
        x = op(graph, "Mul", &[&sign, &root]);
    }
    if features.transform.l2() {
        // x / max(‖x‖, tiny): a zero vector stays zero, as in the library. The sum of squares
        // is a MatMul with ones, which every opset has in the same form (ReduceSum's axes
        // moved from attribute to input in opset 13).
        let (ones, tiny) = ("fastretrain/features/ones", "fastretrain/features/tiny");
        graph.initializer.push(float_tensor(
            ones,
            &[dim as i64, 1],
            std::iter::repeat_n(1.0, dim),
        ));
        graph
            .initializer
            .push(float_tensor(tiny, &[1], std::iter::once(f32::MIN_POSITIVE)));
        let square = op(graph, "Mul", &[&x, &x]);
        let sum = op(graph, "MatMul", &[&square, ones]);
        let norm = op(graph, "Sqrt", &[&sum]);
        let safe = op(graph, "Max", &[&norm, tiny]);
        x = op(graph, "Div", &[&x, &safe]);
    }
    if features.flip_average.is_some() {
        // [2N, d] → [2, N·d] → ½(first + second) → [N, d]: Reshape and MatMul take the same
        // form in every opset (ReduceMean's axes and Split's sizes do not).
        let (halves, half, rows) = (
            "fastretrain/tta/halves_shape",
            "fastretrain/tta/half",
            "fastretrain/tta/rows_shape",
        );
        graph.initializer.push(int64_tensor(halves, &[2, -1]));
        graph
            .initializer
            .push(float_tensor(half, &[1, 2], [0.5f32, 0.5].into_iter()));
        graph
            .initializer
            .push(int64_tensor(rows, &[-1, dim as i64]));
        let two = op(graph, "Reshape", &[&x, halves]);
        let mean = op(graph, "MatMul", &[half, &two]);
        x = op(graph, "Reshape", &[&mean, rows]);
    }
    let out = "fastretrain/features".to_string();
    graph
        .node
        .push(node("Identity", "fastretrain/features", &[&x], &out));
    out
}

fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// Feeds the graph each image and its mirror: the input becomes `Concat(x, x[..., ::-1])` along
/// the batch axis for every node that read it (Slice with a step of −1 along `width_axis`).
fn mirror_input(graph: &mut GraphProto, width_axis: usize) -> std::result::Result<(), String> {
    let input = graph
        .input
        .iter()
        .find(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.clone())
        .ok_or("the graph has no image input")?;
    let (batch, mirrored) = ("fastretrain/tta/batch", "fastretrain/tta/mirrored");
    for n in graph.node.iter_mut() {
        for i in n.input.iter_mut().filter(|i| **i == input) {
            *i = batch.into();
        }
    }
    let (starts, ends, axes, steps) = (
        "fastretrain/tta/starts",
        "fastretrain/tta/ends",
        "fastretrain/tta/axes",
        "fastretrain/tta/steps",
    );
    graph.initializer.push(int64_tensor(starts, &[-1]));
    graph.initializer.push(int64_tensor(ends, &[i64::MIN]));
    graph
        .initializer
        .push(int64_tensor(axes, &[width_axis as i64]));
    graph.initializer.push(int64_tensor(steps, &[-1]));
    let slice = node(
        "Slice",
        mirrored,
        &[&input, starts, ends, axes, steps],
        mirrored,
    );
    let mut concat = node("Concat", batch, &[&input, mirrored], batch);
    concat.attribute.push(int_attribute("axis", 0));
    // Before every other node: ONNX nodes are listed in topological order.
    graph.node.splice(0..0, [slice, concat]);
    Ok(())
}

/// The model's default-domain opset version (1 when it names none).
fn proto_opset(opsets: &[tract_onnx::pb::OperatorSetIdProto]) -> i64 {
    opsets
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version)
}

/// Rewrites `model` (ONNX bytes) with `head` on the feature vector `features` describes.
pub fn export_features_bytes(
    model: &[u8],
    model_path: &Path,
    features: &ExportFeatures,
    head: &Head,
) -> Result<(Vec<u8>, ExportReport)> {
    let bad = |reason: String| Error::Model {
        path: model_path.into(),
        reason,
    };
    if head.classes() == 0 {
        return Err(Error::InvalidArgument(
            "the state's head has no classes: learn some labelled data first".into(),
        ));
    }
    let mut proto = parse_model(model, model_path)?;
    let proto_opsets = proto.opset_import.clone();
    let graph = graph_of_mut(&mut proto, model_path)?;
    let produced = |g: &GraphProto, name: &str| {
        g.node.iter().any(|n| n.output.iter().any(|o| o == name))
            || g.input.iter().any(|i| i.name == name)
    };
    for (tensor, _) in &features.tensors {
        if !produced(graph, tensor) {
            return Err(bad(format!("no tensor named '{tensor}'")));
        }
    }
    if let Some(width_axis) = features.flip_average {
        let opset = proto_opset(&proto_opsets);
        if opset < 10 {
            return Err(bad(format!(
                "flip averaging needs Slice with steps (opset 10 or later); the model is opset \
                 {opset}"
            )));
        }
        mirror_input(graph, width_axis).map_err(|e| bad(e.to_string()))?;
    }
    let original = graph
        .output
        .first()
        .cloned()
        .ok_or_else(|| bad("the graph has no output".into()))?;
    let output = original.name.clone();
    // The original output's producers are replaced by the new head.
    graph.node.retain(|n| !n.output.contains(&output));
    if produced(graph, &output) {
        return Err(bad(format!(
            "output '{output}' is also a graph input; cannot replace it"
        )));
    }
    let head_inputs = head
        .hidden
        .first()
        .map_or(head.output_inputs(), |l| l.inputs);
    let mut x = append_features(graph, features, head_inputs);
    for (i, layer) in head.hidden.iter().enumerate() {
        let out = format!("fastretrain/hidden{i}");
        append_dense(graph, &format!("fastretrain/hidden{i}"), &x, layer, &out);
        x = out;
    }
    let output_layer = DenseLayer {
        inputs: head.output_inputs(),
        outputs: head.classes(),
        weights: head.weights.clone(),
        activation: Activation::Identity,
    };
    append_dense(graph, "fastretrain/head", &x, &output_layer, &output);
    // Batch dimension as the original output had it.
    let batch = original
        .r#type
        .as_ref()
        .and_then(|t| match &t.value {
            Some(type_proto::Value::TensorType(tt)) => tt.shape.as_ref(),
            _ => None,
        })
        .and_then(|s| s.dim.first().cloned())
        .unwrap_or(tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimParam("N".into())),
            ..Default::default()
        });
    graph.output = vec![ValueInfoProto {
        name: output.clone(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        batch,
                        tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(
                                head.classes() as i64,
                            )),
                            ..Default::default()
                        },
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let nodes_removed = prune(graph, std::slice::from_ref(&output));
    set_metadata(
        &mut proto,
        &head.labels,
        [
            ("fastretrain.method", head.method.to_string()),
            ("fastretrain.lambda", head.lambda.to_string()),
            ("fastretrain.feature_tensor", features.descriptor.clone()),
            (
                "fastretrain.tta",
                if features.flip_average.is_some() {
                    "hflip"
                } else {
                    "none"
                }
                .into(),
            ),
        ],
    );
    let bytes = proto.encode_to_vec();
    let report = ExportReport {
        out: PathBuf::new(),
        output,
        classes: head.classes(),
        labels: head.labels.clone(),
        hidden: head.hidden.iter().map(|l| l.outputs).collect(),
        bytes: bytes.len(),
        nodes_removed,
    };
    Ok((bytes, report))
}

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
    let weight = initializer(&info.weight).expect("find_dense_head checked the initializer");
    let values = float_values(weight)
        .ok_or_else(|| bad(format!("dense weight '{}' is not float32", info.weight)))?;
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
    let (bytes, _) = read_model_file(model)?;
    let (head, feature_tensor) = original_head(&bytes, model)?;
    write_export(
        &bytes,
        model,
        &ExportFeatures::plain(&feature_tensor),
        &head,
        out,
    )
}

/// [`export_features_bytes`], then the result written atomically to `out`.
fn write_export(
    bytes: &[u8],
    model: &Path,
    features: &ExportFeatures,
    head: &Head,
    out: &Path,
) -> Result<ExportReport> {
    let (onnx, mut report) = export_features_bytes(bytes, model, features, head)?;
    write_atomically(out, &onnx)?;
    report.out = out.into();
    Ok(report)
}

/// Writes a copy of `model` whose input is `size`×`size` (ONNX input dims rewritten, shape
/// annotations of inner tensors dropped so runtimes infer them again) and its spec beside it
/// (`out` with `.json`; preprocessing scaled by [`ModelSpec::at_input_size`], the new file's
/// sha256). A new file, so states and stores made with it never mix with the original's. Works
/// for models whose layers do not hard-code the spatial size (global pooling before the head,
/// as MobileNetV2 and ResNets); others fail to load at the new size with tract's reason.
pub fn resize_input(model: &Path, size: usize, out: &Path) -> Result<ResizeReport> {
    let spec = ModelSpec::load(&ModelSpec::path_for_model(model))?;
    let resized = spec.at_input_size(size)?;
    let (bytes, _) = read_model_file(model)?;
    let mut proto = parse_model(&bytes, model)?;
    set_input_size(&mut proto, spec.input.layout, size, model)?;
    let report = write_model_with_spec(&proto, resized, size, out)?;
    // A graph whose layers hard-code the spatial size (a dense layer on a flattened feature
    // map) does not run at another size: say so, and leave nothing behind.
    if let Err(e) = crate::backbone::Backbone::load(out, None, None) {
        let _ = std::fs::remove_file(out);
        let _ = std::fs::remove_file(&report.spec);
        return Err(Error::Model {
            path: model.into(),
            reason: format!(
                "does not run at {size}×{size} (a layer after the convolutions is fixed to the \
                 original size?), nothing written: {e}"
            ),
        });
    }
    Ok(report)
}

/// Exports `state`'s head on its backbone `model` to `out` (written atomically: a failure
/// leaves nothing behind). The model file must be the one the state was learned with.
pub fn export(state: &State, model: &Path, out: &Path) -> Result<ExportReport> {
    export_with(state, model, out, false)
}

/// [`export`], with test-time flip averaging in the graph when `flip_average`
/// (`export --tta hflip`: the exported model then gives `predict --tta hflip`'s scores).
pub fn export_with(
    state: &State,
    model: &Path,
    out: &Path,
    flip_average: bool,
) -> Result<ExportReport> {
    let head = state.head.as_ref().ok_or_else(|| {
        Error::Solver("the state has no head yet: run `learn` (or `fit`) first".into())
    })?;
    let (bytes, sha) = read_model_file(model)?;
    if crate::pack::is_pack(&bytes) {
        return Err(Error::Model {
            path: model.into(),
            reason: "a packed model holds no ONNX graph to export: give --model the ONNX file \
                     it was packed from"
                .into(),
        });
    }
    if sha != state.backbone.model_sha256 {
        return Err(Error::BackboneMismatch {
            path: model.into(),
            state: state.backbone.to_string(),
            model: format!("sha256 {}… (a different file)", &sha[..12]),
        });
    }
    let recipe = FeatureRecipe::parse(&state.backbone.feature_tensor)?;
    let features = if recipe.is_plain() && !flip_average {
        ExportFeatures::plain(&recipe.tensors[0])
    } else {
        // Which tensors are pooled, and along which axes, is what the backbone found when it
        // loaded them: load it to ask.
        let backbone = crate::backbone::Backbone::load_with(
            model,
            None,
            &crate::backbone::LoadOptions {
                feature_tensor: Some(state.backbone.feature_tensor.clone()),
                ..Default::default()
            },
        )?;
        let tensors = recipe
            .tensors
            .iter()
            .cloned()
            .zip(backbone.output_shapes())
            .map(|(t, shape)| {
                let pooling = match channel_axis(shape, backbone.spec().input.layout) {
                    _ if recipe.is_plain() => Pooling::Flatten,
                    Some(1) => Pooling::Nchw,
                    Some(_) => Pooling::Nhwc,
                    None => Pooling::Flatten,
                };
                (t, pooling)
            })
            .collect();
        let width_axis = match backbone.spec().input.layout {
            crate::spec::Layout::Nchw => 3,
            crate::spec::Layout::Nhwc => 2,
        };
        ExportFeatures {
            tensors,
            transform: recipe.transform,
            descriptor: state.backbone.feature_tensor.clone(),
            flip_average: flip_average.then_some(width_axis),
        }
    };
    write_export(&bytes, model, &features, head, out)
}

/// What `pack` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    pub out: PathBuf,
    pub bytes: u64,
    pub model_sha256: String,
    pub feature_tensor: String,
    pub feature_dim: usize,
}

/// Packs `model` (its spec beside it; format in [`crate::pack`]) for the feature tensor that `learn` would use (or
/// `feature_tensor`), at a batch of one image.
pub fn pack(model: &Path, feature_tensor: Option<&str>, out: &Path) -> Result<PackReport> {
    let backbone = crate::backbone::Backbone::load(model, None, feature_tensor)?;
    let bad = |reason: String| Error::Model {
        path: model.into(),
        reason,
    };
    let fingerprint = backbone.fingerprint().clone();
    let spec = backbone.spec().clone();
    let labels = backbone.labels().map(<[String]>::to_vec);
    let shape = backbone.input_shape();
    let tensors = backbone.recipe().tensors.clone();
    drop(backbone);
    let (bytes, _) = crate::onnx::read_model_file(model)?;
    let proto = crate::onnx::parse_model(&bytes, model)?;
    drop(bytes);
    let typed = (|| -> TractResult<TypedModel> {
        let mut m = tract_onnx::onnx().model_for_proto_model(&proto)?;
        m = m.with_input_fact(0, f32::fact(shape).into())?;
        m.select_outputs_by_name(tensors.iter().map(String::as_str))?;
        m.into_typed()?.into_decluttered()
    })()
    .map_err(|e| bad(format!("tract cannot convert it: {e:#}")))?;
    drop(proto);
    let meta = PackMeta {
        spec,
        fingerprint: fingerprint.clone(),
        labels,
    };
    let file = crate::pack::encode(&meta, &typed, model)?;
    write_atomically(out, &file)?;
    Ok(PackReport {
        out: out.into(),
        bytes: file.len() as u64,
        model_sha256: fingerprint.model_sha256,
        feature_tensor: fingerprint.feature_tensor,
        feature_dim: fingerprint.feature_dim,
    })
}
