//! Counts over a model: parameters and bytes by dtype and by where they live, op histogram, subgraphs.
//!
//! This is the one parameter count (`inspect`, `diff` and `evaluate` all use it), with the definition of
//! `tools/real_models.json` ("params_counted"): initializer parameters = elements of every initializer of the
//! main graph and of every nested subgraph; constant parameters = elements of the value of every ai.onnx
//! `Constant` node in all graphs (`value` / `sparse_value`: the product of its dims; `value_floats`,
//! `value_ints`, `value_strings`: their length; scalar `value_float`, `value_int`, `value_string`: 1). Tensors in
//! other attributes (e.g. `ConstantOfShape`'s `value`) are not parameters.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ir::{Attribute, DataType, Graph, Model, Node, Tensor};

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

fn add_count(s: &mut Stats, dtype: String, n: u64, bytes: u64) -> u64 {
    let e = s.params_by_dtype.entry(dtype).or_default();
    // saturating: counts come from the model file and must not overflow into a panic
    e.params = e.params.saturating_add(n);
    e.bytes = e.bytes.saturating_add(bytes);
    n
}

fn add(s: &mut Stats, t: &Tensor) -> u64 {
    let n = t.numel().unwrap_or(0);
    add_count(s, t.dtype().name().into_owned(), n, t.byte_size())
}

/// Elements, dtype and bytes of a `Constant` node's value, whichever attribute holds it (module docs).
fn constant_value(a: &Attribute) -> Option<(String, u64, u64)> {
    let name = |dt: DataType| dt.name().into_owned();
    let len = |n: usize| n as u64;
    Some(match a.name.as_str() {
        "value" => {
            let t = a.t.as_ref()?;
            (name(t.dtype()), t.numel().unwrap_or(0), t.byte_size())
        }
        "sparse_value" => {
            let sp = a.sparse_tensor.as_ref()?;
            let n = sp
                .dims
                .iter()
                .try_fold(1u64, |acc, d| acc.checked_mul(u64::try_from(*d).ok()?))
                .unwrap_or(0);
            let dt = sp
                .values
                .as_ref()
                .map(|v| v.dtype())
                .unwrap_or(DataType::FLOAT);
            let bytes = sp.values.as_ref().map_or(0, |v| v.byte_size())
                + sp.indices.as_ref().map_or(0, |v| v.byte_size());
            (name(dt), n, bytes)
        }
        "value_float" => (name(DataType::FLOAT), 1, 4),
        "value_floats" => (
            name(DataType::FLOAT),
            len(a.floats.len()),
            4 * len(a.floats.len()),
        ),
        "value_int" => (name(DataType::INT64), 1, 8),
        "value_ints" => (
            name(DataType::INT64),
            len(a.ints.len()),
            8 * len(a.ints.len()),
        ),
        "value_string" => (
            name(DataType::STRING),
            1,
            a.s.as_ref().map_or(0, |s| len(s.len())),
        ),
        "value_strings" => (
            name(DataType::STRING),
            len(a.strings.len()),
            a.strings.iter().map(|s| len(s.len())).sum(),
        ),
        _ => return None,
    })
}

/// Parameters held by a `Constant` node (0 for any other node).
fn constant_params(s: &mut Stats, n: &Node) -> u64 {
    if !n.op.is("Constant") {
        return 0;
    }
    n.attrs
        .iter()
        .filter_map(constant_value)
        .map(|(dt, k, bytes)| add_count(s, dt, k, bytes))
        .sum()
}

fn graph_stats(g: &Graph, s: &mut Stats, top: bool) {
    if !top {
        s.subgraphs += 1;
    }
    for (_, t) in g.initializers() {
        let n = add(s, t);
        s.initializer_params = s.initializer_params.saturating_add(n);
        s.initializers += 1;
        if t.is_external() {
            s.external_params = s.external_params.saturating_add(n);
        }
    }
    for (_, n) in g.nodes() {
        s.nodes += 1;
        *s.ops.entry(n.op.display()).or_default() += 1;
        if n.op.is("Constant") {
            s.constant_nodes += 1;
            let k = constant_params(s, n);
            s.constant_params = s.constant_params.saturating_add(k);
        }
    }
    for (_, sg) in g.subgraphs() {
        graph_stats(sg, s, false);
    }
}
