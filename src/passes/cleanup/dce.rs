//! Dead-code elimination: nodes none of whose outputs reach a graph output (directly, through other nodes or
//! through a subgraph that captures them) are erased, then initializers nothing reads. Subgraphs first, so a
//! branch that stops reading an outer value frees it in the enclosing graph.

use crate::error::Result;
use crate::ir::{Graph, Model, NodeId, Patch, UseSlot, ValueDef, ValueId};
use crate::passes::{Outcome, Pass, PassContext, PassReport};

crate::pass_options! {
    /// The pass takes no options.
    pub struct DceOptions {}
}

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(self.name());
        dce_graph(&mut model.graph, "", &mut report)?;
        Ok(report)
    }
}

fn dce_graph(g: &mut Graph, path: &str, report: &mut PassReport) -> Result<()> {
    // subgraphs first
    for id in g.node_ids().to_vec() {
        let owner = g.node(id).map(|n| n.name().to_string()).unwrap_or_default();
        let mut changed = false;
        for (k, sg) in g.node_subgraphs_mut(id).into_iter().enumerate() {
            let before = report.changes.changes.len();
            let sub_path = format!(
                "{path}{owner}/{}/",
                sg.name.clone().unwrap_or_else(|| k.to_string())
            );
            dce_graph(sg, &sub_path, report)?;
            changed |= report.changes.changes.len() != before;
        }
        if changed {
            let mut p = Patch::new("dce");
            p.refresh_captures(id);
            g.apply(p)?;
        }
    }

    // liveness from the graph outputs backwards
    let mut live_values = vec![false; g.values().count()];
    let mut live_nodes = std::collections::HashSet::new();
    let mut work: Vec<ValueId> = g.outputs().iter().map(|io| io.value).collect();
    while let Some(v) = work.pop() {
        if std::mem::replace(&mut live_values[v.index()], true) {
            continue;
        }
        if let ValueDef::Node(n, _) = g.value(v).def {
            if live_nodes.insert(n) {
                let node = g.node(n).expect("defined by a live node");
                work.extend(node.inputs.iter().flatten().copied());
                // values the node's subgraphs capture
                if node.has_subgraphs() {
                    for (cv, value) in g.values() {
                        if value
                            .uses
                            .iter()
                            .any(|u| u.node == n && u.slot == UseSlot::Capture)
                        {
                            work.push(cv);
                        }
                    }
                }
            }
        }
    }
    let dead: Vec<NodeId> = g
        .nodes()
        .filter(|(id, _)| !live_nodes.contains(id))
        .map(|(id, _)| id)
        .collect();
    let mut p = Patch::new("dce");
    for id in &dead {
        let n = g.node(*id).unwrap();
        report.remark(
            format!("{path}{}", n.name()),
            Outcome::Applied,
            format!("{} output is never used", n.op.display()),
        );
        p.erase_node(*id);
    }
    report.stat("nodes_removed", dead.len() as u64);
    let dead_set: std::collections::HashSet<NodeId> = dead.iter().copied().collect();
    let mut removed_inits = 0;
    for (v, _) in g.initializers() {
        let used = g.uses(v).iter().any(|u| !dead_set.contains(&u.node));
        let is_input = g.inputs().iter().any(|io| io.value == v);
        if !used && !is_input && !g.is_output(v) {
            report.remark(
                format!("{path}{}", g.value_name(v)),
                Outcome::Applied,
                "initializer is never read",
            );
            p.remove_initializer(v);
            removed_inits += 1;
        }
    }
    report.stat("initializers_removed", removed_inits);
    if !p.is_empty() {
        report.record(g.apply(p)?);
    }
    Ok(())
}
