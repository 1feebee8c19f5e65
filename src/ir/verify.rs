//! Graph invariants, checked after every pass: use-def agrees both ways, values are defined once, names are
//! unique, the node order is topological (so acyclic), graph outputs are defined, and known ops have a legal
//! number of inputs and outputs, and each node's capture uses are exactly the values its subgraphs read from
//! outside. Subgraphs are verified too.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::ir::graph::Graph;
use crate::ir::ids::ValueId;
use crate::ir::order::is_topological;
use crate::ir::value::{Use, UseSlot, ValueDef};

impl Graph {
    /// Check every invariant of this graph and its subgraphs; the error names the graph, node or value.
    pub fn verify(&self) -> Result<()> {
        let bad = |msg: String| Error::Verify {
            graph: self.name().to_string(),
            msg,
        };
        let mut node_names = HashSet::new();
        let mut captures = Vec::new();
        let mut seen_ids = HashSet::new();
        for id in &self.order {
            if !seen_ids.insert(*id) {
                return Err(bad(format!("node {id} appears twice in the order")));
            }
            let Some(node) = self.node(*id) else {
                return Err(bad(format!("order lists erased node {id}")));
            };
            if let Some(name) = node.name.as_deref().filter(|n| !n.is_empty()) {
                if !node_names.insert(name) {
                    return Err(bad(format!("node name '{name}' is used twice")));
                }
            }
            for (slot, v) in node.inputs.iter().enumerate() {
                if let Some(v) = v {
                    let u = Use {
                        node: *id,
                        slot: UseSlot::Input(slot as u32),
                    };
                    if self.uses(*v).binary_search(&u).is_err() {
                        return Err(bad(format!(
                            "node '{}' reads '{}' but the value does not list the use",
                            node.name(),
                            self.value_name(*v)
                        )));
                    }
                    if self.value(*v).def == ValueDef::None {
                        return Err(bad(format!(
                            "node '{}' reads '{}' which nothing defines",
                            node.name(),
                            self.value_name(*v)
                        )));
                    }
                }
            }
            for (slot, v) in node.outputs.iter().enumerate() {
                if let Some(v) = v {
                    if self.value(*v).def != ValueDef::Node(*id, slot as u32) {
                        return Err(bad(format!(
                            "node '{}' writes '{}' but the value says it comes from elsewhere",
                            node.name(),
                            self.value_name(*v)
                        )));
                    }
                }
            }
            if node.has_subgraphs() {
                // the values this node's subgraphs read from outside are exactly its capture uses
                let mut wanted: Vec<&str> = Vec::new();
                let free: Vec<String> = node
                    .attrs
                    .iter()
                    .flat_map(|a| a.subgraphs())
                    .flat_map(|g| g.free_variables())
                    .collect();
                wanted.extend(free.iter().map(|s| s.as_str()));
                wanted.sort();
                wanted.dedup();
                for name in &wanted {
                    let listed = self.value_by_name(name).is_some_and(|v| {
                        self.uses(v)
                            .binary_search(&Use {
                                node: *id,
                                slot: UseSlot::Capture,
                            })
                            .is_ok()
                    });
                    if !listed {
                        return Err(bad(format!(
                            "a subgraph of node '{}' reads '{name}' but the value does not list the capture",
                            node.name()
                        )));
                    }
                }
                captures.push((*id, wanted.len()));
            }
            if let Some(msg) = crate::ir::ops::check_arity(node) {
                return Err(bad(format!(
                    "node '{}' ({}): {msg}",
                    node.name(),
                    node.op.display()
                )));
            }
        }
        for (vid, value) in self.values() {
            for u in &value.uses {
                let Some(node) = self.node(u.node) else {
                    return Err(bad(format!(
                        "'{}' lists a use by erased node {}",
                        value.name, u.node
                    )));
                };
                let ok = match u.slot {
                    UseSlot::Input(s) => {
                        node.inputs.get(s as usize).copied().flatten() == Some(vid)
                    }
                    UseSlot::Capture => node.has_subgraphs(),
                };
                if !ok {
                    return Err(bad(format!(
                        "'{}' lists a use by node '{}' that does not read it",
                        value.name,
                        node.name()
                    )));
                }
            }
            if let ValueDef::Node(n, slot) = value.def {
                let writes = self
                    .node(n)
                    .and_then(|node| node.outputs.get(slot as usize).copied().flatten());
                if writes != Some(vid) {
                    return Err(bad(format!(
                        "'{}' claims a producer that does not write it",
                        value.name
                    )));
                }
            }
            if value.def == ValueDef::Initializer && value.init.is_none() {
                return Err(bad(format!("initializer '{}' has no tensor", value.name)));
            }
            if !value.name.is_empty()
                && value.def != ValueDef::None
                && self.value_by_name(&value.name) != Some(vid)
            {
                return Err(bad(format!("value name '{}' is defined twice", value.name)));
            }
        }
        for (id, wanted) in captures {
            let listed = self
                .values
                .iter()
                .filter(|v| {
                    v.uses
                        .binary_search(&Use {
                            node: id,
                            slot: UseSlot::Capture,
                        })
                        .is_ok()
                })
                .count();
            if listed != wanted {
                return Err(bad(format!(
                    "node '{}' lists {listed} captured values but its subgraphs read {wanted}",
                    self.node(id).map(|n| n.name()).unwrap_or("")
                )));
            }
        }
        for io in &self.outputs {
            if self.value(io.value).def == ValueDef::None {
                return Err(bad(format!(
                    "graph output '{}' is not defined",
                    self.value_name(io.value)
                )));
            }
        }
        let mut init_seen: HashSet<ValueId> = HashSet::new();
        for v in &self.initializers {
            if !init_seen.insert(*v) {
                return Err(bad(format!(
                    "initializer '{}' is listed twice",
                    self.value_name(*v)
                )));
            }
        }
        if !is_topological(self, &self.order) {
            let (_, cyclic) = crate::ir::order::stable_topo(self, &self.order, &|id| id.0 as u64);
            if let Some(first) = cyclic.first() {
                let names: Vec<&str> = cyclic
                    .iter()
                    .filter_map(|id| self.node(*id))
                    .map(|n| n.name())
                    .collect();
                let _ = first;
                return Err(bad(format!("nodes form a cycle: {}", names.join(", "))));
            }
            return Err(bad(
                "node order is not topological (run the topo-sort pass)".into(),
            ));
        }
        for (_, g) in self.subgraphs() {
            g.verify()?;
        }
        Ok(())
    }
}
