//! Load -> save with no pass is byte-identical, on every fixture and every real exported model; saving twice
//! gives the same bytes; the input is never touched.

mod common;

use std::path::Path;

use onnx_rewrite::io::{self, ExternalMode, SaveOptions};

fn roundtrip(src: &Path) {
    let before = common::sha256(src);
    let model = io::load(src).unwrap_or_else(|e| panic!("load {}: {e}", src.display()));
    model
        .graph
        .verify()
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let dir = common::tempdir();
    let out = dir.path().join(src.file_name().unwrap());
    io::save(&model, &out, &SaveOptions::default())
        .unwrap_or_else(|e| panic!("save {}: {e}", src.display()));
    assert_eq!(
        std::fs::read(src).unwrap(),
        std::fs::read(&out).unwrap(),
        "{} is not byte-identical",
        src.display()
    );
    let out2 = dir.path().join("again.onnx");
    let again = io::load(&out).unwrap();
    io::save(&again, &out2, &SaveOptions::default()).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    assert_eq!(before, common::sha256(src), "input changed");
}

#[test]
fn fixtures_roundtrip_byte_identical() {
    let fixtures = common::fixtures();
    assert!(fixtures.len() >= 8, "fixtures missing: {fixtures:?}");
    for f in fixtures {
        roundtrip(&f);
    }
}

#[test]
fn real_models_roundtrip_byte_identical() {
    let models = common::real_models();
    assert!(models.len() >= 5);
    for (_, path) in models {
        roundtrip(&path);
    }
}

#[test]
fn external_data_inline_and_back() {
    let src = common::root().join("fixtures/external_data.onnx");
    let model = io::load(&src).unwrap();
    let dir = common::tempdir();
    let inline = dir.path().join("inline.onnx");
    io::save(
        &model,
        &inline,
        &SaveOptions {
            external: ExternalMode::Inline,
        },
    )
    .unwrap();
    let m2 = io::load(&inline).unwrap();
    assert!(m2.graph.initializers().all(|(_, t)| !t.is_external()));
    let ext = dir.path().join("ext.onnx");
    io::save(
        &m2,
        &ext,
        &SaveOptions {
            external: ExternalMode::Threshold {
                min_bytes: 1024,
                location: None,
            },
        },
    )
    .unwrap();
    assert!(dir.path().join("ext.data").exists());
    let m3 = io::load(&ext).unwrap();
    assert_eq!(
        m3.graph
            .initializers()
            .filter(|(_, t)| t.is_external())
            .count(),
        3
    );
    for ((_, a), (_, b)) in model.graph.initializers().zip(m3.graph.initializers()) {
        assert!(a.same_content(b), "{} differs", a.name());
    }
}

#[test]
fn refuses_to_overwrite_input() {
    let dir = common::tempdir();
    let p = dir.path().join("m.onnx");
    std::fs::copy(common::root().join("fixtures/mlp_matmul.onnx"), &p).unwrap();
    let model = io::load(&p).unwrap();
    let err = io::save(&model, &p, &SaveOptions::default()).unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
}
