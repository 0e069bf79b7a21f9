//! The ops the interpreter runs and how each runs on [`Value`]s: the layers of CNN classifiers
//! as PyTorch (legacy and dynamo), tf2onnx and onnx.helper write them, including the shape
//! arithmetic around a `Reshape`. Trainable layers (Conv, BatchNormalization, the dense
//! Gemm / MatMul) hold indices into the graph's parameters; every other initializer an op reads
//! is a constant.

use burn::tensor::activation;
use burn::tensor::module;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};
use burn::tensor::{DType, Device, Tensor};

mod shape;

use shape::{axes_of, ints_input};

use super::value::{Act, Binary, Ints, map_act};
use crate::error::{Error, Result};

/// An elementwise function of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        alpha: f64,
        beta: f64,
    },
    /// `x · hard_sigmoid(x)` with alpha = 1/6, beta = 1/2.
    HardSwish,
    LeakyRelu {
        alpha: f64,
    },
    Clip {
        min: f64,
        max: f64,
    },
    /// Identity, Dropout (inference: the identity), a float-to-float Cast.
    Identity,
}

impl Unary {
    fn apply<const D: usize>(self, t: Tensor<D>) -> Tensor<D> {
        match self {
            Unary::Relu => activation::relu(t),
            Unary::Sigmoid => activation::sigmoid(t),
            Unary::Tanh => activation::tanh(t),
            Unary::HardSigmoid { alpha, beta } => activation::hard_sigmoid(t, alpha, beta),
            Unary::HardSwish => activation::hard_swish(t),
            Unary::LeakyRelu { alpha } => activation::leaky_relu(t, alpha),
            Unary::Clip { min, max } => t.clamp(min, max),
            Unary::Identity => t,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    Conv {
        weight: usize,
        bias: Option<usize>,
        options: ConvOptions<2>,
    },
    BatchNorm {
        scale: usize,
        bias: usize,
        mean: usize,
        var: usize,
        epsilon: f64,
        momentum: f64,
    },
    /// A dense layer: `alpha·x·W(ᵀ) + beta·b`; also a MatMul by a constant weight (and the Add
    /// of a constant bias after it), as tf2onnx writes a Keras Dense layer.
    Gemm {
        weight: usize,
        bias: Option<usize>,
        trans_b: bool,
        alpha: f64,
        beta: f64,
    },
    Unary(Unary),
    Binary(Binary),
    GlobalAveragePool,
    GlobalMaxPool,
    MaxPool {
        options: MaxPoolOptions<2>,
    },
    AveragePool {
        options: AvgPoolOptions<2>,
    },
    Flatten {
        axis: i64,
    },
    /// Input 1: the shape (integers).
    Reshape {
        allow_zero: bool,
    },
    /// None: the axes reversed.
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Concat {
        axis: i64,
    },
    /// Input 1 (optional): the part sizes; else `outputs` equal parts.
    Split {
        axis: i64,
        outputs: usize,
    },
    /// Inputs 1..=4: starts, ends, axes, steps (the last two optional).
    Slice,
    /// Input 1 (optional): the axes; else every size-1 axis.
    Squeeze,
    /// Input 1: the axes.
    Unsqueeze,
    /// Input 1 (optional): the axes; else all (or none, with `noop_with_empty_axes`).
    ReduceMean {
        keep: bool,
        noop_with_empty_axes: bool,
    },
    Softmax {
        axis: i64,
        log: bool,
    },
    /// Input 1: pads (all begins, then all ends); input 2 (optional): the fill value; input 3
    /// (optional): the axes the pads are for.
    Pad {
        mode: PadMode,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// Input 1: the indices (integers).
    Gather {
        axis: i64,
    },
    /// To an integer type (a float cast to float is [`Unary::Identity`]).
    CastToInt,
    CastToFloat,
}

/// One value between nodes.
// Nearly every value is a float tensor: boxing it would add an allocation per node for the
// sake of the few integer shapes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Value {
    Float(Act),
    Ints(Ints),
}

/// `axis` (negative: from the end) as an index into `rank` axes.
pub fn axis_index(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&a) {
        return Err(Error::InvalidArgument(format!(
            "axis {axis} is outside a rank-{rank} tensor"
        )));
    }
    Ok(a as usize)
}

/// What an op needs besides its inputs.
pub struct Context<'a> {
    pub params: &'a [Tensor<1>],
    /// The graph's parameters (their shapes; the values in use are `params`).
    pub param_info: &'a [super::Param],
    pub device: &'a Device,
    pub dtype: DType,
    /// Whether this node's batch normalisation runs on batch statistics.
    pub train_bn: bool,
    /// The batch the model's input was declared with, if fixed (a constant `Reshape` target
    /// starting with it is taken to mean the batch).
    pub declared_batch: Option<usize>,
}

/// Batch statistics of a batch normalisation run in training mode: mean, biased variance,
/// values per channel.
pub type BatchStat = (Tensor<1>, Tensor<1>, usize);

impl Value {
    pub fn float(self, ctx: &Context<'_>) -> Result<Act> {
        match self {
            Value::Float(a) => Ok(a),
            Value::Ints(i) => i.to_act(ctx.device, ctx.dtype),
        }
    }

    pub fn ints(self) -> Result<Ints> {
        match self {
            Value::Ints(i) => Ok(i),
            Value::Float(_) => Err(Error::InvalidArgument(
                "expects integers (a shape, axes or indices), got a float tensor".into(),
            )),
        }
    }
}

/// Input `k` of a node, which it cannot run without.
fn required(inputs: &[Option<Value>], k: usize) -> Result<Value> {
    inputs
        .get(k)
        .cloned()
        .flatten()
        .ok_or_else(|| Error::InvalidArgument(format!("input {k} is missing")))
}

impl Op {
    /// Runs the op on `inputs` (None where an optional input is absent). Returns the outputs
    /// and, for a batch normalisation in training mode, its batch statistics.
    pub fn run(
        &self,
        inputs: Vec<Option<Value>>,
        ctx: &Context<'_>,
    ) -> Result<(Vec<Value>, Option<BatchStat>)> {
        let input = |k: usize| required(&inputs, k);
        let float = |k: usize| -> Result<Act> { input(k)?.float(ctx) };
        let p = |i: usize| ctx.params[i].clone();
        let one = |a: Act| Ok((vec![Value::Float(a)], None));
        match self {
            Op::Conv {
                weight,
                bias,
                options,
            } => {
                let x = float(0)?.tensor::<4>()?;
                let d = &ctx.param_info[*weight].dims;
                if d.len() != 4 {
                    return Err(Error::InvalidArgument(format!(
                        "the weight has shape {d:?}: only 2-d convolutions are supported"
                    )));
                }
                let w: Tensor<4> = p(*weight).reshape([d[0], d[1], d[2], d[3]]);
                if x.dims()[1] != d[1] * options.groups {
                    return Err(Error::InvalidArgument(format!(
                        "input has {} channels, the weight expects {}",
                        x.dims()[1],
                        d[1] * options.groups
                    )));
                }
                one(Act::R4(module::conv2d(x, w, bias.map(p), options.clone())))
            }
            Op::BatchNorm {
                scale,
                bias,
                mean,
                var,
                epsilon,
                ..
            } => {
                let x = float(0)?;
                let dims = x.dims();
                if dims.len() < 2
                    || dims[1] != ctx.param_info[*scale].dims.iter().product::<usize>()
                {
                    return Err(Error::InvalidArgument(format!(
                        "input {dims:?} does not have the layer's {} channels",
                        ctx.param_info[*scale].dims.iter().product::<usize>()
                    )));
                }
                if ctx.train_bn {
                    let count = dims.iter().product::<usize>() / dims[1];
                    let (out, m, v) = batch_norm_train(x, p(*scale), p(*bias), *epsilon)?;
                    return Ok((vec![Value::Float(out)], Some((m, v, count))));
                }
                let (s, b, m, v) = (p(*scale), p(*bias), p(*mean), p(*var));
                let e = *epsilon;
                one(match x {
                    Act::R2(t) => Act::R2(module::batch_norm(t, s, b, m, v, e)),
                    Act::R3(t) => Act::R3(module::batch_norm(t, s, b, m, v, e)),
                    Act::R4(t) => Act::R4(module::batch_norm(t, s, b, m, v, e)),
                    Act::R5(t) => Act::R5(module::batch_norm(t, s, b, m, v, e)),
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "batch normalisation of shape {:?}",
                            other.dims()
                        )));
                    }
                })
            }
            Op::Gemm {
                weight,
                bias,
                trans_b,
                alpha,
                beta,
            } => {
                let x = float(0)?.tensor::<2>()?;
                let d = &ctx.param_info[*weight].dims;
                let w: Tensor<2> = p(*weight).reshape([d[0], d[1]]);
                let w = if *trans_b { w.transpose() } else { w };
                if x.dims()[1] != w.dims()[0] {
                    return Err(Error::InvalidArgument(format!(
                        "input width {} does not match the weight's {}",
                        x.dims()[1],
                        w.dims()[0]
                    )));
                }
                let mut y = x.matmul(w);
                if *alpha != 1.0 {
                    y = y.mul_scalar(*alpha);
                }
                if let Some(b) = bias {
                    let b = p(*b);
                    let b = if *beta != 1.0 { b.mul_scalar(*beta) } else { b };
                    y = y.add(b.unsqueeze::<2>());
                }
                one(Act::R2(y))
            }
            Op::Unary(u) => one(map_act!(float(0)?, |t| u.apply(t))),
            Op::Binary(op) => match (input(0)?, input(1)?) {
                (Value::Ints(a), Value::Ints(b)) => {
                    Ok((vec![Value::Ints(a.binary(&b, *op)?)], None))
                }
                (a, b) => one(a.float(ctx)?.binary(b.float(ctx)?, *op)?),
            },
            Op::GlobalAveragePool => {
                let x = float(0)?;
                let axes: Vec<usize> = (2..x.rank()).collect();
                one(x.mean_over(&axes, true)?)
            }
            Op::GlobalMaxPool => {
                let x = float(0)?;
                let axes: Vec<usize> = (2..x.rank()).collect();
                one(x.max_over(&axes))
            }
            Op::MaxPool { options } => one(Act::R4(module::max_pool2d(
                float(0)?.tensor::<4>()?,
                options.clone(),
            ))),
            Op::AveragePool { options } => one(Act::R4(module::avg_pool2d(
                float(0)?.tensor::<4>()?,
                options.clone(),
            ))),
            Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Shape { .. }
            | Op::Gather { .. }
            | Op::CastToInt
            | Op::CastToFloat => self.run_shape(&inputs, ctx),
            Op::ReduceMean {
                keep,
                noop_with_empty_axes,
            } => {
                let x = float(0)?;
                let rank = x.rank();
                let axes = match ints_input(&inputs, 1)? {
                    Some(a) if !a.values.is_empty() => axes_of(&a.values, rank)?,
                    _ if *noop_with_empty_axes => return one(x),
                    _ => (0..rank).collect(),
                };
                one(x.mean_over(&axes, *keep)?)
            }
            Op::Softmax { axis, log } => {
                let x = float(0)?;
                let a = axis_index(*axis, x.rank())?;
                one(if *log {
                    map_act!(x, |t| activation::log_softmax(t, a))
                } else {
                    map_act!(x, |t| activation::softmax(t, a))
                })
            }
            Op::Pad { mode } => {
                let x = float(0)?;
                let rank = x.rank();
                let pads = input(1)?.ints()?.values;
                let axes: Vec<usize> = match ints_input(&inputs, 3)? {
                    Some(a) => a
                        .values
                        .iter()
                        .map(|&v| axis_index(v, rank))
                        .collect::<Result<_>>()?,
                    None => (0..rank).collect(),
                };
                if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
                    return Err(Error::InvalidArgument(format!(
                        "pads {pads:?} for {} axes: only non-negative pads are supported",
                        axes.len()
                    )));
                }
                let mut pairs = vec![(0usize, 0usize); rank];
                for (k, &a) in axes.iter().enumerate() {
                    pairs[a] = (pads[k] as usize, pads[k + axes.len()] as usize);
                }
                let mode = match (mode, inputs.get(2).cloned().flatten()) {
                    (PadMode::Constant(_), Some(v)) => {
                        let value = crate::train::graph::to_f32(v.float(ctx)?.rows()?)?;
                        PadMode::Constant(value.first().copied().unwrap_or(0.0))
                    }
                    (m, _) => *m,
                };
                one(x.pad(&pairs, mode))
            }
        }
    }
}

/// Batch normalisation on the batch's statistics (training mode) for any rank ≥ 2: the
/// output, the batch mean and the biased variance per channel.
fn batch_norm_train(
    x: Act,
    scale: Tensor<1>,
    bias: Tensor<1>,
    epsilon: f64,
) -> Result<(Act, Tensor<1>, Tensor<1>)> {
    macro_rules! train {
        ($t:expr, $wrap:path) => {{
            let out = module::batch_norm_train($t, scale, bias, epsilon);
            (
                $wrap(out.output),
                out.mean.without_autodiff(),
                out.variance.without_autodiff(),
            )
        }};
    }
    Ok(match x {
        Act::R2(t) => train!(t, Act::R2),
        Act::R3(t) => train!(t, Act::R3),
        Act::R4(t) => train!(t, Act::R4),
        Act::R5(t) => train!(t, Act::R5),
        other => {
            return Err(Error::InvalidArgument(format!(
                "batch normalisation of shape {:?}",
                other.dims()
            )));
        }
    })
}
