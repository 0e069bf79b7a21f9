//! Our image entry point: format sniffing, JPEG completeness, pixel cap, decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = fastretrain_core::preprocess::decode_image_bytes(data, Path::new("fuzz.img"));
});
