//! Validation that cannot run says so (exit 5, naming the node and op, with the dims hint), and validation of
//! models with control flow: `If`s whose condition follows from the sample are specialised for the run (the
//! silero VAD models, nested `If`s on `sr` and on shapes).

mod common;

use std::path::{Path, PathBuf};

use onnx_rewrite::error::Error;
use onnx_rewrite::io;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{Attribute, DataType, Graph, Model, OpKey, Patch, Tensor, ValueId};
use onnx_rewrite::validate::{self, Sample, ValidateOptions};

// ---- exit 5: the engine cannot run the model ----------------------------------------------------------------

/// x -> com.microsoft::FusedGelu -> Relu -> y: an op tract does not implement.
fn unknown_op_model() -> Model {
    let mut b = GraphBuilder::new("main");
    let x = b.input("x", DataType::FLOAT, &["1", "4"]);
    let g = b.named_node(
        "gelu_0",
        OpKey {
            domain: Some("com.microsoft".into()),
            op_type: "FusedGelu".into(),
        },
        &[Some(x)],
        &["g"],
        vec![],
    );
    let y = b.node("Relu", &[g[0]], vec![], 1);
    b.output(y[0], DataType::FLOAT, &["1", "4"]);
    let mut m = model(b.build(), 17);
    m.opset_import.push(onnx_rewrite::ir::OpsetId {
        domain: Some("com.microsoft".into()),
        version: Some(1),
    });
    m
}

#[test]
fn unknown_op_is_exit_5_naming_node_and_op() {
    let m = unknown_op_model();
    let err = validate::compare(&m, &m, &Default::default()).unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    match &err {
        Error::CannotValidate {
            model, node, op, ..
        } => {
            assert_eq!(model.as_deref(), Some("reference"));
            assert_eq!(node.as_deref(), Some("gelu_0"));
            assert_eq!(op.as_deref(), Some("com.microsoft::FusedGelu"));
        }
        other => panic!("not CannotValidate: {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("gelu_0") && msg.contains("com.microsoft::FusedGelu"),
        "{msg}"
    );
}

#[test]
fn cli_self_validate_of_an_unknown_op_exits_5() {
    let dir = common::tempdir();
    let path = dir.path().join("fused_gelu.onnx");
    io::save(&unknown_op_model(), &path, &Default::default()).unwrap();
    let p = path.to_str().unwrap();
    let (code, _, err) = common::cli(&["validate", p, p]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("FusedGelu") && err.contains("gelu_0"), "{err}");
}

/// y = x[1, K] @ W[4, 2]: typing fails while the symbolic K is left at the default 1.
fn matmul_with_symbolic_k() -> Model {
    let mut b = GraphBuilder::new("main");
    let x = b.input("x", DataType::FLOAT, &["1", "K"]);
    let w = b.initializer(Tensor::from_f32("w", vec![4, 2], &[0.5; 8]));
    let y = b.node("MatMul", &[x, w], vec![], 1);
    b.output(y[0], DataType::FLOAT, &["1", "2"]);
    model(b.build(), 17)
}

#[test]
fn typing_failure_hints_at_the_default_dims() {
    let m = matmul_with_symbolic_k();
    let err = validate::compare(&m, &m, &Default::default()).unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "hint: symbolic dims left at the default 1: K (set them with --dim NAME=VALUE)"
        ),
        "{msg}"
    );
    // once K is set, the same model validates
    let mut opts = ValidateOptions::default();
    opts.dims.insert("K".into(), 4);
    let r = validate::compare(&m, &m, &opts).unwrap();
    assert!(r.passed(), "{r}");
}

/// x[N, 2, H, W] -> Conv 5x5 (no padding): tract cannot run it at H = W = 1, so random inputs take the first
/// ladder size it runs at for the spatial dims (N, a batch axis, stays 1) and say so; an explicit default dim
/// (`auto_dims` off) is used as given.
#[test]
fn unset_spatial_dims_take_a_size_the_model_runs_at() {
    let mut b = GraphBuilder::new("main");
    let x = b.input("x", DataType::FLOAT, &["N", "2", "H", "W"]);
    let w = b.initializer(Tensor::from_f32("w", vec![3, 2, 5, 5], &[0.1; 150]));
    let y = b.node("Conv", &[x, w], vec![], 1);
    b.output(y[0], DataType::FLOAT, &["N", "3", "H2", "W2"]);
    let m = model(b.build(), 17);
    let auto = ValidateOptions {
        auto_dims: true,
        ..Default::default()
    };
    let r = validate::compare(&m, &m, &auto).unwrap();
    assert!(r.passed(), "{r}");
    assert_eq!(r.inputs[0].shape, [1, 2, 16, 16], "{r}");
    assert!(
        r.inputs[0]
            .source
            .contains("dims chosen: N=1, H=16, W=16 (unset spatial dims start at 16"),
        "{r}"
    );
    // a rank-2 [N, K] input whose K must be 32 or more: the default is tried first, then the ladder
    let mut b = GraphBuilder::new("main");
    let x = b.input("x", DataType::FLOAT, &["N", "K"]);
    let starts = b.initializer(Tensor::from_i64("starts", vec![1], &[20]));
    let ends = b.initializer(Tensor::from_i64("ends", vec![1], &[30]));
    let axes = b.initializer(Tensor::from_i64("axes", vec![1], &[1]));
    let y = b.node("Slice", &[x, starts, ends, axes], vec![], 1);
    b.output(y[0], DataType::FLOAT, &["N", "10"]);
    let sliced = model(b.build(), 17);
    let r = validate::compare(&sliced, &sliced, &auto).unwrap();
    assert_eq!(r.inputs[0].shape, [1, 32], "{r}");
    assert!(
        r.inputs[0]
            .source
            .contains("dims chosen: N=1, K=32 (the model does not run with unset dims at 1"),
        "{r}"
    );
    let explicit = ValidateOptions::default();
    // tract runs the 5x5 Conv over a 1x1 input to an empty output: vacuous, and said
    let r = validate::compare(&m, &m, &explicit).unwrap();
    assert_eq!(r.inputs[0].shape, [1, 2, 1, 1], "{r}");
    assert!(
        r.remarks.contains(
            &"output 'conv_0_out0' has no elements on these samples: nothing of it was compared"
                .into()
        ),
        "{r}"
    );
}

/// `validate M M` with no flag succeeds on the real models, among them those whose symbolic dims must be chosen
/// (PP-OCR's `?` and `p2o.DynamicDimension.*` spatial dims, silero's sequence, ddddocr's width). picodet (65 s
/// in a debug build, all dims fixed) and minilm_l6_int8 (15 s, [batch, sequence] runs at 1) are left to the
/// closing figures: nothing is chosen for them.
#[test]
fn validate_with_no_flags_runs_the_real_models() {
    let mut chosen = 0;
    for (meta, path) in common::real_models() {
        if ["picodet_layout_cdla", "minilm_l6_int8"].contains(&meta.name.as_str()) {
            continue;
        }
        let p = path.to_str().unwrap();
        let (code, stdout, err) = common::cli(&["validate", p, p]);
        assert_eq!(code, 0, "{}: {stdout}\n{err}", meta.name);
        assert!(stdout.starts_with("validation: PASSED"), "{stdout}");
        chosen += stdout.contains("dims chosen: ") as usize;
    }
    assert!(chosen >= 4, "dims were chosen for {chosen} models");
}

// ---- control flow ---------------------------------------------------------------------------------------------

fn silero(name: &str) -> Model {
    let (_, path) = common::real_models()
        .into_iter()
        .find(|(m, _)| m.name == name)
        .unwrap_or_else(|| panic!("{name} not in tools/real_models.json"));
    io::load(&path).unwrap()
}

/// One silero sample (batch 1: `n` audio samples at `sr` Hz, a state) written as .npy files into `folder`.
fn write_silero_sample(folder: &Path, seed: u64, sr: i64, n: usize) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
    };
    let audio: Vec<f32> = (0..n).map(|_| next() * 0.5).collect();
    let state: Vec<f32> = (0..256).map(|_| next() * 0.1).collect();
    let sample = Sample {
        origin: format!("silero #{seed}"),
        tensors: vec![
            (
                "input".into(),
                Tensor::from_f32("input", vec![1, n as i64], &audio),
            ),
            (
                "state".into(),
                Tensor::from_f32("state", vec![2, 1, 128], &state),
            ),
            ("sr".into(), Tensor::from_i64("sr", vec![], &[sr])),
        ],
    };
    sample.write_npy(folder).unwrap();
}

/// One 16 kHz sample of 512 audio samples (what silero expects at 16 kHz); returns its folder.
fn silero_inputs(dir: &Path, seed: u64) -> PathBuf {
    let folder = dir.join(format!("sample{seed}"));
    write_silero_sample(&folder, seed, 16000, 512);
    folder
}

/// The largest float constant (initializer or `Constant` node) of `g`: (value, tensor).
fn largest_float_constant(g: &Graph) -> Option<(ValueId, Tensor)> {
    g.values()
        .filter_map(|(v, _)| g.constant(v).map(|t| (v, t.into_owned())))
        .filter(|(_, t)| t.dtype() == DataType::FLOAT)
        .max_by_key(|(_, t)| t.numel().unwrap_or(0))
}

/// Break a model: the largest float weight of any graph (the main graph or an `If` branch, where spox keeps
/// them) multiplied by -0.5. (Negation alone can be invisible: silero's STFT basis feeds a magnitude.)
fn break_largest_weight(m: &Model) -> Model {
    let mut largest = 0;
    m.graph.walk(&mut |g| {
        if let Some((_, t)) = largest_float_constant(g) {
            largest = largest.max(t.numel().unwrap());
        }
    });
    assert!(largest > 1, "no float weight");
    let mut broken = m.clone();
    let mut done = false;
    broken
        .graph
        .walk_mut(&mut |g| {
            let Some((v, t)) = largest_float_constant(g) else {
                return Ok(());
            };
            if done || t.numel().unwrap() != largest {
                return Ok(());
            }
            done = true;
            let vals: Vec<f32> = t.to_f32_vec().unwrap().iter().map(|x| -0.5 * x).collect();
            let nt = Tensor::from_f32(g.value_name(v), t.dims.clone(), &vals);
            let mut p = Patch::new("break");
            match g.producer(v) {
                Some((n, _)) => p.set_attr(n, Attribute::tensor("value", nt)),
                None => p.replace_initializer(v, nt),
            }
            g.apply(p).map(|_| ())
        })
        .unwrap();
    assert!(done);
    broken
}

fn check_silero(name: &str) {
    let m = silero(name);
    let dir = common::tempdir();
    let opts = ValidateOptions {
        inputs: vec![silero_inputs(dir.path(), 1)],
        ..Default::default()
    };
    let r = validate::compare(&m, &m, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(r.passed(), "{name}:\n{r}");
    for o in &r.outputs {
        assert_eq!(
            o.metrics.as_ref().unwrap().max_abs,
            0.0,
            "{name} {}",
            o.name
        );
    }
    // the report says which branch each If took (sr = 16000, batch 1)
    let specialised: Vec<&String> = r
        .remarks
        .iter()
        .filter(|s| s.starts_with("reference: If '") && s.contains("specialised"))
        .collect();
    assert!(!specialised.is_empty(), "{name}: no If specialised\n{r}");
    assert!(
        !r.remarks.iter().any(|s| s.contains("not specialised")),
        "{name}:\n{r}"
    );
    // the same on the candidate side, and deterministic
    assert_eq!(
        r.remarks
            .iter()
            .filter(|s| s.starts_with("candidate: If '"))
            .count(),
        specialised.len()
    );
    let again = validate::compare(&m, &m, &opts).unwrap();
    assert_eq!(r.to_json(), again.to_json());

    // a broken copy fails with the default tolerances
    let broken = break_largest_weight(&m);
    let r = validate::compare(&m, &broken, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!r.passed(), "{name}: a broken weight passed\n{r}");
    assert!(
        r.outputs
            .iter()
            .flat_map(|o| &o.checks)
            .any(|c| !c.passed && c.metric != "shape"),
        "{name}: failed for another reason than drift\n{r}"
    );
}

#[test]
fn silero_op15_validates_with_its_ifs_specialised() {
    check_silero("silero_vad_16k_op15");
}

#[test]
fn silero_spox_validates_with_its_ifs_specialised() {
    check_silero("silero_vad_spox");
}

/// Two samples that take different branches of the spox export's top `If` on `sr` (16 kHz / 512 samples and
/// 8 kHz / 256): each runs on its own specialisation (both models reloaded), and both choices are reported.
#[test]
fn samples_taking_different_branches_are_specialised_each() {
    let m = silero("silero_vad_spox");
    let dir = common::tempdir();
    let both = dir.path().join("both");
    write_silero_sample(&both.join("a_16k"), 3, 16000, 512);
    write_silero_sample(&both.join("b_8k"), 4, 8000, 256);
    let opts = ValidateOptions {
        inputs: vec![both],
        ..Default::default()
    };
    let r = validate::compare(&m, &m, &opts).unwrap();
    assert!(r.passed(), "{r}");
    assert_eq!(r.samples, 2);
    for o in &r.outputs {
        assert_eq!(o.metrics.as_ref().unwrap().max_abs, 0.0, "{}", o.name);
    }
    let said = |name: &str, cond: bool| {
        r.remarks.iter().any(|s| {
            s == &format!(
                "reference: If '{name}' specialised: condition {cond}, {}_branch inlined",
                if cond { "then" } else { "else" }
            )
        })
    };
    let ifs: Vec<String> = r
        .remarks
        .iter()
        .filter_map(|s| s.strip_prefix("reference: If '"))
        .filter_map(|s| s.split('\'').next())
        .map(|s| s.to_string())
        .collect();
    assert!(
        ifs.iter().any(|n| said(n, true) && said(n, false)),
        "no If took both branches:\n{r}"
    );
}

#[test]
fn cli_validate_of_a_broken_silero_exits_4() {
    let m = silero("silero_vad_16k_op15");
    let dir = common::tempdir();
    let broken = dir.path().join("broken.onnx");
    io::save(&break_largest_weight(&m), &broken, &Default::default()).unwrap();
    let original = common::model_cache().join("silero_vad_16k_op15.onnx");
    let inputs = silero_inputs(dir.path(), 2);
    let args = |cand: &Path| {
        vec![
            "validate".to_string(),
            original.to_str().unwrap().to_string(),
            cand.to_str().unwrap().to_string(),
            "--input".to_string(),
            inputs.to_str().unwrap().to_string(),
        ]
    };
    let a = args(&original);
    let (code, out, err) = common::cli(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("specialised"), "{out}");
    let a = args(&broken);
    let (code, out, err) = common::cli(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(code, 4, "{out}{err}");
}

// ---- one reference run, many candidates ------------------------------------------------------------------------

#[test]
fn one_reference_run_serves_every_candidate() {
    let reference = io::load(&common::root().join("fixtures/conv_bn_relu.onnx")).unwrap();
    let broken = {
        let mut m = reference.clone();
        let v = m.graph.value_by_name("fc.weight").unwrap();
        let t = m.graph.constant(v).unwrap().into_owned();
        let vals: Vec<f32> = t.to_f32_vec().unwrap().iter().map(|x| -x).collect();
        let mut p = Patch::new("break");
        p.replace_initializer(v, Tensor::from_f32("fc.weight", t.dims.clone(), &vals));
        m.graph.apply(p).unwrap();
        m
    };
    let opts = ValidateOptions {
        samples: 2,
        ..Default::default()
    };
    let run = validate::ReferenceRun::new(&reference, None, &opts).unwrap();
    assert_eq!(run.samples().len(), 2);
    let mut passed = Vec::new();
    for cand in [&reference, &broken] {
        let reused = validate::compare_with_reference(&run, cand, &opts.tolerances).unwrap();
        let fresh = validate::compare(&reference, cand, &opts).unwrap();
        assert_eq!(reused.to_json(), fresh.to_json());
        assert!(!reused.tensors.is_empty(), "intermediates compared");
        passed.push(reused.passed());
    }
    assert_eq!(passed, [true, false]);
    // the same run checked against another budget (a pipeline's pass): the tolerances come from the caller
    let exact = validate::Tolerances {
        max_abs: Some(0.0),
        ..Default::default()
    };
    let max_abs_check = |r: &validate::ValidationReport| -> Vec<bool> {
        r.outputs
            .iter()
            .flat_map(|o| &o.checks)
            .filter(|c| c.metric == "max_abs")
            .map(|c| c.passed)
            .collect()
    };
    let same = validate::compare_with_reference(&run, &reference, &exact).unwrap();
    assert!(same.passed(), "{same}");
    assert_eq!(max_abs_check(&same), [true]);
    let r = validate::compare_with_reference(&run, &broken, &exact).unwrap();
    assert_eq!(max_abs_check(&r), [false]);
    assert_eq!(r.tolerances, exact);
}

#[test]
fn evaluate_runs_silero_specialised() {
    let m = silero("silero_vad_spox");
    let dir = common::tempdir();
    let opts = ValidateOptions {
        inputs: vec![silero_inputs(dir.path(), 5)],
        latency_runs: Some(1),
        ..Default::default()
    };
    let r = validate::evaluate(&m, None, &opts).unwrap();
    assert!(r.macs_total > 0);
    assert!(
        r.remarks
            .iter()
            .any(|s| s == "If 'If_0' specialised: condition true, then_branch inlined"),
        "{:?}",
        r.remarks
    );
}
