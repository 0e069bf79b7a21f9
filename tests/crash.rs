//! Crash test: `learn --checkpoint-every 64` on real data (the shipped Fashion-MNIST subset)
//! is killed with SIGKILL at random moments. After every kill the state must load with a good
//! checksum; re-running resumes, and when a run completes its statistics must be bit-identical
//! to an uninterrupted run's. CI runs a short version; `scripts/ci/crash-test.sh` the long one
//! (CRASH_KILLS=1000). Model: CRASH_MODEL (default the tiny test CNN, so that a thousand runs
//! take minutes; `models/mobilenetv2.onnx` works too, with CRASH_LIMIT to keep runs short).

use crate::common;

use std::process::{Command, Stdio};
use std::time::Instant;

use fastretrain::state::State;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
fn killed_learning_always_leaves_a_loadable_state_and_resumes_exactly() {
    let kills_wanted: u64 = env_or("CRASH_KILLS", "24").parse().unwrap();
    let model = std::env::var("CRASH_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| common::data("models/tiny_cnn.onnx"));
    let limit = env_or("CRASH_LIMIT", "2000");
    let data = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let dir = common::temp_dir("crash");
    let learn = |state: &std::path::Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fastretrain"));
        cmd.args([
            "learn",
            "--checkpoint-every",
            "64",
            "--limit",
            &limit,
            "--state",
        ])
        .arg(state)
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        cmd
    };

    let reference = dir.join("reference.frs");
    let started = Instant::now();
    let out = learn(&reference).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_time = started.elapsed();
    let expected = State::load(&reference).unwrap();
    let expected_digest = expected.statistics_digest();

    let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
    let (mut kills, mut rounds, mut exact, mut checked) = (0u64, 0u64, 0u64, 0u64);
    let state = dir.join("crash.frs");
    while kills < kills_wanted {
        let _ = std::fs::remove_file(&state);
        rounds += 1;
        loop {
            let finished = common::run_or_kill(&mut learn(&state), run_time, &mut rng);
            if finished.is_none() {
                kills += 1;
            }
            if state.exists() {
                let loaded = State::load(&state)
                    .unwrap_or_else(|e| panic!("after kill {kills}: state does not load: {e}"));
                checked += 1;
                let consumed = loaded.sources().first().map_or(0, |s| s.consumed);
                assert_eq!(loaded.stats().samples() as u64, consumed, "counts disagree");
                assert!(
                    consumed.is_multiple_of(64) || consumed == expected.stats().samples() as u64
                );
            }
            if let Some(status) = finished {
                assert!(status.success());
                let done = State::load(&state).unwrap();
                assert_eq!(
                    done.statistics_digest(),
                    expected_digest,
                    "round {rounds}: resumed statistics differ"
                );
                assert_eq!(done.sources(), expected.sources());
                exact += 1;
                break;
            }
        }
    }
    eprintln!(
        "crash test: {kills} SIGKILLs over {rounds} rounds; {checked} states after kills checked, \
         0 corrupt; {exact} completed rounds bit-identical to the uninterrupted run"
    );
}
