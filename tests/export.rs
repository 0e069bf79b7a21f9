//! `export` writes a standard ONNX model whose outputs equal `predict`'s scores: checked here
//! with tract (run independently of fastretrain's head code) for a linear head and a head with
//! hidden layers; bad input leaves nothing behind.

use crate::common;

use common::s;

use std::path::{Path, PathBuf};

use common::{json_of, refused, run};
use fastretrain::backbone::Backbone;
use fastretrain::export::export_bytes;
use fastretrain::head::{Head, LambdaSource, MethodName};
use fastretrain::preprocess::{Preprocessor, SampleInput, decode_image_file};
use fastretrain::spec::ModelSpec;

/// Runs the exported model to its output with tract and returns the scores of `image`.
fn exported_scores(model: &Path, image: &Path, output: &str) -> Vec<f32> {
    let mut spec = ModelSpec::load(&common::data("models/tiny_cnn.json")).unwrap();
    spec.feature_dim = None; // the output is the scores, not the features
    let backbone = Backbone::load(model, Some(spec.clone()), Some(output)).unwrap();
    let mut pre = Preprocessor::new(&spec);
    let mut input = vec![0.0; pre.input_len()];
    pre.tensor_into(
        &SampleInput::Pixels(decode_image_file(image).unwrap()),
        "image",
        &mut input,
    )
    .unwrap();
    let mut out = vec![0.0; backbone.feature_dim()];
    backbone.features_into(&input, &mut out).unwrap();
    out
}

fn check_round_trip(dir: &Path, state: &Path, name: &str) {
    let out = dir.join(format!("{name}.onnx"));
    let report = json_of(&run(
        dir,
        &["export", "--json", "--state", s(state), "--out", s(&out)],
    ));
    let labels: Vec<String> = serde_json::from_value(report["labels"].clone()).unwrap();
    let images: Vec<PathBuf> = ["imagenet_00_243.png", "imagenet_05_853.png"]
        .iter()
        .map(|n| common::data("images").join(n))
        .collect();
    let mut args = vec!["predict", "--json", "-k", "100", "--state", s(state)];
    args.extend(images.iter().map(|p| s(p)));
    let predicted = json_of(&run(dir, &args));
    for (image, prediction) in images.iter().zip(predicted.as_array().unwrap()) {
        let scores = exported_scores(&out, image, report["output"].as_str().unwrap());
        assert_eq!(scores.len(), labels.len());
        for top in prediction["top"].as_array().unwrap() {
            let i = labels
                .iter()
                .position(|l| l == top["label"].as_str().unwrap())
                .unwrap();
            let ours = top["score"].as_f64().unwrap();
            let diff = (scores[i] as f64 - ours).abs();
            assert!(diff < 1e-4, "{name}: {} differs by {diff}", top["label"]);
        }
    }
}

/// The model's own head, exported unchanged, gives the model's own outputs (tract).
#[test]
fn original_head_exported_unchanged_gives_the_model_outputs() {
    let dir = common::temp_dir("export-original");
    let model = common::data("models/tiny_cnn.onnx");
    let out = dir.join("original.onnx");
    let report = json_of(&run(
        &dir,
        &[
            "export",
            "--json",
            "--original-head",
            "--model",
            s(&model),
            "--out",
            s(&out),
        ],
    ));
    assert_eq!(report["labels"][0], "0");
    let output = report["output"].as_str().unwrap();
    for image in ["imagenet_00_243.png", "imagenet_10_541.jpg"] {
        let image = common::data("images").join(image);
        let ours = exported_scores(&out, &image, output);
        let theirs = exported_scores(&model, &image, output);
        assert_eq!(ours.len(), theirs.len());
        let diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "original head re-exported differs by {diff}");
    }
}

#[test]
fn exported_models_give_predict_scores_and_bad_input_leaves_nothing() {
    let dir = common::temp_dir("export");
    let model = common::data("models/tiny_cnn.onnx");
    let data = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let state = dir.join("linear.frs");
    json_of(&run(
        &dir,
        &[
            "learn",
            "--json",
            "--state",
            s(&state),
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--limit",
            "200",
        ],
    ));
    check_round_trip(&dir, &state, "linear");

    let store = dir.join("train.frf");
    json_of(&run(
        &dir,
        &[
            "extract",
            "--json",
            "--store",
            s(&store),
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--limit",
            "200",
        ],
    ));
    for (name, activation) in [("bsig", "bsig"), ("sin", "sin"), ("relu", "relu")] {
        let hidden = dir.join(format!("{name}.frs"));
        let iterations = if name == "relu" { "0" } else { "1" };
        json_of(&run(
            &dir,
            &[
                "fit",
                "--json",
                "--state",
                s(&hidden),
                "--store",
                s(&store),
                "--method",
                "recompute",
                "--hidden",
                "12,8",
                "--activation",
                activation,
                "--iterations",
                iterations,
            ],
        ));
        check_round_trip(&dir, &hidden, name);
    }

    // Bad input: another model file, a missing folder, a state without a head.
    let other = common::data("models/tiny_cnn_b.onnx");
    let out = dir.join("bad.onnx");
    refused(
        &dir,
        &[
            "export",
            "--state",
            s(&state),
            "--model",
            s(&other),
            "--out",
            s(&out),
        ],
        "another backbone",
    );
    refused(
        &dir,
        &[
            "export",
            "--state",
            s(&state),
            "--out",
            s(&dir.join("missing/x.onnx")),
        ],
        "could not save",
    );
    assert!(!out.exists() && !dir.join("missing").exists());
    // A location nobody can write to, even root.
    refused(
        &dir,
        &[
            "export",
            "--state",
            s(&state),
            "--out",
            "/proc/fastretrain-export.onnx",
        ],
        "could not save",
    );
    // Forgetting every sample would leave a state with no classes: refused, state unchanged
    // (this also forgets a whole label in an early batch, which once broke later batches).
    let emptied = dir.join("emptied.frs");
    std::fs::copy(&state, &emptied).unwrap();
    refused(
        &dir,
        &[
            "forget",
            "--state",
            s(&emptied),
            "--data",
            s(&data),
            "--limit",
            "200",
        ],
        "nothing to fit",
    );
    assert_eq!(
        std::fs::read(&emptied).unwrap(),
        std::fs::read(&state).unwrap()
    );
    // A head with zero classes (only reachable through the library) is refused by export.
    let model_bytes = std::fs::read(&model).unwrap();
    let empty = Head {
        dim: 4,
        labels: Vec::new(),
        hidden: Vec::new(),
        weights: Vec::new(),
        lambda: 1.0,
        lambda_source: LambdaSource::Fixed,
        fitted_samples: 0.0,
        method: MethodName::Gram,
    };
    let err = export_bytes(&model_bytes, &model, "features", &empty).unwrap_err();
    assert!(err.to_string().contains("no classes"), "{err}");
    assert!(!out.exists());
    // resize-input: an impossible size, a model without a spec beside it.
    let mobilenet = common::root().join("models/mobilenetv2.onnx");
    refused(
        &dir,
        &[
            "resize-input",
            "--model",
            s(&mobilenet),
            "--size",
            "0",
            "--out",
            s(&out),
        ],
        "0 is outside 1..=4096",
    );
    let lonely = dir.join("lonely.onnx");
    std::fs::copy(&model, &lonely).unwrap();
    refused(
        &dir,
        &[
            "resize-input",
            "--model",
            s(&lonely),
            "--size",
            "8",
            "--out",
            s(&out),
        ],
        "spec",
    );
    assert!(!out.exists() && !out.with_extension("json").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
