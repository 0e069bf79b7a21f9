//! onnxruntime runs what `export` writes: on the shipped MobileNetV2, an adapted linear head,
//! a head with a hidden layer, and a head on the model resized to 96×96 (`resize-input`) give
//! `predict`'s scores within 1e-4, and the model's own
//! ImageNet head exported unchanged gives the original model's top-1 on real photos.
//! onnxruntime is Python's (pinned in scripts/ci/requirements.txt), in the venv `scripts/ci/venv.sh`
//! makes, or the interpreter `FASTRETRAIN_PYTHON` names; preprocessing on that side is
//! scripts/reference/reference.py's, not ours.

use crate::common;

use common::s;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{json_of, run};

/// Outputs of each model on each image, per onnxruntime, preprocessed as `spec` says.
fn onnxruntime_scores(spec: &Path, models: &[&Path], images: &[PathBuf]) -> Vec<serde_json::Value> {
    onnxruntime_scores_with(spec, models, images, "float")
}

/// [`onnxruntime_scores`] with the preprocessing `pipeline` ("float", or "torchvision": PIL's
/// 8-bit resize, ToTensor, Normalize).
fn onnxruntime_scores_with(
    spec: &Path,
    models: &[&Path],
    images: &[PathBuf],
    pipeline: &str,
) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(common::python());
    cmd.arg(common::root().join("scripts/reference/onnxruntime_run.py"))
        .args(["--pipeline", pipeline, "--spec", s(spec), "--models"])
        .args(models)
        .arg("--images")
        .args(images);
    let out = cmd.output().expect("python runs");
    json_of(&out)["models"].as_array().unwrap().clone()
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

/// The real photos of tests/data/images, in name order.
fn photos() -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(common::data("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    photos
}

/// `predict --model` (the model's own head) gives onnxruntime's top-1 on every photo.
fn assert_own_head_top1_is_onnxruntimes(dir: &Path, model: &Path, spec: &Path, photos: &[PathBuf]) {
    let own = &onnxruntime_scores_with(spec, &[model], photos, "torchvision")[0]["scores"];
    let mut args = vec!["predict", "--model", s(model), "-k", "1", "--json"];
    args.extend(photos.iter().map(|p| s(p)));
    let predicted = json_of(&run(dir, &args));
    for ((p, scores), photo) in predicted
        .as_array()
        .unwrap()
        .iter()
        .zip(own.as_array().unwrap())
        .zip(photos)
    {
        assert_eq!(
            p["top"][0]["label"].as_str().unwrap(),
            argmax(&common::f64s(scores)).to_string(),
            "{}",
            photo.display()
        );
    }
}

/// A head learned on `model` from 60 Fashion-MNIST images into `dir/s.frs` and exported as
/// `dir/adapted.onnx` (returned).
fn learn_and_export(dir: &Path, model: &Path) -> PathBuf {
    let train = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    common::run_ok(
        dir,
        &[
            "learn",
            "--state",
            "s.frs",
            "--model",
            s(model),
            "--data",
            s(&train),
            "--limit",
            "60",
        ],
    );
    common::run_ok(
        dir,
        &["export", "--state", "s.frs", "--out", "adapted.onnx"],
    );
    dir.join("adapted.onnx")
}

#[test]
fn onnxruntime_runs_exported_models_like_predict() {
    let dir = common::temp_dir("export-ort");
    let root = common::root();
    let model = root.join("models/mobilenetv2.onnx");
    let train = root.join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let photos = photos();

    // Two adapted heads: linear (learn) and one hidden bsig layer (fit --method recompute).
    let linear = dir.join("linear.frs");
    let learn = [
        "learn",
        "--json",
        "--state",
        s(&linear),
        "--model",
        s(&model),
        "--data",
        s(&train),
        "--limit",
        "60",
    ];
    json_of(&run(&dir, &learn));
    let store = dir.join("train.frf");
    let extract = [
        "extract",
        "--json",
        "--store",
        s(&store),
        "--model",
        s(&model),
        "--data",
        s(&train),
        "--limit",
        "60",
    ];
    json_of(&run(&dir, &extract));
    let hidden = dir.join("hidden.frs");
    let fit = [
        "fit",
        "--json",
        "--state",
        s(&hidden),
        "--store",
        s(&store),
        "--method",
        "recompute",
        "--hidden",
        "32",
        "--iterations",
        "1",
    ];
    json_of(&run(&dir, &fit));

    // A head learned on the model resized to a 96×96 input (`resize-input`).
    let small = dir.join("mobilenetv2-96.onnx");
    let resized = json_of(&run(
        &dir,
        &[
            "resize-input",
            "--json",
            "--model",
            s(&model),
            "--size",
            "96",
            "--out",
            s(&small),
        ],
    ));
    assert_eq!(resized["size"], 96);
    let small_state = dir.join("small.frs");
    let learn_small = [
        "learn",
        "--json",
        "--state",
        s(&small_state),
        "--model",
        s(&small),
        "--data",
        s(&train),
        "--limit",
        "60",
        // Both transforms (the others learn the shipped spec's recipe: 5 tensors pooled).
        "--transform",
        "ssqrt+l2",
    ];
    json_of(&run(&dir, &learn_small));

    let mut exported = Vec::new();
    for (state, tta) in [
        (&linear, "none"),
        (&hidden, "none"),
        (&small_state, "none"),
        (&linear, "hflip"),
    ] {
        let out = dir.join(format!(
            "{}-{tta}.onnx",
            state.file_stem().unwrap().to_string_lossy()
        ));
        json_of(&run(
            &dir,
            &[
                "export",
                "--json",
                "--state",
                s(state),
                "--out",
                s(&out),
                "--tta",
                tta,
            ],
        ));
        let mut args = vec!["predict", "--json", "-k", "10", "--state", s(state)];
        args.extend(["--tta", tta]);
        args.extend(photos.iter().map(|p| s(p)));
        exported.push((out, json_of(&run(&dir, &args))));
    }
    let original = dir.join("original.onnx");
    json_of(&run(
        &dir,
        &[
            "export",
            "--json",
            "--original-head",
            "--model",
            s(&model),
            "--out",
            s(&original),
        ],
    ));

    let spec = root.join("models/mobilenetv2.json");
    let mut adapted = onnxruntime_scores(&spec, &[&exported[0].0, &exported[1].0], &photos);
    // The 96×96 model's own spec (written beside it) says how to preprocess for it.
    adapted.extend(onnxruntime_scores(
        &small.with_extension("json"),
        &[&exported[2].0],
        &photos,
    ));
    // Flip averaging in the graph: each photo and its mirror in one batch.
    adapted.extend(onnxruntime_scores(&spec, &[&exported[3].0], &photos));
    let originals = onnxruntime_scores(&spec, &[&original, &model], &photos);

    // Scores are compared on the PNG photos only: JPEG decoders (PIL's libjpeg, our
    // zune-jpeg) may round differently, which is not what this test is about.
    let png: Vec<bool> = photos
        .iter()
        .map(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    let mut worst = 0.0f64;
    for ((_, predicted), ort) in exported.iter().zip(&adapted) {
        let labels: Vec<String> = serde_json::from_value(ort["labels"].clone()).unwrap();
        assert_eq!(labels.len(), 10, "Fashion-MNIST has 10 classes");
        for ((prediction, scores), _) in predicted
            .as_array()
            .unwrap()
            .iter()
            .zip(ort["scores"].as_array().unwrap())
            .zip(&png)
            .filter(|(_, is_png)| **is_png)
        {
            let scores = common::f64s(scores);
            for top in prediction["top"].as_array().unwrap() {
                let i = labels
                    .iter()
                    .position(|l| l == top["label"].as_str().unwrap())
                    .unwrap();
                worst = worst.max((scores[i] - top["score"].as_f64().unwrap()).abs());
            }
        }
    }
    assert!(worst < 1e-4, "onnxruntime vs predict: {worst}");

    // The original head, exported: same logits and top-1 as the model itself.
    let (exp, orig) = (&originals[0], &originals[1]);
    let labels: Vec<String> = serde_json::from_value(exp["labels"].clone()).unwrap();
    assert_eq!(labels.len(), 1000);
    let mut logits_diff = 0.0f64;
    let mut named_right = 0;
    for ((photo, a), b) in photos
        .iter()
        .zip(exp["scores"].as_array().unwrap())
        .zip(orig["scores"].as_array().unwrap())
    {
        let (a, b) = (common::f64s(a), common::f64s(b));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            logits_diff = logits_diff.max((x - y).abs());
        }
        assert_eq!(argmax(&a), argmax(&b), "{}: top-1 changed", photo.display());
        // The file name holds the photo's ImageNet class: imagenet_NN_CLASS.ext.
        let class = photo
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .rsplit('_')
            .next()
            .unwrap();
        named_right += usize::from(labels[argmax(&a)] == class);
    }
    assert!(
        logits_diff < 1e-4,
        "original vs exported logits: {logits_diff}"
    );
    eprintln!(
        "onnxruntime: adapted heads vs predict {worst:e}; original head re-exported vs model \
         {logits_diff:e}, same top-1 on {} photos ({named_right} the photo's class)",
        photos.len()
    );
}

/// A user's own model with a spec from `fastretrain spec` (8-bit resize filter): the exported
/// ONNX, fed by the standard PIL/torchvision pipeline in onnxruntime, gives `predict`'s scores
/// within 1e-4; NCHW (PyTorch dynamo export) and NHWC (tf2onnx, MatMul + Add head) models.
#[test]
fn exported_own_models_fed_by_the_torchvision_pipeline_give_predict_scores() {
    let zoo = common::data("zoo");
    let mut images: Vec<PathBuf> = ["Bag", "Coat", "Sneaker"]
        .iter()
        .map(|label| common::zoo_image("test", label))
        .collect();
    images.extend(
        ["imagenet_00_243.png", "imagenet_01_559.png"]
            .iter()
            .map(|f| common::data("images").join(f)),
    );
    for (name, preset) in [
        ("torch_dynamo_resnet", "imagenet"),
        ("keras_nhwc", "inception"),
    ] {
        let dir = common::temp_dir(&format!("export-ort-{name}"));
        let model = dir.join(format!("{name}.onnx"));
        std::fs::copy(zoo.join(format!("{name}.onnx")), &model).unwrap();
        json_of(&run(
            &dir,
            &["spec", "--json", "--model", s(&model), "--preset", preset],
        ));
        let state = dir.join("s.frs");
        let train = zoo.join("fashion/train");
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
                s(&train),
            ],
        ));
        let out = dir.join("adapted.onnx");
        json_of(&run(
            &dir,
            &["export", "--json", "--state", s(&state), "--out", s(&out)],
        ));
        let mut args = vec!["predict", "--json", "-k", "10", "--state", s(&state)];
        args.extend(images.iter().map(|p| s(p)));
        let predicted = json_of(&run(&dir, &args));
        let ort = &onnxruntime_scores_with(
            &model.with_extension("json"),
            &[&out],
            &images,
            "torchvision",
        )[0];
        let labels: Vec<String> = serde_json::from_value(ort["labels"].clone()).unwrap();
        let mut worst = 0.0f64;
        for (prediction, scores) in predicted
            .as_array()
            .unwrap()
            .iter()
            .zip(ort["scores"].as_array().unwrap())
        {
            let scores = common::f64s(scores);
            let top = prediction["top"].as_array().unwrap();
            assert_eq!(top.len(), 10);
            for t in top {
                let i = labels
                    .iter()
                    .position(|l| l == t["label"].as_str().unwrap())
                    .unwrap();
                worst = worst.max((scores[i] - t["score"].as_f64().unwrap()).abs());
            }
        }
        assert!(
            worst < 1e-4,
            "{name}: onnxruntime (torchvision pipeline) vs predict: {worst}"
        );
        eprintln!("{name}: onnxruntime with the torchvision pipeline vs predict {worst:e}");
    }
}

/// The shipped MobileNetV2 halved as people halve it for a board (float16 weights and
/// activations, float32 input and output: scripts/models/convert_float16.py, onnxconverter-common)
/// on the real photos: its features within float16's rounding of onnxruntime's (1 % of their
/// size), its own float16 head giving onnxruntime's top-1, and the export of a head learned on
/// it (a float32 head on the features cast to float32) run by onnxruntime giving predict's
/// scores within the same rounding.
#[test]
fn a_float16_mobilenetv2_matches_onnxruntime_on_the_photos() {
    let dir = common::temp_dir("export-ort-f16");
    let f16 = dir.join("mobilenetv2_f16.onnx");
    let converted = Command::new(common::python())
        .arg(common::root().join("scripts/models/convert_float16.py"))
        .args([&common::root().join("models/mobilenetv2.onnx"), &f16])
        .output()
        .expect("python runs");
    assert!(converted.status.success(), "{}", common::stderr(&converted));
    let report = json_of(&run(
        &dir,
        &[
            "spec",
            "--model",
            s(&f16),
            "--preset",
            "imagenet",
            "--feature-tensor",
            "features",
            "--json",
        ],
    ));
    assert_eq!(report["feature_dim"], 1280);
    let spec = dir.join("mobilenetv2_f16.json");
    let photos = photos();
    let scale = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));

    // Features: ours (tract in float16, widened) against onnxruntime's float16 run, on the
    // PNG photos (JPEG decoders round differently: PIL's libjpeg is not ours).
    let pngs: Vec<PathBuf> = photos
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .cloned()
        .collect();
    let reference = onnxruntime_tensor(&spec, &f16, &pngs, "features");
    let backbone = fastretrain::backbone::Backbone::load(&f16, None, None).unwrap();
    let mut extractor = fastretrain::features::FeatureExtractor::new(backbone).unwrap();
    let mut worst = 0.0f64;
    assert_eq!(reference.len(), 8);
    for (photo, expected) in pngs.iter().zip(&reference) {
        let ours = extractor.sample_file(photo).unwrap();
        let diff = ours
            .iter()
            .zip(expected)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        let relative = diff / scale(expected);
        assert!(relative <= 1e-2, "{}: max |Δ| {diff}", photo.display());
        worst = worst.max(relative);
    }
    eprintln!(
        "float16 MobileNetV2: features vs onnxruntime on {} photos, max |Δ| {:.2e} of their size",
        pngs.len(),
        worst
    );

    // The model's own float16 head: onnxruntime's top-1 on every photo.
    assert_own_head_top1_is_onnxruntimes(&dir, &f16, &spec, &photos);

    // A head learned on it, exported: onnxruntime runs it as predict scores it.
    let adapted = learn_and_export(&dir, &f16);
    let exported = &onnxruntime_scores_with(&spec, &[&adapted], &photos, "torchvision")[0];
    let worst = assert_predict_matches_export(&dir, &photos, exported, 1e-2);
    eprintln!("float16 MobileNetV2: export in onnxruntime vs predict, max |Δ| {worst:.2e}");
}

/// A model halved with its input and output in float16 too (`keep_io_types=False`): the
/// preprocessed values are rounded to float16 as they are fed, learning gives the float32
/// model's accuracy on the zoo folder within a point, and the export keeps the float16 input
/// and output, which onnxruntime runs with predict's scores within float16's rounding.
#[test]
fn a_model_with_float16_input_and_output_learns_and_exports() {
    let dir = common::temp_dir("export-ort-f16-io");
    let root = common::root();
    let converted = Command::new(common::python())
        .arg(root.join("scripts/models/convert_float16.py"))
        .arg("--float16-io")
        .args([
            &common::zoo("torch_dynamo_resnet.onnx"),
            &dir.join("m.onnx"),
        ])
        .output()
        .expect("python runs");
    assert!(converted.status.success(), "{}", common::stderr(&converted));
    common::run_ok(
        &dir,
        &[
            "spec",
            "--model",
            "m.onnx",
            "--preset",
            "imagenet",
            "--feature-tensor",
            "view",
        ],
    );
    let (train, test) = (common::zoo("fashion/train"), common::zoo("fashion/test"));
    common::run_ok(
        &dir,
        &[
            "learn",
            "--state",
            "s.frs",
            "--model",
            "m.onnx",
            "--data",
            s(&train),
            "--lambda",
            "1",
        ],
    );
    let eval = json_of(&run(
        &dir,
        &["eval", "--state", "s.frs", "--data", s(&test), "--json"],
    ));
    let float32 =
        common::json("zoo/reference.json")["models"]["torch_dynamo_resnet"]["test_accuracy"]
            .as_f64()
            .unwrap();
    let accuracy = eval["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - float32).abs() <= 0.01,
        "{accuracy} vs {float32}"
    );
    common::run_ok(
        &dir,
        &["export", "--state", "s.frs", "--out", "adapted.onnx"],
    );
    let photos: Vec<PathBuf> = ["Bag", "Sneaker", "Trouser"]
        .iter()
        .map(|l| common::zoo_image("test", l))
        .collect();
    let exported = &onnxruntime_scores_with(
        &dir.join("m.json"),
        &[&dir.join("adapted.onnx")],
        &photos,
        "torchvision",
    )[0];
    let worst = assert_predict_matches_export(&dir, &photos, exported, 1e-2);
    eprintln!(
        "float16 input and output: accuracy {accuracy:.4} (float32 model {float32:.4}), export \
         in onnxruntime vs predict max |Δ| {worst:.2e}"
    );
}

/// The shipped MobileNetV2 quantized to int8 as onnxruntime documents it (QDQ, per channel,
/// calibrated on the photos: scripts/models/quantize_int8.py): `spec` finds its dense head
/// (a MatMul of a dequantized int8 weight) by itself, its own head gives onnxruntime's top-1
/// on every photo, and a head learned on it is exported and run by onnxruntime (its operators
/// as ONNX defines them) with predict's scores.
#[test]
fn an_int8_mobilenetv2_predicts_as_onnxruntime_on_the_photos() {
    let dir = common::temp_dir("export-ort-int8");
    let int8 = dir.join("mobilenetv2_int8.onnx");
    let photos = photos();
    let root = common::root();
    let quantized = Command::new(common::python())
        .arg(root.join("scripts/models/quantize_int8.py"))
        .args([
            &root.join("models/mobilenetv2.onnx"),
            &root.join("models/mobilenetv2.json"),
            &int8,
        ])
        .args(&photos)
        .output()
        .expect("python runs");
    assert!(quantized.status.success(), "{}", common::stderr(&quantized));
    let report = json_of(&run(
        &dir,
        &[
            "spec",
            "--model",
            s(&int8),
            "--preset",
            "imagenet",
            "--json",
        ],
    ));
    assert_eq!(report["feature_dim"], 1280);
    let spec = dir.join("mobilenetv2_int8.json");

    assert_own_head_top1_is_onnxruntimes(&dir, &int8, &spec, &photos);

    let adapted = learn_and_export(&dir, &int8);
    // Against onnxruntime running the operators as ONNX defines them, on the PNG photos (PIL's
    // libjpeg rounds JPEG pixels differently from our decoder): predict's scores are as close
    // as onnxruntime's own fused int8 kernels are. Both round to int8 on the way, each in its
    // own way (tract fuses some pairs into integer kernels too), so neither is exact.
    let mut args = vec!["predict", "--state", "s.frs", "-k", "10", "--json"];
    args.extend(photos.iter().map(|p| s(p)));
    let by_state = json_of(&run(&dir, &args));
    let onnxruntime = |definition: bool| {
        let mut cmd = Command::new(common::python());
        cmd.arg(root.join("scripts/reference/onnxruntime_run.py"))
            .args(["--pipeline", "torchvision", "--spec", s(&spec), "--models"])
            .arg(&adapted);
        if definition {
            cmd.arg("--no-optimization");
        }
        json_of(&cmd.arg("--images").args(&photos).output().unwrap())["models"][0].clone()
    };
    let (definition, fused) = (onnxruntime(true), onnxruntime(false));
    let labels = definition["labels"].as_array().unwrap().clone();
    let (mut ours, mut theirs) = (0.0f64, 0.0f64);
    for ((p, exact), fused) in by_state
        .as_array()
        .unwrap()
        .iter()
        .zip(definition["scores"].as_array().unwrap())
        .zip(fused["scores"].as_array().unwrap())
    {
        if !p["file"].as_str().unwrap().ends_with(".png") {
            continue;
        }
        let (exact, fused) = (common::f64s(exact), common::f64s(fused));
        for scored in p["top"].as_array().unwrap() {
            let class = labels.iter().position(|l| *l == scored["label"]).unwrap();
            ours = ours.max((scored["score"].as_f64().unwrap() - exact[class]).abs());
            theirs = theirs.max((fused[class] - exact[class]).abs());
        }
    }
    eprintln!(
        "int8 MobileNetV2: own head = onnxruntime's top-1 on {} photos; exported head's scores \
         vs onnxruntime's operators as defined, max |Δ|: predict {ours:.2e}, onnxruntime's fused \
         int8 kernels {theirs:.2e}",
        photos.len()
    );
    assert!(ours <= theirs, "predict {ours} vs fused {theirs}");
}

/// `predict --state s.frs` (run in `dir`, every label) on `photos` against an exported model's
/// scores per onnxruntime (`exported`, one model of [`onnxruntime_scores_with`]), label by label:
/// each within 1e-4 + `relative` × the photo's largest score. Returns the largest |Δ|.
fn assert_predict_matches_export(
    dir: &Path,
    photos: &[PathBuf],
    exported: &serde_json::Value,
    relative: f64,
) -> f64 {
    let labels = exported["labels"].as_array().unwrap();
    let mut args = vec!["predict", "--state", "s.frs", "-k", "1000", "--json"];
    args.extend(photos.iter().map(|p| s(p)));
    let by_state = json_of(&run(dir, &args));
    let mut worst = 0.0f64;
    for (p, scores) in by_state
        .as_array()
        .unwrap()
        .iter()
        .zip(exported["scores"].as_array().unwrap())
    {
        let scores = common::f64s(scores);
        let scale = scores.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for scored in p["top"].as_array().unwrap() {
            let class = labels.iter().position(|l| *l == scored["label"]).unwrap();
            let diff = (scored["score"].as_f64().unwrap() - scores[class]).abs();
            assert!(
                diff <= 1e-4 + relative * scale,
                "{}: {diff}",
                scored["label"]
            );
            worst = worst.max(diff);
        }
    }
    worst
}

/// An inner tensor of `model` on each image per onnxruntime (PIL's 8-bit resize, as a
/// torchvision user feeds it), as f64.
fn onnxruntime_tensor(
    spec: &Path,
    model: &Path,
    images: &[PathBuf],
    tensor: &str,
) -> Vec<Vec<f64>> {
    let out = Command::new(common::python())
        .arg(common::root().join("scripts/reference/onnxruntime_run.py"))
        .args([
            "--pipeline",
            "torchvision",
            "--tensor",
            tensor,
            "--spec",
            s(spec),
            "--models",
        ])
        .arg(model)
        .arg("--images")
        .args(images)
        .output()
        .expect("python runs");
    json_of(&out)["models"][0]["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let mut flat = Vec::new();
            flatten(v, &mut flat);
            flat
        })
        .collect()
}

fn flatten(v: &serde_json::Value, out: &mut Vec<f64>) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.as_f64().unwrap()),
    }
}
