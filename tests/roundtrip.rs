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

/// A file whose fields are not in field-number order (legal protobuf, not what serializers write) comes back
/// message-equal, in canonical order: the documented exception to byte identity (docs/guarantees.md).
#[test]
fn non_canonical_encoding_is_message_equal() {
    // graph (field 7) { name (2) = "g", output (12) { name (1) = "x" }, input (11) { name = "x" } }, then ir_version (1) = 8
    let vi = |n: u8| vec![n, 3, 0x0a, 1, b'x'];
    let mut graph = vec![0x12, 1, b'g'];
    graph.extend(vi(0x62)); // output first...
    graph.extend(vi(0x5a)); // ...then input: out of order
    let mut bytes = vec![0x3a, graph.len() as u8];
    bytes.extend(graph);
    bytes.extend([0x08, 0x08]);
    let dir = common::tempdir();
    let src = dir.path().join("odd.onnx");
    std::fs::write(&src, &bytes).unwrap();
    let m = io::load(&src).unwrap();
    let out = dir.path().join("canon.onnx");
    io::save(&m, &out, &SaveOptions::default()).unwrap();
    let written = std::fs::read(&out).unwrap();
    assert_ne!(written, bytes, "field order is canonicalised");
    assert_eq!(written.len(), bytes.len());
    let again = io::load(&out).unwrap();
    assert_eq!(
        onnx_rewrite::dump::render(&m),
        onnx_rewrite::dump::render(&again)
    );
    assert_eq!(again.ir_version, Some(8));
}
