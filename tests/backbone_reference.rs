//! tract features on real photos equal onnxruntime's (reference: scripts/make_test_vectors.py).

mod common;

use fastretrain::backbone::{Backbone, find_dense_head};
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
