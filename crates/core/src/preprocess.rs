//! Image decoding and preprocessing: the pixels a backbone expects, built exactly as the spec
//! says. Resizing reproduces PIL's antialiased BILINEAR filter, either evaluated in float or
//! on 8-bit pixels as `Image.resize` (and so torchvision) does it (the references in
//! `scripts/reference/reference.py`), so features can be checked against a PIL + onnxruntime pipeline.

use std::io::Cursor;
use std::path::Path;

use crate::error::{Error, Result};
use crate::spec::{ChannelOrder, Layout, ModelInput, ModelSpec, PreprocessSpec, ResizeFilter};

/// Images over this many pixels are refused before decoding (decompression bombs).
pub const MAX_PIXELS: u64 = 50_000_000;
const MAX_SIDE: usize = 32_768;

/// A decoded 8-bit image, one or three channels, rows top to bottom.
#[derive(Debug, Clone)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB, interleaved).
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Pixels {
    pub fn grey(width: usize, height: usize, data: Vec<u8>) -> Self {
        Pixels {
            width,
            height,
            channels: 1,
            data,
        }
    }
}

/// One tensor sample: float values in the model's own units (log-mel frames, a normalised
/// sensor window), `shape` without the batch axis, values in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSample {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What one sample holds: a decoded image, or a tensor fed to the model as it is.
#[derive(Debug, Clone)]
pub enum SampleInput {
    Pixels(Pixels),
    Tensor(TensorSample),
}

impl SampleInput {
    /// "image" or "tensor", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            SampleInput::Pixels(_) => "image",
            SampleInput::Tensor(_) => "tensor",
        }
    }
}

/// Whether `sample` (named `what`) can be fed to a model whose input is `input`: an image for
/// an image model; for a tensor model a tensor of exactly its shape (both shapes named
/// otherwise) with only finite values (the first bad index named otherwise).
pub fn check_sample(input: &ModelInput, sample: &SampleInput, what: &str) -> Result<()> {
    let bad = |reason: String| Error::Tensor {
        path: what.into(),
        reason,
    };
    match (input, sample) {
        (ModelInput::Image(_), SampleInput::Pixels(p)) => {
            if p.channels != 1 && p.channels != 3 || p.data.len() != p.width * p.height * p.channels
            {
                return Err(Error::Image {
                    path: what.into(),
                    reason: format!(
                        "{} values for {}×{} pixels of {} channel(s)",
                        p.data.len(),
                        p.width,
                        p.height,
                        p.channels
                    ),
                });
            }
            Ok(())
        }
        (ModelInput::Tensor(t), SampleInput::Tensor(sample)) => {
            if sample.shape != t.shape {
                return Err(bad(format!(
                    "shape {:?}, but the model takes one sample of shape {:?}",
                    sample.shape, t.shape
                )));
            }
            if sample.data.len() != sample.shape.iter().product::<usize>() {
                return Err(bad(format!(
                    "{} values for shape {:?}",
                    sample.data.len(),
                    sample.shape
                )));
            }
            if let Some(i) = sample.data.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "value {} at flat index {i} (of {}) is not finite; NaN and infinite values \
                     are refused",
                    sample.data[i],
                    sample.data.len()
                )));
            }
            Ok(())
        }
        (ModelInput::Image(_), SampleInput::Tensor(s)) => Err(bad(format!(
            "the model takes images (its spec's input is an image), but this sample is a tensor \
             of shape {:?}; for a model fed with tensors write its spec with `fastretrain spec \
             --preset tensor`",
            s.shape
        ))),
        (ModelInput::Tensor(t), SampleInput::Pixels(_)) => Err(Error::data(
            what,
            format!(
                "an image, but the model takes float tensors of shape {:?} (its spec's input is \
                 a tensor), not images; give .npy files or arrays",
                t.shape
            ),
        )),
    }
}

/// Decodes PNG or JPEG (by content, not extension) into RGB or grey pixels.
/// Palette, alpha and 16-bit images are converted; alpha is dropped. No colour management
/// (ICC profiles and gamma are ignored) and no EXIF rotation: the pixels as stored.
pub fn decode_image_file(path: &Path) -> Result<Pixels> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image_bytes(&bytes, path)
}

pub fn decode_image_bytes(bytes: &[u8], path: &Path) -> Result<Pixels> {
    let bad = |reason: String| Error::Image {
        path: path.into(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad("file is empty".into()));
    }
    // By content: the PNG signature, or a JPEG start-of-image marker followed by another marker.
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes).map_err(bad)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        // The JPEG decoder fills a cut-off scan with grey instead of failing: check the end.
        if !jpeg_is_complete(bytes) {
            return Err(bad("JPEG data is truncated (no end-of-image marker)".into()));
        }
        decode_jpeg(bytes).map_err(bad)
    } else {
        Err(bad("not a PNG or JPEG file".into()))
    }
}

/// Refuses a size before any pixel buffer is allocated (decompression bombs).
fn check_size(width: usize, height: usize) -> std::result::Result<(), String> {
    if (width as u64) * (height as u64) > MAX_PIXELS || width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "{width}×{height} pixels is over the limit of {MAX_PIXELS} pixels ({MAX_SIDE} per side)"
        ));
    }
    if width == 0 || height == 0 {
        return Err("image has no pixels".into());
    }
    Ok(())
}

/// PNG through the `png` crate: palettes and sub-byte depths expanded to 8 bits (transparency
/// becomes an alpha channel, which is dropped), 16-bit samples rounded to 8 bits.
fn decode_png(bytes: &[u8]) -> std::result::Result<Pixels, String> {
    use png::{BitDepth, ColorType, Transformations};
    // The decoder's own allocation cap, above what `check_size` lets through (16-bit RGBA).
    let limits = png::Limits {
        bytes: (MAX_PIXELS * 8) as usize,
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    let header = decoder
        .read_header_info()
        .map_err(|e| format!("cannot read header: {e}"))?;
    check_size(header.width as usize, header.height as usize)?;
    decoder.set_transformations(Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (color, depth) = reader.output_color_type();
    let channels_in = match color {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => return Err("palette was not expanded".into()),
    };
    let sample_bytes = match depth {
        BitDepth::Eight => 1,
        BitDepth::Sixteen => 2,
        other => return Err(format!("unsupported bit depth {other:?} after expansion")),
    };
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut raw = vec![0u8; size];
    let frame = reader.next_frame(&mut raw).map_err(|e| e.to_string())?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let row_bytes = frame.line_size;
    let samples_per_row = width * channels_in;
    let channels = if channels_in >= 3 { 3 } else { 1 };
    let mut data = Vec::with_capacity(width * height * channels);
    for row in raw.chunks_exact(row_bytes).take(height) {
        let row = &row[..samples_per_row * sample_bytes];
        for pixel in row.chunks_exact(channels_in * sample_bytes) {
            for sample in pixel.chunks_exact(sample_bytes).take(channels) {
                data.push(if sample_bytes == 1 {
                    sample[0]
                } else {
                    // Big-endian 16 bits to the nearest 8-bit value: round(v · 255 / 65535).
                    ((u32::from(u16::from_be_bytes([sample[0], sample[1]])) + 128) / 257) as u8
                });
            }
        }
    }
    Ok(Pixels {
        width,
        height,
        channels,
        data,
    })
}

/// Baseline and progressive JPEG through `zune-jpeg`, tolerant of small stream errors as
/// browsers are; grey stays grey, everything else (YCbCr, CMYK, YCCK) comes out RGB.
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Pixels, String> {
    use zune_jpeg::JpegDecoder;
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    // Headers are read without a size cap so that an oversized image gets our message.
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| format!("cannot read header: {e}"))?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| "cannot read header".to_string())?;
    check_size(width, height)?;
    let input = decoder
        .input_colorspace()
        .ok_or_else(|| "cannot read header".to_string())?;
    let (out, channels) = match input {
        ColorSpace::Luma | ColorSpace::LumaA => (ColorSpace::Luma, 1),
        _ => (ColorSpace::RGB, 3),
    };
    decoder.set_options(
        options
            .set_max_width(MAX_SIDE)
            .set_max_height(MAX_SIDE)
            .jpeg_set_out_colorspace(out),
    );
    let data = decoder.decode().map_err(|e| e.to_string())?;
    if data.len() != width * height * channels {
        return Err(format!(
            "decoded {} bytes for {width}×{height}×{channels}",
            data.len()
        ));
    }
    Ok(Pixels {
        width,
        height,
        channels,
        data,
    })
}

/// Whether a JPEG has its end-of-image marker after its last start-of-scan. Both markers are
/// unambiguous: inside entropy-coded data every 0xFF byte is followed by 0x00.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(pos) => bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// PIL's fixed-point precision for 8-bit resampling (`PRECISION_BITS` in Resample.c).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output sample's filter taps: the first input index and the normalised weights, in
/// float and in PIL's fixed point.
#[derive(Debug, Clone)]
struct Taps {
    first: usize,
    weights: Vec<f64>,
    fixed: Vec<i64>,
}

impl Taps {
    /// PIL's 8-bit pass for one output sample: fixed-point sum, rounded, clipped to 0..=255.
    fn apply_u8(&self, sample: impl Fn(usize) -> u8) -> u8 {
        let mut acc: i64 = 1 << (PRECISION_BITS - 1);
        for (k, w) in self.fixed.iter().enumerate() {
            acc += i64::from(sample(self.first + k)) * w;
        }
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// PIL's `precompute_coeffs` for the bilinear (triangle) filter, support scaled when
/// downsampling so that it antialiases. Only the outputs in `outputs` are computed.
fn taps(in_size: usize, out_size: usize, outputs: std::ops::Range<usize>) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle filter's support is 1
    outputs
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // `as i64` truncates toward zero, like the C cast in PIL.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let ss = 1.0 / filterscale;
            let mut weights: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            // PIL's normalize_coeffs_8bpc: round half away from zero to fixed point.
            let one = f64::from(1u32 << PRECISION_BITS);
            let fixed = weights
                .iter()
                .map(|w| {
                    if *w < 0.0 {
                        (-0.5 + w * one) as i64
                    } else {
                        (0.5 + w * one) as i64
                    }
                })
                .collect();
            Taps {
                first: xmin,
                weights,
                fixed,
            }
        })
        .collect()
}

/// Resize + centre-crop plan for one input size; reused while the size stays the same.
#[derive(Debug)]
struct CropResize {
    input: (usize, usize),
    cols: Vec<Taps>,
    rows: Vec<Taps>,
    row_lo: usize,
    row_hi: usize,
}

impl CropResize {
    fn new(width: usize, height: usize, short_side: usize, crop: usize) -> Self {
        // torchvision's Resize(int): the long side is truncated, not rounded.
        let (nw, nh) = if width <= height {
            (short_side, short_side * height / width)
        } else {
            (short_side * width / height, short_side)
        };
        let (nw, nh) = (nw.max(crop), nh.max(crop));
        // torchvision's CenterCrop rounds half to even (Python's round()).
        let left = ((nw - crop) as f64 / 2.0).round_ties_even() as usize;
        let top = ((nh - crop) as f64 / 2.0).round_ties_even() as usize;
        let cols = taps(width, nw, left..left + crop);
        let rows = taps(height, nh, top..top + crop);
        let row_lo = rows.iter().map(|t| t.first).min().unwrap_or(0);
        let row_hi = rows
            .iter()
            .map(|t| t.first + t.weights.len())
            .max()
            .unwrap_or(0);
        CropResize {
            input: (width, height),
            cols,
            rows,
            row_lo,
            row_hi,
        }
    }

    /// Resizes one channel (`stride` apart in `src`) into `out` (crop × crop, row major) with
    /// PIL's 8-bit arithmetic: horizontal pass into 8-bit rows, then vertical, each rounded and
    /// clipped to 0..=255 as `ImagingResample` does for an 8-bit image.
    fn apply_u8(
        &self,
        src: &[u8],
        channel: usize,
        stride: usize,
        tmp: &mut Vec<u8>,
        out: &mut [f32],
    ) {
        let (width, _) = self.input;
        let crop = self.cols.len();
        let rows_needed = self.row_hi - self.row_lo;
        tmp.clear();
        tmp.resize(rows_needed * crop, 0);
        for (r, y) in (self.row_lo..self.row_hi).enumerate() {
            let row = &src[y * width * stride..(y + 1) * width * stride];
            for (j, t) in self.cols.iter().enumerate() {
                tmp[r * crop + j] = t.apply_u8(|x| row[x * stride + channel]);
            }
        }
        for (i, t) in self.rows.iter().enumerate() {
            for j in 0..crop {
                let v = t.apply_u8(|y| tmp[(y - self.row_lo) * crop + j]);
                out[i * crop + j] = f32::from(v);
            }
        }
    }

    /// Resizes one channel (`stride` apart in `src`) into `out` (crop × crop, row major).
    /// Horizontal pass first into f32 rows, then vertical, accumulating in f64 as PIL does.
    fn apply(
        &self,
        src: &[u8],
        channel: usize,
        stride: usize,
        tmp: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let (width, _) = self.input;
        let crop = self.cols.len();
        let rows_needed = self.row_hi - self.row_lo;
        tmp.clear();
        tmp.resize(rows_needed * crop, 0.0);
        for (r, y) in (self.row_lo..self.row_hi).enumerate() {
            let row = &src[y * width * stride..(y + 1) * width * stride];
            for (j, t) in self.cols.iter().enumerate() {
                let mut acc = 0.0f64;
                for (k, w) in t.weights.iter().enumerate() {
                    acc += row[(t.first + k) * stride + channel] as f64 * w;
                }
                tmp[r * crop + j] = acc as f32;
            }
        }
        for (i, t) in self.rows.iter().enumerate() {
            let base = t.first - self.row_lo;
            for j in 0..crop {
                let mut acc = 0.0f64;
                for (k, w) in t.weights.iter().enumerate() {
                    acc += tmp[(base + k) * crop + j] as f64 * w;
                }
                out[i * crop + j] = acc as f32;
            }
        }
    }
}

/// Turns a sample into the backbone's input tensor (batch of one), per the spec: an image
/// resized, cropped and normalised; a tensor checked and copied as it is.
#[derive(Debug)]
pub struct Preprocessor {
    input: ModelInput,
    image: Option<ImagePreprocessor>,
    input_len: usize,
}

impl Preprocessor {
    pub fn new(spec: &ModelSpec) -> Self {
        Preprocessor {
            input: spec.input.clone(),
            image: spec.image().map(|(input, p)| ImagePreprocessor {
                spec: p.clone(),
                layout: input.layout,
                order: input.channels,
                plan: None,
                plane: Vec::new(),
                tmp: Vec::new(),
                tmp_u8: Vec::new(),
            }),
            input_len: spec.input.shape().iter().product(),
        }
    }

    /// Number of f32 values in one input tensor.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Fills `out` (length [`Self::input_len`]) with the input tensor for `sample` (named
    /// `what` in errors: a sample of the wrong kind or shape, or with non-finite values).
    pub fn tensor_into(&mut self, sample: &SampleInput, what: &str, out: &mut [f32]) -> Result<()> {
        assert_eq!(out.len(), self.input_len, "output buffer of the wrong size");
        check_sample(&self.input, sample, what)?;
        match (sample, &mut self.image) {
            (SampleInput::Pixels(pixels), Some(image)) => image.tensor_into(pixels, out),
            (SampleInput::Tensor(t), None) => out.copy_from_slice(&t.data),
            _ => unreachable!("check_sample matched the kinds"),
        }
        Ok(())
    }
}

/// Resize, crop and normalise for an image input.
#[derive(Debug)]
struct ImagePreprocessor {
    spec: PreprocessSpec,
    layout: Layout,
    order: ChannelOrder,
    plan: Option<CropResize>,
    plane: Vec<f32>,
    tmp: Vec<f32>,
    tmp_u8: Vec<u8>,
}

impl ImagePreprocessor {
    fn tensor_into(&mut self, pixels: &Pixels, out: &mut [f32]) {
        let crop = self.spec.crop;
        let key = (pixels.width, pixels.height);
        if self.plan.as_ref().map(|p| p.input) != Some(key) {
            self.plan = Some(CropResize::new(
                pixels.width,
                pixels.height,
                self.spec.resize_short_side,
                crop,
            ));
        }
        let plan = self.plan.as_ref().expect("plan set above");
        let area = crop * crop;
        self.plane.resize(area, 0.0);
        for rgb in 0..3 {
            // A grey image is the same plane three times: resize it once.
            if pixels.channels == 3 || rgb == 0 {
                let channel = if pixels.channels == 3 { rgb } else { 0 };
                match self.spec.resize_filter {
                    ResizeFilter::BilinearAntialias => plan.apply(
                        &pixels.data,
                        channel,
                        pixels.channels,
                        &mut self.tmp,
                        &mut self.plane,
                    ),
                    ResizeFilter::BilinearAntialiasU8 => plan.apply_u8(
                        &pixels.data,
                        channel,
                        pixels.channels,
                        &mut self.tmp_u8,
                        &mut self.plane,
                    ),
                }
            }
            let target = match self.order {
                ChannelOrder::Rgb => rgb,
                ChannelOrder::Bgr => 2 - rgb,
            };
            let (scale, mean, std) = (self.spec.scale, self.spec.mean[rgb], self.spec.std[rgb]);
            for (i, v) in self.plane.iter().enumerate() {
                let x = (v * scale - mean) / std;
                match self.layout {
                    Layout::Nchw => out[target * area + i] = x,
                    Layout::Nhwc => out[i * 3 + target] = x,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_are_normalised_and_identity_at_scale_one() {
        for t in taps(7, 7, 0..7) {
            assert_eq!(t.weights[0], 1.0);
            assert!(t.weights[1..].iter().all(|w| *w == 0.0));
        }
        for t in taps(512, 256, 0..256) {
            let s: f64 = t.weights.iter().sum();
            assert!((s - 1.0).abs() < 1e-12);
            assert!((3..=4).contains(&t.weights.len())); // 4, or 3 where clamped at an edge
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let spec = ModelSpec::parse(
            r#"{"name":"t","input":{"layout":"NCHW","channels":"RGB","height":8,"width":8},
                "preprocess":{"resize_short_side":10,"crop":8,"scale":1.0,"mean":[0,0,0],"std":[1,1,1]}}"#,
            Path::new("t.json"),
        )
        .unwrap();
        let mut pre = Preprocessor::new(&spec);
        let pixels = SampleInput::Pixels(Pixels::grey(5, 13, vec![77; 65]));
        let mut out = vec![0.0; pre.input_len()];
        pre.tensor_into(&pixels, "grey", &mut out).unwrap();
        assert!(out.iter().all(|v| (v - 77.0).abs() < 1e-4), "{out:?}");
    }
}
