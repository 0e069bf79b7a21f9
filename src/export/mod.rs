//! Export of an adapted model as a standard ONNX file: the original backbone graph up to the
//! feature tensor, then the refit head (its hidden layers, if any, and the output layer) as
//! Gemm nodes with f32 initializers, under the original output name, with the labels in the
//! model's metadata. The model's own dense head and anything else the new output does not need
//! is pruned. Any ONNX runtime (onnxruntime, tract) runs the result; the edge commands accept it
//! as a new backbone.

mod original;
mod recipe;

use std::path::{Path, PathBuf};

use prost::Message;
use serde::Serialize;
use tract_onnx::pb::{
    GraphProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_proto::DataType,
    tensor_shape_proto, type_proto,
};
use tract_onnx::prelude::{Framework, InferenceModelExt, TractResult, TypedFact, TypedModel};

use crate::error::{Error, Result};
use crate::feature_recipe::FeatureRecipe;
pub use crate::feature_recipe::Pooling;
use crate::head::{Activation, DenseLayer, Head};
use crate::onnx::build::{float_tensor, node, proto_opset};
pub use crate::onnx::{LABELS_KEY, ResizeReport};
use crate::onnx::{graph_of_mut, parse_model, set_input_size, set_metadata, write_model_with_spec};
use crate::pack::PackMeta;
use crate::spec::ModelSpec;
use crate::state::{State, write_atomically};
pub use original::{export_original, original_head};
pub use recipe::ExportFeatures;
use recipe::{append_features, mirror_input};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub out: PathBuf,
    pub output: String,
    pub classes: usize,
    pub labels: Vec<String>,
    pub hidden: Vec<usize>,
    pub bytes: usize,
    pub nodes_removed: usize,
    /// The data files whose weights the model kept apart and the export holds inside (one
    /// self-contained file).
    pub data_files_inlined: Vec<String>,
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
    // A half-precision model: its features are widened for the f32 head, and its output is
    // given back in the type it had.
    let widen = crate::onnx::uses_float16(graph);
    let output_type = crate::onnx::elem_type(&original).unwrap_or(DataType::Float);
    let mut x = append_features(graph, features, head_inputs, widen);
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
    if output_type == DataType::Float {
        append_dense(graph, "fastretrain/head", &x, &output_layer, &output);
    } else {
        let scores = "fastretrain/head/float32";
        append_dense(graph, "fastretrain/head", &x, &output_layer, scores);
        let mut cast = node("Cast", "fastretrain/head/cast", &[scores], &output);
        cast.attribute.push(crate::onnx::build::int_attribute(
            "to",
            output_type as i32 as i64,
        ));
        graph.node.push(cast);
    }
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
                elem_type: output_type as i32,
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
        data_files_inlined: Vec::new(),
    };
    Ok((bytes, report))
}

/// [`export_features_bytes`], then the result written atomically to `out`.
pub(super) fn write_export(
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
    let (mut proto, _) = crate::onnx::read_model(model)?;
    set_input_size(&mut proto, spec.input.layout(), size, model)?;
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
    let head = state.head().ok_or_else(|| {
        Error::Solver("the state has no head yet: run `learn` (or `fit`) first".into())
    })?;
    let crate::onnx::WholeModel {
        bytes,
        sha256: sha,
        data_files,
    } = crate::onnx::read_whole_model(model)?;
    if crate::pack::is_pack(&bytes) {
        return Err(Error::Model {
            path: model.into(),
            reason: "a packed model holds no ONNX graph to export: give --model the ONNX file \
                     it was packed from"
                .into(),
        });
    }
    if sha != state.backbone().model_sha256 {
        return Err(Error::BackboneMismatch {
            path: model.into(),
            state: state.backbone().to_string(),
            model: format!("sha256 {}… (a different file)", &sha[..12]),
        });
    }
    let recipe = FeatureRecipe::parse(&state.backbone().feature_tensor)?;
    let features = if recipe.is_plain() && !flip_average {
        ExportFeatures::plain(&recipe.tensors[0])
    } else {
        // Which tensors are pooled, and along which axes, is what the backbone found when it
        // loaded them: load it to ask.
        let backbone = crate::backbone::Backbone::load_with(
            model,
            None,
            &crate::backbone::LoadOptions {
                feature_tensor: Some(state.backbone().feature_tensor.clone()),
                ..Default::default()
            },
        )?;
        let tensors = recipe
            .tensors
            .iter()
            .cloned()
            .zip(backbone.output_shapes())
            .map(|(t, shape)| (t, recipe.pooling_of(shape, backbone.spec().input.layout())))
            .collect();
        if flip_average {
            crate::features::require_image_input(&backbone, "export --tta hflip")?;
        }
        let width_axis = backbone.spec().input.layout().width_axis();
        ExportFeatures {
            tensors,
            transform: recipe.transform,
            descriptor: state.backbone().feature_tensor.clone(),
            flip_average: flip_average.then_some(width_axis),
        }
    };
    let mut report = write_export(&bytes, model, &features, head, out)?;
    report.data_files_inlined = data_files;
    Ok(report)
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
    let shape = backbone.input_shape().to_vec();
    let tensors = backbone.recipe().tensors.clone();
    drop(backbone);
    let (mut proto, _) = crate::onnx::read_model(model)?;
    let graph = crate::onnx::graph_of(&proto, model)?;
    if let Some(n) = graph
        .node
        .iter()
        .find(|n| matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear"))
    {
        return Err(bad(format!(
            "it is quantized (node '{}' is a {}), and tract's pack format (NNEF) has no \
             quantize or dequantize operation: give the board the .onnx file itself (learn, \
             predict and export take it as it is)",
            n.name, n.op_type
        )));
    }
    // As the backbone loads it: a symbolic batch recorded for inner tensors (PyTorch's dynamo
    // exporter) would clash with the batch of one.
    crate::onnx::forget_intermediate_shapes(crate::onnx::graph_of_mut(&mut proto, model)?);
    let input_type = crate::onnx::input_datum_type(crate::onnx::graph_of(&proto, model)?, model)?;
    let typed = (|| -> TractResult<TypedModel> {
        let mut m = tract_onnx::onnx().model_for_proto_model(&proto)?;
        m = m.with_input_fact(0, TypedFact::dt_shape(input_type, &shape).into())?;
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
