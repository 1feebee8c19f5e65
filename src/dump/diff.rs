//! `diff(a, b)`: nodes and values added, removed and changed, then totals. Nodes are matched by name within
//! their (sub)graph; unnamed or renamed nodes fall back to structure (op, attributes, inputs; then op and
//! outputs).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use crate::dump::render::{attr_value, node_label, node_line, tensor_summary, ty};
use crate::dump::stats::{stats, Stats};
use crate::ir::{Graph, Model};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Changed {
    pub name: String,
    pub before: String,
    pub after: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Totals {
    pub params: u64,
    pub bytes: u64,
    pub nodes: u64,
    pub ops: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Diff {
    pub nodes_added: Vec<String>,
    pub nodes_removed: Vec<String>,
    pub nodes_changed: Vec<Changed>,
    pub values_added: Vec<String>,
    pub values_removed: Vec<String>,
    pub values_changed: Vec<Changed>,
    pub before: Totals,
    pub after: Totals,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.nodes_added.is_empty()
            && self.nodes_removed.is_empty()
            && self.nodes_changed.is_empty()
            && self.values_added.is_empty()
            && self.values_removed.is_empty()
            && self.values_changed.is_empty()
    }
}

struct NodeEntry {
    scope: String,
    label: String,
    named: bool,
    /// The node line without its label.
    body: String,
    op: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// (name, rendered value) of every attribute, sorted by name: read from the node, never parsed back out of
    /// the rendered line (whose value names may hold any text).
    attrs: Vec<(String, String)>,
}

fn collect_nodes(g: &Graph, scope: &str, out: &mut Vec<NodeEntry>) {
    for (i, (_, n)) in g.nodes().enumerate() {
        let label = node_label(n, i);
        let line = node_line(g, n, "");
        let body = line.trim_start_matches(" = ").to_string();
        let names = |vs: &[Option<crate::ir::ValueId>]| {
            vs.iter()
                .map(|v| v.map(|v| g.value_name(v).to_string()).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        let mut attrs: Vec<(String, String)> = n
            .attrs
            .iter()
            .map(|a| (a.name.clone(), attr_value(a)))
            .collect();
        attrs.sort();
        out.push(NodeEntry {
            scope: scope.to_string(),
            label: label.clone(),
            named: n.name.as_deref().is_some_and(|s| !s.is_empty()),
            body,
            op: n.op.display(),
            inputs: names(&n.inputs),
            outputs: names(&n.outputs),
            attrs,
        });
        for a in &n.attrs {
            for sg in a.subgraphs() {
                collect_nodes(sg, &format!("{scope}{label}/{}/", a.name), out);
            }
        }
    }
}

fn collect_values(g: &Graph, scope: &str, out: &mut BTreeMap<String, String>) {
    for io in g.inputs() {
        let t = ty(&io.info.ty);
        out.insert(format!("{scope}input {}", g.value_name(io.value)), t);
    }
    for (v, t) in g.initializers() {
        out.insert(
            format!("{scope}init {}", g.value_name(v)),
            tensor_summary(t),
        );
    }
    for io in g.outputs() {
        let t = ty(&io.info.ty);
        out.insert(format!("{scope}output {}", g.value_name(io.value)), t);
    }
    for (i, (_, n)) in g.nodes().enumerate() {
        for a in &n.attrs {
            for sg in a.subgraphs() {
                collect_values(sg, &format!("{scope}{}/{}/", node_label(n, i), a.name), out);
            }
        }
    }
}

fn totals(s: &Stats) -> Totals {
    Totals {
        params: s.params(),
        bytes: s.bytes(),
        nodes: s.nodes,
        ops: s.ops.clone(),
    }
}

pub fn diff(a: &Model, b: &Model) -> Diff {
    let (mut na, mut nb) = (Vec::new(), Vec::new());
    collect_nodes(&a.graph, "", &mut na);
    collect_nodes(&b.graph, "", &mut nb);
    let mut matched_a = vec![None; na.len()];
    let mut used_b = vec![false; nb.len()];

    // 1. by name, when the name is unique in its scope on both sides
    let count = |v: &[NodeEntry]| {
        let mut m: HashMap<(String, String), usize> = HashMap::new();
        for e in v.iter().filter(|e| e.named) {
            *m.entry((e.scope.clone(), e.label.clone())).or_default() += 1;
        }
        m
    };
    let (ca, cb) = (count(&na), count(&nb));
    let index_b: HashMap<(String, String), usize> = nb
        .iter()
        .enumerate()
        .filter(|(_, e)| e.named)
        .map(|(i, e)| ((e.scope.clone(), e.label.clone()), i))
        .collect();
    for (i, e) in na.iter().enumerate() {
        let key = (e.scope.clone(), e.label.clone());
        if e.named && ca.get(&key) == Some(&1) && cb.get(&key) == Some(&1) {
            if let Some(j) = index_b.get(&key) {
                matched_a[i] = Some(*j);
                used_b[*j] = true;
            }
        }
    }
    // 2. structure: same op, attributes and inputs; then same op and outputs (Debug of the tuple: quoted and
    //    escaped, so no name can run into the next field)
    let keys: [&dyn Fn(&NodeEntry) -> String; 2] = [
        &|e| format!("{:?}", (&e.scope, &e.op, &e.attrs, &e.inputs)),
        &|e| format!("{:?}", (&e.scope, &e.op, &e.outputs)),
    ];
    for key in keys {
        let mut pool: HashMap<String, Vec<usize>> = HashMap::new();
        for (j, e) in nb.iter().enumerate().rev() {
            if !used_b[j] {
                pool.entry(key(e)).or_default().push(j);
            }
        }
        for (i, e) in na.iter().enumerate() {
            if matched_a[i].is_none() {
                if let Some(j) = pool.get_mut(&key(e)).and_then(|v| v.pop()) {
                    matched_a[i] = Some(j);
                    used_b[j] = true;
                }
            }
        }
    }

    let show = |e: &NodeEntry| format!("{}{} = {}", e.scope, e.label, e.body);
    let mut d = Diff {
        nodes_added: nb
            .iter()
            .enumerate()
            .filter(|(j, _)| !used_b[*j])
            .map(|(_, e)| show(e))
            .collect(),
        nodes_removed: na
            .iter()
            .enumerate()
            .filter(|(i, _)| matched_a[*i].is_none())
            .map(|(_, e)| show(e))
            .collect(),
        nodes_changed: Vec::new(),
        values_added: Vec::new(),
        values_removed: Vec::new(),
        values_changed: Vec::new(),
        before: totals(&stats(a)),
        after: totals(&stats(b)),
    };
    for (i, m) in matched_a.iter().enumerate() {
        if let Some(j) = m {
            let (ea, eb) = (&na[i], &nb[*j]);
            if ea.body != eb.body || ea.label != eb.label {
                let name = if ea.label == eb.label {
                    format!("{}{}", ea.scope, ea.label)
                } else {
                    format!("{}{} -> {}", ea.scope, ea.label, eb.label)
                };
                d.nodes_changed.push(Changed {
                    name,
                    before: ea.body.clone(),
                    after: eb.body.clone(),
                });
            }
        }
    }
    let (mut va, mut vb) = (BTreeMap::new(), BTreeMap::new());
    collect_values(&a.graph, "", &mut va);
    collect_values(&b.graph, "", &mut vb);
    for (k, v) in &va {
        match vb.get(k) {
            None => d.values_removed.push(format!("{k}: {v}")),
            Some(w) if w != v => d.values_changed.push(Changed {
                name: k.clone(),
                before: v.clone(),
                after: w.clone(),
            }),
            _ => {}
        }
    }
    for (k, v) in &vb {
        if !va.contains_key(k) {
            d.values_added.push(format!("{k}: {v}"));
        }
    }
    d
}

fn signed(a: u64, b: u64) -> String {
    let delta = b as i128 - a as i128;
    if delta == 0 {
        format!("{a}")
    } else {
        format!("{a} -> {b} ({delta:+})")
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "nodes: +{} -{} ~{}  values: +{} -{} ~{}",
            self.nodes_added.len(),
            self.nodes_removed.len(),
            self.nodes_changed.len(),
            self.values_added.len(),
            self.values_removed.len(),
            self.values_changed.len()
        )?;
        for n in &self.nodes_removed {
            writeln!(f, "- node {n}")?;
        }
        for n in &self.nodes_added {
            writeln!(f, "+ node {n}")?;
        }
        for c in &self.nodes_changed {
            writeln!(
                f,
                "~ node {}\n    - {}\n    + {}",
                c.name, c.before, c.after
            )?;
        }
        for v in &self.values_removed {
            writeln!(f, "- {v}")?;
        }
        for v in &self.values_added {
            writeln!(f, "+ {v}")?;
        }
        for c in &self.values_changed {
            writeln!(f, "~ {}: {} => {}", c.name, c.before, c.after)?;
        }
        writeln!(
            f,
            "params: {}",
            signed(self.before.params, self.after.params)
        )?;
        writeln!(f, "bytes: {}", signed(self.before.bytes, self.after.bytes))?;
        writeln!(f, "nodes: {}", signed(self.before.nodes, self.after.nodes))?;
        let mut ops: Vec<&String> = self
            .before
            .ops
            .keys()
            .chain(self.after.ops.keys())
            .collect();
        ops.sort();
        ops.dedup();
        for op in ops {
            let (x, y) = (
                self.before.ops.get(op).copied().unwrap_or(0),
                self.after.ops.get(op).copied().unwrap_or(0),
            );
            writeln!(f, "  {op}: {}", signed(x, y))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{model, GraphBuilder};
    use crate::ir::{DataType, OpKey};

    /// An unnamed Relu reading `input`, writing `output`.
    fn relu(input: &str, output: &str) -> Model {
        let mut b = GraphBuilder::new("g");
        let x = b.input(input, DataType::FLOAT, &["4"]);
        let y = b.named_node("", OpKey::onnx("Relu"), &[Some(x)], &[output], vec![])[0];
        b.output(y, DataType::FLOAT, &["4"]);
        model(b.build(), 17)
    }

    #[test]
    fn attributes_are_compared_structurally_not_found_in_the_text() {
        // The input's name holds ") {", the text the old matcher looked for: it took the rest of the line (the
        // output name included) for the attributes, so renaming the output made the node "removed + added".
        let d = diff(&relu("x) {y", "r"), &relu("x) {y", "r2"));
        assert!(
            d.nodes_added.is_empty() && d.nodes_removed.is_empty(),
            "{d}"
        );
        assert_eq!(d.nodes_changed.len(), 1, "{d}");
        // different attributes on the same op and inputs are not matched by the first structural key
        let mut a = relu("x", "r");
        let mut b = relu("x", "r2");
        for (m, alpha) in [(&mut a, 0.1f32), (&mut b, 0.2)] {
            let id = m.graph.node_ids()[0];
            let mut p = crate::ir::Patch::new("t");
            p.set_attr(id, crate::ir::Attribute::float("alpha", alpha));
            m.graph.apply(p).unwrap();
        }
        let d = diff(&a, &b);
        assert_eq!(d.nodes_removed.len(), 1, "{d}");
        assert_eq!(d.nodes_added.len(), 1, "{d}");
    }
}
