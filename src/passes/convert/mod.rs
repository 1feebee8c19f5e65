//! `upgrade-opset{to=N}`: raise the default-domain (ai.onnx) opset of a model to N (at most 21) and rewrite every
//! operator whose signature changed between the opset the model holds and N, in the main graph, every If / Loop
//! / Scan body at any depth and every model-local function. The IR version is raised to the one N needs.
//!
//! Each converter reads the node through its op view at the source opset (so defaults are the source's) and
//! writes the target form: attribute -> input moves become int64 (or float) constants with fresh names
//! (initializers in the main graph, `Constant` nodes inside bodies and functions), renamed ops are changed in
//! place, and semantics that changed (Softmax's axis at 13) get an exact rewrite. A node that cannot be
//! rewritten exactly is an error naming it; the model is never left in a form ONNX Runtime would refuse.
//! Downgrades are a usage error; custom domains are untouched.

mod axes;
pub(crate) mod facts;
mod norm;
mod resize;
mod scalars;
mod softmax;

use crate::error::{Error, Result};
use crate::ir::{
    Attribute, DataType, Graph, Model, Node, NodeId, OpKey, Patch, Tensor, ValRef, ValueDef,
    ValueId,
};
use crate::passes::{Outcome, Pass, PassContext, PassReport};

pub const PASS: &str = "upgrade-opset";

/// The newest ai.onnx opset this pass converts to.
pub const MAX_OPSET: i64 = 21;
/// The oldest source opset it converts from (older ones also changed broadcasting and `consumed_inputs`).
pub const MIN_SOURCE_OPSET: i64 = 7;

crate::pass_options! {
    /// Options of `upgrade-opset`.
    pub struct UpgradeOpsetOptions {
        /// Target ai.onnx opset: at least the model's, at most 21.
        to: i64 = MAX_OPSET,
    }
}

pub struct UpgradeOpset {
    pub to: i64,
}

impl UpgradeOpset {
    pub fn new(opts: UpgradeOpsetOptions) -> Result<UpgradeOpset> {
        if !(1..=MAX_OPSET).contains(&opts.to) {
            return Err(Error::Usage(format!(
                "pass '{PASS}': to={} is outside 1..={MAX_OPSET}",
                opts.to
            )));
        }
        Ok(UpgradeOpset { to: opts.to })
    }
}

/// Raise `model` to ai.onnx opset `to` for a pass whose output needs a newer opset (per-axis Q/DQ needs 13,
/// QuantizeLinear 10): the one helper every such pass calls. A model already at `to` or above is left as it is
/// (`Ok(None)`); otherwise the conversion runs on a copy (tensor data is shared, so the copy is cheap) that
/// replaces the model only when it succeeds, so on an error the model is exactly as it was and the caller
/// can fall back (per-tensor scales, say).
pub fn ensure_opset(model: &mut Model, to: i64) -> Result<Option<PassReport>> {
    if model.opset("").is_some_and(|v| v >= to) {
        return Ok(None);
    }
    let mut raised = model.clone();
    let report = UpgradeOpset::new(UpgradeOpsetOptions { to })?
        .run(&mut raised, &mut PassContext::default())?;
    *model = raised;
    Ok(Some(report))
}

/// The lowest IR version that may import ai.onnx opset `opset` (onnx.helper.VERSION_TABLE).
pub fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        23 => 11,
        _ => 12,
    }
}

impl Pass for UpgradeOpset {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(self.name());
        let to = self.to;
        let Some(from) = model.opset("") else {
            let mut uses_onnx = false;
            model
                .graph
                .walk(&mut |g| uses_onnx |= g.nodes().any(|(_, n)| n.op.is_default_domain()));
            if uses_onnx {
                return Err(Error::Pass {
                    pass: PASS.into(),
                    msg: "the model uses ai.onnx operators but imports no ai.onnx opset".into(),
                });
            }
            // nothing in ai.onnx to convert; custom domains are left alone
            return Ok(report);
        };
        // every check before the first change
        let source_opsets = |what: String, from: i64| -> Result<()> {
            if to < from {
                return Err(Error::Usage(format!(
                    "pass '{PASS}': {what} imports ai.onnx opset {from}; to={to} would be a downgrade"
                )));
            }
            if from < MIN_SOURCE_OPSET && from < to {
                return Err(Error::Pass {
                    pass: PASS.into(),
                    msg: format!(
                        "{what} imports ai.onnx opset {from}; the oldest source opset supported is {MIN_SOURCE_OPSET}"
                    ),
                });
            }
            Ok(())
        };
        source_opsets("the model".into(), from)?;
        let default_import = |f: &crate::ir::Function| {
            f.opset_import
                .iter()
                .find(|o| o.domain().is_empty())
                .and_then(|o| o.version)
        };
        for f in &model.functions {
            if let Some(ffrom) = default_import(f) {
                let fname = f.name.as_deref().unwrap_or("");
                source_opsets(format!("function '{fname}'"), ffrom)?;
            }
        }
        report.stat("opset_from", from as u64);
        report.stat("opset_to", to as u64);
        if to > from {
            convert_graph(&mut model.graph, from, to, "", false, &mut report)?;
            model.set_opset("", to);
            report.remark(
                "model",
                Outcome::Applied,
                format!("ai.onnx opset {from} -> {to}"),
            );
            report.changed = true;
        }
        for f in &mut model.functions {
            let Some(ffrom) = default_import(f).filter(|v| *v < to) else {
                continue;
            };
            let fname = f.name.clone().unwrap_or_default();
            convert_graph(
                &mut f.body,
                ffrom,
                to,
                &format!("function {fname}/"),
                true,
                &mut report,
            )?;
            for o in f.opset_import.iter_mut().filter(|o| o.domain().is_empty()) {
                o.version = Some(to);
            }
            report.remark(
                format!("function {fname}"),
                Outcome::Applied,
                format!("ai.onnx opset {ffrom} -> {to}"),
            );
            report.changed = true;
        }
        let need = ir_version_for_opset(to);
        if model.ir_version.is_none_or(|v| v < need) {
            report.remark(
                "model",
                Outcome::Applied,
                format!(
                    "IR version {} -> {need} (needed by opset {to})",
                    model
                        .ir_version
                        .map_or_else(|| "unset".to_string(), |v| v.to_string())
                ),
            );
            model.ir_version = Some(need);
            report.changed = true;
        }
        Ok(report)
    }
}

/// Convert one graph (bodies first, then its own nodes in one patch).
fn convert_graph(
    g: &mut Graph,
    from: i64,
    to: i64,
    path: &str,
    is_body: bool,
    report: &mut PassReport,
) -> Result<()> {
    for id in g.node_ids().to_vec() {
        let owner = g.node(id).map(|n| n.name().to_string()).unwrap_or_default();
        let mut changed = false;
        for (k, sg) in g.node_subgraphs_mut(id).into_iter().enumerate() {
            let before = report.changes.changes.len();
            let sub_path = format!(
                "{path}{owner}/{}/",
                sg.name.clone().unwrap_or_else(|| k.to_string())
            );
            convert_graph(sg, from, to, &sub_path, true, report)?;
            changed |= report.changes.changes.len() != before;
        }
        if changed {
            let mut p = Patch::new(PASS);
            p.refresh_captures(id);
            g.apply(p)?;
        }
    }
    let gr: &Graph = g;
    let mut cx = Cx {
        g: gr,
        patch: Patch::new(PASS),
        from,
        to,
        path,
        is_body,
    };
    let mut remarks = Vec::new();
    for (id, node) in gr.nodes() {
        if !node.op.is_default_domain() {
            continue;
        }
        // a malformed attribute (wrong type, missing value) stays a bad-model error, placed at the node
        let converted = convert_node(&mut cx, id, node).map_err(|e| match e {
            Error::Invalid { file, at, msg } => Error::Invalid {
                file,
                at: format!("node '{path}{}' ({}): {at}", node.name(), node.op.display()),
                msg,
            },
            other => other,
        })?;
        if let Some(what) = converted {
            remarks.push((format!("{path}{}", node.name()), what));
        }
    }
    let patch = cx.patch;
    report.stat("nodes_converted", remarks.len() as u64);
    for (at, what) in remarks {
        report.remark(at, Outcome::Applied, what);
    }
    if !patch.is_empty() {
        report.record(g.apply(patch)?);
    }
    Ok(())
}

/// Dispatch by op type; `Some(remark)` when the node was rewritten.
fn convert_node(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    let op = node.op.op_type.as_str();
    match op {
        "Squeeze" | "Unsqueeze" => axes::squeeze(cx, id, node),
        "Split" => axes::split(cx, id, node),
        "Slice" => axes::slice(cx, id, node),
        "TopK" => axes::topk(cx, id, node),
        _ if crate::ir::ops::REDUCE_OPS.contains(&op) => axes::reduce(cx, id, node),
        "Softmax" | "LogSoftmax" | "Hardmax" => softmax::softmax(cx, id, node),
        "Clip" => scalars::clip(cx, id, node),
        "Pad" => scalars::pad(cx, id, node),
        "Dropout" => scalars::dropout(cx, id, node),
        "BatchNormalization" => norm::batchnorm(cx, id, node),
        "GroupNormalization" => norm::groupnorm(cx, id, node),
        // opset 14 added `layout` (default 0, the only layout before): spelled out, as onnx.version_converter
        // writes it
        "LSTM" | "GRU" | "RNN"
            if cx.crosses(14) && !node.attrs.iter().any(|a| a.name == "layout") =>
        {
            cx.patch
                .set_attr(id, crate::ir::Attribute::int("layout", 0));
            Ok(Some(
                "layout=0 written (the attribute exists from opset 14)".into(),
            ))
        }
        "Upsample" => resize::upsample(cx, id, node),
        "Resize" => resize::resize(cx, id, node),
        // deprecated from opset 11 (a model at 11+ that still uses it is converted too)
        "Scatter" if cx.to >= 11 => {
            cx.patch.set_op(id, OpKey::onnx("ScatterElements"));
            Ok(Some(
                "Scatter -> ScatterElements (Scatter is deprecated at opset 11)".into(),
            ))
        }
        "Scan" if cx.crosses(9) => Err(cx.fail(
            node,
            "Scan-8 has a batch axis and sequence_lens input that Scan-9 dropped; no exact rewrite",
        )),
        _ => Ok(None),
    }
}

/// What a converter needs: the graph being read, the patch being built, the opset span.
pub(crate) struct Cx<'a> {
    pub g: &'a Graph,
    pub patch: Patch,
    pub from: i64,
    pub to: i64,
    pub path: &'a str,
    /// Bodies and functions get `Constant` nodes instead of initializers.
    pub is_body: bool,
}

impl Cx<'_> {
    /// True when the conversion crosses the opset `v` (`from < v <= to`).
    pub fn crosses(&self, v: i64) -> bool {
        self.from < v && v <= self.to
    }

    pub fn fail(&self, node: &Node, msg: impl Into<String>) -> Error {
        Error::Pass {
            pass: PASS.into(),
            msg: format!(
                "cannot convert node '{}{}' ({}) from opset {} to {}: {}",
                self.path,
                node.name(),
                node.op.display(),
                self.from,
                self.to,
                msg.into()
            ),
        }
    }

    /// The anchor of fresh names for what replaces or serves `node`: its name, prefixed in bodies with the
    /// path (`if_0/then_branch/`) so a new name cannot shadow one of an enclosing graph.
    pub fn anchor(&self, node: &Node) -> String {
        format!("{}{}", self.path, node.name())
    }

    /// A constant: an initializer in the main graph, a `Constant` node in a body or function.
    pub fn constant(&mut self, node: &Node, t: Tensor) -> ValRef {
        let anchor = self.anchor(node);
        if self.is_body {
            self.patch.add_node(
                self.g,
                &anchor,
                OpKey::onnx("Constant"),
                vec![],
                vec![Attribute::tensor("value", t)],
                1,
            )[0]
        } else {
            self.patch.add_initializer(self.g, &anchor, t)
        }
    }

    pub fn ints(&mut self, node: &Node, v: &[i64]) -> ValRef {
        self.constant(node, Tensor::from_i64("", vec![v.len() as i64], v))
    }

    /// The element type of `v`: declared (graph input/output/value_info, initializer, Constant) or following
    /// from its producer.
    pub fn dtype(&self, v: ValueId) -> Option<DataType> {
        facts::known_dtype(self.g, v)
    }

    /// The declared shape of `v` when every dim is a number or a symbol; `None` dims are unknown.
    pub fn declared_dims(&self, v: ValueId) -> Option<Vec<Option<i64>>> {
        declared_dims(self.g, v)
    }
}

pub(crate) fn declared_dtype(g: &Graph, v: ValueId) -> Option<DataType> {
    if let Some(t) = g.value(v).init.as_ref() {
        return Some(t.dtype());
    }
    if let Some(t) = g.constant(v) {
        return Some(t.dtype());
    }
    let (dt, _) = g.declared_type(v)?.as_tensor()?;
    (dt != DataType::UNDEFINED).then_some(dt)
}

pub(crate) fn declared_dims(g: &Graph, v: ValueId) -> Option<Vec<Option<i64>>> {
    use crate::ir::value::DimValue;
    if g.value(v).def == ValueDef::Initializer {
        return g
            .value(v)
            .init
            .as_ref()
            .map(|t| t.dims.iter().map(|d| Some(*d)).collect());
    }
    if let Some(t) = g.constant(v) {
        return Some(t.dims.iter().map(|d| Some(*d)).collect());
    }
    let (_, shape) = g.declared_type(v)?.as_tensor()?;
    Some(
        shape?
            .0
            .iter()
            .map(|d| match d.value {
                DimValue::Fixed(x) if x >= 0 => Some(x),
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{model, GraphBuilder};
    use crate::ir::AttrList;

    fn run(m: &mut Model, to: i64) -> Result<PassReport> {
        UpgradeOpset::new(UpgradeOpsetOptions { to })?.run(m, &mut PassContext::default())
    }

    #[test]
    fn squeeze_axes_move_to_an_initializer_and_ir_rises() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["1", "3"]);
        let y = b.node("Squeeze", &[x], vec![Attribute::ints("axes", vec![0])], 1)[0];
        b.output(y, DataType::FLOAT, &["3"]);
        let mut m = model(b.build(), 11);
        m.ir_version = Some(6);
        let r = run(&mut m, 13).unwrap();
        assert!(r.changed);
        assert_eq!((m.opset(""), m.ir_version), (Some(13), Some(7)));
        let (_, n) = m.graph.nodes().next().unwrap();
        assert!(n.attr("axes").is_none());
        let axes = m.graph.constant(n.input(1).unwrap()).unwrap();
        assert_eq!(axes.to_i64_vec().unwrap(), [0]);
        assert_eq!(
            m.graph.value_name(n.input(1).unwrap()),
            "squeeze_0/upgrade_opset_0"
        );
        m.graph.verify().unwrap();
    }

    #[test]
    fn softmax_on_the_last_axis_of_a_known_rank_keeps_one_node() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2", "5"]);
        let y = b.node("Softmax", &[x], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["2", "5"]);
        let mut m = model(b.build(), 12);
        run(&mut m, 13).unwrap();
        assert_eq!(m.graph.node_count(), 1);
        let (_, n) = m.graph.nodes().next().unwrap();
        assert_eq!(n.get_int("axis").unwrap(), Some(1));
        // unknown rank: spelled out, the original node (name and output) becomes the Reshape
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &[]);
        let y = b.named_node("sm", OpKey::onnx("Softmax"), &[Some(x)], &["y"], vec![])[0];
        b.output(y, DataType::FLOAT, &[]);
        let mut g = b.build();
        g.inputs[0].info.ty = None;
        let mut m = model(g, 12);
        run(&mut m, 13).unwrap();
        let ops: Vec<(&str, &str)> = m
            .graph
            .nodes()
            .map(|(_, n)| (n.name(), n.op.op_type.as_str()))
            .collect();
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert!(ops.contains(&("sm", "Reshape")), "{ops:?}");
        m.graph.verify().unwrap();
    }

    #[test]
    fn downgrade_and_out_of_range_are_usage_errors() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2"]);
        let y = b.node("Relu", &[x], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["2"]);
        let mut m = model(b.build(), 17);
        assert!(matches!(run(&mut m, 13), Err(Error::Usage(_))));
        assert!(matches!(run(&mut m, 22), Err(Error::Usage(_))));
        assert!(!run(&mut m, 17).unwrap().changed);
        let r = run(&mut m, 21).unwrap();
        assert!(
            r.changed && r.changes.is_empty(),
            "only the opset and IR version move"
        );
        assert_eq!(m.ir_version, Some(10));
    }

    #[test]
    fn function_bodies_are_converted_with_constant_nodes() {
        let mut b = GraphBuilder::new("f");
        let x = b.outer("x");
        let y = b.node("Unsqueeze", &[x], vec![Attribute::ints("axes", vec![0])], 1)[0];
        b.output(y, DataType::FLOAT, &[]);
        let body = b.build();
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2"]);
        let y = b.node("Relu", &[x], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["2"]);
        let mut m = model(b.build(), 11);
        m.functions.push(crate::ir::Function {
            name: Some("f".into()),
            domain: Some("local".into()),
            overload: None,
            attribute: vec![],
            attribute_proto: vec![],
            body,
            opset_import: vec![crate::ir::OpsetId {
                domain: Some(String::new()),
                version: Some(11),
            }],
            doc_string: None,
            metadata_props: vec![],
        });
        let r = run(&mut m, 13).unwrap();
        let f = &m.functions[0];
        assert_eq!(f.opset_import[0].version, Some(13));
        let ops: Vec<&str> = f.body.nodes().map(|(_, n)| n.op.op_type.as_str()).collect();
        assert_eq!(ops, ["Constant", "Unsqueeze"]);
        let (_, u) = f.body.nodes().nth(1).unwrap();
        assert_eq!(
            f.body
                .constant(u.input(1).unwrap())
                .unwrap()
                .to_i64_vec()
                .unwrap(),
            [0]
        );
        assert!(
            r.remarks.iter().any(|x| x.at == "function f/unsqueeze_0"),
            "{r}"
        );
    }

    #[test]
    fn a_malformed_attribute_is_a_bad_model_error_at_the_node() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["1", "3"]);
        let y = b.node("Squeeze", &[x], vec![Attribute::float("axes", 0.0)], 1)[0];
        b.output(y, DataType::FLOAT, &["3"]);
        let mut m = model(b.build(), 11);
        let e = run(&mut m, 13).unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
        assert!(e.to_string().contains("node 'squeeze_0' (Squeeze)"), "{e}");
    }

    #[test]
    fn ensure_opset_raises_only_when_needed() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2"]);
        let y = b.node("Relu", &[x], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["2"]);
        let mut m = model(b.build(), 12);
        assert!(ensure_opset(&mut m, 13).unwrap().is_some_and(|r| r.changed));
        assert_eq!(m.opset(""), Some(13));
        assert!(
            ensure_opset(&mut m, 11).unwrap().is_none(),
            "never a downgrade"
        );
        assert_eq!(m.opset(""), Some(13));
        // a conversion that fails leaves the model exactly as it was (callers fall back on it)
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["1", "3"]);
        let y = b.node("Squeeze", &[x], vec![Attribute::float("axes", 0.0)], 1)[0];
        b.output(y, DataType::FLOAT, &["3"]);
        let mut bad = model(b.build(), 11);
        let before = crate::dump::render(&bad);
        assert!(ensure_opset(&mut bad, 13).is_err());
        assert_eq!(crate::dump::render(&bad), before);
        assert_eq!(bad.opset(""), Some(11));
    }

    #[test]
    fn ir_versions_follow_the_onnx_table() {
        for (opset, ir) in [
            (11, 6),
            (12, 7),
            (13, 7),
            (14, 7),
            (15, 8),
            (17, 8),
            (18, 8),
            (19, 9),
            (20, 9),
            (21, 10),
        ] {
            assert_eq!(ir_version_for_opset(opset), ir, "opset {opset}");
        }
    }
}
