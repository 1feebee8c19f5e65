//! Structured channel pruning: `analysis` (dependency groups), `plan` (channels to drop, plain data), `apply`
//! (zero or remove).
//!
//! Every graph of the main graph's tree is analysed on its own: the main graph and each If / Loop / Scan body
//! at any depth (function bodies are left alone). Groups never cross a graph boundary: a channel value an
//! enclosing graph passes into a body freezes there (named by the node owning the body), a body's outputs
//! freeze the groups reaching them (named by the node writing them), and inside a body, values read from an
//! enclosing graph are unknown operands and weights read from an enclosing graph are not edited (a weight is
//! edited only in the graph that defines it and, when another node or a body also reads it, as a new copy for
//! the pruned reader). One plan covers every graph (each group names its body); with `global` one ranking
//! spans them all.

pub mod analysis;
pub mod apply;
pub mod plan;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::{GraphPath, GraphRoot, Model};
use crate::passes::{Outcome, PassReport};

use super::{ChannelMode, Prune};
use plan::Plan;

/// Parameters and MACs of one group before and after. Parameters count every constant element the group's
/// channels index (producer and consumer weights, biases, norm parameters); in `zero` mode "after" counts the
/// non-pruned ones. MACs are those of the weighted nodes the group touches (weight size x output positions
/// from declared shapes; None when a shape is not declared); a node touching two groups counts in both.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupFigures {
    /// The body holding the group (empty for the main graph).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub graph: String,
    pub group: usize,
    pub channels_before: usize,
    pub channels_after: usize,
    pub params_before: u64,
    pub params_after: u64,
    pub macs_before: Option<u64>,
    pub macs_after: Option<u64>,
}

/// What channel pruning found and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChannelSummary {
    pub plan: Option<Plan>,
    pub groups: Vec<GroupFigures>,
    /// Every parameter of the main graph (initializers and Constant nodes) before and after.
    pub params_total_before: u64,
    pub params_total_after: u64,
    /// MACs of every weighted node the groups touch (None when a shape is not declared).
    pub macs_before: Option<u64>,
    pub macs_after: Option<u64>,
    pub applied: bool,
}

/// Every parameter of the main graph and its bodies (initializers and Constant nodes).
fn total_params(m: &Model) -> Result<u64> {
    let mut n = 0;
    let mut err = None;
    m.graph.walk(&mut |g| {
        for (_, t) in g.initializers() {
            match t.numel() {
                Ok(k) => n += k,
                Err(e) => err = err.take().or(Some(e)),
            }
        }
        for (_, node) in g.nodes() {
            if node.op.is("Constant") {
                if let Some(t) = node.attrs.first().and_then(|a| a.t.as_ref()) {
                    match t.numel() {
                        Ok(k) => n += k,
                        Err(e) => err = err.take().or(Some(e)),
                    }
                }
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// The analysis of every graph of the main graph's tree: (path, display, analysis), parents first.
fn analyse_all(model: &Model, opset: i64) -> Result<Vec<(GraphPath, String, analysis::Analysis)>> {
    let mut out = Vec::new();
    model.visit_graphs(&mut |site| {
        if site.root == GraphRoot::Main {
            let a = analysis::analyse(site.graph(), opset, &site.display)?;
            out.push((site.path.clone(), site.display.clone(), a));
        }
        Ok(())
    })?;
    Ok(out)
}

pub(super) fn run(p: &Prune, model: &mut Model, report: &mut PassReport) -> Result<ChannelSummary> {
    let opset = model.opset("").unwrap_or(1);
    let all = analyse_all(model, opset)?;
    let plan = {
        let mut scopes = Vec::with_capacity(all.len());
        for (path, display, a) in &all {
            let graph = model.graph.subgraph_at(path).ok_or_else(|| Error::Pass {
                pass: super::PASS.into(),
                msg: format!("graph '{display}' went missing"),
            })?;
            scopes.push(plan::Scope { display, graph, a });
        }
        match &p.plan_in {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::invalid(format!("plan '{}'", path.display()), e.to_string())
                })?;
                let plan: Plan = serde_json::from_str(&text).map_err(|e| {
                    Error::invalid(format!("plan '{}'", path.display()), e.to_string())
                })?;
                plan::check(&plan, &scopes, &path.display().to_string())?;
                plan
            }
            None => plan::make(p, &scopes)?,
        }
    };
    if let Some(path) = &p.plan_out {
        let text = serde_json::to_string_pretty(&plan).map_err(|e| Error::Pass {
            pass: super::PASS.into(),
            msg: e.to_string(),
        })?;
        std::fs::write(path, text + "\n")
            .map_err(|e| Error::invalid(format!("plan '{}'", path.display()), e.to_string()))?;
    }
    let mut pruned_channels = 0;
    for gp in &plan.groups {
        let at = gp
            .producers
            .iter()
            .map(|n| {
                if gp.graph.is_empty() {
                    n.clone()
                } else {
                    format!("{}/{n}", gp.graph)
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        match &gp.frozen {
            Some(why) => report.remark(
                at,
                Outcome::Skipped,
                format!("group {} ({} channels) frozen: {why}", gp.id, gp.channels),
            ),
            None => {
                pruned_channels += gp.pruned.len();
                let blocks = if gp.blocks > 1 {
                    format!(
                        " (the same {} in each of {} blocks)",
                        gp.pruned.len() / gp.blocks,
                        gp.blocks
                    )
                } else {
                    String::new()
                };
                report.remark(
                    at,
                    Outcome::Applied,
                    format!(
                        "group {}: {} of {} channels pruned{blocks}",
                        gp.id,
                        gp.pruned.len(),
                        gp.channels
                    ),
                )
            }
        }
    }
    report.stat("groups", plan.groups.len() as u64);
    report.stat(
        "groups_frozen",
        plan.groups.iter().filter(|g| g.frozen.is_some()).count() as u64,
    );
    report.stat("channels_pruned", pruned_channels as u64);
    let before = total_params(model)?;
    let mut summary = ChannelSummary {
        params_total_before: before,
        params_total_after: before,
        ..Default::default()
    };
    if p.dry_run {
        summary.plan = Some(plan);
        return Ok(summary);
    }
    let mut figs = Vec::new();
    let (mut mb, mut ma) = (Some(0u64), Some(0u64));
    let mode = p.mode;
    model.visit_graphs_mut(&mut |g, site| {
        if site.root != GraphRoot::Main {
            return Ok(());
        }
        let Some((_, _, a)) = all.iter().find(|(path, _, _)| *path == site.path) else {
            return Ok(());
        };
        let groups: Vec<&plan::GroupPlan> = plan
            .groups
            .iter()
            .filter(|gp| gp.graph == site.display)
            .collect();
        let (f, b, af) = apply::apply(mode, g, opset, a, &groups, &site.outer_names, report)?;
        figs.extend(f);
        mb = mb.zip(b).map(|(x, y)| x + y);
        ma = ma.zip(af).map(|(x, y)| x + y);
        Ok(())
    })?;
    summary.params_total_after = match p.mode {
        ChannelMode::Remove => total_params(model)?,
        ChannelMode::Zero => {
            before
                - figs
                    .iter()
                    .map(|f| f.params_before - f.params_after)
                    .sum::<u64>()
        }
    };
    summary.groups = figs;
    summary.macs_before = mb;
    summary.macs_after = ma;
    summary.applied = true;
    summary.plan = Some(plan);
    Ok(summary)
}
