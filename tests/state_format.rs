//! The state file: round trip, and every kind of damage is a clear error, never a panic.

use crate::common;

use fastretrain::error::Error;
use fastretrain::state::Fingerprint;
use fastretrain::state::{FORMAT_VERSION, State};

fn sample_state() -> State {
    let fp = Fingerprint {
        model_sha256: "ab".repeat(32),
        feature_tensor: "features".into(),
        feature_dim: 5,
    };
    let mut state = State::new(fp, "model.onnx".as_ref());
    let feats: Vec<f32> = (0..60).map(|i| ((i * 7 % 13) as f32) / 5.0 - 1.0).collect();
    let labels: Vec<usize> = [
        "cat", "dog", "cat", "bird", "dog", "cat", "dog", "bird", "cat", "dog", "bird", "cat",
    ]
    .iter()
    .map(|l| state.label_index(l))
    .collect();
    state.fold(&feats, &labels, "test", None).unwrap();
    state.record_source("somewhere", 12, 12);
    state.fit(None).unwrap();
    state
}

#[test]
fn round_trip_through_a_file() {
    let dir = common::temp_dir("state");
    let state = sample_state();
    let path = dir.join("s.frs");
    state.save(&path).unwrap();
    assert_eq!(State::load(&path).unwrap(), state);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn every_truncation_is_detected() {
    let bytes = sample_state().to_bytes().unwrap();
    for len in 0..bytes.len() {
        match State::from_bytes(&bytes[..len], "t.frs".as_ref()) {
            Err(Error::CorruptState { .. }) => {}
            other => panic!("truncated to {len} bytes: {other:?}"),
        }
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let bytes = sample_state().to_bytes().unwrap();
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 1 << (i % 8);
        let r = State::from_bytes(&b, "f.frs".as_ref());
        assert!(
            matches!(
                r,
                Err(Error::CorruptState { .. } | Error::StateVersion { .. })
            ),
            "flip at {i}: {r:?}"
        );
    }
}

#[test]
fn future_format_version_is_refused_with_advice() {
    let mut bytes = sample_state().to_bytes().unwrap();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = State::from_bytes(&bytes, "v.frs".as_ref()).unwrap_err();
    assert!(matches!(err, Error::StateVersion { .. }));
    assert!(err.to_string().contains("upgrade fastretrain"));
}

#[test]
fn saving_into_a_missing_folder_fails_cleanly() {
    let dir = common::temp_dir("state-missing");
    let err = sample_state()
        .save(&dir.join("no/such/dir/s.frs"))
        .unwrap_err();
    assert!(err.to_string().contains("could not save"), "{err}");
}

#[test]
fn saving_over_an_existing_state_replaces_it_whole() {
    let dir = common::temp_dir("state-replace");
    let path = dir.join("s.frs");
    let mut state = sample_state();
    state.save(&path).unwrap();
    state.record_source("more", 1, 1);
    state.save(&path).unwrap();
    assert_eq!(State::load(&path).unwrap(), state);
}

#[test]
fn a_huge_payload_length_is_refused_not_overflowed() {
    // Regression: found by cargo-fuzz (fuzz/artifacts/state), `len + 52` overflowed.
    for len in [u64::MAX, u64::MAX - 51, u64::MAX - 52, u64::MAX / 2] {
        let mut bytes = sample_state().to_bytes().unwrap();
        bytes[12..20].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            State::from_bytes(&bytes, "huge.frs".as_ref()),
            Err(Error::CorruptState { .. })
        ));
    }
}

#[test]
fn version_1_states_are_read_and_upgraded() {
    let path = common::data("hostile/states/other_backbone.frs");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    let state = State::load(&path).unwrap();
    let head = state.head().expect("v1 state has a head");
    assert!(head.hidden.is_empty());
    assert_eq!(head.method, fastretrain::head::MethodName::Gram);
    assert!(!state.decayed());
    let upgraded = state.to_bytes().unwrap();
    assert_eq!(
        u32::from_le_bytes(upgraded[8..12].try_into().unwrap()),
        FORMAT_VERSION
    );
    assert_eq!(State::from_bytes(&upgraded, &path).unwrap(), state);
}

/// `predict` reads the head alone: the same state as a full load with the statistics dropped,
/// for version 2 and version 1 files, and damage is refused the same way.
#[test]
fn head_only_read_equals_full_read_without_statistics() {
    let dir = common::temp_dir("state-head-only");
    let path = dir.join("s.frs");
    let state = sample_state();
    state.save(&path).unwrap();
    let v1 = common::data("hostile/states/other_backbone.frs");
    for path in [&path, &v1] {
        let mut full = State::load(path).unwrap();
        full.drop_statistics();
        let head_only = State::load_head_only(path).unwrap();
        assert!(head_only.head().is_some());
        assert_eq!(head_only, full);
    }
    let bytes = state.to_bytes().unwrap();
    let damaged = dir.join("damaged.frs");
    for len in (0..bytes.len()).step_by(5) {
        std::fs::write(&damaged, &bytes[..len]).unwrap();
        assert!(
            matches!(
                State::load_head_only(&damaged),
                Err(Error::CorruptState { .. })
            ),
            "truncated to {len} bytes"
        );
    }
}
