//! End-to-end tests of the `fastretrain` binary: the demo against the NumPy reference, the
//! learn / predict / eval / info / fit / merge chain, and bad input (exit code 2, a clear
//! message, no panic, no change to an existing state).

mod common;

use std::path::{Path, PathBuf};

use common::{json_of, run, stderr, stdout};
use fastretrain::state::State;

/// root/<x|y>/*.png from the shipped photos: the first four are "x", the rest "y".
fn photo_folder(dir: &Path) -> PathBuf {
    let root = dir.join("photos");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(common::data("images"))
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

fn tiny_model() -> String {
    common::data("models/tiny_cnn.onnx").display().to_string()
}

fn assert_error(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn demo_reaches_the_numpy_reference_accuracy() {
    // NumPy ridge + GCV on onnxruntime features of the shipped spec's recipe
    // (scripts/reference/make_recipe_vectors.py).
    let reference = common::json("recipe_reference.json")["demo"].clone();
    let expected = reference["test_accuracy_gcv"].as_f64().unwrap();
    let out = run(&common::root(), &["demo", "--json"]);
    let report = json_of(&out);
    assert_eq!(report["learn"]["samples"], 2000);
    assert_eq!(report["eval"]["samples"], 1000);
    let accuracy = report["eval"]["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - expected).abs() <= 0.005,
        "demo accuracy {accuracy} vs NumPy ridge+GCV {expected}"
    );
}

#[test]
fn learn_predict_eval_info_fit_on_an_image_folder() {
    let dir = common::temp_dir("chain");
    let folder = photo_folder(&dir);
    let state = dir.join("photos.frs");
    let (folder_s, state_s) = (folder.to_str().unwrap(), state.to_str().unwrap());
    let model = common::root().join("models/mobilenetv2.onnx");
    let model_s = model.to_str().unwrap();

    let learned = json_of(&run(
        &dir,
        &[
            "learn", "--state", state_s, "--data", folder_s, "--model", model_s, "--lambda",
            "0.01", "--json",
        ],
    ));
    assert_eq!(learned["samples"], 8);
    assert_eq!(learned["labels"], serde_json::json!(["x", "y"]));

    // A nearly unregularised head reproduces its own training labels.
    let photo = folder
        .join("y")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let predicted = json_of(&run(
        &dir,
        &[
            "predict",
            "--state",
            state_s,
            "-k",
            "2",
            "--json",
            photo.to_str().unwrap(),
        ],
    ));
    assert_eq!(predicted[0]["top"][0]["label"], "y");
    assert_eq!(predicted[0]["top"].as_array().unwrap().len(), 2);

    let evaluated = run(
        &dir,
        &[
            "eval",
            "--state",
            state_s,
            "--data",
            folder_s,
            "--min-accuracy",
            "1.0",
        ],
    );
    assert!(evaluated.status.success(), "{}", stderr(&evaluated));
    assert!(stdout(&evaluated).contains("accuracy 1.0000 on 8 samples"));

    // Swapped labels: accuracy 0, so the bar fails with exit code 1.
    let swapped = dir.join("swapped");
    std::fs::create_dir_all(&swapped).unwrap();
    std::fs::rename(folder.join("x"), swapped.join("y")).unwrap();
    std::fs::rename(folder.join("y"), swapped.join("x")).unwrap();
    let failed = run(
        &dir,
        &[
            "eval",
            "--state",
            state_s,
            "--data",
            swapped.to_str().unwrap(),
            "--min-accuracy",
            "0.5",
        ],
    );
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(stderr(&failed).contains("below --min-accuracy"));

    // Learning again adds to the state.
    json_of(&run(
        &dir,
        &[
            "learn",
            "--state",
            state_s,
            "--data",
            swapped.to_str().unwrap(),
            "--json",
        ],
    ));
    let info = json_of(&run(&dir, &["info", "--state", state_s, "--json"]));
    assert_eq!(info["samples"], 16.0);
    assert_eq!(info["head"]["lambda_source"], "Gcv");

    let fitted = json_of(&run(
        &dir,
        &["fit", "--state", state_s, "--lambda", "5", "--json"],
    ));
    assert_eq!(fitted["lambda"], 5.0);
    let info = json_of(&run(&dir, &["info", "--state", state_s, "--json"]));
    assert_eq!(info["head"]["lambda"], 5.0);
}

/// `learn`, `eval` and `extract` spread images over `--threads` workers: the result must be
/// the one-image-at-a-time result exactly (same rows, same order, same labels), including
/// runs that do not fill the last batch and a skipped corrupt image between good ones.
#[test]
fn several_threads_give_the_one_thread_result() {
    let dir = common::temp_dir("threads");
    let model = tiny_model();
    let train = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let test = common::root().join("data/fashion-mnist/t10k-images-idx3-ubyte.gz");
    let mut evals = Vec::new();
    let mut grams = Vec::new();
    for threads in ["1", "3"] {
        let state = dir.join(format!("t{threads}.frs"));
        let state_s = state.to_str().unwrap();
        let learned = json_of(&run(
            &dir,
            &[
                "--threads",
                threads,
                "learn",
                "--json",
                "--state",
                state_s,
                "--model",
                &model,
                "--data",
                common::s(&train),
                "--limit",
                "150",
                "--lambda",
                "1",
            ],
        ));
        assert_eq!(learned["samples"], 150);
        let eval = json_of(&run(
            &dir,
            &[
                "--threads",
                threads,
                "eval",
                "--json",
                "--state",
                state_s,
                "--data",
                common::s(&test),
                "--limit",
                "70",
            ],
        ));
        evals.push((eval["accuracy"].clone(), eval["confusion"].clone()));
        let stats = State::load(&state).unwrap().stats;
        assert_eq!(stats.samples(), 150.0);
        grams.push((stats.gram(), stats.labels().to_vec()));
    }
    assert_eq!(evals[0], evals[1]);
    assert_eq!(grams[0].1, grams[1].1);
    let (a, b) = (&grams[0].0, &grams[1].0);
    let mut worst = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            worst = worst.max((a[(i, j)] - b[(i, j)]).abs() / a[(i, j)].abs().max(1e-12));
        }
    }
    assert!(
        worst <= 1e-12,
        "Gram matrices differ by {worst:e} (relative)"
    );

    let folder = photo_folder(&dir);
    std::fs::write(folder.join("x/imagenet_01_zbroken.png"), b"not an image").unwrap();
    let stores: Vec<Vec<u8>> = ["1", "3"]
        .iter()
        .map(|threads| {
            let store = dir.join(format!("s{threads}.frf"));
            let out = run(
                &dir,
                &[
                    "--threads",
                    threads,
                    "extract",
                    "--json",
                    "--store",
                    store.to_str().unwrap(),
                    "--model",
                    &model,
                    "--data",
                    folder.to_str().unwrap(),
                    "--skip-bad",
                    "--chunk-rows",
                    "3",
                ],
            );
            let report = json_of(&out);
            assert_eq!(report["extract"]["rows"], 8, "{report}");
            assert_eq!(report["extract"]["skipped"].as_array().unwrap().len(), 1);
            std::fs::read(&store).unwrap()
        })
        .collect();
    assert!(stores[0] == stores[1], "the stores differ");
}

#[test]
fn merged_states_equal_learning_the_union() {
    let dir = common::temp_dir("merge");
    let folder = photo_folder(&dir);
    let model = tiny_model();
    let learn = |data: &Path, state: &str| {
        let out = run(
            &dir,
            &[
                "learn",
                "--state",
                state,
                "--data",
                data.to_str().unwrap(),
                "--model",
                &model,
                "--lambda",
                "0.5",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    // Split by label: device A saw only "x", device B only "y".
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::rename(folder.join("x"), a.join("x")).unwrap();
    std::fs::rename(folder.join("y"), b.join("y")).unwrap();
    learn(&a, "a.frs");
    learn(&b, "b.frs");
    learn(&a, "union.frs");
    learn(&b, "union.frs");
    let merged = run(
        &dir,
        &[
            "merge",
            "--out",
            "merged.frs",
            "a.frs",
            "b.frs",
            "--lambda",
            "0.5",
        ],
    );
    assert!(merged.status.success(), "{}", stderr(&merged));
    let m = State::load(&dir.join("merged.frs")).unwrap();
    let u = State::load(&dir.join("union.frs")).unwrap();
    let (hm, hu) = (m.head.unwrap(), u.head.unwrap());
    assert_eq!(hm.labels, hu.labels);
    assert!(common::relative_error(&hm.weights, &hu.weights) < 1e-9);
    assert_eq!(m.stats.samples(), 8.0);
}

/// `learn --shard i/k` on k "machines" (IDX, so shards cut a stream), then `merge`: the
/// statistics of learning the whole source; a shard resumes on its own; overlapping parts of
/// one source are refused in learn and merge.
#[test]
fn shards_of_a_source_merge_into_the_whole_and_resume() {
    let dir = common::temp_dir("shards");
    let images = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let model = tiny_model();
    let learn = |state: &str, extra: &[&str]| {
        let mut args = vec![
            "learn",
            "--json",
            "--state",
            state,
            "--data",
            common::s(&images),
            "--model",
            &model,
            "--limit",
            "130",
            "--lambda",
            "0.5",
        ];
        args.extend_from_slice(extra);
        run(&dir, &args)
    };
    for i in 0..3 {
        let shard = format!("{i}/3");
        let out = learn(&format!("part{i}.frs"), &["--shard", &shard]);
        assert!(out.status.success(), "{}", stderr(&out));
        // Records 130·i/3 .. 130·(i+1)/3.
        let expected = 130 * (i + 1) / 3 - 130 * i / 3;
        assert_eq!(json_of(&out)["samples"], expected);
        let again = json_of(&learn(&format!("part{i}.frs"), &["--shard", &shard]));
        assert_eq!(again["samples"], 0);
        assert_eq!(again["resumed_after"], expected);
    }
    assert!(learn("whole.frs", &[]).status.success());
    let merged = run(
        &dir,
        &[
            "merge",
            "--out",
            "merged.frs",
            "part0.frs",
            "part1.frs",
            "part2.frs",
            "--lambda",
            "0.5",
        ],
    );
    assert!(merged.status.success(), "{}", stderr(&merged));
    let (m, w) = (
        State::load(&dir.join("merged.frs")).unwrap(),
        State::load(&dir.join("whole.frs")).unwrap(),
    );
    assert_eq!(m.stats.samples(), 130.0);
    assert_eq!(m.stats.class_counts().iter().sum::<f64>(), 130.0);
    let (gm, gw) = (m.stats.gram(), w.stats.gram());
    let scale = (0..gw.nrows())
        .map(|i| gw[(i, i)].abs())
        .fold(0.0, f64::max);
    for j in 0..gw.ncols() {
        for i in 0..gw.nrows() {
            assert!(
                (gm[(i, j)] - gw[(i, j)]).abs() <= 1e-12 * scale,
                "G({i}, {j})"
            );
        }
    }
    assert!(common::relative_error(&m.head.unwrap().weights, &w.head.unwrap().weights) < 1e-9);
    // The whole source into a state holding a shard of it, or shards of another count:
    // records would count twice. Shard numbers outside 0..k and bad syntax are refused.
    let refused_learn = |state: &str, extra: &[&str], needle: &str| {
        let mut args = vec![
            "learn",
            "--state",
            state,
            "--data",
            common::s(&images),
            "--model",
            &model,
            "--limit",
            "130",
        ];
        args.extend_from_slice(extra);
        common::refused(&dir, &args, needle);
    };
    refused_learn("part0.frs", &[], "overlaps");
    refused_learn("part0.frs", &["--shard", "1/2"], "overlaps");
    refused_learn("x.frs", &["--shard", "3/3"], "does not exist");
    refused_learn("x.frs", &["--shard", "1-3"], "i/k");
    common::refused(
        &dir,
        &["merge", "--out", "bad.frs", "whole.frs", "part1.frs"],
        "overlaps",
    );

    // A state with itself (or a copy of it), or two states that both learned one source:
    // every sample would count twice. Refused, naming the file (and the source); nothing is
    // written. Devices that learned different data under one path say so with
    // --distinct-sources, which never lets a state merge with itself.
    std::fs::copy(dir.join("part1.frs"), dir.join("copy.frs")).unwrap();
    for inputs in [["part1.frs", "part1.frs"], ["part1.frs", "copy.frs"]] {
        for distinct in [false, true] {
            let mut args = vec!["merge", "--out", "twice.frs", inputs[0], inputs[1]];
            if distinct {
                args.push("--distinct-sources");
            }
            let err = common::refused(&dir, &args, "bit for bit");
            assert!(err.contains(inputs[1]), "{err}");
        }
    }
    // Shard 1/3 of the first 60 records (20..40): other records under the same name.
    let other = run(
        &dir,
        &[
            "learn",
            "--state",
            "other.frs",
            "--data",
            common::s(&images),
            "--model",
            &model,
            "--limit",
            "60",
            "--shard",
            "1/3",
        ],
    );
    assert!(other.status.success(), "{}", stderr(&other));
    let err = common::refused(
        &dir,
        &["merge", "--out", "twice.frs", "part1.frs", "other.frs"],
        "both states learned",
    );
    assert!(
        err.contains("#shard 1/3") && err.contains("--distinct-sources"),
        "{err}"
    );
    assert!(!dir.join("twice.frs").exists());
    let distinct = run(
        &dir,
        &[
            "merge",
            "--out",
            "distinct.frs",
            "part1.frs",
            "other.frs",
            "--distinct-sources",
            "--lambda",
            "0.5",
        ],
    );
    assert!(distinct.status.success(), "{}", stderr(&distinct));
    let both = State::load(&dir.join("distinct.frs")).unwrap();
    assert_eq!(both.stats.samples(), 43.0 + 20.0);
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let dir = common::temp_dir("bad");
    let folder = photo_folder(&dir);
    let model = tiny_model();
    let state = dir.join("tiny.frs");
    let state_s = state.to_str().unwrap();
    let ok = run(
        &dir,
        &[
            "learn",
            "--state",
            state_s,
            "--data",
            folder.to_str().unwrap(),
            "--model",
            &model,
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let before = std::fs::read(&state).unwrap();

    // A corrupt image in a folder: named in the message, state untouched.
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(corrupt.join("x")).unwrap();
    std::fs::copy(
        folder
            .join("x")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
        corrupt.join("x/good.png"),
    )
    .unwrap();
    std::fs::write(
        corrupt.join("x/broken.png"),
        b"\x89PNG\r\n\x1a\nthis is not a png",
    )
    .unwrap();
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            state_s,
            "--data",
            corrupt.to_str().unwrap(),
        ],
    );
    assert_error(&out, "broken.png");
    assert_eq!(std::fs::read(&state).unwrap(), before);
    // ... unless the user asks to skip it.
    let skipped = json_of(&run(
        &dir,
        &[
            "learn",
            "--state",
            "skip.frs",
            "--model",
            &model,
            "--data",
            corrupt.to_str().unwrap(),
            "--skip-bad",
            "--json",
        ],
    ));
    assert_eq!(skipped["samples"], 1);
    assert!(
        skipped["skipped"][0]
            .as_str()
            .unwrap()
            .contains("broken.png")
    );

    // An empty folder.
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    assert_error(
        &run(&dir, &["learn", "--state", state_s, "--data", "empty"]),
        "no images found",
    );

    // A state from another backbone.
    let mobilenet = common::root().join("models/mobilenetv2.onnx");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            state_s,
            "--data",
            folder.to_str().unwrap(),
            "--model",
            mobilenet.to_str().unwrap(),
        ],
    );
    assert_error(&out, "another backbone");
    assert_eq!(std::fs::read(&state).unwrap(), before);

    // A truncated state file, for every command that reads one.
    let truncated = dir.join("truncated.frs");
    std::fs::write(&truncated, &before[..before.len() / 2]).unwrap();
    let t = truncated.to_str().unwrap();
    assert_error(&run(&dir, &["info", "--state", t]), "truncated");
    assert_error(
        &run(
            &dir,
            &["learn", "--state", t, "--data", folder.to_str().unwrap()],
        ),
        "truncated",
    );
    assert_eq!(
        std::fs::read(&truncated).unwrap(),
        &before[..before.len() / 2]
    );
    let photo = folder
        .join("x")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_error(
        &run(&dir, &["predict", "--state", t, photo.to_str().unwrap()]),
        "truncated",
    );

    // A flipped bit.
    let mut flipped = before.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    std::fs::write(dir.join("flipped.frs"), &flipped).unwrap();
    assert_error(
        &run(&dir, &["info", "--state", "flipped.frs"]),
        "checksum mismatch",
    );

    // A model without a dense head: no state is created.
    let nohead = common::data("models/tiny_nohead.onnx");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            "new.frs",
            "--data",
            folder.to_str().unwrap(),
            "--model",
            nohead.to_str().unwrap(),
        ],
    );
    assert_error(&out, "no dense head");
    assert!(!dir.join("new.frs").exists());

    // A file that is not ONNX at all (with a valid spec beside it).
    std::fs::copy(common::data("models/not_onnx.onnx"), dir.join("junk.onnx")).unwrap();
    std::fs::copy(common::data("models/tiny_cnn.json"), dir.join("junk.json")).unwrap();
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            "junk.frs",
            "--data",
            folder.to_str().unwrap(),
            "--model",
            "junk.onnx",
        ],
    );
    assert_error(&out, "not a usable ONNX model");

    // A model with no spec beside it.
    std::fs::copy(
        common::data("models/tiny_cnn.onnx"),
        dir.join("nospec.onnx"),
    )
    .unwrap();
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            "nospec.frs",
            "--data",
            folder.to_str().unwrap(),
            "--model",
            "nospec.onnx",
        ],
    );
    assert_error(&out, "spec JSON");

    // Eval data with a label the head has never seen.
    let other = dir.join("other");
    std::fs::create_dir_all(other.join("z")).unwrap();
    std::fs::copy(&photo, other.join("z/p.png")).unwrap();
    assert_error(
        &run(&dir, &["eval", "--state", state_s, "--data", "other"]),
        "label 'z' is not known",
    );

    // A missing image for predict, and a missing data path.
    assert_error(
        &run(&dir, &["predict", "--state", state_s, "nope.png"]),
        "nope.png",
    );
    assert_error(
        &run(&dir, &["learn", "--state", state_s, "--data", "nowhere"]),
        "nowhere",
    );
    assert_eq!(std::fs::read(&state).unwrap(), before);
}

#[test]
fn learning_with_mirrors_folds_each_image_twice_and_forgets_both() {
    let dir = common::temp_dir("mirrors");
    let images = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let images = images.to_str().unwrap();
    let learn = [
        "learn",
        "--json",
        "--state",
        "m.frs",
        "--data",
        images,
        "--limit",
        "6",
        "--augment",
        "hflip",
    ];
    let learned = json_of(&run(&dir, &learn));
    assert_eq!(learned["samples"], 12, "6 images and their mirrors");
    // The same source again resumes (nothing new); forgetting it takes out the mirrors too.
    let again = json_of(&run(&dir, &learn));
    assert_eq!(again["samples"], 0);
    let forget = [
        "forget", "--json", "--state", "m.frs", "--data", images, "--limit", "3",
    ];
    let forgot = json_of(&run(&dir, &forget));
    assert_eq!(forgot["forgotten"], 6);
    assert_eq!(forgot["total_samples"], 6.0);
}

/// Image types the decoders do not read (a camera's BMP, a phone's WebP) are never dropped
/// without a word: counted per label in a warning, and a label left with none readable is an
/// error rather than a class that vanishes from the head.
#[test]
fn unread_image_types_are_warned_and_an_emptied_label_is_an_error() {
    let dir = common::temp_dir("unread-types");
    let folder = photo_folder(&dir);
    std::fs::write(folder.join("x").join("camera.bmp"), b"BM not read").unwrap();
    std::fs::write(folder.join("x").join("phone.WEBP"), b"RIFF not read").unwrap();
    std::fs::write(folder.join("x").join("notes.txt"), b"not an image").unwrap();
    let model = tiny_model();
    let learn = |state: &str| {
        run(
            &dir,
            &[
                "learn",
                "--json",
                "--state",
                state,
                "--data",
                common::s(&folder),
                "--model",
                &model,
                "--lambda",
                "0.5",
            ],
        )
    };
    let out = learn("warned.frs");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: ")
            && err.contains("label 'x': 2 image(s) left out")
            && err.contains(".bmp, .webp"),
        "{err}"
    );
    assert!(!err.contains("label 'y'"), "{err}");
    assert_eq!(json_of(&out)["samples"], 8);

    std::fs::create_dir_all(folder.join("z")).unwrap();
    for name in ["a.webp", "b.gif"] {
        std::fs::write(folder.join("z").join(name), b"not read").unwrap();
    }
    let out = learn("emptied.frs");
    assert_error(
        &out,
        "label 'z' has 2 image(s), all of types this build does not decode",
    );
    assert!(stderr(&out).contains(".gif, .webp"), "{}", stderr(&out));
    assert!(!dir.join("emptied.frs").exists());
}
