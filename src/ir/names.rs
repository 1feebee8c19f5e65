//! Deterministic fresh names: `<anchor>/<pass>_<k>` or `<base>` / `<base>_<k>`, the smallest `k` free in the
//! graph, in the subgraphs below it, in the enclosing graphs the patch was told about and in the patch itself.
//! A fresh name therefore never shadows (or is shadowed by) a name of another scope, which onnx.checker rejects.

use std::collections::{BTreeSet, HashSet};

use crate::ir::graph::Graph;
use crate::ir::value::ValueDef;

/// Hands out names that are unused in a graph, in every subgraph below it, in the enclosing scopes given with
/// `with_outer` and in the names already reserved by the same patch.
#[derive(Clone, Debug, Default)]
pub struct NameAuthority {
    reserved: HashSet<String>,
    /// Names defined in the enclosing graphs.
    outer: BTreeSet<String>,
    /// Node names of the graph and value and node names of every subgraph below it, collected on first use
    /// (values of the graph itself have the graph's own index).
    local_names: Option<HashSet<String>>,
}

/// Node names of `g` and every value and node name of the subgraphs below it.
fn collect_names(g: &Graph, top: bool, out: &mut HashSet<String>) {
    if !top {
        for (_, v) in g.values() {
            if !v.name.is_empty() && !matches!(v.def, ValueDef::None) {
                out.insert(v.name.clone());
            }
        }
    }
    for (_, n) in g.nodes() {
        if let Some(name) = &n.name {
            out.insert(name.clone());
        }
        for sg in n.attrs.iter().flat_map(|a| a.subgraphs()) {
            collect_names(sg, false, out);
        }
    }
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

    /// Also avoid these names (the values defined in the enclosing graphs).
    pub fn with_outer(&mut self, outer: BTreeSet<String>) {
        self.outer.extend(outer);
    }

    fn claim(&mut self, graph: &Graph, name: &str) -> bool {
        let local_names = self.local_names.get_or_insert_with(|| {
            let mut out = HashSet::new();
            collect_names(graph, true, &mut out);
            out
        });
        let taken = graph.value_by_name(name).is_some()
            || local_names.contains(name)
            || self.outer.contains(name)
            || self.reserved.contains(name);
        if !taken {
            self.reserved.insert(name.to_string());
        }
        !taken
    }
}
