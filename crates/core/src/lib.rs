//! fastretrain's core: everything of the retrainer that does not run a model. Samples are
//! decoded and preprocessed ([`data`], [`preprocess`], [`spec`]); the features a backbone makes of
//! them are folded into statistics whose size does not grow with the number of samples
//! ([`solver`]), from which the dense head is refit in closed form ([`head`], [`fitting`],
//! [`recompute`]); the statistics, labels and the backbone's fingerprint persist in one
//! checksummed file ([`state`], written through [`durable`]), and features can be kept on disk in
//! f16 ([`store`]). [`feature_recipe`] says what a feature vector is made of; [`evaluation`]
//! scores a head.
//!
//! This crate uses no inference engine (no tract, no burn): the `fastretrain` crate adds the
//! backbone runner, export and the CLI on top of it and re-exports every module here under the
//! same name, so `fastretrain::solver` and `fastretrain_core::solver` are one module.

pub mod data;
pub mod durable;
pub mod error;
pub mod evaluation;
pub mod feature_recipe;
pub mod fitting;
pub mod head;
pub mod preprocess;
pub mod recompute;
pub mod rng;
pub mod solver;
pub mod spec;
pub mod state;
pub mod store;

pub use error::{Error, Result};
// The matrix types of the public API (feature rows and images as ndarray views, a head's
// weights as a nalgebra view), re-exported so that callers name the same versions.
pub use nalgebra;
pub use ndarray;
