//! `quantize{mode=weight, format=matmulnbits}`: MatMul weights become ONNX Runtime's MatMulNBits (8-bit blocks
//! along K). Checked: the structure, ONNX Runtime's run against our fold of the op (the one validation gives
//! tract), validation through tract with its remark, onnx.checker full_check, and the CLI.

mod common;

use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{DataType, Model, Tensor};
use onnx_rewrite::passes::{run_pipeline, PipelineOptions};
use onnx_rewrite::validate::{self, ValidateOptions};

/// x[2, 64] -> MatMul(64x48) -> Relu -> MatMul(48x10: K not a multiple of 32, its last block padded) -> y; and a MatMul whose B is
/// computed (stays float).
fn mlp() -> Model {
    let mut b = GraphBuilder::new("mlp");
    let x = b.input("x", DataType::FLOAT, &["2", "64"]);
    let w1 = b.initializer(Tensor::from_f32(
        "w1",
        vec![64, 48],
        &common::vals(64 * 48, 1),
    ));
    let h = b.node("MatMul", &[x, w1], vec![], 1)[0];
    let r = b.node("Relu", &[h], vec![], 1)[0];
    let w2 = b.initializer(Tensor::from_f32("w2", vec![48, 10], &common::vals(480, 2)));
    let y = b.node("MatMul", &[r, w2], vec![], 1)[0];
    let t = b.node("Transpose", &[x], vec![], 1)[0];
    let g = b.node("MatMul", &[x, t], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["2", "10"]);
    b.output(g, DataType::FLOAT, &["2", "2"]);
    model(b.build(), 17)
}

fn ops(m: &Model) -> Vec<String> {
    m.graph.nodes().map(|(_, n)| n.op.display()).collect()
}

#[test]
fn matmul_weights_become_matmulnbits_and_run_as_folded() {
    let original = mlp();
    let mut m = original.clone();
    let r = run_pipeline(
        &mut m,
        &["quantize{mode=weight,format=matmulnbits,block_size=32}"],
        &PipelineOptions::default(),
    )
    .unwrap()
    .remove(0);
    assert_eq!(r.stats["matmulnbits"], 2, "{r}");
    let o = ops(&m);
    assert_eq!(
        o.iter().filter(|x| x.ends_with("MatMulNBits")).count(),
        2,
        "{o:?}"
    );
    assert_eq!(o.iter().filter(|x| *x == "MatMul").count(), 1, "{o:?}");
    assert_eq!(m.opset("com.microsoft"), Some(1));
    assert!(
        m.graph.value_by_name("w1").is_none(),
        "the float weight is gone"
    );
    let text = r.to_string();
    assert!(
        text.contains("MatMulNBits 8-bit, block 32 along K: weight 'w2' 48x10 (1920 -> 740 bytes)"),
        "{text}"
    );
    assert!(
        text.contains("not MatMulNBits: B is not a constant"),
        "{text}"
    );

    // tract validates it folded, with a remark, within the default tolerances
    let v = validate::compare(&original, &m, &ValidateOptions::default()).unwrap();
    assert!(v.passed(), "{v}");
    assert!(
        v.remarks.iter().any(|x| x.contains("folded MatMulNBits")),
        "{v}"
    );

    // ONNX Runtime's kernel computes what our fold says it does: ORT(MatMulNBits) against ORT(the folded
    // MatMul). Both are the same f32 products summed in another order: each output differs by at most
    // K u sum|a w| (u = 2^-24, K <= 64, so 4e-6 of sum|a w|), and with N(0, 1) inputs and these weights
    // sum|a w| is within 10x of max |y|, so rel <= 1e-4 holds with margin; one code or scale read wrongly
    // moves an output by at least a quantization step, ~1e-2 of it.
    // The folded weights (what validation hands tract) go into a copy of the original for ONNX Runtime.
    let dir = common::tempdir();
    let q = common::save(&m, dir.path(), "nbits");
    let (folded, _) = validate::fold_unsupported(&m).unwrap();
    let mut reference = original.clone();
    let mut p = onnx_rewrite::ir::Patch::new("test");
    for (_, n) in folded.graph.nodes().filter(|(_, n)| n.op.is("MatMul")) {
        let w = folded.graph.constant(n.input(1).unwrap());
        if let Some(w) = w {
            let name = if w.dims == [64, 48] { "w1" } else { "w2" };
            let v = reference.graph.value_by_name(name).unwrap();
            p.replace_initializer(
                v,
                Tensor::from_f32(name, w.dims.clone(), &w.to_f32_vec().unwrap()),
            );
        }
    }
    reference.graph.apply(p).unwrap();
    let f = common::save(&reference, dir.path(), "folded");
    let outs = common::ort_outputs(&q, &f, &[]);
    for (name, o) in outs.as_object().unwrap() {
        let rel = o["rel"].as_f64().unwrap();
        assert!(rel <= 1e-4, "{name}: {o}");
    }
    common::check_files(&[q]);
}

#[test]
fn cli_format_flags_and_their_errors() {
    let dir = common::tempdir();
    let src = common::save(&mlp(), dir.path(), "mlp");
    let out = dir.path().join("q.onnx");
    let (s, o) = (src.to_str().unwrap(), out.to_str().unwrap());
    let (code, stdout, err) = common::cli(&[
        "quantize",
        s,
        o,
        "--format",
        "matmulnbits",
        "--block-size",
        "16",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains("matmulnbits=2"), "{stdout}");
    for (args, want) in [
        (
            vec!["--format", "matmulnbits", "--block-size", "48"],
            "a power of two from 16 to 256",
        ),
        (vec!["--format", "nbits"], "unknown format 'nbits'"),
        (
            vec!["--format", "matmulnbits", "--mode", "static"],
            "weight-only form",
        ),
    ] {
        let mut a = vec!["quantize", s, o];
        a.extend(args);
        let (code, _, err) = common::cli(&a);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "{err}");
    }
}
