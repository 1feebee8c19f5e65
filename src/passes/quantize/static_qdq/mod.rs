//! Static QDQ quantization (`quantize{mode=static}`): calibrate activation ranges on sample inputs through the
//! pipeline's `Calibrator`, then insert QuantizeLinear -> DequantizeLinear pairs on the activations feeding
//! quantisable ops and on their outputs, in the layout ONNX Runtime fuses into integer kernels:
//!
//! - one shared Q/DQ pair per tensor (every reader reads the DequantizeLinear output; a graph output keeps the
//!   float value);
//! - weights of Conv / ConvTranspose / Gemm / MatMul become int8 initializers with a symmetric per-channel (or
//!   per-tensor) scale behind one DequantizeLinear; the float weight leaves the file;
//! - a bias becomes int32 with scale = input scale x weight scale and zero point 0;
//! - Relu / Clip right after a quantised op is absorbed: the pair goes on its output instead (exact, ONNX
//!   Runtime fuses the activation into the kernel);
//! - data-movement ops (Reshape, Transpose, Flatten, Squeeze, Unsqueeze, MaxPool, Identity) whose input is
//!   quantised get a pair on their output with their input's parameters (exact: they move integers).
//!
//! Quality options beyond ONNX Runtime's: cross-layer equalisation (`cle.rs`) through positively homogeneous
//! activations, Percentile / Entropy ranges, and a sensitivity search (`drift_budget`) that keeps the layers
//! whose quantization costs the most output cosine in float until the budget is met. Every choice is a remark.
//!
//! Activations are those of the main graph (the calibrator runs it); nodes inside `If`/`Loop` bodies are left
//! with a remark (weight-only quantization reaches them).

pub mod cle;
pub mod ranges;

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::ir::ops::{ConvView, GemmView};
use crate::ir::{
    AttrList, DataType, Graph, Model, NewNode, NodeId, OpKey, Patch, Tensor, UseSlot, ValRef,
    ValueDef, ValueId,
};
use crate::passes::quantize::calibrate::{Observer, StatsCollector, StatsOptions, TensorStats};
use crate::passes::{Outcome, PassContext, PassReport};

use ranges::{activation_params, clip_range, weight_scale, RangeMethod};

use super::PASS;

/// Ops quantised by default.
pub fn default_ops() -> Vec<String> {
    [
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Add",
        "Mul",
        "GlobalAveragePool",
        "AveragePool",
        "Gather",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

crate::pass_options! {
    /// Options of static QDQ quantization.
    pub struct StaticQdqOptions {
        /// Activation range method: minmax, percentile or entropy.
        method: String = "minmax".to_string(),
        /// Percentile of magnitudes kept by method=percentile.
        percentile: f64 = 99.999,
        /// Activation type: uint8 or int8.
        activation_type: String = "uint8".to_string(),
        /// Per-channel weight scales (needs ai.onnx 13: the opset is raised, or per-tensor is used where it cannot be).
        per_channel: bool = true,
        /// Op types to quantise.
        ops: Vec<String> = default_ops(),
        /// Only nodes matching one of these (node name, op type, or a name pattern with `*` / `?`); empty = all.
        include: Vec<String> = Vec::new(),
        /// Nodes matching one of these (node name, op type, or a name pattern with `*` / `?`) stay float.
        exclude: Vec<String> = Vec::new(),
        /// Cross-layer equalisation of Conv/Gemm -> Relu/LeakyRelu/PRelu -> Conv/Gemm chains before quantising.
        equalize: bool = false,
        /// Correct each bias for the mean shift its weight's quantization error causes (from the per-channel means of the layer's input seen in calibration).
        bias_correction: bool = false,
        /// Keep the most sensitive layers float until the worst output cosine against the original is at least this (0 = off).
        drift_budget: f64 = 0.0,
        /// Histogram bins per activation for percentile / entropy.
        histogram_bins: usize = 2048,
    }
}

/// `*` matches any run of characters, `?` any one character.
fn glob(pat: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    // classic two-pointer wildcard match with backtracking to the last `*`
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(st) = star {
            i = st + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

fn matches_any(pats: &[String], name: &str, op: &str) -> bool {
    pats.iter().any(|p| p == op || glob(p, name))
}

/// Ops that only move values: their output takes their input's quantization parameters.
const DATA_MOVEMENT: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
    "Identity",
];

/// Ops whose output is float whenever their first input is.
const FLOAT_PRESERVING: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Slice",
    "Split",
    "Pad",
    "Resize",
    "Gather",
    "Neg",
    "Abs",
];

/// Ops whose output is always float (for float models).
const FLOAT_OUT: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "HardSigmoid",
    "Softmax",
    "BatchNormalization",
    "GlobalAveragePool",
    "AveragePool",
    "LayerNormalization",
    "Erf",
    "Sqrt",
    "Exp",
    "DequantizeLinear",
    "ReduceMean",
    "Pow",
];

/// Whether `v` is a float32 tensor: declared, constant, or inferred from its producer.
fn is_f32(g: &Graph, v: ValueId, depth: usize) -> bool {
    if let Some(dt) = crate::passes::convert::declared_dtype(g, v) {
        return dt == DataType::FLOAT;
    }
    if depth > 64 {
        return false;
    }
    match g.producer(v) {
        Some((_, n)) if n.op.is_default_domain() => {
            let op = n.op.op_type.as_str();
            if FLOAT_OUT.contains(&op) {
                true
            } else if FLOAT_PRESERVING.contains(&op) {
                n.input(0).is_some_and(|x| is_f32(g, x, depth + 1))
            } else {
                false
            }
        }
        _ => false,
    }
}

fn is_constant(g: &Graph, v: ValueId) -> bool {
    g.constant(v).is_some()
}

/// Computed from constants only (e.g. int8 storage -> Cast -> Mul): a weight already stored quantised.
fn is_constant_cone(g: &Graph, v: ValueId, depth: usize) -> bool {
    if is_constant(g, v) {
        return true;
    }
    if depth > 16 {
        return false;
    }
    match g.producer(v) {
        Some((_, n)) if !n.has_subgraphs() && !n.inputs.is_empty() => n
            .inputs
            .iter()
            .flatten()
            .all(|x| is_constant_cone(g, *x, depth + 1)),
        _ => false,
    }
}

/// Produced by a Conv / ConvTranspose / Gemm / MatMul / Add, possibly through Relu, Clip and data-movement ops:
/// an element-wise op there joins a quantised path (a residual Add, a HardSwish Mul). Element-wise ops
/// elsewhere (a LayerNorm spelled out as Sub / Div / Mul) stay float: their operands' ranges are not those an
/// integer kernel keeps.
fn fed_by_compute(g: &Graph, v: ValueId, depth: usize) -> bool {
    if depth > 8 {
        return false;
    }
    match g.producer(v) {
        Some((_, n)) if n.op.is_default_domain() => {
            let op = n.op.op_type.as_str();
            if ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add"].contains(&op) {
                true
            } else if op == "Relu" || op == "Clip" || DATA_MOVEMENT.contains(&op) {
                n.input(0).is_some_and(|x| fed_by_compute(g, x, depth + 1))
            } else {
                false
            }
        }
        _ => false,
    }
}

fn produced_by(g: &Graph, v: ValueId, op: &str) -> bool {
    g.producer(v).is_some_and(|(_, n)| n.op.is(op))
}

/// Weight layouts bias correction understands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Conv: (M, C/group, k...), input channels on axis 1 of the input.
    Conv,
    /// W[n, k]: output n from input feature k (last axis of the input).
    RowsOut,
    /// W[k, n].
    ColsOut,
    Other,
}

/// A quantisable node and the roles of its inputs.
#[derive(Clone, Debug)]
struct Site {
    node: NodeId,
    name: String,
    /// Float activations read by the node.
    acts: Vec<ValueId>,
    /// (input slot, weight value, per-channel axis)
    weight: Option<(usize, ValueId, Option<usize>)>,
    /// (input slot, bias value): quantised as int32 when the weight is.
    bias: Option<(usize, ValueId)>,
    /// How the weight's output and input channels are laid out (for bias correction).
    layout: Layout,
    /// Constant float inputs of an element-wise op (Add/Mul), stored in the activation type (per tensor).
    consts: Vec<(usize, ValueId)>,
    /// Outputs quantised (after Relu/Clip absorption).
    outs: Vec<ValueId>,
    /// Said in the remark.
    notes: Vec<String>,
}

/// Relu, or Clip whose bounds are constants: exact to fold into the output's range.
fn absorbable(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n).expect("live");
    if node.op.is("Relu") {
        return true;
    }
    node.op.is("Clip")
        && node
            .inputs
            .iter()
            .skip(1)
            .flatten()
            .all(|v| is_constant(g, *v))
}

/// The output tensor to quantise for a node output: the output of a following Relu/Clip when it is the only
/// reader (the activation is then absorbed).
fn output_tensor(g: &Graph, y: ValueId, notes: &mut Vec<String>) -> ValueId {
    if g.is_output(y) {
        return y;
    }
    let uses = g.uses(y);
    if uses.len() == 1 {
        let n = uses[0].node;
        if absorbable(g, n) {
            let node = g.node(n).expect("live");
            if let Some(z) = node.output(0) {
                notes.push(format!("{} '{}' absorbed", node.op.op_type, node.name()));
                return z;
            }
        }
    }
    y
}

/// A normalisation over the last axis: LayerNormalization, or a ReduceMean over axis -1 (a decomposed one).
fn is_norm(g: &Graph, n: &crate::ir::Node) -> bool {
    if n.op.is("LayerNormalization") || n.op.is("SimplifiedLayerNormalization") {
        return true;
    }
    if !n.op.is("ReduceMean") {
        return false;
    }
    let axes = match n.get_ints("axes") {
        Ok(Some(a)) => Some(a),
        _ => n
            .input(1)
            .and_then(|a| g.constant(a))
            .and_then(|t| t.to_i64_vec().ok()),
    };
    axes.as_deref() == Some(&[-1])
}

/// The normalisation `v` reaches, directly or through at most `adds` further Adds (a residual stream): such a
/// tensor carries the outlier channels of a transformer's residual stream, which one per-tensor 8-bit range
/// crushes, and the normalisation then scales the crushed channels back up.
fn reaches_norm(g: &Graph, v: ValueId, adds: usize) -> Option<String> {
    for c in g.consumers(v) {
        let Some(node) = g.node(c) else { continue };
        if !node.op.is_default_domain() {
            continue;
        }
        if is_norm(g, node) {
            return Some(node.name().to_string());
        }
        if adds > 0 && node.op.is("Add") {
            if let Some(found) = node.output(0).and_then(|y| reaches_norm(g, y, adds - 1)) {
                return Some(found);
            }
        }
    }
    None
}

/// Find the quantisable nodes of the main graph; the others get a remark when they were candidates.
fn select(
    g: &Graph,
    opts: &StaticQdqOptions,
    per_channel: bool,
    report: &mut PassReport,
) -> Result<Vec<Site>> {
    let order = crate::ir::order::stable_topo(g, g.node_ids(), &|n| n.index() as u64).0;
    let mut sites = Vec::new();
    for id in order {
        let node = g.node(id).expect("live");
        if !node.op.is_default_domain() {
            continue;
        }
        let op = node.op.op_type.as_str();
        if !opts.ops.iter().any(|o| o == op) {
            continue;
        }
        let name = node.name().to_string();
        let at = if name.is_empty() {
            format!("<{op}>")
        } else {
            name.clone()
        };
        if !opts.include.is_empty() && !matches_any(&opts.include, &name, op) {
            report.remark(at, Outcome::Skipped, "not included by the filter");
            continue;
        }
        if matches_any(&opts.exclude, &name, op) {
            report.remark(at, Outcome::Skipped, "excluded by the filter");
            continue;
        }
        if let Some(v) = node
            .inputs
            .iter()
            .flatten()
            .find(|v| !is_constant(g, **v) && is_constant_cone(g, **v, 0))
        {
            report.remark(
                at,
                Outcome::Skipped,
                format!(
                    "input '{}' is computed from constants only (a weight already stored quantised?): left as it is",
                    g.value_name(*v)
                ),
            );
            continue;
        }
        let mut notes = Vec::new();
        let mut consts = Vec::new();
        let mut layout = Layout::Other;
        // an Add that reaches a layer normalization (directly or through one more Add) stays float
        let add_norm = match op {
            "Add" => node.output(0).and_then(|y| reaches_norm(g, y, 1)),
            _ => None,
        };
        let site = match op {
            "Conv" | "ConvTranspose" => {
                let (x, w, b, group) = if op == "Conv" {
                    let v = ConvView::of(node)?.expect("a Conv");
                    (v.x, v.w, v.b, v.group)
                } else {
                    match (node.input(0), node.input(1)) {
                        (Some(x), Some(w)) => {
                            (x, w, node.input(2), node.get_int("group")?.unwrap_or(1))
                        }
                        _ => continue,
                    }
                };
                if op == "Conv" {
                    layout = Layout::Conv;
                }
                let axis = if !per_channel {
                    None
                } else if op == "Conv" {
                    Some(0)
                } else if group == 1 {
                    Some(1)
                } else {
                    notes.push("grouped ConvTranspose: per-tensor weight scale".into());
                    None
                };
                Some((vec![x], Some((1, w, axis)), b.map(|b| (2, b))))
            }
            "Gemm" => {
                let v = GemmView::of(node)?.expect("a Gemm");
                if !v.trans_a {
                    layout = if v.trans_b {
                        Layout::RowsOut
                    } else {
                        Layout::ColsOut
                    };
                }
                let axis = per_channel.then_some(if v.trans_b { 0 } else { 1 });
                let bias = v.c.filter(|_| v.alpha == 1.0 && v.beta == 1.0);
                if v.c.is_some() && bias.is_none() {
                    notes.push("alpha or beta is not 1: bias kept float".into());
                }
                if is_constant(g, v.b) {
                    Some((vec![v.a], Some((1, v.b, axis)), bias.map(|b| (2, b))))
                } else {
                    Some((vec![v.a, v.b], None, None))
                }
            }
            "MatMul" => match (node.input(0), node.input(1)) {
                (Some(a), Some(b)) if is_constant(g, b) => {
                    let rank = g.constant(b).map(|t| t.dims.len()).unwrap_or(0);
                    let axis = (per_channel && rank == 2).then_some(1);
                    if per_channel && rank != 2 {
                        notes.push(format!("rank-{rank} weight: per-tensor scale"));
                    }
                    Some((vec![a], Some((1, b, axis)), None))
                }
                (Some(a), Some(b)) if !is_constant(g, a) => Some((vec![a, b], None, None)),
                _ => None,
            },
            "Add" | "Mul"
                if !node
                    .inputs
                    .iter()
                    .flatten()
                    .any(|v| fed_by_compute(g, *v, 0)) =>
            {
                report.remark(
                    at,
                    Outcome::Skipped,
                    "no operand comes from a Conv / Gemm / MatMul / Add path: left float",
                );
                continue;
            }
            "Add" if add_norm.is_some() => {
                report.remark(
                    at,
                    Outcome::Skipped,
                    format!(
                        "feeds layer normalization '{}' (through at most one more Add): a residual stream carries outlier channels a per-tensor 8-bit range crushes; left float",
                        add_norm.unwrap_or_default()
                    ),
                );
                continue;
            }
            "Add" | "Mul" => match (node.input(0), node.input(1)) {
                (Some(a), Some(b)) if !is_constant(g, a) && !is_constant(g, b) => {
                    Some((vec![a, b], None, None))
                }
                (Some(a), Some(b)) if is_constant(g, a) != is_constant(g, b) => {
                    // one constant operand: stored in the activation type behind its own DequantizeLinear, as
                    // ONNX Runtime's QLinearAdd / QLinearMul take it
                    let (k, c, x) = if is_constant(g, a) {
                        (0, a, b)
                    } else {
                        (1, b, a)
                    };
                    if g.constant(c).is_some_and(|t| t.dtype() == DataType::FLOAT)
                        && g.weight(c).is_some()
                    {
                        consts.push((k, c));
                        Some((vec![x], None, None))
                    } else {
                        continue;
                    }
                }
                _ => continue,
            },
            "GlobalAveragePool" | "AveragePool" => node.input(0).map(|x| (vec![x], None, None)),
            // an embedding table: 8-bit in the activation type with one scale (a scale per row would cost 4
            // bytes per vocabulary entry); the gathered rows are quantised with the table's own parameters
            // (`table_params`), so ONNX Runtime drops the DequantizeLinear -> Gather -> QuantizeLinear around it
            // and gathers 8-bit rows instead of dequantising the whole table on every run
            "Gather" => match node.input(0) {
                Some(t)
                    if is_constant(g, t)
                        && node.get_int("axis")?.unwrap_or(0) == 0
                        && g.constant(t).is_some_and(|c| c.dtype() == DataType::FLOAT)
                        && g.weight(t).is_some() =>
                {
                    consts.push((0, t));
                    Some((vec![], None, None))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((acts, weight, bias)) = site else {
            report.remark(at, Outcome::Skipped, "inputs not understood");
            continue;
        };
        if acts.iter().any(|a| produced_by(g, *a, "DequantizeLinear")) {
            report.remark(
                at,
                Outcome::Skipped,
                "already quantised (input from DequantizeLinear)",
            );
            continue;
        }
        if let Some(a) = acts
            .iter()
            .find(|a| !is_f32(g, **a, 0) || is_constant(g, **a))
        {
            report.remark(
                at,
                Outcome::Skipped,
                format!("input '{}' is not a float32 activation", g.value_name(*a)),
            );
            continue;
        }
        if let Some((_, w, _)) = weight {
            let ok = g
                .weight(w)
                .and_then(|wr| {
                    g.read_weight(&wr)
                        .ok()
                        .map(|t| t.dtype() == DataType::FLOAT)
                })
                .unwrap_or(false);
            if !ok {
                report.remark(
                    at,
                    Outcome::Skipped,
                    format!(
                        "weight '{}' is not a float32 constant of this graph",
                        g.value_name(w)
                    ),
                );
                continue;
            }
        }
        let mut outs = Vec::new();
        for y in node.outputs.iter().flatten() {
            if is_f32(g, *y, 0) || FLOAT_OUT.contains(&op) {
                let z = output_tensor(g, *y, &mut notes);
                // (gathered rows are requantised exactly with their table's parameters: no error to avoid)
                if let Some(norm) = reaches_norm(g, z, 2).filter(|_| op != "Gather") {
                    notes.push(format!(
                        "output left float: it reaches layer normalization '{norm}' through a residual Add"
                    ));
                    continue;
                }
                outs.push(z);
            }
        }
        sites.push(Site {
            node: id,
            name: at,
            acts,
            weight,
            bias,
            layout,
            consts,
            outs,
            notes,
        });
    }
    Ok(sites)
}

/// Every tensor to quantise: `None` = its own calibrated range, `Some(src)` = reuse `src`'s parameters.
fn tensor_set(
    g: &Graph,
    sites: &[&Site],
    opts: &StaticQdqOptions,
) -> BTreeMap<ValueId, Option<ValueId>> {
    let mut set: BTreeMap<ValueId, Option<ValueId>> = BTreeMap::new();
    for s in sites {
        for v in s.acts.iter().chain(&s.outs) {
            // a tensor already read through a QuantizeLinear is left alone
            if g.consumers(*v)
                .iter()
                .any(|n| g.node(*n).is_some_and(|x| x.op.is("QuantizeLinear")))
            {
                continue;
            }
            set.insert(*v, None);
        }
    }
    let order = crate::ir::order::stable_topo(g, g.node_ids(), &|n| n.index() as u64).0;
    for id in order {
        let node = g.node(id).expect("live");
        if !node.op.is_default_domain() || !DATA_MOVEMENT.contains(&node.op.op_type.as_str()) {
            continue;
        }
        if matches_any(&opts.exclude, node.name(), &node.op.op_type) {
            continue;
        }
        let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
            continue;
        };
        if let Some(src) = set.get(&x).copied() {
            if node.outputs.iter().flatten().count() == 1 {
                set.insert(y, Some(src.unwrap_or(x)));
            }
        }
    }
    set
}

/// Quantization parameters of one activation.
#[derive(Clone, Copy, Debug)]
struct ActParams {
    scale: f32,
    zero_point: i32,
}

/// Per-tensor parameters of a constant stored in the activation type: its own min / max (with 0).
fn table_params(v: &[f64], signed: bool) -> (f32, i32) {
    let lo = v.iter().copied().fold(0f64, f64::min) as f32;
    let hi = v.iter().copied().fold(0f64, f64::max) as f32;
    activation_params(lo, hi, signed)
}

/// Per-channel (axis) or per-tensor symmetric int8 weight; returns (int8 tensor, scales).
fn quantize_weight(t: &Tensor, axis: Option<usize>) -> Result<(Vec<i8>, Vec<f32>)> {
    let w = t.to_f64_vec()?;
    let dims: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
    let (outer, ch, inner) = match axis {
        Some(a) if a < dims.len() => (
            dims[..a].iter().product::<usize>(),
            dims[a],
            dims[a + 1..].iter().product::<usize>(),
        ),
        _ => (1, 1, w.len()),
    };
    let mut absmax = vec![0f64; ch];
    for o in 0..outer {
        for c in 0..ch {
            for i in 0..inner {
                let x = w[(o * ch + c) * inner + i];
                if x.is_finite() {
                    absmax[c] = absmax[c].max(x.abs());
                }
            }
        }
    }
    let scales: Vec<f32> = absmax.iter().map(|m| weight_scale(*m)).collect();
    let mut q = vec![0i8; w.len()];
    for o in 0..outer {
        for c in 0..ch {
            let s = f64::from(scales[c]);
            for i in 0..inner {
                let k = (o * ch + c) * inner + i;
                q[k] = (w[k] / s).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    Ok((q, scales))
}

/// What `build` did.
#[derive(Default)]
struct Built {
    tensors: u64,
    weights: u64,
    biases: u64,
    bytes_before: u64,
    bytes_after: u64,
    remarks: Vec<(String, Outcome, String)>,
}

/// Insert the Q/DQ pairs and quantised weights of `sites` into `g`.
fn build(
    g: &mut Graph,
    sites: &[&Site],
    params: &BTreeMap<ValueId, ActParams>,
    means: &BTreeMap<ValueId, Vec<f64>>,
    opts: &StaticQdqOptions,
    signed: bool,
) -> Result<(crate::ir::ChangeLog, Built)> {
    let mut p = Patch::new(PASS);
    let mut built = Built::default();
    let set = tensor_set(g, sites, opts);
    let act_dtype = |zp: i32| -> Result<Tensor> {
        if signed {
            Tensor::from_vec::<i8>("", vec![], vec![zp as i8])
        } else {
            Tensor::from_vec::<u8>("", vec![], vec![zp as u8])
        }
    };
    // Tensors a quantised op produces: every reader goes through the pair, or ONNX Runtime cannot fuse the
    // producer (its output must feed QuantizeLinear only).
    let produced: BTreeSet<ValueId> = sites.iter().flat_map(|s| s.outs.iter().copied()).collect();
    // Who reads the DequantizeLinear of an activation: the quantised ops that list it, and data-movement ops
    // whose output reuses its parameters.
    let mut readers: BTreeMap<ValueId, BTreeSet<NodeId>> = BTreeMap::new();
    for s in sites {
        for v in &s.acts {
            readers.entry(*v).or_default().insert(s.node);
        }
    }
    for (&y, src) in &set {
        let (Some(_), ValueDef::Node(n, _)) = (src, g.value(y).def) else {
            continue;
        };
        if let Some(x) = g.node(n).and_then(|n| n.input(0)) {
            readers.entry(x).or_default().insert(n);
        }
    }
    // activations
    let mut pairs: BTreeMap<ValueId, ValRef> = BTreeMap::new();
    for (&v, src) in &set {
        let key = src.unwrap_or(v);
        let Some(ap) = params.get(&key).copied() else {
            continue;
        };
        let base = g.value_name(v).to_string();
        let s = p.add_named_initializer(
            g,
            &base,
            "_scale",
            Tensor::from_f32("", vec![], &[ap.scale]),
        );
        let zp = p.add_named_initializer(g, &base, "_zero_point", act_dtype(ap.zero_point)?);
        let q = p.new_named_value(g, &base, "_QuantizeLinear_Output");
        let dq = p.new_named_value(g, &base, "_DequantizeLinear_Output");
        let qn = p.fresh_suffixed(g, &base, "_QuantizeLinear");
        let dqn = p.fresh_suffixed(g, &base, "_DequantizeLinear");
        p.add_node_spec(NewNode {
            name: Some(qn),
            op: OpKey::onnx("QuantizeLinear"),
            inputs: vec![Some(ValRef::Old(v)), Some(s), Some(zp)],
            outputs: vec![q],
            attrs: vec![],
        });
        p.add_node_spec(NewNode {
            name: Some(dqn),
            op: OpKey::onnx("DequantizeLinear"),
            inputs: vec![Some(q), Some(s), Some(zp)],
            outputs: vec![dq],
            attrs: vec![],
        });
        if produced.contains(&v) || src.is_some() {
            p.replace_all_uses(v, dq);
        } else {
            // A float producer (LayerNormalization, Softmax, a graph input...): ops left float keep reading the
            // float tensor, so they do not inherit an 8-bit error they do not need (a residual Add beside the
            // MatMuls that read a LayerNormalization, say). The producer is not fused, so nothing is lost.
            let quantised = readers.get(&v);
            for u in g.uses(v).to_vec() {
                if let UseSlot::Input(slot) = u.slot {
                    if quantised.is_some_and(|r| r.contains(&u.node)) {
                        p.set_input(u.node, slot as usize, Some(dq));
                    }
                }
            }
        }
        pairs.insert(v, dq);
        built.tensors += 1;
    }
    // weights and biases
    type Cached = (ValRef, Vec<f32>, std::rc::Rc<(Vec<i64>, Vec<f64>)>);
    let mut wcache: BTreeMap<(ValueId, Option<usize>), Cached> = BTreeMap::new();
    let mut rewired: BTreeMap<ValueId, usize> = BTreeMap::new();
    for s in sites {
        let Some((slot, w, axis)) = s.weight else {
            continue;
        };
        let (dq, wscales, err) = match wcache.get(&(w, axis)) {
            Some(x) => x.clone(),
            None => {
                let wr = g.weight(w).expect("checked in select");
                let t = g.read_weight(&wr)?.into_owned();
                let (q, scales) = quantize_weight(&t, axis)?;
                // the quantization error W_q - W, for bias correction
                let err = if opts.bias_correction {
                    let wv = t.to_f64_vec()?;
                    let dims: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
                    let (ch, inner) = match axis {
                        Some(a) => (dims[a], dims[a + 1..].iter().product::<usize>()),
                        None => (1, wv.len()),
                    };
                    wv.iter()
                        .zip(&q)
                        .enumerate()
                        .map(|(i, (x, qi))| {
                            f64::from(*qi) * f64::from(scales[(i / inner) % ch]) - x
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let err = std::rc::Rc::new((t.dims.clone(), err));
                built.bytes_before += t.byte_size();
                built.bytes_after += q.len() as u64 + 4 * scales.len() as u64;
                let base = wr.name.clone();
                let sdims = if axis.is_some() {
                    vec![scales.len() as i64]
                } else {
                    vec![]
                };
                let (out, _) = crate::passes::quantize::add_dequantize(
                    &mut p,
                    g,
                    &base,
                    Tensor::from_vec::<i8>("", t.dims.clone(), q)?,
                    Tensor::from_f32("", sdims.clone(), &scales),
                    Tensor::from_vec::<i8>("", sdims, vec![0; scales.len()])?,
                    axis.map(|a| a as i64),
                );
                built.weights += 1;
                wcache.insert((w, axis), (out, scales.clone(), err.clone()));
                (out, scales, err)
            }
        };
        p.set_input(s.node, slot, Some(dq));
        *rewired.entry(w).or_default() += 1;
        // bias: int32 with scale = input scale x weight scale
        let Some((bslot, b)) = s.bias else { continue };
        let x = s.acts[0];
        let xkey = set.get(&x).and_then(|src| Some(src.unwrap_or(x)));
        let Some(xp) = xkey.and_then(|k| params.get(&k)) else {
            continue;
        };
        let Some(bw) = g.weight(b) else {
            built.remarks.push((
                s.name.clone(),
                Outcome::Skipped,
                "bias is not a constant: kept float".into(),
            ));
            continue;
        };
        let bt = g.read_weight(&bw)?.into_owned();
        if bt.dtype() != DataType::FLOAT || bt.dims.len() != 1 {
            built.remarks.push((
                s.name.clone(),
                Outcome::Skipped,
                "bias is not a 1-D float32 constant: kept float".into(),
            ));
            continue;
        }
        let mut bv = bt.to_f64_vec()?;
        if opts.bias_correction {
            match means
                .get(&x)
                .and_then(|m| mean_shift(s.layout, &err.0, &err.1, m))
            {
                Some(shift) if shift.len() == bv.len() => {
                    let worst = shift.iter().fold(0f64, |a, b| a.max(b.abs()));
                    for (b, d) in bv.iter_mut().zip(&shift) {
                        *b -= d;
                    }
                    built.remarks.push((s.name.clone(), Outcome::Applied, format!("bias corrected for the weight quantization's mean shift (largest {worst:.3e})")));
                }
                _ => built.remarks.push((
                    s.name.clone(),
                    Outcome::Skipped,
                    "bias correction: layout or input statistics not available".into(),
                )),
            }
        }
        if wscales.len() != 1 && wscales.len() != bv.len() {
            built.remarks.push((
                s.name.clone(),
                Outcome::Skipped,
                "bias length differs from the weight's channels: kept float".into(),
            ));
            continue;
        }
        let bscales: Vec<f32> = (0..if wscales.len() == 1 { 1 } else { bv.len() })
            .map(|c| xp.scale * wscales[c])
            .collect();
        let mut q = Vec::with_capacity(bv.len());
        let mut fits = true;
        for (i, v) in bv.iter().enumerate() {
            let s = f64::from(bscales[if bscales.len() == 1 { 0 } else { i }]);
            let r = (v / s).round();
            if !(r.abs() <= f64::from(i32::MAX)) {
                fits = false;
                break;
            }
            q.push(r as i32);
        }
        if !fits {
            built.remarks.push((
                s.name.clone(),
                Outcome::Skipped,
                "bias does not fit int32 at input x weight scale: kept float".into(),
            ));
            continue;
        }
        let base = bw.name.clone();
        let sdims = if bscales.len() == 1 {
            vec![]
        } else {
            vec![bscales.len() as i64]
        };
        built.bytes_before += bt.byte_size();
        built.bytes_after += 4 * q.len() as u64 + 4 * bscales.len() as u64;
        let (out, _) = crate::passes::quantize::add_dequantize(
            &mut p,
            g,
            &base,
            Tensor::from_vec::<i32>("", bt.dims.clone(), q)?,
            Tensor::from_f32("", sdims.clone(), &bscales),
            Tensor::from_vec::<i32>("", sdims, vec![0; bscales.len()])?,
            (bscales.len() > 1).then_some(0),
        );
        p.set_input(s.node, bslot, Some(out));
        *rewired.entry(b).or_default() += 1;
        built.biases += 1;
    }
    // constant operands of Add / Mul: asymmetric per-tensor in the activation type
    let mut ccache: BTreeMap<ValueId, ValRef> = BTreeMap::new();
    for s in sites {
        for &(slot, c) in &s.consts {
            let dq = match ccache.get(&c) {
                Some(x) => *x,
                None => {
                    let wr = g.weight(c).expect("checked in select");
                    let t = g.read_weight(&wr)?.into_owned();
                    let v = t.to_f64_vec()?;
                    let (scale, zp) = table_params(&v, signed);
                    let (qmin, qmax) = if signed {
                        (-128.0, 127.0)
                    } else {
                        (0.0, 255.0)
                    };
                    let q: Vec<f64> = v
                        .iter()
                        .map(|x| ((x / f64::from(scale)).round() + f64::from(zp)).clamp(qmin, qmax))
                        .collect();
                    let qdt = if signed {
                        DataType::INT8
                    } else {
                        DataType::UINT8
                    };
                    built.bytes_before += t.byte_size();
                    built.bytes_after += q.len() as u64 + 5;
                    let base = wr.name.clone();
                    let (out, _) = crate::passes::quantize::add_dequantize(
                        &mut p,
                        g,
                        &base,
                        Tensor::from_f64_as("", qdt, t.dims.clone(), &q)?,
                        Tensor::from_f32("", vec![], &[scale]),
                        act_dtype(zp)?,
                        None,
                    );
                    ccache.insert(c, out);
                    out
                }
            };
            p.set_input(s.node, slot, Some(dq));
            *rewired.entry(c).or_default() += 1;
        }
    }
    // float weights nothing reads any more leave the file
    for (v, n) in rewired {
        if g.is_output(v) || g.uses(v).len() != n {
            continue;
        }
        if let Some(wr) = g.weight(v) {
            p.remove_weight(&wr);
        }
    }
    let log = g.apply(p)?;
    Ok((log, built))
}

/// The mean output shift E[(W_q - W) x] per output channel, from the per-channel means of the input x.
fn mean_shift(layout: Layout, dims: &[i64], err: &[f64], mean: &[f64]) -> Option<Vec<f64>> {
    let d: Vec<usize> = dims.iter().map(|x| *x as usize).collect();
    match layout {
        Layout::Conv if d.len() >= 2 => {
            let (m, cg) = (d[0], d[1]);
            let k: usize = d[2..].iter().product();
            if cg == 0 || mean.len() % cg != 0 {
                return None;
            }
            let groups = mean.len() / cg;
            if groups == 0 || m % groups != 0 {
                return None;
            }
            let per = m / groups;
            Some(
                (0..m)
                    .map(|o| {
                        let gi = o / per;
                        (0..cg)
                            .map(|c| {
                                let e: f64 =
                                    err[(o * cg + c) * k..(o * cg + c + 1) * k].iter().sum();
                                e * mean[gi * cg + c]
                            })
                            .sum()
                    })
                    .collect(),
            )
        }
        Layout::RowsOut if d.len() == 2 && mean.len() == d[1] => Some(
            (0..d[0])
                .map(|n| (0..d[1]).map(|k| err[n * d[1] + k] * mean[k]).sum())
                .collect(),
        ),
        Layout::ColsOut if d.len() == 2 && mean.len() == d[0] => Some(
            (0..d[1])
                .map(|n| (0..d[0]).map(|k| err[k * d[1] + n] * mean[k]).sum())
                .collect(),
        ),
        _ => None,
    }
}

/// Statistics per tensor plus, for some, the mean of each channel (axis 1, or the last axis).
struct Collector {
    stats: StatsCollector,
    /// tensor -> (channel on the last axis?, sums, counts)
    channel: BTreeMap<String, (bool, Vec<f64>, Vec<u64>)>,
}

impl Observer for Collector {
    fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<()> {
        self.stats.observe(tensor, values)
    }

    fn observe_shaped(&mut self, tensor: &str, dims: &[usize], values: &[f32]) -> Result<()> {
        self.stats.observe(tensor, values)?;
        if let Some((last, sums, counts)) = self.channel.get_mut(tensor) {
            let axis = if *last {
                dims.len().saturating_sub(1)
            } else {
                1
            };
            if dims.len() > axis && dims.iter().product::<usize>() == values.len() {
                let ch = dims[axis];
                let inner: usize = dims[axis + 1..].iter().product();
                if sums.is_empty() {
                    *sums = vec![0.0; ch];
                    *counts = vec![0; ch];
                }
                if sums.len() == ch && inner > 0 {
                    // blocks of `inner` values share a channel; each channel's sum takes its values in the
                    // order they come
                    for (b, block) in values.chunks(inner).enumerate() {
                        let c = b % ch;
                        let (s, k) = (&mut sums[c], &mut counts[c]);
                        for v in block {
                            if v.is_finite() {
                                *s += f64::from(*v);
                                *k += 1;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn parse_method(opts: &StaticQdqOptions) -> Result<RangeMethod> {
    match opts.method.as_str() {
        "minmax" => Ok(RangeMethod::MinMax),
        "percentile" => {
            if !(opts.percentile > 0.0 && opts.percentile <= 100.0) {
                return Err(Error::Usage(format!(
                    "pass '{PASS}': percentile={} is outside (0, 100]",
                    opts.percentile
                )));
            }
            Ok(RangeMethod::Percentile(opts.percentile))
        }
        "entropy" => Ok(RangeMethod::Entropy),
        m => Err(Error::Usage(format!(
            "pass '{PASS}': method={m} is not one of minmax, percentile, entropy"
        ))),
    }
}

impl StaticQdqOptions {
    /// Usage errors (bad method, percentile, activation type or budget) before anything runs.
    pub fn check(&self) -> Result<()> {
        parse_method(self)?;
        parse_signed(self)?;
        if !(0.0..=1.0).contains(&self.drift_budget) {
            return Err(Error::Usage(format!(
                "pass '{PASS}': drift_budget={} is outside [0, 1]",
                self.drift_budget
            )));
        }
        Ok(())
    }
}

fn parse_signed(opts: &StaticQdqOptions) -> Result<bool> {
    match opts.activation_type.as_str() {
        "int8" => Ok(true),
        "uint8" => Ok(false),
        t => Err(Error::Usage(format!(
            "pass '{PASS}': activation_type={t} is not int8 or uint8"
        ))),
    }
}

/// Static QDQ quantization of `model` with the calibrator (and, for `drift_budget`, the drift measure) of `cx`.
pub fn quantize_static(
    model: &mut Model,
    cx: &mut PassContext,
    opts: &StaticQdqOptions,
) -> Result<PassReport> {
    let mut report = PassReport::new(PASS);
    opts.check()?;
    let method = parse_method(opts)?;
    let signed = parse_signed(opts)?;
    // opsets: per-axis DequantizeLinear needs 13, QuantizeLinear needs 10
    let opset = model.opset("").unwrap_or(1);
    let mut per_channel = opts.per_channel;
    if opset < 13 && (per_channel || opset < 10) {
        let up = crate::passes::convert::UpgradeOpset::new(
            crate::passes::convert::UpgradeOpsetOptions { to: 13 },
        )?;
        let mut trial = model.clone();
        match crate::passes::Pass::run(&up, &mut trial, cx) {
            Ok(r) => {
                *model = trial;
                report.changes.extend(r.changes);
                report.remark(
                    "<model>",
                    Outcome::Applied,
                    format!("ai.onnx opset raised from {opset} to 13 for per-axis Q/DQ"),
                );
            }
            Err(e) if opset >= 10 => {
                per_channel = false;
                report.remark(
                    "<model>",
                    Outcome::Skipped,
                    format!("opset {opset} cannot be raised to 13 ({e}): per-tensor weight scales"),
                );
            }
            Err(e) => return Err(e),
        }
    }
    if opts.equalize {
        cle::equalize(&mut model.graph, &mut report)?;
    }
    for (_, n) in model.graph.nodes() {
        if n.has_subgraphs() {
            report.remark(
                if n.name().is_empty() { format!("<{}>", n.op.op_type) } else { n.name().to_string() },
                Outcome::Skipped,
                "body activations stay float (the calibrator runs the main graph); the weights its bodies read \
                 become int8 weight-only (asymmetric per channel)",
            );
        }
    }
    let sites = select(&model.graph, opts, per_channel, &mut report)?;
    let all: Vec<&Site> = sites.iter().collect();
    let set = tensor_set(&model.graph, &all, opts);
    let mut wanted: Vec<String> = set
        .iter()
        .filter(|(_, src)| src.is_none())
        .map(|(v, _)| model.graph.value_name(*v).to_string())
        .collect();
    // bias correction: per-channel means of the inputs of layers with a bias
    let mut channel = BTreeMap::new();
    if opts.bias_correction {
        for s in sites
            .iter()
            .filter(|s| s.bias.is_some() && s.layout != Layout::Other)
        {
            let name = model.graph.value_name(s.acts[0]).to_string();
            if !wanted.contains(&name) {
                wanted.push(name.clone());
            }
            channel.insert(name, (s.layout != Layout::Conv, Vec::new(), Vec::new()));
        }
    }
    cx.progress.start("calibrating", None);
    let bins = if method == RangeMethod::MinMax {
        0
    } else {
        opts.histogram_bins.max(256)
    };
    let mut collector = Collector {
        stats: StatsCollector::new(StatsOptions {
            histogram_bins: bins,
        }),
        channel,
    };
    if !wanted.is_empty() {
        let n = cx
            .calibrator(PASS)?
            .calibrate(model, &wanted, &mut collector)?;
        if n == 0 {
            return Err(Error::Validate("calibration ran on no samples".into()));
        }
        for t in &wanted {
            if !collector.stats.stats.contains_key(t) {
                return Err(Error::Validate(format!(
                    "calibration produced no values for tensor '{t}'"
                )));
            }
        }
    }
    cx.progress.finish();
    let stats: BTreeMap<String, TensorStats> = collector.stats.stats;
    let mut means: BTreeMap<ValueId, Vec<f64>> = BTreeMap::new();
    for (name, (_, sums, counts)) in collector.channel {
        if let Some(v) = model.graph.value_by_name(&name) {
            if !sums.is_empty() && counts.iter().all(|c| *c > 0) {
                means.insert(
                    v,
                    sums.iter()
                        .zip(&counts)
                        .map(|(s, c)| s / *c as f64)
                        .collect(),
                );
            }
        }
    }
    let mut params = BTreeMap::new();
    for (v, src) in &set {
        if src.is_some() {
            continue;
        }
        let name = model.graph.value_name(*v);
        let Some(st) = stats.get(name) else { continue };
        if st.minmax.nan_count > 0 {
            report.remark(
                name.to_string(),
                Outcome::Skipped,
                "NaN seen in calibration: tensor kept float",
            );
            continue;
        }
        if method != RangeMethod::MinMax && ranges::too_few_for_histogram(st) {
            report.remark(
                name.to_string(),
                Outcome::Applied,
                format!(
                    "{} values seen, fewer than the histogram's bins: min/max range",
                    st.minmax.count
                ),
            );
        }
        let Some((lo, hi)) = clip_range(st, method) else {
            continue;
        };
        if !(lo.is_finite() && hi.is_finite()) {
            report.remark(
                name.to_string(),
                Outcome::Skipped,
                "infinite value seen in calibration: tensor kept float",
            );
            continue;
        }
        let (scale, zero_point) = activation_params(lo, hi, signed);
        params.insert(*v, ActParams { scale, zero_point });
    }
    // gathered embedding rows take their table's parameters: requantising a dequantised row with them is exact
    for s in &sites {
        let gather = model.graph.node(s.node).is_some_and(|n| n.op.is("Gather"));
        if let (true, Some(&(_, t)), Some(&y)) = (gather, s.consts.first(), s.outs.first()) {
            let wr = model.graph.weight(t).expect("checked in select");
            let v = model.graph.read_weight(&wr)?.to_f64_vec()?;
            let (scale, zero_point) = table_params(&v, signed);
            params.insert(y, ActParams { scale, zero_point });
        }
    }
    // an Add whose operands' ranges differ by more than 2^8 would lose the smaller one below one 8-bit step of
    // the sum (an attention mask of -1e4 added to scores of order 1): it stays float
    let absmax = |v: ValueId| -> Option<f32> {
        let k = set.get(&v)?.unwrap_or(v);
        stats
            .get(model.graph.value_name(k))
            .map(|s| s.minmax.abs_max())
    };
    let mut unbalanced: BTreeSet<NodeId> = BTreeSet::new();
    for s in &sites {
        let is_add = model.graph.node(s.node).is_some_and(|n| n.op.is("Add"));
        if !is_add || s.acts.len() != 2 {
            continue;
        }
        if let (Some(a), Some(b)) = (absmax(s.acts[0]), absmax(s.acts[1])) {
            let (lo, hi) = (a.min(b), a.max(b));
            if hi > 256.0 * lo.max(f32::MIN_POSITIVE) {
                unbalanced.insert(s.node);
                report.remark(
                    s.name.clone(),
                    Outcome::Skipped,
                    format!("operand ranges {lo:.3e} and {hi:.3e} differ by more than 256x: the smaller would fall below one 8-bit step of the sum; kept float"),
                );
            }
        }
    }
    let sites: Vec<Site> = sites
        .into_iter()
        .filter(|s| !unbalanced.contains(&s.node))
        .collect();
    // sensitivity search: which sites stay float
    let mut kept_float: BTreeSet<NodeId> = BTreeSet::new();
    if opts.drift_budget > 0.0 {
        kept_float = sensitivity(
            model,
            cx,
            &sites,
            &params,
            &means,
            opts,
            signed,
            &mut report,
        )?;
    }
    let chosen: Vec<&Site> = sites
        .iter()
        .filter(|s| !kept_float.contains(&s.node))
        .collect();
    let (log, built) = build(&mut model.graph, &chosen, &params, &means, opts, signed)?;
    report.record(log);
    for s in &chosen {
        let mut why = format!(
            "quantised: {} activation(s) in, {} out{}",
            s.acts.len(),
            s.outs.len(),
            match s.weight {
                Some((_, _, Some(a))) => format!(", int8 weight per channel (axis {a})"),
                Some((_, _, None)) => ", int8 weight per tensor".into(),
                None => String::new(),
            }
        );
        for n in &s.notes {
            why += &format!("; {n}");
        }
        report.remark(s.name.clone(), Outcome::Applied, why);
    }
    for (at, o, why) in built.remarks {
        report.remark(at, o, why);
    }
    report.stat("nodes_quantized", chosen.len() as u64);
    report.stat("nodes_kept_float", kept_float.len() as u64);
    report.stat("activations_quantized", built.tensors);
    report.stat("weights_quantized", built.weights);
    report.stat("biases_quantized", built.biases);
    report.stat("weight_bytes_before", built.bytes_before);
    report.stat("weight_bytes_after", built.bytes_after);
    report.stat("calibration_tensors", wanted.len() as u64);
    quantize_body_weights(model, cx, opts, per_channel, &mut report)?;
    Ok(report)
}

/// Weights read inside `If` / `Loop` / `Scan` bodies: their activations are not calibrated, but no weight stays
/// float because of where it is read: they become int8 read through a DequantizeLinear, by the weight-only
/// pass restricted to bodies, in its own (more accurate) asymmetric per-channel form: with float activations
/// around them no integer kernel needs the symmetric one. Its stats are reported as `body_*`.
fn quantize_body_weights(
    model: &mut Model,
    cx: &mut PassContext,
    opts: &StaticQdqOptions,
    per_channel: bool,
    report: &mut PassReport,
) -> Result<()> {
    if !model.graph.nodes().any(|(_, n)| n.has_subgraphs()) {
        return Ok(());
    }
    let cfg = crate::passes::quantize::weight::WeightConfig {
        qtype: crate::passes::quantize::params::QType::Int8,
        symmetric: false,
        per_channel,
        reduce_range: false,
        min_elements: crate::passes::quantize::weight::DEFAULT_MIN_ELEMENTS,
        ops: opts
            .ops
            .iter()
            .filter(|o| crate::passes::quantize::weight::KNOWN_OPS.contains(&o.as_str()))
            .cloned()
            .collect(),
        include: opts.include.clone(),
        exclude: opts.exclude.clone(),
        bodies_only: true,
        spill: None,
    };
    let mut body = PassReport::new(PASS);
    crate::passes::quantize::weight::run(model, &cfg, cx, &mut body)?;
    report.changed |= body.changed;
    report.changes.extend(body.changes);
    for (k, n) in body.stats {
        report.stat(&format!("body_{k}"), n);
    }
    report.remarks.extend(body.remarks);
    Ok(())
}

/// Rank the sites by the output cosine of quantising each alone, then keep the most sensitive float until the
/// whole model meets the budget.
fn sensitivity(
    model: &Model,
    cx: &mut PassContext,
    sites: &[Site],
    params: &BTreeMap<ValueId, ActParams>,
    means: &BTreeMap<ValueId, Vec<f64>>,
    opts: &StaticQdqOptions,
    signed: bool,
    report: &mut PassReport,
) -> Result<BTreeSet<NodeId>> {
    let variant = |keep: &[&Site]| -> Result<Model> {
        let mut m = model.clone();
        build(&mut m.graph, keep, params, means, opts, signed)?;
        Ok(m)
    };
    let all: Vec<&Site> = sites.iter().collect();
    let full = cx.measure_drift(PASS, &variant(&all)?)?.min_cosine();
    report.remark(
        "<model>",
        Outcome::Applied,
        format!(
            "sensitivity: all {} nodes quantised give output cosine {full:.6} (budget {})",
            sites.len(),
            opts.drift_budget
        ),
    );
    if full >= opts.drift_budget {
        return Ok(BTreeSet::new());
    }
    cx.progress.start("sensitivity", Some(sites.len() as u64));
    let mut alone = Vec::new();
    for s in sites {
        let c = cx.measure_drift(PASS, &variant(&[s])?)?.min_cosine();
        alone.push((c, s.node, s.name.clone()));
        cx.progress.advance(1);
    }
    cx.progress.finish();
    // most sensitive (lowest cosine alone) first; ties by node id for determinism
    alone.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut kept = BTreeSet::new();
    for (c, id, name) in &alone {
        kept.insert(*id);
        let rest: Vec<&Site> = sites.iter().filter(|s| !kept.contains(&s.node)).collect();
        let now = cx.measure_drift(PASS, &variant(&rest)?)?.min_cosine();
        report.remark(name.clone(), Outcome::Skipped, format!("kept float by sensitivity: quantised alone it gives output cosine {c:.6}; without it the model reaches {now:.6}"));
        if now >= opts.drift_budget {
            break;
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches() {
        assert!(glob("conv*", "conv1"));
        assert!(glob("*/head/*", "model/head/fc"));
        assert!(glob("c?nv", "conv"));
        assert!(!glob("c?nv", "cnv"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("exact", "exact") && !glob("exact", "exact1"));
    }
}
