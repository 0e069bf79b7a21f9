//! `retrain` on real exports of six CNN families (feature `train`): ResNet, MobileNetV2,
//! MobileNetV3, EfficientNet, RegNet and ShuffleNetV2 built from torchvision's classes and
//! exported by PyTorch's dynamo and legacy exporters (scripts/models/make_train_zoo.py), plus the
//! zoo's tf2onnx model (NHWC, MatMul + Add head, Softmax). For each:
//! - the interpreter's logits equal PyTorch's on a fixed input and its features equal tract's;
//! - `retrain` runs one epoch in each mode, and the retrained ONNX gives its state's scores
//!   (`predict --state`) in tract (`predict --model`) and in onnxruntime, within 1e-4.

#![cfg(feature = "train")]

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{DType, Device};
use fastretrain::backbone::Backbone;
use fastretrain::train::{self, graph};

use common::{f64s, json_of, run, s};

const MODES: [&str; 3] = ["fast", "sgd", "sgd+mp"];

/// The family models (name, file) and the zoo's tf2onnx model, with whether the model's output
/// is a Softmax of its head (the retrained ONNX keeps it) and the `spec` preset to use.
fn models() -> Vec<(String, PathBuf, bool, &'static str)> {
    let index = common::json("train_zoo/models.json");
    let mut names: Vec<&String> = index.as_object().unwrap().keys().collect();
    names.sort();
    let mut out: Vec<_> = names
        .into_iter()
        .map(|n| {
            let file = common::data(&format!("train_zoo/{n}.onnx"));
            (n.clone(), file, false, "imagenet")
        })
        .collect();
    out.push((
        "keras_nhwc".into(),
        common::data("zoo/keras_nhwc.onnx"),
        true,
        "inception",
    ));
    out
}

/// A copy of `model` in a fresh folder with the spec `fastretrain spec` writes for it.
fn with_spec(test: &str, name: &str, model: &Path, preset: &str) -> (PathBuf, PathBuf) {
    let dir = common::temp_dir(&format!("{test}-{name}"));
    let file = dir.join("model.onnx");
    std::fs::copy(model, &file).unwrap();
    json_of(&run(
        &dir,
        &[
            "spec",
            "--model",
            "model.onnx",
            "--preset",
            preset,
            "--json",
        ],
    ));
    (dir, file)
}

#[test]
fn interpreter_logits_equal_torchs_and_features_equal_tracts() {
    let reference = common::json("train_zoo/reference.json");
    let input: Vec<f32> = f64s(&reference["input"])
        .iter()
        .map(|&v| v as f32)
        .collect();
    let shape: Vec<usize> = reference["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (n, per) = (shape[0], input.len() / shape[0]);
    let device = Device::flex();
    for (name, model, _, preset) in models().into_iter().filter(|m| !m.2) {
        let (_dir, file) = with_spec("interpreter", &name, &model, preset);
        let (graph, _, _) = train::load_model(&file).unwrap();
        let params = graph.param_tensors(&device, DType::F32, &HashSet::new());
        let x = graph::tensor_from(
            &input,
            [shape[0], shape[1], shape[2], shape[3]],
            &device,
            DType::F32,
        );
        let out = graph.forward(x, &params, &HashSet::new(), false).unwrap();
        let logits = graph::to_f32(out.logits.unwrap()).unwrap();
        let torch = f64s(&reference["models"][&name]["logits"]);
        let worst = logits
            .iter()
            .zip(&torch)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert_eq!(logits.len(), torch.len(), "{name}");
        assert!(
            worst <= 1e-4,
            "{name}: logits differ from torch's by {worst:e}"
        );

        let backbone = Backbone::load(&file, None, Some(&graph.feature_tensor)).unwrap();
        let dim = backbone.feature_dim();
        let mut expected = vec![0.0f32; n * dim];
        for (x, out) in input.chunks(per).zip(expected.chunks_mut(dim)) {
            backbone.features_into(x, out).unwrap();
        }
        let features = graph::to_f32(out.features).unwrap();
        let worst_features = features
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst_features <= 1e-4,
            "{name}: features differ from tract's by {worst_features:e}"
        );
        eprintln!("{name}: logits vs torch {worst:.1e}, features vs tract {worst_features:.1e}");
    }
}

/// label → score of each image, as `predict --json` printed them.
fn predicted(out: &serde_json::Value) -> Vec<HashMap<String, f64>> {
    out.as_array()
        .unwrap()
        .iter()
        .map(|image| {
            image["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["label"].as_str().unwrap().to_string(),
                        t["score"].as_f64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

fn softmax(scores: &HashMap<String, f64>) -> HashMap<String, f64> {
    let max = scores.values().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = scores.values().map(|v| (v - max).exp()).sum();
    scores
        .iter()
        .map(|(k, v)| (k.clone(), (v - max).exp() / sum))
        .collect()
}

fn assert_close(what: &str, got: &HashMap<String, f64>, expected: &HashMap<String, f64>) {
    assert_eq!(got.len(), expected.len(), "{what}: {got:?} vs {expected:?}");
    for (label, e) in expected {
        let g = got
            .get(label)
            .unwrap_or_else(|| panic!("{what}: no score for '{label}' in {got:?}"));
        assert!((g - e).abs() <= 1e-4, "{what} '{label}': {g} vs {e}");
    }
}

#[test]
fn every_family_retrains_in_every_mode_and_exports_what_its_state_predicts() {
    let root = common::root();
    let train = root.join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let test = root.join("data/fashion-mnist/t10k-images-idx3-ubyte.gz");
    let images: Vec<PathBuf> = ["Sneaker", "Trouser", "Bag"]
        .iter()
        .map(|l| common::zoo_image("test", l))
        .collect();
    let image_args: Vec<&str> = images.iter().map(|p| s(p)).collect();
    for (name, model, softmax_output, preset) in models() {
        let (dir, _) = with_spec("retrain", &name, &model, preset);
        let mut outputs = Vec::new();
        for mode in MODES {
            let out = format!("{}.onnx", mode.replace('+', "-"));
            let report = json_of(&run(
                &dir,
                &[
                    "retrain",
                    "--model",
                    "model.onnx",
                    "--data",
                    s(&train),
                    "--limit",
                    "64",
                    "--test-data",
                    s(&test),
                    "--test-limit",
                    "32",
                    "--size",
                    "32",
                    "--epochs",
                    "1",
                    "--batch",
                    "16",
                    "--mode",
                    mode,
                    "--out",
                    &out,
                    "--json",
                ],
            ));
            let metrics = report["metrics"].as_array().unwrap();
            assert_eq!(metrics.len(), 2, "{name} {mode}: {report}");
            let loss = metrics[1]["train_loss"].as_f64().unwrap();
            assert!(loss.is_finite() && loss > 0.0, "{name} {mode}: loss {loss}");
            assert!(metrics[1]["trained_convs"].as_u64().unwrap() > 0, "{name}");

            let state = out.replace(".onnx", ".frs");
            let mut args = vec!["predict", "--state", &state, "-k", "10", "--json"];
            args.extend(&image_args);
            let by_state = predicted(&json_of(&run(&dir, &args)));
            let mut args = vec!["predict", "--model", &out, "-k", "10", "--json"];
            args.extend(&image_args);
            let by_model = predicted(&json_of(&run(&dir, &args)));
            for (m, st) in by_model.iter().zip(&by_state) {
                let expected = if softmax_output {
                    softmax(st)
                } else {
                    st.clone()
                };
                assert_close(&format!("{name} {mode} tract"), m, &expected);
            }
            outputs.push((dir.join(&out), by_state));
        }
        // onnxruntime on the three retrained models, preprocessed by scripts/reference/reference.py.
        let spec = dir.join("fast.json");
        let filter = common::json_file(&spec)["preprocess"]["resize_filter"].clone();
        let pipeline = if filter.as_str().unwrap_or("").ends_with("-u8") {
            "torchvision"
        } else {
            "float"
        };
        let out = Command::new(common::python())
            .arg(root.join("scripts/reference/onnxruntime_run.py"))
            .args(["--pipeline", pipeline, "--spec", s(&spec), "--models"])
            .args(outputs.iter().map(|(p, _)| p))
            .arg("--images")
            .args(&images)
            .output()
            .expect("python runs");
        let ran = json_of(&out)["models"].as_array().unwrap().clone();
        for ((path, by_state), ort) in outputs.iter().zip(&ran) {
            let labels: Vec<String> = ort["labels"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no labels in the metadata", path.display()))
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect();
            for (scores, st) in ort["scores"].as_array().unwrap().iter().zip(by_state) {
                let got: HashMap<String, f64> = labels.iter().cloned().zip(f64s(scores)).collect();
                let expected = if softmax_output {
                    softmax(st)
                } else {
                    st.clone()
                };
                assert_close(&format!("{} onnxruntime", path.display()), &got, &expected);
            }
        }
        eprintln!("{name}: every mode retrained; tract and onnxruntime give the state's scores");
    }
}
