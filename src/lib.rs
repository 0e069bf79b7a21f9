//! fastretrain: adapt a pretrained ONNX classifier to local data on the device, with no
//! backprop. A frozen backbone ([`backbone`], tract) turns samples ([`data`],
//! [`preprocess`]) into penultimate features ([`features`]); they are folded into Gram
//! statistics whose size does not grow with the number of samples ([`solver`]); the dense head
//! is refit in closed form ([`head`]) and everything persists in one checksummed file
//! ([`state`]); [`export`] writes the adapted model as ONNX. The modules that run no model
//! ([`data`] to [`store`]) are the `fastretrain-core` crate (crates/core), re-exported here. [`retrainer`] ties the chain
//! together; the `fastretrain` binary is a thin CLI over it. With the `train` feature,
//! [`train`] adds the desktop full retraining (SGD on a random share of the conv layers + MP
//! refit of the head, on burn). docs/ARCHITECTURE.md draws the layers.
//!
//! Learn from the shipped Fashion-MNIST subset with the shipped MobileNetV2, then predict:
//!
//! ```
//! # #[cfg(feature = "backbone")] {
//! use std::path::Path;
//! use fastretrain::backbone::Backbone;
//! use fastretrain::data::{DataOptions, DataSource};
//! use fastretrain::retrainer::{LearnOptions, Retrainer};
//!
//! # let root = Path::new(env!("CARGO_MANIFEST_DIR"));
//! let model = root.join("models/mobilenetv2.onnx"); // its spec, mobilenetv2.json, beside it
//! let backbone = Backbone::load(&model, None, None)?;
//! let mut retrainer = Retrainer::fresh(backbone)?;
//! let images = root.join("data/fashion-mnist/train-images-idx3-ubyte.gz");
//! let source = DataSource::open(&images, &DataOptions { limit: Some(20), ..Default::default() })?;
//! let learned = retrainer.learn(source, &LearnOptions::default(), |_| {}, |_| Ok(()))?;
//! assert_eq!(learned.samples, 20);
//!
//! let photo = root.join("tests/data/images/imagenet_00_243.png");
//! let prediction = retrainer.predict_file(&photo, 3)?;
//! println!("{}: {} ({:.3})", prediction.file, prediction.top[0].label, prediction.top[0].score);
//! retrainer.state().save(&std::env::temp_dir().join("fastretrain-doc.frs"))?;
//! # }
//! # Ok::<(), fastretrain::Error>(())
//! ```

// The model-free core (crates/core), re-exported under the same paths.
pub use fastretrain_core::{
    data, durable, error, evaluation, feature_recipe, fitting, head, preprocess, recompute, rng,
    solver, spec, state, store,
};

#[cfg(feature = "backbone")]
pub mod backbone;
#[cfg(feature = "backbone")]
pub mod benchmark;
#[cfg(feature = "backbone")]
pub mod export;
#[cfg(feature = "backbone")]
pub mod features;
#[cfg(feature = "backbone")]
pub mod onnx;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime_engine;
#[cfg(feature = "backbone")]
pub mod pack;
#[cfg(feature = "backbone")]
pub mod retrainer;
#[cfg(feature = "train")]
pub mod train;

pub use error::{Error, Result};
