//! Stable topological order: Kahn's algorithm with a priority key per node, so nodes keep their place when they
//! can and new nodes land just before their first consumer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::ir::graph::Graph;
use crate::ir::ids::NodeId;
use crate::ir::value::{UseSlot, ValueDef};

/// Order `nodes` topologically, breaking ties by `key` (lower first) then by id. Returns the order and the nodes
/// left on cycles (empty when acyclic); those are appended in their given order so nothing is lost.
pub fn stable_topo(
    graph: &Graph,
    nodes: &[NodeId],
    key: &dyn Fn(NodeId) -> u64,
) -> (Vec<NodeId>, Vec<NodeId>) {
    let n = graph.nodes.len();
    let mut indeg = vec![0u32; n];
    let mut live = vec![false; n];
    for id in nodes {
        live[id.index()] = true;
    }
    let captures = captured_producers(graph);
    for id in nodes {
        let Some(node) = graph.node(*id) else {
            continue;
        };
        for v in node.inputs.iter().flatten() {
            if let ValueDef::Node(p, _) = graph.value(*v).def {
                if live[p.index()] {
                    indeg[id.index()] += 1;
                }
            }
        }
        // captures: a subgraph that reads a value makes its node depend on the producer
        for p in captures.get(id).into_iter().flatten() {
            if live[p.index()] {
                indeg[id.index()] += 1;
            }
        }
    }
    let mut heap: BinaryHeap<Reverse<(u64, NodeId)>> = nodes
        .iter()
        .filter(|id| indeg[id.index()] == 0)
        .map(|id| Reverse((key(*id), *id)))
        .collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, id))) = heap.pop() {
        out.push(id);
        let Some(node) = graph.node(id) else { continue };
        for v in node.outputs.iter().flatten() {
            for u in graph.uses(*v) {
                if !live[u.node.index()] {
                    continue;
                }
                let c = &mut indeg[u.node.index()];
                *c -= 1;
                if *c == 0 {
                    heap.push(Reverse((key(u.node), u.node)));
                }
            }
        }
    }
    let mut rest = Vec::new();
    if out.len() < nodes.len() {
        let placed: std::collections::HashSet<NodeId> = out.iter().copied().collect();
        rest = nodes
            .iter()
            .filter(|id| !placed.contains(id))
            .copied()
            .collect();
        out.extend(rest.iter().copied());
    }
    (out, rest)
}

/// For each node whose subgraphs capture values: the producers (in this graph) of those values.
fn captured_producers(graph: &Graph) -> std::collections::HashMap<NodeId, Vec<NodeId>> {
    let mut out: std::collections::HashMap<NodeId, Vec<NodeId>> = Default::default();
    for (_, value) in graph.values() {
        if let ValueDef::Node(p, _) = value.def {
            for u in value.uses.iter().filter(|u| u.slot == UseSlot::Capture) {
                out.entry(u.node).or_default().push(p);
            }
        }
    }
    out
}

/// True when every node's inputs are defined before it in `order`.
pub fn is_topological(graph: &Graph, order: &[NodeId]) -> bool {
    let mut pos = vec![usize::MAX; graph.nodes.len()];
    for (i, id) in order.iter().enumerate() {
        pos[id.index()] = i;
    }
    for (v, value) in graph.values() {
        let _ = v;
        if let ValueDef::Node(p, _) = value.def {
            for u in &value.uses {
                if pos[u.node.index()] != usize::MAX && pos[p.index()] >= pos[u.node.index()] {
                    return false;
                }
            }
        }
    }
    true
}
