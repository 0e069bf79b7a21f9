//! A user's own model in a user's own places: a state that finds its model from another
//! directory and after a move, a folder with one label, a CSV given as data, and a state used
//! with another model (zoo models, tests/data/zoo).

use crate::common;

use std::path::PathBuf;

use common::{json_of, run, run_ok as ok, s, stderr, zoo};

#[test]
fn a_state_finds_its_model_from_another_directory_and_after_a_move() {
    let dir = common::temp_dir("zoo-paths");
    let project = dir.join("project");
    std::fs::create_dir_all(&project).unwrap();
    let model = common::zoo_model_with_spec(&project, "keras_nhwc");
    let train = zoo("fashion/train");
    let image = common::zoo_image("test", "Coat");
    ok(
        &project,
        &[
            "learn",
            "--state",
            "s.frs",
            "--model",
            &model,
            "--data",
            s(&train),
        ],
    );
    let state = project.join("s.frs");
    let expected = ok(
        &project,
        &["predict", "--state", "s.frs", s(&image), "--json"],
    );

    // From another working directory, with the state's absolute path.
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let from_elsewhere = ok(
        &elsewhere,
        &["predict", "--state", s(&state), s(&image), "--json"],
    );
    assert_eq!(from_elsewhere, expected);

    // The state and its model moved together to another folder.
    let moved = dir.join("moved");
    std::fs::rename(&project, &moved).unwrap();
    let after_move = ok(
        &elsewhere,
        &[
            "predict",
            "--state",
            s(&moved.join("s.frs")),
            s(&image),
            "--json",
        ],
    );
    assert_eq!(after_move, expected);
    ok(
        &elsewhere,
        &[
            "export",
            "--state",
            s(&moved.join("s.frs")),
            "--out",
            "x.onnx",
        ],
    );

    // The model gone: the message names it and the state that recorded it.
    std::fs::remove_file(moved.join(&model)).unwrap();
    let err = common::refused(
        &elsewhere,
        &["predict", "--state", s(&moved.join("s.frs")), s(&image)],
        "model file not found",
    );
    assert!(
        err.contains("recorded in") && err.contains("s.frs"),
        "{err}"
    );
    // A typo in --model says the file is not there, not "write a spec".
    let err = common::refused(
        &elsewhere,
        &[
            "learn",
            "--state",
            "t.frs",
            "--model",
            "mdoel.onnx",
            "--data",
            s(&train),
        ],
        "model file not found: mdoel.onnx",
    );
    assert!(!err.contains("spec"), "{err}");
    // The same for retrain, which reads the spec for the input size.
    #[cfg(feature = "train")]
    {
        let err = common::refused(
            &elsewhere,
            &[
                "retrain",
                "--model",
                "mdoel.onnx",
                "--data",
                s(&train),
                "--test-data",
                s(&train),
                "--out",
                "r.onnx",
            ],
            "model file not found: mdoel.onnx",
        );
        assert!(!err.contains("spec"), "{err}");
    }
}

#[test]
fn one_label_warns_and_eval_shows_labels_without_samples_as_a_dash() {
    let dir = common::temp_dir("zoo-warnings");
    let model = common::zoo_model_with_spec(&dir, "dynamic_hw");
    let one = dir.join("one");
    let few = dir.join("few");
    for (root, labels, n) in [(&one, &["Bag"][..], 50), (&few, &["Bag", "Coat"][..], 3)] {
        for label in labels {
            std::fs::create_dir_all(root.join(label)).unwrap();
            let mut files: Vec<PathBuf> = std::fs::read_dir(zoo(&format!("fashion/train/{label}")))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files.iter().take(n) {
                std::fs::copy(f, root.join(label).join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    let out = run(
        &dir,
        &[
            "learn", "--state", "one.frs", "--model", &model, "--data", "one",
        ],
    );
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("warning: only one label ('Bag')"),
        "{}",
        stderr(&out)
    );
    let out = run(&dir, &["fit", "--state", "one.frs"]);
    assert!(
        stderr(&out).contains("warning: only one label"),
        "{}",
        stderr(&out)
    );

    let out = run(
        &dir,
        &[
            "learn", "--state", "few.frs", "--model", &model, "--data", "few",
        ],
    );
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("fewer than 5 samples: 'Bag' (3), 'Coat' (3)"),
        "{err}"
    );
    // Evaluate on Bag images only: Coat has no test samples.
    let bags = dir.join("bags");
    std::fs::create_dir_all(bags.join("Bag")).unwrap();
    std::fs::copy(
        common::zoo_image("test", "Bag"),
        bags.join("Bag").join("b.png"),
    )
    .unwrap();
    let text = ok(&dir, &["eval", "--state", "few.frs", "--data", "bags"]);
    let coat = text.lines().find(|l| l.starts_with("Coat")).unwrap();
    assert!(coat.trim_end().ends_with('—'), "{text}");
    let report = json_of(&run(
        &dir,
        &["eval", "--state", "few.frs", "--data", "bags", "--json"],
    ));
    let coat = report["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "Coat")
        .unwrap();
    assert_eq!(coat["accuracy"], serde_json::Value::Null);
    assert_eq!(coat["samples"], 0);
}

#[test]
fn a_csv_as_data_is_called_not_an_idx_file() {
    let dir = common::temp_dir("zoo-csv");
    std::fs::write(dir.join("data.csv"), "label,pixel0\n1,0\n").unwrap();
    let model = common::root().join("models/mobilenetv2.onnx");
    common::refused(
        &dir,
        &[
            "learn",
            "--state",
            "s.frs",
            "--model",
            s(&model),
            "--data",
            "data.csv",
        ],
        "not an IDX file",
    );
    assert!(!dir.join("s.frs").exists());
    assert!(
        !dir.join("s.frs.lock").exists(),
        "a failed learn left its lock file"
    );
}

#[test]
fn a_state_used_with_another_model_says_so() {
    let dir = common::temp_dir("zoo-other-model");
    let resnet = common::zoo_model_with_spec(&dir, "torch_dynamo_resnet");
    let vgg = common::zoo_model_with_spec(&dir, "torch_legacy_vgg");
    let train = zoo("fashion/train");
    ok(
        &dir,
        &[
            "learn",
            "--state",
            "s.frs",
            "--model",
            &resnet,
            "--data",
            s(&train),
            "--limit",
            "64",
        ],
    );
    let image = common::zoo_image("test", "Bag");
    common::refused(
        &dir,
        &["predict", "--state", "s.frs", "--model", &vgg, s(&image)],
        "state was learned with another backbone",
    );
}
