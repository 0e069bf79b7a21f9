//! What a sample's feature vector is made of: which tensors of the backbone are read (the
//! penultimate one, and by default the outputs of the last few stages before it), how they are
//! pooled and transformed, and whether learning adds each image's mirror.
//!
//! A recipe is written into the backbone's [`Fingerprint`](crate::durable::Fingerprint) as its
//! `feature_tensor` descriptor, so two states (or stores) whose features were made differently
//! never mix. A plain tensor name is the recipe every state had before recipes existed: that
//! tensor, flattened, untransformed; anything else is a small JSON object
//! (`{"tensors":[…],"transform":"ssqrt","augment":"hflip"}`, see docs/SPEC.md), in which each
//! 4-D tensor is global-average-pooled.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::spec::{Augment, Layout, ModelSpec, Transform};

/// Stages whose outputs the automatic recipe adds to the penultimate tensor (docs/METHODS.md:
/// MobileNetV2's last four take Fashion-MNIST from 0.8889 to 0.9062).
pub const AUTOMATIC_STAGES: usize = 4;

/// Applies `transform` to one feature vector in place.
pub fn apply_transform(transform: Transform, features: &mut [f32]) {
    if transform.signed_sqrt() {
        for v in features.iter_mut() {
            *v = v.signum() * v.abs().sqrt();
        }
    }
    if transform.l2() {
        // The norm in f64: 2,000 squares of f32 would lose digits the reference keeps.
        let norm = features
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for v in features.iter_mut() {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Which tensors, pooled and transformed how, make the features (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRecipe {
    pub tensors: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub transform: Transform,
    #[serde(default, skip_serializing_if = "is_default")]
    pub augment: Augment,
    /// False only for the plain form: one tensor read as it is (flattened), never pooled.
    #[serde(skip, default = "pooled")]
    pub pooled: bool,
}

fn pooled() -> bool {
    true
}

impl FeatureRecipe {
    /// One tensor as it is: the recipe of every state made before recipes existed.
    pub fn plain(tensor: &str) -> Self {
        FeatureRecipe {
            tensors: vec![tensor.to_string()],
            transform: Transform::None,
            augment: Augment::None,
            pooled: false,
        }
    }

    /// Several tensors (4-D ones pooled), transformed; a single tensor with no transform and no
    /// augmentation is the plain recipe.
    pub fn new(tensors: Vec<String>, transform: Transform, augment: Augment) -> Result<Self> {
        let recipe = FeatureRecipe {
            pooled: !(tensors.len() == 1
                && transform == Transform::None
                && augment == Augment::None),
            tensors,
            transform,
            augment,
        };
        recipe.validate()?;
        Ok(recipe)
    }

    /// The recipe a spec names, if it names tensors (else the backbone chooses).
    pub fn from_spec(spec: &ModelSpec) -> Result<Option<Self>> {
        let transform = spec.feature_transform.unwrap_or_default();
        let augment = spec.augment.unwrap_or_default();
        let tensors = match (&spec.feature_tensors, &spec.feature_tensor) {
            (Some(tensors), _) => tensors.clone(),
            (None, Some(tensor)) => vec![tensor.clone()],
            (None, None) => return Ok(None),
        };
        Self::new(tensors, transform, augment).map(Some)
    }

    /// Reads a fingerprint's `feature_tensor` descriptor.
    pub fn parse(descriptor: &str) -> Result<Self> {
        if !descriptor.starts_with('{') {
            return Ok(Self::plain(descriptor));
        }
        let recipe: FeatureRecipe = serde_json::from_str(descriptor).map_err(|e| {
            Error::InvalidArgument(format!(
                "feature recipe {descriptor}: {e} (it takes tensors, transform ({}), augment \
                 ({}))",
                Transform::NAMES,
                Augment::NAMES
            ))
        })?;
        recipe.validate()?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<()> {
        if self.tensors.is_empty() || self.tensors.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument(
                "a feature recipe needs at least one tensor, each named".into(),
            ));
        }
        for (i, t) in self.tensors.iter().enumerate() {
            if self.tensors[..i].contains(t) {
                return Err(Error::InvalidArgument(format!(
                    "tensor '{t}' is named twice in the feature recipe"
                )));
            }
        }
        if !self.pooled && (self.tensors.len() != 1 || self.transform != Transform::None) {
            return Err(Error::InvalidArgument(
                "only a single untransformed tensor can be read unpooled".into(),
            ));
        }
        Ok(())
    }

    /// The descriptor kept in the fingerprint: the plain tensor name, or canonical JSON.
    pub fn descriptor(&self) -> String {
        if !self.pooled {
            return self.tensors[0].clone();
        }
        serde_json::to_string(self).expect("a recipe always serialises")
    }

    /// The descriptor of the same features learned without augmentation: what a feature store
    /// (one row per record) of a state's images holds.
    pub fn without_augment(descriptor: &str) -> Result<String> {
        let recipe = Self::parse(descriptor)?;
        Ok(Self::new(recipe.tensors, recipe.transform, Augment::None)?.descriptor())
    }

    /// One tensor read as it is (the recipe of states made before recipes existed).
    pub fn is_plain(&self) -> bool {
        !self.pooled
    }

    /// How a tensor of `shape` (batch first) enters the features: flattened in the plain
    /// recipe and for tensors that are not 4-D, else averaged over the spatial axes found by
    /// [`channel_axis`]. The runner's numbers and the exported graph both follow this.
    pub fn pooling_of(&self, shape: &[usize], layout: Layout) -> Pooling {
        match channel_axis(shape, layout) {
            _ if !self.pooled => Pooling::Flatten,
            Some(1) => Pooling::Nchw,
            Some(_) => Pooling::Nhwc,
            None => Pooling::Flatten,
        }
    }

    /// Values one image's `shape` (batch first) gives: a 4-D tensor's channels when pooled,
    /// else all its values.
    pub fn values_of(&self, shape: &[usize], layout: Layout) -> usize {
        self.pooling_of(shape, layout).values_of(shape)
    }
}

/// How one tensor of a feature recipe becomes part of the feature vector
/// ([`FeatureRecipe::pooling_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Flattened after the batch axis.
    Flatten,
    /// Global average pool of an NCHW tensor.
    Nchw,
    /// Global average pool of an NHWC tensor.
    Nhwc,
}

impl Pooling {
    /// Values one image's `shape` (batch first) gives.
    pub fn values_of(self, shape: &[usize]) -> usize {
        match self {
            Pooling::Nchw => shape[1],
            Pooling::Nhwc => shape[3],
            Pooling::Flatten => {
                shape.iter().product::<usize>() / shape.first().copied().unwrap_or(1).max(1)
            }
        }
    }

    /// Writes one image's values of a tensor of `shape` (batch first; `values` is that
    /// image's part) into `out`: the mean over the spatial axes, or the values as they are.
    pub fn pool_into(self, values: &[f32], shape: &[usize], out: &mut [f32]) {
        match self {
            Pooling::Nchw => {
                let plane = shape[2] * shape[3];
                for (o, channel) in out.iter_mut().zip(values.chunks(plane)) {
                    *o = (channel.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32;
                }
            }
            Pooling::Nhwc => {
                let channels = shape[3];
                let pixels = shape[1] * shape[2];
                let mut sums = vec![0.0f64; channels];
                for pixel in values.chunks(channels) {
                    sums.iter_mut()
                        .zip(pixel)
                        .for_each(|(s, &v)| *s += f64::from(v));
                }
                for (o, s) in out.iter_mut().zip(sums) {
                    *o = (s / pixels as f64) as f32;
                }
            }
            Pooling::Flatten => out.copy_from_slice(values),
        }
    }
}

/// Reverses one image's input tensor of `shape` (4-D, batch 1) along the width axis of
/// `layout`: the mirror image, left to right. Learning with `augment: hflip` adds these as
/// samples, prediction with flips averages them; an export feeds its graph the same mirror
/// along [`Layout::width_axis`].
pub fn mirror(input: &mut [f32], shape: [usize; 4], layout: Layout) {
    let axis = layout.width_axis();
    let width = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product::<usize>().max(1);
    for row in input.chunks_mut((width * inner).max(1)) {
        for j in 0..width / 2 {
            for k in 0..inner {
                row.swap(j * inner + k, (width - 1 - j) * inner + k);
            }
        }
    }
}

/// The channel axis of a 4-D tensor whose spatial part is square (inputs are square crops):
/// axis 1 when axes 2, 3 are the square pair and axis 1 differs, axis 3 in the opposite case,
/// else the input's layout decides. None for other ranks.
pub fn channel_axis(shape: &[usize], layout: Layout) -> Option<usize> {
    if shape.len() != 4 {
        return None;
    }
    let nchw = shape[2] == shape[3];
    let nhwc = shape[1] == shape[2];
    Some(match (nchw, nhwc) {
        (true, false) => 1,
        (false, true) => 3,
        _ => match layout {
            Layout::Nchw => 1,
            Layout::Nhwc => 3,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_and_plain_names_stay_plain() {
        let plain = FeatureRecipe::parse("features").unwrap();
        assert!(plain.is_plain());
        assert_eq!(plain.descriptor(), "features");
        let recipe = FeatureRecipe::new(
            vec!["features".into(), "add_243".into()],
            Transform::SignedSqrt,
            Augment::HorizontalFlip,
        )
        .unwrap();
        let text = recipe.descriptor();
        assert_eq!(
            text,
            r#"{"tensors":["features","add_243"],"transform":"ssqrt","augment":"hflip"}"#
        );
        assert_eq!(FeatureRecipe::parse(&text).unwrap(), recipe);
        // One tensor with nothing else is the plain recipe, whichever way it is written.
        let one = FeatureRecipe::new(vec!["x".into()], Transform::None, Augment::None).unwrap();
        assert_eq!(one.descriptor(), "x");
        for bad in [
            r#"{"tensors":[]}"#,
            r#"{"tensors":["a","a"]}"#,
            r#"{"tensors":["a"],"transform":"cube"}"#,
            r#"{"tensors":["a"],"extra":1}"#,
        ] {
            assert!(FeatureRecipe::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transforms_match_their_formulas() {
        let mut v = [4.0f32, -9.0, 0.0, 0.25];
        apply_transform(Transform::SignedSqrt, &mut v);
        assert_eq!(v, [2.0, -3.0, 0.0, 0.5]);
        let mut v = [3.0f32, -4.0];
        apply_transform(Transform::L2, &mut v);
        assert_eq!(v, [0.6, -0.8]);
        let mut zero = [0.0f32; 3];
        apply_transform(Transform::SignedSqrtL2, &mut zero);
        assert_eq!(zero, [0.0; 3]);
    }

    #[test]
    fn pooling_averages_the_spatial_axes_of_either_layout() {
        // One image, 2 channels, 2×2: NCHW then the same values NHWC.
        let nchw = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0];
        let mut out = [0.0; 2];
        Pooling::Nchw.pool_into(&nchw, &[1, 2, 2, 2], &mut out);
        assert_eq!(out, [2.5, 25.0]);
        let nhwc = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0];
        Pooling::Nhwc.pool_into(&nhwc, &[1, 2, 2, 2], &mut out);
        assert_eq!(out, [2.5, 25.0]);
        // The shape decides where it can: 3 channels of 2×2 are NCHW whatever the input says.
        let recipe =
            FeatureRecipe::new(vec!["a".into(), "b".into()], Transform::None, Augment::None)
                .unwrap();
        assert_eq!(recipe.values_of(&[1, 3, 2, 2], Layout::Nhwc), 3);
        assert_eq!(recipe.values_of(&[1, 2, 2, 5], Layout::Nchw), 5);
        assert_eq!(
            FeatureRecipe::plain("a").values_of(&[1, 3, 2, 2], Layout::Nchw),
            12
        );
        assert_eq!(
            FeatureRecipe::plain("a").pooling_of(&[1, 3, 2, 2], Layout::Nchw),
            Pooling::Flatten
        );
    }

    #[test]
    fn mirroring_reverses_the_width_of_either_layout() {
        // 2 channels × 1 row × 3 pixels, NCHW, then the same image NHWC.
        let mut nchw = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
        mirror(&mut nchw, [1, 2, 1, 3], Layout::Nchw);
        assert_eq!(nchw, [3.0, 2.0, 1.0, 30.0, 20.0, 10.0]);
        let mut nhwc = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        mirror(&mut nhwc, [1, 1, 3, 2], Layout::Nhwc);
        assert_eq!(nhwc, [3.0, 30.0, 2.0, 20.0, 1.0, 10.0]);
        // Two rows of 2×2 NHWC pixels: each row reversed on its own.
        let mut rows = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        mirror(&mut rows, [1, 2, 2, 2], Layout::Nhwc);
        assert_eq!(rows, [3.0, 4.0, 1.0, 2.0, 7.0, 8.0, 5.0, 6.0]);
    }
}
