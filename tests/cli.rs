//! End-to-end tests of the `fastretrain` binary: the demo against the NumPy reference, the
//! learn / predict / eval / info / fit chain, threads, mirrors and image types it cannot read.
//! Merging and shards: tests/cli_merge.rs; bad input: tests/cli_errors.rs.

use crate::common;

use common::{assert_error, json_of, photo_folder, run, stderr, stdout, tiny_model};
use fastretrain::state::State;

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
        let loaded = State::load(&state).unwrap();
        let stats = loaded.stats();
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
