//! Binding a plan to a graph: every name a `QdqPlan` gives is resolved to the graph's value and node ids and
//! every entry is checked against the model (the tensor exists and is a float activation, a weight is a
//! float32 constant of this graph with one positive finite scale per channel, types are int8 / uint8 with
//! zero points in range, a node's roles are its own inputs), producing the `BoundPlan` that `build` reads.
//!
//! A plan loaded from a file that does not fit the model is an `Error::Invalid` naming the file and the entry
//! (exit code 3); a plan this run computed binds by construction, and an error there is a bug (`Error::Pass`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::{DataType, Graph, NodeId, ValueId};

use super::decide::WeightKey;
use super::plan::{ActParams, QdqDecision, QdqNode, QdqPlan};
use super::select::display_name;
use super::PASS;

/// Where a plan came from.
#[derive(Clone, Copy, Debug)]
pub(super) enum PlanSource<'a> {
    /// Read from this file (`load_plan`).
    File(&'a Path),
    /// Assembled by this run from its own calibration.
    Computed,
}

impl PlanSource<'_> {
    fn error(&self, at: &str, msg: String) -> Error {
        match self {
            PlanSource::File(p) => Error::Invalid {
                file: Some(p.to_path_buf()),
                at: at.to_string(),
                msg,
            },
            PlanSource::Computed => Error::Pass {
                pass: PASS.into(),
                msg: format!("{at}: {msg} (in the plan this run computed)"),
            },
        }
    }
}

/// One activation tensor of a bound plan: its own parameters, or the tensor whose parameters it takes.
#[derive(Clone, Copy, Debug)]
pub(super) struct BoundTensor {
    pub follows: Option<ValueId>,
    /// Own parameters (None: float, or `follows`).
    pub params: Option<ActParams>,
}

/// One quantised node of a bound plan.
#[derive(Clone, Debug)]
pub(super) struct BoundNode {
    pub node: NodeId,
    /// Where its remarks go.
    pub at: String,
    pub acts: Vec<ValueId>,
    /// (input slot, weight, per-channel axis)
    pub weight: Option<(usize, ValueId, Option<usize>)>,
    /// (input slot, bias)
    pub bias: Option<(usize, ValueId)>,
    /// Bias correction's shift per output channel.
    pub shift: Option<Vec<f64>>,
    /// (input slot, constant operand)
    pub consts: Vec<(usize, ValueId)>,
    pub outs: Vec<ValueId>,
    pub notes: Vec<String>,
}

impl BoundNode {
    /// The remark of a quantised node.
    pub fn summary(&self) -> String {
        let mut why = format!(
            "quantised: {} activation(s) in, {} out{}",
            self.acts.len(),
            self.outs.len(),
            match self.weight {
                Some((_, _, Some(a))) => format!(", int8 weight per channel (axis {a})"),
                Some((_, _, None)) => ", int8 weight per tensor".into(),
                None => String::new(),
            }
        );
        for n in &self.notes {
            why += &format!("; {n}");
        }
        why
    }
}

/// A plan resolved against a graph: what `build` turns into a patch.
#[derive(Clone, Debug)]
pub(super) struct BoundPlan {
    /// Every tensor that gets a pair (when it has parameters), in value order.
    pub tensors: BTreeMap<ValueId, BoundTensor>,
    /// The quantised nodes, in plan order.
    pub nodes: Vec<BoundNode>,
    /// Scales per (weight, axis).
    pub weights: BTreeMap<WeightKey, Vec<f32>>,
    pub constants: BTreeMap<ValueId, ActParams>,
    pub bias_correction: bool,
}

impl BoundPlan {
    /// The parameters tensor `v` is quantised with: its own, or those of the tensor it follows.
    pub fn params_of(&self, v: ValueId) -> Option<ActParams> {
        let key = self.tensors.get(&v)?.follows.unwrap_or(v);
        self.tensors.get(&key)?.params
    }
}

/// Resolve and check `plan` against `g`.
pub(super) fn bind(g: &Graph, plan: &QdqPlan, src: PlanSource) -> Result<BoundPlan> {
    let opset = plan.opset.unwrap_or(1);
    let tensors = bind_tensors(g, plan, src)?;
    let mut weights = BTreeMap::new();
    for w in &plan.weights {
        let at = format!("weight '{}'", w.name);
        let v = float_constant(g, &w.name, &at, src)?;
        let dims = g.constant(v).expect("a constant").dims.clone();
        if w.dtype != "int8" {
            return Err(src.error(
                &at,
                format!(
                    "dtype '{}' is not int8 (static QDQ weights are symmetric int8)",
                    w.dtype
                ),
            ));
        }
        let channels = match w.axis {
            Some(a) if a >= dims.len() => {
                return Err(src.error(&at, format!("axis {a} is past its rank {}", dims.len())))
            }
            Some(_) if opset < 13 => {
                return Err(src.error(
                    &at,
                    format!("per-axis scales need ai.onnx opset 13, the plan's opset is {opset}"),
                ))
            }
            Some(a) => dims[a] as usize,
            None => 1,
        };
        if w.scales.len() != channels {
            return Err(src.error(
                &at,
                format!(
                    "{} scales for {channels} channel(s) (axis {:?})",
                    w.scales.len(),
                    w.axis
                ),
            ));
        }
        if let Some((i, s)) = w
            .scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(src.error(
                &at,
                format!("scale {i} is {s}: not a finite positive number"),
            ));
        }
        if weights.insert((v, w.axis), w.scales.clone()).is_some() {
            return Err(src.error(&at, format!("listed twice for axis {:?}", w.axis)));
        }
    }
    let mut constants = BTreeMap::new();
    for k in &plan.constants {
        let at = format!("constant '{}'", k.name);
        let v = float_constant(g, &k.name, &at, src)?;
        let p = act_params(&at, &k.dtype, k.scale, k.zero_point, src)?;
        if constants.insert(v, p).is_some() {
            return Err(src.error(&at, "listed twice".into()));
        }
    }
    let mut nodes = Vec::new();
    let mut seen = BTreeSet::new();
    for n in &plan.nodes {
        let at = format!("node '{}'", n.node);
        let id = find_node(g, n, &at, src)?;
        if !seen.insert(id) {
            return Err(src.error(&at, "listed twice".into()));
        }
        if n.decision != QdqDecision::Quantize {
            continue;
        }
        if opset < 10 {
            return Err(src.error(
                &at,
                format!("QuantizeLinear needs ai.onnx opset 10, the plan's opset is {opset}"),
            ));
        }
        nodes.push(bind_node(g, n, id, &at, &weights, &constants, src)?);
    }
    Ok(BoundPlan {
        tensors,
        nodes,
        weights,
        constants,
        bias_correction: plan.bias_correction,
    })
}

/// The value named `name`, or an error naming the entry.
fn value(g: &Graph, name: &str, at: &str, src: PlanSource) -> Result<ValueId> {
    g.value_by_name(name)
        .ok_or_else(|| src.error(at, format!("no tensor '{name}' in the model's main graph")))
}

/// A float32 constant of the main graph (an initializer or a `Constant` node's output).
fn float_constant(g: &Graph, name: &str, at: &str, src: PlanSource) -> Result<ValueId> {
    let v = value(g, name, at, src)?;
    match g.constant(v) {
        Some(t) if g.weight(v).is_some() => {
            if t.dtype() == DataType::FLOAT {
                Ok(v)
            } else {
                Err(src.error(at, format!("is {}, not float32", t.dtype().name())))
            }
        }
        _ => Err(src.error(at, "is not a constant of the main graph".into())),
    }
}

/// Parameters in the activation type: int8 or uint8, a finite positive scale, a zero point in the type's range.
fn act_params(
    at: &str,
    dtype: &str,
    scale: f32,
    zero_point: i32,
    src: PlanSource,
) -> Result<ActParams> {
    let signed = match dtype {
        "int8" => true,
        "uint8" => false,
        d => return Err(src.error(at, format!("dtype '{d}' is not int8 or uint8"))),
    };
    if !(scale.is_finite() && scale > 0.0) {
        return Err(src.error(at, format!("scale {scale} is not a finite positive number")));
    }
    let (lo, hi) = if signed { (-128, 127) } else { (0, 255) };
    if !(lo..=hi).contains(&zero_point) {
        return Err(src.error(
            at,
            format!("zero_point {zero_point} is outside {dtype}'s range {lo}..={hi}"),
        ));
    }
    Ok(ActParams {
        scale,
        zero_point,
        signed,
    })
}

/// The tensors: each a float activation of the graph, listed once; own parameters, `follows` a tensor with
/// parameters of its own, or neither.
fn bind_tensors(
    g: &Graph,
    plan: &QdqPlan,
    src: PlanSource,
) -> Result<BTreeMap<ValueId, BoundTensor>> {
    let mut tensors = BTreeMap::new();
    let mut followers = Vec::new();
    for t in &plan.tensors {
        let at = format!("tensor '{}'", t.name);
        let v = value(g, &t.name, &at, src)?;
        // constants are quantised as weights or constant operands, with their own entries: a pair on one would
        // leave a float copy in the file and a QuantizeLinear computed on every run
        if g.constant(v).is_some() {
            return Err(src.error(&at, "is a constant, not an activation".into()));
        }
        // QuantizeLinear takes a float input; a declared integer tensor (a shape, token ids) cannot be one.
        // A float type other than float32 is let through: selection itself lets a compute op's output declared
        // so through, and a plan this run computed must bind.
        if let Some(dt) = crate::passes::convert::declared_dtype(g, v).filter(|d| !d.is_float()) {
            return Err(src.error(&at, format!("is {}, not a float activation", dt.name())));
        }
        let params = match (&t.dtype, t.scale, t.zero_point, &t.follows) {
            (None, None, None, None) => None,
            (None, None, None, Some(f)) => {
                followers.push((v, at.clone(), f));
                None
            }
            (Some(dt), Some(s), Some(zp), None) => Some(act_params(&at, dt, s, zp, src)?),
            _ => {
                return Err(src.error(
                    &at,
                    "give dtype, scale and zero_point together (its own parameters), follows alone, or none (float)"
                        .into(),
                ))
            }
        };
        let bound = BoundTensor {
            follows: None,
            params,
        };
        if tensors.insert(v, bound).is_some() {
            return Err(src.error(&at, "listed twice".into()));
        }
    }
    // a follower takes the parameters of a tensor with its own (the root of its data-movement chain, as
    // `tensor_set` writes it), never of another follower: build looks one step up, no further
    let follower_ids: BTreeSet<ValueId> = followers.iter().map(|(v, _, _)| *v).collect();
    for (v, at, f) in followers {
        let target = value(g, f, &at, src)?;
        if !tensors.contains_key(&target) || follower_ids.contains(&target) {
            return Err(src.error(
                &at,
                format!(
                    "follows '{f}', which is not a tensor of the plan with parameters of its own"
                ),
            ));
        }
        tensors.get_mut(&v).expect("inserted").follows = Some(target);
    }
    Ok(tensors)
}

/// The node an entry names: the producer of its `output` (or, without one, the node of that name), of the
/// entry's op and name.
fn find_node(g: &Graph, n: &QdqNode, at: &str, src: PlanSource) -> Result<NodeId> {
    let id = if n.output.is_empty() {
        let mut named = g.nodes().filter(|(_, x)| x.name() == n.node);
        match (named.next(), named.next()) {
            (Some((id, _)), None) => id,
            _ => {
                return Err(src.error(
                    at,
                    "no output given and no single node of that name in the main graph".into(),
                ))
            }
        }
    } else {
        let v = value(g, &n.output, at, src)?;
        g.producer(v)
            .map(|(id, _)| id)
            .ok_or_else(|| src.error(at, format!("'{}' is not written by a node", n.output)))?
    };
    let node = g.node(id).expect("live");
    if node.op.op_type != n.op || display_name(node) != n.node {
        return Err(src.error(
            at,
            format!(
                "the model's node writing '{}' is '{}' ({}), the plan says '{}' ({})",
                n.output,
                display_name(node),
                node.op.op_type,
                n.node,
                n.op
            ),
        ));
    }
    Ok(id)
}

/// A quantised node's roles, each checked to be the node's own input.
fn bind_node(
    g: &Graph,
    n: &QdqNode,
    id: NodeId,
    at: &str,
    weights: &BTreeMap<WeightKey, Vec<f32>>,
    constants: &BTreeMap<ValueId, ActParams>,
    src: PlanSource,
) -> Result<BoundNode> {
    let node = g.node(id).expect("live");
    let input = |slot: usize, name: &str, what: &str| -> Result<ValueId> {
        let v = value(g, name, at, src)?;
        if node.input(slot) != Some(v) {
            return Err(src.error(at, format!("{what} '{name}' is not its input {slot}")));
        }
        Ok(v)
    };
    let mut acts = Vec::new();
    for a in &n.activations {
        let v = value(g, a, at, src)?;
        if !node.inputs.contains(&Some(v)) {
            return Err(src.error(at, format!("activation '{a}' is not one of its inputs")));
        }
        acts.push(v);
    }
    let outs = n
        .outputs
        .iter()
        .map(|o| value(g, o, at, src))
        .collect::<Result<Vec<_>>>()?;
    let weight = match &n.weight {
        Some(w) => {
            let v = input(w.slot, &w.name, "weight")?;
            if !weights.contains_key(&(v, w.axis)) {
                return Err(src.error(
                    at,
                    format!(
                        "weight '{}' (axis {:?}) has no entry in the plan's weights",
                        w.name, w.axis
                    ),
                ));
            }
            Some((w.slot, v, w.axis))
        }
        None => None,
    };
    let (bias, shift) = match &n.bias {
        Some(b) => {
            let v = input(b.slot, &b.name, "bias")?;
            if acts.is_empty() {
                // the bias scale is the first activation's scale x the weight's
                return Err(src.error(
                    at,
                    "a bias needs an activation to take its scale from".into(),
                ));
            }
            if let Some(x) = b.shift.iter().flatten().find(|x| !x.is_finite()) {
                return Err(src.error(at, format!("bias shift {x} is not finite")));
            }
            (Some((b.slot, v)), b.shift.clone())
        }
        None => (None, None),
    };
    let mut consts = Vec::new();
    for k in &n.constants {
        let v = input(k.slot, &k.name, "constant")?;
        if !constants.contains_key(&v) {
            return Err(src.error(
                at,
                format!("constant '{}' has no entry in the plan's constants", k.name),
            ));
        }
        consts.push((k.slot, v));
    }
    Ok(BoundNode {
        node: id,
        at: n.node.clone(),
        acts,
        weight,
        bias,
        shift,
        consts,
        outs,
        notes: n.notes.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{chain, synthetic_plan};
    use super::super::StaticQdqOptions;
    use super::*;

    /// Every way a plan can fail to fit the chain is an `Invalid` error (exit code 3) naming the file and the
    /// entry, never a panic; the plan as made binds.
    #[test]
    fn a_bad_plan_entry_is_a_named_error() {
        let m = chain();
        let g = &m.graph;
        let plan = synthetic_plan(&m, &StaticQdqOptions::default(), |_| (-0.5, 1.5));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edited.json");
        let load = |text: String| -> Error {
            std::fs::write(&path, text).unwrap();
            match QdqPlan::read(&path) {
                Ok(p) => bind(g, &p, PlanSource::File(&path)).unwrap_err(),
                Err(e) => e,
            }
        };
        let edit = |f: &dyn Fn(&mut QdqPlan)| {
            let mut p = plan.clone();
            f(&mut p);
            p.to_json()
        };
        bind(g, &plan, PlanSource::File(&path)).unwrap();
        let own = plan.tensors.iter().position(|t| t.scale.is_some()).unwrap();
        let own_name = plan.tensors[own].name.clone();
        let cases: Vec<(String, String, &str)> = vec![
            (
                edit(&|p| p.tensors[own].name = "nope".into()),
                "tensor 'nope'".into(),
                "no tensor 'nope'",
            ),
            (
                edit(&|p| p.tensors[own].dtype = Some("int4".into())),
                format!("tensor '{own_name}'"),
                "dtype 'int4' is not int8 or uint8",
            ),
            (
                edit(&|p| p.tensors[own].scale = Some(0.0)),
                format!("tensor '{own_name}'"),
                "scale 0 is not a finite positive number",
            ),
            (
                edit(&|p| p.tensors[own].zero_point = Some(300)),
                format!("tensor '{own_name}'"),
                "zero_point 300 is outside uint8's range 0..=255",
            ),
            (
                edit(&|p| p.tensors[own].name = "w".into()),
                "tensor 'w'".into(),
                "is a constant, not an activation",
            ),
            (
                edit(&|p| p.weights[0].scales[1] = -1.0),
                "weight 'w'".into(),
                "scale 1 is -1: not a finite positive number",
            ),
            (
                edit(&|p| p.weights[0].dtype = "uint8".into()),
                "weight 'w'".into(),
                "is not int8",
            ),
            (
                edit(&|p| {
                    p.weights[0].scales.pop();
                }),
                "weight 'w'".into(),
                "2 scales for 3 channel(s)",
            ),
            (
                edit(&|p| p.nodes[0].op = "Gemm".into()),
                format!("node '{}'", plan.nodes[0].node),
                "the plan says",
            ),
            (
                edit(&|p| p.opset = Some(11)),
                "weight 'w'".into(),
                "per-axis scales need ai.onnx opset 13",
            ),
            (
                // JSON has no infinity: a number past f32's range reads as one
                edit(&|p| p.weights[0].scales[0] = 7.0).replace("7.0", "1e39"),
                "weight 'w'".into(),
                "scale 0 is inf",
            ),
            (
                plan.to_json().replacen("\"tensors\"", "\"tensorz\"", 1),
                "plan".into(),
                "unknown field `tensorz`",
            ),
            (
                plan.to_json()
                    .replacen("\"zero_point\": 64", "\"zero_point\": \"64\"", 1),
                "plan entry tensors[".into(),
                "invalid type",
            ),
        ];
        for (text, entry, msg) in cases {
            let e = load(text);
            let s = e.to_string();
            assert_eq!(e.exit_code(), 3, "{s}");
            assert!(s.contains("edited.json"), "{s}");
            assert!(s.contains(&entry), "{entry}: {s}");
            assert!(s.contains(msg), "{msg}: {s}");
        }
    }

    /// A tensor that follows another must follow one with parameters of its own.
    #[test]
    fn follows_must_name_a_tensor_with_its_own_parameters() {
        let m = chain();
        let mut plan = synthetic_plan(&m, &StaticQdqOptions::default(), |_| (-0.5, 1.5));
        let g = &m.graph;
        let (_, sigmoid) = g.nodes().find(|(_, n)| n.op.is("Sigmoid")).unwrap();
        let s = g.value_name(sigmoid.output(0).unwrap()).to_string();
        let f = plan
            .tensors
            .iter()
            .position(|t| t.follows.is_some())
            .unwrap();
        plan.tensors[f].follows = Some(s.clone());
        let e = bind(g, &plan, PlanSource::File(Path::new("p.json"))).unwrap_err();
        let want = format!("follows '{s}', which is not a tensor of the plan");
        assert!(e.to_string().contains(&want), "{e}");
        // nor one that itself follows another
        let name = plan.tensors[f].name.clone();
        plan.tensors[f].follows = Some(name.clone());
        let e = bind(g, &plan, PlanSource::File(Path::new("p.json"))).unwrap_err();
        assert!(e.to_string().contains(&format!("follows '{name}'")), "{e}");
    }
}
