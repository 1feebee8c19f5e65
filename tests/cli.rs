//! The binary: stdout snapshots of dump/inspect/diff/passes, documented exit codes, outputs never overwrite
//! inputs, and the same command twice writes the same bytes.

mod common;

use common::cli;

#[test]
fn dump_every_fixture() {
    for f in common::fixtures() {
        let rel = format!("fixtures/{}", f.file_name().unwrap().to_string_lossy());
        let (code, out, err) = cli(&["dump", &rel]);
        assert_eq!(code, 0, "{err}");
        insta::assert_snapshot!(
            format!("dump__{}", f.file_stem().unwrap().to_string_lossy()),
            out
        );
    }
}

#[test]
fn inspect_text_and_json() {
    let (code, out, err) = cli(&["inspect", "fixtures/conv_bn_relu.onnx"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("inspect__conv_bn_relu", out);
    let (code, out, _) = cli(&["inspect", "--json", "fixtures/external_data.onnx"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["external_data_bytes"], 196608);
    assert!(v["external_params"].as_u64().unwrap() > 0);
}

#[test]
fn run_with_diff_and_report() {
    let dir = common::tempdir();
    let out_model = dir.path().join("out.onnx");
    let report = dir.path().join("report.json");
    let (code, out, err) = cli(&[
        "run",
        "fixtures/if_subgraph.onnx",
        out_model.to_str().unwrap(),
        "-p",
        "dce,dedup-initializers",
        "-p",
        "topo-sort",
        "--diff",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("run__if_subgraph", out);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r.as_array().unwrap().len(), 3);
    assert_eq!(r[0]["pass"], "dce");
}

#[test]
fn diff_of_two_models() {
    let dir = common::tempdir();
    let out_model = dir.path().join("dedup.onnx");
    // the real-model-free path: a fixture through dce (changes nothing) and a changed one
    let (code, _, err) = cli(&[
        "run",
        "fixtures/mlp_matmul.onnx",
        out_model.to_str().unwrap(),
        "-p",
        "dce",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(&[
        "diff",
        "fixtures/mlp_matmul.onnx",
        out_model.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("nodes: +0 -0 ~0  values: +0 -0 ~0"),
        "{out}"
    );
    let (code, out, _) = cli(&[
        "diff",
        "fixtures/mlp_matmul.onnx",
        "fixtures/conv_bn_relu.onnx",
    ]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("diff__mlp_vs_conv", out);
}

#[test]
fn passes_list() {
    let (code, out, _) = cli(&["passes"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("passes", out);
}

#[test]
fn exit_codes() {
    // 2: usage
    assert_eq!(cli(&["frobnicate"]).0, 2);
    assert_eq!(
        cli(&[
            "run",
            "fixtures/mlp_matmul.onnx",
            "target/x.onnx",
            "-p",
            "no-such-pass"
        ])
        .0,
        2
    );
    // 3: bad model file, missing file
    let (code, _, err) = cli(&["inspect", "fixtures/hostile/raw_data_len.onnx"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("raw_data_len.onnx") && err.contains("bad_raw_len"),
        "{err}"
    );
    assert_eq!(cli(&["inspect", "fixtures/does-not-exist.onnx"]).0, 3);
    // 2: refusing to overwrite the input
    let dir = common::tempdir();
    let p = dir.path().join("m.onnx");
    std::fs::copy(common::root().join("fixtures/mlp_matmul.onnx"), &p).unwrap();
    let before = std::fs::read(&p).unwrap();
    let (code, _, err) = cli(&["convert", p.to_str().unwrap(), p.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(before, std::fs::read(&p).unwrap());
}

#[test]
fn convert_is_deterministic_and_external_round_trips() {
    let dir = common::tempdir();
    let a = dir.path().join("a/m.onnx");
    let b = dir.path().join("b/m.onnx");
    for p in [&a, &b] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let (code, _, err) = cli(&[
            "convert",
            "fixtures/conv_bn_relu.onnx",
            p.to_str().unwrap(),
            "--external-threshold",
            "64",
        ]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(
        std::fs::read(a.with_extension("data")).unwrap(),
        std::fs::read(b.with_extension("data")).unwrap()
    );
    // back inline: identical to the original
    let back = dir.path().join("back.onnx");
    let (code, _, err) = cli(&[
        "convert",
        a.to_str().unwrap(),
        back.to_str().unwrap(),
        "--inline",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, d, _) = cli(&["diff", "fixtures/conv_bn_relu.onnx", back.to_str().unwrap()]);
    assert!(d.starts_with("nodes: +0 -0 ~0  values: +0 -0 ~0"), "{d}");
}

#[test]
fn validate_exit_codes_and_table() {
    use onnx_rewrite::ir::{Patch, Tensor};
    // a model against itself: zero drift, exit 0, stable table
    let (code, out, err) = cli(&[
        "validate",
        "fixtures/digits/digits_cnn.onnx",
        "fixtures/digits/digits_cnn.onnx",
        "--samples",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("validate__digits_self", out);
    // a broken rewrite (every weight of the first initializer negated): exit 4
    let mut m =
        onnx_rewrite::io::load(&common::root().join("fixtures/digits/digits_cnn.onnx")).unwrap();
    let (v, t) = m
        .graph
        .initializers()
        .find(|(_, t)| t.dims.len() == 4)
        .map(|(v, t)| (v, t.clone()))
        .unwrap();
    let flipped: Vec<f32> = t.to_f32_vec().unwrap().iter().map(|x| -x).collect();
    let mut p = Patch::new("break");
    p.replace_initializer(v, Tensor::from_f32(t.name(), t.dims.clone(), &flipped));
    m.graph.apply(p).unwrap();
    let dir = common::tempdir();
    let broken = dir.path().join("broken.onnx");
    onnx_rewrite::io::save(&m, &broken, &Default::default()).unwrap();
    let (code, out, _) = cli(&[
        "validate",
        "fixtures/digits/digits_cnn.onnx",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("FAIL"), "{out}");
    // run --validate: the clean-up passes meet even a zero max-abs tolerance, and the output is written
    let out_model = dir.path().join("clean.onnx");
    let (code, _, err) = cli(&[
        "run",
        "fixtures/digits/digits_cnn.onnx",
        out_model.to_str().unwrap(),
        "-p",
        "dce",
        "--validate",
        "--max-abs",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out_model.exists());
}

#[test]
fn run_validate_writes_nothing_when_validation_fails() {
    let dir = common::tempdir();
    let (out_model, report) = (dir.path().join("out.onnx"), dir.path().join("r.json"));
    // rich_metadata holds a custom-domain op tract cannot run: validation cannot pass
    let (code, _, err) = cli(&[
        "run",
        "fixtures/rich_metadata.onnx",
        out_model.to_str().unwrap(),
        "-p",
        "dce",
        "--validate",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(!out_model.exists() && !report.exists(), "{err}");
    // drift past a tolerance (no limit can be met: max |error| <= -1): nothing written either
    let (code, _, err) = cli(&[
        "run",
        "fixtures/conv_bn_relu.onnx",
        out_model.to_str().unwrap(),
        "-p",
        "dce",
        "--validate",
        "--max-abs=-1",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not written"), "{err}");
    assert!(!out_model.exists() && !report.exists(), "{err}");
    // passing validation writes both
    let (code, _, err) = cli(&[
        "run",
        "fixtures/conv_bn_relu.onnx",
        out_model.to_str().unwrap(),
        "-p",
        "dce",
        "--validate",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out_model.exists() && report.exists());
}

#[test]
fn validate_centred_tolerance_flags() {
    let m = "fixtures/conv_bn_relu.onnx";
    let json = |extra: &[&str]| {
        let mut args = vec!["validate", m, m, "--json", "--no-attribution"];
        args.extend_from_slice(extra);
        let (code, out, err) = cli(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    // defaults: centred measures plus the raw SQNR, no raw cosine
    let t = &json(&[])["tolerances"];
    assert_eq!(t["min_pearson"], 0.99);
    assert_eq!(t["min_sqnr_centered_db"], 20.0);
    assert_eq!(t["min_sqnr_db"], 20.0);
    assert!(t["min_cosine"].is_null());
    let v = json(&["--min-pearson", "0.5", "--min-sqnr-centered", "30"]);
    assert_eq!(v["tolerances"]["min_pearson"], 0.5);
    assert_eq!(v["tolerances"]["min_sqnr_centered_db"], 30.0);
    let checks: Vec<&str> = v["outputs"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metric"].as_str().unwrap())
        .collect();
    assert!(
        checks.contains(&"pearson") && checks.contains(&"sqnr_centered_db"),
        "{checks:?}"
    );
    let t = &json(&["--no-default-tolerances"])["tolerances"];
    for k in [
        "min_pearson",
        "min_sqnr_centered_db",
        "min_sqnr_db",
        "min_cosine",
    ] {
        assert!(t[k].is_null(), "{k}: {t}");
    }
}

/// `onnx-rewrite dump big.onnx | head -c 100`: the reader goes away while the dump is still writing; the tool
/// ends quietly as `cat` does (killed by SIGPIPE), not with a panic message and exit 101/1.
#[cfg(unix)]
#[test]
fn closed_stdout_pipe_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let (_, model) = common::real_models()
        .into_iter()
        .find(|(m, _)| m.name == "picodet_layout_cdla")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_onnx-rewrite"))
        .arg("dump")
        .arg(&model)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // the read end is closed here; the dump (150 KB) is more than a pipe buffer (64 KB), so a write must fail
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
    assert!(head.starts_with(b"model ir_version="));
}

/// `quantize` prints a summary a person reads (one line per kind of remark, with a count, and the file ratio);
/// `-v` prints every node's remark, and `--report` has them all.
#[test]
fn quantize_prints_a_summary_and_every_remark_with_v() {
    let dir = common::tempdir();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("q.json");
    let (o, r) = (out.to_str().unwrap(), rep.to_str().unwrap());
    let model = "fixtures/digits_resnet/digits_resnet.onnx";
    let (code, stdout, err) = cli(&["quantize", model, o, "--report", r]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[1].starts_with(
            "  applied    4: weight '…' (initializer, N f32) -> int8 per-channel axis N"
        ),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with(&format!("wrote {o}: "))
            && lines[2].contains("x the input's")
            && lines[2].ends_with("(4 per-node remarks: -v, or --report FILE.json)"),
        "{stdout}"
    );
    // the runtime setting a weight-only output needs in ONNX Runtime, and what it costs (issue 25)
    assert!(
        lines[3].starts_with(
            "runtime: ONNX Runtime dequantizes weight-only Q/DQ weights again on every run"
        ) && lines[3].contains("`session.disable_quant_qdq` = \"1\"")
            && lines[3].contains("holds the weights as float in memory"),
        "{stdout}"
    );
    let (_, inspected, _) = cli(&["inspect", o]);
    assert!(inspected.contains(lines[3]), "{inspected}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(json[0]["remarks"].as_array().unwrap().len(), 4);
    let (code, stdout, err) = cli(&["quantize", model, o, "-v"]);
    assert_eq!(code, 0, "{err}");
    for node in ["conv1", "dw", "fc1", "fc2"] {
        assert!(
            stdout.contains(&format!("  applied {node}: weight '{node}.weight'")),
            "{stdout}"
        );
    }
}
