//! IDX streaming: the shipped subset, the full Fashion-MNIST from Debian's
//! `dataset-fashion-mnist` (installed by .ci/run), and files with lying headers.

use crate::common;

use std::io::Write;
use std::path::Path;

use fastretrain::data::{DataOptions, DataSource};
use fastretrain::error::Error;
use fastretrain::preprocess::SampleInput;

fn write_gz(path: &Path, bytes: &[u8]) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap();
}

fn idx_header(kind: u8, dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, 0x08, kind];
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

fn label_counts(source: DataSource) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for s in source {
        let s = s.unwrap();
        let SampleInput::Pixels(pixels) = &s.input else {
            panic!("IDX records are images");
        };
        assert_eq!((pixels.width, pixels.height, pixels.channels), (28, 28, 1));
        *counts.entry(s.label.unwrap()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn shipped_subset_streams_with_class_names() {
    let images = common::root().join("data/fashion-mnist/train-images-idx3-ubyte.gz");
    let source = DataSource::open(&images, &DataOptions::default()).unwrap();
    assert_eq!(source.len(), 2000);
    let counts = label_counts(source);
    assert_eq!(counts.len(), 10);
    assert_eq!(counts.values().sum::<usize>(), 2000);
    assert!(counts.contains_key("Ankle boot"));
    // The reference labels, independent of our reader.
    let reference = common::json("fashion_reference.json");
    let names = reference["class_names"].as_array().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for l in reference["train_labels"].as_array().unwrap() {
        *expected
            .entry(
                names[l.as_u64().unwrap() as usize]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
            .or_insert(0) += 1;
    }
    assert_eq!(counts, expected);
}

#[test]
fn full_fashion_mnist_from_debian() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install dataset-fashion-mnist"
        );
        eprintln!(
            "skipped: {} not installed (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    for (file, n) in [
        ("train-images-idx3-ubyte.gz", 60_000),
        ("t10k-images-idx3-ubyte.gz", 10_000),
    ] {
        let source = DataSource::open(&dir.join(file), &DataOptions::default()).unwrap();
        assert_eq!(source.len(), n);
        let counts = label_counts(source);
        assert_eq!(counts.len(), 10);
        assert!(counts.values().all(|&c| c == n / 10), "{counts:?}");
    }
}

#[test]
fn lying_headers_are_clear_errors() {
    let dir = common::temp_dir("idx");
    let images = dir.join("x-images-idx3-ubyte.gz");
    let labels = dir.join("x-labels-idx1-ubyte.gz");

    // Claims 100 images, holds 3.
    let mut img = idx_header(3, &[100, 28, 28]);
    img.extend(vec![7u8; 3 * 784]);
    write_gz(&images, &img);
    let mut lab = idx_header(1, &[100]);
    lab.extend(vec![1u8; 100]);
    write_gz(&labels, &lab);
    let results: Vec<_> = DataSource::open(&images, &DataOptions::default())
        .unwrap()
        .collect();
    assert_eq!(
        results.len(),
        4,
        "three samples, then one error, then the end"
    );
    let err = results[3].as_ref().unwrap_err().to_string();
    assert!(err.contains("ends after 3 of 100 images"), "{err}");

    // Label count differs from image count.
    write_gz(&labels, &idx_header(1, &[99]));
    let err = DataSource::open(&images, &DataOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("holds 99 labels but the images file holds 100"),
        "{err}"
    );

    // Not IDX at all; implausible sizes.
    write_gz(&images, b"hello world, not idx");
    let err = DataSource::open(&images, &DataOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not an IDX file"), "{err}");
    write_gz(&images, &idx_header(3, &[1, 100_000, 100_000]));
    write_gz(&labels, &idx_header(1, &[1]));
    let err = DataSource::open(&images, &DataOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not plausible"), "{err}");

    // A label number without a name.
    let mut img = idx_header(3, &[1, 2, 2]);
    img.extend([0u8; 4]);
    write_gz(&images, &img);
    let mut lab = idx_header(1, &[1]);
    lab.push(12);
    write_gz(&labels, &lab);
    std::fs::write(dir.join("names.txt"), "a\nb\n").unwrap();
    let options = DataOptions {
        label_names: Some(dir.join("names.txt")),
        ..Default::default()
    };
    let mut source = DataSource::open(&images, &options).unwrap();
    let err = source.next().unwrap().unwrap_err();
    assert!(matches!(err, Error::Data { .. }));
    assert!(
        err.to_string().contains("label 12 but only 2 names"),
        "{err}"
    );
}
