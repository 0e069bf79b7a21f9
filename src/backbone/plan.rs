//! The optimised plan as `bench --plan` lists it: each operation, and for matrix products
//! the kernel tract chose.

use tract_onnx::prelude::*;

use super::Backbone;
use super::runner::Plan;

/// One operation of the optimised plan, as `bench --plan` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanStep {
    pub node: String,
    pub op: String,
    /// tract's one-line description of the op (shapes, strides…).
    pub info: String,
    /// The shape of its first input.
    pub input: Vec<usize>,
    /// For a depthwise convolution: the data layout it runs in and the kernel that computes it
    /// on this machine.
    pub kernel: Option<String>,
    /// An activation fused into the op, as tract describes it (our tract-core patch fuses a
    /// ReLU6 into a channel-last depthwise convolution: "clamped to [0, 6]").
    pub fused_clamp: Option<String>,
    /// For a matrix product (a convolution run as one): its shape and tract's kernel for it.
    pub product: Option<MatrixProduct>,
}

/// A matrix product of the plan, C (m×n) = A (m×k) · B (k×n) then its fused operations, and
/// the kernel tract picked for it on this machine (e.g. `fma_mmm_f32_16x6`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MatrixProduct {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Whether C's m axis is contiguous (the tile's columns are whole vectors): the stores'
    /// speed depends on it (vendor/README.md, the column-stores patch).
    pub m_contiguous: bool,
    pub kernel: String,
}

fn matrix_product(node: &TypedNode) -> Option<MatrixProduct> {
    use tract_onnx::tract_core::ops::matmul::optimized::{OptMatMul, ProtoFusedSpec};
    let product = node.op_as::<OptMatMul>()?;
    let shape = product.c_fact.shape.as_concrete()?;
    let k = product.micro_ops.iter().find_map(|op| match op {
        ProtoFusedSpec::AddMatMul { geo, .. } => geo.k.as_i64().map(|k| k as usize),
        _ => None,
    })?;
    // The m axis is contiguous when every axis after it spans one item.
    let m_contiguous = product
        .c_m_axis
        .is_some_and(|axis| shape[axis + 1..].iter().all(|&d| d == 1));
    Some(MatrixProduct {
        m: product.c_m_axis.map_or(1, |axis| shape[axis]),
        k,
        n: product.c_n_axis.map_or(1, |axis| shape[axis]),
        m_contiguous,
        kernel: product.mmm.first()?.name().to_string(),
    })
}

/// What runs a depthwise convolution whose input has `shape` (batch first) and whose
/// description is `info` (tract drops a batch axis of 1: HWC or CHW then): channel-last (the
/// channels axis last, as after tract's axis changes) takes the `depthwise_c` kernel; channel-first the `depthwise_w` one, which is
/// vectorised only along contiguous rows (stride 1), else tract-core's scalar loop.
fn depthwise_kernel(shape: &[usize], info: &str) -> String {
    use tract_linalg::routines::{Func, best_for};
    let isa = tract_linalg::isa::native();
    let routine = |func| {
        best_for(func, tract_onnx::prelude::DatumType::F32, &isa).map(|r| r.name().to_string())
    };
    // The spatial axes are the equal pair (square inputs); the channels sit after them or before.
    let channel_last = match shape {
        [_, h, w, c] | [h, w, c] => h == w && w != c,
        _ => false,
    };
    let stride_one = info.contains("strides: 1,1");
    match (channel_last, stride_one) {
        (true, _) => format!(
            "channel-last: {}",
            routine(Func::DepthwiseC).unwrap_or_else(|| "generic loop (no kernel)".into())
        ),
        (false, true) => format!(
            "channel-first: {}",
            routine(Func::DepthwiseW).unwrap_or_else(|| "scalar loop (no kernel)".into())
        ),
        (false, false) => "channel-first, stride > 1: scalar loop".into(),
    }
}

impl Backbone {
    /// The operations of tract's optimised plan in run order (empty for onnxruntime, whose
    /// plan is its own).
    pub fn plan_steps(&self) -> Vec<PlanStep> {
        #[cfg_attr(not(feature = "onnxruntime"), allow(irrefutable_let_patterns))]
        let Plan::Tract(plan) = &self.plan else {
            return Vec::new();
        };
        let model = plan.model();
        plan.order_without_consts()
            .iter()
            .map(|&id| {
                let node = &model.nodes[id];
                let op = node.op.name().to_string();
                let info = node.op.info().unwrap_or_default().join("; ");
                let input = node
                    .inputs
                    .first()
                    .and_then(|i| model.outlet_fact(*i).ok())
                    .and_then(|f| f.shape.as_concrete().map(<[usize]>::to_vec))
                    .unwrap_or_default();
                let kernel = (op == "DepthWiseConv").then(|| depthwise_kernel(&input, &info));
                let fused_clamp = info
                    .split("; ")
                    .find(|part| part.starts_with("clamped"))
                    .map(str::to_string);
                PlanStep {
                    node: node.name.clone(),
                    op,
                    info,
                    input,
                    kernel,
                    fused_clamp,
                    product: matrix_product(node),
                }
            })
            .collect()
    }
}
