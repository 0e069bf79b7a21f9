//! tract features on real photos equal onnxruntime's (reference: scripts/reference/make_test_vectors.py).

use crate::common;

use fastretrain::backbone::{Backbone, LoadOptions, find_dense_head};
use fastretrain::features::FeatureExtractor;

#[test]
fn features_match_onnxruntime_on_real_photos() {
    let model = common::root().join("models/mobilenetv2.onnx");
    // The penultimate tensor alone, as the reference has it and as every state made before
    // feature recipes names it: read as it is, whatever the spec names now (the shipped spec's
    // recipe adds more tensors: tests/recipe_reference.rs).
    let backbone = Backbone::load(&model, None, Some("features")).unwrap();
    assert_eq!(backbone.fingerprint().feature_tensor, "features");
    assert_eq!(backbone.feature_dim(), 1280);
    let mut extractor = FeatureExtractor::new(backbone).unwrap();
    common::assert_photo_features_match_onnxruntime(&mut extractor, "tract");
}

/// Threads are a load option: two backbones of one process run on 1 and 2 cores (the
/// extractor takes that many images at once) and both match onnxruntime.
#[test]
fn two_backbones_of_one_process_use_their_own_threads() {
    let model = common::root().join("models/mobilenetv2.onnx");
    for threads in [2, 1] {
        let options = LoadOptions {
            feature_tensor: Some("features".into()),
            threads: Some(threads),
            ..LoadOptions::default()
        };
        let backbone = Backbone::load_with(&model, None, &options).unwrap();
        assert_eq!(backbone.threads(), threads);
        let mut extractor = FeatureExtractor::new(backbone).unwrap();
        assert_eq!(extractor.workers(), threads);
        common::assert_photo_features_match_onnxruntime(&mut extractor, "tract");
    }
    let too_many = LoadOptions {
        threads: Some(fastretrain::backbone::MAX_THREADS + 1),
        ..LoadOptions::default()
    };
    let refused = Backbone::load_with(&model, None, &too_many).unwrap_err();
    assert!(refused.to_string().contains("outside 1..=256"), "{refused}");
}

#[test]
fn dense_head_is_found_automatically() {
    let bytes = std::fs::read(common::root().join("models/mobilenetv2.onnx")).unwrap();
    use tract_onnx::prelude::Framework;
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .unwrap();
    let head = find_dense_head(&proto).unwrap();
    assert_eq!(head.op_type, "Gemm");
    assert_eq!(head.input, "features");
    assert_eq!(head.weight, "classifier.1.weight");
}

#[test]
fn jpeg_photos_decode_to_rgb() {
    // Sizes as PIL reports them for the files shipped in foolbox.
    for (name, w, h) in [
        ("imagenet_10_541.jpg", 1024, 683),
        ("imagenet_12_741.jpg", 512, 512),
    ] {
        let p =
            fastretrain::preprocess::decode_image_file(&common::data(&format!("images/{name}")))
                .unwrap();
        assert_eq!((p.width, p.height, p.channels), (w, h, 3));
    }
}

/// The vendored tract-linalg patch (vendor/README.md): on x86-64 with AVX every depthwise
/// layer of 16 channels or more runs channel-last on our kernel (the features above still
/// equal onnxruntime's). Without the patch tract keeps them channel-first, and the stride-2
/// ones run a scalar loop. The ReLU6 after each of those is fused into it (the kernel clamps
/// before it stores): no separate pass is left but the stem's and the channel-first layer's.
#[test]
#[cfg(target_arch = "x86_64")]
fn depthwise_layers_run_channel_last_on_the_x86_kernel() {
    if !std::is_x86_feature_detected!("avx") {
        return;
    }
    let model = common::root().join("models/mobilenetv2.onnx");
    let backbone = Backbone::load(&model, None, None).unwrap();
    let steps = backbone.plan_steps();
    for step in steps.iter().filter(|s| {
        s.kernel
            .as_deref()
            .is_some_and(|k| k.starts_with("channel-last"))
    }) {
        assert_eq!(
            step.fused_clamp.as_deref(),
            Some("clamped to [0, 6]"),
            "{step:?}"
        );
    }
    let activations = steps
        .iter()
        .filter(|s| s.op.starts_with("OptBinChain"))
        .count();
    assert_eq!(activations, 2, "{steps:#?}");
    let kernels: Vec<String> = steps.into_iter().filter_map(|step| step.kernel).collect();
    assert_eq!(kernels.len(), 17, "{kernels:#?}");
    // The first (32 channels at 112×112, behind the stem convolution) stays channel-first.
    let channel_last = kernels
        .iter()
        .filter(|k| *k == "channel-last: x86_64_avx_depthwise_c_f32")
        .count();
    assert_eq!(channel_last, 16, "{kernels:#?}");
}

/// `bench --kernels` (docs/EDGE.md's per-kind floor): every convolution of MobileNetV2 that is
/// not depthwise runs as one matrix product of the plan, with the shape the ONNX graph gives it
/// (the stem: 32 output channels, 3×3×3 taps, 112×112 positions; the last 1×1: 1,280 channels
/// from 320 at 7×7), and each is timed with the plan's own kernel, found among this machine's
/// kernels. On x86-64 the stem is the exception: our tract-core patch (vendor/README.md) runs
/// it as a direct convolution, not a matrix product.
#[test]
fn matrix_products_have_the_graphs_shapes_and_are_timed_with_the_plans_kernels() {
    let model = common::root().join("models/mobilenetv2.onnx");
    let backbone = Backbone::load(&model, None, None).unwrap();
    let steps = backbone.plan_steps();
    let stem_direct = steps
        .iter()
        .any(|s| s.node == "Conv_2" && s.op == "DirectSpatialConv");
    assert_eq!(stem_direct, cfg!(target_arch = "x86_64"), "{steps:#?}");
    let products: Vec<_> = steps.into_iter().filter_map(|step| step.product).collect();
    // 1 stem + 17 blocks (the first without its expansion: 16 expansions, 17 projections) + the
    // final 1×1: 35 convolutions that are not depthwise.
    assert_eq!(
        products.len(),
        35 - usize::from(stem_direct),
        "{products:#?}"
    );
    let unordered = |p: &fastretrain::backbone::MatrixProduct| (p.m.min(p.n), p.k, p.m.max(p.n));
    if !stem_direct {
        assert_eq!(unordered(&products[0]), (32, 27, 112 * 112));
    }
    assert_eq!(unordered(products.last().unwrap()), (49, 320, 1280));
    if cfg!(target_arch = "x86_64") {
        // The first expansion (16 → 96 channels at 112×112) writes a channel-last output there,
        // so our tract-core patch makes the channels m, the output's innermost axis: the kernel
        // stores whole tile columns instead of one value at a time (vendor/README.md).
        let expansion = products.iter().find(|p| p.k == 16).unwrap();
        assert_eq!((expansion.m, expansion.n), (96, 112 * 112), "{expansion:?}");
        assert!(expansion.m_contiguous, "{expansion:?}");
    }
    let floors = fastretrain::benchmark::kernel_floor(&backbone, 1).unwrap();
    assert_eq!(floors.len(), products.len());
    for f in &floors {
        assert!(f.kernel_ms.is_finite() && f.kernel_ms > 0.0, "{f:?}");
        assert!(f.best_ms > 0.0 && f.best_ms <= f.kernel_ms, "{f:?}");
    }
}
