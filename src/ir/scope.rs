//! Outer-scope resolution for subgraphs: a chain of graphs from the innermost body out to the main graph, so a
//! pass working inside an If/Loop/Scan body reaches constants defined further out.

use std::borrow::Cow;

use crate::ir::graph::Graph;
use crate::ir::ids::ValueId;
use crate::ir::tensor::Tensor;
use crate::ir::value::ValueDef;
use crate::ir::walk::{GraphPath, PathStep};
use crate::ir::weight::WeightRef;

/// Graphs from the outermost (index 0) to the innermost (last), with the step from each graph to the next when
/// known (so a weight found in the chain can say where it lives).
#[derive(Clone, Debug, Default)]
pub struct ScopeChain<'a> {
    graphs: Vec<&'a Graph>,
    /// `steps[i]` leads from `graphs[i]` to `graphs[i + 1]`.
    steps: Vec<Option<PathStep>>,
}

impl<'a> ScopeChain<'a> {
    pub fn new(main: &'a Graph) -> ScopeChain<'a> {
        ScopeChain {
            graphs: vec![main],
            steps: Vec::new(),
        }
    }

    /// The chain one level deeper. `body` is found among the innermost graph's subgraphs to record the step;
    /// a graph that is not one of them still resolves names, but weights found through it have no path.
    pub fn enter(&self, body: &'a Graph) -> ScopeChain<'a> {
        let inner = self.innermost();
        let step = inner.nodes().find_map(|(id, n)| {
            n.attrs
                .iter()
                .flat_map(|a| a.subgraphs())
                .position(|g| std::ptr::eq(g, body))
                .map(|sub| PathStep { node: id, sub })
        });
        self.enter_at(body, step)
    }

    /// The chain one level deeper through a known step.
    pub fn enter_at(&self, body: &'a Graph, step: Option<PathStep>) -> ScopeChain<'a> {
        let mut graphs = self.graphs.clone();
        graphs.push(body);
        let mut steps = self.steps.clone();
        steps.push(step);
        ScopeChain { graphs, steps }
    }

    /// Number of graphs in the chain (1 for a root graph alone).
    pub fn depth(&self) -> usize {
        self.graphs.len()
    }

    /// The graphs, outermost first.
    pub fn graphs(&self) -> &[&'a Graph] {
        &self.graphs
    }

    /// The path from the root of the chain to its `level`-th graph, when every step is known.
    pub fn path_to(&self, level: usize) -> Option<GraphPath> {
        let steps: Option<Vec<PathStep>> = self.steps.iter().take(level).copied().collect();
        steps.map(GraphPath)
    }

    /// Every name defined (not merely read) in the enclosing graphs of the innermost one.
    pub fn outer_names(&self) -> std::collections::BTreeSet<String> {
        let n = self.graphs.len();
        self.graphs[..n - 1]
            .iter()
            .flat_map(|g| (*g).values())
            .filter(|(_, v)| {
                !matches!(v.def, ValueDef::Outer | ValueDef::None) && !v.name.is_empty()
            })
            .map(|(_, v)| v.name.clone())
            .collect()
    }

    /// Where the constant behind `v` of the innermost graph lives, wherever in the chain it is defined: the path
    /// from the chain's root to the defining graph, the value there and its storage.
    pub fn weight(&self, v: ValueId) -> Option<WeightRef> {
        let inner = self.innermost();
        let name = inner.value_name(v);
        for (level, g) in self.graphs.iter().enumerate().rev() {
            if let Some(id) = g.value_by_name(name) {
                if g.value(id).def != ValueDef::Outer {
                    let mut w = g.weight(id)?;
                    w.path = self.path_to(level)?;
                    return Some(w);
                }
            }
        }
        None
    }

    pub fn innermost(&self) -> &'a Graph {
        self.graphs
            .last()
            .expect("a chain holds at least one graph")
    }

    /// Where a name of the innermost graph is defined: walks outwards through `Outer` values.
    pub fn resolve(&self, name: &str) -> Option<(&'a Graph, ValueId)> {
        for g in self.graphs.iter().rev() {
            if let Some(v) = g.value_by_name(name) {
                if g.value(v).def != ValueDef::Outer {
                    return Some((g, v));
                }
            }
        }
        None
    }

    /// The constant behind `v` of the innermost graph, wherever in the chain it is defined.
    pub fn constant(&self, v: ValueId) -> Option<Cow<'a, Tensor>> {
        let inner = self.innermost();
        let (g, id) = self.resolve(inner.value_name(v))?;
        g.constant(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io;

    #[test]
    fn branch_reaches_outer_initializer() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/if_subgraph.onnx");
        let m = io::load(&path).unwrap();
        let (_, then) = m
            .graph
            .subgraphs()
            .find(|(_, g)| g.name() == "then_branch")
            .unwrap();
        let chain = ScopeChain::new(&m.graph).enter(then);
        let v = then.value_by_name("outer_scale").unwrap();
        assert!(
            then.constant(v).is_none(),
            "not a constant of the branch itself"
        );
        let t = chain.constant(v).expect("resolved through the scope chain");
        assert_eq!(t.dims, vec![3]);
        // graph inputs are not constants, even when read from a branch
        let x = then.value_by_name("x").unwrap();
        assert!(chain.constant(x).is_none());
    }
}
