//! The state file decoder, whole (magic, version, checksum) and behind the checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = fastretrain_core::state::State::from_bytes(data, Path::new("fuzz.frs"));
    let _ = fastretrain_core::state::State::from_payload(data, Path::new("fuzz.frs"));
});
