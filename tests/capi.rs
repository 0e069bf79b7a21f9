//! The C library as a C program uses it: examples/c/learn_predict.c (images) and
//! examples/c/tensor_samples.c (float tensors: IMU windows) built with the system `cc`
//! against libfastretrain.a and against libfastretrain.so (the workspace's capi crate, built by
//! the README's test command), run on the shipped model and zoo images. Its state must be read
//! by the CLI (`info`) and give the CLI's `predict` scores within 1e-5; the static and shared
//! builds must print the same; under Valgrind the happy path and every error path must show no
//! errors and no definitely-lost bytes. Elsewhere than CI (`CI` unset) a missing library or
//! Valgrind skips the part that needs it, with a message.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, s, stderr, stdout};

/// target/<profile>, where cargo puts libfastretrain.{a,so} beside this test's deps/ folder.
fn library_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.to_path_buf();
    let found = dir.join("libfastretrain.a").exists() && dir.join("libfastretrain.so").exists();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must test the C library: libfastretrain.a/.so not found in {}",
            dir.display()
        );
        eprintln!(
            "skipped: no libfastretrain.a/.so in {} (cargo build --release -p fastretrain-capi)",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

/// The example `source` (in examples/c) compiled against the static or the shared library,
/// with warnings as errors.
fn compile(lib: &Path, source: &str, shared: bool, out: &Path) -> PathBuf {
    compile_with("cc", lib, source, shared, out)
}

/// [`compile`] with the C compiler `compiler` (a cross compiler for the ARM libraries in
/// `lib`, tests/arm.rs).
pub(crate) fn compile_with(
    compiler: &str,
    lib: &Path,
    source: &str,
    shared: bool,
    out: &Path,
) -> PathBuf {
    let root = common::root();
    let stem = source.trim_end_matches(".c");
    let exe = out.join(if shared {
        format!("{stem}-shared")
    } else {
        format!("{stem}-static")
    });
    let mut cc = Command::new(compiler);
    cc.args([
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-O1",
        "-g",
        "-D_DEFAULT_SOURCE",
    ])
    .arg("-I")
    .arg(root.join("capi/include"))
    .arg(root.join("examples/c").join(source))
    .arg("-o")
    .arg(&exe);
    if shared {
        cc.arg(format!("-L{}", lib.display()))
            .arg("-lfastretrain")
            .arg("-lm")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    } else {
        // What a Rust static library needs from the system (rustc --print native-static-libs).
        cc.arg(lib.join("libfastretrain.a")).args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ]);
    }
    let built = cc.output().expect("the C compiler runs");
    assert!(built.status.success(), "{compiler}: {}", stderr(&built));
    exe
}

fn photos() -> Vec<PathBuf> {
    [
        "Bag/test_00018.png",
        "Sneaker/test_00009.png",
        "Trouser/test_00002.png",
    ]
    .iter()
    .map(|p| common::data("zoo/fashion/test").join(p))
    .collect()
}

/// The example's "IMAGE<TAB>label<TAB>score" lines.
fn printed(out: &std::process::Output) -> Vec<(String, String, f64)> {
    assert!(out.status.success(), "example failed: {}", stderr(out));
    stdout(out)
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split('\t').collect();
            assert_eq!(parts.len(), 3, "{line}");
            (parts[0].into(), parts[1].into(), parts[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn the_c_example_learns_predicts_and_saves_as_the_cli_would() {
    let Some(lib) = library_dir() else { return };
    let dir = common::temp_dir("capi");
    let model = common::root().join("models/mobilenetv2.onnx");
    let folder = common::data("zoo/fashion/train");
    let photos = photos();
    let mut runs = Vec::new();
    for shared in [false, true] {
        let exe = compile(&lib, "learn_predict.c", shared, &dir);
        let state = dir.join(if shared { "shared.frs" } else { "static.frs" });
        let out = Command::new(&exe)
            .args([s(&model), s(&folder), "3", s(&state)])
            .args(photos.iter().map(|p| s(p)))
            .current_dir(&dir)
            .output()
            .unwrap();
        runs.push(printed(&out));
    }
    assert_eq!(
        runs[0], runs[1],
        "static and shared builds printed different results"
    );
    let lines = &runs[1];
    assert_eq!(lines.len(), 3 * (photos.len() + 1), "{lines:?}");

    let state = dir.join("shared.frs");
    let info = common::json_of(&common::run(
        &dir,
        &["info", "--json", "--state", s(&state)],
    ));
    assert_eq!(info["samples"].as_f64(), Some(30.0), "{info}");

    let mut args = vec!["predict", "--json", "-k", "3", "--state", s(&state)];
    args.extend(photos.iter().map(|p| s(p)));
    let cli = common::json_of(&common::run(&dir, &args));
    let mut worst = 0.0f64;
    for (i, (prediction, photo)) in cli.as_array().unwrap().iter().zip(&photos).enumerate() {
        let top = prediction["top"].as_array().unwrap();
        let ours = &lines[3 * i..3 * i + 3];
        for (c, (image, label, score)) in top.iter().zip(ours) {
            assert_eq!(image, s(photo));
            assert_eq!(c["label"].as_str(), Some(label.as_str()));
            worst = worst.max((c["score"].as_f64().unwrap() - score).abs());
        }
    }
    // The first photo again from its pixels in memory.
    for (from_file, from_pixels) in lines[..3].iter().zip(&lines[3 * photos.len()..]) {
        assert_eq!(from_pixels.0, "pixels");
        assert_eq!(from_file.1, from_pixels.1);
        worst = worst.max((from_file.2 - from_pixels.2).abs());
    }
    assert!(worst < 1e-5, "C and CLI scores differ by {worst}");
}

#[test]
fn the_c_tensor_example_learns_forgets_and_predicts_as_the_cli_would() {
    let Some(lib) = library_dir() else { return };
    let dir = common::temp_dir("capi-tensor");
    let model = common::data("signal/imu_mlp.onnx");
    let mut runs = Vec::new();
    for shared in [false, true] {
        let exe = compile(&lib, "tensor_samples.c", shared, &dir);
        let state = dir.join(if shared { "shared.frs" } else { "static.frs" });
        let out = Command::new(&exe)
            .args([s(&model), s(&state), s(&dir.join("window.npy"))])
            .current_dir(&dir)
            .output()
            .unwrap();
        runs.push(printed(&out));
        // Every refusal of a bad tensor came back with a status and a message.
        assert!(
            !stderr(&out).contains("NOT AS EXPECTED"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        runs[0], runs[1],
        "static and shared builds printed different results"
    );
    let lines: Vec<_> = runs[1].iter().filter(|l| l.0 == "window").collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let state = dir.join("shared.frs");
    let info = common::json_of(&common::run(
        &dir,
        &["info", "--json", "--state", s(&state)],
    ));
    // Four gestures of 16 learned, the fourth forgotten again.
    assert_eq!(info["samples"].as_f64(), Some(48.0), "{info}");
    let cli = common::json_of(&common::run(
        &dir,
        &[
            "predict",
            "--json",
            "-k",
            "3",
            "--state",
            s(&state),
            s(&dir.join("window.npy")),
        ],
    ));
    let top = cli[0]["top"].as_array().unwrap();
    let mut worst = 0.0f64;
    for (c, (_, label, score)) in top.iter().zip(&lines) {
        assert_eq!(c["label"].as_str(), Some(label.as_str()));
        worst = worst.max((c["score"].as_f64().unwrap() - score).abs());
    }
    assert!(worst < 1e-5, "C and CLI scores differ by {worst}");
}

#[test]
fn the_c_example_is_clean_under_valgrind_on_every_path() {
    let Some(lib) = library_dir() else { return };
    if Command::new("valgrind").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the C example under Valgrind (apt install valgrind)"
        );
        eprintln!("skipped: no valgrind");
        return;
    }
    let dir = common::temp_dir("capi-valgrind");
    let exe = compile(&lib, "learn_predict.c", true, &dir);
    let tensor_exe = compile(&lib, "tensor_samples.c", true, &dir);
    let model = common::tiny_model();
    let imu = common::data("signal/imu_mlp.onnx");
    let folder = common::data("zoo/fashion/train");
    let photo = photos().remove(0);
    let state = dir.join("valgrind.frs");
    let (tensor_state, window) = (dir.join("tensor.frs"), dir.join("window.npy"));
    let runs: [(&PathBuf, Vec<&str>); 3] = [
        (&exe, vec!["--errors", &model, s(&folder)]),
        (&exe, vec![&model, s(&folder), "2", s(&state), s(&photo)]),
        (&tensor_exe, vec![s(&imu), s(&tensor_state), s(&window)]),
    ];
    for (exe, args) in runs {
        let out = Command::new("valgrind")
            .args([
                "--error-exitcode=99",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--show-leak-kinds=definite",
            ])
            // One report inside tract's model optimizer, explained in the file.
            .arg(format!(
                "--suppressions={}",
                common::root().join("capi/valgrind.supp").display()
            ))
            .arg(exe)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let report = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?} under valgrind:\n{}\n{report}",
            stdout(&out)
        );
        assert!(
            report.contains("ERROR SUMMARY: 0 errors"),
            "{args:?} under valgrind:\n{report}"
        );
        if args[0] == "--errors" {
            assert!(
                stdout(&out).contains("all refused as expected"),
                "{}",
                stdout(&out)
            );
        }
    }
}

/// A C++ application includes the same header (its `extern "C"` block) and links the shared
/// library: built with the system `c++` with warnings as errors, it opens a model and reports a
/// missing one through the status and the message.
#[test]
fn the_header_serves_a_cpp_program() {
    let Some(lib) = library_dir() else { return };
    let dir = common::temp_dir("capi-cpp");
    let source = dir.join("app.cpp");
    std::fs::write(
        &source,
        r#"#include "fastretrain.h"
#include <cstdio>
#include <string>

int main(int argc, char **argv) {
    FastretrainRetrainer *r = nullptr;
    if (fastretrain_open("no-such-model.onnx", nullptr, 0, &r) == FASTRETRAIN_STATUS_OK) return 1;
    std::string missing = fastretrain_last_error();
    if (argc < 2 || fastretrain_open(argv[1], nullptr, 1, &r) != FASTRETRAIN_STATUS_OK) return 1;
    FastretrainInfo info{};
    if (fastretrain_info(r, &info) != FASTRETRAIN_STATUS_OK) return 1;
    std::printf("%s\t%zu\t%s\n", fastretrain_version(), info.dim, missing.c_str());
    fastretrain_free(r);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.join("app");
    let built = Command::new("c++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(common::root().join("capi/include"))
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lfastretrain")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .expect("c++ runs");
    assert!(built.status.success(), "c++: {}", stderr(&built));
    let model = common::data("signal/imu_mlp.onnx");
    let out = Command::new(&exe)
        .arg(&model)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let fields: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(fields[0], env!("CARGO_PKG_VERSION"));
    assert_eq!(fields[1], "64");
    assert!(fields[2].contains("no-such-model.onnx"), "{line}");
}
