//! Structured channel pruning of the main graph: `analysis` (dependency groups), `plan` (channels to drop,
//! plain data), `apply` (zero or remove).

pub mod analysis;
pub mod apply;
pub mod plan;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::passes::{Outcome, PassReport};

use super::{ChannelMode, Prune};
use plan::Plan;

/// Parameters and MACs of one group before and after. Parameters count every constant element the group's
/// channels index (producer and consumer weights, biases, norm parameters); in `zero` mode "after" counts the
/// non-pruned ones. MACs are those of the weighted nodes the group touches (weight size x output positions
/// from declared shapes; None when a shape is not declared); a node touching two groups counts in both.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupFigures {
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

fn total_params(m: &Model) -> Result<u64> {
    let mut n = 0;
    for (_, t) in m.graph.initializers() {
        n += t.numel()?;
    }
    for (_, node) in m.graph.nodes() {
        if node.op.is("Constant") {
            if let Some(t) = node.attrs.first().and_then(|a| a.t.as_ref()) {
                n += t.numel()?;
            }
        }
    }
    Ok(n)
}

pub(super) fn run(p: &Prune, model: &mut Model, report: &mut PassReport) -> Result<ChannelSummary> {
    let opset = model.opset("").unwrap_or(1);
    let a = analysis::analyse(&model.graph, opset)?;
    let plan = match &p.plan_in {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::invalid(format!("plan '{}'", path.display()), e.to_string()))?;
            let plan: Plan = serde_json::from_str(&text)
                .map_err(|e| Error::invalid(format!("plan '{}'", path.display()), e.to_string()))?;
            plan::check(&plan, &a, &path.display().to_string())?;
            plan
        }
        None => plan::make(p, &model.graph, &a)?,
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
        let at = gp.producers.join(",");
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
    let (figs, mb, ma) = apply::apply(p.mode, &mut model.graph, opset, &a, &plan, report)?;
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
