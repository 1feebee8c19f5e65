//! Pass services: the drift measure and calibrator a pipeline hands its passes, progress reporting, the
//! pass listing generated from the options structs, and pass-spec errors on the command line.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use onnx_rewrite::ir::{Model, Patch, Tensor};
use onnx_rewrite::passes::quantize::calibrate::{collect_stats, StatsOptions};
use onnx_rewrite::passes::{
    run_passes, DriftSummary, Pass, PassContext, PassReport, PipelineOptions, Progress,
};
use onnx_rewrite::validate::{TractCalibrator, TractDrift, ValidateOptions};
use onnx_rewrite::Result;

/// Measures drift, changes the first float weight by 1%, measures again.
struct DriftProbe {
    seen: Rc<RefCell<Vec<DriftSummary>>>,
}

impl Pass for DriftProbe {
    fn name(&self) -> &'static str {
        "drift-probe"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(self.name());
        let before = cx.measure_drift(self.name(), model)?;
        let (v, t) = model
            .graph
            .initializers()
            .find(|(_, t)| t.dims.len() == 2)
            .map(|(v, t)| (v, t.clone()))
            .expect("a weight matrix");
        let scaled: Vec<f32> = t.to_f32_vec()?.iter().map(|x| x * 1.01).collect();
        let mut p = Patch::new(self.name());
        p.replace_initializer(v, Tensor::from_f32(t.name(), t.dims.clone(), &scaled));
        report.record(model.graph.apply(p)?);
        let after = cx.measure_drift(self.name(), model)?;
        self.seen.borrow_mut().extend([before, after]);
        Ok(report)
    }
}

fn options(samples: usize) -> ValidateOptions {
    ValidateOptions {
        samples,
        dims: [("N".to_string(), 3)].into_iter().collect(),
        ..Default::default()
    }
}

#[test]
fn drift_measure_sees_zero_then_nonzero_and_runs_the_original_once() {
    let path = common::root().join("fixtures/mlp_matmul.onnx");
    let mut model = onnx_rewrite::io::load(&path).unwrap();
    let drift = TractDrift::new(&model, options(2));
    let runs = drift.reference_runs();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut cx = PassContext {
        drift: Some(Box::new(drift)),
        ..Default::default()
    };
    let passes: Vec<Box<dyn Pass>> = vec![
        Box::new(DriftProbe { seen: seen.clone() }),
        Box::new(DriftProbe { seen: seen.clone() }),
    ];
    let reports = run_passes(&mut model, passes, &PipelineOptions::default(), &mut cx).unwrap();
    assert!(reports.iter().all(|r| r.changed));
    let seen = seen.borrow();
    assert_eq!(seen.len(), 4);
    // unchanged model: the same computation, so exactly no drift
    assert!(seen[0].is_exact(), "{}", seen[0]);
    assert_eq!(seen[0].samples, 2);
    assert_eq!(seen[0].min_cosine(), 1.0);
    assert_eq!(seen[0].min_sqnr_db(), f64::INFINITY);
    // one weight scaled by 1.01: the outputs move, and the drift is against the original, so it grows with the
    // second pass's further change (1.01^2 - 1 > 1.01 - 1) instead of restarting from the first pass's result
    assert!(
        seen[1].max_abs() > 0.0 && seen[1].min_sqnr_db().is_finite(),
        "{}",
        seen[1]
    );
    assert_eq!(
        seen[2], seen[1],
        "the second pass starts from the first one's model"
    );
    assert!(
        seen[3].max_abs() > seen[1].max_abs(),
        "{} vs {}",
        seen[3],
        seen[1]
    );
    // the original ran once per sample, on the first measure only
    assert_eq!(runs.load(Ordering::Relaxed), 2);
}

#[test]
fn calibrator_reaches_passes_through_the_context() {
    struct CalProbe(Rc<RefCell<usize>>);
    impl Pass for CalProbe {
        fn name(&self) -> &'static str {
            "cal-probe"
        }
        fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<PassReport> {
            let g = &model.graph;
            let tensors: Vec<String> = g
                .nodes()
                .filter_map(|(_, n)| n.output(0))
                .map(|v| g.value_name(v).to_string())
                .collect();
            let stats = collect_stats(
                cx.calibrator(self.name())?,
                model,
                &tensors,
                StatsOptions::default(),
            )?;
            *self.0.borrow_mut() = stats.values().filter(|s| s.batches == 3).count();
            Ok(PassReport::new(self.name()))
        }
    }
    let path = common::root().join("fixtures/mlp_matmul.onnx");
    let mut model = onnx_rewrite::io::load(&path).unwrap();
    let n_nodes = model.graph.node_count();
    let count = Rc::new(RefCell::new(0));
    let mut cx = PassContext {
        calibrator: Some(Box::new(TractCalibrator::new(options(3)))),
        ..Default::default()
    };
    let passes: Vec<Box<dyn Pass>> = vec![Box::new(CalProbe(count.clone()))];
    run_passes(&mut model, passes, &PipelineOptions::default(), &mut cx).unwrap();
    assert_eq!(
        *count.borrow(),
        n_nodes,
        "every node output seen on 3 samples"
    );
    // without a calibrator the pass fails with an error naming it
    let mut bare = PassContext::default();
    let passes: Vec<Box<dyn Pass>> = vec![Box::new(CalProbe(count.clone()))];
    let e = run_passes(&mut model, passes, &PipelineOptions::default(), &mut bare).unwrap_err();
    assert!(
        e.to_string()
            .contains("pass 'cal-probe': needs a calibrator"),
        "{e}"
    );
}

#[test]
fn pipeline_reports_progress_per_pass() {
    #[derive(Default)]
    struct Log(Rc<RefCell<Vec<String>>>);
    impl Progress for Log {
        fn start(&mut self, label: &str, total: Option<u64>) {
            self.0.borrow_mut().push(format!("start {label} {total:?}"));
        }
        fn advance(&mut self, n: u64) {
            self.0.borrow_mut().push(format!("advance {n}"));
        }
        fn finish(&mut self) {
            self.0.borrow_mut().push("finish".into());
        }
    }
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut cx = PassContext {
        progress: Box::new(Log(log.clone())),
        ..Default::default()
    };
    let mut model =
        onnx_rewrite::io::load(&common::root().join("fixtures/conv_bn_relu.onnx")).unwrap();
    onnx_rewrite::passes::run_pipeline_with(
        &mut model,
        &["dce", "topo-sort"],
        &PipelineOptions::default(),
        &mut cx,
    )
    .unwrap();
    assert_eq!(
        *log.borrow(),
        ["start dce None", "finish", "start topo-sort None", "finish"]
    );
}

#[test]
fn passes_command_lists_options_and_readme_table_is_generated() {
    let (code, text, err) = common::cli(&["passes"]);
    assert_eq!(code, 0, "{err}");
    for p in onnx_rewrite::passes::PASSES {
        assert!(text.contains(p.name), "{text}");
    }
    let (code, json, _) = common::cli(&["passes", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        onnx_rewrite::passes::PASSES.len()
    );
    let (code, md, _) = common::cli(&["passes", "--markdown"]);
    assert_eq!(code, 0);
    let readme = std::fs::read_to_string(common::root().join("docs/commands.md")).unwrap();
    let (begin, end) = ("<!-- passes:begin -->\n", "<!-- passes:end -->");
    let start = readme
        .find(begin)
        .expect("docs/commands.md marks the pass table")
        + begin.len();
    let stop = readme[start..].find(end).expect("end marker") + start;
    assert_eq!(
        &readme[start..stop],
        md,
        "docs/commands.md's pass table is stale: replace it with the output of `onnx-rewrite passes --markdown`:\n{md}"
    );
}

#[test]
fn bad_pass_specs_exit_2_naming_the_problem() {
    let dir = common::tempdir();
    let out = dir.path().join("o.onnx");
    let run = |spec: &str| {
        common::cli(&[
            "run",
            "fixtures/conv_bn_relu.onnx",
            out.to_str().unwrap(),
            "-p",
            spec,
        ])
    };
    let (code, _, err) = run("dce{aggressive=true}");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pass 'dce'") && err.contains("aggressive"),
        "{err}"
    );
    let (code, _, err) = run("dce,topo-sort{x=[1,2}");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected ',' or ']' at column 17"), "{err}");
    let (code, _, err) = run("nope");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("valid passes: dce"), "{err}");
    assert!(!out.exists());
    // a list value with commas inside a -p argument splits correctly
    let (code, _, err) = run("dce{},topo-sort");
    assert_eq!(code, 0, "{err}");
}
