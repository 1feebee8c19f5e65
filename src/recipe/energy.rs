//! Energy per run of the evaluated inputs (and per sample of a batch): an estimate from a published cost model, not a measurement.
//!
//! Figures: M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm, 0.9 V:
//! 32-bit float multiply 3.7 pJ, add 0.9 pJ; 8-bit integer multiply 0.2 pJ, add 0.03 pJ; 32-bit read from an
//! 8 KB SRAM 5 pJ, from DRAM 640 pJ.
//!
//! The model:
//! - compute: every multiply-accumulate (MACs per op type from `evaluate`) is one multiply and one add, in 8-bit
//!   integer when the op's weight is stored in at most 8 bits (an integer initializer, or a DequantizeLinear of
//!   one), else in 32-bit float. Per op type the integer share is weighted by weight elements.
//! - weights: every parameter byte is read once per inference from DRAM (640 pJ per 32 bits = 160 pJ/byte).
//! - activations: every MAC reads its activation operand from SRAM (5 pJ per 32 bits = 1.25 pJ/byte), 4 bytes
//!   for a float MAC and 1 for an integer one: an upper bound that assumes no reuse in registers.
//!
//! Real hardware differs (process node, caches, reuse, vector units); the estimate is for comparing a model before
//! and after a rewrite on the same assumptions.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ir::Model;
use crate::validate::EvaluationReport;

#[derive(Debug, Serialize)]
pub struct CostModel {
    pub source: &'static str,
    pub f32_mult_pj: f64,
    pub f32_add_pj: f64,
    pub int8_mult_pj: f64,
    pub int8_add_pj: f64,
    pub sram_read_32bit_pj: f64,
    pub dram_read_32bit_pj: f64,
    pub assumptions: &'static str,
}

pub static COST_MODEL: CostModel = CostModel {
    source: "Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm)",
    f32_mult_pj: 3.7,
    f32_add_pj: 0.9,
    int8_mult_pj: 0.2,
    int8_add_pj: 0.03,
    sram_read_32bit_pj: 5.0,
    dram_read_32bit_pj: 640.0,
    assumptions: "one multiply + one add per MAC (int8 when the weight is stored in <= 8 bits); every parameter \
                  byte read once from DRAM; every MAC's activation operand read from an 8 KB SRAM (no reuse)",
};

/// The estimate for one model (per inference at the evaluated input shapes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Energy {
    pub macs_f32: u64,
    pub macs_int8: u64,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    pub compute_uj: f64,
    pub weights_uj: f64,
    pub activations_uj: f64,
    pub total_uj: f64,
    /// Rows per run: the leading dim of the first input when it has rank >= 2 (a batch), else 1.
    pub batch: u64,
    /// `total_uj / batch`: per inference of one sample (the weights' DRAM read shared by the batch).
    pub per_sample_uj: f64,
    pub note: &'static str,
}

const MAC_OPS: &[(&str, usize)] = &[
    ("Conv", 1),
    ("ConvTranspose", 1),
    ("Gemm", 1),
    ("MatMul", 1),
    ("ConvInteger", 1),
    ("MatMulInteger", 1),
    ("QLinearConv", 3),
    ("QLinearMatMul", 3),
];

fn low_bits(t: &crate::ir::Tensor) -> bool {
    let d = t.dtype();
    !d.is_float() && d.bits().is_some_and(|b| b <= 8)
}

/// Per op type: (weight elements in <= 8-bit integers, all weight elements) over the main graph.
fn int_share(model: &Model) -> BTreeMap<String, (u64, u64)> {
    let g = &model.graph;
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (_, node) in g.nodes() {
        let Some(&(op, wi)) = MAC_OPS.iter().find(|(op, _)| node.op.is(op)) else {
            continue;
        };
        let Some(w) = node.input(wi) else { continue };
        let (low, n) = if let Some(t) = g.constant(w) {
            (low_bits(&t), t.numel().unwrap_or(0))
        } else if let Some((_, p)) = g.producer(w).filter(|(_, p)| p.op.is("DequantizeLinear")) {
            match p.input(0).and_then(|x| g.constant(x)) {
                Some(t) => (low_bits(&t), t.numel().unwrap_or(0)),
                None => (false, 0),
            }
        } else {
            (false, 0)
        };
        let e = out.entry(op.to_string()).or_default();
        e.1 += n;
        if low {
            e.0 += n;
        }
    }
    out
}

pub fn estimate(model: &Model, eval: &EvaluationReport) -> Energy {
    let share = int_share(model);
    let (mut f32m, mut i8m) = (0u64, 0u64);
    for (op, &macs) in &eval.macs {
        let int = match share.get(op) {
            Some(&(low, n)) if n > 0 => (macs as u128 * low as u128 / n as u128) as u64,
            _ => 0,
        };
        i8m += int;
        f32m += macs - int;
    }
    let weight_bytes: u64 = eval.params.values().map(|p| p.bytes).sum();
    let activation_bytes = f32m * 4 + i8m;
    let c = &COST_MODEL;
    let compute = f32m as f64 * (c.f32_mult_pj + c.f32_add_pj)
        + i8m as f64 * (c.int8_mult_pj + c.int8_add_pj);
    let weights = weight_bytes as f64 * c.dram_read_32bit_pj / 4.0;
    let acts = activation_bytes as f64 * c.sram_read_32bit_pj / 4.0;
    let batch = eval
        .inputs
        .first()
        .filter(|i| i.shape.len() >= 2)
        .map(|i| i.shape[0].max(1) as u64)
        .unwrap_or(1);
    let total = (compute + weights + acts) * 1e-6;
    Energy {
        macs_f32: f32m,
        macs_int8: i8m,
        weight_bytes,
        activation_bytes,
        compute_uj: compute * 1e-6,
        weights_uj: weights * 1e-6,
        activations_uj: acts * 1e-6,
        total_uj: total,
        batch,
        per_sample_uj: total / batch as f64,
        note: "estimate from the cost model in `cost_model`, not a measurement",
    }
}
