//! The README's "Using your own model" and "Samples that are not images" walk-throughs, run line
//! by line as a user would type them (in a fresh folder where `tests/` is the repository's):
//! every command must do what the README says, and a line whose comment says it fails must fail
//! with a clear message.

use crate::common;

use std::process::Command;

use common::stderr;

/// The commands of the first ```sh block after the heading.
fn walkthrough(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let section = readme
        .split(heading)
        .nth(1)
        .expect("README has the section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(unix)]
#[test]
fn readme_own_model_walkthrough_runs() {
    let dir = common::temp_dir("readme");
    let ran = run_walkthrough("## Using your own model", &dir);
    for command in ["spec", "learn", "eval", "predict", "export"] {
        assert!(ran.iter().any(|c| c == command), "{command} not in {ran:?}");
    }
    assert!(dir.join("my-model.json").is_file());
    assert!(dir.join("my-adapted.onnx").is_file());
}

#[cfg(unix)]
#[test]
fn readme_tensor_walkthrough_runs() {
    let dir = common::temp_dir("readme-tensors");
    let ran = run_walkthrough("## Samples that are not images", &dir);
    for command in ["spec", "learn", "eval", "predict", "export"] {
        assert!(ran.iter().any(|c| c == command), "{command} not in {ran:?}");
    }
    assert!(common::json_file(&dir.join("kws.json"))["input"]["kind"] == "tensor");
    assert!(dir.join("kws-adapted.onnx").is_file());
}

/// Runs the walk-through under `heading` in `dir` (with `tests/` linked in); returns the
/// subcommands it ran.
#[cfg(unix)]
fn run_walkthrough(heading: &str, dir: &std::path::Path) -> Vec<String> {
    std::os::unix::fs::symlink(common::root().join("tests"), dir.join("tests")).unwrap();
    let lines = walkthrough(heading);
    assert!(lines.len() >= 6, "{lines:?}");
    let mut ran = Vec::new();
    for line in &lines {
        let (command, comment) = line.split_once("  #").unwrap_or((line, ""));
        let words: Vec<&str> = command.split_whitespace().collect();
        match words[0] {
            "cp" => {
                std::fs::copy(dir.join(words[1]), dir.join(words[2])).unwrap();
            }
            "fastretrain" => {
                let out = Command::new(env!("CARGO_BIN_EXE_fastretrain"))
                    .args(&words[1..])
                    .current_dir(dir)
                    .output()
                    .unwrap();
                let err = stderr(&out);
                if comment.contains("fails") {
                    assert_eq!(out.status.code(), Some(2), "{line}: {err}");
                    assert!(err.starts_with("error: "), "{line}: {err}");
                } else {
                    assert!(out.status.success(), "{line}: {err}");
                }
                ran.push(words[1].to_string());
            }
            other => panic!("the walk-through has a command the test does not know: {other}"),
        }
    }
    ran
}
