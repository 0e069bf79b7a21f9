//! The ARM build computes what the x86 build computes: `learn` + `eval` + `predict` on the
//! shipped MobileNetV2 and Fashion-MNIST subset, run with the cross-built binary under qemu
//! (`ARM_BINARY=$(scripts/ci/cross-build.sh aarch64)`, optionally `ARM_RUNNER`) and with this
//! build; scores must agree within 1e-4, and each build must read the other's state file.
//! `.ci/run` cross-builds the binary and sets `ARM_BINARY`; elsewhere the test is skipped (with
//! a message) when it is unset, but under CI (`CI` set) a missing `ARM_BINARY` fails it.
//! qemu emulates a Cortex-A72 (a Raspberry Pi 4's core: NEON, no SVE) by default. Its default
//! `max` CPU offers SVE, whose emulation made this test ~6× slower (4 images: 77.6 s against
//! 12.7 s), and the boards this is for have NEON kernels, not SVE.

use crate::common;

use common::s;

use std::process::Command;

use common::json_of;

#[test]
fn arm_build_under_qemu_matches_the_x86_build() {
    let Ok(arm) = std::env::var("ARM_BINARY") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must test the ARM build: set ARM_BINARY=$(scripts/ci/cross-build.sh aarch64)"
        );
        eprintln!("skipped: set ARM_BINARY (and ARM_RUNNER) to test a cross-built binary");
        return;
    };
    let runner = arm_runner();
    let dir = common::temp_dir("arm");
    let root = common::root();
    let model = root.join("models/mobilenetv2.onnx");
    let train = root.join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let test = root.join("data/fashion-mnist/t10k-images-idx3-ubyte.gz");
    let photos: Vec<_> = [
        "imagenet_00_243.png",
        "imagenet_03_990.png",
        "imagenet_10_541.jpg",
    ]
    .iter()
    .map(|n| common::data("images").join(n))
    .collect();
    let run_with = |arm_build: bool, args: &[&str]| {
        let mut cmd = if arm_build {
            let mut c = Command::new(&runner[0]);
            c.args(&runner[1..]).arg(&arm);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_fastretrain"))
        };
        let out = cmd.args(args).current_dir(&dir).output().unwrap();
        json_of(&out)
    };
    let mut results = Vec::new();
    for arm_build in [true, false] {
        let state = dir.join(if arm_build { "arm.frs" } else { "x86.frs" });
        let learned = run_with(
            arm_build,
            &[
                "learn",
                "--json",
                "--threads",
                "2",
                "--state",
                s(&state),
                "--model",
                s(&model),
                "--data",
                s(&train),
                "--limit",
                "32",
                "--lambda",
                "1",
            ],
        );
        let evaluated = run_with(
            arm_build,
            &[
                "eval",
                "--json",
                "--state",
                s(&state),
                "--data",
                s(&test),
                "--limit",
                "16",
            ],
        );
        let mut args = vec!["predict", "--json", "-k", "10", "--state", s(&state)];
        args.extend(photos.iter().map(|p| s(p)));
        let predicted = run_with(arm_build, &args);
        results.push((learned, evaluated, predicted));
    }
    let ((arm_learn, arm_eval, arm_pred), (x86_learn, x86_eval, x86_pred)) =
        (&results[0], &results[1]);
    assert_eq!(arm_learn["samples"], x86_learn["samples"]);
    assert_eq!(arm_eval["confusion"], x86_eval["confusion"]);
    let mut worst = 0.0f64;
    for (a, x) in arm_pred
        .as_array()
        .unwrap()
        .iter()
        .zip(x86_pred.as_array().unwrap())
    {
        for (ta, tx) in a["top"]
            .as_array()
            .unwrap()
            .iter()
            .zip(x["top"].as_array().unwrap())
        {
            assert_eq!(ta["label"], tx["label"]);
            let diff = (ta["score"].as_f64().unwrap() - tx["score"].as_f64().unwrap()).abs();
            worst = worst.max(diff);
        }
    }
    assert!(worst < 1e-4, "ARM and x86 scores differ by {worst}");
    // State files travel both ways.
    let arm_state = dir.join("arm.frs");
    let x86_state = dir.join("x86.frs");
    run_with(false, &["info", "--json", "--state", s(&arm_state)]);
    run_with(true, &["info", "--json", "--state", s(&x86_state)]);
    eprintln!(
        "ARM (qemu) vs x86: accuracy {} vs {}, largest score difference {worst:e}",
        arm_eval["accuracy"], x86_eval["accuracy"]
    );
}

/// The C library cross-built beside `ARM_BINARY` (scripts/ci/cross-build.sh builds both) and
/// both C examples linked against its static library with the cross compiler
/// (`ARM_CC`, default aarch64-linux-gnu-gcc), run under qemu: their states are read by this
/// (x86) build, whose `predict` gives the scores they printed within 1e-4.
#[test]
fn arm_c_examples_under_qemu_match_the_x86_build() {
    let Ok(arm) = std::env::var("ARM_BINARY") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must test the ARM build: set ARM_BINARY=$(scripts/ci/cross-build.sh aarch64)"
        );
        eprintln!("skipped: set ARM_BINARY (and ARM_RUNNER, ARM_CC) to test the ARM C library");
        return;
    };
    let lib = std::path::Path::new(&arm)
        .parent()
        .unwrap()
        .join("libfastretrain.a");
    assert!(
        lib.exists(),
        "{} is missing: scripts/ci/cross-build.sh builds it",
        lib.display()
    );
    let cc = std::env::var("ARM_CC").unwrap_or_else(|_| "aarch64-linux-gnu-gcc".into());
    let runner = arm_runner();
    let dir = common::temp_dir("arm-capi");
    let lib_dir = lib.parent().unwrap();
    let build = |source: &str| crate::capi::compile_with(&cc, lib_dir, source, false, &dir);
    let run_arm = |exe: &std::path::Path, args: &[&str]| {
        let out = Command::new(&runner[0])
            .args(&runner[1..])
            .arg(exe)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            exe.display(),
            common::stderr(&out)
        );
        common::stdout(&out)
            .lines()
            .map(|line| {
                let parts: Vec<&str> = line.split('\t').collect();
                (
                    parts[0].to_string(),
                    parts[1].to_string(),
                    parts[2].parse::<f64>().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    // The x86 CLI's scores of `files` with `state`, per file: (label, score) best first.
    let x86_scores = |state: &std::path::Path, files: &[&str]| {
        let mut args = vec!["predict", "--json", "-k", "3", "--state", s(state)];
        args.extend(files);
        let out = Command::new(env!("CARGO_BIN_EXE_fastretrain"))
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        json_of(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| {
                        (
                            t["label"].as_str().unwrap().to_string(),
                            t["score"].as_f64().unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let mut worst = 0.0f64;
    let mut compare = |printed: &[(String, String, f64)], cli: &[(String, f64)]| {
        assert_eq!(printed.len(), cli.len());
        for ((_, label, score), (cli_label, cli_score)) in printed.iter().zip(cli) {
            assert_eq!(label, cli_label);
            worst = worst.max((score - cli_score).abs());
        }
    };

    // Images: the tiny CNN learning 2 images per label of the zoo's folder.
    let images = build("learn_predict.c");
    let photo = common::data("zoo/fashion/test/Bag/test_00018.png");
    let tiny = common::tiny_model();
    let image_state = dir.join("images.frs");
    let printed = run_arm(
        &images,
        &[
            tiny.as_str(),
            s(&common::data("zoo/fashion/train")),
            "2",
            s(&image_state),
            s(&photo),
        ],
    );
    let cli = x86_scores(&image_state, &[s(&photo)]);
    compare(&printed[..3], &cli[0]);

    // Tensors: IMU windows made in C, learned, a batch forgotten, one predicted.
    let tensors = build("tensor_samples.c");
    let (tensor_state, window) = (dir.join("tensors.frs"), dir.join("window.npy"));
    let printed = run_arm(
        &tensors,
        &[
            s(&common::data("signal/imu_mlp.onnx")),
            s(&tensor_state),
            s(&window),
        ],
    );
    let cli = x86_scores(&tensor_state, &[s(&window)]);
    compare(&printed, &cli[0]);
    assert!(
        worst < 1e-4,
        "ARM C library and x86 CLI scores differ by {worst}"
    );
    eprintln!("ARM C examples (qemu) vs x86 CLI: largest score difference {worst:e}");
}

/// The command that runs an ARM program here: `ARM_RUNNER`, else qemu emulating a Cortex-A72.
fn arm_runner() -> Vec<String> {
    std::env::var("ARM_RUNNER")
        .unwrap_or_else(|_| "qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu".into())
        .split_whitespace()
        .map(String::from)
        .collect()
}
