//! Apply a plan: `zero` keeps shapes and zeroes the pruned channels of every producer weight and bias, every
//! per-channel parameter that adds to them (BN scale and shift, biases) and every consumer's input-channel
//! weights, so a pruned channel contributes exactly nothing whatever the activations between do to a zero
//! (Sigmoid(0) = 0.5 is multiplied by a zero weight). `remove` slices all of them, depthwise group counts,
//! Split sizes, constant Reshape dims and declared value_info shapes.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::{Error, Result};
use crate::ir::{AttrList, Attribute, DimValue, Graph, Patch, Tensor, TypeKind};
use crate::passes::prune::{ChannelMode, PASS};
use crate::passes::PassReport;

use super::analysis::{Analysis, Layout, Role, SiteKind};
use super::plan::GroupPlan;
use super::GroupFigures;

struct Ctx<'a> {
    a: &'a Analysis,
    pruned: BTreeMap<usize, HashSet<usize>>,
}

impl Ctx<'_> {
    /// Kept and pruned feature positions along a layout's axis.
    fn split(&self, l: &Layout) -> (Vec<usize>, Vec<usize>, Vec<(usize, bool)>) {
        let mut kept = Vec::new();
        let mut gone = Vec::new();
        let mut per = Vec::new();
        for (i, (r, ch)) in self.a.positions(l).into_iter().enumerate() {
            let out = self.pruned.get(&r).is_some_and(|s| s.contains(&ch));
            per.push((r, !out));
            let idx = (i * l.block..(i + 1) * l.block).collect::<Vec<_>>();
            if out {
                gone.extend(idx);
            } else {
                kept.extend(idx);
            }
        }
        (kept, gone, per)
    }

    fn kept_channels(&self, l: &Layout) -> usize {
        self.split(l).2.iter().filter(|x| x.1).count()
    }
}

fn pass_err(msg: String) -> Error {
    Error::Pass {
        pass: PASS.into(),
        msg,
    }
}

/// Output positions (product of the declared output dims but the channel axis; a symbolic batch counts 1).
fn positions(g: &Graph, node: crate::ir::NodeId, channel_from_end: usize) -> Option<u64> {
    let out = g.node(node)?.output(0)?;
    let ty = super::analysis::declared_type(g, out)?;
    let TypeKind::Tensor { shape: Some(s), .. } = &ty.kind else {
        return None;
    };
    let r = s.0.len();
    if r < channel_from_end {
        return None;
    }
    let mut p = 1u64;
    for (i, d) in s.0.iter().enumerate() {
        if i == r - channel_from_end {
            continue;
        }
        match &d.value {
            DimValue::Fixed(x) if *x >= 0 => p *= *x as u64,
            DimValue::Param(_) if i == 0 => {}
            _ => return None,
        }
    }
    Some(p)
}

/// Apply the plan's `groups` of graph `g` (analysed as `a`); `outer` holds the names enclosing graphs define
/// (fresh names avoid them).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    mode: ChannelMode,
    g: &mut Graph,
    opset: i64,
    a: &Analysis,
    groups: &[&GroupPlan],
    outer: &BTreeSet<String>,
    report: &mut PassReport,
) -> Result<(Vec<GroupFigures>, Option<u64>, Option<u64>)> {
    let cx = Ctx {
        a,
        pruned: groups
            .iter()
            .map(|gp| (gp.id, gp.pruned.iter().copied().collect()))
            .collect(),
    };
    let mut figs: BTreeMap<usize, GroupFigures> = groups
        .iter()
        .map(|gp| {
            (
                gp.id,
                GroupFigures {
                    graph: gp.graph.clone(),
                    group: gp.id,
                    channels_before: gp.channels,
                    channels_after: gp.channels - gp.pruned.len(),
                    macs_before: Some(0),
                    macs_after: Some(0),
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut p = Patch::new(PASS);
    p.avoid_names(outer.clone());
    let mut moved_from = BTreeSet::new();
    let mut pending: BTreeMap<(crate::ir::NodeId, usize), (crate::ir::ValueId, Tensor)> =
        BTreeMap::new();
    // per weighted node: (weight numel, output positions, fraction of the weight kept, groups it touches)
    let mut node_macs: BTreeMap<crate::ir::NodeId, (u64, Option<u64>, f64, BTreeSet<usize>)> =
        BTreeMap::new();
    for site in &a.sites {
        let (kept, gone, per) = cx.split(&site.layout);
        let node = g.node(site.node).expect("live node");
        let nname = node.name().to_string();
        match &site.kind {
            SiteKind::Tensor { slot, axis, role } => {
                let v = node.input(*slot).expect("site slot is set");
                // a weight can be both a producer (output channels) and a consumer (input channels): the
                // edits compose on the current tensor of (node, slot)
                let t = match pending.get(&(site.node, *slot)) {
                    Some((_, t)) => t.clone(),
                    None => g
                        .constant(v)
                        .ok_or_else(|| {
                            pass_err(format!("node '{nname}': input {slot} is not constant"))
                        })?
                        .into_owned(),
                };
                let orig = g.constant(v).ok_or_else(|| {
                    pass_err(format!("node '{nname}': input {slot} is not constant"))
                })?;
                let numel = orig.numel()?;
                let axis_len = orig.dims[*axis].max(1) as u64;
                let slice = numel / axis_len;
                // parameter figures per group
                for (r, keep) in per.iter() {
                    let f = figs.get_mut(r).expect("group in plan");
                    f.params_before += slice * site.layout.block as u64;
                    if *keep {
                        f.params_after += slice * site.layout.block as u64;
                    }
                }
                if matches!(role, Role::Producer | Role::Consumer) {
                    let is_conv = matches!(node.op.op_type.as_str(), "Conv" | "ConvTranspose");
                    let ch_from_end = if is_conv { orig.dims.len() - 1 } else { 1 };
                    let pos = positions(g, site.node, ch_from_end);
                    let e =
                        node_macs
                            .entry(site.node)
                            .or_insert((numel, pos, 1.0, BTreeSet::new()));
                    e.2 *= kept.len() as f64 / (axis_len as f64);
                    e.3.extend(per.iter().map(|x| x.0));
                }
                if gone.is_empty() {
                    continue;
                }
                let new = match mode {
                    ChannelMode::Remove => t.take(*axis as i64, &kept)?,
                    ChannelMode::Zero => {
                        if *role == Role::Keep {
                            continue;
                        }
                        t.zero_along(*axis as i64, &gone)?
                    }
                };
                pending.insert((site.node, *slot), (v, new));
            }
            SiteKind::GroupAttr => {
                if mode == ChannelMode::Remove && !gone.is_empty() {
                    p.set_attr(
                        site.node,
                        Attribute::int("group", cx.kept_channels(&site.layout) as i64),
                    );
                }
            }
            SiteKind::SplitSizes { outputs } => {
                if mode == ChannelMode::Remove && !gone.is_empty() {
                    let sizes: Vec<i64> =
                        outputs.iter().map(|l| cx.kept_channels(l) as i64).collect();
                    if node.input(1).is_some() {
                        let v = node.input(1).expect("checked");
                        let t = Tensor::from_i64("", vec![sizes.len() as i64], &sizes);
                        write(g, &mut p, site.node, 1, v, t, &nname, &mut moved_from);
                    } else if node.attr("split").is_some() || opset < 13 {
                        p.set_attr(site.node, Attribute::ints("split", sizes));
                    } else if sizes.iter().any(|s| *s != sizes[0]) {
                        let t = Tensor::from_i64("", vec![sizes.len() as i64], &sizes);
                        let nv = p.add_initializer(g, &nname, t);
                        p.set_input(site.node, 1, Some(nv));
                        if node.attr("num_outputs").is_some() {
                            p.remove_attr(site.node, "num_outputs");
                        }
                    }
                }
            }
            SiteKind::SliceRange { index, start, end } => {
                if mode == ChannelMode::Remove && !gone.is_empty() {
                    let before = |x: usize| kept.iter().filter(|&&p| p < x).count() as i64;
                    for (slot, x) in [(1, *start), (2, *end)] {
                        let v = node.input(slot).expect("Slice has starts and ends");
                        let mut s = g.constant(v).expect("constant").to_i64_vec()?;
                        s[*index] = before(x);
                        let t = match g.constant(v).expect("constant").dtype() {
                            crate::ir::DataType::INT64 => {
                                Tensor::from_i64("", vec![s.len() as i64], &s)
                            }
                            dt => Tensor::from_f64_as(
                                "",
                                dt,
                                vec![s.len() as i64],
                                &s.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                            )?,
                        };
                        write(g, &mut p, site.node, slot, v, t, &nname, &mut moved_from);
                    }
                }
            }
            SiteKind::ReshapeDim { index } => {
                if mode == ChannelMode::Remove && !gone.is_empty() {
                    let v = node.input(1).expect("Reshape has a shape");
                    let mut s = g.constant(v).expect("constant shape").to_i64_vec()?;
                    s[*index] = kept.len() as i64;
                    let t = Tensor::from_i64("", vec![s.len() as i64], &s);
                    write(g, &mut p, site.node, 1, v, t, &nname, &mut moved_from);
                }
            }
        }
    }
    for ((node, slot), (v, t)) in pending {
        let anchor = g
            .node(node)
            .map(|n| n.name().to_string())
            .unwrap_or_default();
        write(g, &mut p, node, slot, v, t, &anchor, &mut moved_from);
    }
    // MACs of the weighted nodes: weight size x output positions (None when a shape is not declared)
    let mut total = (Some(0u64), Some(0u64));
    for (numel, pos, frac, groups) in node_macs.values() {
        let after_w = (*numel as f64 * frac).round() as u64;
        let mb = pos.map(|p| p * numel);
        let ma = pos.map(|p| p * after_w);
        total.0 = total.0.zip(mb).map(|(x, y)| x + y);
        total.1 = total.1.zip(ma).map(|(x, y)| x + y);
        for r in groups {
            let f = figs.get_mut(r).expect("group in plan");
            f.macs_before = f.macs_before.zip(mb).map(|(x, y)| x + y);
            f.macs_after = f.macs_after.zip(ma).map(|(x, y)| x + y);
        }
    }
    if mode == ChannelMode::Remove {
        let vi: HashSet<_> = g.value_info().iter().map(|io| io.value).collect();
        for (v, l) in &a.values {
            if !vi.contains(v) {
                continue;
            }
            let (kept, gone, _) = cx.split(l);
            if gone.is_empty() {
                continue;
            }
            let Some(mut ty) = super::analysis::declared_type(g, *v).cloned() else {
                continue;
            };
            if let TypeKind::Tensor { shape: Some(s), .. } = &mut ty.kind {
                let r = s.0.len();
                if r >= l.from_end {
                    s.0[r - l.from_end].value = DimValue::Fixed(kept.len() as i64);
                    p.set_value_info(*v, Some(ty));
                    continue;
                }
            }
            p.set_value_info(*v, None);
        }
    }
    report.record(g.apply(p)?);
    // drop the constants the sliced copies replaced once nothing reads them
    let mut p = Patch::new(PASS);
    p.avoid_names(outer.clone());
    for v in moved_from {
        if g.uses(v).is_empty() && !g.is_output(v) && !g.inputs().iter().any(|io| io.value == v) {
            if let Some(w) = g.weight(v) {
                p.remove_weight(&w);
            }
        }
    }
    if !p.is_empty() {
        report.record(g.apply(p)?);
    }
    Ok((figs.into_values().collect(), total.0, total.1))
}

/// Make input `slot` of `node` read `t`: in place when the node is the constant's only reader, else a new
/// initializer (the old one is dropped later if nothing reads it).
#[allow(clippy::too_many_arguments)]
fn write(
    g: &Graph,
    p: &mut Patch,
    node: crate::ir::NodeId,
    slot: usize,
    v: crate::ir::ValueId,
    mut t: Tensor,
    anchor: &str,
    moved_from: &mut BTreeSet<crate::ir::ValueId>,
) {
    if g.uses(v).len() == 1 && !g.is_output(v) {
        if let Some(w) = g.weight(v) {
            let old = g.constant(v).expect("constant");
            t.name = old.name.clone();
            t.doc_string = old.doc_string.clone();
            p.replace_weight(&w, t);
            return;
        }
    }
    let nv = p.add_initializer(g, anchor, t);
    p.set_input(node, slot, Some(nv));
    moved_from.insert(v);
}
