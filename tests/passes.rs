//! Passes: one insta snapshot per pass per fixture (report + structural diff), beside asserted invariants:
//! the graph verifies, a pass that reports no change leaves the saved bytes identical, and the cleanup passes
//! do what they say on graphs built to need them.

mod common;

use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{DataType, Model, Patch, Tensor};
use onnx_rewrite::passes::{run_pipeline, PipelineOptions, PASSES};
use onnx_rewrite::{dump, io};

fn run(m: &mut Model, spec: &str) -> onnx_rewrite::passes::PassReport {
    run_pipeline(m, &[spec], &PipelineOptions::default())
        .unwrap()
        .remove(0)
}

#[test]
fn every_pass_on_every_fixture() {
    let dir = common::tempdir();
    for f in common::fixtures() {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        for p in PASSES {
            let original = io::load(&f).unwrap();
            let mut m = original.clone();
            let report = run(&mut m, p.name);
            m.graph.verify().unwrap();
            let out = dir.path().join(format!("{stem}.{}.onnx", p.name));
            io::save(&m, &out, &Default::default()).unwrap();
            if !report.changed {
                assert_eq!(
                    std::fs::read(&f).unwrap(),
                    std::fs::read(&out).unwrap(),
                    "{stem}/{}: unchanged but bytes differ",
                    p.name
                );
            }
            let text = format!("{report}\n{}", dump::diff(&original, &m));
            insta::assert_snapshot!(format!("{}__{stem}", p.name), text);
        }
    }
}

#[test]
fn unchanged_real_models_keep_their_bytes() {
    let dir = common::tempdir();
    for (meta, path) in common::real_models() {
        let mut m = io::load(&path).unwrap();
        let reports = run_pipeline(
            &mut m,
            &["dce", "dedup-initializers", "topo-sort"],
            &PipelineOptions::default(),
        )
        .unwrap();
        let out = dir.path().join(format!("{}.onnx", meta.name));
        io::save(&m, &out, &Default::default()).unwrap();
        if reports.iter().all(|r| !r.changed) {
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(&out).unwrap(),
                "{}",
                meta.name
            );
        }
    }
}

/// x -> Relu -> y (output); plus a dead chain x -> Sigmoid -> Neg, two identical weights feeding Add/Mul.
fn cleanup_model() -> Model {
    let mut b = GraphBuilder::new("cleanup");
    let x = b.input("x", DataType::FLOAT, &["N", "4"]);
    let w1 = b.initializer(Tensor::from_f32("w1", vec![4], &[1.0, 2.0, 3.0, 4.0]));
    let w2 = b.initializer(Tensor::from_f32("w2", vec![4], &[1.0, 2.0, 3.0, 4.0]));
    let unused = b.initializer(Tensor::from_f32("unused", vec![1], &[7.0]));
    let _ = unused;
    let a = b.node("Add", &[x, w1], vec![], 1)[0];
    let m = b.node("Mul", &[a, w2], vec![], 1)[0];
    let y = b.node("Relu", &[m], vec![], 1)[0];
    let s = b.node("Sigmoid", &[x], vec![], 1)[0];
    let _dead = b.node("Neg", &[s], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["N", "4"]);
    model(b.build(), 17)
}

#[test]
fn dce_removes_dead_nodes_and_initializers() {
    let mut m = cleanup_model();
    let before = m.clone();
    let r = run(&mut m, "dce");
    assert!(r.changed);
    assert_eq!(r.stats["nodes_removed"], 2);
    assert_eq!(r.stats["initializers_removed"], 1);
    assert!(m
        .graph
        .nodes()
        .all(|(_, n)| !n.op.is("Sigmoid") && !n.op.is("Neg")));
    assert!(m.graph.value_by_name("unused").is_none());
    insta::assert_snapshot!("dce__built", format!("{r}\n{}", dump::diff(&before, &m)));
    // idempotent: a second run changes nothing
    assert!(!run(&mut m, "dce").changed);
}

#[test]
fn dedup_merges_identical_initializers() {
    let mut m = cleanup_model();
    let r = run(&mut m, "dedup-initializers");
    assert!(r.changed);
    assert_eq!(r.stats["initializers_merged"], 1);
    let w1 = m.graph.value_by_name("w1").unwrap();
    assert!(m.graph.value_by_name("w2").is_none());
    assert_eq!(m.graph.consumers(w1).len(), 2);
    m.graph.verify().unwrap();
}

#[test]
fn topo_sort_restores_order() {
    let mut m = cleanup_model();
    let mut p = Patch::new("test");
    let mut order: Vec<_> = m.graph.node_ids().to_vec();
    order.reverse();
    p.reorder(order);
    m.graph.apply(p).unwrap();
    assert!(m.graph.verify().is_err(), "reversed order must not verify");
    let r = run_pipeline(&mut m, &["topo-sort"], &PipelineOptions::default())
        .unwrap()
        .remove(0);
    assert!(r.changed);
    m.graph.verify().unwrap();
}

#[test]
fn unknown_pass_and_option_are_usage_errors() {
    let mut m = cleanup_model();
    let e = run_pipeline(&mut m, &["nope"], &PipelineOptions::default()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("dce, dedup-initializers, topo-sort"),
        "{e}"
    );
    let e = run_pipeline(&mut m, &["dce{bogus=1}"], &PipelineOptions::default()).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn pass_output_is_deterministic() {
    let dir = common::tempdir();
    let mut outs = Vec::new();
    for k in 0..2 {
        let mut m = cleanup_model();
        run_pipeline(
            &mut m,
            &["dce", "dedup-initializers"],
            &PipelineOptions::default(),
        )
        .unwrap();
        let p = dir.path().join(format!("{k}.onnx"));
        io::save(&m, &p, &Default::default()).unwrap();
        outs.push(std::fs::read(&p).unwrap());
    }
    assert_eq!(outs[0], outs[1]);
}
