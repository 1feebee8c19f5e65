//! `Patch` + `Graph::apply`: the one door through which a graph changes.
//!
//! A pass reads `&Graph`, queues edits in a `Patch` (new values and nodes, replace-all-uses, rewired inputs,
//! erased nodes, attribute and initializer edits, graph output retargeting) and hands it to `Graph::apply`,
//! which performs them in a fixed order, keeps use lists and the name index right, places new nodes in a stable
//! topological order and returns a `ChangeLog` of what really changed. Graph outputs move only on an explicit
//! `set_graph_output`.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::attr::Attribute;
use crate::ir::graph::Graph;
use crate::ir::ids::{NodeId, ValueId};
use crate::ir::names::NameAuthority;
use crate::ir::node::{Node, OpKey};
use crate::ir::order::stable_topo;
use crate::ir::tensor::{SparseTensor, Tensor};
use crate::ir::value::{TypeInfo, Use, UseSlot, ValueDef, ValueInfo};
use crate::ir::weight::{constant_attr, ConstantForm, WeightRef, WeightStorage};
use crate::ir::GraphIo;

/// A value in a patch: one that exists, or the k-th value the patch creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValRef {
    Old(ValueId),
    New(usize),
}

impl From<ValueId> for ValRef {
    fn from(v: ValueId) -> ValRef {
        ValRef::Old(v)
    }
}

#[derive(Clone, Debug)]
struct NewValue {
    name: String,
    init: Option<Tensor>,
}

/// A node a patch adds. Leave `name` empty to get a fresh `<anchor>/<pass>_<k>` name.
#[derive(Clone, Debug)]
pub struct NewNode {
    pub name: Option<String>,
    pub op: OpKey,
    pub inputs: Vec<Option<ValRef>>,
    pub outputs: Vec<ValRef>,
    pub attrs: Vec<Attribute>,
}

#[derive(Clone, Debug)]
enum Edit {
    ReplaceUses(ValueId, ValRef),
    SetInput(NodeId, usize, Option<ValRef>),
    Erase(NodeId),
    SetAttr(NodeId, Box<Attribute>),
    SetOp(NodeId, OpKey),
    RemoveAttr(NodeId, String),
    SetInit(ValueId, Tensor),
    RemoveInit(ValueId),
    SetOutput(usize, ValRef),
    Reorder(Vec<NodeId>),
    RefreshCaptures(NodeId),
    ReplaceWeight(WeightRef, Tensor),
    StoreSparse(WeightRef, SparseTensor, SparseForm, String),
    RemoveWeight(WeightRef),
    SetValueInfo(ValRef, Option<TypeInfo>),
    SetIoType(IoSide, usize, Option<TypeInfo>),
}

/// Where `Patch::store_sparse` puts a dense initializer's sparse form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SparseForm {
    /// `GraphProto.sparse_initializer`. ONNX Runtime loads it, but onnx.checker's full_check types it as
    /// `sparse_tensor(T)`, which ordinary op inputs refuse.
    Initializer,
    /// A `Constant` node with `sparse_value` (opset >= 11): dense-typed for the checker, densified by ONNX Runtime
    /// at load.
    Constant,
}

/// A graph input or output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IoSide {
    Input,
    Output,
}

/// Queued edits against one graph.
#[derive(Clone, Debug)]
pub struct Patch {
    pass: String,
    names: NameAuthority,
    values: Vec<NewValue>,
    nodes: Vec<NewNode>,
    edits: Vec<Edit>,
}

/// One real change, by names (never ids), for reports and snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    NodeAdded {
        node: String,
        op: String,
    },
    NodeErased {
        node: String,
        op: String,
    },
    UsesReplaced {
        from: String,
        to: String,
        uses: usize,
    },
    InputSet {
        node: String,
        slot: usize,
        to: String,
    },
    AttrSet {
        node: String,
        attr: String,
    },
    AttrRemoved {
        node: String,
        attr: String,
    },
    OpChanged {
        node: String,
        from: String,
        to: String,
    },
    InitializerAdded {
        name: String,
    },
    InitializerReplaced {
        name: String,
    },
    InitializerRemoved {
        name: String,
    },
    /// A weight now stored sparse (a sparse initializer, or a `Constant` node's `sparse_value`).
    StoredSparse {
        name: String,
    },
    OutputSet {
        index: usize,
        to: String,
    },
    Reordered {
        nodes: usize,
    },
    ValueInfoSet {
        name: String,
    },
    ValueInfoCleared {
        name: String,
    },
    IoTypeSet {
        side: IoSide,
        index: usize,
        name: String,
    },
}

/// What `apply` did. `is_empty()` means the graph is exactly as before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChangeLog {
    pub changes: Vec<Change>,
}

impl ChangeLog {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
    pub fn extend(&mut self, other: ChangeLog) {
        self.changes.extend(other.changes);
    }
}

impl Patch {
    pub fn new(pass: &str) -> Patch {
        Patch {
            pass: pass.to_string(),
            names: NameAuthority::default(),
            values: vec![],
            nodes: vec![],
            edits: vec![],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.nodes.is_empty() && self.edits.is_empty()
    }

    /// A patch for the innermost graph of `scope`: fresh names also avoid every name the enclosing graphs
    /// define, so nothing the patch adds shadows an outer value.
    pub fn in_scope(pass: &str, scope: &crate::ir::ScopeChain<'_>) -> Patch {
        let mut p = Patch::new(pass);
        p.names.with_outer(scope.outer_names());
        p
    }

    /// Also keep fresh names clear of these names (those defined by enclosing graphs, e.g. `SiteMut::outer_names`).
    pub fn avoid_names(&mut self, names: std::collections::BTreeSet<String>) {
        self.names.with_outer(names);
    }

    /// `<base><suffix>` (`w_quantized`, `w_scale`, `w_zero_point`: the names ONNX Runtime's tools use), or
    /// `<base><suffix>_<k>` when taken in any scope the patch knows of.
    pub fn fresh_suffixed(&mut self, graph: &Graph, base: &str, suffix: &str) -> String {
        self.names.fresh_exact(graph, &format!("{base}{suffix}"))
    }

    /// A new initializer named `<base><suffix>` (see `fresh_suffixed`).
    pub fn add_named_initializer(
        &mut self,
        graph: &Graph,
        base: &str,
        suffix: &str,
        mut tensor: Tensor,
    ) -> ValRef {
        let name = self.fresh_suffixed(graph, base, suffix);
        tensor.name = Some(name.clone());
        self.values.push(NewValue {
            name,
            init: Some(tensor),
        });
        ValRef::New(self.values.len() - 1)
    }

    /// A new value named `<base><suffix>` (see `fresh_suffixed`), defined later by a new node.
    pub fn new_named_value(&mut self, graph: &Graph, base: &str, suffix: &str) -> ValRef {
        let name = self.fresh_suffixed(graph, base, suffix);
        self.values.push(NewValue { name, init: None });
        ValRef::New(self.values.len() - 1)
    }

    /// Replace a weight's content wherever it is stored (the patch is for the graph at `w.path`): an initializer
    /// keeps its name; a `Constant` node keeps its value form when the tensor fits it (`value_float` for a
    /// float32 scalar, `value_ints` for a 1-D int64...) and otherwise gets `value`; a sparse initializer becomes
    /// a dense initializer of the same name.
    pub fn replace_weight(&mut self, w: &WeightRef, tensor: Tensor) {
        self.edits.push(Edit::ReplaceWeight(w.clone(), tensor));
    }

    /// Store a weight in sparse form (the patch is for `graph`, the one at `w.path`; `sparse` as
    /// `weight::sparsify` makes it, densifying to the weight's content): an initializer becomes, by `form`, a
    /// sparse initializer of the same name (`GraphProto.sparse_initializer`, its `values` named after the weight)
    /// or a new `Constant` node `<w>/<pass>_<k>` with `sparse_value` defining the same value; a sparse
    /// initializer gets the new content; a `Constant` node gets `sparse_value` in place of its value attribute.
    /// `apply` fails on a stale reference or when the sparse tensor lacks values or indices.
    pub fn store_sparse(
        &mut self,
        graph: &Graph,
        w: &WeightRef,
        sparse: SparseTensor,
        form: SparseForm,
    ) {
        let node_name = match (w.storage, form) {
            (WeightStorage::Initializer, SparseForm::Constant) => self.fresh_name(graph, &w.name),
            _ => String::new(),
        };
        self.edits
            .push(Edit::StoreSparse(w.clone(), sparse, form, node_name));
    }

    /// Remove a weight (initializer, sparse initializer or `Constant` node) whose last use goes away in this
    /// same patch; `apply` fails naming the reader if one is left.
    pub fn remove_weight(&mut self, w: &WeightRef) {
        self.edits.push(Edit::RemoveWeight(w.clone()));
    }

    /// Set the declared type of a value in `value_info` (adding the entry when missing), or with `None` drop its
    /// entries: stale shapes after channels are removed would make ONNX Runtime refuse the model.
    pub fn set_value_info(&mut self, value: impl Into<ValRef>, ty: Option<TypeInfo>) {
        self.edits.push(Edit::SetValueInfo(value.into(), ty));
    }

    /// Set (or with `None` clear) the declared type of graph input or output `index`.
    pub fn set_io_type(&mut self, side: IoSide, index: usize, ty: Option<TypeInfo>) {
        self.edits.push(Edit::SetIoType(side, index, ty));
    }

    /// A fresh name `<anchor>/<pass>_<k>` unused in the graph and this patch.
    pub fn fresh_name(&mut self, graph: &Graph, anchor: &str) -> String {
        let pass = self.pass.replace('-', "_");
        self.names.fresh(graph, anchor, &pass)
    }

    /// A new value named `<anchor>/<pass>_<k>`, defined later by a new node.
    pub fn new_value(&mut self, graph: &Graph, anchor: &str) -> ValRef {
        let name = self.fresh_name(graph, anchor);
        self.values.push(NewValue { name, init: None });
        ValRef::New(self.values.len() - 1)
    }

    /// A new initializer; its name is `<anchor>/<pass>_<k>` (the tensor's own name is overwritten to match).
    pub fn add_initializer(&mut self, graph: &Graph, anchor: &str, mut tensor: Tensor) -> ValRef {
        let name = self.fresh_name(graph, anchor);
        tensor.name = Some(name.clone());
        self.values.push(NewValue {
            name,
            init: Some(tensor),
        });
        ValRef::New(self.values.len() - 1)
    }

    /// Add a node named `<anchor>/<pass>_<k>`; returns its outputs, named `<node>_out<i>`.
    pub fn add_node(
        &mut self,
        graph: &Graph,
        anchor: &str,
        op: OpKey,
        inputs: Vec<Option<ValRef>>,
        attrs: Vec<Attribute>,
        n_outputs: usize,
    ) -> Vec<ValRef> {
        let name = self.fresh_name(graph, anchor);
        let outputs: Vec<ValRef> = (0..n_outputs)
            .map(|i| {
                let vname = self.names.fresh_exact(graph, &format!("{name}_out{i}"));
                self.values.push(NewValue {
                    name: vname,
                    init: None,
                });
                ValRef::New(self.values.len() - 1)
            })
            .collect();
        self.nodes.push(NewNode {
            name: Some(name),
            op,
            inputs,
            outputs: outputs.clone(),
            attrs,
        });
        outputs
    }

    /// Add a fully specified node (outputs made with `new_value`).
    pub fn add_node_spec(&mut self, node: NewNode) {
        self.nodes.push(node);
    }

    /// Every use of `from` by a node that exists before this patch now reads `to`. Graph outputs stay.
    ///
    /// Uses inside the subgraphs of If/Loop/Scan nodes (captures, at any depth) move too: each body that read the
    /// outer `from` now reads the outer `to` (the reference is created in the body; a body output that was `from`
    /// becomes `to`). A body that defines its own value named `to` would shadow it: `apply` then fails with the
    /// subgraph named (`Graph::rewire_blocker` answers beforehand).
    pub fn replace_all_uses(&mut self, from: ValueId, to: ValRef) {
        self.edits.push(Edit::ReplaceUses(from, to));
    }

    pub fn set_input(&mut self, node: NodeId, slot: usize, to: Option<ValRef>) {
        self.edits.push(Edit::SetInput(node, slot, to));
    }

    /// Erase a node. Its outputs must have no uses left once the patch's other edits are done.
    pub fn erase_node(&mut self, node: NodeId) {
        self.edits.push(Edit::Erase(node));
    }

    /// Set (add or overwrite) an attribute.
    pub fn set_attr(&mut self, node: NodeId, attr: Attribute) {
        self.edits.push(Edit::SetAttr(node, Box::new(attr)));
    }

    /// Change a node's operator in place (its name, inputs, outputs and attributes stay; edit those separately).
    pub fn set_op(&mut self, node: NodeId, op: OpKey) {
        self.edits.push(Edit::SetOp(node, op));
    }

    pub fn remove_attr(&mut self, node: NodeId, name: &str) {
        self.edits.push(Edit::RemoveAttr(node, name.to_string()));
    }

    /// Replace the content of an initializer (its name is kept).
    pub fn replace_initializer(&mut self, value: ValueId, tensor: Tensor) {
        self.edits.push(Edit::SetInit(value, tensor));
    }

    /// Remove an initializer that nothing uses any more (also drops it from the graph inputs if listed there).
    pub fn remove_initializer(&mut self, value: ValueId) {
        self.edits.push(Edit::RemoveInit(value));
    }

    /// Make graph output `index` be `to` (keeping the output's declared ValueInfo).
    pub fn set_graph_output(&mut self, index: usize, to: ValRef) {
        self.edits.push(Edit::SetOutput(index, to));
    }

    /// Recompute which outer values `node`'s subgraphs read (after a patch was applied inside a subgraph).
    pub fn refresh_captures(&mut self, node: NodeId) {
        self.edits.push(Edit::RefreshCaptures(node));
    }

    /// Reorder the nodes (a permutation of the live nodes; it must be topological).
    pub fn reorder(&mut self, order: Vec<NodeId>) {
        self.edits.push(Edit::Reorder(order));
    }
}

impl Graph {
    /// Apply a patch: the only way a graph changes. On error the graph must be discarded (the pipeline does).
    pub fn apply(&mut self, patch: Patch) -> Result<ChangeLog> {
        let pass = patch.pass.clone();
        let err = |msg: String| Error::Pass {
            pass: pass.clone(),
            msg,
        };
        let mut log = ChangeLog::default();
        let first_new_node = self.nodes.len();

        // 1. new values
        let mut new_ids = Vec::with_capacity(patch.values.len());
        for nv in patch.values {
            if self.value_by_name(&nv.name).is_some() {
                return Err(err(format!("value name '{}' already exists", nv.name)));
            }
            let id = self.add_value(&nv.name);
            if let Some(t) = nv.init {
                log.changes.push(Change::InitializerAdded {
                    name: nv.name.clone(),
                });
                self.push_initializer(id, t);
            }
            new_ids.push(id);
        }
        let resolve = |r: ValRef| -> Result<ValueId> {
            match r {
                ValRef::Old(v) => Ok(v),
                ValRef::New(i) => new_ids
                    .get(i)
                    .copied()
                    .ok_or_else(|| err(format!("patch value #{i} not created"))),
            }
        };
        let check_node = |g: &Graph, id: NodeId| -> Result<()> {
            g.node(id)
                .map(|_| ())
                .ok_or_else(|| err(format!("node {id} does not exist or was erased")))
        };
        let check_value = |g: &Graph, v: ValueId| -> Result<()> {
            if v.index() < g.values.len() {
                Ok(())
            } else {
                Err(err(format!("value {v} does not exist")))
            }
        };

        // 2. new nodes
        let mut added = Vec::new();
        for nn in patch.nodes {
            let inputs = nn
                .inputs
                .iter()
                .map(|i| i.map(resolve).transpose())
                .collect::<Result<Vec<_>>>()?;
            let outputs = nn
                .outputs
                .iter()
                .map(|o| resolve(*o).map(Some))
                .collect::<Result<Vec<_>>>()?;
            for v in inputs.iter().flatten() {
                check_value(self, *v)?;
            }
            for v in outputs.iter().flatten() {
                if self.value(*v).def != ValueDef::None {
                    return Err(err(format!(
                        "value '{}' is already defined",
                        self.value_name(*v)
                    )));
                }
            }
            let name = nn.name.unwrap_or_default();
            log.changes.push(Change::NodeAdded {
                node: name.clone(),
                op: nn.op.display(),
            });
            let mut node = Node::new(name, nn.op);
            node.inputs = inputs;
            node.outputs = outputs;
            node.attrs = nn.attrs;
            let id = self.push_node(node);
            self.order.pop(); // placed below
            added.push(id);
        }

        // 3. edits, in queue order
        let mut erased = Vec::new();
        let mut undefined: Vec<ValueId> = Vec::new();
        let mut reorder = None;
        for edit in patch.edits {
            match edit {
                Edit::ReplaceUses(from, to) => {
                    check_value(self, from)?;
                    let to = resolve(to)?;
                    let uses: Vec<Use> = self
                        .uses(from)
                        .iter()
                        .filter(|u| u.node.index() < first_new_node)
                        .copied()
                        .collect();
                    if uses.is_empty() || from == to {
                        continue;
                    }
                    if let Some(why) = self.rewire_blocker(from, to) {
                        return Err(err(why));
                    }
                    let from_name = self.value_name(from).to_string();
                    let to_name = self.value_name(to).to_string();
                    let mut count = 0;
                    for u in &uses {
                        match u.slot {
                            UseSlot::Input(slot) => {
                                self.node_mut(u.node)
                                    .expect("use points to a live node")
                                    .inputs[slot as usize] = Some(to);
                                count += 1;
                            }
                            UseSlot::Capture => {
                                for sg in self.node_subgraphs_mut(u.node) {
                                    count += rewire_capture(sg, &from_name, &to_name);
                                }
                            }
                        }
                        self.remove_use(from, *u);
                        self.add_use(to, *u);
                    }
                    log.changes.push(Change::UsesReplaced {
                        from: from_name,
                        to: to_name,
                        uses: count,
                    });
                }
                Edit::SetInput(node, slot, to) => {
                    check_node(self, node)?;
                    let to = to.map(resolve).transpose()?;
                    let n = self.node(node).unwrap();
                    if slot > n.inputs.len() {
                        return Err(err(format!("node '{}' has no input slot {slot}", n.name())));
                    }
                    let old = n.inputs.get(slot).copied().flatten();
                    if old == to && slot < n.inputs.len() {
                        continue;
                    }
                    let u = Use {
                        node,
                        slot: UseSlot::Input(slot as u32),
                    };
                    if let Some(o) = old {
                        self.remove_use(o, u);
                    }
                    if let Some(t) = to {
                        self.add_use(t, u);
                    }
                    let n = self.node_mut(node).unwrap();
                    if slot == n.inputs.len() {
                        n.inputs.push(to);
                    } else {
                        n.inputs[slot] = to;
                    }
                    let name = n.name().to_string();
                    let to = to
                        .map(|t| self.value_name(t).to_string())
                        .unwrap_or_default();
                    log.changes.push(Change::InputSet {
                        node: name,
                        slot,
                        to,
                    });
                }
                Edit::Erase(node) => {
                    check_node(self, node)?;
                    erased.push(node);
                }
                Edit::SetAttr(node, attr) => {
                    check_node(self, node)?;
                    let n = self.node_mut(node).unwrap();
                    let name = attr.name.clone();
                    match n.attrs.iter_mut().find(|a| a.name == name) {
                        Some(a) => *a = *attr,
                        None => n.attrs.push(*attr),
                    }
                    log.changes.push(Change::AttrSet {
                        node: n.name().to_string(),
                        attr: name,
                    });
                }
                Edit::SetOp(node, op) => {
                    check_node(self, node)?;
                    let n = self.node_mut(node).unwrap();
                    if n.op != op {
                        let from = std::mem::replace(&mut n.op, op);
                        log.changes.push(Change::OpChanged {
                            node: n.name().to_string(),
                            from: from.display(),
                            to: n.op.display(),
                        });
                    }
                }
                Edit::RemoveAttr(node, attr) => {
                    check_node(self, node)?;
                    let n = self.node_mut(node).unwrap();
                    let before = n.attrs.len();
                    n.attrs.retain(|a| a.name != attr);
                    if n.attrs.len() != before {
                        log.changes.push(Change::AttrRemoved {
                            node: n.name().to_string(),
                            attr,
                        });
                    }
                }
                Edit::SetInit(v, mut t) => {
                    check_value(self, v)?;
                    let value = self.value_mut(v);
                    if value.def != ValueDef::Initializer {
                        return Err(err(format!("'{}' is not an initializer", value.name)));
                    }
                    t.name = Some(value.name.clone());
                    value.init = Some(t);
                    log.changes.push(Change::InitializerReplaced {
                        name: value.name.clone(),
                    });
                }
                Edit::RemoveInit(v) => {
                    check_value(self, v)?;
                    let value = self.value(v);
                    if value.def != ValueDef::Initializer {
                        return Err(err(format!("'{}' is not an initializer", value.name)));
                    }
                    // uses are checked after erasures below
                    let name = value.name.clone();
                    self.initializers.retain(|i| *i != v);
                    self.inputs.retain(|io| io.value != v);
                    let value = self.value_mut(v);
                    value.def = ValueDef::None;
                    value.init = None;
                    undefined.push(v);
                    log.changes.push(Change::InitializerRemoved { name });
                }
                Edit::SetOutput(index, to) => {
                    let to = resolve(to)?;
                    let Some(out) = self.outputs.get_mut(index) else {
                        return Err(err(format!("graph has no output #{index}")));
                    };
                    if out.value != to {
                        out.value = to;
                        log.changes.push(Change::OutputSet {
                            index,
                            to: self.value_name(to).to_string(),
                        });
                    }
                }
                Edit::ReplaceWeight(w, mut t) => {
                    self.check_weight(&w).map_err(&err)?;
                    match w.storage {
                        WeightStorage::Initializer => {
                            t.name = Some(w.name.clone());
                            self.value_mut(w.value).init = Some(t);
                            log.changes
                                .push(Change::InitializerReplaced { name: w.name });
                        }
                        WeightStorage::SparseInitializer => {
                            self.sparse_initializers.retain(|s| {
                                s.values.as_ref().and_then(|v| v.name.as_deref())
                                    != Some(w.name.as_str())
                            });
                            t.name = Some(w.name.clone());
                            self.push_initializer(w.value, t);
                            log.changes
                                .push(Change::InitializerReplaced { name: w.name });
                        }
                        WeightStorage::Constant { node, form } => {
                            let attr = constant_attr(form, t).map_err(|e| err(e.to_string()))?;
                            let n = self.node_mut(node).expect("checked");
                            let attr_name = attr.name.clone();
                            n.attrs = vec![attr];
                            let node_name = n.name().to_string();
                            if attr_name != form.attr_name() {
                                log.changes.push(Change::AttrRemoved {
                                    node: node_name.clone(),
                                    attr: form.attr_name().to_string(),
                                });
                            }
                            log.changes.push(Change::AttrSet {
                                node: node_name,
                                attr: attr_name,
                            });
                        }
                    }
                }
                Edit::StoreSparse(w, mut sp, form, node_name) => {
                    self.check_weight(&w).map_err(&err)?;
                    let Some(values) = sp.values.as_mut() else {
                        return Err(err(format!("sparse form of '{}' has no values", w.name)));
                    };
                    if sp.indices.is_none() {
                        return Err(err(format!("sparse form of '{}' has no indices", w.name)));
                    }
                    values.name = Some(w.name.clone());
                    match w.storage {
                        WeightStorage::Initializer if form == SparseForm::Initializer => {
                            self.initializers.retain(|i| *i != w.value);
                            let value = self.value_mut(w.value);
                            value.init = None;
                            value.def = ValueDef::SparseInitializer;
                            self.sparse_initializers.push(sp);
                        }
                        WeightStorage::Initializer => {
                            self.initializers.retain(|i| *i != w.value);
                            let value = self.value_mut(w.value);
                            value.init = None;
                            value.def = ValueDef::None;
                            let mut node = Node::new(node_name.clone(), OpKey::onnx("Constant"));
                            node.outputs = vec![Some(w.value)];
                            node.attrs = vec![Attribute::sparse_tensor("sparse_value", sp)];
                            let id = self.push_node(node);
                            self.order.pop(); // placed with the other new nodes
                            added.push(id);
                            log.changes.push(Change::NodeAdded {
                                node: node_name,
                                op: "Constant".into(),
                            });
                        }
                        WeightStorage::SparseInitializer => {
                            let slot = self
                                .sparse_initializers
                                .iter_mut()
                                .find(|s| {
                                    s.values.as_ref().and_then(|v| v.name.as_deref())
                                        == Some(w.name.as_str())
                                })
                                .expect("checked");
                            *slot = sp;
                        }
                        WeightStorage::Constant { node, .. } => {
                            let n = self.node_mut(node).expect("checked");
                            n.attrs = vec![Attribute::sparse_tensor("sparse_value", sp)];
                        }
                    }
                    log.changes.push(Change::StoredSparse { name: w.name });
                }
                Edit::RemoveWeight(w) => {
                    self.check_weight(&w).map_err(&err)?;
                    match w.storage {
                        WeightStorage::Initializer => {
                            self.initializers.retain(|i| *i != w.value);
                            self.value_mut(w.value).init = None;
                        }
                        WeightStorage::SparseInitializer => {
                            self.sparse_initializers.retain(|s| {
                                s.values.as_ref().and_then(|v| v.name.as_deref())
                                    != Some(w.name.as_str())
                            });
                        }
                        WeightStorage::Constant { node, .. } => {
                            erased.push(node); // the output's uses are checked with the other erasures
                            continue;
                        }
                    }
                    self.value_mut(w.value).def = ValueDef::None;
                    undefined.push(w.value);
                    log.changes
                        .push(Change::InitializerRemoved { name: w.name });
                }
                Edit::SetValueInfo(v, ty) => {
                    let v = resolve(v)?;
                    check_value(self, v)?;
                    let name = self.value_name(v).to_string();
                    match ty {
                        None => {
                            let before = self.value_info.len();
                            self.value_info.retain(|io| io.value != v);
                            if self.value_info.len() != before {
                                log.changes.push(Change::ValueInfoCleared { name });
                            }
                        }
                        Some(ty) => {
                            let mut found = false;
                            for io in self.value_info.iter_mut().filter(|io| io.value == v) {
                                io.info.ty = Some(ty.clone());
                                found = true;
                            }
                            if !found {
                                self.value_info.push(GraphIo {
                                    value: v,
                                    info: ValueInfo {
                                        ty: Some(ty),
                                        ..Default::default()
                                    },
                                });
                            }
                            log.changes.push(Change::ValueInfoSet { name });
                        }
                    }
                }
                Edit::SetIoType(side, index, ty) => {
                    let list = match side {
                        IoSide::Input => &mut self.inputs,
                        IoSide::Output => &mut self.outputs,
                    };
                    let Some(io) = list.get_mut(index) else {
                        return Err(err(format!("graph has no {side:?} #{index}").to_lowercase()));
                    };
                    if io.info.ty != ty {
                        io.info.ty = ty;
                        let v = io.value;
                        log.changes.push(Change::IoTypeSet {
                            side,
                            index,
                            name: self.value_name(v).to_string(),
                        });
                    }
                }
                Edit::Reorder(order) => reorder = Some(order),
                Edit::RefreshCaptures(node) => {
                    check_node(self, node)?;
                    let u = Use {
                        node,
                        slot: UseSlot::Capture,
                    };
                    for value in self.values.iter_mut() {
                        value.uses.retain(|x| *x != u);
                    }
                    self.add_captures(node);
                }
            }
        }

        erased.sort();
        erased.dedup(); // erasing a node twice in one patch is erasing it once
                        // 4. erasures: drop the node's uses, then its outputs must be dead
        for node in &erased {
            let n = self.node(*node).expect("checked above");
            let inputs: Vec<(usize, ValueId)> = n
                .inputs
                .iter()
                .enumerate()
                .filter_map(|(s, v)| v.map(|v| (s, v)))
                .collect();
            let captures = n.has_subgraphs();
            for (slot, v) in inputs {
                self.remove_use(
                    v,
                    Use {
                        node: *node,
                        slot: UseSlot::Input(slot as u32),
                    },
                );
            }
            if captures {
                for value in self.values.iter_mut() {
                    value
                        .uses
                        .retain(|u| !(u.node == *node && u.slot == UseSlot::Capture));
                }
            }
        }
        for node in &erased {
            let n = self.nodes[node.index()].take().expect("checked above");
            for v in n.outputs.iter().flatten() {
                self.value_mut(*v).def = ValueDef::None;
                undefined.push(*v);
            }
            log.changes.push(Change::NodeErased {
                node: n.name().to_string(),
                op: n.op.display(),
            });
        }
        // values this patch left undefined (outputs of erased nodes, removed initializers) must be unused; they
        // leave the name index and value_info
        for v in &undefined {
            let name = self.value_name(*v).to_string();
            if let Some(u) = self.uses(*v).first() {
                let user = self
                    .node(u.node)
                    .map(|n| n.name().to_string())
                    .unwrap_or_default();
                return Err(err(format!(
                    "'{name}' is removed by this patch but still used by node '{user}'"
                )));
            }
            if self.is_output(*v) {
                return Err(err(format!(
                    "'{name}' is removed by this patch but is a graph output"
                )));
            }
            if self.index.get(&name) == Some(v) {
                self.index.remove(&name);
            }
            self.value_info.retain(|io| io.value != *v);
        }
        for v in &new_ids {
            let value = self.value(*v);
            if value.def == ValueDef::None {
                return Err(err(format!("new value '{}' is never defined", value.name)));
            }
        }

        // 5. order
        let erased_set: std::collections::HashSet<NodeId> = erased.iter().copied().collect();
        self.order.retain(|id| !erased_set.contains(id));
        if let Some(order) = reorder {
            let mut a = order.clone();
            a.sort();
            let mut b = self.order.clone();
            b.extend(added.iter().copied());
            b.sort();
            if a != b {
                return Err(err("reorder is not a permutation of the live nodes".into()));
            }
            if order != self.order {
                log.changes.push(Change::Reordered { nodes: order.len() });
            }
            self.order = order;
        } else if !added.is_empty() {
            self.place_new_nodes(&added);
        }
        Ok(log)
    }

    /// Put new nodes just before their first existing consumer (or at the end), then restore topological order.
    fn place_new_nodes(&mut self, added: &[NodeId]) {
        let pos: HashMap<NodeId, u64> = self
            .order
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, 2 * i as u64 + 1))
            .collect();
        let end = 2 * self.order.len() as u64 + 2;
        let mut keys: HashMap<NodeId, u64> = pos.clone();
        for id in added.iter().rev() {
            let node = self.node(*id).expect("just added");
            let mut key = u64::MAX;
            for v in node.outputs.iter().flatten() {
                for u in self.uses(*v) {
                    let k = match pos.get(&u.node) {
                        Some(p) => p - 1,
                        None => keys.get(&u.node).copied().unwrap_or(end),
                    };
                    key = key.min(k);
                }
            }
            keys.insert(*id, if key == u64::MAX { end } else { key });
        }
        let mut all = self.order.clone();
        all.extend(added.iter().copied());
        let (order, _cyclic) = stable_topo(self, &all, &|id| keys.get(&id).copied().unwrap_or(end));
        self.order = order;
    }
}

impl Graph {
    /// That a weight reference still describes this graph: same value name, same storage.
    fn check_weight(&self, w: &WeightRef) -> std::result::Result<(), String> {
        let stale =
            |why: &str| format!("weight '{}' {why} (stale reference or wrong graph)", w.name);
        if w.value.index() >= self.values.len() || self.value_name(w.value) != w.name {
            return Err(stale("is not a value of this graph"));
        }
        let def = self.value(w.value).def;
        let ok = match w.storage {
            WeightStorage::Initializer => def == ValueDef::Initializer,
            WeightStorage::SparseInitializer => def == ValueDef::SparseInitializer,
            WeightStorage::Constant { node, form } => {
                def == ValueDef::Node(node, 0)
                    && self.node(node).and_then(ConstantForm::of) == Some(form)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(stale("is no longer stored as the reference says"))
        }
    }

    /// Why the uses of `from` cannot all be moved to `to`, if they cannot: a subgraph that reads `from` from this
    /// graph refers to `to` by name, so `to` must not be defined inside that subgraph (or one nested in it on the
    /// way to a reader), where the local value would shadow it.
    pub fn rewire_blocker(&self, from: ValueId, to: ValueId) -> Option<String> {
        let from_name = self.value_name(from);
        let to_name = self.value_name(to);
        for u in self.uses(from) {
            if u.slot != UseSlot::Capture {
                continue;
            }
            if to_name.is_empty() {
                return Some(format!(
                    "cannot rewire '{from_name}' to an unnamed value: a subgraph reads it by name"
                ));
            }
            let Some(n) = self.node(u.node) else { continue };
            for sg in n.attrs.iter().flat_map(|a| a.subgraphs()) {
                if let Some(path) = capture_shadowed(sg, from_name, to_name) {
                    return Some(format!(
                        "cannot rewire '{from_name}' to '{to_name}' inside node '{}': '{to_name}' is defined in subgraph '{path}' and would shadow the outer value",
                        n.name()
                    ));
                }
            }
        }
        None
    }

    /// Register the values `node`'s subgraphs read from this graph as captures (creating `Outer` values for names
    /// this graph itself reads from further out).
    pub(crate) fn add_captures(&mut self, node: NodeId) {
        let Some(n) = self.node(node) else { return };
        let mut names: Vec<String> = n
            .attrs
            .iter()
            .flat_map(|a| a.subgraphs())
            .flat_map(|g| g.free_variables())
            .collect();
        names.sort();
        names.dedup();
        let u = Use {
            node,
            slot: UseSlot::Capture,
        };
        for name in names {
            let v = match self.value_by_name(&name) {
                Some(v) => v,
                None => {
                    let v = self.add_value(&name);
                    self.value_mut(v).def = ValueDef::Outer;
                    v
                }
            };
            self.add_use(v, u);
        }
    }
}

/// The subgraph (by name, nested ones as `a/b`) in which a body that reads the outer `from` defines its own `to`.
fn capture_shadowed(g: &Graph, from: &str, to: &str) -> Option<String> {
    let f = g.value_by_name(from)?;
    if g.value(f).def != ValueDef::Outer {
        return None; // the body defines its own `from`: the outer one is not read here
    }
    if let Some(t) = g.value_by_name(to) {
        if g.value(t).def != ValueDef::Outer {
            return Some(g.name().to_string());
        }
    }
    for u in g.uses(f) {
        if u.slot != UseSlot::Capture {
            continue;
        }
        let Some(n) = g.node(u.node) else { continue };
        for sg in n.attrs.iter().flat_map(|a| a.subgraphs()) {
            if let Some(p) = capture_shadowed(sg, from, to) {
                return Some(format!("{}/{p}", g.name()));
            }
        }
    }
    None
}

/// Inside a subgraph that reads the outer `from`, make every read (node inputs, nested captures, graph outputs)
/// read the outer `to` instead, creating the outer reference when the body did not read `to` yet. The old
/// reference is dropped with its value_info entries. Returns the number of reads moved. Checked beforehand by
/// `rewire_blocker`.
fn rewire_capture(g: &mut Graph, from: &str, to: &str) -> usize {
    let Some(f) = g.value_by_name(from) else {
        return 0;
    };
    if g.value(f).def != ValueDef::Outer {
        return 0;
    }
    let t = match g.value_by_name(to) {
        Some(t) => t,
        None => {
            let t = g.add_value(to);
            g.value_mut(t).def = ValueDef::Outer;
            t
        }
    };
    let mut count = 0;
    for u in g.uses(f).to_vec() {
        match u.slot {
            UseSlot::Input(slot) => {
                g.node_mut(u.node)
                    .expect("use points to a live node")
                    .inputs[slot as usize] = Some(t);
                count += 1;
            }
            UseSlot::Capture => {
                for sg in g.node_subgraphs_mut(u.node) {
                    count += rewire_capture(sg, from, to);
                }
            }
        }
        g.remove_use(f, u);
        g.add_use(t, u);
    }
    for o in g.outputs.iter_mut().filter(|o| o.value == f) {
        o.value = t;
        count += 1;
    }
    g.value_info.retain(|io| io.value != f);
    if g.index.get(from) == Some(&f) {
        g.index.remove(from);
    }
    g.value_mut(f).def = ValueDef::None;
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::GraphBuilder;
    use crate::ir::{DataType, Tensor};

    /// x -> Relu -> r -> Neg -> y
    fn chain() -> Graph {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2"]);
        let r = b.node("Relu", &[x], vec![], 1)[0];
        let y = b.node("Neg", &[r], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["2"]);
        b.build()
    }

    #[test]
    fn insert_between_places_node_before_consumer_and_rewires() {
        let mut g = chain();
        let r = g.value_by_name("relu_0_out0").unwrap();
        let mut p = Patch::new("qdq");
        let out = p.add_node(
            &g,
            "relu_0",
            OpKey::onnx("Identity"),
            vec![Some(r.into())],
            vec![],
            1,
        )[0];
        p.replace_all_uses(r, out);
        let log = g.apply(p).unwrap();
        g.verify().unwrap();
        let ops: Vec<&str> = g.nodes().map(|(_, n)| n.op.op_type.as_str()).collect();
        assert_eq!(ops, ["Relu", "Identity", "Neg"]);
        // the new node still reads the old value; only pre-existing readers moved
        let id = g.value_by_name("relu_0/qdq_0").map(|_| ());
        assert!(id.is_none(), "node names are not value names");
        assert_eq!(g.consumers(r).len(), 1);
        assert!(log
            .changes
            .iter()
            .any(|c| matches!(c, Change::UsesReplaced { uses: 1, .. })));
        assert_eq!(
            g.value_name(g.node(g.consumers(r)[0]).unwrap().outputs[0].unwrap()),
            "relu_0/qdq_0_out0"
        );
    }

    #[test]
    fn erase_with_live_uses_is_an_error() {
        let mut g = chain();
        let (relu, _) = g.nodes().next().unwrap();
        let mut p = Patch::new("bad");
        p.erase_node(relu);
        let e = g.apply(p).unwrap_err().to_string();
        assert!(e.contains("still used by node 'neg_1'"), "{e}");
    }

    #[test]
    fn empty_patch_changes_nothing_and_names_are_deterministic() {
        let mut g = chain();
        assert!(g.apply(Patch::new("noop")).unwrap().is_empty());
        let mut p1 = Patch::new("lowrank");
        let mut p2 = Patch::new("lowrank");
        let a: Vec<String> = (0..3).map(|_| p1.fresh_name(&g, "fc")).collect();
        let b: Vec<String> = (0..3).map(|_| p2.fresh_name(&g, "fc")).collect();
        assert_eq!(a, ["fc/lowrank_0", "fc/lowrank_1", "fc/lowrank_2"]);
        assert_eq!(a, b);
    }

    #[test]
    fn initializer_replace_and_remove() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2"]);
        let w = b.initializer(Tensor::from_f32("w", vec![2], &[1.0, 2.0]));
        let y = b.node("Mul", &[x, w], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["2"]);
        let mut g = b.build();
        let mut p = Patch::new("t");
        p.replace_initializer(w, Tensor::from_f32("ignored", vec![2], &[3.0, 4.0]));
        g.apply(p).unwrap();
        assert_eq!(g.constant(w).unwrap().to_f32_vec().unwrap(), [3.0, 4.0]);
        assert_eq!(g.constant(w).unwrap().name(), "w");
        let mut p = Patch::new("t");
        p.remove_initializer(w);
        assert!(g
            .apply(p)
            .unwrap_err()
            .to_string()
            .contains("still used by node"));
    }

    /// main: W, x; If(c) { then: If(c2) { then: Mul(x, W) } else { x } } else { x }: W read two levels down.
    fn nested() -> Graph {
        let leaf = |name: &str, reads_w: bool| {
            let mut b = GraphBuilder::new(name);
            let x = b.outer("x");
            let y = if reads_w {
                let w = b.outer("W");
                b.node("Mul", &[x, w], vec![], 1)[0]
            } else {
                b.node("Identity", &[x], vec![], 1)[0]
            };
            b.output(y, DataType::FLOAT, &["2"]);
            b.build()
        };
        let mut mid = GraphBuilder::new("then_branch");
        let c2 = mid.outer("c");
        let y = mid.named_node(
            "inner_if",
            OpKey::onnx("If"),
            &[Some(c2)],
            &["inner_y"],
            vec![
                Attribute::graph("then_branch", leaf("then_branch", true)),
                Attribute::graph("else_branch", leaf("else_branch", false)),
            ],
        )[0];
        mid.output(y, DataType::FLOAT, &["2"]);
        let mut b = GraphBuilder::new("main");
        b.input("x", DataType::FLOAT, &["2"]);
        let c = b.input("c", DataType::BOOL, &[]);
        b.initializer(Tensor::from_f32("W", vec![2], &[1.0, 2.0]));
        let y = b.named_node(
            "outer_if",
            OpKey::onnx("If"),
            &[Some(c)],
            &["y"],
            vec![
                Attribute::graph("then_branch", mid.build()),
                Attribute::graph("else_branch", leaf("else_branch", false)),
            ],
        )[0];
        b.output(y, DataType::FLOAT, &["2"]);
        b.build()
    }

    #[test]
    fn replace_all_uses_reaches_nested_bodies_and_creates_the_captures() {
        let mut g = nested();
        g.verify().unwrap();
        let w = g.value_by_name("W").unwrap();
        let mut p = Patch::new("t");
        let n =
            p.add_named_initializer(&g, "W", "_new", Tensor::from_f32("", vec![2], &[3.0, 4.0]));
        p.replace_all_uses(w, n);
        p.remove_initializer(w);
        let log = g.apply(p).unwrap();
        g.verify().unwrap();
        assert!(log.changes.contains(&Change::UsesReplaced {
            from: "W".into(),
            to: "W_new".into(),
            uses: 1
        }));
        let (_, mid) = g.subgraphs().next().unwrap();
        assert_eq!(mid.free_variables(), ["W_new", "c", "x"]);
        assert!(mid.value_by_name("W").is_none());
        let (_, leaf) = mid.subgraphs().next().unwrap();
        let (_, mul) = leaf.nodes().next().unwrap();
        assert_eq!(leaf.value_name(mul.input(1).unwrap()), "W_new");
        assert_eq!(leaf.value(mul.input(1).unwrap()).def, ValueDef::Outer);
    }

    #[test]
    fn fresh_names_avoid_enclosing_scopes_and_subgraphs_below() {
        let g = nested();
        // from the main graph: a name defined two levels down is taken
        let mut p = Patch::new("t");
        assert_eq!(p.fresh_suffixed(&g, "mul_0", "_out0"), "mul_0_out0_1");
        assert_eq!(p.fresh_suffixed(&g, "W", "_scale"), "W_scale");
        assert_eq!(
            p.fresh_suffixed(&g, "W", "_scale"),
            "W_scale_1",
            "reserved by the patch"
        );
        // from the middle body: the main graph's names are taken
        let (_, mid) = g.subgraphs().next().unwrap();
        let chain = crate::ir::ScopeChain::new(&g).enter(mid);
        let mut p = Patch::in_scope("t", &chain);
        assert_eq!(p.fresh_suffixed(mid, "", "W"), "W_1");
        assert_eq!(p.fresh_suffixed(mid, "", "y"), "y_1");
        assert_eq!(p.fresh_suffixed(mid, "", "inner_y"), "inner_y_1");
        let mut p = Patch::new("t");
        assert_eq!(
            p.fresh_suffixed(mid, "", "y"),
            "y",
            "without the scope the outer name is not seen"
        );
    }

    #[test]
    fn patch_inside_a_body_refreshes_the_owner_captures() {
        let mut g = nested();
        let (outer_if, _) = g.nodes().find(|(_, n)| n.op.is("If")).unwrap();
        let path = crate::ir::GraphPath::default().child(outer_if, 0);
        // the middle body stops reading c: its inner If now reads a new Constant instead
        let mid = g.subgraph_at(&path).unwrap();
        let (inner_if, _) = mid.nodes().next().unwrap();
        let mut p = Patch::new("t");
        let k = p.add_node(
            mid,
            "cond",
            OpKey::onnx("Constant"),
            vec![],
            vec![Attribute::tensor(
                "value",
                Tensor::from_raw("", DataType::BOOL, vec![], vec![1u8].into()),
            )],
            1,
        )[0];
        p.set_input(inner_if, 0, Some(k));
        g.apply_at(&path, p).unwrap();
        g.verify().unwrap();
        let c = g.value_by_name("c").unwrap();
        let captured: Vec<UseSlot> = g.uses(c).iter().map(|u| u.slot).collect();
        assert_eq!(
            captured,
            [UseSlot::Input(0)],
            "the outer If no longer captures c"
        );
    }

    #[test]
    fn a_new_node_with_a_body_captures_what_the_body_reads() {
        let mut g = chain();
        let r = g.value_by_name("relu_0_out0").unwrap();
        let mut body = GraphBuilder::new("body");
        let br = body.outer("relu_0_out0");
        let by = body.node("Neg", &[br], vec![], 1)[0];
        body.output(by, DataType::FLOAT, &["2"]);
        let mut p = Patch::new("t");
        let cond = p.add_node(
            &g,
            "c",
            OpKey::onnx("Constant"),
            vec![],
            vec![Attribute::tensor(
                "value",
                Tensor::from_raw("", DataType::BOOL, vec![], vec![1u8].into()),
            )],
            1,
        )[0];
        p.add_node(
            &g,
            "if",
            OpKey::onnx("If"),
            vec![Some(cond)],
            vec![
                Attribute::graph("then_branch", body.build()),
                Attribute::graph("else_branch", {
                    let mut e = GraphBuilder::new("else");
                    let er = e.outer("relu_0_out0");
                    let ey = e.node("Identity", &[er], vec![], 1)[0];
                    e.output(ey, DataType::FLOAT, &["2"]);
                    e.build()
                }),
            ],
            1,
        );
        g.apply(p).unwrap();
        g.verify().unwrap();
        assert!(g.uses(r).iter().any(|u| u.slot == UseSlot::Capture));
    }

    #[test]
    fn store_sparse_turns_an_initializer_and_a_constant_sparse_and_reads_back_dense() {
        use crate::ir::weight::sparsify;
        use crate::ir::{ConstantForm, OpKey};
        let w_vals = [0.0f32, 1.5, 0.0, 0.0, -2.0, -0.0];
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2", "3"]);
        let w = b.initializer(Tensor::from_f32("w", vec![2, 3], &w_vals));
        let v = b.initializer(Tensor::from_f32("v", vec![2, 3], &w_vals));
        let k = b.named_node(
            "k",
            OpKey::onnx("Constant"),
            &[],
            &["kc"],
            vec![Attribute::tensor(
                "value",
                Tensor::from_f32("", vec![2, 3], &w_vals),
            )],
        )[0];
        let a = b.node("Add", &[x, w], vec![], 1)[0];
        let m = b.node("Mul", &[a, k], vec![], 1)[0];
        let y = b.node("Sub", &[m, v], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["2", "3"]);
        let mut g = b.build();
        let (wr, kr, vr) = (
            g.weight(w).unwrap(),
            g.weight(k).unwrap(),
            g.weight(v).unwrap(),
        );
        let dense = g.read_weight(&wr).unwrap().into_owned();
        let sp = sparsify(&dense, "w").unwrap();
        // linear int64 indices of the non-zeros only (-0.0 counts as zero), values kept f32
        assert_eq!(sp.indices.as_ref().unwrap().to_i64_vec().unwrap(), [1, 4]);
        assert_eq!(
            sp.values.as_ref().unwrap().to_f32_vec().unwrap(),
            [1.5, -2.0]
        );
        let mut p = Patch::new("t");
        p.store_sparse(&g, &wr, sp.clone(), SparseForm::Initializer);
        p.store_sparse(&g, &kr, sp.clone(), SparseForm::Constant);
        p.store_sparse(&g, &vr, sp, SparseForm::Constant);
        let log = g.apply(p).unwrap();
        g.verify().unwrap();
        assert_eq!(
            log.changes,
            [
                Change::StoredSparse { name: "w".into() },
                Change::StoredSparse { name: "kc".into() },
                Change::NodeAdded {
                    node: "v/t_0".into(),
                    op: "Constant".into()
                },
                Change::StoredSparse { name: "v".into() },
            ]
        );
        assert_eq!(g.initializers().count(), 0);
        assert_eq!(g.sparse_initializers.len(), 1);
        assert_eq!(
            g.weight(w).unwrap().storage,
            WeightStorage::SparseInitializer
        );
        let zeroed: Vec<f32> = w_vals.iter().map(|v| v + 0.0).collect();
        for val in [k, v] {
            let r = g.weight(val).unwrap();
            assert!(
                matches!(
                    r.storage,
                    WeightStorage::Constant {
                        form: ConstantForm::SparseValue,
                        ..
                    }
                ),
                "{r:?}"
            );
            assert_eq!(g.read_weight(&r).unwrap().to_f32_vec().unwrap(), zeroed);
        }
        let r = g.weight(w).unwrap();
        assert_eq!(g.read_weight(&r).unwrap().to_f32_vec().unwrap(), zeroed);
        // the new Constant comes before its reader
        let order: Vec<&str> = g.nodes().map(|(_, n)| n.name()).collect();
        let at = |n: &str| order.iter().position(|x| *x == n).unwrap();
        let (_, sub) = g.producer(y).unwrap();
        assert!(at("v/t_0") < at(sub.name()), "{order:?}");
        // a stale reference (the weight is no longer a dense initializer) is refused
        let mut p = Patch::new("t");
        p.store_sparse(
            &g,
            &wr,
            sparsify(&dense, "w").unwrap(),
            SparseForm::Initializer,
        );
        let e = g.apply(p).unwrap_err().to_string();
        assert!(e.contains("no longer stored"), "{e}");
    }
}
