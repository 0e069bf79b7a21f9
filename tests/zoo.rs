//! "Your own model just works": a zoo of models shaped as today's exporters write them
//! (scripts/models/make_zoo.py: PyTorch dynamo opset 18, the legacy TorchScript exporter, tf2onnx's
//! NHWC Keras model with a MatMul + Add head, a fully dynamic input) and an image folder. Each
//! gets its spec from `fastretrain spec`, runs every command, and matches the independent PIL +
//! onnxruntime + NumPy references of scripts/reference/make_zoo_reference.py.

use crate::common;

use std::path::PathBuf;

use common::{json_of, run, run_ok as ok, s, stderr, zoo};
use fastretrain::backbone::{Backbone, LoadOptions};
use fastretrain::features::FeatureExtractor;
use fastretrain::spec::{ModelSpec, ResizeFilter};

const MODELS: [&str; 7] = [
    "torch_dynamo_resnet",
    "torch_legacy_vgg",
    "keras_nhwc",
    "dynamic_hw",
    // As people carry models to boards: half precision, int8 QDQ, weights in a side file.
    "torch_dynamo_resnet_f16",
    "keras_nhwc_int8",
    "torch_legacy_vgg_external",
];

/// How far a model's features and outputs may be from onnxruntime's, for a vector whose
/// largest value is `scale`: within 1e-4, but a float16 model within its rounding (tract and
/// onnxruntime round each layer's float16 result, in their own order): 1 % of the vector's
/// size, ten of float16's steps. An int8 QDQ model is held to 1e-4 against the ONNX operators'
/// definition (scripts/reference/make_zoo_reference.py: onnxruntime without its fused int8
/// kernels), which tract computes.
fn tolerance(name: &str, scale: f64) -> f64 {
    if name.ends_with("_f16") {
        1e-4 + 1e-2 * scale.abs()
    } else {
        1e-4
    }
}

fn reference() -> serde_json::Value {
    common::json("zoo/reference.json")
}

#[test]
fn every_zoo_model_gets_a_spec_and_runs_every_command() {
    let reference = reference();
    let train = zoo("fashion/train");
    let test = zoo("fashion/test");
    let image = common::zoo_image("test", "Bag");
    for name in MODELS {
        let dir = common::temp_dir(&format!("zoo-{name}"));
        let model = common::zoo_model_with_spec(&dir, name);
        let check = json_of(&run(
            &dir,
            &["spec", "--model", &model, "--check", "--json"],
        ));
        assert_eq!(check["written"], false);
        assert_eq!(check["notes"], serde_json::json!([]), "{name}");

        // learn + eval on an image folder: the NumPy ridge's accuracy at the same λ.
        let expected = &reference["models"][name];
        let lambda = expected["lambda"].as_f64().unwrap().to_string();
        let learned = json_of(&run(
            &dir,
            &[
                "learn",
                "--state",
                "s.frs",
                "--model",
                &model,
                "--data",
                s(&train),
                "--lambda",
                &lambda,
                "--json",
            ],
        ));
        assert_eq!(learned["samples"], 500, "{name}");
        let eval = json_of(&run(
            &dir,
            &["eval", "--state", "s.frs", "--data", s(&test), "--json"],
        ));
        let accuracy = eval["accuracy"].as_f64().unwrap();
        let numpy = expected["test_accuracy"].as_f64().unwrap();
        assert!(
            (accuracy - numpy).abs() <= 0.005,
            "{name}: accuracy {accuracy} vs onnxruntime + NumPy ridge {numpy}"
        );
        eprintln!(
            "{name}: learn + eval accuracy {accuracy:.4}, onnxruntime + NumPy ridge {numpy:.4}"
        );

        // The rest of the commands, each on this model.
        let predicted = json_of(&run(
            &dir,
            &[
                "predict",
                "--state",
                "s.frs",
                "-k",
                "2",
                s(&image),
                "--json",
            ],
        ));
        assert_eq!(predicted[0]["top"].as_array().unwrap().len(), 2);
        let info = json_of(&run(&dir, &["info", "--state", "s.frs", "--json"]));
        assert_eq!(info["samples"], 500.0);
        ok(&dir, &["fit", "--state", "s.frs", "--lambda", &lambda]);
        ok(
            &dir,
            &[
                "extract",
                "--store",
                "test.frf",
                "--data",
                s(&test),
                "--model",
                &model,
            ],
        );
        let stored = json_of(&run(
            &dir,
            &["eval", "--state", "s.frs", "--store", "test.frf", "--json"],
        ));
        assert!((stored["accuracy"].as_f64().unwrap() - accuracy).abs() <= 0.01);
        ok(
            &dir,
            &["fit", "--state", "from-store.frs", "--store", "test.frf"],
        );
        // Exact unlearning: learn the test images too, forget them, and the statistics are
        // those of the training images alone.
        std::fs::copy(dir.join("s.frs"), dir.join("both.frs")).unwrap();
        ok(&dir, &["learn", "--state", "both.frs", "--data", s(&test)]);
        ok(&dir, &["forget", "--state", "both.frs", "--data", s(&test)]);
        let both = json_of(&run(&dir, &["info", "--state", "both.frs", "--json"]));
        assert_eq!(both["samples"], 500.0, "{name}");
        // A state with itself: every sample would count twice.
        common::refused(
            &dir,
            &["merge", "--out", "merged.frs", "s.frs", "s.frs"],
            "bit for bit",
        );
        ok(
            &dir,
            &["bench", "--model", &model, "--runs", "2", "--warmup", "0"],
        );

        // Export: the adapted ONNX, run by tract as a model as it is, gives predict's scores.
        ok(
            &dir,
            &["export", "--state", "s.frs", "--out", "adapted.onnx"],
        );
        let mut spec = ModelSpec::load(&dir.join(model.replace(".onnx", ".json"))).unwrap();
        spec.file = None;
        spec.sha256 = None;
        spec.feature_tensor = None;
        spec.feature_dim = None;
        std::fs::write(dir.join("adapted.json"), spec.to_json()).unwrap();
        let exported = json_of(&run(
            &dir,
            &[
                "predict",
                "--model",
                "adapted.onnx",
                "-k",
                "10",
                s(&image),
                "--json",
            ],
        ));
        let by_state = json_of(&run(
            &dir,
            &[
                "predict",
                "--state",
                "s.frs",
                "-k",
                "10",
                s(&image),
                "--json",
            ],
        ));
        // The exported model carries its labels, so its own classes are the state's labels.
        for scored in by_state[0]["top"].as_array().unwrap() {
            let label = scored["label"].as_str().unwrap();
            let other = exported[0]["top"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["label"] == label)
                .unwrap_or_else(|| panic!("{name}: '{label}' not among {exported}"));
            let (a, b) = (
                scored["score"].as_f64().unwrap(),
                other["score"].as_f64().unwrap(),
            );
            assert!((a - b).abs() <= 1e-4, "{name} {label}: {a} vs exported {b}");
        }

        // The model's own head, no state.
        let own = json_of(&run(
            &dir,
            &["predict", "--model", &model, "-k", "3", s(&image), "--json"],
        ));
        assert_eq!(own[0]["top"].as_array().unwrap().len(), 3);

        // The demo on this model, and the desktop retraining (every zoo model retrains; a build
        // without `train` says which feature it needs).
        let demo = json_of(&run(
            &dir,
            &[
                "demo", "--model", &model, "--train", "100", "--test", "50", "--json",
            ],
        ));
        assert_eq!(demo["eval"]["samples"], 50);
        let retrain = run(
            &dir,
            &[
                "retrain",
                "--model",
                &model,
                "--data",
                s(&train),
                "--test-data",
                s(&test),
                "--test-limit",
                "32",
                "--epochs",
                "1",
                "--out",
                "retrained.onnx",
            ],
        );
        if cfg!(feature = "train") {
            assert!(retrain.status.success(), "{name}: {}", stderr(&retrain));
            ok(
                &dir,
                &["eval", "--state", "retrained.frs", "--data", s(&test)],
            );
            // The retrained ONNX names its classes and, run as it is, gives its state's scores.
            let as_model = json_of(&run(
                &dir,
                &[
                    "predict",
                    "--model",
                    "retrained.onnx",
                    "-k",
                    "10",
                    s(&image),
                    "--json",
                ],
            ));
            let as_state = json_of(&run(
                &dir,
                &[
                    "predict",
                    "--state",
                    "retrained.frs",
                    "-k",
                    "10",
                    s(&image),
                    "--json",
                ],
            ));
            // tf2onnx's model ends in a Softmax, which the retrained ONNX keeps.
            let state_top = as_state[0]["top"].as_array().unwrap();
            let norm: f64 = state_top
                .iter()
                .map(|t| t["score"].as_f64().unwrap().exp())
                .sum();
            let scale = state_top
                .iter()
                .map(|t| t["score"].as_f64().unwrap().abs())
                .fold(0.0, f64::max);
            for scored in state_top {
                let other = as_model[0]["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["label"] == scored["label"])
                    .unwrap_or_else(|| panic!("{name}: {scored} not in {as_model}"));
                let mut a = scored["score"].as_f64().unwrap();
                if name.starts_with("keras_nhwc") {
                    a = a.exp() / norm;
                }
                let b = other["score"].as_f64().unwrap();
                // A float16 model's retrained head runs in float16 (its weights rounded back).
                assert!(
                    (a - b).abs() <= tolerance(name, scale),
                    "{name}: retrained {a} vs {b}"
                );
            }
        } else {
            assert_eq!(
                retrain.status.code(),
                Some(2),
                "{name}: {}",
                stderr(&retrain)
            );
            let err = stderr(&retrain);
            assert!(
                err.contains("which `retrain` does not support")
                    || err.contains("--features train"),
                "{name}: {err}"
            );
        }

        // A copy at another input size, where the graph allows it (the VGG's dense layer is
        // fixed to its 8×8 feature map).
        let resized = run(
            &dir,
            &[
                "resize-input",
                "--model",
                &model,
                "--size",
                "24",
                "--out",
                "small.onnx",
            ],
        );
        if name.starts_with("torch_legacy_vgg") {
            assert_eq!(resized.status.code(), Some(2), "{}", stderr(&resized));
            assert!(stderr(&resized).contains("does not run at 24×24"));
            assert!(!dir.join("small.onnx").exists() && !dir.join("small.json").exists());
        } else {
            assert!(resized.status.success(), "{name}: {}", stderr(&resized));
            ok(
                &dir,
                &[
                    "bench",
                    "--model",
                    "small.onnx",
                    "--runs",
                    "1",
                    "--warmup",
                    "0",
                ],
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".lock"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{name}: lock files left: {leftovers:?}"
        );
    }
}

#[test]
fn features_through_the_u8_filter_match_pil_and_onnxruntime() {
    let reference = reference();
    // The largest difference, and the largest in units of the model's tolerance.
    let worst = |name: &str, a: &[f32], b: &[f64]| {
        assert_eq!(a.len(), b.len());
        let tolerance = tolerance(name, b.iter().fold(0.0, |m, v| v.abs().max(m)));
        a.iter().zip(b).fold((0.0f64, 0.0f64), |(d, r), (x, y)| {
            let diff = (f64::from(*x) - y).abs();
            (d.max(diff), r.max(diff / tolerance))
        })
    };
    for name in MODELS {
        let dir = common::temp_dir(&format!("zoo-features-{name}"));
        let model = dir.join(common::zoo_model_with_spec(&dir, name));
        let expected = &reference["models"][name];
        // The model as it is, and packed (tract's own format, for the board), except a
        // quantized one: NNEF has no quantize-dequantize pair to write it with.
        let pack = ["pack", "--model", s(&model), "--out", "packed.frpack"];
        let mut forms = vec![("onnx", model.clone())];
        if name.ends_with("_int8") {
            common::refused(&dir, &pack, "give the board the .onnx file itself");
        } else {
            ok(&dir, &pack);
            forms.push(("pack", dir.join("packed.frpack")));
        }
        for (what, path) in forms {
            let backbone = Backbone::load_with(&path, None, &LoadOptions::default()).unwrap();
            assert_eq!(
                backbone.spec().image().unwrap().1.resize_filter,
                ResizeFilter::BilinearAntialiasU8
            );
            let mut extractor = FeatureExtractor::new(backbone).unwrap();
            let samples = expected["features"].as_object().unwrap();
            let (mut largest, mut relative) = (0.0f64, 0.0f64);
            assert!(!samples.is_empty());
            for (rel, reference) in samples {
                let ours = extractor.sample_file(&zoo(rel)).unwrap();
                let (diff, within) = worst(name, &ours, &common::f64s(reference));
                assert!(within <= 1.0, "{name} ({what}) {rel}: max |Δ| {diff}");
                largest = largest.max(diff);
                relative = relative.max(within);
            }
            eprintln!(
                "{name} ({what}): features vs PIL (8-bit) + onnxruntime, max |Δ| {largest:e} \
                 ({relative:.2} of its tolerance)"
            );
        }
        // The model's own head (in its own precision): onnxruntime's outputs.
        let outputs = expected["outputs"].as_object().unwrap();
        let mut args = vec!["predict", "--model", s(&model), "-k", "100", "--json"];
        let files: Vec<PathBuf> = outputs.keys().map(|rel| zoo(rel)).collect();
        args.extend(files.iter().map(|f| s(f)));
        let predicted = json_of(&run(&dir, &args));
        let (mut largest, mut relative) = (0.0f64, 0.0f64);
        for (p, reference) in predicted.as_array().unwrap().iter().zip(outputs.values()) {
            let reference = common::f64s(reference);
            let scale = reference.iter().fold(0.0, |m: f64, v| v.abs().max(m));
            let top = p["top"].as_array().unwrap();
            assert_eq!(top.len(), reference.len(), "{name}");
            for scored in top {
                let class: usize = scored["label"].as_str().unwrap().parse().unwrap();
                let diff = (scored["score"].as_f64().unwrap() - reference[class]).abs();
                let within = diff / tolerance(name, scale);
                assert!(within <= 1.0, "{name} class {class}: |Δ| {diff}");
                largest = largest.max(diff);
                relative = relative.max(within);
            }
        }
        eprintln!(
            "{name}: predict --model (its own head) vs onnxruntime, max |Δ| {largest:e} \
             ({relative:.2} of its tolerance)"
        );
    }

    // The shipped MobileNetV2 with the 8-bit filter, on the reference photos.
    let mut spec = ModelSpec::load(&common::root().join("models/mobilenetv2.json")).unwrap();
    spec.preprocess.as_mut().unwrap().resize_filter = ResizeFilter::BilinearAntialiasU8;
    let backbone = Backbone::load(
        &common::root().join("models/mobilenetv2.onnx"),
        Some(spec),
        Some("features"),
    )
    .unwrap();
    let mut extractor = FeatureExtractor::new(backbone).unwrap();
    let photos = reference["mobilenetv2"]["u8_features"].as_object().unwrap();
    let mut largest = 0.0f64;
    assert_eq!(photos.len(), 8);
    for (file, expected) in photos {
        let ours = extractor
            .sample_file(&common::data("images").join(file))
            .unwrap();
        let (diff, _) = worst("mobilenetv2", &ours, &common::f64s(expected));
        assert!(diff <= 1e-4, "mobilenetv2 {file}: max |Δ| {diff}");
        largest = largest.max(diff);
    }
    eprintln!(
        "mobilenetv2: 8 photos through the 8-bit filter vs PIL + onnxruntime, max |Δ| {largest:e}"
    );
}

#[test]
fn predict_with_the_model_own_head_agrees_with_onnxruntime() {
    let reference = reference();
    let top1 = reference["mobilenetv2"]["top1"].as_object().unwrap();
    assert_eq!(top1.len(), 10);
    let photos: Vec<PathBuf> = top1
        .keys()
        .map(|f| common::data("images").join(f))
        .collect();
    let mut args = vec![
        "predict",
        "--model",
        "models/mobilenetv2.onnx",
        "-k",
        "1",
        "--json",
    ];
    args.extend(photos.iter().map(|p| s(p)));
    let predicted = json_of(&run(&common::root(), &args));
    for (p, (file, class)) in predicted.as_array().unwrap().iter().zip(top1) {
        assert!(p["file"].as_str().unwrap().ends_with(file.as_str()));
        assert_eq!(
            p["top"][0]["label"].as_str().unwrap(),
            class.as_u64().unwrap().to_string(),
            "{file}"
        );
    }

    // With the shipped ImageNet class names (models/imagenet_classes.txt, torchvision's list).
    let names: Vec<String> =
        std::fs::read_to_string(common::root().join("models/imagenet_classes.txt"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    args.extend(["--label-names", "models/imagenet_classes.txt"]);
    let named = json_of(&run(&common::root(), &args));
    for (p, class) in named.as_array().unwrap().iter().zip(top1.values()) {
        let class = class.as_u64().unwrap() as usize;
        assert_eq!(p["top"][0]["label"].as_str().unwrap(), names[class]);
    }

    // eval with the model's own head: folders named by class number, or by the names in
    // --label-names, give the same result.
    let dir = common::temp_dir("zoo-own-eval");
    let numbered = dir.join("numbered");
    let named = dir.join("named");
    let mut names = Vec::new();
    for (i, (file, class)) in top1.iter().enumerate().take(6) {
        // Half the photos under their own class, half under another: accuracy 0.5.
        let class = class.as_u64().unwrap() as usize;
        let label = if i % 2 == 0 {
            class
        } else {
            (class + 1) % 1000
        };
        for (root, folder) in [
            (&numbered, label.to_string()),
            (&named, format!("c{label}")),
        ] {
            std::fs::create_dir_all(root.join(&folder)).unwrap();
            std::fs::copy(
                common::data("images").join(file),
                root.join(&folder).join(file),
            )
            .unwrap();
        }
    }
    names.extend((0..1000).map(|i| format!("c{i}")));
    std::fs::write(dir.join("names.txt"), names.join("\n")).unwrap();
    let model = common::root().join("models/mobilenetv2.onnx");
    let by_number = json_of(&run(
        &dir,
        &["eval", "--model", s(&model), "--data", "numbered", "--json"],
    ));
    let by_name = json_of(&run(
        &dir,
        &[
            "eval",
            "--model",
            s(&model),
            "--data",
            "named",
            "--label-names",
            "names.txt",
            "--json",
        ],
    ));
    assert_eq!(by_number["accuracy"], 0.5);
    assert_eq!(by_name["accuracy"], 0.5);
    assert_eq!(by_number["samples"], 6);
}

/// A quantized model's dense head is a MatMul of a DequantizeLinear'd int8 weight: `spec`
/// finds it (its input, dequantized, is the feature tensor) without being told, and
/// `export --original-head` says why it cannot re-attach it instead of failing inside.
#[test]
fn a_quantized_models_head_is_found_without_naming_the_features() {
    let dir = common::temp_dir("zoo-int8-head");
    std::fs::copy(zoo("keras_nhwc_int8.onnx"), dir.join("m.onnx")).unwrap();
    let report = json_of(&run(
        &dir,
        &[
            "spec",
            "--model",
            "m.onnx",
            "--preset",
            "inception",
            "--json",
        ],
    ));
    assert_eq!(
        report["feature_tensor"],
        "model/global_average_pooling2d/Mean_DequantizeLinear_Output"
    );
    assert_eq!(report["feature_dim"], 48);
    let train = zoo("fashion/train");
    ok(
        &dir,
        &[
            "learn",
            "--state",
            "s.frs",
            "--data",
            s(&train),
            "--model",
            "m.onnx",
        ],
    );
    common::refused(
        &dir,
        &[
            "export",
            "--model",
            "m.onnx",
            "--original-head",
            "--out",
            "o.onnx",
        ],
        "is quantized",
    );
    assert!(!dir.join("o.onnx").exists());
}
