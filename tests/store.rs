//! The feature store end to end (tiny test CNN on the shipped Fashion-MNIST subset): crash
//! safety of `extract` (SIGKILL and truncation at any byte), f16 vs f32, fitting from the
//! store equals learning from images, forget and decay, and bad input.

use crate::common;

use common::s;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{json_of, refused, run};
use fastretrain::state::State;
use fastretrain::store::{FeatureBatches, FeatureStore, Precision, StoreHeader, StoreWriter};

fn tiny() -> PathBuf {
    common::data("models/tiny_cnn.onnx")
}

fn subset() -> PathBuf {
    common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz")
}

fn extract(dir: &Path, store: &Path, extra: &[&str]) -> serde_json::Value {
    let (model, data) = (tiny(), subset());
    let mut args = vec![
        "extract",
        "--json",
        "--store",
        s(store),
        "--model",
        s(&model),
        "--data",
        s(&data),
    ];
    args.extend_from_slice(extra);
    json_of(&run(dir, &args))
}

#[test]
fn killed_extract_resumes_to_a_store_identical_to_an_uninterrupted_run() {
    let kills_wanted: u64 = std::env::var("STORE_KILLS")
        .unwrap_or_else(|_| "12".into())
        .parse()
        .unwrap();
    let dir = common::temp_dir("store-kill");
    let reference = dir.join("reference.frf");
    let args = |store: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fastretrain"));
        cmd.args([
            "extract",
            "--limit",
            "1000",
            "--chunk-rows",
            "32",
            "--store",
        ])
        .arg(store)
        .arg("--model")
        .arg(tiny())
        .arg("--data")
        .arg(subset())
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        cmd
    };
    let started = Instant::now();
    assert!(args(&reference).status().unwrap().success());
    let run_time = started.elapsed();
    let expected = std::fs::read(&reference).unwrap();

    let mut rng = common::Rng(0x5eed ^ std::process::id() as u64);
    let (mut kills, mut rounds) = (0, 0);
    let store = dir.join("killed.frf");
    while kills < kills_wanted {
        let _ = std::fs::remove_file(&store);
        rounds += 1;
        loop {
            let finished = common::run_or_kill(&mut args(&store), run_time, &mut rng);
            if finished.is_none() {
                kills += 1;
            }
            if let Some(status) = finished {
                assert!(status.success());
                assert!(
                    std::fs::read(&store).unwrap() == expected,
                    "round {rounds}: resumed store differs from the uninterrupted one"
                );
                break;
            }
        }
    }
    eprintln!("store kill test: {kills} SIGKILLs over {rounds} rounds, all resumed bit-identical");
}

#[test]
fn a_store_cut_at_any_byte_is_refused_then_completed_exactly_by_extract() {
    let dir = common::temp_dir("store-cut");
    let reference = dir.join("reference.frf");
    extract(&dir, &reference, &["--limit", "150", "--chunk-rows", "32"]);
    let expected = std::fs::read(&reference).unwrap();
    let header_end = 16 + u32::from_le_bytes(expected[12..16].try_into().unwrap()) as usize + 4;
    let cut_store = dir.join("cut.frf");
    let mut cuts: Vec<usize> = (header_end..expected.len()).step_by(61).collect();
    cuts.extend([header_end, header_end + 1, expected.len() - 1]);
    for cut in cuts {
        std::fs::write(&cut_store, &expected[..cut]).unwrap();
        let complete_chunks_only = FeatureStore::open(&cut_store).is_ok();
        if !complete_chunks_only {
            refused(
                &dir,
                &["eval", "--state", "x.frs", "--store", s(&cut_store)],
                "run the same `extract` again",
            );
        }
        extract(&dir, &cut_store, &["--limit", "150"]);
        assert!(
            std::fs::read(&cut_store).unwrap() == expected,
            "cut at byte {cut}: completed store differs"
        );
    }
}

#[test]
fn fitting_from_the_store_equals_learning_from_images_and_f16_halves_the_bytes() {
    let dir = common::temp_dir("store-fit");
    let f32_store = dir.join("f32.frf");
    let report = extract(&dir, &f32_store, &["--limit", "300", "--precision", "f32"]);
    assert_eq!(report["store"]["rows"], 300);
    let learned = dir.join("learned.frs");
    json_of(&run(
        &dir,
        &[
            "learn",
            "--json",
            "--state",
            s(&learned),
            "--model",
            s(&tiny()),
            "--data",
            s(&subset()),
            "--limit",
            "300",
        ],
    ));
    let from_store = dir.join("from_store.frs");
    json_of(&run(
        &dir,
        &[
            "fit",
            "--json",
            "--state",
            s(&from_store),
            "--store",
            s(&f32_store),
        ],
    ));
    let (a, b) = (
        State::load(&learned).unwrap(),
        State::load(&from_store).unwrap(),
    );
    assert_eq!(a.statistics_digest(), b.statistics_digest());
    assert_eq!(
        a.sources(),
        b.sources(),
        "the store's read counts carry over"
    );
    assert_eq!(a.head().unwrap().weights, b.head().unwrap().weights);

    // f16: half the feature bytes, every value the f16 rounding of the f32 one.
    let f16_store = dir.join("f16.frf");
    json_of(&run(
        &dir,
        &[
            "convert",
            "--json",
            "--store",
            s(&f32_store),
            "--out",
            s(&f16_store),
            "--precision",
            "f16",
        ],
    ));
    let (full, half) = (
        FeatureStore::open(&f32_store).unwrap(),
        FeatureStore::open(&f16_store).unwrap(),
    );
    let collect = |st: &FeatureStore| {
        let mut all = Vec::new();
        st.for_each_batch(64, &mut |f, _| {
            all.extend_from_slice(f);
            Ok(())
        })
        .unwrap();
        all
    };
    let rounded: Vec<f32> = collect(&full)
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(collect(&half), rounded);
    let feature_bytes = |st: &FeatureStore| st.bytes() as f64 - 300.0 * 20.0;
    assert!(feature_bytes(&half) < 0.6 * feature_bytes(&full));

    // Every method fits from the f16 store and evaluates on stored features.
    for method in [
        vec!["--method", "gram"],
        vec!["--method", "block-rls"],
        vec!["--method", "step", "--passes", "2"],
        vec![
            "--method",
            "recompute",
            "--hidden",
            "8,6",
            "--activation",
            "sin",
        ],
    ] {
        let state = dir.join(format!("{}.frs", method[1]));
        let mut args = vec![
            "fit",
            "--json",
            "--state",
            s(&state),
            "--store",
            s(&f16_store),
        ];
        args.extend(method.iter().copied());
        let fit = json_of(&run(&dir, &args));
        assert_eq!(fit["method"], method[1]);
        let eval = json_of(&run(
            &dir,
            &[
                "eval",
                "--json",
                "--state",
                s(&state),
                "--store",
                s(&f32_store),
            ],
        ));
        assert_eq!(eval["samples"], 300);
        assert!(
            eval["accuracy"].as_f64().unwrap() > 0.2,
            "{}: {eval}",
            method[1]
        );
    }
}

/// Writes an f32 store with one NaN feature (the writer refuses NaN, so the bytes are patched
/// and the chunk checksum recomputed, as a buggy or hostile producer could).
fn store_with_nan(dir: &Path) -> PathBuf {
    let good = dir.join("good.frf");
    extract(dir, &good, &["--limit", "40", "--precision", "f32"]);
    let mut bytes = std::fs::read(&good).unwrap();
    let header_end = 16 + u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize + 4;
    let meta_len = u32::from_le_bytes(bytes[header_end + 4..header_end + 8].try_into().unwrap());
    let features = header_end + 16 + meta_len as usize;
    bytes[features..features + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let body_end = features + 40 * 4 * 4;
    let crc = crc32fast::hash(&bytes[header_end + 16..body_end]);
    bytes[header_end + 12..header_end + 16].copy_from_slice(&crc.to_le_bytes());
    let nan = dir.join("nan.frf");
    std::fs::write(&nan, bytes).unwrap();
    nan
}

#[test]
fn bad_stores_are_refused_clearly_and_change_nothing() {
    let dir = common::temp_dir("store-bad");
    let store = dir.join("tiny.frf");
    extract(&dir, &store, &["--limit", "100", "--chunk-rows", "32"]);
    let state = dir.join("state.frs");
    json_of(&run(
        &dir,
        &["fit", "--json", "--state", s(&state), "--store", s(&store)],
    ));
    let before = std::fs::read(&state).unwrap();
    let untouched = || assert!(std::fs::read(&state).unwrap() == before, "state changed");

    // A store from another backbone: refused by fit, forget, eval, and by extract appending.
    let other = dir.join("other.frf");
    let model_b = common::data("models/tiny_cnn_b.onnx");
    json_of(&run(
        &dir,
        &[
            "extract",
            "--json",
            "--store",
            s(&other),
            "--model",
            s(&model_b),
            "--data",
            s(&subset()),
            "--limit",
            "40",
        ],
    ));
    for cmd in [
        vec!["fit", "--state", s(&state), "--store", s(&other)],
        vec!["forget", "--state", s(&state), "--store", s(&other)],
        vec!["eval", "--state", s(&state), "--store", s(&other)],
    ] {
        refused(&dir, &cmd, "another backbone");
        untouched();
    }
    refused(
        &dir,
        &[
            "extract",
            "--store",
            s(&store),
            "--model",
            s(&model_b),
            "--data",
            s(&subset()),
        ],
        "another backbone",
    );

    // A truncated chunk, a flipped bit in the middle, NaN features, an empty store.
    let bytes = std::fs::read(&store).unwrap();
    let truncated = dir.join("truncated.frf");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let flipped = dir.join("flipped.frf");
    let mut f = bytes.clone();
    let middle = f.len() / 2;
    f[middle] ^= 0x10;
    std::fs::write(&flipped, f).unwrap();
    let nan = store_with_nan(&dir);
    let empty = dir.join("empty.frf");
    let header = FeatureStore::open(&store).unwrap().header().clone();
    drop(
        StoreWriter::create(
            &empty,
            StoreHeader {
                precision: Precision::F16,
                ..header
            },
        )
        .unwrap(),
    );
    let cases = [
        (&truncated, "run the same `extract` again"),
        (&flipped, "checksum mismatch"),
        (&nan, "NaN or infinite"),
    ];
    for (bad, problem) in cases {
        for cmd in ["fit", "forget", "eval"] {
            refused(
                &dir,
                &[cmd, "--state", s(&state), "--store", s(bad)],
                problem,
            );
            untouched();
        }
        refused(
            &dir,
            &[
                "fit",
                "--state",
                s(&state),
                "--store",
                s(bad),
                "--method",
                "block-rls",
                "--lambda",
                "1",
            ],
            problem,
        );
        untouched();
    }
    refused(
        &dir,
        &["fit", "--state", s(&state), "--store", s(&empty)],
        "empty",
    );
    refused(
        &dir,
        &["eval", "--state", s(&state), "--store", s(&empty)],
        "no samples",
    );
    untouched();

    // Bad method settings.
    refused(
        &dir,
        &[
            "fit",
            "--state",
            s(&state),
            "--store",
            s(&store),
            "--method",
            "recompute",
            "--activation",
            "relu",
        ],
        "has no inverse",
    );
    refused(
        &dir,
        &[
            "fit",
            "--state",
            s(&state),
            "--store",
            s(&store),
            "--method",
            "recompute",
            "--activation",
            "tanh",
        ],
        "unknown activation",
    );
    refused(
        &dir,
        &["fit", "--state", s(&state), "--method", "block-rls"],
        "give --store",
    );
    refused(
        &dir,
        &["fit", "--state", s(&state), "--method", "newton"],
        "unknown method",
    );
    untouched();
    // A ReLU head can have its output layer refit on random hidden features.
    let relu = dir.join("relu.frs");
    json_of(&run(
        &dir,
        &[
            "fit",
            "--json",
            "--state",
            s(&relu),
            "--store",
            s(&store),
            "--method",
            "recompute",
            "--activation",
            "relu",
            "--iterations",
            "0",
            "--hidden",
            "16",
        ],
    ));
}

/// An image folder `root/<label>/*.png` from the shipped test photos.
fn folder(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (label, name) in files {
        std::fs::create_dir_all(root.join(label)).unwrap();
        std::fs::copy(
            common::data("images").join(name),
            root.join(label).join(name),
        )
        .unwrap();
    }
    root.into()
}

#[test]
fn forget_removes_exactly_what_was_learned_and_decay_blocks_it() {
    let dir = common::temp_dir("forget");
    let a = folder(
        &dir.join("a"),
        &[
            ("x", "imagenet_00_243.png"),
            ("x", "imagenet_01_559.png"),
            ("y", "imagenet_02_438.png"),
            ("y", "imagenet_03_990.png"),
            ("x", "imagenet_04_949.png"),
        ],
    );
    let b = folder(
        &dir.join("b"),
        &[
            ("x", "imagenet_05_853.png"),
            ("z", "imagenet_08_915.png"),
            ("z", "imagenet_09_455.png"),
        ],
    );
    let model = tiny();
    let learn = |state: &Path, data: &Path, extra: &[&str]| {
        let mut args = vec![
            "learn",
            "--json",
            "--lambda",
            "1",
            "--state",
            s(state),
            "--model",
            s(&model),
            "--data",
            s(data),
        ];
        args.extend_from_slice(extra);
        json_of(&run(&dir, &args))
    };
    let only_a = dir.join("a.frs");
    learn(&only_a, &a, &[]);
    let both = dir.join("both.frs");
    learn(&both, &a, &[]);
    learn(&both, &b, &[]);
    let forgot = json_of(&run(
        &dir,
        &[
            "forget",
            "--json",
            "--lambda",
            "1",
            "--state",
            s(&both),
            "--data",
            s(&b),
        ],
    ));
    assert_eq!(forgot["forgotten"], 3);
    let (x, y) = (State::load(&both).unwrap(), State::load(&only_a).unwrap());
    assert_eq!(x.stats().labels(), y.stats().labels(), "label z is gone");
    let (gx, gy) = (x.stats().to_record(), y.stats().to_record());
    assert_eq!(gx.samples, gy.samples);
    let err = common::relative_error(&gx.gram_lower, &gy.gram_lower);
    assert!(err < 1e-9, "G after forget: {err:e}");
    let err = common::relative_error(&gx.cross, &gy.cross);
    assert!(err < 1e-9, "B after forget: {err:e}");
    let err = common::relative_error(&x.head().unwrap().weights, &y.head().unwrap().weights);
    assert!(err < 1e-6, "head after forget: {err:e}");
    assert_eq!(
        x.sources(),
        y.sources(),
        "b's read record is dropped: learning it again reads it"
    );

    // Forgetting again: z is unknown now; the state is unchanged.
    let before = std::fs::read(&both).unwrap();
    refused(
        &dir,
        &["forget", "--state", s(&both), "--data", s(&b)],
        "not known",
    );
    assert!(std::fs::read(&both).unwrap() == before);

    // A decayed state refuses to forget.
    let decayed = dir.join("decayed.frs");
    learn(&decayed, &a, &["--decay", "0.9"]);
    refused(
        &dir,
        &["forget", "--state", s(&decayed), "--data", s(&a)],
        "decay",
    );
    refused(
        &dir,
        &[
            "learn",
            "--state",
            s(&decayed),
            "--model",
            s(&tiny()),
            "--data",
            s(&b),
            "--decay",
            "1.5",
        ],
        "(0, 1]",
    );
}
