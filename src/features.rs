//! From a sample to its penultimate features: preprocessing plus the frozen backbone.

use std::path::Path;
use std::time::Instant;

use crate::backbone::Backbone;
use crate::data::{DataSource, Sample};
use crate::error::{Error, Result};
use crate::preprocess::{Pixels, Preprocessor, decode_image_file};
use crate::store::StoreWriter;

/// Reusable buffers around one backbone: one image in flight at a time.
#[derive(Debug)]
pub struct FeatureExtractor {
    backbone: Backbone,
    preprocessor: Preprocessor,
    input: Vec<f32>,
    times: StageTimes,
}

/// Where the time of a run went, in seconds (what [`crate::retrainer::Retrainer::learn`]
/// reports; the benchmarks table it).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StageTimes {
    /// Reading and decoding samples.
    pub decode: f64,
    /// Resize, crop, normalise into the input tensor.
    pub preprocess: f64,
    /// The backbone's forward pass.
    pub forward: f64,
    /// Folding features into the statistics (rank-k updates).
    pub accumulate: f64,
}

impl FeatureExtractor {
    pub fn new(backbone: Backbone) -> Self {
        let preprocessor = Preprocessor::new(backbone.spec());
        let input = vec![0.0; preprocessor.input_len()];
        FeatureExtractor {
            backbone,
            preprocessor,
            input,
            times: StageTimes::default(),
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
        let started = Instant::now();
        self.preprocessor.tensor_into(pixels, &mut self.input);
        let preprocessed = Instant::now();
        self.backbone.features_into(&self.input, out)?;
        self.times.preprocess += (preprocessed - started).as_secs_f64();
        self.times.forward += preprocessed.elapsed().as_secs_f64();
        if !out.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteFeatures {
                what: format!("{what} through {}", self.backbone.model_path().display()),
            });
        }
        Ok(())
    }

    /// Preprocess and forward time since the last call (the other stages stay 0).
    pub fn take_times(&mut self) -> StageTimes {
        std::mem::take(&mut self.times)
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

/// What [`extract_to_store`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtractReport {
    pub source: String,
    /// Records of this source the store already held (skipped now).
    pub resumed_after: u64,
    pub rows: u64,
    pub skipped: Vec<String>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Streams `source` through the backbone into a feature store, resuming after the
/// `resumed_after` records the store already holds for this source. Undecodable images stop
/// the run unless `skip_bad`; either way every complete chunk written so far stays.
pub fn extract_to_store(
    extractor: &mut FeatureExtractor,
    mut source: DataSource,
    writer: &mut StoreWriter,
    resumed_after: u64,
    skip_bad: bool,
    mut progress: impl FnMut(usize),
) -> Result<ExtractReport> {
    let started = Instant::now();
    let source_id = source.id();
    source.skip_records(resumed_after as usize)?;
    let mut feature = vec![0.0f32; extractor.dim()];
    let (mut rows, mut skipped) = (0u64, Vec::new());
    for (i, sample) in source.enumerate() {
        progress(resumed_after as usize + i + 1);
        let sample = match sample {
            Ok(s) => s,
            Err(e @ Error::Image { .. }) if skip_bad => {
                skipped.push(e.to_string());
                writer.skip(&source_id)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let label = sample.require_label()?;
        extractor.pixels_into(&sample.pixels, &sample.id, &mut feature)?;
        writer.push(&source_id, &feature, label, &sample.id)?;
        rows += 1;
    }
    writer.flush()?;
    if rows == 0 && resumed_after == 0 {
        return Err(Error::data(&source_id, "no usable samples"));
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(ExtractReport {
        source: source_id,
        resumed_after,
        rows,
        skipped,
        seconds,
        images_per_second: rows as f64 / seconds.max(1e-9),
    })
}
