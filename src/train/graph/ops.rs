//! The ops the interpreter runs and how each runs on [`Value`]s: the layers of CNN classifiers
//! as PyTorch (legacy and dynamo), tf2onnx and onnx.helper write them, including the shape
//! arithmetic around a `Reshape`. Trainable layers (Conv, BatchNormalization, the dense
//! Gemm / MatMul) hold indices into the graph's parameters; every other initializer an op reads
//! is a constant.

use burn::tensor::activation;
use burn::tensor::module;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};
use burn::tensor::{DType, Device, Tensor};

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

/// Sorted distinct axis indices.
fn axes_of(values: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut axes = values
        .iter()
        .map(|&a| axis_index(a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
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

fn reshape_target(
    target: &Ints,
    from: &[usize],
    ctx: &Context<'_>,
    allow_zero: bool,
) -> Result<Vec<usize>> {
    let total: usize = from.iter().product();
    let mut dims = Vec::with_capacity(target.values.len());
    let mut infer = None;
    for (i, &d) in target.values.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            0 if !allow_zero => dims.push(*from.get(i).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "reshape target {:?}: no axis {i} to copy",
                    target.values
                ))
            })?),
            d if d >= 0 => dims.push(d as usize),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "reshape target {:?} is not a shape",
                    target.values
                )));
            }
        }
    }
    // A target written for the export's batch (a fixed `[1, 1280]`) means the batch at hand.
    if let (Some(b), Some(&n)) = (ctx.declared_batch, from.first())
        && infer != Some(0)
        && dims.first() == Some(&b)
        && n != b
        && total.is_multiple_of(n)
    {
        dims[0] = n;
    }
    if let Some(i) = infer {
        let known: usize = dims.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(Error::InvalidArgument(format!(
                "cannot reshape {from:?} into {:?}",
                target.values
            )));
        }
        dims[i] = total / known;
    }
    Ok(dims)
}

/// `(start, end, step)` of an ONNX slice over an axis of `len`, positive steps only.
fn slice_bounds(start: i64, end: i64, step: i64, len: usize) -> Result<(usize, usize, usize)> {
    if step < 1 {
        return Err(Error::InvalidArgument(format!(
            "Slice with step {step}: only positive steps are supported"
        )));
    }
    let n = len as i64;
    let clamp = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
    Ok((clamp(start), clamp(end), step as usize))
}

fn ints_input(inputs: &[Option<Value>], k: usize) -> Result<Option<Ints>> {
    inputs
        .get(k)
        .cloned()
        .flatten()
        .map(Value::ints)
        .transpose()
}

impl Op {
    /// Runs the op on `inputs` (None where an optional input is absent). Returns the outputs
    /// and, for a batch normalisation in training mode, its batch statistics.
    pub fn run(
        &self,
        inputs: Vec<Option<Value>>,
        ctx: &Context<'_>,
    ) -> Result<(Vec<Value>, Option<BatchStat>)> {
        let input = |k: usize| -> Result<Value> {
            inputs
                .get(k)
                .cloned()
                .flatten()
                .ok_or_else(|| Error::InvalidArgument(format!("input {k} is missing")))
        };
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
            Op::Flatten { axis } => {
                let x = float(0)?;
                let dims = x.dims();
                let a = if *axis == dims.len() as i64 {
                    dims.len()
                } else {
                    axis_index(*axis, dims.len())?
                };
                let outer = dims[..a].iter().product();
                let inner = dims[a..].iter().product();
                one(x.reshape(&[outer, inner])?)
            }
            Op::Reshape { allow_zero } => {
                let target = input(1)?.ints()?;
                match input(0)? {
                    Value::Ints(i) => {
                        let dims = reshape_target(&target, &i.dims, ctx, *allow_zero)?;
                        Ok((
                            vec![Value::Ints(Ints {
                                values: i.values,
                                dims,
                            })],
                            None,
                        ))
                    }
                    Value::Float(x) => {
                        let dims = reshape_target(&target, &x.dims(), ctx, *allow_zero)?;
                        one(x.reshape(&dims)?)
                    }
                }
            }
            Op::Transpose { perm } => {
                let x = float(0)?;
                let perm = perm
                    .clone()
                    .unwrap_or_else(|| (0..x.rank()).rev().collect());
                one(x.permute(&perm)?)
            }
            Op::Concat { axis } => {
                let parts: Vec<Value> = inputs.iter().flatten().cloned().collect();
                if parts.iter().all(|v| matches!(v, Value::Ints(_))) {
                    let mut values = Vec::new();
                    for v in parts {
                        values.extend(v.ints()?.values);
                    }
                    return Ok((vec![Value::Ints(Ints::vector(values))], None));
                }
                let parts = parts
                    .into_iter()
                    .map(|v| v.float(ctx))
                    .collect::<Result<Vec<_>>>()?;
                let rank = parts.first().map_or(1, Act::rank);
                one(Act::concat(parts, axis_index(*axis, rank)?)?)
            }
            Op::Split { axis, outputs } => {
                let x = float(0)?;
                let dims = x.dims();
                let a = axis_index(*axis, dims.len())?;
                let sizes: Vec<usize> = match ints_input(&inputs, 1)? {
                    Some(s) => s.values.iter().map(|&v| v.max(0) as usize).collect(),
                    None => {
                        let each = dims[a].div_ceil((*outputs).max(1));
                        (0..*outputs)
                            .map(|i| each.min(dims[a].saturating_sub(i * each)))
                            .collect()
                    }
                };
                if sizes.iter().sum::<usize>() != dims[a] {
                    return Err(Error::InvalidArgument(format!(
                        "split sizes {sizes:?} do not add up to axis {a} of {dims:?}"
                    )));
                }
                let mut start = 0;
                let mut out = Vec::with_capacity(sizes.len());
                for s in sizes {
                    out.push(Value::Float(x.clone().slice(a, start, start + s, 1)));
                    start += s;
                }
                Ok((out, None))
            }
            Op::Slice => {
                let starts = input(1)?.ints()?.values;
                let ends = input(2)?.ints()?.values;
                let axes = ints_input(&inputs, 3)?.map(|a| a.values);
                let steps = ints_input(&inputs, 4)?.map(|s| s.values);
                match input(0)? {
                    Value::Ints(i) if i.dims.len() == 1 => {
                        let (s, e, step) = slice_bounds(
                            starts[0],
                            ends[0],
                            steps.map_or(1, |s| s[0]),
                            i.values.len(),
                        )?;
                        let values: Vec<i64> = i.values[s..e.max(s)]
                            .iter()
                            .step_by(step)
                            .copied()
                            .collect();
                        Ok((vec![Value::Ints(Ints::vector(values))], None))
                    }
                    v => {
                        let mut x = v.float(ctx)?;
                        let dims = x.dims();
                        for k in 0..starts.len().min(ends.len()) {
                            let axis = match &axes {
                                Some(a) => axis_index(a[k], dims.len())?,
                                None => k,
                            };
                            let step = steps.as_ref().map_or(1, |s| s[k]);
                            let (s, e, step) = slice_bounds(starts[k], ends[k], step, dims[axis])?;
                            x = x.slice(axis, s, e, step);
                        }
                        one(x)
                    }
                }
            }
            Op::Squeeze | Op::Unsqueeze => {
                let axes_given = ints_input(&inputs, 1)?.map(|a| a.values);
                let (dims, value) = match input(0)? {
                    Value::Ints(i) => (i.dims.clone(), Value::Ints(i)),
                    Value::Float(x) => (x.dims(), Value::Float(x)),
                };
                let new_dims = if matches!(self, Op::Squeeze) {
                    match axes_given {
                        Some(a) => {
                            let axes = axes_of(&a, dims.len())?;
                            if let Some(&bad) = axes.iter().find(|&&a| dims[a] != 1) {
                                return Err(Error::InvalidArgument(format!(
                                    "cannot squeeze axis {bad} of {dims:?}"
                                )));
                            }
                            dims.iter()
                                .enumerate()
                                .filter(|(i, _)| !axes.contains(i))
                                .map(|(_, &d)| d)
                                .collect()
                        }
                        None => dims.iter().copied().filter(|&d| d != 1).collect(),
                    }
                } else {
                    let a = axes_given
                        .ok_or_else(|| Error::InvalidArgument("Unsqueeze needs axes".into()))?;
                    let axes = axes_of(&a, dims.len() + a.len())?;
                    let mut out = dims.clone();
                    for &ax in &axes {
                        out.insert(ax.min(out.len()), 1);
                    }
                    out
                };
                Ok((
                    vec![match value {
                        Value::Ints(i) => Value::Ints(Ints {
                            values: i.values,
                            dims: new_dims,
                        }),
                        Value::Float(x) => {
                            let d = if new_dims.is_empty() {
                                vec![1]
                            } else {
                                new_dims
                            };
                            Value::Float(x.reshape(&d)?)
                        }
                    }],
                    None,
                ))
            }
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
            Op::Shape { start, end } => {
                let dims: Vec<i64> = match input(0)? {
                    Value::Float(x) => x.dims().iter().map(|&d| d as i64).collect(),
                    Value::Ints(i) => i.dims.iter().map(|&d| d as i64).collect(),
                };
                let r = dims.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let (s, e) = (clamp(*start), clamp(end.unwrap_or(r)));
                Ok((
                    vec![Value::Ints(Ints::vector(dims[s..e.max(s)].to_vec()))],
                    None,
                ))
            }
            Op::Gather { axis } => {
                let indices = input(1)?.ints()?;
                match input(0)? {
                    Value::Ints(data) => {
                        let n = data.values.len() as i64;
                        let values = indices
                            .values
                            .iter()
                            .map(|&i| {
                                let i = if i < 0 { i + n } else { i };
                                data.values.get(i as usize).copied().ok_or_else(|| {
                                    Error::InvalidArgument(format!("index {i} outside {n} values"))
                                })
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Ok((
                            vec![Value::Ints(Ints {
                                values,
                                dims: indices.dims,
                            })],
                            None,
                        ))
                    }
                    Value::Float(x) => {
                        let dims = x.dims();
                        let a = axis_index(*axis, dims.len())?;
                        let len = dims[a] as i64;
                        let parts = indices
                            .values
                            .iter()
                            .map(|&i| {
                                let i = if i < 0 { i + len } else { i };
                                if !(0..len).contains(&i) {
                                    return Err(Error::InvalidArgument(format!(
                                        "index {i} outside axis {a} of {dims:?}"
                                    )));
                                }
                                Ok(x.clone().slice(a, i as usize, i as usize + 1, 1))
                            })
                            .collect::<Result<Vec<_>>>()?;
                        let joined = Act::concat(parts, a)?;
                        let mut out_dims = dims[..a].to_vec();
                        out_dims.extend(&indices.dims);
                        out_dims.extend(&dims[a + 1..]);
                        if out_dims.is_empty() {
                            out_dims.push(1);
                        }
                        one(joined.reshape(&out_dims)?)
                    }
                }
            }
            Op::CastToInt => match input(0)? {
                Value::Ints(i) => Ok((vec![Value::Ints(i)], None)),
                Value::Float(_) => Err(Error::InvalidArgument(
                    "a float tensor cast to integers (not differentiable)".into(),
                )),
            },
            Op::CastToFloat => one(float(0)?),
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
