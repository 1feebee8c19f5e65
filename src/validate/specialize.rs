//! Control flow for one run: when a sample's input values decide an `If` condition (a flag input, silero's `sr`,
//! a shape test like `Equal(Gather(Shape(x), k), c)`), the model is specialised on that sample: the condition is
//! computed, the taken branch is inlined into the main graph in place of the `If`, and this repeats for the
//! `If`s the inlined branches bring up (nested ones), so tract never types a dead branch.
//!
//! The rewrite works on a clone for the run only; the user's model is never changed. A condition is computed
//! from the sample directly when it is a graph input or a constant, else by running the condition's cone (the
//! nodes it depends on, none of them an unresolved `If`) through tract. Branch values whose names the enclosing
//! graph already holds are renamed (`<name>/<if>_<k>`), also where nested subgraphs read them. A condition that
//! cannot be computed, or a branch that cannot be inlined (sparse initializers, a name read from nowhere), leaves
//! its `If` in place with a remark; tract then types it as it is.

use std::collections::{HashMap, HashSet};

use tract_onnx::prelude::{DatumType, Tensor as TractTensor};

use crate::error::{Error, Result};
use crate::ir::{Graph, GraphIo, Model, Node, NodeId, OpKey, Use, UseSlot, ValueDef, ValueId};
use crate::validate::compare::sample_shapes;
use crate::validate::inputs::Sample;
use crate::validate::run::{load, to_tract};

/// A model specialised on one sample.
pub(crate) struct Specialised {
    pub model: Model,
    /// Each `If` inlined, in order: node name and whether the then-branch was taken. Equal keys = same model.
    pub taken: Vec<(String, bool)>,
    /// What was specialised and what could not be, one line each.
    pub remarks: Vec<String>,
}

/// Upper bound on specialisation rounds (each inlines at least one `If`); guards against a malformed model.
const MAX_ROUNDS: usize = 4096;

fn is_if(n: &Node) -> bool {
    n.op.is_default_domain() && n.op.op_type == "If"
}

/// Specialise `model` on `sample`; `None` when its main graph holds no `If` (nothing to do).
pub(crate) fn specialise(model: &Model, sample: &Sample) -> Result<Option<Specialised>> {
    if !model.graph.nodes().any(|(_, n)| is_if(n)) {
        return Ok(None);
    }
    let mut m = model.clone();
    let mut taken = Vec::new();
    let mut remarks = Vec::new();
    // Ifs left as they are (condition not computable, branch not inlinable), with the reason given once.
    let mut stuck: HashSet<NodeId> = HashSet::new();
    for _ in 0..MAX_ROUNDS {
        let g = &m.graph;
        let ready: Vec<(NodeId, ValueId)> = g
            .nodes()
            .filter(|(id, n)| is_if(n) && !stuck.contains(id))
            .filter_map(|(id, n)| n.input(0).map(|c| (id, c)))
            .filter(|(_, c)| !cone(g, &[*c]).iter().any(|n| is_if(g.node(*n).unwrap())))
            .collect();
        if ready.is_empty() {
            break;
        }
        let conds: Vec<ValueId> = ready.iter().map(|r| r.1).collect();
        // All ready conditions in one run; when that fails, one by one, to find the ones that cannot be.
        let values: Vec<Result<bool>> = match conditions(&m, &conds, sample) {
            Ok(v) => v.into_iter().map(Ok).collect(),
            Err(e) if conds.len() == 1 => vec![Err(e)],
            Err(_) => conds
                .iter()
                .map(|c| conditions(&m, &[*c], sample).map(|v| v[0]))
                .collect(),
        };
        for ((id, _), value) in ready.into_iter().zip(values) {
            let name = node_label(&m.graph, id);
            let then = match value {
                Ok(t) => t,
                Err(e) => {
                    remarks.push(format!(
                        "If '{name}' not specialised: the condition could not be computed ({e})"
                    ));
                    stuck.insert(id);
                    continue;
                }
            };
            match inline_branch(&mut m.graph, id, then) {
                Ok(()) => {
                    remarks.push(format!(
                        "If '{name}' specialised: condition {then}, {} inlined",
                        branch_attr(then)
                    ));
                    taken.push((name, then));
                }
                Err(e) => {
                    remarks.push(format!("If '{name}' not specialised: {e}"));
                    stuck.insert(id);
                }
            }
        }
    }
    Ok(Some(Specialised {
        model: m,
        taken,
        remarks,
    }))
}

fn branch_attr(then: bool) -> &'static str {
    if then {
        "then_branch"
    } else {
        "else_branch"
    }
}

/// A node's name, or its first output's name for an unnamed node.
fn node_label(g: &Graph, id: NodeId) -> String {
    let n = g.node(id).expect("live node");
    if !n.name().is_empty() {
        return n.name().to_string();
    }
    n.output(0)
        .map(|v| g.value_name(v).to_string())
        .unwrap_or_default()
}

/// Nodes of `g` the values `from` depend on (through inputs and the outer values their subgraphs read).
fn cone(g: &Graph, from: &[ValueId]) -> HashSet<NodeId> {
    let mut nodes = HashSet::new();
    let mut seen = HashSet::new();
    let mut work: Vec<ValueId> = from.to_vec();
    while let Some(v) = work.pop() {
        if !seen.insert(v) {
            continue;
        }
        let ValueDef::Node(n, _) = g.value(v).def else {
            continue;
        };
        let Some(node) = g.node(n) else { continue };
        if !nodes.insert(n) {
            continue;
        }
        work.extend(node.inputs.iter().flatten().copied());
        for a in &node.attrs {
            for sg in a.subgraphs() {
                work.extend(
                    sg.free_variables()
                        .iter()
                        .filter_map(|name| g.value_by_name(name)),
                );
            }
        }
    }
    nodes
}

/// The truth of a condition tensor: one element, non-zero.
fn truth(what: &str, t: &TractTensor) -> Result<bool> {
    if t.len() != 1 {
        return Err(Error::Validate(format!(
            "condition '{what}' has {} elements, not 1",
            t.len()
        )));
    }
    let v = if t.datum_type() == DatumType::Bool {
        t.to_plain_array_view::<bool>()
            .ok()
            .and_then(|v| v.iter().next().copied())
    } else {
        t.cast_to::<f64>().ok().and_then(|c| {
            c.to_plain_array_view::<f64>()
                .ok()
                .and_then(|v| v.iter().next().map(|x| *x != 0.0))
        })
    };
    v.ok_or_else(|| {
        Error::Validate(format!(
            "condition '{what}' of type {:?} is not a number",
            t.datum_type()
        ))
    })
}

/// The values of the conditions `conds` of the main graph on `sample`.
fn conditions(model: &Model, conds: &[ValueId], sample: &Sample) -> Result<Vec<bool>> {
    let g = &model.graph;
    let mut out: Vec<Option<bool>> = vec![None; conds.len()];
    let mut through_tract = Vec::new();
    for (i, &c) in conds.iter().enumerate() {
        let name = g.value_name(c);
        if let Some((_, t)) = sample.tensors.iter().find(|(n, _)| n == name) {
            out[i] = Some(truth(name, &to_tract(t)?)?);
        } else if let Some(t) = g.constant(c) {
            out[i] = Some(truth(name, &to_tract(&t)?)?);
        } else {
            through_tract.push(i);
        }
    }
    if !through_tract.is_empty() {
        // The cone of the conditions alone, with the conditions as its outputs.
        let wanted: Vec<ValueId> = through_tract.iter().map(|&i| conds[i]).collect();
        let keep = cone(g, &wanted);
        let mut cm = model.clone();
        let cg = &mut cm.graph;
        for id in cg.order.clone() {
            if !keep.contains(&id) {
                cg.nodes[id.index()] = None;
            }
        }
        cg.order.retain(|id| keep.contains(id));
        cg.outputs = wanted
            .iter()
            .map(|&v| GraphIo {
                value: v,
                info: Default::default(),
            })
            .collect();
        cg.value_info.clear();
        let loaded = load(&cm, &sample_shapes(sample))?;
        let runner = loaded.runner(&[], false)?;
        let values = runner.run(sample)?;
        for (k, &i) in through_tract.iter().enumerate() {
            out[i] = Some(truth(g.value_name(conds[i]), &values[k])?);
        }
    }
    Ok(out
        .into_iter()
        .map(|b| b.expect("every condition computed"))
        .collect())
}

/// Replace the `If` node `id` of `g` by the nodes of its taken branch (the `Identity` nodes at the end give the
/// branch's outputs the `If`'s output names, so every reader, including nested subgraphs, stays wired). On error
/// the graph is untouched.
fn inline_branch(target: &mut Graph, id: NodeId, then: bool) -> Result<()> {
    let g: &Graph = target;
    let node = g.node(id).expect("live node").clone();
    let label = node_label(g, id);
    let attr = branch_attr(then);
    let body = node
        .attrs
        .iter()
        .find(|a| a.name == attr)
        .and_then(|a| a.subgraphs().next())
        .ok_or_else(|| Error::Validate(format!("If '{label}' has no {attr}")))?;
    if !body.sparse_initializers.is_empty() {
        return Err(Error::Validate(format!(
            "its {attr} holds sparse initializers"
        )));
    }
    if body.outputs().len() != node.outputs.len() {
        return Err(Error::Validate(format!(
            "its {attr} has {} outputs, the If {}",
            body.outputs().len(),
            node.outputs.len()
        )));
    }
    // Names the branch defines that the enclosing graph already has (a sibling If's branch inlined before may
    // have used them) get fresh names, also where the branch's own subgraphs read them.
    let mut rename: HashMap<String, String> = HashMap::new();
    for (_, v) in body.values() {
        let defined = matches!(
            v.def,
            ValueDef::Node(..) | ValueDef::Initializer | ValueDef::Input
        );
        if defined && !v.name.is_empty() && g.value_by_name(&v.name).is_some() {
            let fresh = (0..)
                .map(|k| format!("{}/{label}_{k}", v.name))
                .find(|n| g.value_by_name(n).is_none() && body.value_by_name(n).is_none())
                .expect("a free name");
            rename.insert(v.name.clone(), fresh);
        }
    }
    let renamed = |name: &str| {
        rename
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    };
    for name in body.free_variables() {
        if g.value_by_name(&name).is_none() {
            return Err(Error::Validate(format!(
                "its {attr} reads '{name}', which the enclosing graph does not define"
            )));
        }
    }
    if body
        .inputs()
        .iter()
        .any(|io| body.value(io.value).def == ValueDef::Input)
    {
        return Err(Error::Validate(format!("its {attr} declares inputs")));
    }

    // The rewrite works on a copy (tensor data is shared), so an error half-way leaves `g` as it was.
    let mut work = g.clone();
    let g = &mut work;

    // Detach the If: its uses (condition, captures) go, its outputs wait for the Identity nodes.
    for v in g.values.iter_mut() {
        v.uses.retain(|u| u.node != id);
    }
    for o in node.outputs.iter().flatten() {
        g.value_mut(*o).def = ValueDef::None;
    }
    g.nodes[id.index()] = None;
    let pos = g
        .order
        .iter()
        .position(|n| *n == id)
        .expect("live node in order");
    g.order.remove(pos);
    let first_new = g.order.len();

    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for (bv, v) in body.values() {
        if v.def == ValueDef::Outer {
            if let Some(gv) = g.value_by_name(&v.name) {
                map.insert(bv, gv);
            }
        }
    }
    for (bv, t) in body.initializers() {
        let name = renamed(body.value_name(bv));
        let gv = g.add_value(&name);
        let mut t = t.clone();
        t.name = Some(name);
        g.push_initializer(gv, t);
        map.insert(bv, gv);
    }
    let missing = |v: ValueId| {
        Error::Validate(format!(
            "'{}' of its {attr} has no definition",
            body.value_name(v)
        ))
    };
    for (_, bn) in body.nodes() {
        let mut n = bn.clone();
        n.inputs = bn
            .inputs
            .iter()
            .map(|i| {
                i.map(|v| map.get(&v).copied().ok_or_else(|| missing(v)))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        n.outputs = bn
            .outputs
            .iter()
            .map(|o| {
                o.map(|v| {
                    let gv = g.add_value(&renamed(body.value_name(v)));
                    map.insert(v, gv);
                    gv
                })
            })
            .collect();
        if !rename.is_empty() {
            for sg in n.attrs.iter_mut().flat_map(|a| a.subgraphs_mut()) {
                rename_outer(sg, &rename);
            }
        }
        let captured: Vec<String> = n
            .attrs
            .iter()
            .flat_map(|a| a.subgraphs())
            .flat_map(|sg| sg.free_variables())
            .collect();
        let nid = g.push_node(n);
        for name in captured {
            if let Some(v) = g.value_by_name(&name) {
                g.add_use(
                    v,
                    Use {
                        node: nid,
                        slot: UseSlot::Capture,
                    },
                );
            }
        }
    }
    for (k, out) in body.outputs().iter().enumerate() {
        let Some(dst) = node.outputs[k] else { continue };
        let src = map
            .get(&out.value)
            .copied()
            .ok_or_else(|| missing(out.value))?;
        let mut n = Node::new(
            format!("{label}/{attr}_output_{k}"),
            OpKey::onnx("Identity"),
        );
        n.inputs = vec![Some(src)];
        n.outputs = vec![Some(dst)];
        g.push_node(n);
    }
    // The new nodes take the If's place in the order.
    let added: Vec<NodeId> = g.order.drain(first_new..).collect();
    g.order.splice(pos..pos, added);
    *target = work;
    Ok(())
}

/// Rename the outer-scope names `map` lists wherever `g` and its subgraphs read them, except below a graph
/// that defines the name itself (it shadows the outer one there).
fn rename_outer(g: &mut Graph, map: &HashMap<String, String>) {
    let mut inner = map.clone();
    for i in 0..g.values.len() {
        let name = g.values[i].name.clone();
        let Some(to) = map.get(&name) else { continue };
        if g.values[i].def == ValueDef::Outer {
            g.index.remove(&name);
            g.index.insert(to.clone(), ValueId(i as u32));
            g.values[i].name = to.clone();
        } else {
            inner.remove(&name);
        }
    }
    if inner.is_empty() {
        return;
    }
    for id in g.order.clone() {
        for sg in g.node_subgraphs_mut(id) {
            rename_outer(sg, &inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{model, GraphBuilder};
    use crate::ir::{Attribute, DataType, Tensor};

    /// y = If(flag) then x + outer_k else (If(Equal(Shape(x)[0], 2)) then x*2 else x*3); the branch bodies read
    /// `x` and `k` from the outer scope.
    fn nested() -> Model {
        let mut inner_then = GraphBuilder::new("inner_then");
        let x = inner_then.outer("x");
        // x * float(d0), d0 = 2 here: read from the enclosing else-branch (two scopes up once inlined)
        let d0 = inner_then.outer("d0");
        let two = inner_then.named_node(
            "cast_d0",
            OpKey::onnx("Cast"),
            &[Some(d0)],
            &["two"],
            vec![Attribute::int("to", 1)],
        );
        let o = inner_then.named_node(
            "mul2",
            OpKey::onnx("Mul"),
            &[Some(x), Some(two[0])],
            &["t2"],
            vec![],
        );
        inner_then.output(o[0], DataType::FLOAT, &["N"]);
        let mut inner_else = GraphBuilder::new("inner_else");
        let x = inner_else.outer("x");
        let three = inner_else.initializer(Tensor::from_f32("three", vec![], &[3.0]));
        let o = inner_else.named_node(
            "mul3",
            OpKey::onnx("Mul"),
            &[Some(x), Some(three)],
            &["t3"],
            vec![],
        );
        inner_else.output(o[0], DataType::FLOAT, &["N"]);

        let mut then_b = GraphBuilder::new("then_b");
        let x = then_b.outer("x");
        let k = then_b.outer("k");
        let o = then_b.named_node(
            "addk",
            OpKey::onnx("Add"),
            &[Some(x), Some(k)],
            &["tk"],
            vec![],
        );
        then_b.output(o[0], DataType::FLOAT, &["N"]);

        let mut else_b = GraphBuilder::new("else_b");
        let x = else_b.outer("x");
        let sh = else_b.named_node("shape", OpKey::onnx("Shape"), &[Some(x)], &["sh"], vec![]);
        let zero = else_b.initializer(Tensor::from_i64("zero", vec![], &[0]));
        let d0 = else_b.named_node(
            "g0",
            OpKey::onnx("Gather"),
            &[Some(sh[0]), Some(zero)],
            &["d0"],
            vec![],
        );
        let c2 = else_b.initializer(Tensor::from_i64("c2", vec![], &[2]));
        let eq = else_b.named_node(
            "eq",
            OpKey::onnx("Equal"),
            &[Some(d0[0]), Some(c2)],
            &["is2"],
            vec![],
        );
        let inner = else_b.named_node(
            "inner_if",
            OpKey::onnx("If"),
            &[Some(eq[0])],
            &["inner_y"],
            vec![
                Attribute::graph("then_branch", inner_then.build()),
                Attribute::graph("else_branch", inner_else.build()),
            ],
        );
        else_b.output(inner[0], DataType::FLOAT, &["N"]);

        let mut b = GraphBuilder::new("main");
        b.input("x", DataType::FLOAT, &["N"]);
        let flag = b.input("flag", DataType::BOOL, &[]);
        b.initializer(Tensor::from_f32("k", vec![1], &[10.0]));
        let y = b.named_node(
            "outer_if",
            OpKey::onnx("If"),
            &[Some(flag)],
            &["y"],
            vec![
                Attribute::graph("then_branch", then_b.build()),
                Attribute::graph("else_branch", else_b.build()),
            ],
        );
        b.output(y[0], DataType::FLOAT, &["N"]);
        let mut g = b.build();
        // the main graph records the captures of the If's branches
        let mut p = crate::ir::Patch::new("test");
        let id = g.nodes().next().unwrap().0;
        p.refresh_captures(id);
        g.apply(p).unwrap();
        model(g, 17)
    }

    fn sample(flag: bool, n: usize) -> Sample {
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        Sample {
            origin: "test".into(),
            tensors: vec![
                ("x".into(), Tensor::from_f32("x", vec![n as i64], &x)),
                (
                    "flag".into(),
                    Tensor::from_raw(
                        "flag",
                        DataType::BOOL,
                        vec![],
                        bytes::Bytes::from(vec![flag as u8]),
                    ),
                ),
            ],
        }
    }

    fn ops(m: &Model) -> Vec<String> {
        m.graph.nodes().map(|(_, n)| n.op.op_type.clone()).collect()
    }

    #[test]
    fn flag_input_takes_the_then_branch() {
        let m = nested();
        let s = specialise(&m, &sample(true, 3)).unwrap().unwrap();
        assert_eq!(s.taken, vec![("outer_if".to_string(), true)]);
        assert_eq!(ops(&s.model), ["Add", "Identity"]);
        s.model.graph.verify().unwrap();
        // the user's model is untouched
        assert_eq!(ops(&m), ["If"]);
        let out = crate::validate::run_model(&s.model, &sample(true, 3)).unwrap();
        assert_eq!(out.outputs[0].1.to_f32_vec().unwrap(), [10.0, 11.0, 12.0]);
    }

    #[test]
    fn nested_shape_test_is_folded_through_tract() {
        let m = nested();
        for (n, want_then, factor) in [(2usize, true, 2.0f32), (3, false, 3.0)] {
            let s = specialise(&m, &sample(false, n)).unwrap().unwrap();
            assert_eq!(
                s.taken,
                vec![
                    ("outer_if".to_string(), false),
                    ("inner_if".to_string(), want_then)
                ],
                "{:?}",
                s.remarks
            );
            assert!(!ops(&s.model).contains(&"If".to_string()));
            s.model.graph.verify().unwrap();
            let out = crate::validate::run_model(&s.model, &sample(false, n)).unwrap();
            let want: Vec<f32> = (0..n).map(|i| i as f32 * factor).collect();
            assert_eq!(out.outputs[0].1.to_f32_vec().unwrap(), want);
        }
    }

    #[test]
    fn clashing_names_are_renamed_also_where_nested_branches_read_them() {
        let mut m = nested();
        // main-graph values named like values the branches define: `tk` (then) and `d0` (else, read by the
        // inner If's then-branch)
        let mut g = m.graph.clone();
        for name in ["tk", "d0"] {
            let v = g.add_value(name);
            g.push_initializer(v, Tensor::from_f32(name, vec![], &[0.0]));
        }
        m.graph = g;
        for (flag, n, want) in [
            (true, 3, vec![10.0f32, 11.0, 12.0]),
            (false, 2, vec![0.0, 2.0]),
            (false, 3, vec![0.0, 3.0, 6.0]),
        ] {
            let s = specialise(&m, &sample(flag, n)).unwrap().unwrap();
            assert!(
                !ops(&s.model).contains(&"If".to_string()),
                "{:?}",
                s.remarks
            );
            s.model.graph.verify().unwrap();
            assert!(s.model.graph.value_by_name("tk/outer_if_0").is_some() == flag);
            assert!(s.model.graph.value_by_name("d0/outer_if_0").is_some() != flag);
            let out = crate::validate::run_model(&s.model, &sample(flag, n)).unwrap();
            assert_eq!(
                out.outputs[0].1.to_f32_vec().unwrap(),
                want,
                "flag {flag} n {n}"
            );
        }
    }

    #[test]
    fn an_uncomputable_condition_leaves_the_if_with_a_remark() {
        let m = nested();
        // the sample lacks `flag`: the condition cannot be computed
        let mut s = sample(true, 3);
        s.tensors.retain(|(n, _)| n != "flag");
        let r = specialise(&m, &s).unwrap().unwrap();
        assert!(r.taken.is_empty());
        assert_eq!(ops(&r.model), ["If"]);
        assert!(
            r.remarks
                .iter()
                .any(|x| x.contains("'outer_if' not specialised")),
            "{:?}",
            r.remarks
        );
    }

    /// A committed canary case: `fixtures/canaries/<case>` (tools/make_canaries.py; model, inputs and ONNX
    /// Runtime's outputs).
    fn canary(case: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/canaries")
            .join(case)
    }

    /// The canary If cases (ONNX Runtime's recorded outputs; each branch reads the graph input `X` from the
    /// enclosing scope and an initializer of its own, `two` / `one`; the If is unnamed, so it is labelled by its
    /// output `Y`): the specialised model takes the right branch and computes what ORT computed, exactly (one
    /// elementwise op per element: both engines round the same f32 product or sum).
    #[test]
    fn canary_if_cases_match_onnx_runtime_once_specialised() {
        for (case, then) in [
            ("if_subgraph_cond_true", true),
            ("if_subgraph_cond_false", false),
        ] {
            let dir = canary(case);
            let m = crate::io::load(&dir.join("model.onnx")).unwrap();
            let read = |f: &str| crate::validate::read_tensor_file(&dir.join(f)).unwrap().1;
            let s = Sample {
                origin: case.into(),
                tensors: vec![
                    ("X".into(), read("input_0.npy")),
                    ("C".into(), read("input_1.npy")),
                ],
            };
            let sp = specialise(&m, &s).unwrap().unwrap();
            assert_eq!(sp.taken, vec![("Y".to_string(), then)], "{case}");
            sp.model.graph.verify().unwrap();
            let out = crate::validate::run_model(&sp.model, &s).unwrap();
            assert_eq!(
                out.outputs[0].1.to_f32_vec().unwrap(),
                read("expected_0.npy").to_f32_vec().unwrap(),
                "{case}"
            );
        }
    }

    /// Two Ifs ready in the same round, one whose condition tract cannot compute (an unknown op in its cone):
    /// the other is still specialised, the first is left with a remark.
    #[test]
    fn one_uncomputable_condition_does_not_block_the_others() {
        let branch = |name: &str, k: f32| {
            let mut b = GraphBuilder::new(name);
            let x = b.outer("x");
            let c = b.initializer(Tensor::from_f32(format!("{name}_k"), vec![], &[k]));
            let o = b.named_node(
                &format!("{name}_add"),
                OpKey::onnx("Add"),
                &[Some(x), Some(c)],
                &[&format!("{name}_out")],
                vec![],
            );
            b.output(o[0], DataType::FLOAT, &["N"]);
            b.build()
        };
        let mut b = GraphBuilder::new("main");
        b.input("x", DataType::FLOAT, &["N"]);
        let flag = b.input("flag", DataType::BOOL, &[]);
        let odd = b.named_node(
            "mystery",
            OpKey {
                domain: Some("com.example".into()),
                op_type: "Mystery".into(),
            },
            &[Some(flag)],
            &["odd_flag"],
            vec![],
        );
        for (name, cond) in [("if_a", flag), ("if_b", odd[0])] {
            let y = b.named_node(
                name,
                OpKey::onnx("If"),
                &[Some(cond)],
                &[&format!("{name}_y")],
                vec![
                    Attribute::graph("then_branch", branch(&format!("{name}_then"), 1.0)),
                    Attribute::graph("else_branch", branch(&format!("{name}_else"), 2.0)),
                ],
            );
            b.output(y[0], DataType::FLOAT, &["N"]);
        }
        let mut g = b.build();
        let ifs: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| is_if(n))
            .map(|(id, _)| id)
            .collect();
        let mut p = crate::ir::Patch::new("test");
        for id in ifs {
            p.refresh_captures(id);
        }
        g.apply(p).unwrap();
        let m = model(g, 17);
        let s = specialise(&m, &sample(true, 2)).unwrap().unwrap();
        assert_eq!(s.taken, vec![("if_a".to_string(), true)], "{:?}", s.remarks);
        assert!(
            s.remarks.iter().any(|r| r
                .starts_with("If 'if_b' not specialised: the condition could not be computed")
                && r.contains("Mystery")),
            "{:?}",
            s.remarks
        );
        assert_eq!(ops(&s.model).iter().filter(|o| *o == "If").count(), 1);
        s.model.graph.verify().unwrap();
    }
}
