//! End-to-end tests of `merge`: merged states equal learning the union, and shards of one
//! source merge into the whole and resume.

use crate::common;

use std::path::Path;

use common::{json_of, photo_folder, run, stderr, tiny_model};
use fastretrain::state::State;

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
    let (hm, hu) = (m.head().unwrap(), u.head().unwrap());
    assert_eq!(hm.labels, hu.labels);
    assert!(common::relative_error(&hm.weights, &hu.weights) < 1e-9);
    assert_eq!(m.stats().samples(), 8.0);
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
    assert_eq!(m.stats().samples(), 130.0);
    assert_eq!(m.stats().class_counts().iter().sum::<f64>(), 130.0);
    let (gm, gw) = (m.stats().gram(), w.stats().gram());
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
    assert!(common::relative_error(&m.head().unwrap().weights, &w.head().unwrap().weights) < 1e-9);
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
    assert_eq!(both.stats().samples(), 43.0 + 20.0);
    // A state (or its copy) again later in the list, after another: still refused, naming
    // both files, with --distinct-sources too.
    for again in ["part1.frs", "copy.frs"] {
        let args = [
            "merge",
            "--out",
            "thrice.frs",
            "part1.frs",
            "other.frs",
            again,
            "--distinct-sources",
        ];
        let err = common::refused(&dir, &args, "bit for bit those of part1.frs");
        assert!(err.contains(again), "{err}");
        assert!(!dir.join("thrice.frs").exists());
    }
}
