//! Packed models (`fastretrain pack`): the same features as onnxruntime on the shipped photos,
//! interchangeable with the ONNX file they were packed from (states, predictions), packs of
//! other families and layouts, and damaged or mismatched packs refused with a clear message.

use crate::common;

use std::path::{Path, PathBuf};

use common::{json_of, refused, run, s, stdout};
use fastretrain::backbone::Backbone;
use fastretrain::features::FeatureExtractor;

fn pack(dir: &Path, model: &str, out: &str) -> serde_json::Value {
    json_of(&run(
        dir,
        &["pack", "--model", model, "--out", out, "--json"],
    ))
}

/// The shipped model packed for the recipe of its spec (5 tensors, pooled).
fn shipped_pack(dir: &Path) -> PathBuf {
    let model = common::root().join("models/mobilenetv2.onnx");
    let report = pack(dir, s(&model), "mobilenetv2.frpack");
    assert!(
        report["feature_tensor"]
            .as_str()
            .unwrap()
            .contains("add_151")
    );
    assert_eq!(report["feature_dim"], 1920);
    dir.join("mobilenetv2.frpack")
}

#[test]
fn a_pack_gives_onnxruntimes_features_on_real_photos() {
    let dir = common::temp_dir("pack-features");
    // The penultimate tensor alone: onnxruntime's features (scripts/reference/make_test_vectors.py).
    let model = common::root().join("models/mobilenetv2.onnx");
    let report = json_of(&run(
        &dir,
        &[
            "pack",
            "--model",
            s(&model),
            "--out",
            "plain.frpack",
            "--feature-tensor",
            "features",
            "--json",
        ],
    ));
    assert_eq!(report["feature_dim"], 1280);
    let backbone = Backbone::load(&dir.join("plain.frpack"), None, None).unwrap();
    let onnx = Backbone::load(&model, None, Some("features")).unwrap();
    // Same identity as the ONNX file: states are interchangeable.
    assert_eq!(backbone.fingerprint(), onnx.fingerprint());
    let mut extractor = FeatureExtractor::new(backbone).unwrap();
    common::assert_photo_features_match_onnxruntime(&mut extractor, "packed tract");

    // The spec's recipe: every tensor kept in the pack, pooled and transformed alike.
    let packed = Backbone::load(&shipped_pack(&dir), None, None).unwrap();
    let onnx = Backbone::load(&model, None, None).unwrap();
    assert_eq!(packed.fingerprint(), onnx.fingerprint());
    let photo = common::data("images/imagenet_02_438.png");
    let (mut a, mut b) = (
        FeatureExtractor::new(packed).unwrap(),
        FeatureExtractor::new(onnx).unwrap(),
    );
    let (a, b) = (
        a.sample_file(&photo).unwrap(),
        b.sample_file(&photo).unwrap(),
    );
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "pack vs ONNX recipe features: {worst}");
}

#[test]
fn states_learned_with_the_onnx_file_predict_with_its_pack_and_back() {
    let dir = common::temp_dir("pack-states");
    let packed = shipped_pack(&dir);
    let images = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let photo = common::data("images/imagenet_00_243.png");
    // Learned with the ONNX file, predicted with the pack: the same scores.
    let onnx_state = dir.join("onnx.frs");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            s(&onnx_state),
            "--data",
            s(&images),
            "--limit",
            "64",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let by_onnx = stdout(&run(
        &dir,
        &["predict", "--state", s(&onnx_state), s(&photo)],
    ));
    let by_pack = stdout(&run(
        &dir,
        &[
            "predict",
            "--state",
            s(&onnx_state),
            "--model",
            s(&packed),
            s(&photo),
        ],
    ));
    assert!(by_onnx.contains("imagenet_00_243.png: "), "{by_onnx}");
    assert_eq!(by_onnx, by_pack);
    // Learned with the pack (the state then finds the pack by itself), merged with the ONNX one.
    let pack_state = dir.join("pack.frs");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            s(&pack_state),
            "--model",
            s(&packed),
            "--data",
            s(&images),
            "--limit",
            "64",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(
        stdout(&run(
            &dir,
            &["predict", "--state", s(&pack_state), s(&photo)]
        )),
        by_onnx
    );
    // Export needs the ONNX graph: refused with the pack, done with the file it came from.
    refused(
        &dir,
        &["export", "--state", s(&pack_state), "--out", "x.onnx"],
        "give --model the ONNX file it was packed from",
    );
    let model = common::root().join("models/mobilenetv2.onnx");
    let out = run(
        &dir,
        &[
            "export",
            "--state",
            s(&pack_state),
            "--model",
            s(&model),
            "--out",
            "x.onnx",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    // The two states have the same backbone: merge gets past that check and refuses them only
    // because they learned the same images (each would count twice).
    let merged = dir.join("merged.frs");
    common::refused(
        &dir,
        &["merge", "--out", s(&merged), s(&onnx_state), s(&pack_state)],
        "twice",
    );
}

#[test]
fn other_families_and_layouts_pack_and_match_their_onnx_file() {
    let dir = common::temp_dir("pack-zoo");
    for name in ["keras_nhwc", "torch_legacy_vgg", "dynamic_hw"] {
        let file = common::zoo_model_with_spec(&dir, name);
        let out = format!("{name}.frpack");
        pack(&dir, &file, &out);
        let onnx = Backbone::load(&dir.join(&file), None, None).unwrap();
        let packed = Backbone::load(&dir.join(&out), None, None).unwrap();
        assert_eq!(onnx.fingerprint(), packed.fingerprint(), "{name}");
        let image = common::zoo_image("test", "Bag");
        let a = FeatureExtractor::new(onnx)
            .unwrap()
            .sample_file(&image)
            .unwrap();
        let b = FeatureExtractor::new(packed)
            .unwrap()
            .sample_file(&image)
            .unwrap();
        let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            diff <= 1e-5 * scale,
            "{name}: max diff {diff} (scale {scale})"
        );
    }
}

#[test]
fn damaged_and_mismatched_packs_are_refused_clearly() {
    let dir = common::temp_dir("pack-bad");
    let packed = shipped_pack(&dir);
    let photo = common::data("images/imagenet_00_243.png");
    let bytes = std::fs::read(&packed).unwrap();
    // One flipped byte in the middle, and a truncated copy.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    std::fs::write(dir.join("flipped.frpack"), &flipped).unwrap();
    std::fs::write(dir.join("short.frpack"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(dir.join("tiny.frpack"), &bytes[..20]).unwrap();
    let images = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let state = dir.join("s.frs");
    for bad in ["flipped.frpack", "short.frpack", "tiny.frpack"] {
        refused(
            &dir,
            &[
                "learn",
                "--state",
                s(&state),
                "--model",
                bad,
                "--data",
                s(&images),
                "--limit",
                "8",
            ],
            "pack it again with `fastretrain pack`",
        );
        assert!(!state.exists(), "{bad}: no state written");
    }
    // The pack's own outputs are features, not classes: no model-as-is prediction.
    refused(
        &dir,
        &["predict", "--model", s(&packed), s(&photo)],
        "holds the backbone only up to its features",
    );
    // A state of another model refuses the pack like it refuses that model's ONNX file.
    let tiny = common::data("models/tiny_cnn.onnx");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            s(&state),
            "--model",
            s(&tiny),
            "--data",
            s(&images),
            "--limit",
            "8",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    refused(
        &dir,
        &[
            "predict",
            "--state",
            s(&state),
            "--model",
            s(&packed),
            s(&photo),
        ],
        "a pack of",
    );
    // Another feature tensor than the one packed.
    refused(
        &dir,
        &[
            "learn",
            "--state",
            "other.frs",
            "--model",
            s(&packed),
            "--feature-tensor",
            "x",
            "--data",
            s(&images),
            "--limit",
            "8",
        ],
        "packed for tensor '{\"tensors\":[\"features\"",
    );
}
