//! Samples that are not images: two models fed float tensors (scripts/models/make_signal_zoo.py):
//! a 1-D convolutional keyword spotter on log-mel frames (a folder of float16 `.npy` files) and
//! an MLP on 6-axis IMU windows (`.npy` arrays with integer and text labels). Checked against
//! the onnxruntime + NumPy references of scripts/reference/make_signal_reference.py, and the
//! exported models against onnxruntime on the same files.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{json_of, run_ok as ok, s};
use fastretrain::backbone::Backbone;
use fastretrain::data::{DataOptions, DataSource};
use fastretrain::features::FeatureExtractor;

fn signal(rel: &str) -> PathBuf {
    common::data("signal").join(rel)
}

fn reference(model: &str) -> serde_json::Value {
    common::json("signal/reference.json")["models"][model].clone()
}

/// Writes one float32 sample as a `.npy` file (format 1.0, as numpy.save writes it).
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// onnxruntime's output of `model` on each one-sample `.npy` file.
fn onnxruntime_scores(model: &Path, files: &[PathBuf]) -> Vec<Vec<f64>> {
    let out = Command::new(common::python())
        .arg(common::root().join("scripts/reference/onnxruntime_run.py"))
        .arg("--models")
        .arg(model)
        .arg("--tensors")
        .args(files)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", common::stderr(&out));
    json_of(&out)["models"][0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(common::f64s)
        .collect()
}

fn accuracy(eval: &str) -> f64 {
    json_of_text(eval)["accuracy"].as_f64().unwrap()
}

fn json_of_text(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `predict --json`'s scores of each file, in label order of `labels`.
fn predict_scores(dir: &Path, state: &Path, files: &[PathBuf], labels: &[String]) -> Vec<Vec<f64>> {
    let k = labels.len().to_string();
    let mut args = vec!["predict", "--json", "--state", s(state), "-k", &k];
    args.extend(files.iter().map(|f| s(f)));
    let predictions = json_of_text(&ok(dir, &args));
    predictions
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let top = p["top"].as_array().unwrap();
            labels
                .iter()
                .map(|l| {
                    top.iter().find(|t| t["label"] == l.as_str()).unwrap()["score"]
                        .as_f64()
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

#[test]
fn tensor_models_get_a_spec_learn_like_numpy_and_export_like_predict() {
    let dir = common::temp_dir("signal-zoo");
    let elsewhere = common::temp_dir("signal-zoo-cwd");
    for (name, shape) in [("kws_conv1d", vec![40, 98]), ("imu_mlp", vec![50, 6])] {
        let reference = reference(name);
        // `spec --preset tensor` on a copy, run from another folder, as a user would.
        let model = dir.join(format!("{name}.onnx"));
        std::fs::copy(signal(&format!("{name}.onnx")), &model).unwrap();
        let report = json_of_text(&ok(
            &elsewhere,
            &["spec", "--json", "--preset", "tensor", "--model", s(&model)],
        ));
        assert_eq!(report["kind"], "tensor", "{report}");
        assert_eq!(report["shape"], serde_json::json!(shape));
        assert_eq!(report["feature_tensor"], reference["feature_tensor"]);
        assert_eq!(report["feature_dim"], reference["feature_dim"]);
        let written = common::json_file(&model.with_extension("json"));
        assert_eq!(written["input"]["kind"], "tensor");
        assert!(written.get("preprocess").is_none(), "{written}");

        // Features of the first samples against onnxruntime's.
        let backbone = Backbone::load(&model, None, None).unwrap();
        let mut extractor = FeatureExtractor::new(backbone).unwrap();
        let expected = reference["features"].as_object().unwrap();
        assert_eq!(expected.len(), 4);
        let train = match name {
            "kws_conv1d" => signal("kws/train"),
            _ => signal("imu/train.npy"),
        };
        let mut source = DataSource::open(&train, &DataOptions::default()).unwrap();
        for (rel, want) in expected {
            let sample = source.next().unwrap().unwrap();
            assert!(sample.id.ends_with(rel), "{} vs {rel}", sample.id);
            let ours = extractor.sample(&sample).unwrap();
            let want = common::f64s(want);
            let worst = ours
                .iter()
                .zip(&want)
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0.0, f64::max);
            assert!(worst <= 1e-4, "{name} {rel}: max |Δ| {worst}");
        }

        // learn at the reference's λ, then eval: the NumPy ridge's accuracy within 0.5 point.
        let state = dir.join(format!("{name}.frs"));
        let lambda = reference["lambda"].as_f64().unwrap().to_string();
        ok(
            &elsewhere,
            &[
                "learn",
                "--model",
                s(&model),
                "--state",
                s(&state),
                "--data",
                s(&train),
                "--lambda",
                &lambda,
            ],
        );
        let eval = match name {
            "kws_conv1d" => ok(
                &elsewhere,
                &[
                    "eval",
                    "--json",
                    "--state",
                    s(&state),
                    "--data",
                    s(&signal("kws/test")),
                ],
            ),
            _ => ok(
                &elsewhere,
                &[
                    "eval",
                    "--json",
                    "--state",
                    s(&state),
                    "--data",
                    s(&signal("imu/test.npy")),
                    "--labels",
                    s(&signal("imu/test-labels.txt")),
                ],
            ),
        };
        let want = reference["test_accuracy"].as_f64().unwrap();
        let got = accuracy(&eval);
        eprintln!("{name}: accuracy {got:.4}, NumPy ridge {want:.4}");
        assert!((got - want).abs() <= 0.005, "{name}: {got} vs {want}");

        // export, run by onnxruntime on sample files: predict's scores within 1e-4.
        let files: Vec<PathBuf> = match name {
            "kws_conv1d" => ["yes/yes_00.npy", "go/go_03.npy", "stop/stop_09.npy"]
                .iter()
                .map(|f| signal("kws/test").join(f))
                .collect(),
            _ => {
                // Three windows of the test array, each written as its own file.
                let mut test = DataSource::open(
                    &signal("imu/test.npy"),
                    &DataOptions {
                        idx_labels: Some(signal("imu/test-labels.txt")),
                        ..Default::default()
                    },
                )
                .unwrap();
                (0..3)
                    .map(|i| {
                        let sample = test.next().unwrap().unwrap();
                        let fastretrain::preprocess::SampleInput::Tensor(t) = sample.input else {
                            panic!("an array holds tensors");
                        };
                        let file = dir.join(format!("window{i}.npy"));
                        write_npy(&file, &t.shape, &t.data);
                        file
                    })
                    .collect()
            }
        };
        let exported = dir.join(format!("{name}_adapted.onnx"));
        ok(
            &elsewhere,
            &["export", "--state", s(&state), "--out", s(&exported)],
        );
        let info = json_of_text(&ok(&elsewhere, &["info", "--json", "--state", s(&state)]));
        let labels: Vec<String> = info["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l[0].as_str().unwrap().to_string())
            .collect();
        let ours = predict_scores(&elsewhere, &state, &files, &labels);
        let theirs = onnxruntime_scores(&exported, &files);
        let mut largest = 0.0f64;
        for (a, b) in ours.iter().zip(&theirs) {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(worst <= 1e-4, "{name}: export vs predict max |Δ| {worst}");
            largest = largest.max(worst);
        }
        eprintln!("{name}: export in onnxruntime vs predict, max |Δ| {largest:e}");

        // A pack of the backbone predicts as the model does.
        let pack = dir.join(format!("{name}.pack"));
        ok(
            &elsewhere,
            &["pack", "--model", s(&model), "--out", s(&pack)],
        );
        let packed = ok(
            &elsewhere,
            &[
                "predict",
                "--state",
                s(&state),
                "--model",
                s(&pack),
                s(&files[0]),
            ],
        );
        let direct = ok(&elsewhere, &["predict", "--state", s(&state), s(&files[0])]);
        assert_eq!(packed, direct);
    }
}

#[test]
fn tensor_arrays_predict_forget_merge_and_extract_like_files() {
    let dir = common::temp_dir("signal-ops");
    let model = signal("imu_mlp.onnx");
    let train = signal("imu/train.npy");
    let test = signal("imu/test.npy");
    let whole = dir.join("whole.frs");
    ok(
        &dir,
        &[
            "learn",
            "--model",
            s(&model),
            "--state",
            s(&whole),
            "--data",
            s(&train),
            "--lambda",
            "1",
        ],
    );
    // Learned in two shards on two "machines", merged: the same predictions as the whole.
    let (a, b, merged) = (dir.join("a.frs"), dir.join("b.frs"), dir.join("merged.frs"));
    for (state, shard) in [(&a, "0/2"), (&b, "1/2")] {
        ok(
            &dir,
            &[
                "learn",
                "--model",
                s(&model),
                "--state",
                s(state),
                "--data",
                s(&train),
                "--shard",
                shard,
                "--lambda",
                "1",
            ],
        );
    }
    ok(
        &dir,
        &["merge", "--out", s(&merged), s(&a), s(&b), "--lambda", "1"],
    );
    let predict = |state: &Path| ok(&dir, &["predict", "--json", "--state", s(state), s(&test)]);
    let whole_predictions = json_of_text(&predict(&whole));
    let merged_predictions = json_of_text(&predict(&merged));
    assert_eq!(whole_predictions.as_array().unwrap().len(), 120);
    for (x, y) in whole_predictions
        .as_array()
        .unwrap()
        .iter()
        .zip(merged_predictions.as_array().unwrap())
    {
        assert_eq!(x["file"], y["file"]);
        assert_eq!(x["top"][0]["label"], y["top"][0]["label"]);
        let (p, q) = (
            x["top"][0]["score"].as_f64().unwrap(),
            y["top"][0]["score"].as_f64().unwrap(),
        );
        assert!((p - q).abs() <= 1e-9 * p.abs().max(1.0), "{p} vs {q}");
    }
    assert!(
        whole_predictions[7]["file"]
            .as_str()
            .unwrap()
            .ends_with("test.npy#7")
    );

    // Learn the test array too, then forget it: back to the statistics of train alone.
    let both = dir.join("both.frs");
    std::fs::copy(&whole, &both).unwrap();
    ok(
        &dir,
        &[
            "learn",
            "--state",
            s(&both),
            "--data",
            s(&test),
            "--labels",
            s(&signal("imu/test-labels.txt")),
            "--lambda",
            "1",
        ],
    );
    let info = |state: &Path| json_of_text(&ok(&dir, &["info", "--json", "--state", s(state)]));
    assert_eq!(info(&both)["samples"].as_f64(), Some(360.0));
    ok(
        &dir,
        &[
            "forget",
            "--state",
            s(&both),
            "--data",
            s(&test),
            "--labels",
            s(&signal("imu/test-labels.txt")),
            "--lambda",
            "1",
        ],
    );
    assert_eq!(info(&both)["samples"].as_f64(), Some(240.0));
    let after = json_of_text(&predict(&both));
    for (x, y) in whole_predictions
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
    {
        let (p, q) = (
            x["top"][0]["score"].as_f64().unwrap(),
            y["top"][0]["score"].as_f64().unwrap(),
        );
        assert!((p - q).abs() <= 1e-6, "forget left {p} vs {q}");
    }

    // extract to a feature store, then fit from it: the same head as learn's.
    let store = dir.join("imu.store");
    let fitted = dir.join("fitted.frs");
    ok(
        &dir,
        &[
            "extract",
            "--model",
            s(&model),
            "--store",
            s(&store),
            "--data",
            s(&train),
        ],
    );
    ok(
        &dir,
        &[
            "fit",
            "--state",
            s(&fitted),
            "--store",
            s(&store),
            "--method",
            "block-rls",
            "--lambda",
            "1",
        ],
    );
    let eval = |state: &Path| {
        accuracy(&ok(
            &dir,
            &[
                "eval",
                "--json",
                "--state",
                s(state),
                "--data",
                s(&test),
                "--labels",
                s(&signal("imu/test-labels.txt")),
            ],
        ))
    };
    let (learned, stored) = (eval(&whole), eval(&fitted));
    assert!(
        (learned - stored).abs() <= 0.01,
        "learn {learned}, extract + fit {stored}"
    );

    // Mirroring is refused for a tensor model, with the reason.
    let out = common::run(
        &dir,
        &[
            "learn",
            "--model",
            s(&model),
            "--state",
            s(&dir.join("x.frs")),
            "--data",
            s(&train),
            "--augment",
            "hflip",
        ],
    );
    common::assert_error(&out, "mirrors images");
    let out = common::run(
        &dir,
        &["predict", "--state", s(&whole), "--tta", "hflip", s(&test)],
    );
    common::assert_error(&out, "no left and right");
    let out = common::run(
        &dir,
        &[
            "export",
            "--state",
            s(&whole),
            "--tta",
            "hflip",
            "--out",
            s(&dir.join("x.onnx")),
        ],
    );
    common::assert_error(&out, "no left and right");
}
