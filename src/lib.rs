//! fastretrain: adapt a pretrained ONNX classifier to local data on the device, with no
//! backprop. A frozen backbone ([`backbone`], tract) turns samples ([`data`],
//! [`preprocess`]) into penultimate features ([`features`]); they are folded into Gram
//! statistics whose size does not grow with the number of samples ([`solver`]); the dense head
//! is refit in closed form ([`head`]) and everything persists in one checksummed file
//! ([`state`]). [`retrainer`] ties the chain together; the `fastretrain` binary is a thin CLI
//! over it. With the `train` feature, [`train`] adds the desktop full retraining (SGD on a
//! random share of the conv layers + MP refit of the head, on burn).

#[cfg(feature = "backbone")]
pub mod backbone;
#[cfg(feature = "backbone")]
pub mod benchmark;
pub mod data;
pub mod durable;
pub mod error;
pub mod evaluation;
#[cfg(feature = "backbone")]
pub mod export;
#[cfg(feature = "backbone")]
pub mod features;
pub mod fitting;
pub mod head;
#[cfg(feature = "backbone")]
pub mod onnx;
pub mod preprocess;
pub mod recompute;
#[cfg(feature = "backbone")]
pub mod retrainer;
pub mod rng;
pub mod solver;
pub mod spec;
pub mod state;
pub mod store;
#[cfg(feature = "train")]
pub mod train;

pub use error::{Error, Result};
