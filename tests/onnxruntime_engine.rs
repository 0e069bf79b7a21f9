//! The optional onnxruntime engine (`--features onnxruntime`, `--engine onnxruntime`) gives
//! tract's features within 1e-4, so states learned by one engine are used by the other and the
//! demo's accuracy is the same; a missing library is a clear error. The library is the one the
//! onnxruntime PyPI wheel ships (the test venv's, scripts/ci/venv.sh), or $ORT_DYLIB_PATH.
#![cfg(feature = "onnxruntime")]

use crate::common;

use std::path::{Path, PathBuf};

use fastretrain::backbone::{Backbone, Engine, LoadOptions};
use fastretrain::features::FeatureExtractor;

/// The venv's libonnxruntime.so.* (or $ORT_DYLIB_PATH).
fn library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return path.into();
    }
    let python = common::python();
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .expect("python runs");
    let capi = PathBuf::from(common::stdout(&out).trim()).join("capi");
    std::fs::read_dir(&capi)
        .unwrap_or_else(|e| panic!("{}: {e}", capi.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libonnxruntime.so.")
        })
        .unwrap_or_else(|| panic!("no libonnxruntime.so.* in {}", capi.display()))
}

fn extractor(model: &Path, engine: Engine, tensor: Option<&str>) -> FeatureExtractor {
    fastretrain::backbone::set_engine(Engine::Tract, Some(library()));
    let backbone = Backbone::load_with(
        model,
        None,
        &LoadOptions {
            engine: Some(engine),
            feature_tensor: tensor.map(String::from),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(backbone.engine(), engine);
    FeatureExtractor::with_workers(backbone, 1).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn both_engines_give_the_same_features_on_the_reference_photos() {
    let model = common::root().join("models/mobilenetv2.onnx");
    // The default recipe (five tensors, four of them pooled), then the penultimate tensor alone.
    let mut tract = extractor(&model, Engine::Tract, None);
    let mut ort = extractor(&model, Engine::OnnxRuntime, None);
    assert_eq!(ort.backbone().fingerprint(), tract.backbone().fingerprint());
    assert!(
        ort.backbone()
            .engine_description()
            .starts_with("onnxruntime (")
    );
    let reference = common::json("backbone_reference.json");
    let photos: Vec<PathBuf> = reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| common::data(i["file"].as_str().unwrap()))
        .collect();
    assert!(photos.len() >= 8);
    for photo in &photos {
        let (a, b) = (
            tract.sample_file(photo).unwrap(),
            ort.sample_file(photo).unwrap(),
        );
        let d = max_diff(&a, &b);
        assert!(
            d < 1e-4,
            "{}: max |tract − onnxruntime engine| = {d}",
            photo.display()
        );
    }
    let mut ort_plain = extractor(&model, Engine::OnnxRuntime, Some("features"));
    common::assert_photo_features_match_onnxruntime(&mut ort_plain, "the onnxruntime engine");
}

#[test]
fn another_family_and_layout_runs_on_both_engines() {
    // tf2onnx Keras, NHWC input, its own preprocessing.
    let dir = common::temp_dir("ort-keras");
    let file = common::zoo_model_with_spec(&dir, "keras_nhwc");
    let model = dir.join(file);
    let photo = common::zoo_image("test", "Sneaker");
    let recipe = Backbone::load(&model, None, None)
        .unwrap()
        .recipe()
        .descriptor();
    let mut tract = extractor(&model, Engine::Tract, Some(&recipe));
    let mut ort = extractor(&model, Engine::OnnxRuntime, Some(&recipe));
    let (a, b) = (
        tract.sample_file(&photo).unwrap(),
        ort.sample_file(&photo).unwrap(),
    );
    assert!(a.len() > 32, "{}", a.len());
    let d = max_diff(&a, &b);
    assert!(
        d < 1e-4,
        "keras_nhwc: max |tract − onnxruntime engine| = {d}"
    );
}

/// The onnxruntime engine on the models carried to boards: a float16 model (its input and
/// features cast by nodes the engine adds) within float16's rounding of tract's, a model with
/// its weights in a side file as tract. An int8 QDQ model runs, but on onnxruntime's fused
/// int8 kernels, which are not the ONNX operators' definition that tract computes (docs/SPEC.md):
/// only its shape is compared.
#[test]
fn models_in_float16_int8_and_side_files_run_on_the_onnxruntime_engine() {
    for (name, tolerance) in [
        ("torch_dynamo_resnet_f16", Some(1e-2)),
        ("torch_legacy_vgg_external", Some(1e-4)),
        ("keras_nhwc_int8", None),
    ] {
        let dir = common::temp_dir(&format!("ort-{name}"));
        let model = dir.join(common::zoo_model_with_spec(&dir, name));
        let photo = common::zoo_image("test", "Sneaker");
        let mut tract = extractor(&model, Engine::Tract, None);
        let mut ort = extractor(&model, Engine::OnnxRuntime, None);
        let (a, b) = (
            tract.sample_file(&photo).unwrap(),
            ort.sample_file(&photo).unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{name}");
        assert!(b.iter().all(|v| v.is_finite()), "{name}");
        if let Some(tolerance) = tolerance {
            let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = max_diff(&a, &b);
            assert!(
                d <= tolerance * scale.max(1.0),
                "{name}: max |tract − onnxruntime engine| = {d}"
            );
            eprintln!("{name}: max |tract − onnxruntime engine| = {d:e}");
        }
    }
}

#[test]
fn a_state_learned_by_one_engine_is_used_by_the_other() {
    let dir = common::temp_dir("ort-state");
    let lib = library();
    let train = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let test = common::root().join("data/fashion-mnist/t10k-images-idx3-ubyte.gz");
    let ort = [
        "--engine",
        "onnxruntime",
        "--onnxruntime-lib",
        common::s(&lib),
    ];
    let learn = |engine: &[&str], state: &str| {
        let mut args = engine.to_vec();
        args.extend([
            "learn",
            "--json",
            "--state",
            state,
            "--data",
            common::s(&train),
            "--limit",
            "120",
        ]);
        common::json_of(&common::run(&dir, &args))
    };
    let by_ort = learn(&ort, "ort.frs");
    assert!(
        by_ort["engine"]
            .as_str()
            .unwrap()
            .starts_with("onnxruntime ("),
        "{by_ort}"
    );
    let by_tract = learn(&[], "tract.frs");
    assert!(by_tract["engine"].as_str().unwrap().starts_with("tract "));
    assert_eq!(by_ort["fit"]["lambda"], by_tract["fit"]["lambda"]);
    // Same backbone: the two states merge, and each engine evaluates either state alike. They
    // learned the same records, so a plain merge is refused (every sample would count twice);
    // told the sources are distinct, the two engines' statistics add up.
    common::refused(
        &dir,
        &["merge", "--out", "both.frs", "ort.frs", "tract.frs"],
        "both states learned",
    );
    let merged = common::run(
        &dir,
        &[
            "merge",
            "--out",
            "both.frs",
            "ort.frs",
            "tract.frs",
            "--distinct-sources",
        ],
    );
    assert!(merged.status.success(), "{}", common::stderr(&merged));
    let eval = |engine: &[&str], state: &str| {
        let mut args = engine.to_vec();
        args.extend([
            "eval",
            "--json",
            "--state",
            state,
            "--data",
            common::s(&test),
            "--limit",
            "100",
        ]);
        common::json_of(&common::run(&dir, &args))["accuracy"]
            .as_f64()
            .unwrap()
    };
    let accuracy = eval(&[], "ort.frs");
    assert!(accuracy > 0.5, "{accuracy}");
    assert_eq!(eval(&ort, "ort.frs"), accuracy);
    assert_eq!(eval(&ort, "tract.frs"), eval(&[], "tract.frs"));
    let info = common::json_of(&common::run(
        &dir,
        &[&ort[..], &["info", "--json", "--state", "ort.frs"]].concat(),
    ));
    assert_eq!(info["engine"], "onnxruntime");
    assert_eq!(info["engines_built"][1], "onnxruntime");
}

#[test]
fn the_demo_gives_the_same_accuracy_on_both_engines() {
    let dir = common::temp_dir("ort-demo");
    let lib = library();
    let out = common::run(
        &dir,
        &[
            "--engine",
            "onnxruntime",
            "--onnxruntime-lib",
            common::s(&lib),
            "demo",
            "--json",
        ],
    );
    let report = common::json_of(&out);
    // tests/cli.rs: the tract demo's 0.882 equals NumPy's ridge on onnxruntime features.
    assert_eq!(report["eval"]["accuracy"].as_f64().unwrap(), 0.882);
    assert!(
        report["learn"]["engine"]
            .as_str()
            .unwrap()
            .starts_with("onnxruntime")
    );
}

#[test]
fn a_missing_library_or_a_pack_is_a_clear_error() {
    let dir = common::temp_dir("ort-missing");
    let train = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let message = common::refused(
        &dir,
        &[
            "--engine",
            "onnxruntime",
            "--onnxruntime-lib",
            "/nonexistent/libonnxruntime.so",
            "learn",
            "--state",
            "s.frs",
            "--data",
            common::s(&train),
            "--limit",
            "4",
        ],
        "--onnxruntime-lib",
    );
    assert!(
        message.contains("/nonexistent/libonnxruntime.so"),
        "{message}"
    );
    assert!(!dir.join("s.frs").exists());
    // A pack is tract's format.
    let pack = common::run(
        &dir,
        &[
            "pack",
            "--model",
            common::s(&common::root().join("models/mobilenetv2.onnx")),
            "--out",
            "m.frpack",
        ],
    );
    assert!(pack.status.success(), "{}", common::stderr(&pack));
    let lib = library();
    common::refused(
        &dir,
        &[
            "--engine",
            "onnxruntime",
            "--onnxruntime-lib",
            common::s(&lib),
            "learn",
            "--state",
            "p.frs",
            "--model",
            "m.frpack",
            "--data",
            common::s(&train),
            "--limit",
            "4",
        ],
        "a pack is a tract model",
    );
}
