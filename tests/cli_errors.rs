//! Bad input to the `fastretrain` binary: exit code 2, a clear one-line message, no panic,
//! and no change to an existing state.

use crate::common;

use common::{assert_error, json_of, photo_folder, run, stderr, tiny_model};

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
        "no samples found",
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
