//! The plan, the third stage: every decision static QDQ takes, as plain serde data a user can write out
//! (`plan=FILE`, `--plan`), read, edit and load back (`load_plan=FILE`: the model is built from it without
//! calibrating). Per activation tensor the scale, zero point and type (or the tensor it follows, or why it
//! stays float); per candidate node the decision, the reason, and the roles of its inputs; per weight its
//! int8 scales; per constant operand its parameters in the activation type.
//!
//! Data flow: `decide` (decide.rs) turns the selection and what calibration observed into `Choices`, keyed by
//! ids; `assemble` here writes the `QdqPlan` of any subset of the sites (the final one, or a sensitivity
//! trial) with names instead of ids; `bind` (bind.rs) checks a plan against a graph and resolves the names
//! back, and `build` (build.rs) turns the bound plan into a patch. A calibrating run builds from the plan it
//! assembled by the same road a loaded plan takes, so loading the plan a run wrote rebuilds the same bytes:
//! f32 scales survive serde_json bit for bit, and the f64 bias shifts are written as text
//! (`crate::json::f64_text`) because f64 numbers would not.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ir::{Graph, Node, NodeId, ValueId};

use super::decide::Choices;
use super::select::{tensor_set, QdqSite, Selection};

/// A static QDQ plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqPlan {
    /// The model's ai.onnx opset the plan is for (after raising it to 13 for per-axis scales): a loaded plan
    /// raises a model below it and refuses one above it.
    pub opset: Option<i64>,
    /// Cross-layer equalisation ran before quantising (exact and data-free: a loaded plan runs it again).
    pub equalize: bool,
    /// Each bias is corrected by its node's `bias.shift` before it is quantised.
    pub bias_correction: bool,
    /// The activations of the quantised nodes (in value order): quantised with their own parameters, with
    /// those of the tensor they follow, or kept float.
    pub tensors: Vec<QdqTensor>,
    /// Every candidate node of the main graph in topological order: quantised or float, and why.
    pub nodes: Vec<QdqNode>,
    /// The weights the candidates read: symmetric int8 (zero point 0), one scale per channel on `axis`.
    pub weights: Vec<QdqWeight>,
    /// Constant operands stored in the activation type (an Add / Mul constant, an embedding table).
    pub constants: Vec<QdqConstant>,
    /// Weight-only quantization of the weights read inside If / Loop / Scan bodies (absent without bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_weights: Option<QdqBodyWeights>,
    /// Weight-only quantization of the weights of the ops outside the QDQ set (LSTM / GRU / RNN), wherever they
    /// are read (absent without such ops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_only: Option<QdqBodyWeights>,
}

/// One activation tensor: `dtype` + `scale` + `zero_point` (its own range), `follows` (the output of a
/// data-movement op, quantised with its input's parameters), or neither (kept float, `reason` says why).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqTensor {
    pub name: String,
    /// uint8 or int8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_point: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    /// Why it stays float, or how its range was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What happens to a candidate node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QdqDecision {
    Quantize,
    /// Left float by selection or by calibration (an Add whose operands' ranges differ too much).
    Float,
    /// Left float by the drift budget's sensitivity search.
    KeptFloat,
}

/// One candidate node. The roles (activations, weight, bias, constants, outputs) are given for every node
/// selection understood, float ones included, so that flipping `decision` to `quantize` is enough.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqNode {
    /// The node's name (`<Op>` when it has none).
    pub node: String,
    pub op: String,
    /// The node's first output: how a loaded plan finds the node (value names are unique).
    pub output: String,
    pub decision: QdqDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What selection noted (an absorbed Relu, a per-tensor fallback, an output left float).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Float activations read through the tensors' DequantizeLinear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activations: Vec<String>,
    /// Tensors quantised after the node (a Relu / Clip it absorbs moves this past it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<QdqWeightUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<QdqBiasUse>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constants: Vec<QdqConstantUse>,
}

/// The weight a node reads at input `slot`, quantised per channel on `axis` (per tensor without).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqWeightUse {
    pub slot: usize,
    pub name: String,
    pub axis: Option<usize>,
}

/// The bias a node reads at input `slot`: int32 at scale input scale x weight scale, zero point 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqBiasUse {
    pub slot: usize,
    pub name: String,
    /// With `bias_correction`: the mean output shift of the weight's quantization error, subtracted from the
    /// bias (one per output channel; absent when the layout or input statistics were not available). Decimal
    /// strings, so that they read back bit for bit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::json::f64_text"
    )]
    pub shift: Option<Vec<f64>>,
}

/// A constant operand a node reads at input `slot`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqConstantUse {
    pub slot: usize,
    pub name: String,
}

/// A weight's int8 quantization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqWeight {
    pub name: String,
    pub axis: Option<usize>,
    /// int8 (the symmetric form ONNX Runtime's integer kernels take).
    pub dtype: String,
    pub scales: Vec<f32>,
}

/// A constant stored in the activation type, per tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqConstant {
    pub name: String,
    /// uint8 or int8.
    pub dtype: String,
    pub scale: f32,
    pub zero_point: i32,
}

/// How weights without Q/DQ activations (read inside If / Loop / Scan bodies, or by an op outside the QDQ set)
/// are quantised: weight-only, int8 asymmetric (their activations are not calibrated, so no integer kernel
/// needs the symmetric form), for the op types `ops`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdqBodyWeights {
    pub per_channel: bool,
    pub ops: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl QdqPlan {
    /// Read a plan (JSON); a malformed one is an error naming the file and the place in it.
    pub fn read(path: &Path) -> Result<QdqPlan> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = match e.path().to_string().as_str() {
                "." => "plan".to_string(),
                p => format!("plan entry {p}"),
            };
            Error::Invalid {
                file: Some(path.to_path_buf()),
                at,
                msg: e.into_inner().to_string(),
            }
        })
    }

    /// The plan as pretty JSON (with a final newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan serialises") + "\n"
    }

    /// Write the plan to `path` atomically (a temporary file in the same folder, then a rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let werr = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".onnx-rewrite-plan-")
            .tempfile_in(dir)
            .map_err(werr)?;
        std::io::Write::write_all(&mut tmp, self.to_json().as_bytes()).map_err(werr)?;
        tmp.persist(path).map_err(|e| werr(e.error))?;
        Ok(())
    }
}

/// Quantization parameters of one tensor stored in the activation type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ActParams {
    pub scale: f32,
    pub zero_point: i32,
    /// int8 (else uint8).
    pub signed: bool,
}

impl ActParams {
    pub fn dtype(&self) -> &'static str {
        if self.signed {
            "int8"
        } else {
            "uint8"
        }
    }
}

/// The parts of a plan that do not depend on which sites are chosen.
pub(super) struct PlanHeader {
    pub opset: Option<i64>,
    pub equalize: bool,
    pub body_weights: Option<QdqBodyWeights>,
    pub weight_only: Option<QdqBodyWeights>,
}

/// The plan quantising the sites in `chosen` (every other candidate float), with the tensors they quantise
/// found by `tensor_set` (data-movement ops matching `exclude` pass no parameters on).
pub(super) fn assemble(
    g: &Graph,
    c: &Choices,
    chosen: &BTreeSet<NodeId>,
    exclude: &[String],
    header: &PlanHeader,
) -> QdqPlan {
    let name = |v: ValueId| g.value_name(v).to_string();
    let sites: Vec<&QdqSite> = c.sites().filter(|s| chosen.contains(&s.node)).collect();
    let set = tensor_set(g, &sites, exclude);
    let tensors = set
        .iter()
        .map(|(&v, src)| tensor_entry(g, c, v, *src))
        .collect();
    let nodes = c
        .selection
        .iter()
        .map(|sel| node_entry(g, c, sel, chosen))
        .collect();
    // weights and constants in the order the nodes first read them
    let (mut weights, mut constants) = (Vec::new(), Vec::new());
    let (mut seen_weights, mut seen_constants) = (BTreeSet::new(), BTreeSet::new());
    for s in c.sites() {
        if let Some((_, w, axis)) = s.weight {
            if seen_weights.insert((w, axis)) {
                weights.push(QdqWeight {
                    name: name(w),
                    axis,
                    dtype: "int8".into(),
                    scales: c.weights[&(w, axis)].clone(),
                });
            }
        }
        for &(_, k) in &s.consts {
            if seen_constants.insert(k) {
                let p = c.constants[&k];
                constants.push(QdqConstant {
                    name: name(k),
                    dtype: p.dtype().into(),
                    scale: p.scale,
                    zero_point: p.zero_point,
                });
            }
        }
    }
    QdqPlan {
        opset: header.opset,
        equalize: header.equalize,
        bias_correction: c.bias_correction,
        tensors,
        nodes,
        weights,
        constants,
        body_weights: header.body_weights.clone(),
        weight_only: header.weight_only.clone(),
    }
}

fn tensor_entry(g: &Graph, c: &Choices, v: ValueId, src: Option<ValueId>) -> QdqTensor {
    let name = g.value_name(v).to_string();
    if let Some(src) = src {
        return QdqTensor {
            name,
            follows: Some(g.value_name(src).to_string()),
            ..Default::default()
        };
    }
    let reason = c.tensor_reasons.get(&v).cloned();
    match c.params.get(&v) {
        Some(p) => QdqTensor {
            name,
            dtype: Some(p.dtype().into()),
            scale: Some(p.scale),
            zero_point: Some(p.zero_point),
            reason,
            ..Default::default()
        },
        None => QdqTensor {
            name,
            reason: reason.or_else(|| {
                Some(
                    "not calibrated: its parameters were to come from the data-movement op's input, which stays float"
                        .into(),
                )
            }),
            ..Default::default()
        },
    }
}

/// The first output of a node: the key a loaded plan finds it by.
pub(super) fn first_output(g: &Graph, node: &Node) -> String {
    node.outputs
        .iter()
        .flatten()
        .next()
        .map(|v| g.value_name(*v).to_string())
        .unwrap_or_default()
}

fn node_entry(g: &Graph, c: &Choices, sel: &Selection, chosen: &BTreeSet<NodeId>) -> QdqNode {
    let name = |v: &ValueId| g.value_name(*v).to_string();
    let (id, at) = match sel {
        Selection::Site(s) => (s.node, s.at.clone()),
        Selection::Skipped { node, at, .. } => (*node, at.clone()),
    };
    let node = g.node(id).expect("live");
    let mut entry = QdqNode {
        node: at,
        op: node.op.op_type.clone(),
        output: first_output(g, node),
        decision: QdqDecision::Float,
        reason: None,
        notes: Vec::new(),
        activations: Vec::new(),
        outputs: Vec::new(),
        weight: None,
        bias: None,
        constants: Vec::new(),
    };
    let s = match sel {
        Selection::Skipped { reason, .. } => {
            entry.reason = Some(reason.clone());
            return entry;
        }
        Selection::Site(s) => s,
    };
    if chosen.contains(&s.node) {
        entry.decision = QdqDecision::Quantize;
    } else if let Some((d, why)) = c.float.get(&s.node) {
        entry.decision = *d;
        entry.reason = Some(why.clone());
    }
    entry.notes = s.notes.clone();
    entry.activations = s.acts.iter().map(name).collect();
    entry.outputs = s.outs.iter().map(name).collect();
    entry.weight = s.weight.map(|(slot, w, axis)| QdqWeightUse {
        slot,
        name: name(&w),
        axis,
    });
    entry.bias = s.bias.map(|(slot, b)| QdqBiasUse {
        slot,
        name: name(&b),
        shift: c.shifts.get(&s.node).cloned(),
    });
    entry.constants = s
        .consts
        .iter()
        .map(|(slot, k)| QdqConstantUse {
            slot: *slot,
            name: name(k),
        })
        .collect();
    entry
}

#[cfg(test)]
mod tests {
    use super::super::testing::{chain, synthetic_plan};
    use super::super::StaticQdqOptions;
    use super::*;

    fn opts(f: impl FnOnce(&mut StaticQdqOptions)) -> StaticQdqOptions {
        let mut o = StaticQdqOptions::default();
        f(&mut o);
        o
    }

    /// Written and read back, a plan is the same plan, bit for bit: f32 scales as JSON numbers (awkward ones
    /// included: the smallest normal, neighbours of powers of ten), f64 bias shifts as text (one serde_json
    /// would read one ulp off as a number among them).
    #[test]
    fn plan_round_trips_through_json_bit_exact() {
        let m = chain();
        let mut plan = synthetic_plan(&m, &opts(|o| o.bias_correction = true), |_| (-0.5, 1.5));
        assert!(
            plan.nodes
                .iter()
                .any(|n| n.bias.as_ref().is_some_and(|b| b.shift.is_some())),
            "{plan:?}"
        );
        plan.weights[0].scales[0] = f32::MIN_POSITIVE;
        plan.weights[0].scales[1] = 1e-3f32.next_up();
        plan.tensors[0].scale = Some(0.1f32.next_down());
        let b = plan.nodes.iter_mut().find_map(|n| n.bias.as_mut()).unwrap();
        b.shift.as_mut().unwrap()[0] = 122.65352088450729;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        plan.write(&path).unwrap();
        let back = QdqPlan::read(&path).unwrap();
        assert_eq!(back, plan);
        let bits = |p: &QdqPlan| -> (Vec<u32>, Vec<u64>) {
            let mut f32s: Vec<u32> = p
                .tensors
                .iter()
                .flat_map(|t| t.scale)
                .map(f32::to_bits)
                .collect();
            for w in &p.weights {
                f32s.extend(w.scales.iter().map(|s| s.to_bits()));
            }
            f32s.extend(p.constants.iter().map(|c| c.scale.to_bits()));
            let f64s = p
                .nodes
                .iter()
                .filter_map(|n| n.bias.as_ref()?.shift.clone())
                .flatten()
                .map(f64::to_bits)
                .collect();
            (f32s, f64s)
        };
        assert_eq!(bits(&back), bits(&plan));
        assert_eq!(back.to_json(), std::fs::read_to_string(&path).unwrap());
    }

    /// What the plan says about the chain: the Relu is absorbed (the Conv's quantised output is the Relu's),
    /// the Reshape's output follows it, the graph input and the Relu output have their own uint8 parameters,
    /// and each weight has one scale per output channel.
    #[test]
    fn plan_records_roles_follows_and_scales() {
        let m = chain();
        let g = &m.graph;
        let plan = synthetic_plan(&m, &StaticQdqOptions::default(), |_| (-0.5, 1.5));
        let conv = plan.nodes.iter().find(|n| n.op == "Conv").unwrap();
        assert_eq!(conv.decision, QdqDecision::Quantize);
        assert_eq!(conv.activations, ["x"]);
        let relu_out = &conv.outputs[0];
        assert!(g
            .producer(g.value_by_name(relu_out).unwrap())
            .unwrap()
            .1
            .op
            .is("Relu"));
        let own: Vec<&QdqTensor> = plan.tensors.iter().filter(|t| t.scale.is_some()).collect();
        assert!(own.iter().any(|t| t.name == "x") && own.iter().any(|t| &t.name == relu_out));
        assert!(own
            .iter()
            .all(|t| t.dtype.as_deref() == Some("uint8") && t.zero_point == Some(64)));
        let reshaped = &plan
            .nodes
            .iter()
            .find(|n| n.op == "MatMul")
            .unwrap()
            .activations[0];
        let f = plan.tensors.iter().find(|t| &t.name == reshaped).unwrap();
        assert_eq!(f.follows.as_ref(), Some(relu_out));
        let w = plan.weights.iter().find(|w| w.name == "w").unwrap();
        assert_eq!((w.axis, w.scales.len()), (Some(0), 3));
        // per-channel symmetric: the largest magnitude of each output channel over 127
        assert_eq!(w.scales[0], (0.6f64 / 127.0) as f32);
    }
}
