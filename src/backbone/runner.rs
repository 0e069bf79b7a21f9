//! Running a loaded backbone: one forward-pass context per thread ([`Runner`]), and the
//! assembly of the recipe's tensors into one feature vector (pooled, concatenated,
//! transformed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::feature_recipe::{FeatureRecipe, Transform, apply_transform};
use crate::spec::Layout;

/// One forward-pass context of a [`Backbone`](super::Backbone) (tract's run state, kept between images).
/// Runners of one backbone share its plan and can work in parallel threads.
pub struct Runner {
    pub(super) state: RunState,
    pub(super) input_shape: Vec<usize>,
    pub(super) model_path: PathBuf,
    pub(super) assembly: Arc<Assembly>,
}

/// One run's input as tract's tensor, in the type the plan takes (float16 for a half-precision
/// model's input; `model` for the message).
fn input_tensor(
    state: &TypedSimpleState,
    shape: &[usize],
    input: &[f32],
    model: &Path,
) -> Result<Tensor> {
    let bad = |e: TractError| Error::Model {
        path: model.into(),
        reason: format!("bad input tensor: {e}"),
    };
    let tensor = Tensor::from_shape(shape, input).map_err(bad)?;
    match state.model().input_fact(0).map_err(bad)?.datum_type {
        DatumType::F32 => Ok(tensor),
        other => Ok(tensor.cast_to_dt(other).map_err(bad)?.into_owned()),
    }
}

/// A run context of the backbone's engine.
pub(super) enum RunState {
    Tract(TypedSimpleState),
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(crate::onnxruntime_engine::OrtRunner),
}

/// The prepared model of the backbone's engine.
pub(super) enum Plan {
    Tract(Arc<TypedRunnableModel>),
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(Arc<crate::onnxruntime_engine::OrtModel>),
}

/// How the plan's outputs become one feature vector: each output's shape (batch first) and
/// values per image, pooled or not, then the recipe's transform.
#[derive(Debug)]
pub(super) struct Assembly {
    pub(super) recipe: FeatureRecipe,
    pub(super) layout: Layout,
    pub(super) shapes: Vec<Vec<usize>>,
    pub(super) values: Vec<usize>,
}

impl Assembly {
    pub(super) fn new(recipe: FeatureRecipe, layout: Layout, shapes: Vec<Vec<usize>>) -> Self {
        let values = shapes.iter().map(|s| recipe.values_of(s, layout)).collect();
        Assembly {
            recipe,
            layout,
            shapes,
            values,
        }
    }

    /// Values of one image's feature vector.
    pub(super) fn dim(&self) -> usize {
        self.values.iter().sum()
    }
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("model_path", &self.model_path)
            .finish()
    }
}

impl Runner {
    /// Runs one preprocessed input (see [`crate::preprocess::Preprocessor`]; the backbone's
    /// batch of them back to back) and writes their features into `out`.
    pub fn features_into(&mut self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let fail = |reason: String| Error::Model {
            path: self.model_path.clone(),
            reason,
        };
        match &mut self.state {
            RunState::Tract(state) => {
                let tensor = input_tensor(state, &self.input_shape, input, &self.model_path)?;
                let outputs = state
                    .run(tvec!(tensor.into()))
                    .map_err(|e| fail(format!("inference failed: {e:#}")))?;
                // A half-precision model's features are widened to f32 here (no copy for f32).
                let floats = outputs
                    .iter()
                    .map(|output| {
                        output.cast_to::<f32>().map_err(|e| {
                            fail(format!(
                                "feature tensor of type {:?} cannot be read as f32: {e}",
                                output.datum_type()
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let views = floats
                    .iter()
                    .map(|t| {
                        t.to_plain_array_view::<f32>()
                            .map_err(|e| fail(format!("feature tensor is not f32: {e}")))?
                            .to_slice()
                            .ok_or_else(|| fail("feature tensor is not contiguous".into()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.assembly
                    .assemble(&views, self.input_shape[0], out, &self.model_path)
            }
            #[cfg(feature = "onnxruntime")]
            RunState::OnnxRuntime(runner) => {
                let (assembly, batch, path) =
                    (&self.assembly, self.input_shape[0], &self.model_path);
                runner.run(&self.input_shape, input, |outputs| {
                    let views: Vec<&[f32]> = outputs.iter().map(|(_, v)| *v).collect();
                    assembly.assemble(&views, batch, out, path)
                })
            }
        }
    }
}

/// The time one operation of tract's plan took, summed over the profiled runs
/// ([`crate::benchmark::profile_forward`]: milliseconds per run).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    pub seconds: f64,
}

impl Runner {
    /// Runs `input` `runs` times, timing each operation of tract's plan (`bench --profile`);
    /// in plan order. Empty for onnxruntime (its own profiler says the same).
    pub fn profile(&mut self, input: &[f32], runs: usize) -> Result<Vec<NodeTime>> {
        #[cfg_attr(not(feature = "onnxruntime"), allow(irrefutable_let_patterns))]
        let RunState::Tract(state) = &mut self.state else {
            return Ok(Vec::new());
        };
        let fail = |reason: String| Error::Model {
            path: self.model_path.clone(),
            reason,
        };
        let mut times: Vec<NodeTime> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for _ in 0..runs {
            let tensor = input_tensor(state, &self.input_shape, input, &self.model_path)?;
            state
                .run_plan_with_eval(tvec!(tensor.into()), |session, op_state, node, inputs| {
                    let started = std::time::Instant::now();
                    let outputs =
                        tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
                    let i = *index.entry(node.id).or_insert_with(|| {
                        times.push(NodeTime {
                            node: node.name.clone(),
                            op: node.op.name().to_string(),
                            seconds: 0.0,
                        });
                        times.len() - 1
                    });
                    times[i].seconds += started.elapsed().as_secs_f64();
                    outputs
                })
                .map_err(|e| fail(format!("inference failed: {e:#}")))?;
        }
        Ok(times)
    }
}

impl Assembly {
    /// Pools and concatenates one run's outputs (`batch` images each) into `out`, one row per
    /// image, then applies the recipe's transform.
    fn assemble(
        &self,
        outputs: &[&[f32]],
        batch: usize,
        out: &mut [f32],
        model: &Path,
    ) -> Result<()> {
        let got: usize = outputs.iter().map(|o| o.len()).sum();
        let expected: usize = self
            .shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum();
        if out.len() != self.dim() * batch || outputs.len() != self.shapes.len() || got != expected
        {
            return Err(Error::FeatureDim {
                what: model.display().to_string(),
                expected: out.len(),
                got: self.dim() * batch,
            });
        }
        let mut offset = 0;
        for ((data, shape), &values) in outputs.iter().zip(&self.shapes).zip(&self.values) {
            let per_image = data.len() / batch;
            for (image, rows) in data.chunks(per_image).zip(out.chunks_mut(self.dim())) {
                self.recipe.pooling_of(shape, self.layout).pool_into(
                    image,
                    shape,
                    &mut rows[offset..offset + values],
                );
            }
            offset += values;
        }
        if self.recipe.transform != Transform::None {
            out.chunks_mut(self.dim())
                .for_each(|row| apply_transform(self.recipe.transform, row));
        }
        Ok(())
    }
}
