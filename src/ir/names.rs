//! Deterministic fresh names: `<anchor>/<pass>_<k>`, the smallest `k` free in the graph and in the patch.

use std::collections::HashSet;

use crate::ir::graph::Graph;

/// Hands out names that are unused in a graph (and its subgraphs' outer scope) and in the names already
/// reserved by the same patch.
#[derive(Clone, Debug, Default)]
pub struct NameAuthority {
    reserved: HashSet<String>,
    /// Node names of the graph, collected on first use (values have the graph's own index).
    node_names: Option<HashSet<String>>,
}

impl NameAuthority {
    /// `anchor/pass_k` with the smallest k >= 0 not in use. Same graph + same calls = same names.
    pub fn fresh(&mut self, graph: &Graph, anchor: &str, pass: &str) -> String {
        let anchor = if anchor.is_empty() {
            graph.name()
        } else {
            anchor
        };
        for k in 0u64.. {
            let name = format!("{anchor}/{pass}_{k}");
            if self.claim(graph, &name) {
                return name;
            }
        }
        unreachable!("u64 names exhausted")
    }

    /// `base` itself when free, else `base_k`.
    pub fn fresh_exact(&mut self, graph: &Graph, base: &str) -> String {
        if self.claim(graph, base) {
            return base.to_string();
        }
        for k in 1u64.. {
            let name = format!("{base}_{k}");
            if self.claim(graph, &name) {
                return name;
            }
        }
        unreachable!("u64 names exhausted")
    }

    fn claim(&mut self, graph: &Graph, name: &str) -> bool {
        let node_names = self
            .node_names
            .get_or_insert_with(|| graph.nodes().filter_map(|(_, n)| n.name.clone()).collect());
        let taken = graph.value_by_name(name).is_some()
            || node_names.contains(name)
            || self.reserved.contains(name);
        if !taken {
            self.reserved.insert(name.to_string());
        }
        !taken
    }
}
