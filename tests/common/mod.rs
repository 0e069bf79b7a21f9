//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path as the `&str` a command-line argument list wants (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

pub fn data(rel: &str) -> PathBuf {
    root().join("tests/data").join(rel)
}

pub fn json(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(data(rel)).expect("reference file");
    serde_json::from_str(&text).expect("reference JSON")
}

/// A JSON file anywhere (a spec a command wrote).
pub fn json_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("JSON file");
    serde_json::from_str(&text).expect("JSON")
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Runs the built binary in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastretrain"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh empty folder under the target directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = root()
        .join("target/test-tmp")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// ‖a − b‖ / ‖b‖.
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

/// The JSON a successful command printed.
pub fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    serde_json::from_str(&stdout(out)).expect("JSON on stdout")
}

/// A small deterministic generator for randomised tests (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Runs the binary and asserts it failed with exit code 2 and `needle` in its message.
pub fn refused(dir: &Path, args: &[&str], needle: &str) -> String {
    let out = run(dir, args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The onnxruntime features of the 2,000 shipped training images (row major, f32), their
/// label numbers and the feature dimension, with `fashion_reference.json`.
pub fn fashion_features() -> (Vec<f32>, Vec<usize>, usize, serde_json::Value) {
    let json = json("fashion_reference.json");
    let dim = json["dim"].as_u64().unwrap() as usize;
    let features: Vec<f32> = std::fs::read(data("fashion_features_f32.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let labels: Vec<usize> = json["train_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(features.len(), labels.len() * dim);
    (features, labels, dim, json)
}

/// Starts `cmd` and SIGKILLs it at a random moment in [0, 1.2 × `run_time`] (`run_time`: an
/// uninterrupted run), so some runs finish first. Returns the exit status of a run that
/// finished by itself, None for a killed one.
pub fn run_or_kill(
    cmd: &mut Command,
    run_time: std::time::Duration,
    rng: &mut Rng,
) -> Option<std::process::ExitStatus> {
    let mut child = cmd.spawn().expect("binary starts");
    let wait = rng.below(run_time.as_micros() as u64 * 6 / 5);
    std::thread::sleep(std::time::Duration::from_micros(wait));
    let finished = child.try_wait().unwrap().is_some();
    if !finished {
        child.kill().unwrap(); // SIGKILL
    }
    let status = child.wait().unwrap();
    finished.then_some(status)
}

/// The Python interpreter with the pinned packages (onnxruntime, scikit-learn…): the venv
/// `scripts/ci/venv.sh` makes on first use (from PyPI), or `FASTRETRAIN_PYTHON`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("FASTRETRAIN_PYTHON") {
        return p.into();
    }
    let out = Command::new(root().join("scripts/ci/venv.sh"))
        .output()
        .expect("scripts/ci/venv.sh runs");
    assert!(
        out.status.success(),
        "scripts/ci/venv.sh failed (it installs the pinned packages from PyPI): {}",
        stderr(&out)
    );
    stdout(&out).trim().into()
}

/// A copy of zoo model `name` in `dir` (so that `spec` writes beside it), with its spec written
/// by `fastretrain spec` as a user would, naming the penultimate tensor alone (the references
/// of scripts/reference/make_zoo_reference.py are its features; the automatic recipe is checked in
/// tests/recipe_reference.rs); returns the model's file name.
pub fn zoo_model_with_spec(dir: &Path, name: &str) -> String {
    let file = format!("{name}.onnx");
    std::fs::copy(data("zoo").join(&file), dir.join(&file)).unwrap();
    // A model that keeps its weights in a side file travels with it.
    let weights = format!("{file}.data");
    if data("zoo").join(&weights).exists() {
        std::fs::copy(data("zoo").join(&weights), dir.join(&weights)).unwrap();
    }
    let info = json("zoo/models.json")[name].clone();
    let mut args = vec![
        "spec".to_string(),
        "--model".into(),
        file.clone(),
        "--preset".into(),
        info["preset"].as_str().unwrap().into(),
        "--feature-tensor".into(),
        info["feature_tensor"].as_str().unwrap().into(),
        "--json".into(),
    ];
    if let Some(size) = info["size"].as_u64() {
        args.extend(["--size".into(), size.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = json_of(&run(dir, &args));
    assert_eq!(report["written"], true, "{name}");
    assert_eq!(report["feature_tensor"], info["feature_tensor"], "{name}");
    assert_eq!(report["feature_dim"], info["feature_dim"], "{name}");
    assert_eq!(report["resize_filter"], "bilinear-antialias-u8", "{name}");
    file
}

/// The first image (sorted) of `label` in the zoo's image folder split `split` (train, test).
pub fn zoo_image(split: &str, label: &str) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("zoo/fashion").join(split).join(label))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.remove(0)
}

/// Asserts that `extractor` gives onnxruntime's features (within 1e-4) on the shipped photos of
/// `backbone_reference.json` (scripts/reference/make_test_vectors.py); `what` names the backbone.
pub fn assert_photo_features_match_onnxruntime(
    extractor: &mut fastretrain::features::FeatureExtractor,
    what: &str,
) {
    let reference = json("backbone_reference.json");
    let images = reference["images"].as_array().unwrap();
    assert!(images.len() >= 8);
    for image in images {
        let path = data(image["file"].as_str().unwrap());
        let expected = f64s(&image["features"]);
        let got = extractor.sample_file(&path).unwrap();
        let max_diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(
            max_diff < 1e-4,
            "{}: max |{what} − onnxruntime| = {max_diff}",
            path.display()
        );
    }
}

/// root/<x|y>/*.png from the shipped photos: the first four are "x", the rest "y".
pub fn photo_folder(dir: &Path) -> PathBuf {
    let root = dir.join("photos");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(data("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    photos.sort();
    for (i, p) in photos.iter().enumerate() {
        let label = if i < 4 { "x" } else { "y" };
        std::fs::create_dir_all(root.join(label)).unwrap();
        std::fs::copy(p, root.join(label).join(p.file_name().unwrap())).unwrap();
    }
    root
}

/// The 16×16 toy CNN (scripts/models/make_tiny_models.py) as a command-line argument.
pub fn tiny_model() -> String {
    data("models/tiny_cnn.onnx").display().to_string()
}

/// A refused command: exit code 2, one `error: ` line containing `needle`, no panic.
pub fn assert_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

/// A file of the exporter zoo (tests/data/zoo, scripts/models/make_zoo.py).
pub fn zoo(rel: &str) -> PathBuf {
    data("zoo").join(rel)
}

/// Runs the binary in `dir` and returns its stdout; fails the test if the command failed.
pub fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}
