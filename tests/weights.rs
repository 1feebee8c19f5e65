//! Patches that reach every weight, checked where it matters: the saved files pass onnx.checker (full_check)
//! and compute in ONNX Runtime what we expect. A weight of the main graph read inside an `If` branch is
//! replaced by a DequantizeLinear of an int8 initializer (the capture is created for us); value_info and graph
//! output edits survive a save; dedup merges a copy read inside the silero models' branches.

mod common;

use std::path::Path;
use std::process::Command;

use onnx_rewrite::io;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{
    Attribute, DataType, IoSide, Model, OpKey, Patch, ScopeChain, Tensor, TypeInfo, UseSlot,
    WeightStorage,
};
use onnx_rewrite::passes::{run_pipeline, PipelineOptions};

/// Run a model in ONNX Runtime (optimisations off) on JSON feeds; every output flattened to f64.
const RUN_ORT: &str = r#"
import sys, json, numpy as np, onnxruntime as ort
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
so.log_severity_level = 3
s = ort.InferenceSession(sys.argv[1], sess_options=so, providers=["CPUExecutionProvider"])
feeds = json.loads(sys.argv[2])
types = {"tensor(float)": np.float32, "tensor(bool)": np.bool_, "tensor(int64)": np.int64}
f = {i.name: np.array(feeds[i.name], dtype=types[i.type]) for i in s.get_inputs()}
print(json.dumps([np.asarray(o).astype(np.float64).ravel().tolist() for o in s.run(None, f)]))
"#;

fn run_ort(path: &Path, feeds: &serde_json::Value) -> Vec<Vec<f64>> {
    let out = Command::new(common::python())
        .arg("-c")
        .arg(RUN_ORT)
        .arg(path)
        .arg(feeds.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnxruntime failed on {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const X: [f32; 6] = [0.5, -1.25, 2.0, 0.75, -0.5, 1.5];
const W: [f32; 12] = [
    0.3, -0.7, 1.1, 0.05, -1.3, 0.6, 0.25, -0.9, 0.8, -0.15, 0.45, 1.27,
];

/// main: x[2,3], c; W[3,4] initializer; y = If(c) { then: MatMul(x, W) } else { MatMul(x, Wb) with Wb a
/// Constant of the else-branch, plus a value named `W_scale` local to the else-branch }.
fn if_matmul_model() -> Model {
    let mut t = GraphBuilder::new("then_branch");
    let (tx, tw) = (t.outer("x"), t.outer("W"));
    let ty = t.named_node(
        "mm_then",
        OpKey::onnx("MatMul"),
        &[Some(tx), Some(tw)],
        &["t_y"],
        vec![],
    )[0];
    t.output(ty, DataType::FLOAT, &["2", "4"]);

    let mut e = GraphBuilder::new("else_branch");
    let ex = e.outer("x");
    let wb = e.named_node(
        "wb",
        OpKey::onnx("Constant"),
        &[],
        &["Wb"],
        vec![Attribute::tensor(
            "value",
            Tensor::from_f32("", vec![3, 4], &[0.5; 12]),
        )],
    )[0];
    // a body-local name the main graph's fresh names must not take (it would be shadowed)
    let s = e.named_node(
        "local_scale",
        OpKey::onnx("Constant"),
        &[],
        &["W_scale"],
        vec![Attribute::float("value_float", 2.0)],
    )[0];
    let m = e.named_node(
        "mm_else",
        OpKey::onnx("MatMul"),
        &[Some(ex), Some(wb)],
        &["e_m"],
        vec![],
    )[0];
    let ey = e.named_node(
        "scale_else",
        OpKey::onnx("Mul"),
        &[Some(m), Some(s)],
        &["e_y"],
        vec![],
    )[0];
    e.output(ey, DataType::FLOAT, &["2", "4"]);

    let mut b = GraphBuilder::new("main");
    let _x = b.input("x", DataType::FLOAT, &["2", "3"]);
    let c = b.input("c", DataType::BOOL, &[]);
    b.initializer(Tensor::from_f32("W", vec![3, 4], &W));
    let y = b.named_node(
        "if_0",
        OpKey::onnx("If"),
        &[Some(c)],
        &["y"],
        vec![
            Attribute::graph("then_branch", t.build()),
            Attribute::graph("else_branch", e.build()),
        ],
    )[0];
    b.output(y, DataType::FLOAT, &["2", "4"]);
    model(b.build(), 13)
}

#[test]
fn weight_captured_by_a_branch_becomes_outer_dequantize_linear() {
    let dir = common::tempdir();
    let mut m = if_matmul_model();
    m.verify().unwrap();
    let original = common::save(&m, dir.path(), "if_matmul.onnx");

    // find the MatMul weight from inside the then-branch, through the scope chain
    let (if_id, then) = m.graph.subgraphs().next().unwrap();
    let (_, mm) = then.nodes().next().unwrap();
    let chain = ScopeChain::new(&m.graph).enter(then);
    let w = chain
        .weight(mm.input(1).unwrap())
        .expect("the outer initializer");
    assert!(w.path.is_root() && w.storage == WeightStorage::Initializer);
    let wt = m.graph.read_weight(&w).unwrap().into_owned();
    let vals = wt.to_f32_vec().unwrap();

    // weight-only int8, per tensor, symmetric
    let amax = vals.iter().fold(0f32, |a, v| a.max(v.abs()));
    let scale = amax / 127.0;
    let q: Vec<i8> = vals
        .iter()
        .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    let g = &m.graph;
    let mut p = Patch::new("quantize");
    let qv = p.add_named_initializer(
        g,
        &w.name,
        "_quantized",
        Tensor::from_raw(
            "",
            DataType::INT8,
            vec![3, 4],
            q.iter().map(|v| *v as u8).collect::<Vec<u8>>().into(),
        ),
    );
    let sv = p.add_named_initializer(g, &w.name, "_scale", Tensor::from_f32("", vec![], &[scale]));
    let zv = p.add_named_initializer(
        g,
        &w.name,
        "_zero_point",
        Tensor::from_raw("", DataType::INT8, vec![], vec![0u8].into()),
    );
    let dq = p.add_node(
        g,
        &w.name,
        OpKey::onnx("DequantizeLinear"),
        vec![Some(qv), Some(sv), Some(zv)],
        vec![],
        1,
    )[0];
    p.replace_all_uses(w.value, dq);
    p.remove_weight(&w);
    m.graph.apply_at(&w.path, p).unwrap();
    m.verify().unwrap();

    // the names ONNX Runtime's tools use; W_scale is taken inside the else-branch, so the scale steps aside
    let inits: Vec<&str> = m
        .graph
        .initializers()
        .map(|(v, _)| m.graph.value_name(v))
        .collect();
    assert_eq!(inits, ["W_quantized", "W_scale_1", "W_zero_point"]);
    let (_, then) = m.graph.subgraphs().next().unwrap();
    let (_, mm) = then.nodes().next().unwrap();
    let read = then.value_name(mm.input(1).unwrap()).to_string();
    assert_eq!(read, "W/quantize_0_out0");
    let dq_out = m.graph.value_by_name(&read).unwrap();
    assert!(m
        .graph
        .uses(dq_out)
        .iter()
        .any(|u| u.node == if_id && u.slot == UseSlot::Capture));
    // the DequantizeLinear comes before the If that captures its output
    let ops: Vec<&str> = m
        .graph
        .nodes()
        .map(|(_, n)| n.op.op_type.as_str())
        .collect();
    assert_eq!(ops, ["DequantizeLinear", "If"]);

    let rewritten = common::save(&m, dir.path(), "if_matmul_q.onnx");
    common::check_models(&[original.clone(), rewritten.clone()], &[]);

    // ONNX Runtime: the then-branch computes x @ dequant(W), the else-branch is untouched
    let deq: Vec<f64> = q.iter().map(|v| *v as f64 * scale as f64).collect();
    let t = run_ort(
        &rewritten,
        &serde_json::json!({"x": [[0.5, -1.25, 2.0], [0.75, -0.5, 1.5]], "c": true}),
    );
    let before = run_ort(
        &original,
        &serde_json::json!({"x": [[0.5, -1.25, 2.0], [0.75, -0.5, 1.5]], "c": true}),
    );
    for i in 0..2 {
        for j in 0..4 {
            let terms: Vec<f64> = (0..3)
                .map(|k| X[i * 3 + k] as f64 * deq[k * 4 + j])
                .collect();
            let exact: f64 = terms.iter().sum();
            // float32 products and a sum of K=3 terms: error <= (K + 1) * eps32 * sum|x*w|
            let tol = 4.0 * f32::EPSILON as f64 * terms.iter().map(|v| v.abs()).sum::<f64>();
            let got = t[0][i * 4 + j];
            assert!(
                (got - exact).abs() <= tol,
                "y[{i},{j}] = {got}, want {exact} +- {tol}"
            );
            // and it differs from the float model by at most the rounding of the weights, sum_k |x_ik| * scale / 2,
            // plus the float32 noise of both results
            let qerr = (0..3).map(|k| (X[i * 3 + k] as f64).abs()).sum::<f64>() * scale as f64
                / 2.0
                + 2.0 * tol;
            assert!(
                (got - before[0][i * 4 + j]).abs() <= qerr,
                "y[{i},{j}]: {got} vs float {}",
                before[0][i * 4 + j]
            );
        }
    }
    let e = run_ort(
        &rewritten,
        &serde_json::json!({"x": [[0.5, -1.25, 2.0], [0.75, -0.5, 1.5]], "c": false}),
    );
    let e0 = run_ort(
        &original,
        &serde_json::json!({"x": [[0.5, -1.25, 2.0], [0.75, -0.5, 1.5]], "c": false}),
    );
    assert_eq!(e, e0, "the else-branch is unchanged");
    // (0.5 - 1.25 + 2.0) * 0.5 * 2: every step exact in binary floating point
    assert_eq!(e[0][0], 1.25);
}

#[test]
fn value_info_and_output_types_edits_survive_save() {
    let mut b = GraphBuilder::new("main");
    let x = b.input("x", DataType::FLOAT, &["1", "8"]);
    let r = b.node("Relu", &[x], vec![], 1)[0];
    let s = b.node("Neg", &[r], vec![], 1)[0];
    b.output(s, DataType::FLOAT, &["1", "8"]);
    let mut m = model(b.build(), 13);
    // a stale value_info entry for r, as removing channels would leave
    let mut p = Patch::new("t");
    p.set_value_info(r, Some(TypeInfo::tensor(DataType::FLOAT, &[1, 8])));
    m.graph.apply(p).unwrap();
    assert_eq!(m.graph.value_info().len(), 1);

    let mut p = Patch::new("prune");
    p.set_value_info(r, Some(TypeInfo::tensor(DataType::FLOAT, &[1, 6])));
    p.set_value_info(s, Some(TypeInfo::tensor(DataType::FLOAT, &[1, 6])));
    p.set_io_type(
        IoSide::Output,
        0,
        Some(TypeInfo::tensor(DataType::FLOAT, &[1, 6])),
    );
    let log = m.graph.apply(p).unwrap();
    assert_eq!(log.changes.len(), 3, "{:?}", log.changes);
    let mut p = Patch::new("t");
    p.set_io_type(IoSide::Output, 3, None);
    assert!(m
        .graph
        .clone()
        .apply(p)
        .unwrap_err()
        .to_string()
        .contains("no output #3"));

    let dir = common::tempdir();
    let path = common::save(&m, dir.path(), "vi.onnx");
    let back = io::load(&path).unwrap();
    let g = &back.graph;
    let ty = |name: &str| {
        g.value_info()
            .iter()
            .find(|io| g.value_name(io.value) == name)
            .and_then(|io| io.info.ty.as_ref())
            .map(|t| t.render())
    };
    assert_eq!(ty(g.value_name(r)).as_deref(), Some("f32[1,6]"));
    assert_eq!(ty(g.value_name(s)).as_deref(), Some("f32[1,6]"));
    assert_eq!(
        g.outputs()[0].info.ty.as_ref().unwrap().render(),
        "f32[1,6]"
    );

    // clearing drops the entries
    let mut m = back;
    let (r, s) = (
        m.graph.value_by_name("relu_0_out0").unwrap(),
        m.graph.value_by_name("neg_1_out0").unwrap(),
    );
    let mut p = Patch::new("t");
    p.set_value_info(r, None);
    p.set_value_info(s, None);
    m.graph.apply(p).unwrap();
    let back = io::load(&common::save(&m, dir.path(), "vi2.onnx")).unwrap();
    assert!(back.graph.value_info().is_empty());
}

/// The failing case of issue 7 on the real silero models: a later copy of an initializer, read only inside
/// `If` branches, is merged into the first by `dedup-initializers`; the result passes the checker and computes
/// exactly what the original computes.
#[test]
fn dedup_merges_copies_read_inside_silero_branches() {
    let dir = common::tempdir();
    let mut done = 0;
    for (meta, path) in common::real_models() {
        if !meta.name.starts_with("silero") {
            continue;
        }
        let mut m = io::load(&path).unwrap();
        // an initializer of the main graph that a branch reads
        let g = &m.graph;
        let target = g
            .initializers()
            .map(|(v, _)| v)
            .find(|v| g.uses(*v).iter().any(|u| u.slot == UseSlot::Capture));
        let mut expect_merged = 0;
        if let Some(v) = target {
            let t = g.value(v).init.clone().unwrap();
            let mut p = Patch::new("copy");
            let copy = p.add_named_initializer(g, g.value_name(v), "_copy", t);
            p.replace_all_uses(v, copy);
            let log = m.graph.apply(p).unwrap();
            m.verify().unwrap();
            assert!(log.changes.iter().any(
                |c| matches!(c, onnx_rewrite::ir::Change::UsesReplaced { uses, .. } if *uses >= 2)
            ));
            expect_merged = 1;
        }
        let staged = common::save(&m, dir.path(), &format!("{}_copy.onnx", meta.name));
        // dedup the file as a user would (before the fix: exit 1, "'..._copy' is read by a subgraph")
        let mut m = io::load(&staged).unwrap();
        let reports =
            run_pipeline(&mut m, &["dedup-initializers"], &PipelineOptions::default()).unwrap();
        assert_eq!(
            reports[0].stats["initializers_merged"], expect_merged,
            "{}",
            meta.name
        );
        let out = common::save(&m, dir.path(), &format!("{}_dedup.onnx", meta.name));
        common::check_models(&[staged.clone(), out.clone()], &[]);
        let input: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.3)
            .collect();
        let feeds = serde_json::json!({
            "input": [input],
            "state": vec![vec![vec![0.0f32; 128]; 1]; 2],
            "sr": 16000,
        });
        let a = run_ort(&path, &feeds);
        let b = run_ort(&out, &feeds);
        assert_eq!(a, b, "{}: same weights, same outputs", meta.name);
        done += 1;
    }
    assert_eq!(done, 2, "both silero models are in tools/real_models.json");
}

/// then-branch of `If(c)`: y = ((((x + kf) * kfs + cast(ki)) + cast(kis)) + kv) + ks, one Constant per value form.
fn constant_forms_model() -> Model {
    use onnx_rewrite::ir::attr::AttrType;
    use onnx_rewrite::ir::SparseTensor;
    let mut t = GraphBuilder::new("then_branch");
    let x = t.outer("x");
    let k = |t: &mut GraphBuilder, name: &str, attr: Attribute| {
        t.named_node(name, OpKey::onnx("Constant"), &[], &[name], vec![attr])[0]
    };
    let kf = k(&mut t, "kf", Attribute::float("value_float", 0.5));
    let kfs = k(
        &mut t,
        "kfs",
        Attribute::floats("value_floats", vec![1.0, 2.0, 3.0]),
    );
    let ki = k(&mut t, "ki", Attribute::int("value_int", 2));
    let kis = k(&mut t, "kis", Attribute::ints("value_ints", vec![1, 0, -1]));
    let kv = k(
        &mut t,
        "kv",
        Attribute::tensor("value", Tensor::from_f32("", vec![3], &[0.25; 3])),
    );
    let ks = k(
        &mut t,
        "ks",
        Attribute {
            name: "sparse_value".into(),
            r#type: Some(AttrType::SparseTensor as i32),
            sparse_tensor: Some(SparseTensor {
                values: Some(Tensor::from_f32("ks_values", vec![1], &[4.0])),
                indices: Some(Tensor::from_i64("ks_indices", vec![1], &[1])),
                dims: vec![3],
            }),
            ..Default::default()
        },
    );
    let a1 = t.node("Add", &[x, kf], vec![], 1)[0];
    let a2 = t.node("Mul", &[a1, kfs], vec![], 1)[0];
    let ci = t.node("Cast", &[ki], vec![Attribute::int("to", 1)], 1)[0];
    let a3 = t.node("Add", &[a2, ci], vec![], 1)[0];
    let cis = t.node("Cast", &[kis], vec![Attribute::int("to", 1)], 1)[0];
    let a4 = t.node("Add", &[a3, cis], vec![], 1)[0];
    let a5 = t.node("Add", &[a4, kv], vec![], 1)[0];
    let a6 = t.node("Add", &[a5, ks], vec![], 1)[0];
    t.output(a6, DataType::FLOAT, &["3"]);
    let mut e = GraphBuilder::new("else_branch");
    let ex = e.outer("x");
    let ey = e.node("Identity", &[ex], vec![], 1)[0];
    e.output(ey, DataType::FLOAT, &["3"]);
    let mut b = GraphBuilder::new("main");
    b.input("x", DataType::FLOAT, &["3"]);
    let c = b.input("c", DataType::BOOL, &[]);
    let y = b.named_node(
        "if_0",
        OpKey::onnx("If"),
        &[Some(c)],
        &["y"],
        vec![
            Attribute::graph("then_branch", t.build()),
            Attribute::graph("else_branch", e.build()),
        ],
    )[0];
    b.output(y, DataType::FLOAT, &["3"]);
    model(b.build(), 13)
}

/// Every `Constant` value form inside a branch, replaced from the root through `WeightRef`s: the form is kept
/// where the new tensor fits it, the file passes the checker, and ONNX Runtime computes with the new values.
#[test]
fn constant_weights_in_a_branch_replaced_in_every_form() {
    let dir = common::tempdir();
    let mut m = constant_forms_model();
    m.verify().unwrap();
    let x = [0.5f64, -1.0, 2.0];
    let feeds = serde_json::json!({"x": x, "c": true});
    let before = common::save(&m, dir.path(), "forms.onnx");
    // every step below is exact in binary floating point (small dyadic values)
    let y0: Vec<f64> = (0..3)
        .map(|i| {
            (x[i] + 0.5) * [1.0, 2.0, 3.0][i]
                + 2.0
                + [1.0, 0.0, -1.0][i]
                + 0.25
                + [0.0, 4.0, 0.0][i]
        })
        .collect();
    common::check_models(&[before.clone()], &[]);
    assert_eq!(run_ort(&before, &feeds)[0], y0);

    let new: Vec<(&str, Tensor, &str)> = vec![
        ("kf", Tensor::from_f32("", vec![], &[-1.5]), "value_float"),
        (
            "kfs",
            Tensor::from_f32("", vec![3], &[0.5, 0.25, 2.0]),
            "value_floats",
        ),
        ("ki", Tensor::from_i64("", vec![], &[3]), "value_int"),
        (
            "kis",
            Tensor::from_i64("", vec![3], &[2, 2, 2]),
            "value_ints",
        ),
        (
            "kv",
            Tensor::from_f32("", vec![3], &[1.0, 1.0, 1.0]),
            "value",
        ),
        (
            "ks",
            Tensor::from_f32("", vec![3], &[0.0, 0.0, 8.0]),
            "value",
        ),
    ];
    let mut refs = Vec::new();
    m.visit_graphs(&mut |site| {
        for (name, t, _) in &new {
            if let Some(v) = site.graph().value_by_name(name) {
                let w = site.scope.weight(v).expect("a Constant weight");
                assert_eq!(site.display, "if_0/then_branch");
                refs.push((w, t.clone()));
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(refs.len(), new.len());
    let path = refs[0].0.path.clone();
    let mut p = Patch::new("replace");
    for (w, t) in &refs {
        assert_eq!(w.path, path);
        p.replace_weight(w, t.clone());
    }
    m.graph.apply_at(&path, p).unwrap();
    m.verify().unwrap();
    let after = common::save(&m, dir.path(), "forms_replaced.onnx");
    common::check_models(&[after.clone()], &[]);

    // the forms survive the save
    let back = io::load(&after).unwrap();
    let (_, then) = back.graph.subgraphs().next().unwrap();
    for (name, t, form) in &new {
        let v = then.value_by_name(name).unwrap();
        let (_, node) = then.producer(v).unwrap();
        assert_eq!(node.attrs.len(), 1);
        assert_eq!(node.attrs[0].name, *form, "{name}");
        assert!(then.constant(v).unwrap().same_content(t), "{name}");
    }
    let y1: Vec<f64> = (0..3)
        .map(|i| (x[i] - 1.5) * [0.5, 0.25, 2.0][i] + 3.0 + 2.0 + 1.0 + [0.0, 0.0, 8.0][i])
        .collect();
    assert_eq!(run_ort(&after, &feeds)[0], y1);
}
