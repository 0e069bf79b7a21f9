//! Feature recipes equal an independent NumPy/onnxruntime computation
//! (scripts/reference/make_recipe_vectors.py → tests/data/recipe_reference.json): several tensors pooled
//! and concatenated, signed square root, L2, test-time flip averaging; the automatic choice of
//! tensors. (States made before recipes read their one tensor as it is:
//! tests/backbone_reference.rs.)

use crate::common;

use fastretrain::backbone::{Backbone, LoadOptions, automatic_tensors};
use fastretrain::feature_recipe::{AUTOMATIC_STAGES, Augment, FeatureRecipe, Transform};
use fastretrain::features::FeatureExtractor;
use tract_onnx::prelude::Framework;

fn strings(v: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

fn extractor(model: &std::path::Path, recipe: &FeatureRecipe) -> FeatureExtractor {
    let backbone = Backbone::load_with(
        model,
        None,
        &LoadOptions {
            feature_tensor: Some(recipe.descriptor()),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    FeatureExtractor::with_workers(backbone, 1).unwrap()
}

fn max_diff(got: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(got.len(), expected.len());
    got.iter()
        .zip(expected)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn pooled_tensors_and_transforms_match_numpy() {
    let reference = common::json("recipe_reference.json");
    let mobilenet = &reference["mobilenetv2"];
    let model = common::root().join(mobilenet["model"].as_str().unwrap());
    let tensors = strings(&mobilenet["tensors"]);
    let recipe = |transform| FeatureRecipe::new(tensors.clone(), transform, Augment::None).unwrap();
    let mut raw = extractor(&model, &recipe(Transform::None));
    assert_eq!(raw.dim(), 1920);
    let mut ssqrt = extractor(&model, &recipe(Transform::SignedSqrt));
    let mut ssqrt_l2 = extractor(&model, &recipe(Transform::SignedSqrtL2));
    let mut worst = [0.0f64; 4];
    for photo in mobilenet["photos"].as_array().unwrap() {
        let path = common::data(photo["file"].as_str().unwrap());
        let d = max_diff(
            &raw.sample_file(&path).unwrap(),
            &common::f64s(&photo["raw"]),
        );
        worst[0] = worst[0].max(d);
        if photo.get("ssqrt").is_none() {
            continue;
        }
        let d = max_diff(
            &ssqrt.sample_file(&path).unwrap(),
            &common::f64s(&photo["ssqrt"]),
        );
        worst[1] = worst[1].max(d);
        let got = ssqrt_l2.sample_file(&path).unwrap();
        worst[2] = worst[2].max(max_diff(&got, &common::f64s(&photo["ssqrt_l2"])));
        ssqrt.set_flip_average(true).unwrap();
        let got = ssqrt.sample_file(&path).unwrap();
        ssqrt.set_flip_average(false).unwrap();
        worst[3] = worst[3].max(max_diff(&got, &common::f64s(&photo["ssqrt_tta"])));
    }
    // Pooled values are up to ~6, their square roots up to ~2.5; L2-normalised ones below 1.
    assert!(
        worst.iter().all(|w| *w < 1e-4),
        "max |fastretrain − NumPy| raw, ssqrt, ssqrt+l2, flip average: {worst:?}"
    );

    // A tf2onnx model: an inner 4-D tensor pooled as the graph lays it out.
    let keras = &reference["keras_nhwc"];
    let dir = common::temp_dir("recipe-keras");
    let file = common::zoo_model_with_spec(&dir, "keras_nhwc");
    let recipe = FeatureRecipe::new(
        strings(&keras["tensors"]),
        Transform::SignedSqrt,
        Augment::None,
    )
    .unwrap();
    let mut keras_extractor = extractor(&dir.join(file), &recipe);
    for photo in keras["photos"].as_array().unwrap() {
        let path = common::data(photo["file"].as_str().unwrap());
        let got = keras_extractor.sample_file(&path).unwrap();
        let d = max_diff(&got, &common::f64s(&photo["ssqrt"]));
        assert!(d < 1e-4, "keras {}: {d}", path.display());
    }
}

#[test]
fn the_automatic_recipe_takes_the_last_stages_before_the_penultimate_tensor() {
    let stages = |path: &std::path::Path, penultimate: &str| {
        let bytes = std::fs::read(path).unwrap();
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .unwrap();
        automatic_tensors(proto.graph.as_ref().unwrap(), penultimate, AUTOMATIC_STAGES)
    };
    // MobileNetV2: the outputs of its 320-, 160-, 96- and 64-channel stages (the last block of
    // each), the penultimate tensor first; what the shipped spec names.
    let shipped = common::root().join("models/mobilenetv2.onnx");
    assert_eq!(
        stages(&shipped, "features"),
        ["features", "conv_257", "add_243", "add_197", "add_151"]
    );
    let spec = fastretrain::spec::ModelSpec::load(&common::root().join("models/mobilenetv2.json"))
        .unwrap();
    assert_eq!(spec.feature_tensors.unwrap(), stages(&shipped, "features"));
    // A ResNet as PyTorch's dynamo exporter writes it: its one earlier stage (the last is what
    // the penultimate tensor pools). A VGG-like chain has no blocks: the penultimate alone.
    let zoo = common::data("zoo");
    assert_eq!(
        stages(&zoo.join("torch_dynamo_resnet.onnx"), "view"),
        ["view", "relu_2"]
    );
    assert_eq!(stages(&zoo.join("torch_legacy_vgg.onnx"), "30"), ["30"]);
}
