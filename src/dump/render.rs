//! `render(&Model)`: stable text. Header, then per graph: inputs, initializers (`name: dtype[shape]
//! sha=<hash>`), nodes in graph order (`name = Op(inputs) -> (outputs) {attrs sorted}`), outputs; subgraphs
//! are indented under their node.

use std::fmt::Write;

use crate::ir::{Attribute, Graph, Model, Tensor, TypeInfo};

pub fn render(model: &Model) -> String {
    let mut out = String::new();
    let mut opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}={}",
                if o.domain().is_empty() {
                    "ai.onnx"
                } else {
                    o.domain()
                },
                o.version.unwrap_or(0)
            )
        })
        .collect();
    opsets.sort();
    let _ = writeln!(
        out,
        "model ir_version={} opsets=[{}]",
        model.ir_version.unwrap_or(0),
        opsets.join(", ")
    );
    if let Some(p) = &model.producer_name {
        let _ = writeln!(
            out,
            "producer {:?} {:?}",
            p,
            model.producer_version.as_deref().unwrap_or("")
        );
    }
    for f in &model.functions {
        let _ = writeln!(
            out,
            "function {}::{}",
            f.domain.as_deref().unwrap_or(""),
            f.name.as_deref().unwrap_or("")
        );
        graph(&mut out, &f.body, 1);
    }
    graph(&mut out, &model.graph, 0);
    out
}

/// A declared type as text, `?` when absent.
pub fn ty(t: &Option<TypeInfo>) -> String {
    t.as_ref().map(|t| t.render()).unwrap_or_else(|| "?".into())
}

pub(crate) fn tensor_summary(t: &Tensor) -> String {
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let ext = if t.is_external() { " external" } else { "" };
    format!(
        "{}[{}] sha={}{ext}",
        t.dtype().name(),
        dims.join(","),
        t.content_hash()
    )
}

pub(crate) fn attr_value(a: &Attribute) -> String {
    use crate::ir::AttrType::*;
    if let Some(r) = &a.ref_attr_name {
        return format!("@{r}");
    }
    match a.kind() {
        Some(Float) => format!("{:?}", a.f.unwrap_or_default()),
        Some(Int) => a.i.unwrap_or_default().to_string(),
        Some(String) => format!(
            "{:?}",
            std::string::String::from_utf8_lossy(a.s.as_deref().unwrap_or_default())
        ),
        Some(Tensor) => a.t.as_ref().map(tensor_summary).unwrap_or_default(),
        Some(Graph) => format!("graph {:?}", a.g.as_ref().map(|g| g.name()).unwrap_or("")),
        Some(Floats) => format!("{:?}", a.floats),
        Some(Ints) => format!("{:?}", a.ints),
        Some(Strings) => {
            let v: Vec<std::string::String> = a
                .strings
                .iter()
                .map(|s| format!("{:?}", std::string::String::from_utf8_lossy(s)))
                .collect();
            format!("[{}]", v.join(", "))
        }
        Some(Tensors) => format!(
            "[{}]",
            a.tensors
                .iter()
                .map(tensor_summary)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Graphs) => format!("{} graphs", a.graphs.len()),
        Some(SparseTensor) => "sparse tensor".into(),
        Some(SparseTensors) => format!("{} sparse tensors", a.sparse_tensors.len()),
        Some(TypeProto) => a.tp.as_ref().map(|t| t.render()).unwrap_or_default(),
        Some(TypeProtos) => format!(
            "[{}]",
            a.type_protos
                .iter()
                .map(|t| t.render())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "<empty>".into(),
    }
}

/// `name = Op(a, b) -> (c) {k=v}` with attributes sorted by name.
pub(crate) fn node_line(g: &Graph, n: &crate::ir::Node, label: &str) -> String {
    let names = |vs: &[Option<crate::ir::ValueId>]| {
        vs.iter()
            .map(|v| v.map(|v| g.value_name(v).to_string()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut attrs: Vec<&Attribute> = n.attrs.iter().collect();
    attrs.sort_by(|a, b| a.name.cmp(&b.name));
    let attrs: Vec<String> = attrs
        .iter()
        .map(|a| format!("{}={}", a.name, attr_value(a)))
        .collect();
    let attrs = if attrs.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", attrs.join(", "))
    };
    format!(
        "{label} = {}({}) -> ({}){attrs}",
        n.op.display(),
        names(&n.inputs),
        names(&n.outputs)
    )
}

/// The label of a node: its name, or `#<position>` for unnamed ones.
pub(crate) fn node_label(n: &crate::ir::Node, position: usize) -> String {
    match n.name.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => format!("#{position}"),
    }
}

fn graph(out: &mut String, g: &Graph, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}graph {:?}", g.name());
    let io_line = |out: &mut String, kind: &str, io: &crate::ir::GraphIo| {
        let _ = writeln!(
            out,
            "{pad}  {kind:<6} {}: {}",
            g.value_name(io.value),
            ty(&io.info.ty)
        );
    };
    for io in g.inputs() {
        io_line(out, "input", io);
    }
    for (v, t) in g.initializers() {
        let _ = writeln!(
            out,
            "{pad}  init   {}: {}",
            g.value_name(v),
            tensor_summary(t)
        );
    }
    for s in &g.sparse_initializers {
        let name = s.values.as_ref().map(|t| t.name()).unwrap_or("");
        let _ = writeln!(out, "{pad}  sparse {name}: dims {:?}", s.dims);
    }
    for (i, (_, n)) in g.nodes().enumerate() {
        let _ = writeln!(out, "{pad}  node   {}", node_line(g, n, &node_label(n, i)));
        for a in &n.attrs {
            for sg in a.subgraphs() {
                let _ = writeln!(out, "{pad}    {}:", a.name);
                graph(out, sg, depth + 3);
            }
        }
    }
    for io in g.outputs() {
        io_line(out, "output", io);
    }
}
