//! From a sample to its penultimate features: preprocessing plus the frozen backbone.

use std::path::Path;

use crate::backbone::Backbone;
use crate::data::Sample;
use crate::error::{Error, Result};
use crate::preprocess::{Pixels, Preprocessor, decode_image_file};

/// Reusable buffers around one backbone: one image in flight at a time.
#[derive(Debug)]
pub struct FeatureExtractor {
    backbone: Backbone,
    preprocessor: Preprocessor,
    input: Vec<f32>,
}

impl FeatureExtractor {
    pub fn new(backbone: Backbone) -> Self {
        let preprocessor = Preprocessor::new(backbone.spec());
        let input = vec![0.0; preprocessor.input_len()];
        FeatureExtractor {
            backbone,
            preprocessor,
            input,
        }
    }

    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    pub fn dim(&self) -> usize {
        self.backbone.feature_dim()
    }

    /// Features of decoded pixels, written into `out` (length [`Self::dim`]). Non-finite
    /// features (a broken model or input) are an error naming `what`.
    pub fn pixels_into(&mut self, pixels: &Pixels, what: &str, out: &mut [f32]) -> Result<()> {
        self.preprocessor.tensor_into(pixels, &mut self.input);
        self.backbone.features_into(&self.input, out)?;
        if !out.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteFeatures {
                what: format!("{what} through {}", self.backbone.model_path().display()),
            });
        }
        Ok(())
    }

    pub fn sample(&mut self, sample: &Sample) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.dim()];
        self.pixels_into(&sample.pixels, &sample.id, &mut out)?;
        Ok(out)
    }

    pub fn image_file(&mut self, path: &Path) -> Result<Vec<f32>> {
        let pixels = decode_image_file(path)?;
        let mut out = vec![0.0; self.dim()];
        self.pixels_into(&pixels, &path.display().to_string(), &mut out)?;
        Ok(out)
    }
}
