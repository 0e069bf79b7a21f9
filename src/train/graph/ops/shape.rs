//! The shape ops: how `Flatten`, `Reshape`, `Transpose`, `Concat`, `Split`, `Slice`,
//! `Squeeze`/`Unsqueeze`, `Shape`, `Gather` and `Cast` run, on float tensors and on the integer
//! shapes exporters compute before a `Reshape` (constant-folded by running them).

use super::{BatchStat, Context, Op, Value, axis_index, required};
use crate::error::{Error, Result};
use crate::train::graph::value::{Act, Ints};

impl Op {
    /// Runs one of the shape ops (the others are [`Op::run`]'s).
    pub(super) fn run_shape(
        &self,
        inputs: &[Option<Value>],
        ctx: &Context<'_>,
    ) -> Result<(Vec<Value>, Option<BatchStat>)> {
        let input = |k: usize| required(inputs, k);
        let float = |k: usize| -> Result<Act> { input(k)?.float(ctx) };
        let one = |a: Act| Ok((vec![Value::Float(a)], None));
        match self {
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
                let sizes: Vec<usize> = match ints_input(inputs, 1)? {
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
                let axes = ints_input(inputs, 3)?.map(|a| a.values);
                let steps = ints_input(inputs, 4)?.map(|s| s.values);
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
                let axes_given = ints_input(inputs, 1)?.map(|a| a.values);
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
            other => Err(Error::InvalidArgument(format!(
                "{other:?} is not a shape op"
            ))),
        }
    }
}

/// Sorted distinct axis indices.
pub(super) fn axes_of(values: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut axes = values
        .iter()
        .map(|&a| axis_index(a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
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

pub(super) fn ints_input(inputs: &[Option<Value>], k: usize) -> Result<Option<Ints>> {
    inputs
        .get(k)
        .cloned()
        .flatten()
        .map(Value::ints)
        .transpose()
}
