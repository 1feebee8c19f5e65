//! Outer-scope resolution for subgraphs: a chain of graphs from the innermost body out to the main graph, so a
//! pass working inside an If/Loop/Scan body reaches constants defined further out.

use std::borrow::Cow;

use crate::ir::graph::Graph;
use crate::ir::ids::ValueId;
use crate::ir::tensor::Tensor;
use crate::ir::value::ValueDef;

/// Graphs from the outermost (index 0) to the innermost (last).
#[derive(Clone, Debug, Default)]
pub struct ScopeChain<'a> {
    graphs: Vec<&'a Graph>,
}

impl<'a> ScopeChain<'a> {
    pub fn new(main: &'a Graph) -> ScopeChain<'a> {
        ScopeChain { graphs: vec![main] }
    }

    /// The chain one level deeper.
    pub fn enter(&self, body: &'a Graph) -> ScopeChain<'a> {
        let mut graphs = self.graphs.clone();
        graphs.push(body);
        ScopeChain { graphs }
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
