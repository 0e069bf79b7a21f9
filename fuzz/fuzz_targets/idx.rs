//! IDX images + labels: the first input byte splits the data into the two files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let at = (split as usize).min(rest.len());
    let dir = std::env::temp_dir().join(format!("fastretrain-fuzz-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let images = dir.join("f-images-idx3-ubyte");
    std::fs::write(&images, &rest[at..]).unwrap();
    std::fs::write(dir.join("f-labels-idx1-ubyte"), &rest[..at]).unwrap();
    let options = fastretrain_core::data::DataOptions::default();
    if let Ok(source) = fastretrain_core::data::DataSource::open(&images, &options) {
        for sample in source.take(16) {
            let _ = sample;
        }
    }
});
