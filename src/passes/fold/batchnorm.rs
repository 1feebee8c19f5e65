//! `fold-batchnorm`: an inference-mode BatchNormalization whose input is the only output use of a Conv,
//! ConvTranspose, Gemm or MatMul with constant weights is folded into that producer.
//!
//! BatchNormalization computes `y = s * (x - mean) + beta` per channel (axis 1) with `s = gamma / sqrt(var +
//! eps)`. With `x = W * a + b` per output channel c, `y = (s_c W_c) * a + (s_c (b_c - mean_c) + beta_c)`:
//! the producer's weight is scaled per output channel and its bias replaced. Everything is computed in f64 and
//! stored in the weight's dtype (f32, f64, f16, bf16; the new bias takes the weight's dtype too). Where the output channel sits in each weight:
//! - Conv: W is (M, C/group, k...), channel m is the slice W[m].
//! - ConvTranspose: W is (C, M/group, k...); input channel c of group c / (C/group) and column j give output
//!   channel group * (M/group) + j.
//! - Gemm: `Y = alpha A' B' + beta C`; the output feature n is column n of B' (row n of B when transB). C
//!   becomes `s (beta C) + (beta_bn - s mean)` broadcast to the feature axis, and beta becomes 1.
//! - MatMul with a 2-D constant weight and a rank-2 output (axis 1 is then the feature axis): columns of W are
//!   scaled and the BatchNormalization becomes `Add(bias)`.
//!
//! Weights are replaced wherever they live (initializer, `Constant` node, enclosing graph of a body), see
//! `weights.rs`; bodies of If/Loop/Scan are folded too. Every candidate gets a remark (folded, or why not).

use std::collections::BTreeSet;

use crate::error::Result;
use crate::ir::ops::{BatchNormView, ConvView, GemmView};
use crate::ir::{
    AttrList, Attribute, DataType, Graph, Model, NodeId, OpKey, Patch, Tensor, ValueDef, ValueId,
};
use crate::passes::fold::weights::{self, OuterConstants};
use crate::passes::{Outcome, Pass, PassContext, PassReport};

const PASS: &str = "fold-batchnorm";

crate::pass_options! {
    /// The pass takes no options.
    pub struct FoldBatchNormOptions {}
}

pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(PASS);
        let mut freed = BTreeSet::new();
        let opset = model.opset("").unwrap_or(1);
        fold_graph(
            &mut model.graph,
            &OuterConstants::default(),
            "",
            opset,
            &mut report,
            &mut freed,
        )?;
        report.stats.entry("batchnorm_folded".into()).or_insert(0);
        report.stats.entry("batchnorm_skipped".into()).or_insert(0);
        Ok(report)
    }
}

fn fold_graph(
    g: &mut Graph,
    outer: &OuterConstants,
    path: &str,
    opset: i64,
    report: &mut PassReport,
    freed: &mut BTreeSet<String>,
) -> Result<()> {
    let mut recurse =
        |g: &mut Graph,
         outer: &OuterConstants,
         path: &str,
         report: &mut PassReport,
         freed: &mut BTreeSet<String>| { fold_graph(g, outer, path, opset, report, freed) };
    super::for_each_body(g, outer, path, PASS, report, freed, &mut recurse)?;
    for bn in g.node_ids().to_vec() {
        let Some(node) = g.node(bn) else { continue };
        let Some(view) = BatchNormView::of(node, opset)? else {
            continue;
        };
        let at = format!("{path}{}", node.name());
        let mut p = Patch::new(PASS);
        match plan(g, outer, bn, &view, &mut p, freed)? {
            Ok(what) => {
                report.record(g.apply(p)?);
                report.stat("batchnorm_folded", 1);
                report.remark(at, Outcome::Applied, what);
            }
            Err(why) => {
                report.stat("batchnorm_skipped", 1);
                report.remark(at, Outcome::Skipped, why);
            }
        }
    }
    Ok(())
}

/// Per-channel scale `s` and shift `t` of an inference BatchNormalization: `y = s x + t`.
struct Affine {
    s: Vec<f64>,
    t: Vec<f64>,
}

/// Queue the fold of one BatchNormalization into `p`; `Ok(Err(reason))` when it cannot be folded.
fn plan(
    g: &Graph,
    outer: &OuterConstants,
    bn: NodeId,
    view: &BatchNormView,
    p: &mut Patch,
    freed: &mut BTreeSet<String>,
) -> Result<std::result::Result<String, String>> {
    let node = g.node(bn).expect("live node");
    if view.training_mode {
        return Ok(Err("it is in training mode".into()));
    }
    if !view.spatial {
        return Ok(Err("spatial=0 (per-activation statistics)".into()));
    }
    if node.outputs[1..]
        .iter()
        .flatten()
        .any(|v| !g.uses(*v).is_empty() || g.is_output(*v))
    {
        return Ok(Err("its running mean/variance outputs are used".into()));
    }
    let Some(y) = node.output(0) else {
        return Ok(Err("no output".into()));
    };
    if g.is_output(y) {
        return Ok(Err(format!(
            "its output '{}' is a graph output (folding would rename it)",
            g.value_name(y)
        )));
    }
    let (prod, steps) = match producer_through_steps(g, outer, view.x)? {
        Ok(found) => found,
        Err(why) => return Ok(Err(why)),
    };
    let Some(affine) = affine(g, outer, view)? else {
        return Ok(Err(
            "its scale, bias, mean or variance is not a float constant".into(),
        ));
    };
    let pnode = g.node(prod).expect("live node");
    let affine = match compose(g, outer, prod, &steps, affine)? {
        Ok(a) => a,
        Err(why) => return Ok(Err(why)),
    };
    let c = affine.s.len();
    let kind = pnode.op.display();
    let folded = if pnode.op.is("Conv") || pnode.op.is("ConvTranspose") {
        fold_conv(g, outer, prod, &affine, p, freed)?
    } else if pnode.op.is("Gemm") {
        fold_gemm(g, outer, prod, &affine, p, freed)?
    } else if pnode.op.is("MatMul") {
        fold_matmul(g, outer, prod, bn, &affine, p, freed)?
    } else {
        Err(format!("producer '{}' is a {kind}", pnode.name()))
    };
    let what = match folded {
        Ok(w) => w,
        Err(e) => return Ok(Err(e)),
    };
    let mut through = String::new();
    for step in &steps {
        let n = g.node(step.node).expect("live node");
        through.push_str(&format!(" through {} '{}'", n.op.display(), n.name()));
        p.erase_node(step.node);
        weights::drop_readers_of(g, p, step.node, &[step.constant], freed);
    }
    let replacement = what.output;
    p.replace_all_uses(y, replacement);
    p.erase_node(bn);
    let params = [view.scale, view.bias, view.mean, view.var];
    weights::drop_readers_of(g, p, bn, &params, freed);
    Ok(Ok(format!(
        "folded into {kind} '{}'{through} ({c} channels; weight from {})",
        pnode.name(),
        what.weight_storage
    )))
}

/// A per-channel constant `Add` or `Mul` between the producer and the BatchNormalization. paddle2onnx writes a
/// ConvTranspose's bias as `Add(y, b[1,C,1,1])` before the BatchNormalization (PP-OCR detectors); both ops
/// are affine per channel, so they compose with the BatchNormalization's map and the producer takes all of it.
struct Step {
    node: NodeId,
    /// The constant operand.
    constant: ValueId,
    mul: bool,
}

/// Longest chain of constant `Add`/`Mul` steps looked through; exporters write one (a bias), rarely two.
const MAX_STEPS: usize = 4;

/// Walk back from the BatchNormalization's input through constant `Add`/`Mul` steps to the node that would
/// take the fold; every value on the way must be read once (by the next node) and not be a graph output.
/// When the node reached is not one a fold can take, the reason names the BatchNormalization's own producer,
/// as without the walk.
fn producer_through_steps(
    g: &Graph,
    outer: &OuterConstants,
    x: ValueId,
) -> Result<std::result::Result<(NodeId, Vec<Step>), String>> {
    let mut steps = Vec::new();
    let mut x = x;
    loop {
        let Some((prod, pnode)) = g.producer(x) else {
            return Ok(Err(
                "its input is not computed by a node of this graph".into()
            ));
        };
        if g.uses(x).len() != 1 || g.is_output(x) {
            return Ok(Err(format!(
                "'{}' output is also read elsewhere",
                pnode.name()
            )));
        }
        if pnode.output(0) != Some(x) {
            return Ok(Err(format!("reads output #>0 of '{}'", pnode.name())));
        }
        let step = (steps.len() < MAX_STEPS)
            .then(|| constant_step(g, outer, prod))
            .flatten();
        match step {
            Some((step, next)) => {
                steps.push(step);
                x = next;
            }
            None if steps.is_empty() || is_fold_target(pnode) => return Ok(Ok((prod, steps))),
            None => {
                let first = g.node(steps[0].node).expect("live node");
                return Ok(Err(format!(
                    "producer '{}' is a {}",
                    first.name(),
                    first.op.display()
                )));
            }
        }
    }
}

fn is_fold_target(n: &crate::ir::Node) -> bool {
    ["Conv", "ConvTranspose", "Gemm", "MatMul"]
        .iter()
        .any(|op| n.op.is(op))
}

/// `node` as a step: an `Add`/`Mul` of exactly one float constant and one computed value (returned).
fn constant_step(g: &Graph, outer: &OuterConstants, node: NodeId) -> Option<(Step, ValueId)> {
    let n = g.node(node)?;
    let mul = n.op.is("Mul");
    if !(mul || n.op.is("Add")) || n.inputs.len() != 2 {
        return None;
    }
    let (a, b) = (n.input(0)?, n.input(1)?);
    let is_const = |v| weights::read(g, outer, v).is_some_and(|t| t.dtype().is_float());
    let (constant, next) = match (is_const(a), is_const(b)) {
        (false, true) => (b, a),
        (true, false) => (a, b),
        _ => return None,
    };
    Some((
        Step {
            node,
            constant,
            mul,
        },
        next,
    ))
}

/// The BatchNormalization's map composed with the steps' (nearest the BatchNormalization first):
/// `s (z + k) + t = s z + (s k + t)` and `s (z k) + t = (s k) z + t`. Each constant must broadcast per
/// channel against the producer's output: right-aligned to its rank, every dim 1 except axis 1 (C or 1).
fn compose(
    g: &Graph,
    outer: &OuterConstants,
    prod: NodeId,
    steps: &[Step],
    mut a: Affine,
) -> Result<std::result::Result<Affine, String>> {
    if steps.is_empty() {
        return Ok(Ok(a));
    }
    let pnode = g.node(prod).expect("live node");
    let rank = if pnode.op.is("Gemm") || pnode.op.is("MatMul") {
        Some(2)
    } else {
        pnode
            .input(1)
            .and_then(|w| weights::read(g, outer, w))
            .map(|t| t.dims.len())
    };
    let c = a.s.len();
    for step in steps {
        let name = g.node(step.node).expect("live node").name();
        let t = weights::read(g, outer, step.constant).expect("checked by constant_step");
        let per_channel = rank.is_some_and(|r| {
            t.dims.len() <= r
                && t.dims.iter().enumerate().all(|(i, &d)| {
                    let axis = r - t.dims.len() + i;
                    d == 1 || (axis == 1 && d as usize == c)
                })
        });
        if !per_channel {
            return Ok(Err(format!(
                "'{name}' applies a constant of shape {:?}, not one value per channel",
                t.dims
            )));
        }
        let k = to_f64(&t)?;
        let at = |m: usize| if k.len() == 1 { k[0] } else { k[m] };
        for m in 0..c {
            if step.mul {
                a.s[m] *= at(m);
            } else {
                a.t[m] += a.s[m] * at(m);
            }
        }
    }
    Ok(Ok(a))
}

struct Folded {
    /// The value that now carries the BatchNormalization's output.
    output: crate::ir::ValRef,
    weight_storage: &'static str,
}

fn affine(g: &Graph, outer: &OuterConstants, v: &BatchNormView) -> Result<Option<Affine>> {
    let read = |id: ValueId| -> Result<Option<Vec<f64>>> {
        match weights::read(g, outer, id) {
            Some(t) if t.dtype().is_float() => Ok(Some(to_f64(&t)?)),
            _ => Ok(None),
        }
    };
    let (Some(gamma), Some(beta), Some(mean), Some(var)) =
        (read(v.scale)?, read(v.bias)?, read(v.mean)?, read(v.var)?)
    else {
        return Ok(None);
    };
    let c = gamma.len();
    if beta.len() != c || mean.len() != c || var.len() != c || c == 0 {
        return Ok(None);
    }
    let eps = v.epsilon as f64;
    let s: Vec<f64> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let t = (0..c).map(|i| beta[i] - mean[i] * s[i]).collect();
    Ok(Some(Affine { s, t }))
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    t.to_f64_vec()
}

/// A tensor of `dtype` holding `values` (rounded to nearest, ties to even).
fn store(dtype: DataType, dims: Vec<i64>, values: &[f64]) -> Result<Tensor> {
    Tensor::from_f64_as("", dtype, dims, values)
}

/// The constant weight at `slot` of `node`, as f64 with its dims, if it is a float32 constant.
fn weight(
    g: &Graph,
    outer: &OuterConstants,
    node: NodeId,
    slot: usize,
) -> Result<std::result::Result<(ValueId, DataType, Vec<i64>, Vec<f64>), String>> {
    let n = g.node(node).expect("live node");
    let Some(v) = n.input(slot) else {
        return Ok(Err(format!("'{}' has no input #{slot}", n.name())));
    };
    let Some(t) = weights::read(g, outer, v) else {
        return Ok(Err(format!(
            "input '{}' of '{}' is not a constant",
            g.value_name(v),
            n.name()
        )));
    };
    if !matches!(
        t.dtype(),
        DataType::FLOAT | DataType::DOUBLE | DataType::FLOAT16 | DataType::BFLOAT16
    ) {
        return Ok(Err(format!(
            "input '{}' of '{}' is {} (float weights only)",
            g.value_name(v),
            n.name(),
            t.dtype().name()
        )));
    }
    let dims = t.dims.clone();
    Ok(Ok((v, t.dtype(), dims, to_f64(&t)?)))
}

/// The bias at `slot` (zeros when the slot is empty); `Err` when present but not a float32 constant of `c`
/// elements.
fn bias(
    g: &Graph,
    outer: &OuterConstants,
    node: NodeId,
    slot: usize,
    c: usize,
) -> Result<std::result::Result<(Option<ValueId>, Vec<f64>), String>> {
    let n = g.node(node).expect("live node");
    if n.input(slot).is_none() {
        return Ok(Ok((None, vec![0.0; c])));
    }
    match weight(g, outer, node, slot)? {
        Ok((v, _, _, b)) if b.len() == c => Ok(Ok((Some(v), b))),
        Ok(_) => Ok(Err(format!(
            "bias of '{}' does not have {c} elements",
            n.name()
        ))),
        Err(e) => Ok(Err(e)),
    }
}

macro_rules! try_fold {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        }
    };
}

fn fold_conv(
    g: &Graph,
    outer: &OuterConstants,
    conv: NodeId,
    a: &Affine,
    p: &mut Patch,
    freed: &mut BTreeSet<String>,
) -> Result<std::result::Result<Folded, String>> {
    let node = g.node(conv).expect("live node");
    let transpose = node.op.is("ConvTranspose");
    let group = if transpose {
        node.get_int("group")?.unwrap_or(1)
    } else {
        match ConvView::of(node)? {
            Some(v) => v.group,
            None => return Ok(Err(format!("'{}' lacks its weight input", node.name()))),
        }
    };
    let (wv, dt, dims, mut w) = try_fold!(weight(g, outer, conv, 1));
    let c = a.s.len();
    if dims.len() < 2 || group < 1 {
        return Ok(Err(format!(
            "weight of '{}' has rank {}",
            node.name(),
            dims.len()
        )));
    }
    let inner: usize = dims[2..].iter().product::<i64>().max(0) as usize;
    let (d0, d1) = (dims[0] as usize, dims[1] as usize);
    let group = group as usize;
    let out_channels = if transpose { d1 * group } else { d0 };
    if out_channels != c || (transpose && d0 % group != 0) {
        return Ok(Err(format!(
            "'{}' has {out_channels} output channels, the BatchNormalization {c}",
            node.name()
        )));
    }
    if !transpose {
        for (m, chunk) in w.chunks_mut(d1 * inner).enumerate() {
            chunk.iter_mut().for_each(|x| *x *= a.s[m]);
        }
    } else {
        let per_group_in = d0 / group;
        for ci in 0..d0 {
            for j in 0..d1 {
                let m = (ci / per_group_in) * d1 + j;
                let start = (ci * d1 + j) * inner;
                w[start..start + inner]
                    .iter_mut()
                    .for_each(|x| *x *= a.s[m]);
            }
        }
    }
    let (bv, b) = try_fold!(bias(g, outer, conv, 2, c));
    let nb: Vec<f64> = (0..c).map(|m| b[m] * a.s[m] + a.t[m]).collect();
    let storage = weights::storage(g, wv);
    if let Some(name) = weights::replace_input(g, p, conv, 1, Some(wv), store(dt, dims, &w)?) {
        freed.insert(name);
    }
    if let Some(name) = weights::replace_input(g, p, conv, 2, bv, store(dt, vec![c as i64], &nb)?) {
        freed.insert(name);
    }
    Ok(Ok(Folded {
        output: node.output(0).expect("checked by the caller").into(),
        weight_storage: storage,
    }))
}

fn fold_gemm(
    g: &Graph,
    outer: &OuterConstants,
    gemm: NodeId,
    a: &Affine,
    p: &mut Patch,
    freed: &mut BTreeSet<String>,
) -> Result<std::result::Result<Folded, String>> {
    let node = g.node(gemm).expect("live node");
    let Some(view) = GemmView::of(node)? else {
        return Ok(Err(format!("'{}' lacks an input", node.name())));
    };
    let (wv, dt, dims, mut w) = try_fold!(weight(g, outer, gemm, 1));
    let c = a.s.len();
    if dims.len() != 2 {
        return Ok(Err(format!("weight of '{}' is not 2-D", node.name())));
    }
    let (r, k) = (dims[0] as usize, dims[1] as usize);
    let n = if view.trans_b { r } else { k };
    if n != c {
        return Ok(Err(format!(
            "'{}' has {n} output features, the BatchNormalization {c}",
            node.name()
        )));
    }
    for (i, x) in w.iter_mut().enumerate() {
        let feature = if view.trans_b { i / k } else { i % k };
        *x *= a.s[feature];
    }
    // C' = s * (beta * C) + t, broadcast to (..., n)
    let (cv, cdims, cvals) = match view.c {
        None => (None, vec![c as i64], vec![0.0; c]),
        Some(_) => {
            let (v, _, d, vals) = try_fold!(weight(g, outer, gemm, 2));
            (Some(v), d, vals)
        }
    };
    let Some((out_dims, index)) = broadcast_to_features(&cdims, c) else {
        return Ok(Err(format!(
            "bias C of '{}' does not broadcast to {c} features",
            node.name()
        )));
    };
    let beta = view.beta as f64;
    let numel: usize = out_dims.iter().product::<i64>() as usize;
    let nc: Vec<f64> = (0..numel)
        .map(|i| {
            let f = i % c;
            a.s[f] * beta * cvals[index(i)] + a.t[f]
        })
        .collect();
    let storage = weights::storage(g, wv);
    if let Some(name) = weights::replace_input(g, p, gemm, 1, Some(wv), store(dt, dims, &w)?) {
        freed.insert(name);
    }
    if let Some(name) = weights::replace_input(g, p, gemm, 2, cv, store(dt, out_dims, &nc)?) {
        freed.insert(name);
    }
    if view.beta != 1.0 {
        p.set_attr(gemm, Attribute::float("beta", 1.0));
    }
    Ok(Ok(Folded {
        output: node.output(0).expect("checked by the caller").into(),
        weight_storage: storage,
    }))
}

/// The shape of `C` broadcast against `[n]` (numpy rules, `C` of rank <= 2 as Gemm allows), and a map from a
/// flat index of that shape to the flat index in `C`.
fn broadcast_to_features(
    cdims: &[i64],
    n: usize,
) -> Option<(Vec<i64>, Box<dyn Fn(usize) -> usize>)> {
    let n64 = n as i64;
    match cdims {
        [] => Some((vec![n64], Box::new(|_| 0))),
        [1] => Some((vec![n64], Box::new(|_| 0))),
        [x] if *x == n64 => Some((vec![n64], Box::new(|i| i))),
        [r, 1] if *r >= 1 => Some((vec![*r, n64], Box::new(move |i| i / n))),
        [r, x] if *x == n64 && *r >= 1 => Some((vec![*r, n64], Box::new(|i| i))),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn fold_matmul(
    g: &Graph,
    outer: &OuterConstants,
    mm: NodeId,
    bn: NodeId,
    a: &Affine,
    p: &mut Patch,
    freed: &mut BTreeSet<String>,
) -> Result<std::result::Result<Folded, String>> {
    let node = g.node(mm).expect("live node");
    let (wv, dt, dims, mut w) = try_fold!(weight(g, outer, mm, 1));
    let c = a.s.len();
    if dims.len() != 2 || dims[1] as usize != c {
        return Ok(Err(format!(
            "weight of '{}' is not a 2-D matrix with {c} columns",
            node.name()
        )));
    }
    let bn_out = g
        .node(bn)
        .and_then(|n| n.output(0))
        .expect("checked by the caller");
    let rank = [node.output(0), Some(bn_out)]
        .into_iter()
        .flatten()
        .find_map(|v| declared_rank(g, v))
        .or_else(|| node.input(0).and_then(|a| rank_of(g, a, 8)));
    if rank != Some(2) {
        return Ok(Err(format!(
            "output of '{}' is not known to be 2-D (BatchNormalization normalises axis 1)",
            node.name()
        )));
    }
    for (i, x) in w.iter_mut().enumerate() {
        *x *= a.s[i % c];
    }
    let storage = weights::storage(g, wv);
    if let Some(name) = weights::replace_input(g, p, mm, 1, Some(wv), store(dt, dims, &w)?) {
        freed.insert(name);
    }
    let bn_name = g.node(bn).map(|n| n.name().to_string()).unwrap_or_default();
    let b = weights::add(g, p, &bn_name, store(dt, vec![c as i64], &a.t)?);
    let mm_out = node.output(0).expect("checked by the caller");
    let add = p.add_node(
        g,
        &bn_name,
        OpKey::onnx("Add"),
        vec![Some(mm_out.into()), Some(b)],
        vec![],
        1,
    );
    Ok(Ok(Folded {
        output: add[0],
        weight_storage: storage,
    }))
}

/// The rank of `v`: declared, or followed back through rank-keeping ops to a Gemm or Flatten (rank 2).
/// `depth` bounds the walk.
fn rank_of(g: &Graph, v: ValueId, depth: usize) -> Option<usize> {
    if let Some(r) = declared_rank(g, v) {
        return Some(r);
    }
    let (_, n) = g.producer(v)?;
    const KEEP_RANK: &[&str] = &[
        "BatchNormalization",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Gelu",
        "Clip",
        "Identity",
        "Dropout",
        "Softmax",
    ];
    if n.op.is("Gemm") || n.op.is("Flatten") {
        Some(2)
    } else if depth > 0 && KEEP_RANK.iter().any(|op| n.op.is(op)) {
        rank_of(g, n.input(0)?, depth - 1)
    } else {
        None
    }
}

/// The rank a graph input, output or value_info entry declares for `v`.
fn declared_rank(g: &Graph, v: ValueId) -> Option<usize> {
    if g.value(v).def == ValueDef::Outer {
        return None;
    }
    g.declared_type(v)
        .and_then(|ty| ty.as_tensor())
        .and_then(|(_, shape)| shape.map(|s| s.0.len()))
}
