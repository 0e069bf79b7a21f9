//! Bounded randomized testing of every decoder we own: the state file (with and without its
//! checksum), IDX files, the model spec, and our image entry point. Each must return Ok or a
//! clear error on any input, never panic. CI runs these (PROPTEST_CASES raises the count);
//! coverage-guided cargo-fuzz targets for the same decoders live in fuzz/.

use crate::common;

use std::path::Path;

use fastretrain::data::{DataOptions, DataSource};
use fastretrain::spec::ModelSpec;
use fastretrain::state::Fingerprint;
use fastretrain::state::State;
use proptest::prelude::*;

fn valid_state_bytes() -> Vec<u8> {
    let fp = Fingerprint {
        model_sha256: "cd".repeat(32),
        feature_tensor: "features".into(),
        feature_dim: 3,
    };
    let mut state = State::new(fp, "m.onnx".as_ref());
    let feats = [0.5f32, -1.0, 2.0, 1.5, 0.0, -0.5, 3.0, 1.0, 1.0];
    let labels: Vec<usize> = ["a", "b", "a"]
        .iter()
        .map(|l| state.label_index(l))
        .collect();
    state.fold(&feats, &labels, "t", None).unwrap();
    state.record_source("src", 3, 3);
    state.fit(Some(1.0)).unwrap();
    state.to_bytes().unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if !bytes.is_empty() {
                    bytes[i % len] ^= b;
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            Mutation::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Overwrite(i, v) => {
                for (k, b) in v.iter().enumerate() {
                    if let Some(x) = bytes.get_mut((i % len) + k) {
                        *x = *b;
                    }
                }
            }
        }
    }
    bytes
}

const HEADER_LEN: usize = 20;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn state_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = State::from_bytes(&bytes, Path::new("fuzz.frs"));
        let _ = State::from_payload(&bytes, Path::new("fuzz.frs"));
    }

    #[test]
    fn mutated_state_is_refused_or_identical(mutations in prop::collection::vec(mutation(), 1..4)) {
        let valid = valid_state_bytes();
        let bytes = mutate(valid.clone(), &mutations);
        match State::from_bytes(&bytes, Path::new("fuzz.frs")) {
            Ok(s) => prop_assert_eq!(s.to_bytes().unwrap(), valid),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn mutated_payload_behind_the_checksum(mutations in prop::collection::vec(mutation(), 1..4)) {
        let valid = valid_state_bytes();
        let payload = valid[HEADER_LEN..valid.len() - 32].to_vec();
        let _ = State::from_payload(&mutate(payload, &mutations), Path::new("fuzz.frs"));
    }

    #[test]
    fn spec_from_mutated_json(mutations in prop::collection::vec(mutation(), 1..4)) {
        let valid = std::fs::read(common::root().join("models/mobilenetv2.json")).unwrap();
        let text = String::from_utf8_lossy(&mutate(valid, &mutations)).into_owned();
        let _ = ModelSpec::parse(&text, Path::new("fuzz.json"));
    }

    #[test]
    fn spec_from_arbitrary_text(text in ".{0,300}") {
        let _ = ModelSpec::parse(&text, Path::new("fuzz.json"));
    }

    #[test]
    fn image_from_mutated_png_and_jpeg(mutations in prop::collection::vec(mutation(), 1..3), jpeg in any::<bool>()) {
        let name = if jpeg { "hostile/images/ok/grey.jpg" } else { "hostile/images/ok/palette.png" };
        let bytes = mutate(std::fs::read(common::data(name)).unwrap(), &mutations);
        let _ = fastretrain::preprocess::decode_image_bytes(&bytes, Path::new(name));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn idx_from_mutated_files(image_mutations in prop::collection::vec(mutation(), 0..3),
                              label_mutations in prop::collection::vec(mutation(), 0..3)) {
        let dir = common::temp_dir("fuzz-idx");
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6];
        images.extend((0..120).map(|i| i as u8));
        let mut labels = vec![0, 0, 8, 1, 0, 0, 0, 4];
        labels.extend([0, 1, 2, 3]);
        std::fs::write(dir.join("f-images-idx3-ubyte"), mutate(images, &image_mutations)).unwrap();
        std::fs::write(dir.join("f-labels-idx1-ubyte"), mutate(labels, &label_mutations)).unwrap();
        if let Ok(source) = DataSource::open(&dir.join("f-images-idx3-ubyte"), &DataOptions::default()) {
            for sample in source.take(64) {
                let _ = sample;
            }
        }
    }
}

/// A small valid feature store (2 chunks), written through the library.
fn valid_store_bytes(dir: &Path) -> Vec<u8> {
    use fastretrain::store::{Precision, StoreHeader, StoreWriter};
    let path = dir.join("valid.frf");
    let header = StoreHeader {
        backbone: Fingerprint {
            model_sha256: "ab".repeat(32),
            feature_tensor: "features".into(),
            feature_dim: 3,
        },
        model_path: "m.onnx".into(),
        precision: Precision::F16,
        chunk_rows: 2,
    };
    let mut writer = StoreWriter::create(&path, header).unwrap();
    for (i, label) in ["a", "b", "a"].iter().enumerate() {
        let row = [i as f32, 0.5, -1.0];
        writer.push("src", &row, label, "row").unwrap();
    }
    writer.flush().unwrap();
    std::fs::read(&path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_from_mutated_bytes(mutations in prop::collection::vec(mutation(), 1..4)) {
        use fastretrain::store::{FeatureBatches, FeatureStore};
        let dir = common::temp_dir("fuzz-store");
        let valid = valid_store_bytes(&dir);
        let path = dir.join("mutated.frf");
        std::fs::write(&path, mutate(valid, &mutations)).unwrap();
        if let Ok(store) = FeatureStore::open(&path) {
            let _ = store.for_each_batch(2, &mut |f, l| {
                assert_eq!(f.len(), l.len() * store.dim());
                Ok(())
            });
        }
    }
}
