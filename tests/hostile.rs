//! The hostile-input corpus (tests/data/hostile/, made by scripts/reference/make_hostile_corpus.py and
//! scripts/reference/make_hostile_states.sh): every relevant command on every file must exit with code
//! 2 and a one-line message naming the file and the problem, never panic, and leave an
//! existing state untouched. Unusual but valid images must be accepted.
//! The messages are written to target/hostile-report.md (copied into docs/TRUST.md).

use crate::common;

use common::s;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::{run, stderr};
use fastretrain::spec::ModelSpec;

fn hostile(rel: &str) -> PathBuf {
    common::data("hostile").join(rel)
}

fn files(rel: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(hostile(rel))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

struct Checker {
    dir: PathBuf,
    good: PathBuf,
    good_bytes: Vec<u8>,
    report: String,
    cases: usize,
}

impl Checker {
    /// Runs `args`; expects exit 2, one line naming `names` and containing `problem`,
    /// and no change to the good state nor to `untouched`.
    fn refuses(&mut self, args: &[&str], names: &str, problem: &str, untouched: Option<&Path>) {
        let before = untouched.map(|p| std::fs::read(p).unwrap());
        let out = run(&self.dir, args);
        let err = stderr(&out);
        let line = err.trim_end();
        let shown = args.join(" ").replace(&*self.dir.to_string_lossy(), ".");
        assert_eq!(out.status.code(), Some(2), "{shown}: {err}");
        assert!(!err.contains("panicked"), "{shown}: {err}");
        assert_eq!(line.lines().count(), 1, "{shown}: not one line: {err}");
        assert!(
            line.contains(names),
            "{shown}: message does not name {names}: {line}"
        );
        assert!(
            line.contains(problem),
            "{shown}: expected '{problem}': {line}"
        );
        assert_eq!(
            std::fs::read(&self.good).unwrap(),
            self.good_bytes,
            "{shown} changed the state"
        );
        if let (Some(p), Some(b)) = (untouched, before) {
            assert_eq!(
                std::fs::read(p).unwrap(),
                b,
                "{shown} changed {}",
                p.display()
            );
        }
        let root = common::root().to_string_lossy().to_string();
        let _ = writeln!(
            self.report,
            "| `{}` | `{}` |",
            shown.replace(&root, "").replace('|', "\\|"),
            line.replace(&*self.dir.to_string_lossy(), ".")
                .replace(&root, "")
                .replace('|', "\\|")
        );
        self.cases += 1;
    }
}

#[test]
fn every_hostile_file_is_refused_clearly_and_changes_nothing() {
    let dir = common::temp_dir("hostile");
    let tiny = common::data("models/tiny_cnn.onnx");
    let subset = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let good = dir.join("good.frs");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            s(&good),
            "--model",
            s(&tiny),
            "--data",
            s(&subset),
            "--limit",
            "100",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = Checker {
        good_bytes: std::fs::read(&good).unwrap(),
        good: good.clone(),
        dir: dir.clone(),
        report: String::from("| command | message |\n|---|---|\n"),
        cases: 0,
    };
    let good_s = good.to_str().unwrap().to_string();
    let one_photo = hostile("images/ok/rgba.png");

    // Images: predict, and learn from a folder holding only that image.
    let image_problems = [
        ("corrupt.png", "cannot read image"),
        ("corrupt.jpg", "cannot read image"),
        ("truncated.png", "cannot read image"),
        ("truncated.jpg", "cannot read image"),
        ("zero_bytes.png", "file is empty"),
        ("bomb_60000x60000.png", "over the limit"),
        ("text_named.jpg", "not a PNG or JPEG"),
        ("gif_named.png", "not a PNG or JPEG"),
    ];
    assert_eq!(
        files("images/bad").len(),
        image_problems.len(),
        "every bad image has a case"
    );
    for (name, problem) in image_problems {
        let file = hostile("images/bad").join(name);
        c.refuses(
            &["predict", "--state", &good_s, s(&file)],
            name,
            problem,
            None,
        );
        let folder = dir.join(format!("folder-{name}"));
        std::fs::create_dir_all(folder.join("x")).unwrap();
        std::fs::copy(&file, folder.join("x").join(name)).unwrap();
        c.refuses(
            &["learn", "--state", &good_s, "--data", s(&folder)],
            name,
            problem,
            None,
        );
    }

    // States: every command that reads one.
    let state_problems = [
        ("bit_flipped.frs", "checksum mismatch"),
        ("future_version.frs", "upgrade fastretrain"),
        ("fuzz_huge_length.frs", "truncated"),
        ("not_a_state.frs", "bad magic"),
        ("other_backbone.frs", "another backbone"),
        ("trailing_garbage.frs", "unexpected bytes after the end"),
        ("truncated.frs", "truncated"),
        ("zero_bytes.frs", "bad magic"),
    ];
    assert_eq!(
        files("states").len(),
        state_problems.len(),
        "every state has a case"
    );
    for (name, problem) in state_problems {
        let original = hostile("states").join(name);
        let copy = dir.join(name);
        std::fs::copy(&original, &copy).unwrap();
        let fit_problem = if name == "other_backbone.frs" {
            ""
        } else {
            problem
        };
        let learn_args = [
            "learn",
            "--state",
            s(&copy),
            "--model",
            s(&tiny),
            "--data",
            s(&subset),
            "--limit",
            "10",
        ];
        c.refuses(&learn_args, name, problem, Some(&copy));
        c.refuses(
            &[
                "predict",
                "--state",
                s(&copy),
                "--model",
                s(&tiny),
                s(&one_photo),
            ],
            name,
            problem,
            Some(&copy),
        );
        c.refuses(
            &[
                "eval",
                "--state",
                s(&copy),
                "--model",
                s(&tiny),
                "--data",
                s(&subset),
                "--limit",
                "10",
            ],
            name,
            problem,
            Some(&copy),
        );
        if name != "other_backbone.frs" {
            c.refuses(&["info", "--state", s(&copy)], name, problem, Some(&copy));
            c.refuses(
                &["fit", "--state", s(&copy)],
                name,
                fit_problem,
                Some(&copy),
            );
        }
        c.refuses(
            &[
                "merge",
                "--out",
                s(&dir.join("merged.frs")),
                &good_s,
                s(&copy),
            ],
            name,
            problem,
            Some(&copy),
        );
    }

    // IDX files with lying headers.
    let idx_problems = [
        (
            "count_mismatch",
            "holds 4 labels but the images file holds 3",
        ),
        ("empty", "not an IDX file"),
        ("huge_dims", "not plausible"),
        ("label_out_of_range", "label 200 but only 10 names"),
        ("lying_count", "ends after 3 of 100 images"),
        ("truncated_gzip", "images"),
        ("wrong_magic", "not an IDX file"),
    ];
    assert_eq!(
        files("idx").len(),
        2 * idx_problems.len(),
        "every IDX pair has a case"
    );
    let names10 = common::root().join("data/fashion-mnist/labels.txt");
    for (stem, problem) in idx_problems {
        let images = files("idx")
            .into_iter()
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(&format!("{stem}-images"))
            })
            .unwrap();
        let name = images.file_name().unwrap().to_str().unwrap().to_string();
        let names_arg = ["--label-names", s(&names10)];
        let mut args = vec!["learn", "--state", &good_s, "--data", s(&images)];
        args.extend(names_arg);
        // The message names the images or the labels file, whichever is at fault.
        let _ = name;
        c.refuses(&args, stem, problem, None);
    }

    // Label names.
    let bad_names = hostile("labels/control_chars.txt");
    c.refuses(
        &[
            "learn",
            "--state",
            &good_s,
            "--data",
            s(&subset),
            "--label-names",
            s(&bad_names),
        ],
        "control_chars.txt",
        "control characters",
        None,
    );
    let empty_names = hostile("labels/empty.txt");
    c.refuses(
        &[
            "learn",
            "--state",
            &good_s,
            "--data",
            s(&subset),
            "--label-names",
            s(&empty_names),
        ],
        "empty.txt",
        "is empty",
        None,
    );

    // Models (learning into a new state, which must not appear).
    let new_state = dir.join("new.frs");
    for (model, problem) in [
        (common::data("models/tiny_nohead.onnx"), "no dense head"),
        (common::data("models/tiny_nan.onnx"), "NaN"),
        (hostile("models/not_onnx.onnx"), "not a usable ONNX model"),
        (hostile("models/truncated.onnx"), "not a usable ONNX model"),
        (hostile("models/bad_spec.onnx"), "bad model spec"),
        (hostile("models/broken_spec_json.onnx"), "bad model spec"),
    ] {
        let name = model.file_stem().unwrap().to_str().unwrap().to_string();
        c.refuses(
            &[
                "learn",
                "--state",
                s(&new_state),
                "--model",
                s(&model),
                "--data",
                s(&subset),
                "--limit",
                "10",
            ],
            &name,
            problem,
            None,
        );
        assert!(!new_state.exists(), "{name}: a state was written");
    }

    // Tensor samples for a model fed with tensors: predict the file, and learn from a folder
    // holding only it; arrays of samples whose labels are broken. The kws state is untouched.
    let kws = dir.join("kws.frs");
    let kws_model = common::data("signal/kws_conv1d.onnx");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            s(&kws),
            "--model",
            s(&kws_model),
            "--data",
            s(&common::data("signal/kws/train")),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tensor_problems = [
        (
            "batch_axis.npy",
            "shape [1, 40, 98], but the model takes one sample of shape [40, 98]",
        ),
        ("big_endian.npy", "big-endian"),
        ("complex.npy", "'<c8' is not a float16/32/64"),
        ("fortran_order.npy", "Fortran order"),
        ("inf.npy", "value -inf at flat index 3919"),
        ("int32.npy", "'<i4' is not a float type"),
        ("nan.npy", "value NaN at flat index 299"),
        ("overflow_f64.npy", "not finite"),
        ("text_named.npy", "not a .npy file"),
        ("truncated.npy", "truncated"),
        (
            "wrong_shape.npy",
            "shape [40, 97], but the model takes one sample of shape [40, 98]",
        ),
    ];
    assert_eq!(
        files("tensors/bad").len(),
        tensor_problems.len(),
        "every bad tensor has a case"
    );
    for (name, problem) in tensor_problems {
        let file = hostile("tensors/bad").join(name);
        let folder = dir.join(format!("tensor-folder-{name}"));
        std::fs::create_dir_all(folder.join("yes")).unwrap();
        std::fs::copy(&file, folder.join("yes").join(name)).unwrap();
        let learn = ["learn", "--state", s(&kws), "--data", s(&folder)];
        c.refuses(&learn, name, problem, Some(&kws));
        // A file of rank 3 is an array of samples to predict: only the others here.
        if name != "batch_axis.npy" {
            c.refuses(
                &["predict", "--state", s(&kws), s(&file)],
                name,
                problem,
                Some(&kws),
            );
        }
    }
    let array_problems = [
        ("count_mismatch", "holds 2 label lines, but the array"),
        ("empty_label", "line 2: label \"\" is not usable"),
        ("float_labels", "label numbers are integers"),
        (
            "lying_count",
            "the header says 3 samples of shape [40, 98], the file holds 2",
        ),
    ];
    assert_eq!(
        files("tensors/arrays").len(),
        2 * array_problems.len(),
        "every broken array has a case"
    );
    for (stem, problem) in array_problems {
        let array = hostile("tensors/arrays").join(format!("{stem}.npy"));
        c.refuses(
            &["learn", "--state", s(&kws), "--data", s(&array)],
            stem,
            problem,
            Some(&kws),
        );
    }
    // An image for the tensor model, and a tensor for an image model.
    c.refuses(
        &["predict", "--state", s(&kws), s(&one_photo)],
        "rgba.png",
        "the model takes float tensors of shape [40, 98]",
        Some(&kws),
    );
    let one_tensor = common::data("signal/kws/test/yes/yes_00.npy");
    c.refuses(
        &["predict", "--state", &good_s, s(&one_tensor)],
        "yes_00.npy",
        "the model takes images",
        None,
    );

    assert!(c.cases >= 60, "{} cases", c.cases);
    std::fs::write(common::root().join("target/hostile-report.md"), &c.report).unwrap();
}

#[test]
fn unusual_but_valid_images_and_labels_are_accepted() {
    let dir = common::temp_dir("hostile-ok");
    let tiny = common::data("models/tiny_cnn.onnx");
    let folder = dir.join("ok");
    let ok_files = files("images/ok");
    for f in &ok_files {
        std::fs::create_dir_all(folder.join("Straße ✓")).unwrap();
        std::fs::copy(f, folder.join("Straße ✓").join(f.file_name().unwrap())).unwrap();
    }
    let state = dir.join("ok.frs");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            s(&state),
            "--model",
            s(&tiny),
            "--data",
            s(&folder),
            "--lambda",
            "1",
            "--json",
        ],
    );
    let report = common::json_of(&out);
    assert_eq!(report["samples"].as_u64().unwrap() as usize, ok_files.len());
    assert_eq!(report["labels"][0], "Straße ✓");
    for f in &ok_files {
        let out = run(&dir, &["predict", "--state", s(&state), s(f)]);
        assert!(out.status.success(), "{}: {}", f.display(), stderr(&out));
    }

    // Label names with odd unicode and path separators are just text.
    let names = hostile("labels/unicode_and_separators.txt");
    let subset = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let state = dir.join("unicode.frs");
    let out = run(
        &dir,
        &[
            "learn",
            "--state",
            s(&state),
            "--model",
            s(&tiny),
            "--data",
            s(&subset),
            "--limit",
            "200",
            "--label-names",
            s(&names),
            "--json",
        ],
    );
    let report = common::json_of(&out);
    let labels: Vec<&str> = report["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        labels.contains(&"T-shirt/top")
            && labels.contains(&"Trouser\\pants")
            && labels.contains(&"Pull\u{202e}over")
    );
}

/// A zoo model with a hand-written spec that has one mistake: exit 2, a message naming the
/// field and the fix.
#[test]
fn hand_made_spec_mistakes_are_refused_with_the_field_and_the_fix() {
    let dir = common::temp_dir("zoo-bad-specs");
    let model = common::zoo_model_with_spec(&dir, "torch_dynamo_resnet");
    let spec_path = dir.join("torch_dynamo_resnet.json");
    let good = std::fs::read_to_string(&spec_path).unwrap();
    let data = common::data("zoo/fashion/train");
    let learn = [
        "learn",
        "--state",
        "bad.frs",
        "--model",
        &model,
        "--data",
        s(&data),
    ];
    let check = |spec: String, needles: &[&str]| {
        std::fs::write(&spec_path, spec).unwrap();
        for args in [&learn[..], &["spec", "--model", &model, "--check"][..]] {
            let err = common::refused(&dir, args, needles[0]);
            for needle in &needles[1..] {
                assert!(err.contains(needle), "expected '{needle}' in: {err}");
            }
        }
        assert!(!dir.join("bad.frs").exists());
    };
    let value: serde_json::Value = serde_json::from_str(&good).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = value.clone();
        f(&mut v);
        serde_json::to_string_pretty(&v).unwrap()
    };
    check(
        edit(&|v| v["feature_tensr"] = "view".into()),
        &["unknown field `feature_tensr`", "docs/SPEC.md"],
    );
    check(
        edit(&|v| v["preprocess"]["std_dev"] = serde_json::json!([1, 1, 1])),
        &["unknown field `std_dev`", "preprocess"],
    );
    check(
        edit(&|v| v["input"]["name"] = "input".into()),
        &["input.name is 'input' but the model's input is 'x'"],
    );
    check(
        edit(&|v| v["input"]["layout"] = "NHWC".into()),
        &["input.layout is NHWC", "\"layout\": \"NCHW\""],
    );
    check(
        edit(&|v| v["preprocess"]["mean"] = serde_json::json!([0.5, 0.5, 0.5, 0.5])),
        &["expected 3 values (R, G, B), got 4"],
    );
    check(
        edit(&|v| {
            v["input"]["height"] = 64.into();
            v["input"]["width"] = 64.into();
            v["preprocess"]["crop"] = 64.into();
            v["preprocess"]["resize_short_side"] = 73.into();
        }),
        &["input is 64×64", "resize-input"],
    );
    check(
        edit(&|v| v["preprocess"]["resize_filter"] = "bicubic".into()),
        &["unknown variant `bicubic`", "bilinear-antialias-u8"],
    );
    // Another model's spec copied beside this one (no sha256 to catch it).
    check(
        edit(&|v| {
            v["file"] = "torch_legacy_vgg.onnx".into();
            v.as_object_mut().unwrap().remove("sha256");
        }),
        &[
            "spec of 'torch_legacy_vgg.onnx'",
            "fastretrain spec --model",
        ],
    );
    // A spec from another model's file with the sha256 of that file.
    check(
        edit(&|v| v["sha256"] = "00".repeat(32).into()),
        &["belongs to another spec"],
    );
    // No spec at all.
    std::fs::remove_file(&spec_path).unwrap();
    common::refused(&dir, &learn, "fastretrain spec --model");
    // `spec` refuses to overwrite a spec unless told to.
    std::fs::write(&spec_path, &good).unwrap();
    common::refused(&dir, &["spec", "--model", &model], "--force");
    assert!(
        run(&dir, &["spec", "--model", &model, "--force"])
            .status
            .success()
    );
}

/// Thread counts that would make a pool fail to start (100,000 threads exhausted memory and
/// tract's pool panicked) or mean nothing are refused before anything runs: exit 2, the range
/// named, no panic.
#[test]
fn thread_counts_outside_the_range_are_refused() {
    let dir = common::temp_dir("hostile-threads");
    let photo = common::data("images/imagenet_00_243.png");
    let model = common::root().join("models/mobilenetv2.onnx");
    let state = dir.join("none.frs");
    for value in ["100000", "0", "257", "-3", "two", "NaN", ""] {
        let flag = format!("--threads={value}");
        let err = common::refused(&dir, &[&flag, "info", "--state", s(&state)], "--threads");
        assert!(err.contains("1..=256"), "{flag}: {err}");
        let parallel = format!("--parallel={value}");
        common::refused(&dir, &["bench", &parallel, "--runs", "1"], "1..=256");
    }
    // The largest count allowed runs (a single image on tract's pool of 256 threads).
    let out = run(
        &dir,
        &[
            "--threads",
            "256",
            "predict",
            "--model",
            s(&model),
            s(&photo),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!state.exists());
}

/// A model whose weights are in a side file (`model.onnx` + `model.onnx.data`): the data file
/// is part of the model (its bytes in the sha256), and a missing, truncated or changed one, or
/// one named outside the model's folder, is refused naming it, with nothing written.
#[test]
fn a_models_data_file_is_checked_and_part_of_the_model() {
    let dir = common::temp_dir("hostile-external-data");
    let name = "torch_legacy_vgg_external";
    let model = common::zoo_model_with_spec(&dir, name);
    let data = format!("{model}.data");
    let train = common::zoo("fashion/train");
    let learn = |state: &str| {
        run(
            &dir,
            &[
                "learn",
                "--state",
                state,
                "--model",
                &model,
                "--data",
                s(&train),
                "--limit",
                "20",
            ],
        )
    };
    assert!(learn("s.frs").status.success());
    let state = std::fs::read(dir.join("s.frs")).unwrap();
    // The export is one file: it runs without the data file.
    let out = common::run_ok(&dir, &["export", "--state", "s.frs", "--out", "one.onnx"]);
    assert!(
        out.contains(&format!("weights from {data} are inside")),
        "{out}"
    );
    let weights = std::fs::read(dir.join(&data)).unwrap();
    std::fs::remove_file(dir.join(&data)).unwrap();
    let photo = common::zoo_image("test", "Bag");
    let mut spec = ModelSpec::load(&dir.join(format!("{name}.json"))).unwrap();
    (
        spec.file,
        spec.sha256,
        spec.feature_tensor,
        spec.feature_dim,
    ) = (None, None, None, None);
    std::fs::write(dir.join("one.json"), spec.to_json()).unwrap();
    common::run_ok(&dir, &["predict", "--model", "one.onnx", s(&photo)]);

    // Missing: every command that takes the model names the data file.
    let err = common::refused(&dir, &["predict", "--state", "s.frs", s(&photo)], &data);
    assert!(err.contains("cannot be read"), "{err}");
    common::refused(&dir, &["spec", "--model", &model, "--check"], &data);
    common::refused(
        &dir,
        &["spec", "--model", &model, "--preset", "imagenet", "--force"],
        &data,
    );
    common::refused(
        &dir,
        &["export", "--state", "s.frs", "--out", "x.onnx"],
        &data,
    );
    // Truncated: the tensors past its end are named.
    std::fs::write(dir.join(&data), &weights[..weights.len() / 2]).unwrap();
    let err = common::refused(
        &dir,
        &["predict", "--state", "s.frs", s(&photo)],
        "truncated",
    );
    assert!(err.contains(&data), "{err}");
    // Changed (the same size, one weight different): another model, for the state and spec.
    let mut changed = weights.clone();
    changed[1000] ^= 0x40;
    std::fs::write(dir.join(&data), &changed).unwrap();
    common::refused(
        &dir,
        &["predict", "--state", "s.frs", s(&photo)],
        "another backbone",
    );
    common::refused(
        &dir,
        &["predict", "--model", &model, s(&photo)],
        "its spec expects",
    );
    // Named outside the model's folder (a path with '..' of the same length in the protobuf).
    std::fs::write(dir.join(&data), &weights).unwrap();
    let bytes = std::fs::read(dir.join(&model)).unwrap();
    let outside = format!("../{}", &data[3..]);
    let mut patched = bytes.clone();
    let at = bytes
        .windows(data.len())
        .position(|w| w == data.as_bytes())
        .unwrap();
    patched[at..at + data.len()].copy_from_slice(outside.as_bytes());
    std::fs::write(dir.join("outside.onnx"), &patched).unwrap();
    common::refused(
        &dir,
        &["spec", "--model", "outside.onnx", "--preset", "imagenet"],
        "relative to the model's folder",
    );
    // Nothing was written by any refused command.
    assert_eq!(std::fs::read(dir.join("s.frs")).unwrap(), state);
    assert!(!dir.join("x.onnx").exists() && !dir.join("outside.json").exists());
    assert!(learn("s.frs").status.success());
}

/// Every numeric flag given 0, a negative number, NaN, infinities, a number past u64 and
/// large ones: each is refused (exit 2, one message naming the flag or the value, no panic, the
/// state and spec untouched) or has a documented meaning (listed per flag: it runs).
#[test]
fn numeric_flags_are_refused_or_mean_what_their_help_says() {
    let dir = common::temp_dir("hostile-numbers");
    let model = common::zoo_model_with_spec(&dir, "dynamic_hw");
    let spec = dir.join("dynamic_hw.json");
    let train = common::zoo("fashion/train");
    // The test images of the two labels the state learns.
    let test = dir.join("test");
    for label in ["Ankle boot", "Bag"] {
        std::fs::create_dir_all(test.join(label)).unwrap();
        for image in std::fs::read_dir(common::zoo("fashion/test").join(label)).unwrap() {
            let image = image.unwrap().path();
            std::fs::copy(&image, test.join(label).join(image.file_name().unwrap())).unwrap();
        }
    }
    let photo = common::zoo_image("test", "Bag");
    let (train, test, photo) = (s(&train), s(&test), s(&photo));
    // 100 images of the first two labels: a state, a store of its features.
    let learn = [
        "learn", "--state", "s.frs", "--model", &model, "--data", train,
    ];
    common::run_ok(&dir, &[&learn[..], &["--limit", "100"]].concat());
    common::run_ok(
        &dir,
        &[
            "extract", "--store", "st.frf", "--model", &model, "--data", train, "--limit", "100",
        ],
    );
    let (state, spec_bytes) = (
        std::fs::read(dir.join("s.frs")).unwrap(),
        std::fs::read(&spec).unwrap(),
    );
    let values = [
        "0",
        "-1",
        "NaN",
        "inf",
        "-inf",
        "1e400",
        "18446744073709551616",
        "100000000",
        "",
        "two",
    ];
    let retrain_base = [
        "retrain",
        "--model",
        &model,
        "--data",
        train,
        "--test-data",
        test,
        "--limit",
        "100",
        "--out",
        "rt.onnx",
    ];
    let (epochs, test_limit) = (["--epochs", "1"], ["--test-limit", "10"]);
    let retrain = [&retrain_base[..], &epochs, &test_limit].concat();
    // (the command, its flag, another name the message may use, the values it accepts)
    let table: Vec<(Vec<&str>, &str, &str, Vec<&str>)> = vec![
        // More labels than there are: all of them.
        (
            vec!["predict", "--state", "s.frs", photo],
            "--top-k",
            "",
            vec!["100000000"],
        ),
        // More samples than there are: all of them.
        (learn.to_vec(), "--limit", "", vec!["100000000"]),
        (
            vec!["fit", "--state", "s.frs", "--store", "st.frf"],
            "--folds",
            "",
            vec![],
        ),
        // λ ≥ 0: 0 is plain least squares, a huge λ a head near zero.
        (
            vec!["fit", "--state", "s.frs"],
            "--lambda",
            "λ",
            vec!["0", "18446744073709551616", "100000000"],
        ),
        (
            learn.to_vec(),
            "--lambda",
            "λ",
            vec!["0", "18446744073709551616", "100000000"],
        ),
        (learn.to_vec(), "--decay", "μ", vec![]),
        (
            vec![
                "fit", "--state", "s.frs", "--store", "st.frf", "--method", "step",
            ],
            "--eta",
            "η",
            vec![],
        ),
        (
            vec![
                "fit", "--state", "s.frs", "--store", "st.frf", "--method", "step",
            ],
            "--passes",
            "",
            vec![],
        ),
        (
            vec!["fit", "--state", "s.frs", "--store", "st.frf"],
            "--batch",
            "",
            vec![],
        ),
        (
            vec!["spec", "--model", &model, "--preset", "unit", "--force"],
            "--size",
            "",
            vec![],
        ),
        (
            vec!["resize-input", "--model", &model, "--out", "r.onnx"],
            "--size",
            "",
            vec![],
        ),
        // Less often than the samples there are: saved at the end only.
        (learn.to_vec(), "--checkpoint-every", "", vec!["100000000"]),
        (
            vec![
                "extract", "--store", "x.frf", "--model", &model, "--data", train,
            ],
            "--chunk-rows",
            "",
            vec![],
        ),
        (
            [&retrain_base[..], &test_limit].concat(),
            "--epochs",
            "",
            vec![],
        ),
        (retrain.to_vec(), "--batch", "", vec![]),
        (retrain.to_vec(), "--size", "", vec![]),
        // Momentum 0 is plain SGD; a learning rate of 0 leaves the layers as they are.
        (retrain.to_vec(), "--momentum", "", vec!["0"]),
        (retrain.to_vec(), "--lr", "", vec!["0"]),
        (
            [&retrain_base[..], &epochs].concat(),
            "--test-limit",
            "",
            vec!["100000000"],
        ),
        (
            vec![
                "eval", "--state", "s.frs", "--data", train, "--limit", "100",
            ],
            "--min-accuracy",
            "",
            vec!["0"],
        ),
        (
            vec!["bench", "--model", &model, "--runs", "1"],
            "--warmup",
            "",
            vec!["0"],
        ),
        (vec!["bench", "--model", &model], "--runs", "", vec![]),
    ];
    let mut cases = 0;
    for (command, flag, alias, accepted) in &table {
        for value in values {
            let given = format!("{flag}={value}");
            let args: Vec<&str> = command.iter().copied().chain([given.as_str()]).collect();
            let out = run(&dir, &args);
            let err = stderr(&out);
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(
                !err.contains("multiple times"),
                "the table gives {flag} twice"
            );
            if accepted.contains(&value) {
                assert!(out.status.success(), "{args:?} has a meaning: {err}");
            } else {
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "{args:?} should be refused: {err}"
                );
                let message = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
                assert!(
                    message.contains(flag.trim_start_matches('-'))
                        || (!value.is_empty() && message.contains(value))
                        || (!alias.is_empty() && message.contains(alias)),
                    "{args:?}: the message names neither the flag nor the value: {err}"
                );
                assert_eq!(std::fs::read(dir.join("s.frs")).unwrap(), state, "{args:?}");
                assert_eq!(std::fs::read(&spec).unwrap(), spec_bytes, "{args:?}");
                for written in ["x.frf", "r.onnx", "rt.onnx"] {
                    assert!(!dir.join(written).exists(), "{args:?} wrote {written}");
                }
            }
            // Every case starts from the same state and spec.
            std::fs::write(dir.join("s.frs"), &state).unwrap();
            std::fs::write(&spec, &spec_bytes).unwrap();
            for written in ["x.frf", "r.onnx", "r.json", "rt.onnx", "rt.json", "rt.frs"] {
                let _ = std::fs::remove_file(dir.join(written));
            }
            cases += 1;
        }
    }
    // Shards: part i of k, from 0.
    for shard in [
        "0/0",
        "2/2",
        "1/0",
        "-1/2",
        "1/-1",
        "NaN/2",
        "1/18446744073709551616",
        "1",
        "",
    ] {
        let given = format!("--shard={shard}");
        let args: Vec<&str> = learn.iter().copied().chain([given.as_str()]).collect();
        common::refused(&dir, &args, "shard");
        assert_eq!(std::fs::read(dir.join("s.frs")).unwrap(), state, "{args:?}");
        cases += 1;
    }
    eprintln!("{cases} numeric arguments: refused or run as documented, none panicked");
}
