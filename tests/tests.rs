//! The integration tests: one test binary whose modules are the former test files (as
//! ripgrep's tests/tests.rs), linked once instead of once per file. Run one module with
//! `cargo test --release --test tests <module>::` (e.g. `arm::`, `zoo::`).

mod common;

mod arm;
mod backbone_reference;
mod bench_smoke;
mod capi;
mod cli;
mod cli_errors;
mod cli_merge;
mod crash;
mod durability;
mod export;
mod export_onnxruntime;
mod fuzz_decoders;
mod hostile;
mod idx;
mod methods_reference;
mod onnxruntime_engine;
mod pack;
mod readme;
mod recipe_reference;
mod retrain;
mod retrain_families;
mod signal_zoo;
mod solver_reference;
mod state_format;
mod statistics_properties;
mod store;
mod stranger;
mod train_gradients;
mod zoo;
