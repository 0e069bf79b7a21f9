//! The benchmark code paths on tiny inputs (no timing is checked anywhere): `fastretrain
//! bench` on the tiny test CNN, and `scripts/bench/bench.py` end to end with every section shrunk,
//! writing its report into a temporary folder. The Python side runs in the venv
//! `scripts/ci/venv.sh` makes (or `FASTRETRAIN_PYTHON`).

use crate::common;

use std::process::Command;

use common::{json_of, refused, run};

#[test]
fn bench_command_times_the_forward_pass() {
    let dir = common::temp_dir("bench-cmd");
    let model = common::data("models/tiny_cnn.onnx");
    let model = model.to_str().unwrap();
    {
        let args = [
            "bench", "--json", "--model", model, "--runs", "2", "--warmup", "1",
        ];
        let timing = json_of(&run(&dir, &args));
        // No tensor named in its spec: the automatic recipe (no blocks: the penultimate alone).
        let recipe = fastretrain::feature_recipe::FeatureRecipe::parse(
            timing["feature_tensor"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(recipe.tensors, ["features"]);
        assert_eq!(timing["runs"], 2);
        let (lo, mid, hi) = (
            timing["ms_per_image_min"].as_f64().unwrap(),
            timing["ms_per_image"].as_f64().unwrap(),
            timing["ms_per_image_max"].as_f64().unwrap(),
        );
        assert!(0.0 < lo && lo <= mid && mid <= hi, "{timing}");
        let args = [
            "bench",
            "--json",
            "--model",
            model,
            "--parallel",
            "2",
            "--runs",
            "2",
        ];
        let timing = json_of(&run(&dir, &args));
        assert_eq!(timing["parallel"], 2);
        assert!(timing["ms_per_image"].as_f64().unwrap() > 0.0, "{timing}");
    }
    refused(
        &dir,
        &["bench", "--model", model, "--runs", "0"],
        "1..=1000000",
    );
    // One image per run: batches were slower per image in tract (docs/BENCHMARKS.md).
    refused(
        &dir,
        &["bench", "--model", model, "--batch", "8"],
        "--batch",
    );
    refused(
        &dir,
        &["bench", "--model", model, "--parallel", "0"],
        "outside 1..=256",
    );
}

#[test]
fn bench_script_writes_every_section() {
    let dir = common::temp_dir("bench-script");
    let out = Command::new(common::python())
        .arg(common::root().join("scripts/bench/bench.py"))
        .args(["--bin", env!("CARGO_BIN_EXE_fastretrain"), "--model"])
        .arg(common::data("models/tiny_cnn.onnx"))
        .args(["--out", dir.to_str().unwrap()])
        .args([
            "--rounds",
            "1",
            "--runs",
            "2",
            "--learn-n",
            "16",
            "--train-n",
            "64",
        ])
        .args(["--test-n", "32", "--rss-rows", "64,128"])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report = std::fs::read_to_string(dir.join("BENCHMARKS.md")).unwrap();
    for section in [
        "## 1.1. Backbone forward",
        "## 1.2. Backbone forward (ResNet-18",
        "## 2.1. End-to-end `learn`",
        "## 2.2. End-to-end `learn` (ResNet-18",
        "## 3. Head fitting",
        "## 4. Peak RSS",
        "scikit-learn LogisticRegression",
        "fastretrain recompute",
    ] {
        assert!(report.contains(section), "missing {section}:\n{report}");
    }
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("BENCHMARKS.json")).unwrap())
            .unwrap();
    assert_eq!(raw["forward"]["first"].as_array().unwrap().len(), 3);
    assert_eq!(raw["forward"]["second"].as_array().unwrap().len(), 2);
    // The engine column is there when the binary has the engine (`--features onnxruntime`).
    assert_eq!(
        raw["forward"]["first"][0].get("ort_engine").is_some(),
        cfg!(feature = "onnxruntime"),
        "{}",
        raw["forward"]
    );
    assert_eq!(raw["memory"].as_array().unwrap().len(), 2);
    assert!(
        std::fs::read_to_string(dir.join("benchmarks.svg"))
            .unwrap()
            .contains("<svg")
    );
}
