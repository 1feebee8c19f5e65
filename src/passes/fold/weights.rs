//! Reading and replacing the constant inputs of one node, wherever the constant lives: an initializer of this
//! graph, a `Constant` node of this graph, or a constant of an enclosing graph read from inside a body.
//!
//! A replacement never changes what other readers of the old constant see: a constant read only by the node is
//! rewritten in place (same name, same storage form), a shared or outer one gets a new initializer in this graph
//! and only the node's input moves. Outer names that lost a reader are returned so the enclosing graph can drop
//! them once nothing reads them.

use std::collections::{BTreeSet, HashMap};

use crate::ir::{Attribute, Graph, NodeId, Patch, Tensor, ValRef, ValueDef, ValueId};

/// Constants of the enclosing graphs visible from a body, by name. Tensor data is reference counted, so the
/// clones are cheap.
#[derive(Clone, Debug, Default)]
pub(crate) struct OuterConstants {
    consts: HashMap<String, Tensor>,
}

impl OuterConstants {
    /// The constants a body of `g` can read: for each name the body reads from outside, `g`'s own constant
    /// of that name or one `g` itself sees from further out.
    pub(crate) fn for_body(g: &Graph, outer: &OuterConstants, body: &Graph) -> OuterConstants {
        let mut consts = HashMap::new();
        for name in body.free_variables() {
            let t = match g.value_by_name(&name) {
                Some(v) if g.value(v).def != ValueDef::Outer => {
                    g.constant(v).map(|t| t.into_owned())
                }
                _ => outer.consts.get(&name).cloned(),
            };
            if let Some(t) = t {
                consts.insert(name, t);
            }
        }
        OuterConstants { consts }
    }
}

/// The constant behind `v`, in this graph or an enclosing one.
pub(crate) fn read(g: &Graph, outer: &OuterConstants, v: ValueId) -> Option<Tensor> {
    let value = g.value(v);
    if value.def == ValueDef::Outer {
        return outer.consts.get(&value.name).cloned();
    }
    g.constant(v).map(|t| t.into_owned())
}

/// The `Constant` node that defines `v`, if any.
fn constant_node(g: &Graph, v: ValueId) -> Option<NodeId> {
    match g.value(v).def {
        ValueDef::Node(n, 0) if g.node(n).is_some_and(|n| n.op.is("Constant")) => Some(n),
        _ => None,
    }
}

/// Is `node` the only reader of `v` (possibly in several slots), with `v` neither a graph input nor output?
fn read_only_by(g: &Graph, v: ValueId, node: NodeId) -> bool {
    !g.is_output(v)
        && !g.inputs().iter().any(|io| io.value == v)
        && g.uses(v).iter().all(|u| u.node == node)
}

/// Where a replaced constant was stored, for remarks.
pub(crate) fn storage(g: &Graph, v: ValueId) -> &'static str {
    match g.value(v).def {
        ValueDef::Initializer => "initializer",
        ValueDef::Outer => "enclosing graph",
        _ if constant_node(g, v).is_some() => "Constant node",
        _ => "value",
    }
}

/// Make input `slot` of `node` read `tensor`. `old` is the constant the slot reads now (None: the slot is
/// empty). Returns the outer name that lost this reader, if the old constant came from an enclosing graph.
pub(crate) fn replace_input(
    g: &Graph,
    p: &mut Patch,
    node: NodeId,
    slot: usize,
    old: Option<ValueId>,
    mut tensor: Tensor,
) -> Option<String> {
    if let Some(v) = old {
        match g.value(v).def {
            ValueDef::Initializer if read_only_by(g, v, node) => {
                p.replace_initializer(v, tensor);
                return None;
            }
            _ => {}
        }
        if let Some(c) = constant_node(g, v) {
            if read_only_by(g, v, node) {
                let cn = g.node(c).expect("live Constant node");
                tensor.name = None;
                for a in &cn.attrs {
                    if a.name != "value" {
                        p.remove_attr(c, &a.name);
                    }
                }
                p.set_attr(c, Attribute::tensor("value", tensor));
                return None;
            }
        }
    }
    let anchor = g
        .node(node)
        .map(|n| n.name().to_string())
        .unwrap_or_default();
    let new = p.add_initializer(g, &anchor, tensor);
    p.set_input(node, slot, Some(new));
    match old {
        Some(v) if g.value(v).def == ValueDef::Outer => Some(g.value_name(v).to_string()),
        _ => None,
    }
}

/// A new initializer read by a node the patch adds.
pub(crate) fn add(g: &Graph, p: &mut Patch, anchor: &str, tensor: Tensor) -> ValRef {
    p.add_initializer(g, anchor, tensor)
}

/// Drop the constants among `values` that only `node` reads (the node is being erased in the same patch):
/// initializers are removed, `Constant` nodes erased; outer ones are returned by name.
pub(crate) fn drop_readers_of(
    g: &Graph,
    p: &mut Patch,
    node: NodeId,
    values: &[ValueId],
    outer_freed: &mut BTreeSet<String>,
) {
    let unique: BTreeSet<ValueId> = values.iter().copied().collect();
    for v in unique {
        if g.value(v).def == ValueDef::Outer {
            outer_freed.insert(g.value_name(v).to_string());
            continue;
        }
        if !read_only_by(g, v, node) {
            continue;
        }
        if g.value(v).def == ValueDef::Initializer {
            p.remove_initializer(v);
        } else if let Some(c) = constant_node(g, v) {
            p.erase_node(c);
        }
    }
}

/// After a body stopped reading the outer names in `freed` (and the owner's captures were refreshed), drop
/// those of them defined in `g` that nothing reads any more; names defined further out are kept in `freed`
/// for the enclosing graph.
pub(crate) fn drop_freed(g: &Graph, p: &mut Patch, freed: &mut BTreeSet<String>) {
    let mut further_out = BTreeSet::new();
    for name in std::mem::take(freed) {
        let Some(v) = g.value_by_name(&name) else {
            continue;
        };
        let value = g.value(v);
        if value.def == ValueDef::Outer {
            further_out.insert(name);
            continue;
        }
        if !value.uses.is_empty() || g.is_output(v) || g.inputs().iter().any(|io| io.value == v) {
            continue;
        }
        if value.def == ValueDef::Initializer {
            p.remove_initializer(v);
        } else if let Some(c) = constant_node(g, v) {
            p.erase_node(c);
        }
    }
    *freed = further_out;
}
