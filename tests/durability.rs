//! Durability: a full disk while saving leaves the old state intact; two processes learning
//! into one state lose no update (writer lock); `--no-wait` fails clearly.

use crate::common;

use std::io::Write;
use std::process::Command;

use common::{run, stderr};
use fastretrain::state::Fingerprint;
use fastretrain::state::{DurableWrite, State, StateLock, write_atomically_to};

/// A file that reports ENOSPC once `budget` bytes have been written.
struct FullDisk {
    file: std::fs::File,
    budget: usize,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.budget == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        self.file.write(&buf[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl DurableWrite for FullDisk {
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

#[test]
fn full_disk_while_saving_keeps_the_old_state() {
    let dir = common::temp_dir("full-disk");
    let path = dir.join("s.frs");
    let fp = Fingerprint {
        model_sha256: "00".repeat(32),
        feature_tensor: "f".into(),
        feature_dim: 3,
    };
    let old = State::new(fp, "m.onnx".as_ref());
    old.save(&path).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();
    let mut new = old.clone();
    new.record_source("more", 1, 1);
    let bytes = new.to_bytes().unwrap();
    for budget in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        let err =
            write_atomically_to(&path, &bytes, |file| Ok(FullDisk { file, budget })).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("No space left on device"), "{msg}");
        assert!(msg.contains("previous file, if any, is unchanged"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }
    assert_eq!(State::load(&path).unwrap(), old);
}

#[test]
fn concurrent_learners_lose_no_update() {
    let dir = common::temp_dir("concurrent");
    let tiny = common::data("models/tiny_cnn.onnx");
    let fm = common::root().join("data/fashion-mnist");
    let state = dir.join("shared.frs");
    let spawn = |split: &str| {
        Command::new(env!("CARGO_BIN_EXE_fastretrain"))
            .args([
                "learn",
                "--state",
                state.to_str().unwrap(),
                "--model",
                tiny.to_str().unwrap(),
            ])
            .arg("--data")
            .arg(fm.join(format!("{split}-images-idx3-ubyte.gz")))
            .current_dir(&dir)
            .output()
    };
    for _ in 0..3 {
        let _ = std::fs::remove_file(&state);
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| spawn("train").unwrap());
            let b = s.spawn(|| spawn("t10k").unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(a.status.success(), "{}", stderr(&a));
        assert!(b.status.success(), "{}", stderr(&b));
        let merged = State::load(&state).unwrap();
        assert_eq!(merged.stats().samples(), 3000.0, "an update was lost");
        assert_eq!(merged.sources().len(), 2);
    }
}

#[test]
fn no_wait_fails_clearly_while_another_writer_holds_the_lock() {
    let dir = common::temp_dir("locked");
    let tiny = common::data("models/tiny_cnn.onnx");
    let data = common::root().join("data/fashion-mnist/t10k-images-idx3-ubyte.gz");
    let state = dir.join("s.frs");
    let lock = StateLock::acquire(&state, true).unwrap();
    let args = [
        "learn",
        "--state",
        state.to_str().unwrap(),
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "50",
    ];
    let mut no_wait = args.to_vec();
    no_wait.push("--no-wait");
    let out = run(&dir, &no_wait);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("another fastretrain process is writing this state"),
        "{}",
        stderr(&out)
    );
    assert!(!state.exists());
    // Without --no-wait the learner waits, then proceeds once the lock is released.
    let child = Command::new(env!("CARGO_BIN_EXE_fastretrain"))
        .args(args)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!state.exists(), "learned while the lock was held");
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(State::load(&state).unwrap().stats().samples(), 50.0);
}
