//! `eliminate-identity`: `Identity` nodes and inference-mode `Dropout` (opset 7+, mask output unused,
//! `training_mode` absent or a constant false) are removed and their readers read the input directly.
//! A node whose output is a graph output stays (removing it would rename the output), with a remark.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::ir::{Graph, Model, NodeId, Patch, UseSlot};
use crate::passes::fold::weights::{self, OuterConstants};
use crate::passes::{Outcome, Pass, PassContext, PassReport};

const PASS: &str = "eliminate-identity";

crate::pass_options! {
    /// The pass takes no options.
    pub struct EliminateIdentityOptions {}
}

pub struct EliminateIdentity;

impl Pass for EliminateIdentity {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(PASS);
        let opset = model.opset("").unwrap_or(1);
        let mut freed = BTreeSet::new();
        eliminate(
            &mut model.graph,
            &OuterConstants::default(),
            "",
            opset,
            &mut report,
            &mut freed,
        )?;
        report.stats.entry("nodes_removed".into()).or_insert(0);
        Ok(report)
    }
}

fn eliminate(
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
         freed: &mut BTreeSet<String>| { eliminate(g, outer, path, opset, report, freed) };
    super::for_each_body(g, outer, path, PASS, report, freed, &mut recurse)?;
    for id in g.node_ids().to_vec() {
        let Some(node) = g.node(id) else { continue };
        if !(node.op.is("Identity") || node.op.is("Dropout")) {
            continue;
        }
        let at = format!("{path}{}", node.name());
        match removable(g, outer, id, opset) {
            Ok(()) => {
                let (x, y) = (node.input(0).unwrap(), node.output(0).unwrap());
                let op = node.op.display();
                let mut p = Patch::new(PASS);
                p.replace_all_uses(y, x.into());
                p.erase_node(id);
                // a training_mode / ratio constant only this node read goes with it
                let extra: Vec<_> = node.inputs.iter().skip(1).flatten().copied().collect();
                weights::drop_readers_of(g, &mut p, id, &extra, freed);
                report.record(g.apply(p)?);
                report.stat("nodes_removed", 1);
                report.remark(at, Outcome::Applied, format!("{op} removed"));
            }
            Err(why) => report.remark(at, Outcome::Skipped, why),
        }
    }
    Ok(())
}

fn removable(
    g: &Graph,
    outer: &OuterConstants,
    id: NodeId,
    opset: i64,
) -> std::result::Result<(), String> {
    let node = g.node(id).expect("live node");
    let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
        return Err("no input or output".into());
    };
    if g.is_output(y) {
        return Err(format!(
            "its output '{}' is a graph output (removing it would rename the output)",
            g.value_name(y)
        ));
    }
    if g.uses(y).iter().any(|u| u.slot == UseSlot::Capture) {
        return Err(format!(
            "its output '{}' is read inside a subgraph",
            g.value_name(y)
        ));
    }
    if node.op.is("Dropout") {
        if opset < 7 {
            return Err(format!(
                "Dropout at opset {opset} (< 7) has is_test semantics"
            ));
        }
        if node
            .outputs
            .get(1)
            .copied()
            .flatten()
            .is_some_and(|m| !g.uses(m).is_empty() || g.is_output(m))
        {
            return Err("its mask output is used".into());
        }
        if let Some(tm) = node.input(2) {
            let off = weights::read(g, outer, tm)
                .and_then(|t| t.to_i64_vec().ok())
                .is_some_and(|v| v.iter().all(|b| *b == 0));
            if !off {
                return Err("training_mode is not a constant false".into());
            }
        }
    }
    let _ = x;
    Ok(())
}
