//! Counts over a model: parameters and bytes by dtype and by where they live, op histogram, subgraphs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ir::{AttrList, Graph, Model, Tensor};

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DtypeCount {
    pub params: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Stats {
    /// Elements in initializers (all graphs, subgraphs included).
    pub initializer_params: u64,
    /// Elements in `Constant` node values (all graphs).
    pub constant_params: u64,
    /// Of the initializer elements, those stored in external data files.
    pub external_params: u64,
    pub params_by_dtype: BTreeMap<String, DtypeCount>,
    pub ops: BTreeMap<String, u64>,
    pub nodes: u64,
    pub subgraphs: u64,
    pub initializers: u64,
    pub constant_nodes: u64,
}

impl Stats {
    pub fn params(&self) -> u64 {
        self.initializer_params + self.constant_params
    }
    pub fn bytes(&self) -> u64 {
        self.params_by_dtype.values().map(|d| d.bytes).sum()
    }
}

pub fn stats(model: &Model) -> Stats {
    let mut s = Stats::default();
    graph_stats(&model.graph, &mut s, true);
    s
}

fn add(s: &mut Stats, t: &Tensor) -> u64 {
    let n = t.numel().unwrap_or(0);
    let e = s
        .params_by_dtype
        .entry(t.dtype().name().into_owned())
        .or_default();
    e.params += n;
    e.bytes += t.byte_size();
    n
}

fn graph_stats(g: &Graph, s: &mut Stats, top: bool) {
    if !top {
        s.subgraphs += 1;
    }
    for (_, t) in g.initializers() {
        let n = add(s, t);
        s.initializer_params += n;
        s.initializers += 1;
        if t.is_external() {
            s.external_params += n;
        }
    }
    for (_, n) in g.nodes() {
        s.nodes += 1;
        *s.ops.entry(n.op.display()).or_default() += 1;
        if n.op.is("Constant") {
            s.constant_nodes += 1;
            if let Ok(Some(t)) = n.get_tensor("value") {
                let k = add(s, t);
                s.constant_params += k;
            }
        }
    }
    for (_, sg) in g.subgraphs() {
        graph_stats(sg, s, false);
    }
}
