//! Walk everything: the main graph, every subgraph at any depth and every function body (`model.functions`),
//! each with where it sits (a `GraphPath` of node + subgraph steps, and the text `if_0/then_branch`) and, for
//! the read-only walk, the scope chain that resolves names read from enclosing graphs.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::ir::graph::Graph;
use crate::ir::ids::NodeId;
use crate::ir::model::Model;
use crate::ir::scope::ScopeChain;
use crate::ir::value::ValueDef;

/// One step down: the `sub`-th subgraph held by `node` (attributes in order, a `graphs` list flattened).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathStep {
    pub node: NodeId,
    pub sub: usize,
}

/// Where a graph sits below a root graph (the main graph or a function body); empty for the root itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GraphPath(pub Vec<PathStep>);

impl GraphPath {
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn child(&self, node: NodeId, sub: usize) -> GraphPath {
        let mut steps = self.0.clone();
        steps.push(PathStep { node, sub });
        GraphPath(steps)
    }
}

/// The root a walk is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GraphRoot {
    Main,
    /// `model.functions[i]`'s body.
    Function(usize),
}

/// A graph met by `Model::visit_graphs`.
#[derive(Clone, Debug)]
pub struct Site<'a> {
    pub root: GraphRoot,
    pub path: GraphPath,
    /// `if_0/then_branch/loop_3/body`: owner node names and subgraph attribute names; empty for the main graph,
    /// `function <domain>::<name>` at the start for a function body.
    pub display: String,
    /// From the root graph (index 0) to this graph (last).
    pub scope: ScopeChain<'a>,
}

impl<'a> Site<'a> {
    pub fn graph(&self) -> &'a Graph {
        self.scope.innermost()
    }

    /// The text a remark uses for a node or value of this graph: `if_0/then_branch/conv`.
    pub fn at(&self, local: &str) -> String {
        if self.display.is_empty() {
            local.to_string()
        } else {
            format!("{}/{local}", self.display)
        }
    }
}

/// A graph met by `Model::visit_graphs_mut` (no scope chain: the enclosing graphs are borrowed mutably).
#[derive(Clone, Debug)]
pub struct SiteMut {
    pub root: GraphRoot,
    pub path: GraphPath,
    pub display: String,
    /// Every name defined (not merely read) in the enclosing graphs: a fresh name in this graph must avoid them.
    pub outer_names: BTreeSet<String>,
}

impl SiteMut {
    pub fn at(&self, local: &str) -> String {
        if self.display.is_empty() {
            local.to_string()
        } else {
            format!("{}/{local}", self.display)
        }
    }
}

/// The name of the `sub`-th subgraph of a node: the attribute name, with `[k]` for a `graphs` list.
fn sub_names(g: &Graph, node: NodeId) -> Vec<String> {
    let Some(n) = g.node(node) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in &n.attrs {
        if a.g.is_some() {
            out.push(a.name.clone());
        }
        for k in 0..a.graphs.len() {
            out.push(format!("{}[{k}]", a.name));
        }
    }
    out
}

fn join(display: &str, node: &str, sub: &str) -> String {
    if display.is_empty() {
        format!("{node}/{sub}")
    } else {
        format!("{display}/{node}/{sub}")
    }
}

fn function_display(m: &Model, i: usize) -> String {
    let f = &m.functions[i];
    let domain = f.domain.as_deref().unwrap_or("");
    let name = f.name.as_deref().unwrap_or("");
    if domain.is_empty() {
        format!("function {name}")
    } else {
        format!("function {domain}::{name}")
    }
}

/// Names a graph defines itself (everything but references to enclosing graphs).
fn defined_names(g: &Graph) -> impl Iterator<Item = &str> {
    g.values()
        .filter(|(_, v)| !matches!(v.def, ValueDef::Outer | ValueDef::None) && !v.name.is_empty())
        .map(|(_, v)| v.name.as_str())
}

fn visit<'a>(site: Site<'a>, f: &mut dyn FnMut(&Site<'a>) -> Result<()>) -> Result<()> {
    f(&site)?;
    let g = site.graph();
    for (id, node) in g.nodes() {
        let names = sub_names(g, id);
        for (k, sg) in node.attrs.iter().flat_map(|a| a.subgraphs()).enumerate() {
            let child = Site {
                root: site.root,
                path: site.path.child(id, k),
                display: join(&site.display, node.name(), &names[k]),
                scope: site
                    .scope
                    .enter_at(sg, Some(crate::ir::walk::PathStep { node: id, sub: k })),
            };
            visit(child, f)?;
        }
    }
    Ok(())
}

fn visit_mut(
    g: &mut Graph,
    site: &SiteMut,
    f: &mut dyn FnMut(&mut Graph, &SiteMut) -> Result<()>,
) -> Result<()> {
    f(g, site)?;
    let mut outer = site.outer_names.clone();
    outer.extend(defined_names(g).map(str::to_string));
    for id in g.node_ids().to_vec() {
        let names = sub_names(g, id);
        let owner = g.node(id).map(|n| n.name().to_string()).unwrap_or_default();
        let before: Vec<Vec<String>> = g
            .node_subgraphs_mut(id)
            .iter()
            .map(|sg| sg.free_variables())
            .collect();
        for (k, sg) in g.node_subgraphs_mut(id).into_iter().enumerate() {
            let child = SiteMut {
                root: site.root,
                path: site.path.child(id, k),
                display: join(&site.display, &owner, &names[k]),
                outer_names: outer.clone(),
            };
            visit_mut(sg, &child, f)?;
        }
        let after: Vec<Vec<String>> = g
            .node_subgraphs_mut(id)
            .iter()
            .map(|sg| sg.free_variables())
            .collect();
        if before != after {
            // a body now reads other outer values: keep the owner's capture uses right
            let mut p = crate::ir::Patch::new("walk");
            p.refresh_captures(id);
            g.apply(p)?;
        }
    }
    Ok(())
}

impl Model {
    /// Visit the main graph, every subgraph at any depth, then every function body and its subgraphs; parents
    /// before children, nodes in graph order.
    pub fn visit_graphs<'a>(&'a self, f: &mut dyn FnMut(&Site<'a>) -> Result<()>) -> Result<()> {
        visit(
            Site {
                root: GraphRoot::Main,
                path: GraphPath::default(),
                display: String::new(),
                scope: ScopeChain::new(&self.graph),
            },
            f,
        )?;
        for (i, func) in self.functions.iter().enumerate() {
            visit(
                Site {
                    root: GraphRoot::Function(i),
                    path: GraphPath::default(),
                    display: function_display(self, i),
                    scope: ScopeChain::new(&func.body),
                },
                f,
            )?;
        }
        Ok(())
    }

    /// Like `visit_graphs`, mutably. After a node's subgraphs were visited, its capture uses are refreshed when
    /// the values those subgraphs read from outside changed.
    pub fn visit_graphs_mut(
        &mut self,
        f: &mut dyn FnMut(&mut Graph, &SiteMut) -> Result<()>,
    ) -> Result<()> {
        let main = SiteMut {
            root: GraphRoot::Main,
            path: GraphPath::default(),
            display: String::new(),
            outer_names: BTreeSet::new(),
        };
        visit_mut(&mut self.graph, &main, f)?;
        for i in 0..self.functions.len() {
            let site = SiteMut {
                root: GraphRoot::Function(i),
                path: GraphPath::default(),
                display: function_display(self, i),
                outer_names: BTreeSet::new(),
            };
            visit_mut(&mut self.functions[i].body, &site, f)?;
        }
        Ok(())
    }

    /// Every graph of the model (main graph, subgraphs, function bodies), depth first.
    pub fn walk(&self, f: &mut dyn FnMut(&Graph)) {
        self.graph.walk(f);
        for func in &self.functions {
            func.body.walk(f);
        }
    }

    /// Every graph of the model, mutably, depth first.
    pub fn walk_mut(&mut self, f: &mut dyn FnMut(&mut Graph) -> Result<()>) -> Result<()> {
        self.graph.walk_mut(f)?;
        for func in &mut self.functions {
            func.body.walk_mut(f)?;
        }
        Ok(())
    }

    /// Verify the main graph and every function body (each with its subgraphs); an error in a function body
    /// names the function.
    pub fn verify(&self) -> Result<()> {
        self.graph.verify()?;
        for i in 0..self.functions.len() {
            self.functions[i].body.verify().map_err(|e| match e {
                Error::Verify { graph, msg } => Error::Verify {
                    graph: format!("{} / {graph}", function_display(self, i)),
                    msg,
                },
                e => e,
            })?;
        }
        Ok(())
    }
}

impl Graph {
    /// The subgraph at `path` below this graph (this graph for the empty path).
    pub fn subgraph_at(&self, path: &GraphPath) -> Option<&Graph> {
        let mut g = self;
        for step in &path.0 {
            g = g
                .node(step.node)?
                .attrs
                .iter()
                .flat_map(|a| a.subgraphs())
                .nth(step.sub)?;
        }
        Some(g)
    }

    /// The subgraph at `path`, mutably.
    pub fn subgraph_at_mut(&mut self, path: &GraphPath) -> Option<&mut Graph> {
        let mut g = self;
        for step in &path.0 {
            g = g.node_subgraphs_mut(step.node).into_iter().nth(step.sub)?;
        }
        Some(g)
    }

    /// Apply a patch to the subgraph at `path` (this graph for the empty path), then refresh the capture uses of
    /// every node on the way down, so the enclosing graphs know which of their values the bodies read.
    pub fn apply_at(
        &mut self,
        path: &GraphPath,
        patch: crate::ir::Patch,
    ) -> Result<crate::ir::ChangeLog> {
        let Some((first, rest)) = path.0.split_first() else {
            return self.apply(patch);
        };
        let graph_name = self.name().to_string();
        let missing = || Error::Pass {
            pass: "apply".into(),
            msg: format!(
                "graph '{graph_name}' has no subgraph {} of node {}",
                first.sub, first.node
            ),
        };
        let sub = self
            .node_subgraphs_mut(first.node)
            .into_iter()
            .nth(first.sub)
            .ok_or_else(missing)?;
        let log = sub.apply_at(&GraphPath(rest.to_vec()), patch)?;
        let mut p = crate::ir::Patch::new("apply");
        p.refresh_captures(first.node);
        self.apply(p)?;
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use crate::io;

    #[test]
    fn visits_subgraphs_with_paths_and_scopes() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/if_subgraph.onnx");
        let m = io::load(&path).unwrap();
        let mut seen = Vec::new();
        m.visit_graphs(&mut |s| {
            assert_eq!(
                m.graph.subgraph_at(&s.path).map(|g| g as *const _),
                Some(s.graph() as *const _)
            );
            seen.push((s.display.clone(), s.scope.depth()));
            Ok(())
        })
        .unwrap();
        // attribute order within a node, nodes in graph order, parents before children, any depth
        let want = [
            ("", 1),
            ("branch_if/else_branch", 2),
            ("branch_if/then_branch", 2),
            ("accumulate_loop/body", 2),
            ("accumulate_loop/body/nested_if/else_branch", 3),
            ("accumulate_loop/body/nested_if/then_branch", 3),
        ];
        let seen: Vec<(&str, usize)> = seen.iter().map(|(s, d)| (s.as_str(), *d)).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn functions_are_walked_and_verified() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rich_metadata.onnx");
        let mut m = io::load(&path).unwrap();
        let mut seen = Vec::new();
        m.visit_graphs(&mut |s| {
            seen.push((s.display.clone(), s.root));
            Ok(())
        })
        .unwrap();
        assert!(seen.contains(&(
            "function com.example::ScaledTanh".to_string(),
            super::GraphRoot::Function(0)
        )));
        let mut n = 0;
        m.walk(&mut |_| n += 1);
        assert_eq!(n, seen.len());
        m.verify().unwrap();
        // break the function body's use-def links: the main graph still verifies, the model does not
        let body = &mut m.functions[0].body;
        let v = body.nodes().find_map(|(_, n)| n.input(0)).unwrap();
        body.value_mut(v).uses.clear();
        m.graph.verify().unwrap();
        let e = m.verify().unwrap_err().to_string();
        assert!(e.contains("function com.example::ScaledTanh"), "{e}");
        let mut visited = Vec::new();
        m.visit_graphs_mut(&mut |_, site| {
            visited.push(site.display.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            visited,
            seen.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()
        );
    }
}
