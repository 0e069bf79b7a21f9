//! fastretrain: adapt a pretrained ONNX classifier to local data on the device, with no
//! backprop. A frozen backbone ([`backbone`], tract) turns samples ([`data`],
//! [`preprocess`]) into penultimate features ([`features`]); they are folded into Gram
//! statistics whose size does not grow with the number of samples ([`solver`]); the dense head
//! is refit in closed form ([`head`]) and everything persists in one checksummed file
//! ([`state`]); [`export`] writes the adapted model as ONNX. [`retrainer`] ties the chain
//! together; the `fastretrain` binary is a thin CLI over it. The modules that run no model
//! ([`data`], [`solver`], [`state`], …) are the `fastretrain-core` crate (crates/core),
//! re-exported here under the same names. With the `train` feature,
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
//!
//! # Embedding it in a program
//!
//! A program on a board holds a model file and gets images in memory (a camera's frames). It
//! needs four calls: load the backbone (its threads are a load option), learn from the frames,
//! predict, save the state (atomically; [`state::State::load`] reads it back).
//!
//! ```
//! # #[cfg(feature = "backbone")] {
//! use std::path::Path;
//! use fastretrain::backbone::{Backbone, LoadOptions};
//! use fastretrain::data::{DataSource, SampleList};
//! use fastretrain::ndarray::Array4;
//! use fastretrain::retrainer::{LearnOptions, Retrainer};
//!
//! # let root = Path::new(env!("CARGO_MANIFEST_DIR"));
//! // Load: the model with its spec (mobilenetv2.json beside it), on two cores.
//! let options = LoadOptions { threads: Some(2), ..LoadOptions::default() };
//! let backbone = Backbone::load_with(&root.join("models/mobilenetv2.onnx"), None, &options)?;
//! let mut retrainer = Retrainer::fresh(backbone)?;
//!
//! // Learn from memory: six 8-bit RGB frames, (n, height, width, 3), three dark, three light.
//! let frames = Array4::from_shape_fn((6, 48, 64, 3), |(i, y, x, _)| {
//!     let base = if i < 3 { 30 } else { 200 };
//!     (base + (x + y + 7 * i) % 40) as u8
//! });
//! let labels: Vec<String> = ["dark", "dark", "dark", "light", "light", "light"]
//!     .map(String::from)
//!     .to_vec();
//! let frames_in = SampleList::from_images(frames.view().into_dyn(), Some(labels))?;
//! let learned = retrainer.learn(DataSource::List(frames_in), &LearnOptions::default(), |_| {}, |_| Ok(()))?;
//! assert_eq!(learned.samples, 6);
//!
//! // Predict: the best label of a new frame, from memory too.
//! let frame = frames.slice(fastretrain::ndarray::s![5..6, .., .., ..]).to_owned();
//! let unlabelled = SampleList::from_images(frame.view().into_dyn(), None)?;
//! let samples: Vec<_> = DataSource::List(unlabelled).collect::<Result<_, _>>()?;
//! let top = retrainer.predict(&samples, 1)?;
//! assert_eq!(top[0][0].label, "light");
//!
//! // Save: written whole or not at all.
//! retrainer.state().save(&std::env::temp_dir().join("fastretrain-embedding.frs"))?;
//! # }
//! # Ok::<(), fastretrain::Error>(())
//! ```

// The model-free core (crates/core), re-exported under the same paths.
pub use fastretrain_core::{
    data, durable, error, evaluation, feature_recipe, fitting, head, nalgebra, ndarray, preprocess,
    recompute, rng, solver, spec, state, store,
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
