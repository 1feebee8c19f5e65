//! Topological sort: reorder nodes so every node comes after its producers, moving as few as possible (stable:
//! ties keep the original order). A graph already in order is left untouched.

use crate::error::{Error, Result};
use crate::ir::order::stable_topo;
use crate::ir::{Model, Patch};
use crate::passes::{Pass, PassContext, PassReport};

crate::pass_options! {
    /// The pass takes no options.
    pub struct TopoSortOptions {}
}

pub struct TopoSort;

impl Pass for TopoSort {
    fn name(&self) -> &'static str {
        "topo-sort"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(self.name());
        model.graph.walk_mut(&mut |g| {
            let pos: std::collections::HashMap<_, _> = g
                .node_ids()
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, i as u64))
                .collect();
            let (order, cyclic) = stable_topo(g, g.node_ids(), &|id| pos[&id]);
            if !cyclic.is_empty() {
                return Err(Error::Pass {
                    pass: "topo-sort".into(),
                    msg: format!("graph '{}' has a cycle", g.name()),
                });
            }
            if order != g.node_ids() {
                let mut p = Patch::new("topo-sort");
                p.reorder(order);
                report.record(g.apply(p)?);
            }
            Ok(())
        })?;
        Ok(report)
    }
}
