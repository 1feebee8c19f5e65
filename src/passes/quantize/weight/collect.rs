//! Finding the weights (`collect`): every constant read by a weight slot of a chosen op, in any graph, with
//! all its readers and the `Role` each reading slot gives it (which scales it wants). A reader is a node input
//! or a graph output; a weight with any reader that is not a chosen weight slot stays float (`plan`). Slots
//! that are not constants get their remark here (already quantized, computed, a graph input), except a
//! Gather of a computed tensor, which is data movement. A recurrent weight stored 2-D whose rows Slice /
//! Concat / Unsqueeze move into the op (`rows_to_recurrent`) is read, for the remark and the filters, by the
//! recurrent node.

use std::collections::{BTreeMap, BTreeSet};

use super::{WeightConfig, RECURRENT};
use crate::error::Result;
use crate::ir::ops::IntsArg;
use crate::ir::AttrList;
use crate::ir::{
    DataType, GraphPath, GraphRoot, Model, NodeId, UseSlot, ValueDef, WeightRef, WeightStorage,
};
use crate::passes::{Outcome, PassReport};

/// One node input (or graph output) that reads a weight.
#[derive(Clone, Debug)]
pub(super) struct Reader {
    /// `if_0/then_branch/conv` (node name with the subgraph path).
    pub(super) at: String,
    /// The node's own name, for include / exclude.
    pub(super) node: String,
    pub(super) op: String,
    /// The graph holding the reading node, and the node (None for a graph output).
    pub(super) path: GraphPath,
    pub(super) id: Option<NodeId>,
    /// What the slot wants when it is the weight slot of a chosen op, else None.
    pub(super) role: Option<Role>,
    /// The node's first output is an output of its graph (a Gather's rows then cannot change dtype in place).
    pub(super) feeds_output: bool,
}

/// What scales a weight slot of a chosen op wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Role {
    /// One scale per slice along this axis (normalised).
    Channel(usize),
    /// A 1-D MatMul weight: no channel axis.
    Vector,
    /// `W` or `R` of LSTM / GRU / RNN: `[num_directions, G * hidden, k]`, one scale per gate row per direction.
    Recurrent,
    /// The data of a Gather (an embedding table) gathered along `axis` (normalised).
    Table { axis: usize },
    /// A recurrent `W` / `R` stored 2-D `[G * hidden, k]`, its rows moved into the op's `[1, G * hidden, k]`
    /// (`rows_to_recurrent`): one scale per gate row is axis 0 of the stored tensor; the moving ops stay.
    Lifted,
}

impl Role {
    /// The per-axis DequantizeLinear axis the role takes when the weight is dequantized whole.
    pub(super) fn plain_axis(self) -> Option<usize> {
        match self {
            Role::Channel(a) => Some(a),
            Role::Vector => None,
            Role::Recurrent => Some(1),
            Role::Table { .. } | Role::Lifted => Some(0),
        }
    }
}

pub(super) struct Candidate {
    pub(super) w: WeightRef,
    pub(super) readers: Vec<Reader>,
}

/// The slots of a chosen op that hold a weight (the remark for a non-constant one goes there).
pub(super) fn weight_slots(op: &str) -> &'static [usize] {
    match op {
        "Gather" => &[0],
        "LSTM" | "GRU" | "RNN" => &[1, 2],
        _ => &[1],
    }
}

/// The role of input `slot` of a chosen op reading a weight of rank `rank`, or None when that slot does not
/// take a weight of that rank.
pub(super) fn weight_role(
    node: &crate::ir::Node,
    slot: usize,
    rank: usize,
) -> Result<Option<Role>> {
    let op = node.op.op_type.as_str();
    Ok(match (op, slot) {
        ("Conv", 1) if rank >= 3 => Some(Role::Channel(0)),
        ("ConvTranspose", 1) if rank >= 3 => Some(Role::Channel(1)),
        ("Gemm", 1) if rank == 2 => {
            let t = node.get_int("transB")?.unwrap_or(0) != 0;
            Some(Role::Channel(if t { 0 } else { 1 }))
        }
        ("MatMul", 1) if rank >= 2 => Some(Role::Channel(rank - 1)),
        ("MatMul", 1) if rank == 1 => Some(Role::Vector),
        ("Gather", 0) if rank >= 1 => {
            let a = node.get_int("axis")?.unwrap_or(0);
            let r = rank as i64;
            (-r..r).contains(&a).then(|| Role::Table {
                axis: a.rem_euclid(r) as usize,
            })
        }
        ("LSTM" | "GRU" | "RNN", 1 | 2) if rank == 3 => Some(Role::Recurrent),
        _ => None,
    })
}

/// Is `v` produced by a DequantizeLinear, possibly through ops that only move its rows (the Reshape of the
/// `Flat` layout, the Slice / Concat / Unsqueeze of a 2-D recurrent weight)?
pub(super) fn dequantized(g: &crate::ir::Graph, v: crate::ir::ValueId) -> bool {
    fn back(g: &crate::ir::Graph, v: crate::ir::ValueId, depth: usize) -> bool {
        match g.producer(v) {
            Some((_, n)) if n.op.is("DequantizeLinear") => true,
            Some((_, n)) if depth < 16 && n.op.is("Concat") => {
                n.inputs.iter().flatten().any(|x| back(g, *x, depth + 1))
            }
            Some((_, n))
                if depth < 16 && ["Reshape", "Unsqueeze", "Slice"].iter().any(|o| n.op.is(o)) =>
            {
                n.input(0).is_some_and(|x| back(g, x, depth + 1))
            }
            _ => false,
        }
    }
    back(g, v, 0)
}

/// Why a chosen op's weight slot is not a constant, for the remark; None when no remark is due (a Gather of a
/// computed tensor is data movement, not a table lookup).
pub(super) fn not_constant_reason(
    g: &crate::ir::Graph,
    v: crate::ir::ValueId,
    op: &str,
) -> Option<String> {
    let name = g.value_name(v);
    let quantized = match g.value(v).def {
        ValueDef::Node(n, _) => {
            if dequantized(g, v) {
                Some("read through DequantizeLinear")
            } else if g.node(n).is_some_and(|m| m.op.is("Mul")) && reads_int_storage(g, n) {
                Some("integer storage read through Cast and Mul")
            } else {
                None
            }
        }
        _ => None,
    };
    if let Some(how) = quantized {
        return Some(format!("weight '{name}' is already quantized ({how})"));
    }
    if op == "Gather" {
        return None;
    }
    Some(match g.value(v).def {
        ValueDef::Node(n, _) => {
            let op = g.node(n).map(|n| n.op.display()).unwrap_or_default();
            format!("weight '{name}' is computed by a {op} node, not a constant")
        }
        ValueDef::Initializer => {
            format!("weight '{name}' is also a graph input (can be overridden at run time)")
        }
        ValueDef::Outer => {
            format!("weight '{name}' comes from an enclosing graph and is not a constant there")
        }
        _ => format!("weight '{name}' is a graph input, not a constant"),
    })
}

/// Does this Gather of a float table use the indices of a Gather of an 8-bit table? Then it gathers that
/// table's per-row scales (`Layout::Rows`), not an embedding of its own.
pub(super) fn gathers_row_params(g: &crate::ir::Graph, gather: &crate::ir::Node) -> bool {
    let Some(idx) = gather.input(1) else {
        return false;
    };
    g.nodes().any(|(_, n)| {
        n.op.is("Gather")
            && n.input(1) == Some(idx)
            && n.input(0).is_some_and(|t| {
                g.constant(t)
                    .is_some_and(|c| matches!(c.dtype(), DataType::INT8 | DataType::UINT8))
            })
    })
}

/// Does this Mul read a Cast of an 8-bit (or 4-bit) integer constant (a weight stored quantized)?
pub(super) fn reads_int_storage(g: &crate::ir::Graph, mul: crate::ir::NodeId) -> bool {
    let Some(m) = g.node(mul) else { return false };
    m.inputs.iter().flatten().any(|v| match g.producer(*v) {
        Some((_, c)) if c.op.is("Cast") => c.input(0).is_some_and(|x| {
            let dt = match g.constant(x) {
                Some(t) => t.dtype(),
                None => return false,
            };
            matches!(
                dt,
                DataType::INT8 | DataType::UINT8 | DataType::INT4 | DataType::UINT4
            )
        }),
        _ => false,
    })
}

/// The axes list of a Slice / Unsqueeze (attribute before its opset moved it to an input), when constant.
pub(super) fn const_axes(
    g: &crate::ir::Graph,
    node: &crate::ir::Node,
    opset: i64,
) -> Option<Vec<i64>> {
    let (moved, slot) = if node.op.is("Slice") {
        (10, 3)
    } else {
        (crate::ir::ops::SQUEEZE_AXES_INPUT_SINCE, 1)
    };
    match IntsArg::read(node, opset, moved, "axes", slot).ok()? {
        IntsArg::Attr(a) => Some(a),
        IntsArg::Input(x) => g.constant(x)?.to_i64_vec().ok(),
        // a Slice without axes slices the leading len(starts) axes
        IntsArg::Absent if node.op.is("Slice") => {
            let n = match IntsArg::read(node, opset, 10, "starts", 1).ok()? {
                IntsArg::Attr(a) => a.len(),
                IntsArg::Input(x) => g.constant(x)?.numel().ok()? as usize,
                IntsArg::Absent => return None,
            };
            Some((0..n as i64).collect())
        }
        IntsArg::Absent => None,
    }
}

/// A recurrent `W` / `R` stored 2-D `[G * hidden, k]` and brought to `[1, G * hidden, k]` by ops that move
/// whole rows without mixing them: Slice along axis 0 and Concat along axis 0 (PyTorch's exports reorder the
/// gates so) ending in an Unsqueeze of axis 0 (silero's export). When every path from `node` (which reads the
/// 2-D weight, or a value made from its rows) is such a chain ending in the `W` / `R` slot of a chosen
/// recurrent op, those slots (node, input) are pushed to `ends` and true is returned: one scale per row of
/// the stored weight is then one per gate row.
pub(super) fn rows_to_recurrent(
    g: &crate::ir::Graph,
    node: &crate::ir::Node,
    cfg: &WeightConfig,
    opset: i64,
    depth: usize,
    ends: &mut Vec<(NodeId, usize)>,
) -> bool {
    let op = node.op.op_type.as_str();
    let moves_rows = node.op.is_default_domain()
        && depth < 16
        && match op {
            "Slice" | "Unsqueeze" => const_axes(g, node, opset).is_some_and(|a| a == [0]),
            "Concat" => node.get_int("axis").ok().flatten() == Some(0),
            _ => false,
        };
    let Some(y) = node.output(0).filter(|_| moves_rows) else {
        return false;
    };
    if g.is_output(y) || g.uses(y).is_empty() {
        return false;
    }
    g.uses(y).iter().all(|u| {
        let (UseSlot::Input(slot), Some(c)) = (u.slot, g.node(u.node)) else {
            return false;
        };
        let cop = c.op.op_type.as_str();
        if op == "Unsqueeze" {
            // rank 3 now: only the recurrent slots may read it
            let ok = c.op.is_default_domain()
                && RECURRENT.contains(&cop)
                && cfg.ops.contains(cop)
                && (slot == 1 || slot == 2);
            if ok {
                ends.push((u.node, slot as usize));
            }
            ok
        } else {
            (cop == "Concat" || slot == 0) && rows_to_recurrent(g, c, cfg, opset, depth + 1, ends)
        }
    })
}

/// Find every constant read by a chosen op's weight slot, with all its readers. Remarks for weight slots that
/// are not constants go to `report`.
#[allow(clippy::type_complexity)]
pub(super) fn collect(
    model: &Model,
    cfg: &WeightConfig,
    report: &mut PassReport,
) -> Result<(
    BTreeMap<(GraphPath, String), Candidate>,
    BTreeMap<GraphPath, BTreeSet<String>>,
)> {
    let mut cands: BTreeMap<(GraphPath, String), Candidate> = BTreeMap::new();
    // every read of every constant, keyed like `cands`; folded in after the walk
    let mut reads: BTreeMap<(GraphPath, String), (WeightRef, Vec<Reader>)> = BTreeMap::new();
    let mut outer_names: BTreeMap<GraphPath, BTreeSet<String>> = BTreeMap::new();
    let opset = model.opset("").unwrap_or(1);
    model.visit_graphs(&mut |site| {
        if site.root != GraphRoot::Main {
            return Ok(());
        }
        let g = site.graph();
        if !site.path.is_root() {
            outer_names.insert(site.path.clone(), site.scope.outer_names());
        }
        // first the row-moving chains from a 2-D weight to recurrent slots: which node reads a weight for
        // which recurrent node (`lifted`), and which recurrent slots those chains cover
        let mut lifted: BTreeMap<NodeId, NodeId> = BTreeMap::new();
        let mut covered: BTreeSet<(NodeId, usize)> = BTreeSet::new();
        if !(cfg.bodies_only && site.path.is_root()) {
            for (id, node) in g.nodes() {
                if !matches!(node.op.op_type.as_str(), "Slice" | "Unsqueeze")
                    || node.input(0).and_then(|x| site.scope.weight(x)).is_none()
                {
                    continue;
                }
                let mut ends = Vec::new();
                if rows_to_recurrent(g, node, cfg, opset, 0, &mut ends) {
                    lifted.insert(id, ends[0].0);
                    covered.extend(ends);
                }
            }
        }
        for (id, node) in g.nodes() {
            let op = node.op.op_type.as_str();
            let chosen = node.op.is_default_domain()
                && cfg.ops.contains(op)
                && !(cfg.bodies_only && site.path.is_root());
            let feeds_output = node
                .output(0)
                .is_some_and(|y| g.outputs().iter().any(|io| io.value == y));
            // a Slice / Concat / Unsqueeze moving the rows of a 2-D weight into a recurrent W / R reads it
            // for the recurrent node (its remark, its name for include / exclude, its bias)
            let lifted = lifted.get(&id).and_then(|c| g.node(*c).map(|n| (*c, n)));
            for (slot, v) in node.inputs.iter().enumerate() {
                let Some(v) = *v else { continue };
                let w = site.scope.weight(v);
                let mut role = None;
                if let (Some(w), Some(_), 0) = (&w, lifted, slot) {
                    if weight_meta(model, w).is_some_and(|(r, dt)| r == 2 && dt.is_float()) {
                        role = Some(Role::Lifted);
                    }
                }
                if chosen && weight_slots(op).contains(&slot) {
                    match &w {
                        None if covered.contains(&(id, slot)) => {}
                        None => {
                            if let Some(why) = not_constant_reason(g, v, op) {
                                report.remark(site.at(node.name()), Outcome::Skipped, why);
                            }
                        }
                        Some(w) => match weight_meta(model, w) {
                            // an integer table is an index table (shape arithmetic) or, 8-bit, already
                            // quantized storage: only the latter is worth a remark
                            Some((_, dt)) if op == "Gather" && !dt.is_float() => {
                                if matches!(dt, DataType::INT8 | DataType::UINT8) {
                                    report.remark(
                                        site.at(node.name()),
                                        Outcome::Skipped,
                                        format!(
                                            "table '{}' is {}: already quantized storage",
                                            w.name,
                                            dt.name()
                                        ),
                                    );
                                }
                            }
                            // the scales of a table gathered per row (`Layout::Rows`): part of its storage
                            Some(_) if op == "Gather" && gathers_row_params(g, node) => {}
                            Some((rank, _)) => role = weight_role(node, slot, rank)?,
                            None => {}
                        },
                    }
                }
                let Some(w) = w else { continue };
                let (rid, rnode) = match lifted {
                    Some((c, n)) if role.is_some() => (c, n),
                    _ => (id, node),
                };
                let reader = Reader {
                    at: site.at(rnode.name()),
                    node: rnode.name().to_string(),
                    op: rnode.op.display(),
                    path: site.path.clone(),
                    id: Some(rid),
                    role,
                    feeds_output,
                };
                reads
                    .entry((w.path.clone(), w.name.clone()))
                    .or_insert_with(|| (w.clone(), Vec::new()))
                    .1
                    .push(reader);
            }
        }
        for io in g.outputs() {
            if let Some(w) = site.scope.weight(io.value) {
                reads
                    .entry((w.path.clone(), w.name.clone()))
                    .or_insert_with(|| (w.clone(), Vec::new()))
                    .1
                    .push(Reader {
                        at: site.at(g.value_name(io.value)),
                        node: String::new(),
                        op: "graph output".into(),
                        path: site.path.clone(),
                        id: None,
                        role: None,
                        feeds_output: false,
                    });
            }
        }
        Ok(())
    })?;
    for (key, (w, readers)) in reads {
        if readers.iter().any(|r| r.role.is_some()) {
            cands.insert(key, Candidate { w, readers });
        }
    }
    Ok((cands, outer_names))
}

/// The rank and dtype of a weight (read without copying data for initializers).
pub(super) fn weight_meta(model: &Model, w: &WeightRef) -> Option<(usize, DataType)> {
    match w.storage {
        WeightStorage::Initializer => model
            .graph
            .subgraph_at(&w.path)?
            .value(w.value)
            .init
            .as_ref()
            .map(|t| (t.dims.len(), t.dtype())),
        _ => model
            .graph
            .read_weight(w)
            .ok()
            .map(|t| (t.dims.len(), t.dtype())),
    }
}
