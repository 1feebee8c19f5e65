//! Selection, the first stage: which nodes of the main graph get Q/DQ, in which role each of their inputs is
//! read (float activation, int8 weight, int32 bias, constant operand stored in the activation type), which
//! outputs are quantised (after a Relu / Clip the producer absorbs), and why a candidate stays float.
//!
//! Reads the graph and the options only; changes nothing. `select` walks the candidates (ops named in `ops`)
//! in stable topological order and returns one `Selection` each: a `QdqSite`, or the reason it is skipped
//! (the caller turns those into remarks, in this order). `tensor_set` then says which tensors a set of chosen
//! sites quantises and where each takes its parameters from: its own calibrated range, or (the output of a
//! data-movement op) its input's, so the pair around a Reshape moves integers exactly.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ir::ops::{ConvView, GemmView};
use crate::ir::{AttrList, DataType, Graph, Node, NodeId, ValueId};
use crate::passes::quantize::weight::glob_match as glob;

use super::dataflow::{
    fed_by_compute, feeds_amplifier, is_constant, is_constant_cone, is_f32, output_tensor,
    passes_error_on, produced_by, reaches_norm, DATA_MOVEMENT, FLOAT_OUT,
};
use super::StaticQdqOptions;

/// How a weight's output and input channels are laid out, which is what bias correction needs to turn the
/// weight's quantization error into a shift of each output.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) enum WeightLayout {
    /// Conv: (M, C/group, k...), input channels on axis 1 of the input.
    Conv,
    /// W[n, k]: output n from input feature k (last axis of the input).
    RowsOut,
    /// W[k, n].
    ColsOut,
    #[default]
    Other,
}

/// A quantisable node and the roles of its inputs.
#[derive(Clone, Debug)]
pub(super) struct QdqSite {
    pub node: NodeId,
    /// The node's name (`<Op>` when it has none): where its remarks go.
    pub at: String,
    /// Float activations read by the node.
    pub acts: Vec<ValueId>,
    /// (input slot, weight value, per-channel axis)
    pub weight: Option<(usize, ValueId, Option<usize>)>,
    /// (input slot, bias value): quantised as int32 when the weight is.
    pub bias: Option<(usize, ValueId)>,
    pub layout: WeightLayout,
    /// Constant float inputs of an element-wise op (Add / Mul) or a Gather's table, stored in the activation
    /// type (per tensor): (input slot, value).
    pub consts: Vec<(usize, ValueId)>,
    /// Outputs quantised (after Relu / Clip absorption).
    pub outs: Vec<ValueId>,
    /// Said in the remark.
    pub notes: Vec<String>,
}

/// What selection made of one candidate node.
#[derive(Clone, Debug)]
pub(super) enum Selection {
    Site(QdqSite),
    Skipped {
        node: NodeId,
        at: String,
        reason: String,
    },
}

impl Selection {
    pub fn site(&self) -> Option<&QdqSite> {
        match self {
            Selection::Site(s) => Some(s),
            Selection::Skipped { .. } => None,
        }
    }
}

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

fn matches_any(pats: &[String], name: &str, op: &str) -> bool {
    pats.iter().any(|p| p == op || glob(p, name))
}

/// A node's name for remarks and plans: its name, or `<Op>` when it has none.
pub(super) fn display_name(node: &Node) -> String {
    if node.name().is_empty() {
        format!("<{}>", node.op.op_type)
    } else {
        node.name().to_string()
    }
}

/// How many pass-through ops (Clip, Add, MatMul, Conv, Reshape...) `feeds_amplifier` looks through: an audio
/// front-end's STFT Conv -> square -> sum -> Transpose -> mel MatMul -> Clip -> Log is six.
const AMPLIFIER_DEPTH: usize = 8;

/// A node whose output carries its inputs' errors on to an op singular at 0 (or is read by Exp) stays float,
/// inputs and all: its 8-bit inputs would zero the small values that op needs (see `dataflow::amplifies`).
fn before_amplifier(g: &Graph, node: &Node) -> Option<String> {
    if !passes_error_on(&node.op.op_type) {
        return None;
    }
    let why = node
        .outputs
        .iter()
        .flatten()
        .find_map(|y| feeds_amplifier(g, *y, AMPLIFIER_DEPTH))?;
    Some(format!(
        "its output reaches {why}, which 8-bit values would break (small values rounded to 0): left float"
    ))
}

const NOT_UNDERSTOOD: &str = "inputs not understood";

/// The roles the op-specific rules give a node's inputs.
enum Roles {
    /// (activations, weight, bias)
    Read(
        Vec<ValueId>,
        Option<(usize, ValueId, Option<usize>)>,
        Option<(usize, ValueId)>,
    ),
    /// Left float, with the reason said in the report.
    Float(String),
    /// Not a candidate after all, silently (an operand missing, a constant operand that is not float32).
    Ignore,
}

/// What the rules note about a site besides its roles.
#[derive(Default)]
struct Draft {
    notes: Vec<String>,
    consts: Vec<(usize, ValueId)>,
    layout: WeightLayout,
}

/// Find the quantisable nodes of the main graph, and why each other candidate is left float.
pub(super) fn select(
    g: &Graph,
    opts: &StaticQdqOptions,
    per_channel: bool,
) -> Result<Vec<Selection>> {
    let order = crate::ir::order::stable_topo(g, g.node_ids(), &|n| n.index() as u64).0;
    let mut out = Vec::new();
    for id in order {
        let node = g.node(id).expect("live");
        if !node.op.is_default_domain() {
            continue;
        }
        let op = node.op.op_type.as_str();
        if !opts.ops.iter().any(|o| o == op) {
            continue;
        }
        let at = display_name(node);
        let skipped = |reason: String| Selection::Skipped {
            node: id,
            at: at.clone(),
            reason,
        };
        if let Some(reason) = filtered(g, node, opts) {
            out.push(skipped(reason));
            continue;
        }
        if let Some(reason) = before_amplifier(g, node) {
            out.push(skipped(reason));
            continue;
        }
        let mut draft = Draft::default();
        let (acts, weight, bias) = match roles(g, node, per_channel, &mut draft)? {
            Roles::Read(acts, weight, bias) => (acts, weight, bias),
            Roles::Float(reason) => {
                out.push(skipped(reason));
                continue;
            }
            Roles::Ignore => continue,
        };
        if let Some(reason) = unfit(g, &acts, weight) {
            out.push(skipped(reason));
            continue;
        }
        let outs = outputs(g, node, &mut draft.notes);
        out.push(Selection::Site(QdqSite {
            node: id,
            at,
            acts,
            weight,
            bias,
            layout: draft.layout,
            consts: draft.consts,
            outs,
            notes: draft.notes,
        }));
    }
    Ok(out)
}

/// The include / exclude filters, and inputs that are a weight already stored quantised.
fn filtered(g: &Graph, node: &Node, opts: &StaticQdqOptions) -> Option<String> {
    let (name, op) = (node.name(), node.op.op_type.as_str());
    if !opts.include.is_empty() && !matches_any(&opts.include, name, op) {
        return Some("not included by the filter".into());
    }
    if matches_any(&opts.exclude, name, op) {
        return Some("excluded by the filter".into());
    }
    let v = node
        .inputs
        .iter()
        .flatten()
        .find(|v| !is_constant(g, **v) && is_constant_cone(g, **v, 0))?;
    Some(format!(
        "input '{}' is computed from constants only (a weight already stored quantised?): left as it is",
        g.value_name(*v)
    ))
}

/// The roles of a candidate's inputs, by op.
fn roles(g: &Graph, node: &Node, per_channel: bool, d: &mut Draft) -> Result<Roles> {
    Ok(match node.op.op_type.as_str() {
        "Conv" | "ConvTranspose" => conv_roles(node, per_channel, d)?,
        "Gemm" => gemm_roles(g, node, per_channel, d)?,
        "MatMul" => matmul_roles(g, node, per_channel, d),
        "Add" | "Mul" => add_mul_roles(g, node, d),
        "GlobalAveragePool" | "AveragePool" => match node.input(0) {
            Some(x) => Roles::Read(vec![x], None, None),
            None => Roles::Float(NOT_UNDERSTOOD.into()),
        },
        "Gather" => gather_roles(g, node, d)?,
        _ => Roles::Float(NOT_UNDERSTOOD.into()),
    })
}

/// Conv: weight per output channel (axis 0); ConvTranspose: axis 1 when not grouped, else per tensor.
fn conv_roles(node: &Node, per_channel: bool, d: &mut Draft) -> Result<Roles> {
    let conv = node.op.is("Conv");
    let (x, w, b, group) = if conv {
        let v = ConvView::of(node)?.expect("a Conv");
        (v.x, v.w, v.b, v.group)
    } else {
        match (node.input(0), node.input(1)) {
            (Some(x), Some(w)) => (x, w, node.input(2), node.get_int("group")?.unwrap_or(1)),
            _ => return Ok(Roles::Ignore),
        }
    };
    if conv {
        d.layout = WeightLayout::Conv;
    }
    let axis = if !per_channel {
        None
    } else if conv {
        Some(0)
    } else if group == 1 {
        Some(1)
    } else {
        d.notes
            .push("grouped ConvTranspose: per-tensor weight scale".into());
        None
    };
    Ok(Roles::Read(vec![x], Some((1, w, axis)), b.map(|b| (2, b))))
}

/// Gemm: a constant B is the weight (axis 0 with transB, else 1) and C the bias when alpha = beta = 1; a
/// computed B is a second activation.
fn gemm_roles(g: &Graph, node: &Node, per_channel: bool, d: &mut Draft) -> Result<Roles> {
    let v = GemmView::of(node)?.expect("a Gemm");
    if !v.trans_a {
        d.layout = if v.trans_b {
            WeightLayout::RowsOut
        } else {
            WeightLayout::ColsOut
        };
    }
    let axis = per_channel.then_some(if v.trans_b { 0 } else { 1 });
    let bias = v.c.filter(|_| v.alpha == 1.0 && v.beta == 1.0);
    if v.c.is_some() && bias.is_none() {
        d.notes
            .push("alpha or beta is not 1: bias kept float".into());
    }
    Ok(if is_constant(g, v.b) {
        Roles::Read(vec![v.a], Some((1, v.b, axis)), bias.map(|b| (2, b)))
    } else {
        Roles::Read(vec![v.a, v.b], None, None)
    })
}

/// MatMul: a constant B is the weight (per channel on axis 1 when it is 2-D); two computed operands are both
/// activations.
fn matmul_roles(g: &Graph, node: &Node, per_channel: bool, d: &mut Draft) -> Roles {
    match (node.input(0), node.input(1)) {
        (Some(a), Some(b)) if is_constant(g, b) => {
            let rank = g.constant(b).map(|t| t.dims.len()).unwrap_or(0);
            let axis = (per_channel && rank == 2).then_some(1);
            if per_channel && rank != 2 {
                d.notes
                    .push(format!("rank-{rank} weight: per-tensor scale"));
            }
            Roles::Read(vec![a], Some((1, b, axis)), None)
        }
        (Some(a), Some(b)) if !is_constant(g, a) => Roles::Read(vec![a, b], None, None),
        _ => Roles::Float(NOT_UNDERSTOOD.into()),
    }
}

/// Add / Mul: only on a quantised path, and not an Add feeding a layer normalization; a constant operand is
/// stored in the activation type behind its own DequantizeLinear, as ONNX Runtime's QLinearAdd / QLinearMul
/// take it.
fn add_mul_roles(g: &Graph, node: &Node, d: &mut Draft) -> Roles {
    if !node
        .inputs
        .iter()
        .flatten()
        .any(|v| fed_by_compute(g, *v, 0))
    {
        return Roles::Float(
            "no operand comes from a Conv / Gemm / MatMul / Add path: left float".into(),
        );
    }
    // an Add that reaches a layer normalization (directly or through one more Add) stays float
    if node.op.is("Add") {
        if let Some(norm) = node.output(0).and_then(|y| reaches_norm(g, y, 1)) {
            return Roles::Float(format!(
                "feeds layer normalization '{norm}' (through at most one more Add): a residual stream carries outlier channels a per-tensor 8-bit range crushes; left float"
            ));
        }
    }
    match (node.input(0), node.input(1)) {
        (Some(a), Some(b)) if !is_constant(g, a) && !is_constant(g, b) => {
            Roles::Read(vec![a, b], None, None)
        }
        (Some(a), Some(b)) if is_constant(g, a) != is_constant(g, b) => {
            let (k, c, x) = if is_constant(g, a) {
                (0, a, b)
            } else {
                (1, b, a)
            };
            if g.constant(c).is_some_and(|t| t.dtype() == DataType::FLOAT) && g.weight(c).is_some()
            {
                d.consts.push((k, c));
                Roles::Read(vec![x], None, None)
            } else {
                Roles::Ignore
            }
        }
        _ => Roles::Ignore,
    }
}

/// An embedding table (Gather on axis 0 of a float32 constant): 8-bit in the activation type with one scale (a
/// scale per row would cost 4 bytes per vocabulary entry); the gathered rows are quantised with the table's own
/// parameters, so ONNX Runtime drops the DequantizeLinear -> Gather -> QuantizeLinear around it and gathers
/// 8-bit rows instead of dequantising the whole table on every run.
fn gather_roles(g: &Graph, node: &Node, d: &mut Draft) -> Result<Roles> {
    Ok(match node.input(0) {
        Some(t)
            if is_constant(g, t)
                && node.get_int("axis")?.unwrap_or(0) == 0
                && g.constant(t).is_some_and(|c| c.dtype() == DataType::FLOAT)
                && g.weight(t).is_some() =>
        {
            d.consts.push((0, t));
            Roles::Read(vec![], None, None)
        }
        _ => Roles::Float(NOT_UNDERSTOOD.into()),
    })
}

/// Why a site's activations or weight cannot be quantised, if they cannot.
fn unfit(
    g: &Graph,
    acts: &[ValueId],
    weight: Option<(usize, ValueId, Option<usize>)>,
) -> Option<String> {
    if acts.iter().any(|a| produced_by(g, *a, "DequantizeLinear")) {
        return Some("already quantised (input from DequantizeLinear)".into());
    }
    if let Some(a) = acts.iter().find(|a| !is_f32(g, **a) || is_constant(g, **a)) {
        return Some(format!(
            "input '{}' is not a float32 activation",
            g.value_name(*a)
        ));
    }
    let (_, w, _) = weight?;
    let ok = g
        .weight(w)
        .and_then(|wr| {
            g.read_weight(&wr)
                .ok()
                .map(|t| t.dtype() == DataType::FLOAT)
        })
        .unwrap_or(false);
    (!ok).then(|| {
        format!(
            "weight '{}' is not a float32 constant of this graph",
            g.value_name(w)
        )
    })
}

/// The float outputs a site quantises: after an absorbed Relu / Clip, and not one that reaches a layer
/// normalization through a residual Add (gathered rows excepted: they are requantised exactly with their
/// table's parameters, so there is no error to avoid).
fn outputs(g: &Graph, node: &Node, notes: &mut Vec<String>) -> Vec<ValueId> {
    let op = node.op.op_type.as_str();
    let mut outs = Vec::new();
    for y in node.outputs.iter().flatten() {
        if is_f32(g, *y) || FLOAT_OUT.contains(&op) {
            let z = output_tensor(g, *y, notes);
            // every reader of a quantised op's output reads the pair (build.rs), so a reader that amplifies
            // the 8-bit error would get it too
            if let Some(why) = feeds_amplifier(g, z, AMPLIFIER_DEPTH) {
                notes.push(format!(
                    "output '{}' left float: it feeds {why}, which 8 bits would break",
                    g.value_name(z)
                ));
                continue;
            }
            if let Some(norm) = reaches_norm(g, z, 2).filter(|_| op != "Gather") {
                notes.push(format!(
                    "output left float: it reaches layer normalization '{norm}' through a residual Add"
                ));
                continue;
            }
            outs.push(z);
        }
    }
    outs
}

/// Every tensor the chosen `sites` quantise: `None` = its own calibrated range, `Some(src)` = `src`'s
/// parameters (the output of a data-movement op not excluded by `exclude`, whose input is quantised).
pub(super) fn tensor_set(
    g: &Graph,
    sites: &[&QdqSite],
    exclude: &[String],
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
        if matches_any(exclude, node.name(), &node.op.op_type) {
            continue;
        }
        let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
            continue;
        };
        if let Some(src) = set.get(&x).copied() {
            // every reader of a data-movement output reads its pair: one that amplifies the 8-bit error
            // leaves it float (the site's own outputs were checked in `outputs`)
            if node.outputs.iter().flatten().count() == 1
                && feeds_amplifier(g, y, AMPLIFIER_DEPTH).is_none()
            {
                set.insert(y, Some(src.unwrap_or(x)));
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::super::testing::chain;
    use super::*;

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

    /// The Relu after the Conv is absorbed (the pair goes on its output), and the Reshape's output takes the
    /// Relu output's parameters instead of a range of its own: both are what make the integer path exact.
    #[test]
    fn relu_is_absorbed_and_data_movement_follows_its_input() {
        let m = chain();
        let g = &m.graph;
        let sel = select(g, &StaticQdqOptions::default(), true).unwrap();
        let sites: Vec<&QdqSite> = sel.iter().filter_map(Selection::site).collect();
        assert_eq!(sites.len(), 2, "{sel:?}");
        let conv = sites[0];
        assert_eq!(conv.layout, WeightLayout::Conv);
        assert_eq!(conv.weight.map(|w| w.2), Some(Some(0)));
        let relu_out = conv.outs[0];
        assert!(g.producer(relu_out).unwrap().1.op.is("Relu"));
        assert!(
            conv.notes.iter().any(|n| n.contains("absorbed")),
            "{conv:?}"
        );
        let set = tensor_set(g, &sites, &[]);
        let reshaped = sites[1].acts[0];
        assert_eq!(set[&reshaped], Some(relu_out));
        assert_eq!(set[&relu_out], None);
        // excluding the Reshape by op type cuts the chain: its output gets a range of its own
        let set = tensor_set(g, &sites, &["Reshape".to_string()]);
        assert_eq!(set[&reshaped], None);
    }

    /// A tf2onnx-style export without value_info: Conv -> Max(x, 0) -> MaxPool -> Conv -> Max -> MaxPool ->
    /// Conv, nothing typed but the graph input and output. Every Conv input is a float32 activation by ONNX's
    /// type rules (Max and MaxPool keep their input's type), so every Conv is a site.
    #[test]
    fn types_follow_the_ops_without_value_info() {
        use crate::ir::builder::{model, GraphBuilder};
        use crate::ir::{Attribute, Tensor};
        let mut b = GraphBuilder::new("g");
        let mut x = b.input("x", DataType::FLOAT, &["1", "2", "8", "8"]);
        let zero = b.initializer(Tensor::from_f32("zero", vec![], &[0.0]));
        for k in 0..3 {
            let w = b.initializer(Tensor::from_f32(
                format!("w{k}"),
                vec![2, 2, 1, 1],
                &[0.5, -0.25, 0.75, 1.0],
            ));
            x = b.node("Conv", &[x, w], vec![], 1)[0];
            if k < 2 {
                let m = b.node("Max", &[x, zero], vec![], 1)[0];
                x = b.node(
                    "MaxPool",
                    &[m],
                    vec![
                        Attribute::ints("kernel_shape", vec![2, 2]),
                        Attribute::ints("strides", vec![2, 2]),
                    ],
                    1,
                )[0];
            }
        }
        b.output(x, DataType::FLOAT, &["1", "2", "2", "2"]);
        let m = model(b.build(), 13);
        assert!(m.graph.value_info().is_empty());
        let sel = select(&m.graph, &StaticQdqOptions::default(), true).unwrap();
        let sites = sel.iter().filter_map(Selection::site).count();
        assert_eq!(sites, 3, "{sel:?}");
    }

    /// The audio front-end pattern: Conv -> Mul (square) -> MatMul (mel) -> Clip(min=1e-10) -> Log. Quantised,
    /// the Clip output (or any tensor before it: the error passes through) would carry 8-bit zeros into Log.
    /// Conv, Mul and MatMul stay float with the reason; a Conv after the Log is quantised.
    #[test]
    fn a_log_input_stays_float() {
        use crate::ir::builder::{model, GraphBuilder};
        use crate::ir::Tensor;
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["1", "1", "4", "4"]);
        let wc = b.initializer(Tensor::from_f32("wc", vec![1, 1, 1, 1], &[0.5]));
        let c = b.node("Conv", &[x, wc], vec![], 1)[0];
        let sq = b.node("Mul", &[c, c], vec![], 1)[0];
        let w = b.initializer(Tensor::from_f32("w", vec![4, 2], &[0.5; 8]));
        let y = b.node("MatMul", &[sq, w], vec![], 1)[0];
        let lo = b.initializer(Tensor::from_f32("lo", vec![], &[1e-10]));
        let c = b.node("Clip", &[y, lo], vec![], 1)[0];
        let l = b.node("Log", &[c], vec![], 1)[0];
        let wa = b.initializer(Tensor::from_f32("wa", vec![1, 1, 1, 1], &[0.5]));
        let after = b.named_node(
            "after",
            crate::ir::OpKey::onnx("Conv"),
            &[Some(l), Some(wa)],
            &["out"],
            vec![],
        )[0];
        b.output(after, DataType::FLOAT, &["1", "1", "4", "2"]);
        let m = model(b.build(), 13);
        let sel = select(&m.graph, &StaticQdqOptions::default(), true).unwrap();
        let float: Vec<&str> = sel
            .iter()
            .filter_map(|s| match s {
                Selection::Skipped { at, reason, .. } if reason.contains("Log") => {
                    Some(at.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(float, ["conv_0", "mul_1", "matmul_2"], "{sel:?}");
        let sites: Vec<&QdqSite> = sel.iter().filter_map(Selection::site).collect();
        assert_eq!(sites.len(), 1, "{sel:?}");
        assert_eq!(sites[0].at, "after");
    }
}
