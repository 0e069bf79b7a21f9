//! The training interpreter against independent references (feature `train`):
//! - gradients of every supported op (the models of scripts/models/make_grad_models.py) against
//!   central finite differences of the loss, computed in f64;
//! - its forward pass on the shipped MobileNetV2 against tract's features;
//! - its features on every gradient-check model against tract's on the same input;
//! - an unsupported op is refused with its name and node.

#![cfg(feature = "train")]

use crate::common;

use std::collections::HashSet;

use burn::tensor::{DType, Device};
use fastretrain::backbone::Backbone;
use fastretrain::preprocess::{Preprocessor, SampleInput, decode_image_file};
use fastretrain::spec::Layout;
use fastretrain::train::{self, Graph, graph};

fn model(name: &str) -> std::path::PathBuf {
    common::data(&format!("models/{name}.onnx"))
}

/// The gradient-check models of scripts/models/make_grad_models.py: together every supported op.
const GRADIENT_MODELS: [&str; 8] = [
    "grad_conv",
    "grad_depthwise",
    "grad_bn",
    "grad_residual",
    "grad_silu_se",
    "grad_hard",
    "grad_shuffle",
    "grad_nhwc",
];

/// A fixed batch of `n` 8×8 RGB inputs in [-1, 1].
fn fixed_input(n: usize) -> Vec<f32> {
    (0..n * 3 * 8 * 8)
        .map(|i| (((i * 7919) % 211) as f32 / 105.0) - 1.0)
        .collect()
}

fn input_shape(n: usize, layout: Layout) -> [usize; 4] {
    match layout {
        Layout::Nchw => [n, 3, 8, 8],
        Layout::Nhwc => [n, 8, 8, 3],
    }
}

/// Loss of `graph` on the fixed batch, in f64, with every batch normalisation on batch
/// statistics (training mode) and gradients for `tracked`.
fn loss_and_grads(
    graph: &Graph,
    layout: Layout,
    tracked: &HashSet<usize>,
    with_grads: bool,
) -> (f64, Vec<Option<Vec<f64>>>) {
    let device = if with_grads {
        Device::flex().autodiff()
    } else {
        Device::flex()
    };
    let x = graph::tensor_from(&fixed_input(2), input_shape(2, layout), &device, DType::F64);
    let none = HashSet::new();
    let params = graph.param_tensors(
        &device,
        DType::F64,
        if with_grads { tracked } else { &none },
    );
    let layers: Vec<usize> = (0..graph.conv_layers.len()).collect();
    let mut train_bn = graph.bn_nodes_of(&layers);
    train_bn.extend(graph.loose_bn_nodes());
    let out = graph.forward(x, &params, &train_bn, false).unwrap();
    let loss = train::cross_entropy(out.logits.unwrap(), &[1, 3], DType::F64);
    let value = graph::to_f64(loss.clone()).unwrap()[0];
    if !with_grads {
        return (value, Vec::new());
    }
    let grads = loss.backward();
    let g = (0..params.len())
        .map(|i| {
            tracked
                .contains(&i)
                .then(|| params[i].grad(&grads).map(|g| graph::to_f64(g).unwrap()))
                .flatten()
        })
        .collect();
    (value, g)
}

/// Autodiff gradients vs central differences for up to 12 coordinates of every trainable
/// parameter; returns the worst relative error (‖g_ad − g_fd‖ / ‖g_fd‖ per parameter).
fn check_gradients(name: &str) -> f64 {
    let (graph, spec, _) = train::load_model(&model(name)).unwrap();
    let layout = spec.input.layout();
    let mut tracked: HashSet<usize> = graph.dense_params().into_iter().collect();
    tracked.extend(graph.loose_bn_params());
    for layer in &graph.conv_layers {
        tracked.extend(layer.params.iter().copied());
    }
    let (_, grads) = loss_and_grads(&graph, layout, &tracked, true);
    // Small enough that no step crosses a kink of Relu / Clip / MaxPool (at 1e-3 some did:
    // errors ~1e-2 on the models with Clip), large enough for f32 storage of the weights.
    let eps: f32 = 1e-4;
    let mut worst = 0.0f64;
    let mut rng = common::Rng(5);
    for &i in &tracked {
        let g = grads[i]
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no gradient for {}", graph.params[i].name));
        let n = graph.params[i].values.len();
        let coords: Vec<usize> = if n <= 12 {
            (0..n).collect()
        } else {
            (0..12).map(|_| rng.below(n as u64) as usize).collect()
        };
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for &j in &coords {
            let mut plus = graph.clone();
            let mut minus = graph.clone();
            let w = graph.params[i].values[j];
            plus.params[i].values[j] = w + eps;
            minus.params[i].values[j] = w - eps;
            // The step actually taken (f32 storage).
            let step = plus.params[i].values[j] as f64 - minus.params[i].values[j] as f64;
            let fd = (loss_and_grads(&plus, layout, &tracked, false).0
                - loss_and_grads(&minus, layout, &tracked, false).0)
                / step;
            diff += (g[j] - fd).powi(2);
            norm += fd.powi(2);
        }
        let relative = diff.sqrt() / norm.sqrt().max(1e-12);
        eprintln!(
            "{name} {}: relative error {relative:.2e} over {} coords (|g_fd| {:.3e})",
            graph.params[i].name,
            coords.len(),
            norm.sqrt()
        );
        worst = worst.max(relative);
    }
    worst
}

#[test]
fn gradients_of_every_op_match_finite_differences() {
    for name in GRADIENT_MODELS {
        let worst = check_gradients(name);
        assert!(
            worst <= 1e-3,
            "{name}: gradient relative error {worst:.2e} > 1e-3"
        );
    }
}

#[test]
fn interpreter_features_equal_tracts_on_mobilenetv2() {
    let path = common::root().join("models/mobilenetv2.onnx");
    let (graph, spec, _) = train::load_model(&path).unwrap();
    // Training refits the head on the penultimate tensor (the papers' dense layers), whatever
    // recipe the spec names for the edge commands.
    let backbone = Backbone::load(&path, None, Some("features")).unwrap();
    let mut preprocessor = Preprocessor::new(&spec);
    let device = Device::flex();
    let params = graph.param_tensors(&device, DType::F32, &HashSet::new());
    let mut worst = 0.0f32;
    for photo in ["imagenet_00_243.png", "imagenet_03_990.png"] {
        let pixels = decode_image_file(&common::data(&format!("images/{photo}"))).unwrap();
        let mut input = vec![0.0f32; preprocessor.input_len()];
        preprocessor
            .tensor_into(&SampleInput::Pixels(pixels), photo, &mut input)
            .unwrap();
        let mut expected = vec![0.0f32; backbone.feature_dim()];
        backbone.features_into(&input, &mut expected).unwrap();
        let x = graph::tensor_from(&input, [1, 3, 224, 224], &device, DType::F32);
        let out = graph.forward(x, &params, &HashSet::new(), true).unwrap();
        let got = graph::to_f32(out.features).unwrap();
        assert_eq!(got.len(), expected.len());
        for (a, b) in got.iter().zip(&expected) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("interpreter vs tract, MobileNetV2 features: max |Δ| {worst:.2e}");
    assert!(worst <= 1e-4, "max |Δ| {worst:e} > 1e-4");
}

#[test]
fn interpreter_features_equal_tracts_on_every_gradient_model() {
    let device = Device::flex();
    for name in GRADIENT_MODELS {
        let path = model(name);
        let (graph, spec, _) = train::load_model(&path).unwrap();
        let backbone = Backbone::load(&path, None, Some("features")).unwrap();
        let input = fixed_input(2);
        let per = input.len() / 2;
        let mut expected = vec![0.0f32; 2 * backbone.feature_dim()];
        for (x, out) in input
            .chunks(per)
            .zip(expected.chunks_mut(backbone.feature_dim()))
        {
            backbone.features_into(x, out).unwrap();
        }
        let params = graph.param_tensors(&device, DType::F32, &HashSet::new());
        let x = graph::tensor_from(
            &input,
            input_shape(2, spec.input.layout()),
            &device,
            DType::F32,
        );
        let out = graph.forward(x, &params, &HashSet::new(), false).unwrap();
        let got = graph::to_f32(out.features).unwrap();
        assert_eq!(got.len(), expected.len(), "{name}");
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name}: interpreter vs tract features, max |Δ| {worst:.2e}");
        assert!(worst <= 1e-5, "{name}: max |Δ| {worst:e} > 1e-5");
        assert_eq!(graph::to_f32(out.logits.unwrap()).unwrap().len(), 2 * 4);
    }
}

#[test]
fn an_unsupported_op_is_named() {
    let err = train::load_model(&model("unsupported_op"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'LRN'") && err.contains("lrn_lrn"), "{err}");
    assert!(err.contains("supported: Conv"), "{err}");
}
