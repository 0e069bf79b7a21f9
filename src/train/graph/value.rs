//! The values an interpreted graph passes between nodes: float activations of any rank up to 6
//! on the training device (burn tensors carry their rank in the type, so [`Act`] is an enum
//! over ranks), and small integer tensors kept on the host (the shape arithmetic exporters
//! write before a `Reshape`: Shape, Gather, Concat, Unsqueeze), evaluated at every pass so that
//! any batch size runs.

use burn::tensor::ops::PadMode;
use burn::tensor::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The highest activation rank the interpreter handles (a channel shuffle needs 5).
pub const MAX_RANK: usize = 6;

/// A float activation of rank 1 to [`MAX_RANK`].
#[derive(Clone, Debug)]
pub enum Act {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
    R5(Tensor<5>),
    R6(Tensor<6>),
}

/// `$body` run on the tensor inside `$act`, whatever its rank; the result is not an `Act`.
macro_rules! with_act {
    ($act:expr, |$t:ident| $body:expr) => {
        match $act {
            Act::R1($t) => $body,
            Act::R2($t) => $body,
            Act::R3($t) => $body,
            Act::R4($t) => $body,
            Act::R5($t) => $body,
            Act::R6($t) => $body,
        }
    };
}

/// `$body` run on the tensor inside `$act`, giving a tensor of the same rank back.
macro_rules! map_act {
    ($act:expr, |$t:ident| $body:expr) => {
        match $act {
            Act::R1($t) => Act::R1($body),
            Act::R2($t) => Act::R2($body),
            Act::R3($t) => Act::R3($body),
            Act::R4($t) => Act::R4($body),
            Act::R5($t) => Act::R5($body),
            Act::R6($t) => Act::R6($body),
        }
    };
}
pub(super) use map_act;

fn fixed<const D: usize>(dims: &[usize]) -> [usize; D] {
    let mut out = [0usize; D];
    out.copy_from_slice(dims);
    out
}

/// `t` reshaped to `dims` (any rank up to [`MAX_RANK`]; same number of elements).
fn reshaped<const D: usize>(t: Tensor<D>, dims: &[usize]) -> Result<Act> {
    Ok(match dims.len() {
        1 => Act::R1(t.reshape(fixed::<1>(dims))),
        2 => Act::R2(t.reshape(fixed::<2>(dims))),
        3 => Act::R3(t.reshape(fixed::<3>(dims))),
        4 => Act::R4(t.reshape(fixed::<4>(dims))),
        5 => Act::R5(t.reshape(fixed::<5>(dims))),
        6 => Act::R6(t.reshape(fixed::<6>(dims))),
        r => {
            return Err(Error::InvalidArgument(format!(
                "a tensor of rank {r}: `retrain` handles ranks 1 to {MAX_RANK}"
            )));
        }
    })
}

/// An elementwise operation of two tensors (ONNX broadcasting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

impl Binary {
    fn apply<const D: usize>(self, a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        match self {
            Binary::Add => a.add(b),
            Binary::Sub => a.sub(b),
            Binary::Mul => a.mul(b),
            Binary::Div => a.div(b),
        }
    }

    fn apply_int(self, a: i64, b: i64) -> Option<i64> {
        match self {
            Binary::Add => a.checked_add(b),
            Binary::Sub => a.checked_sub(b),
            Binary::Mul => a.checked_mul(b),
            Binary::Div => (b != 0).then(|| a.div_euclid(b)),
        }
    }
}

/// The broadcast shape of two shapes of equal rank, if they broadcast.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Some(x),
            (1, _) => Some(y),
            (_, 1) => Some(x),
            _ => None,
        })
        .collect()
}

impl Act {
    /// A constant of `dims` (rank 0 is held as `[1]`) on `device` in `dtype`.
    pub fn constant(values: &[f32], dims: &[usize], device: &Device, dtype: DType) -> Result<Act> {
        let flat = super::flat_tensor(values, device, dtype);
        if dims.is_empty() {
            return Ok(Act::R1(flat));
        }
        reshaped(flat, dims)
    }

    pub fn dims(&self) -> Vec<usize> {
        with_act!(self, |t| t.dims().to_vec())
    }

    pub fn rank(&self) -> usize {
        with_act!(self, |t| t.dims().len())
    }

    /// The tensor at its own rank `D` (an error if it has another).
    pub fn tensor<const D: usize>(self) -> Result<Tensor<D>> {
        let dims = self.dims();
        if dims.len() != D {
            return Err(Error::InvalidArgument(format!(
                "expects a {D}-d input, got shape {dims:?}"
            )));
        }
        Ok(with_act!(self, |t| t.reshape(fixed::<D>(&dims))))
    }

    /// The same values in `dims` (equal element counts).
    pub fn reshape(self, dims: &[usize]) -> Result<Act> {
        let (from, count) = (self.dims(), dims.iter().product::<usize>());
        if from.iter().product::<usize>() != count {
            return Err(Error::InvalidArgument(format!(
                "cannot reshape {from:?} into {dims:?}"
            )));
        }
        with_act!(self, |t| reshaped(t, dims))
    }

    /// Rows: the first axis kept, the others flattened (what a dense layer takes).
    pub fn rows(self) -> Result<Tensor<2>> {
        let dims = self.dims();
        let n = dims[0];
        let rest = dims[1..].iter().product();
        self.reshape(&[n, rest])?.tensor::<2>()
    }

    /// `self op other` with ONNX (numpy) broadcasting.
    pub fn binary(self, other: Act, op: Binary) -> Result<Act> {
        let rank = self.rank().max(other.rank());
        let lift = |a: Act| -> Result<Act> {
            let dims = a.dims();
            if dims.len() == rank {
                return Ok(a);
            }
            let mut full = vec![1; rank - dims.len()];
            full.extend(dims);
            a.reshape(&full)
        };
        let (a, b) = (lift(self)?, lift(other)?);
        if broadcast(&a.dims(), &b.dims()).is_none() {
            return Err(Error::InvalidArgument(format!(
                "shapes {:?} and {:?} do not broadcast",
                a.dims(),
                b.dims()
            )));
        }
        Ok(match (a, b) {
            (Act::R1(x), Act::R1(y)) => Act::R1(op.apply(x, y)),
            (Act::R2(x), Act::R2(y)) => Act::R2(op.apply(x, y)),
            (Act::R3(x), Act::R3(y)) => Act::R3(op.apply(x, y)),
            (Act::R4(x), Act::R4(y)) => Act::R4(op.apply(x, y)),
            (Act::R5(x), Act::R5(y)) => Act::R5(op.apply(x, y)),
            (Act::R6(x), Act::R6(y)) => Act::R6(op.apply(x, y)),
            _ => unreachable!("both lifted to one rank"),
        })
    }

    /// Axes permuted: output axis i is input axis `perm[i]`.
    pub fn permute(self, perm: &[usize]) -> Result<Act> {
        let rank = self.rank();
        let mut seen = perm.to_vec();
        seen.sort_unstable();
        if seen != (0..rank).collect::<Vec<_>>() {
            return Err(Error::InvalidArgument(format!(
                "permutation {perm:?} does not fit a rank-{rank} tensor"
            )));
        }
        Ok(match self {
            Act::R1(t) => Act::R1(t),
            Act::R2(t) => Act::R2(t.permute(fixed::<2>(perm))),
            Act::R3(t) => Act::R3(t.permute(fixed::<3>(perm))),
            Act::R4(t) => Act::R4(t.permute(fixed::<4>(perm))),
            Act::R5(t) => Act::R5(t.permute(fixed::<5>(perm))),
            Act::R6(t) => Act::R6(t.permute(fixed::<6>(perm))),
        })
    }

    /// Mean over `axes` (sorted, distinct), kept as size-1 axes when `keep`.
    pub fn mean_over(self, axes: &[usize], keep: bool) -> Result<Act> {
        let mut dims = self.dims();
        let reduced = map_act!(self, |t| t.mean_dims(axes));
        if keep {
            return Ok(reduced);
        }
        for &a in axes.iter().rev() {
            dims.remove(a);
        }
        if dims.is_empty() {
            dims.push(1);
        }
        reduced.reshape(&dims)
    }

    /// Maximum over `axes`, kept as size-1 axes.
    pub fn max_over(self, axes: &[usize]) -> Act {
        let mut out = self;
        for &a in axes {
            out = map_act!(out, |t| t.max_dim(a));
        }
        out
    }

    /// `start..end` with `step` (≥ 1) along `axis` (bounds already clamped to the axis).
    pub fn slice(self, axis: usize, start: usize, end: usize, step: usize) -> Act {
        let end = end.max(start);
        if step == 1 {
            return map_act!(self, |t| t.narrow(axis, start, end - start));
        }
        let range = burn::tensor::Slice {
            start: start as isize,
            end: Some(end as isize),
            step: step as isize,
        };
        map_act!(self, |t| t.slice_dim(axis, range))
    }

    /// The tensors joined along `axis` (same rank, equal sizes elsewhere).
    pub fn concat(parts: Vec<Act>, axis: usize) -> Result<Act> {
        let first = parts
            .first()
            .ok_or_else(|| Error::InvalidArgument("Concat of nothing".into()))?
            .dims();
        for p in &parts {
            let d = p.dims();
            let fits = d.len() == first.len()
                && d.iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !fits {
                return Err(Error::InvalidArgument(format!(
                    "cannot join {first:?} and {d:?} along axis {axis}"
                )));
            }
        }
        fn join<const D: usize>(parts: Vec<Act>, axis: usize) -> Result<Tensor<D>> {
            let tensors = parts
                .into_iter()
                .map(|p| p.tensor::<D>())
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(tensors, axis))
        }
        Ok(match first.len() {
            1 => Act::R1(join(parts, axis)?),
            2 => Act::R2(join(parts, axis)?),
            3 => Act::R3(join(parts, axis)?),
            4 => Act::R4(join(parts, axis)?),
            5 => Act::R5(join(parts, axis)?),
            _ => Act::R6(join(parts, axis)?),
        })
    }

    /// Padding of `(before, after)` per axis, filled as `mode` says.
    pub fn pad(self, pads: &[(usize, usize)], mode: PadMode) -> Act {
        map_act!(self, |t| t.pad(pads, mode))
    }
}

/// A small integer tensor on the host (shape arithmetic); `dims` empty for a scalar.
#[derive(Clone, Debug, PartialEq)]
pub struct Ints {
    pub values: Vec<i64>,
    pub dims: Vec<usize>,
}

impl Ints {
    pub fn vector(values: Vec<i64>) -> Ints {
        let dims = vec![values.len()];
        Ints { values, dims }
    }

    /// Elementwise `op` with broadcasting (equal shapes, or one side a single value).
    pub fn binary(&self, other: &Ints, op: Binary) -> Result<Ints> {
        let dims = match (self.values.len(), other.values.len()) {
            (a, b) if a == b => self.dims.clone().max(other.dims.clone()),
            (1, _) => other.dims.clone(),
            (_, 1) => self.dims.clone(),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "integer shapes {:?} and {:?} do not broadcast",
                    self.dims, other.dims
                )));
            }
        };
        let n = self.values.len().max(other.values.len());
        let at = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
        let values = (0..n)
            .map(|i| {
                op.apply_int(at(&self.values, i), at(&other.values, i))
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!("integer {op:?} overflows or divides by 0"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Ints { values, dims })
    }

    /// As a float activation (a Cast to float).
    pub fn to_act(&self, device: &Device, dtype: DType) -> Result<Act> {
        let values: Vec<f32> = self.values.iter().map(|&v| v as f32).collect();
        Act::constant(&values, &self.dims, device, dtype)
    }
}
