//! The graph: arenas of nodes and values with two-way use-def links, the node order, graph inputs/outputs and
//! initializers. Reading is free; changing goes through `Patch` + `Graph::apply` (see `rewrite.rs`). The only
//! other mutators are crate-private constructors used by the importer and the builder.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::ir::ids::{NodeId, ValueId};
use crate::ir::node::Node;
use crate::ir::tensor::{SparseTensor, Tensor};
use crate::ir::value::{Use, UseSlot, Value, ValueDef, ValueInfo};
use crate::ir::MetaEntry;

/// A graph input, output or value_info entry: the value plus the `ValueInfoProto` fields written for it.
#[derive(Clone, Debug)]
pub struct GraphIo {
    pub value: ValueId,
    pub info: ValueInfo,
}

/// `TensorAnnotation` (quantization parameters attached by name), kept as data.
#[derive(Clone, Debug)]
pub struct TensorAnnotation {
    pub tensor_name: Option<String>,
    pub quant_parameter_tensor_names: Vec<MetaEntry>,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: Option<String>,
    pub doc_string: Option<String>,
    pub metadata_props: Vec<MetaEntry>,
    pub sparse_initializers: Vec<SparseTensor>,
    pub quantization_annotation: Vec<TensorAnnotation>,
    pub(crate) nodes: Vec<Option<Node>>,
    pub(crate) order: Vec<NodeId>,
    pub(crate) values: Vec<Value>,
    pub(crate) index: HashMap<String, ValueId>,
    pub(crate) inputs: Vec<GraphIo>,
    pub(crate) outputs: Vec<GraphIo>,
    pub(crate) value_info: Vec<GraphIo>,
    pub(crate) initializers: Vec<ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    // ---- reading -------------------------------------------------------------------------------------------

    /// Live nodes in graph order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.order
            .iter()
            .filter_map(move |id| self.nodes[id.index()].as_ref().map(|n| (*id, n)))
    }

    pub fn node_ids(&self) -> &[NodeId] {
        &self.order
    }

    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    /// The node, or `None` for an erased one (tombstone) or an id from another graph.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index()).and_then(|n| n.as_ref())
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    pub fn value_name(&self, id: ValueId) -> &str {
        &self.values[id.index()].name
    }

    /// Size of the value arena (ids below it are valid; erased values stay as unnamed tombstones).
    pub fn value_count(&self) -> usize {
        self.values.len()
    }

    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.index.get(name).copied()
    }

    pub fn values(&self) -> impl Iterator<Item = (ValueId, &Value)> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (ValueId(i as u32), v))
    }

    /// The node that produces `v`, with the output slot.
    pub fn producer(&self, v: ValueId) -> Option<(NodeId, &Node)> {
        match self.values[v.index()].def {
            ValueDef::Node(n, _) => self.node(n).map(|node| (n, node)),
            _ => None,
        }
    }

    pub fn uses(&self, v: ValueId) -> &[Use] {
        &self.values[v.index()].uses
    }

    /// Nodes that read `v` as an input (not subgraph captures), in id order, each once.
    pub fn consumers(&self, v: ValueId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .uses(v)
            .iter()
            .filter(|u| matches!(u.slot, UseSlot::Input(_)))
            .map(|u| u.node)
            .collect();
        out.dedup();
        out
    }

    pub fn inputs(&self) -> &[GraphIo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[GraphIo] {
        &self.outputs
    }

    pub fn value_info(&self) -> &[GraphIo] {
        &self.value_info
    }

    /// Graph inputs that are not initializers: what a caller must feed.
    pub fn runtime_inputs(&self) -> impl Iterator<Item = &GraphIo> {
        self.inputs
            .iter()
            .filter(|io| self.values[io.value.index()].def == ValueDef::Input)
    }

    pub fn is_output(&self, v: ValueId) -> bool {
        self.outputs.iter().any(|o| o.value == v)
    }

    /// Initializer values in file order.
    /// The type a graph input, output or `value_info` entry declares for `v` (the first that names it).
    pub fn declared_type(&self, v: ValueId) -> Option<&crate::ir::value::TypeInfo> {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .chain(&self.value_info)
            .find(|io| io.value == v)
            .and_then(|io| io.info.ty.as_ref())
    }

    pub fn initializers(&self) -> impl Iterator<Item = (ValueId, &Tensor)> {
        self.initializers
            .iter()
            .filter_map(move |v| self.values[v.index()].init.as_ref().map(|t| (*v, t)))
    }

    pub fn initializer_count(&self) -> usize {
        self.initializers.len()
    }

    /// The constant content of `v`: an initializer (that is not overridable as a graph input), a sparse
    /// initializer (densified) or the output of a `Constant` node, whatever form its value attribute takes.
    /// Outer-scope values resolve through `ScopeChain`; `weight` + `read_weight` say where it lives and why not.
    pub fn constant(&self, v: ValueId) -> Option<Cow<'_, Tensor>> {
        let w = self.weight(v)?;
        self.read_weight(&w).ok()
    }

    /// Every subgraph directly held by this graph's nodes, in node order, with the owning node.
    pub fn subgraphs(&self) -> impl Iterator<Item = (NodeId, &Graph)> {
        self.nodes().flat_map(|(id, n)| {
            n.attrs
                .iter()
                .flat_map(|a| a.subgraphs())
                .map(move |g| (id, g))
        })
    }

    /// This graph and every nested subgraph, depth first.
    pub fn walk(&self, f: &mut dyn FnMut(&Graph)) {
        f(self);
        for (_, g) in self.subgraphs() {
            g.walk(f);
        }
    }

    /// Mutable access to the subgraphs of one node (for passes that recurse; they then `apply` on the subgraph).
    pub fn node_subgraphs_mut(&mut self, id: NodeId) -> Vec<&mut Graph> {
        match self.nodes.get_mut(id.index()).and_then(|n| n.as_mut()) {
            Some(n) => n.attrs.iter_mut().flat_map(|a| a.subgraphs_mut()).collect(),
            None => Vec::new(),
        }
    }

    /// This graph and every nested subgraph, mutably, depth first.
    pub fn walk_mut(
        &mut self,
        f: &mut dyn FnMut(&mut Graph) -> crate::Result<()>,
    ) -> crate::Result<()> {
        f(self)?;
        for id in self.order.clone() {
            for g in self.node_subgraphs_mut(id) {
                g.walk_mut(f)?;
            }
        }
        Ok(())
    }

    /// Names this graph reads from enclosing scopes (outer values it uses or returns), sorted.
    pub fn free_variables(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .values
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                v.def == ValueDef::Outer
                    && (!v.uses.is_empty() || self.is_output(ValueId(*i as u32)))
            })
            .map(|(_, v)| v.name.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    // ---- crate-private construction (importer, builder, apply) ---------------------------------------------

    /// Create a new value with no definition yet.
    pub(crate) fn add_value(&mut self, name: &str) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(Value {
            name: name.to_string(),
            def: ValueDef::None,
            uses: Vec::new(),
            init: None,
        });
        if !name.is_empty() {
            self.index.insert(name.to_string(), id);
        }
        id
    }

    pub(crate) fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.index()]
    }

    pub(crate) fn push_initializer(&mut self, v: ValueId, t: Tensor) {
        let value = &mut self.values[v.index()];
        value.def = ValueDef::Initializer;
        value.init = Some(t);
        self.initializers.push(v);
    }

    pub(crate) fn push_input(&mut self, io: GraphIo) {
        let value = &mut self.values[io.value.index()];
        if value.def == ValueDef::None {
            value.def = ValueDef::Input;
        }
        self.inputs.push(io);
    }

    pub(crate) fn push_output(&mut self, io: GraphIo) {
        self.outputs.push(io);
    }

    pub(crate) fn push_value_info(&mut self, io: GraphIo) {
        self.value_info.push(io);
    }

    /// Append a node at the end of the order, wiring its uses, definitions and the captures of its subgraphs.
    pub(crate) fn push_node(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        for (slot, v) in node.inputs.iter().enumerate() {
            if let Some(v) = v {
                self.add_use(
                    *v,
                    Use {
                        node: id,
                        slot: UseSlot::Input(slot as u32),
                    },
                );
            }
        }
        for (slot, v) in node.outputs.iter().enumerate() {
            if let Some(v) = v {
                self.values[v.index()].def = ValueDef::Node(id, slot as u32);
            }
        }
        let captures = node.has_subgraphs();
        self.nodes.push(Some(node));
        self.order.push(id);
        if captures {
            self.add_captures(id);
        }
        id
    }

    pub(crate) fn add_use(&mut self, v: ValueId, u: Use) {
        let uses = &mut self.values[v.index()].uses;
        if let Err(pos) = uses.binary_search(&u) {
            uses.insert(pos, u);
        }
    }

    pub(crate) fn remove_use(&mut self, v: ValueId, u: Use) {
        let uses = &mut self.values[v.index()].uses;
        if let Ok(pos) = uses.binary_search(&u) {
            uses.remove(pos);
        }
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id.index()).and_then(|n| n.as_mut())
    }
}
