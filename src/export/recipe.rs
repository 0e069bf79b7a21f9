//! The feature recipe written into the exported graph: each tensor pooled as the runner pools
//! it, concatenated, transformed, and (for test-time flips) the input fed with its mirror.

use tract_onnx::pb::{GraphProto, tensor_proto::DataType};

use crate::feature_recipe::{Pooling, Transform};
use crate::onnx::build::{float_tensor, int_attribute, int64_tensor, ints_attribute, node};

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

/// Appends the nodes that make the feature vector (pooling, concatenation, transform) and
/// returns its tensor name. `widen`: the model computes in float16, and each tensor is cast to
/// float32 first (the features are learned in f32; a Cast of an f32 tensor is a no-op).
pub(super) fn append_features(
    graph: &mut GraphProto,
    features: &ExportFeatures,
    dim: usize,
    widen: bool,
) -> String {
    let mut parts = Vec::new();
    for (i, (tensor, pooling)) in features.tensors.iter().enumerate() {
        let p = format!("fastretrain/features/{i}");
        let mut x = tensor.clone();
        if widen {
            let f = format!("{p}/float32");
            let mut cast = node("Cast", &f, &[&x], &f);
            cast.attribute
                .push(int_attribute("to", DataType::Float as i32 as i64));
            graph.node.push(cast);
            x = f;
        }
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

/// Feeds the graph each image and its mirror: the input becomes `Concat(x, x[..., ::-1])` along
/// the batch axis for every node that read it (Slice with a step of −1 along `width_axis`).
pub(super) fn mirror_input(
    graph: &mut GraphProto,
    width_axis: usize,
) -> std::result::Result<(), String> {
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
