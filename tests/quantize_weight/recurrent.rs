//! Recurrent weights and embedding tables on a hand-built model: the mechanics of their layouts (the
//! per-channel axes, the Reshape of a two-direction weight, the int8 table gathered then dequantized per row),
//! dequantized values within half a step of the float weights, `ops` narrowing the set, the bias remark, the
//! per-tensor and symmetric forms and the fallbacks, each output checked in ONNX Runtime and through tract.

use super::*;
use onnx_rewrite::ir::{NodeId, OpKey, ValueId};
use onnx_rewrite::passes::quantize::params::dequantize_tensor;

/// `f32s` with each row r (of `rows` rows) scaled by 0.05 * (1 + r % 7): rows of different ranges, so one
/// scale per row differs from one per tensor.
fn rows_f32(name: &str, dims: Vec<i64>, salt: u64) -> Tensor {
    let t = f32s(name, dims.clone(), salt);
    let row = dims.last().copied().unwrap() as usize;
    let v: Vec<f32> = t
        .to_f32_vec()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, x)| x * 0.05 * (1 + (i / row) % 7) as f32)
        .collect();
    Tensor::from_vec(name, dims, v).unwrap()
}

/// ids [1, 6] -> Gather(table [40, 16]) -> Transpose -> LSTM (bidirectional, hidden 8: W [2, 32, 16],
/// R [2, 32, 8], B) -> Transpose / Reshape -> GRU (forward: W [1, 24, 16], R [1, 24, 8], B) -> Reshape ->
/// RNN (reverse: W [1, 8, 8], R [1, 8, 8], B) -> MatMul (w_out [8, 4]) -> y; and pos_ids [6] ->
/// Gather(pos_table [12, 16]) -> the graph output pos_rows.
fn recurrent_model() -> Model {
    let mut b = GraphBuilder::new("rec");
    let ids = b.input("ids", DataType::INT64, &["1", "6"]);
    let table = b.initializer(rows_f32("table", vec![40, 16], 1));
    let emb = b.named_node(
        "embed",
        OpKey::onnx("Gather"),
        &[Some(table), Some(ids)],
        &["emb"],
        vec![],
    )[0];
    let x = b.node(
        "Transpose",
        &[emb],
        vec![Attribute::ints("perm", vec![1, 0, 2])],
        1,
    )[0];
    let shape = |b: &mut GraphBuilder, name: &str, dims: Vec<i64>| {
        b.initializer(Tensor::from_vec(name, vec![dims.len() as i64], dims).unwrap())
    };
    let rec =
        |b: &mut GraphBuilder, op: &str, x: ValueId, gates: i64, dirs: i64, input: i64, salt| {
            let lower = op.to_lowercase();
            let w = b.initializer(rows_f32(
                &format!("{lower}_w"),
                vec![dirs, gates * 8, input],
                salt,
            ));
            let r = b.initializer(rows_f32(
                &format!("{lower}_r"),
                vec![dirs, gates * 8, 8],
                salt + 1,
            ));
            let bias = b.initializer(rows_f32(
                &format!("{lower}_b"),
                vec![dirs, 2 * gates * 8],
                salt + 2,
            ));
            let mut attrs = vec![Attribute::int("hidden_size", 8)];
            match dirs {
                2 => attrs.push(Attribute::string("direction", "bidirectional")),
                _ if op == "RNN" => attrs.push(Attribute::string("direction", "reverse")),
                _ => {}
            }
            b.named_node(
                op,
                OpKey::onnx(op),
                &[Some(x), Some(w), Some(r), Some(bias)],
                &[&format!("{lower}_y")],
                attrs,
            )[0]
        };
    let y = rec(&mut b, "LSTM", x, 4, 2, 16, 10);
    let y = b.node(
        "Transpose",
        &[y],
        vec![Attribute::ints("perm", vec![0, 2, 1, 3])],
        1,
    )[0];
    let s = shape(&mut b, "shape_16", vec![6, 1, 16]);
    let y = b.node("Reshape", &[y, s], vec![], 1)[0];
    let y = rec(&mut b, "GRU", y, 3, 1, 16, 20);
    let s = shape(&mut b, "shape_8", vec![6, 1, 8]);
    let y = b.node("Reshape", &[y, s], vec![], 1)[0];
    let y = rec(&mut b, "RNN", y, 1, 1, 8, 30);
    let w = b.initializer(rows_f32("w_out", vec![8, 4], 40));
    let y = b.named_node(
        "head",
        OpKey::onnx("MatMul"),
        &[Some(y), Some(w)],
        &["y"],
        vec![],
    )[0];
    b.output(y, DataType::FLOAT, &["6", "1", "1", "4"]);
    let pos = b.input("pos_ids", DataType::INT64, &["6"]);
    let pt = b.initializer(rows_f32("pos_table", vec![12, 16], 50));
    let rows = b.named_node(
        "pos_embed",
        OpKey::onnx("Gather"),
        &[Some(pt), Some(pos)],
        &["pos_rows"],
        vec![],
    )[0];
    b.output(rows, DataType::FLOAT, &["6", "16"]);
    model(b.build(), 14)
}

fn node_named<'a>(m: &'a Model, name: &str) -> (NodeId, &'a onnx_rewrite::ir::Node) {
    m.graph
        .nodes()
        .find(|(_, n)| n.name() == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// The producer of input `slot` of node `name`, with its op type.
fn producer_of<'a>(m: &'a Model, name: &str, slot: usize) -> Option<&'a onnx_rewrite::ir::Node> {
    let (_, n) = node_named(m, name);
    m.graph.producer(n.input(slot).unwrap()).map(|(_, p)| p)
}

fn axis_of(n: &onnx_rewrite::ir::Node) -> Option<i64> {
    n.attrs
        .iter()
        .find(|a| a.name == "axis")
        .map(|a| a.i.unwrap())
}

/// Dequantize a DequantizeLinear of constants as the op does; the float weight `w` (same element order) must
/// be within half a step of it: rounding x / s to the nearest integer moves it by at most 0.5 (the range
/// covers every value, so nothing saturates), and the f32 arithmetic of x / s and of (q - z) * s adds at most
/// an ulp of |x| each, so |dq - x| <= s / 2 + 4 eps |x|.
fn within_half_step(m: &Model, dq: &onnx_rewrite::ir::Node, w: &Tensor, what: &str) {
    let g = &m.graph;
    let q = g.constant(dq.input(0).unwrap()).unwrap();
    let s = g.constant(dq.input(1).unwrap()).unwrap();
    let z = dq.input(2).and_then(|v| g.constant(v));
    let axis = axis_of(dq).unwrap_or(1);
    let deq = dequantize_tensor("dq", &q, &s, z.as_deref(), axis).unwrap();
    check_half_step(
        &deq.to_f32_vec().unwrap(),
        &w.to_f32_vec().unwrap(),
        &s.to_f32_vec().unwrap(),
        q.dims.clone(),
        axis_of(dq),
        what,
    );
}

/// `deq` and `w` elementwise within half a step (see `within_half_step`); the step of element i is the scale
/// of its slice along `axis` of `dims` (the only scale when `axis` is None).
fn check_half_step(
    deq: &[f32],
    w: &[f32],
    scales: &[f32],
    dims: Vec<i64>,
    axis: Option<i64>,
    what: &str,
) {
    assert_eq!(deq.len(), w.len(), "{what}");
    let (len, inner) = match axis {
        Some(a) => {
            let a = a as usize;
            (
                dims[a] as usize,
                dims[a + 1..].iter().product::<i64>() as usize,
            )
        }
        None => (1, 1),
    };
    for (i, (d, x)) in deq.iter().zip(w).enumerate() {
        let s = scales[(i / inner) % len];
        assert!(
            (d - x).abs() <= s * 0.5 + 4.0 * f32::EPSILON * x.abs(),
            "{what}[{i}]: {d} against {x}, step {s}"
        );
    }
}

fn run_both(original: &Model, m: &Model, tag: &str) {
    let dir = common::tempdir();
    let ids: Vec<i64> = vec![3, 17, 39, 0, 25, 8];
    let pos: Vec<i64> = (0..6).collect();
    let mut o = opts(&[], 1);
    o.inputs = write_inputs(
        dir.path(),
        tag,
        vec![
            Tensor::from_vec("ids", vec![1, 6], ids).unwrap(),
            Tensor::from_vec("pos_ids", vec![6], pos).unwrap(),
        ],
    );
    assert!(tract_ok(original, m, &o, tag), "{tag}: tract must run it");
    let a = common::save(original, dir.path(), &format!("{tag}_float"));
    let b = common::save(m, dir.path(), tag);
    common::check_files(std::slice::from_ref(&b));
    let drift = ort_drift(&a, &b, &["--range", "ids=0,40", "--range", "pos_ids=0,12"]);
    eprintln!("{tag}: ORT rel drift {drift:.5}");
}

/// The default: every recurrent W / R per gate row of each direction (axis 1 in place for one direction, the
/// flat [D * G * hidden, k] form and a Reshape for two), the table gathered as int8 rows dequantized per row,
/// the table whose rows are a graph output dequantized whole (per row, axis 0) before its Gather, the
/// MatMul per column; biases float with a remark.
#[test]
fn recurrent_and_table_layouts() {
    let original = recurrent_model();
    let mut m = original.clone();
    let r = quantize(&mut m, "quantize{min_elements=1}");
    check_structure(&original, &m, &r, "recurrent");
    assert_eq!(r.stats["weights_quantized"], 9, "{r}");
    let w = |name: &str| {
        original
            .graph
            .constant(original.graph.value_by_name(name).unwrap())
            .unwrap()
            .clone()
    };
    // LSTM: W and R read Reshape(DequantizeLinear(q [64, k], scale [64], axis 0), [2, 32, k])
    for (slot, name, k) in [(1, "lstm_w", 16), (2, "lstm_r", 8)] {
        let reshape = producer_of(&m, "LSTM", slot).unwrap();
        assert!(reshape.op.is("Reshape"), "{name}: {}", reshape.op.display());
        let shape = m.graph.constant(reshape.input(1).unwrap()).unwrap();
        assert_eq!(shape.to_i64_vec().unwrap(), vec![2, 32, k]);
        let dq = m.graph.producer(reshape.input(0).unwrap()).unwrap().1;
        assert!(dq.op.is("DequantizeLinear"));
        assert_eq!(axis_of(dq), Some(0));
        let q = m.graph.constant(dq.input(0).unwrap()).unwrap();
        assert_eq!((q.dtype(), q.dims.clone()), (DataType::INT8, vec![64, k]));
        let s = m.graph.constant(dq.input(1).unwrap()).unwrap();
        assert_eq!(s.dims, vec![64]);
        // per direction: the backward direction's rows have their own scales (rows_f32 scales rows by r % 7,
        // and 32 % 7 != 0, so row 0 of each direction has a different range)
        let sv = s.to_f32_vec().unwrap();
        assert_ne!(sv[0], sv[32], "{name}: one scale shared across directions");
        within_half_step(&m, dq, &w(name), name);
    }
    // GRU and RNN (one direction): DequantizeLinear along axis 1 of the rank-3 weight, read directly
    for (op, slot, name, rows) in [
        ("GRU", 1, "gru_w", 24),
        ("GRU", 2, "gru_r", 24),
        ("RNN", 1, "rnn_w", 8),
        ("RNN", 2, "rnn_r", 8),
    ] {
        let dq = producer_of(&m, op, slot).unwrap();
        assert!(dq.op.is("DequantizeLinear"), "{name}");
        assert_eq!(axis_of(dq), Some(1), "{name}");
        let s = m.graph.constant(dq.input(1).unwrap()).unwrap();
        assert_eq!(s.dims, vec![rows], "{name}");
        within_half_step(&m, dq, &w(name), name);
    }
    // biases stay float, said once per recurrent node
    for op in ["LSTM", "GRU", "RNN"] {
        assert!(producer_of(&m, op, 3).is_none(), "{op}: bias changed");
        assert!(
            r.remarks.iter().any(|x| x.at == op
                && x.outcome == Outcome::Skipped
                && x.reason.contains("stays float")),
            "{op}: no bias remark\n{r}"
        );
    }
    // the table: the Gather reads int8 [40, 16]; its rows are (Cast(rows) - Cast(Gather(zero points))) *
    // Gather(scales [40, 1]), which equals the table within half a row's step
    let (_, gather) = node_named(&m, "embed");
    let q = m.graph.constant(gather.input(0).unwrap()).unwrap();
    assert_eq!((q.dtype(), q.dims.clone()), (DataType::INT8, vec![40, 16]));
    let rows = gather.output(0).unwrap();
    let uses: Vec<&str> = m
        .graph
        .nodes()
        .filter(|(_, n)| n.inputs.contains(&Some(rows)))
        .map(|(_, n)| n.op.op_type.as_str())
        .collect();
    assert_eq!(uses, vec!["Cast"], "the int8 rows are read by a Cast only");
    let gathers: Vec<&onnx_rewrite::ir::Node> = m
        .graph
        .nodes()
        .map(|(_, n)| n)
        .filter(|n| n.op.is("Gather") && n.input(1) == gather.input(1) && n.name() != "embed")
        .collect();
    assert_eq!(
        gathers.len(),
        2,
        "scales and zero points gathered with the same ids"
    );
    let param = |dt: DataType| {
        gathers
            .iter()
            .map(|n| m.graph.constant(n.input(0).unwrap()).unwrap())
            .find(|t| t.dtype() == dt)
            .unwrap()
    };
    let (s, z) = (param(DataType::FLOAT), param(DataType::INT8));
    assert_eq!((s.dims.clone(), z.dims.clone()), (vec![40, 1], vec![40, 1]));
    let deq: Vec<f32> = {
        let (qv, sv, zv) = (
            q.to_i64_vec().unwrap(),
            s.to_f32_vec().unwrap(),
            z.to_i64_vec().unwrap(),
        );
        qv.iter()
            .enumerate()
            .map(|(i, v)| (v - zv[i / 16]) as f32 * sv[i / 16])
            .collect()
    };
    check_half_step(
        &deq,
        &w("table").to_f32_vec().unwrap(),
        &s.to_f32_vec().unwrap(),
        vec![40, 16],
        Some(0),
        "table",
    );
    // the table whose gathered rows are a graph output (their dtype and name must stay): dequantized whole
    let dq = producer_of(&m, "pos_embed", 0).unwrap();
    assert!(dq.op.is("DequantizeLinear"));
    assert_eq!(axis_of(dq), Some(0));
    within_half_step(&m, dq, &w("pos_table"), "pos_table");
    assert!(
        r.remarks
            .iter()
            .any(|x| x.at == "pos_embed" && x.reason.contains("graph output")),
        "{r}"
    );
    let dq = producer_of(&m, "head", 1).unwrap();
    assert_eq!(axis_of(dq), Some(1));
    run_both(&original, &m, "recurrent");
}

/// `ops` narrows the set: MatMul only leaves every recurrent weight and both tables float; LSTM only takes
/// its W and R and nothing else.
#[test]
fn ops_narrow_recurrent_and_tables() {
    let original = recurrent_model();
    let floats_read = |m: &Model, node: &str, slots: &[usize]| {
        slots.iter().all(|s| {
            let (_, n) = node_named(m, node);
            m.graph
                .constant(n.input(*s).unwrap())
                .is_some_and(|t| t.dtype() == DataType::FLOAT)
        })
    };
    let mut m = original.clone();
    let r = quantize(&mut m, "quantize{min_elements=1,ops=[MatMul]}");
    check_structure(&original, &m, &r, "ops=[MatMul]");
    assert_eq!(r.stats["weights_quantized"], 1, "{r}");
    for (node, slots) in [
        ("LSTM", &[1, 2][..]),
        ("GRU", &[1, 2]),
        ("RNN", &[1, 2]),
        ("embed", &[0]),
        ("pos_embed", &[0]),
    ] {
        assert!(
            floats_read(&m, node, slots),
            "{node} changed with ops=[MatMul]"
        );
    }
    let mut m = original.clone();
    let r = quantize(&mut m, "quantize{min_elements=1,ops=[LSTM]}");
    check_structure(&original, &m, &r, "ops=[LSTM]");
    assert_eq!(r.stats["weights_quantized"], 2, "{r}");
    assert!(!floats_read(&m, "LSTM", &[1]) && !floats_read(&m, "LSTM", &[2]));
    assert!(floats_read(&m, "GRU", &[1, 2]) && floats_read(&m, "embed", &[0]));
    assert!(floats_read(&m, "head", &[1]));
}

/// per_channel=false: one scale per weight, W / R read one DequantizeLinear without axis and no Reshape, the
/// table gathered as int8 rows and dequantized by one DequantizeLinear after the Gather. symmetric=true: the
/// per-row table needs no zero point (no Sub). Both run in ONNX Runtime and through tract.
#[test]
fn per_tensor_and_symmetric_forms() {
    let original = recurrent_model();
    let mut m = original.clone();
    let r = quantize(&mut m, "quantize{min_elements=1,per_channel=false}");
    check_structure(&original, &m, &r, "per-tensor");
    for slot in [1, 2] {
        let dq = producer_of(&m, "LSTM", slot).unwrap();
        assert!(dq.op.is("DequantizeLinear") && axis_of(dq).is_none());
    }
    let (_, gather) = node_named(&m, "embed");
    assert!(m
        .graph
        .constant(gather.input(0).unwrap())
        .is_some_and(|t| t.dtype() == DataType::INT8));
    let rows = gather.output(0).unwrap();
    let dq: Vec<&onnx_rewrite::ir::Node> = m
        .graph
        .nodes()
        .map(|(_, n)| n)
        .filter(|n| n.input(0) == Some(rows))
        .collect();
    assert!(dq.len() == 1 && dq[0].op.is("DequantizeLinear") && axis_of(dq[0]).is_none());
    run_both(&original, &m, "per_tensor");

    let mut m = original.clone();
    let r = quantize(&mut m, "quantize{min_elements=1,symmetric=true}");
    check_structure(&original, &m, &r, "symmetric");
    assert!(
        !m.graph.nodes().any(|(_, n)| n.op.is("Sub")),
        "symmetric int8 rows need no zero point"
    );
    assert!(m.graph.nodes().any(|(_, n)| n.op.is("Mul")));
    run_both(&original, &m, "symmetric");
}

/// Running the pass on its own output changes nothing and says why: recurrent weights read through the
/// Reshape of a DequantizeLinear, and 8-bit tables, are already quantized.
#[test]
fn second_run_leaves_quantized_weights() {
    let mut m = recurrent_model();
    quantize(&mut m, "quantize{min_elements=1}");
    let r = quantize(&mut m, "quantize{min_elements=1}");
    assert!(!r.changed, "{r}");
    assert!(
        r.remarks.iter().any(|x| x.at == "LSTM"
            && x.reason
                .contains("already quantized (read through DequantizeLinear)")),
        "{r}"
    );
    assert!(
        r.remarks
            .iter()
            .any(|x| x.at == "embed" && x.reason.contains("already quantized storage")),
        "{r}"
    );
}

/// A recurrent weight stored 2-D in the main graph and moved into an LSTM inside each `If` branch the way
/// PyTorch / silero export it: gate blocks Sliced along axis 0, Concatenated in another order, Unsqueezed on
/// axis 0. W's rows go through that chain in both branches: one DequantizeLinear per row (axis 0) in the main
/// graph, the chain kept, one remark per LSTM, values within half a step. R is Sliced along axis 1 (its rows
/// are cut, not moved whole), so it is not a weight the LSTM reads row by row: it stays float, with the remark
/// that the slot is computed.
#[test]
fn recurrent_weight_moved_into_if_branches() {
    let mut b = GraphBuilder::new("outer");
    b.input("x", DataType::FLOAT, &["3", "1", "16"]);
    let cond = b.input("cond", DataType::BOOL, &[]);
    b.initializer(rows_f32("w_ih", vec![32, 16], 60));
    b.initializer(rows_f32("w_hh", vec![32, 16], 61));
    let ints = |name: &str, v: Vec<i64>| Tensor::from_vec(name, vec![v.len() as i64], v).unwrap();
    let branch = |name: &str| {
        let mut t = GraphBuilder::new(name);
        let xin = t.outer("x");
        let w = t.outer("w_ih");
        let r = t.outer("w_hh");
        let op = |o: &str| OpKey::onnx(o);
        let c = |t: &mut GraphBuilder, k: &str, v: Vec<i64>| {
            let n = format!("{name}_{k}");
            t.named_node(
                &n,
                op("Constant"),
                &[],
                &[&format!("{n}_v")],
                vec![Attribute::tensor("value", ints(k, v))],
            )[0]
        };
        let (z, e8, e32, ax0, ax1) = (
            c(&mut t, "z", vec![0]),
            c(&mut t, "e8", vec![8]),
            c(&mut t, "e32", vec![32]),
            c(&mut t, "ax0", vec![0]),
            c(&mut t, "ax1", vec![1]),
        );
        let slice = |t: &mut GraphBuilder, k: &str, src, s, e, ax| {
            t.named_node(
                &format!("{name}_{k}"),
                op("Slice"),
                &[Some(src), Some(s), Some(e), Some(ax)],
                &[&format!("{name}_{k}_y")],
                vec![],
            )[0]
        };
        // W: gate block [0, 8) moved after [8, 32)
        let w0 = slice(&mut t, "w_a", w, z, e8, ax0);
        let w1 = slice(&mut t, "w_b", w, e8, e32, ax0);
        let wc = t.named_node(
            &format!("{name}_w_cat"),
            op("Concat"),
            &[Some(w1), Some(w0)],
            &[&format!("{name}_w_cat_y")],
            vec![Attribute::int("axis", 0)],
        )[0];
        let wu = t.named_node(
            &format!("{name}_w_up"),
            op("Unsqueeze"),
            &[Some(wc), Some(ax0)],
            &[&format!("{name}_w_up_y")],
            vec![],
        )[0];
        // R: columns [0, 8) of each row, then lifted
        let r0 = slice(&mut t, "r_cols", r, z, e8, ax1);
        let ru = t.named_node(
            &format!("{name}_r_up"),
            op("Unsqueeze"),
            &[Some(r0), Some(ax0)],
            &[&format!("{name}_r_up_y")],
            vec![],
        )[0];
        let y = t.named_node(
            &format!("{name}_lstm"),
            op("LSTM"),
            &[Some(xin), Some(wu), Some(ru)],
            &[&format!("{name}_lstm_y")],
            vec![Attribute::int("hidden_size", 8)],
        )[0];
        t.output(y, DataType::FLOAT, &["3", "1", "1", "8"]);
        t.build()
    };
    let y = b.node(
        "If",
        &[cond],
        vec![
            Attribute::graph("then_branch", branch("then")),
            Attribute::graph("else_branch", branch("else")),
        ],
        1,
    )[0];
    b.output(y, DataType::FLOAT, &["3", "1", "1", "8"]);
    let dir = common::tempdir();
    // the builder does not record branch captures: a save / load round trip does
    let original = io::load(&common::save(&model(b.build(), 17), dir.path(), "moved")).unwrap();
    let mut m = original.clone();
    let r = quantize(&mut m, "quantize{min_elements=1}");
    check_structure(&original, &m, &r, "moved");
    assert_eq!(r.stats["weights_quantized"], 1, "{r}");
    let dqs: Vec<&onnx_rewrite::ir::Node> = m
        .graph
        .nodes()
        .map(|(_, n)| n)
        .filter(|n| n.op.is("DequantizeLinear"))
        .collect();
    assert_eq!(dqs.len(), 1, "one DequantizeLinear in the main graph");
    assert_eq!(axis_of(dqs[0]), Some(0));
    let w = original
        .graph
        .constant(original.graph.value_by_name("w_ih").unwrap())
        .unwrap()
        .clone();
    within_half_step(&m, dqs[0], &w, "w_ih");
    assert!(
        m.graph.value_by_name("w_ih").is_none(),
        "the float w_ih is gone"
    );
    for lstm in ["if_0/then_branch/then_lstm", "if_0/else_branch/else_lstm"] {
        let applied: Vec<_> = r
            .remarks
            .iter()
            .filter(|x| x.at == lstm && x.outcome == Outcome::Applied)
            .collect();
        assert_eq!(applied.len(), 1, "{lstm}: {r}");
        assert!(applied[0].reason.contains("one scale per gate row"), "{r}");
        assert!(
            r.remarks
                .iter()
                .any(|x| x.at == lstm && x.reason.contains("computed by a Unsqueeze")),
            "{lstm}: R's slot remark\n{r}"
        );
    }
    assert!(m.graph.value_by_name("w_hh").is_some(), "w_hh stays float");
    let a = common::save(&original, dir.path(), "moved_float");
    let q = common::save(&m, dir.path(), "moved_q");
    common::check_files(std::slice::from_ref(&q));
    for c in ["0", "1"] {
        let drift = ort_drift(&a, &q, &["--fill", &format!("cond={c}")]);
        eprintln!("moved, cond={c}: ORT rel drift {drift:.5}");
    }
    let mut o = opts(&[], 1);
    o.inputs = write_inputs(
        dir.path(),
        "moved",
        vec![
            f32s("x", vec![3, 1, 16], 70),
            Tensor::from_vec("cond", vec![], vec![true]).unwrap(),
        ],
    );
    assert!(tract_ok(&original, &m, &o, "moved"));
}
