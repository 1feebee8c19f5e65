//! Compact saves: after tensors are removed or replaced, the saved data file holds exactly the live tensors
//! (packed in their input order, each at a multiple of 64 bytes); with nothing changed it is the input's file
//! byte for byte; the input's data file is never written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use onnx_rewrite::io::{self, ExternalMode, SaveOptions};
use onnx_rewrite::ir::{DataType, Model, OpKey, Patch, Tensor};

const ALIGN: u64 = onnx_rewrite::io::save::ALIGN;

fn keep() -> SaveOptions {
    SaveOptions::default()
}

fn fixture() -> PathBuf {
    common::root().join("fixtures/external_data.onnx")
}

/// Copy the external-data fixture (model + data file) into `dir`.
fn copy_fixture(dir: &Path) -> PathBuf {
    for f in ["external_data.onnx", "external_data.bin"] {
        std::fs::copy(common::root().join("fixtures").join(f), dir.join(f)).unwrap();
    }
    dir.join("external_data.onnx")
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// Remove MatMul `node` and its weight: its output is replaced by its activation input (same shape here).
fn remove_matmul(m: &mut Model, node: &str, weight: &str) {
    let g = &m.graph;
    let (id, n) = g.nodes().find(|(_, n)| n.name() == node).unwrap();
    let (x, y) = (n.input(0).unwrap(), n.output(0).unwrap());
    let w = g.value_by_name(weight).unwrap();
    let mut p = Patch::new("test-remove");
    p.replace_all_uses(y, x.into());
    p.erase_node(id);
    p.remove_initializer(w);
    m.graph.apply(p).unwrap();
    m.graph.verify().unwrap();
}

/// Replace a float weight by an int8 one (4x smaller) and a DequantizeLinear in front of its consumers.
fn quantize_weight(m: &mut Model, weight: &str) {
    let g = &m.graph;
    let w = g.value_by_name(weight).unwrap();
    let t = g.constant(w).unwrap().into_owned();
    let vals = t.to_f32_vec().unwrap();
    let scale = vals.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
    let q: Vec<u8> = vals
        .iter()
        .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8)
        .collect();
    let mut p = Patch::new("test-quant");
    let qv = p.add_initializer(
        g,
        weight,
        Tensor::from_raw("q", DataType::INT8, t.dims.clone(), Bytes::from(q)),
    );
    let sv = p.add_initializer(g, weight, Tensor::from_f32("s", vec![], &[scale]));
    let out = p.add_node(
        g,
        weight,
        OpKey::onnx("DequantizeLinear"),
        vec![Some(qv), Some(sv)],
        vec![],
        1,
    );
    p.replace_all_uses(w, out[0]);
    p.remove_initializer(w);
    m.graph.apply(p).unwrap();
    m.graph.verify().unwrap();
}

/// Run `a` and `b` in ONNX Runtime (optimisations off) on the same random input; outputs must be identical.
fn ort_same_outputs(a: &Path, b: &Path) {
    let script = r#"
import sys, numpy as np, onnxruntime as ort
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
outs = []
for path in sys.argv[1:3]:
    s = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 2 for d in i.shape]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    outs.append(s.run(None, {i.name: x}))
for p, q in zip(*outs):
    assert p.shape == q.shape and np.array_equal(p, q), "outputs differ"
assert np.abs(outs[0][0]).max() > 0, "degenerate output"
print("same")
"#;
    let out = Command::new(common::python())
        .arg("-c")
        .arg(script)
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// onnx.checker full_check + ONNX Runtime load (tools/check_model.py).
fn checker(files: &[&Path]) {
    let out = Command::new(common::python())
        .arg(common::root().join("tools/check_model.py"))
        .args(files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        files.len(),
        "{text}"
    );
}

fn inline_copy(m: &Model, path: &Path) {
    io::save(
        m,
        path,
        &SaveOptions {
            external: ExternalMode::Inline,
        },
    )
    .unwrap();
}

#[test]
fn unchanged_model_copies_its_data_file_byte_for_byte() {
    let src = fixture();
    let bin = common::root().join("fixtures/external_data.bin");
    let before = common::sha256(&bin);
    let m = io::load(&src).unwrap();
    let dir = common::tempdir();
    let out = dir.path().join("external_data.onnx");
    let r = io::save(&m, &out, &keep()).unwrap();
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(dir.path().join("external_data.bin")).unwrap()
    );
    assert_eq!(r.data_files, [("external_data.bin".to_string(), 196608)]);
    assert!(r.relocated.is_empty());
    // beside the input: the data file is used in place, nothing is written but the model
    let here = common::tempdir();
    let input = copy_fixture(here.path());
    let in_bin = here.path().join("external_data.bin");
    let mtime = std::fs::metadata(&in_bin).unwrap().modified().unwrap();
    let m = io::load(&input).unwrap();
    let out = here.path().join("copy.onnx");
    let r = io::save(&m, &out, &keep()).unwrap();
    assert!(r.data_files.is_empty(), "{:?}", r.data_files);
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(
        mtime,
        std::fs::metadata(&in_bin).unwrap().modified().unwrap()
    );
    assert_eq!(before, common::sha256(&bin));
}

#[test]
fn removing_an_external_tensor_shrinks_the_data_file_by_its_bytes() {
    let src = fixture();
    let bin = common::root().join("fixtures/external_data.bin");
    let before = common::sha256(&bin);
    let orig = std::fs::read(&bin).unwrap();
    let mut m = io::load(&src).unwrap();
    remove_matmul(&mut m, "mm2", "ext_w2");
    let dir = common::tempdir();
    let out = dir.path().join("external_data.onnx");
    let r = io::save(&m, &out, &keep()).unwrap();
    let data = dir.path().join("external_data.bin");
    // ext_w2 is 128x128 f32 = 65536 bytes, a multiple of 64: no padding anywhere
    assert_eq!(size(&data), 196608 - 65536);
    assert_eq!(r.data_files, [("external_data.bin".to_string(), 131072)]);
    // exactly w1 then w3, the bytes they had
    let packed = std::fs::read(&data).unwrap();
    assert_eq!(&packed[..65536], &orig[..65536]);
    assert_eq!(&packed[65536..], &orig[131072..]);
    let back = io::load(&out).unwrap();
    let offsets: Vec<(String, u64)> = back
        .graph
        .initializers()
        .filter_map(|(_, t)| match &t.data {
            onnx_rewrite::ir::TensorData::External(e) => Some((t.name().to_string(), e.offset)),
            _ => None,
        })
        .collect();
    assert_eq!(
        offsets,
        [("ext_w1".to_string(), 0), ("ext_w3".to_string(), 65536)]
    );
    // the same rewritten model saved inline computes the same outputs in ONNX Runtime
    let inline = dir.path().join("inline.onnx");
    inline_copy(&m, &inline);
    checker(&[&out]);
    ort_same_outputs(&out, &inline);
    assert_eq!(before, common::sha256(&bin), "input data file changed");
}

#[test]
fn saving_beside_the_input_never_rewrites_its_data_file() {
    let dir = common::tempdir();
    let input = copy_fixture(dir.path());
    let in_bin = dir.path().join("external_data.bin");
    let before = common::sha256(&in_bin);
    let mut m = io::load(&input).unwrap();
    remove_matmul(&mut m, "mm2", "ext_w2");
    let out = dir.path().join("small.onnx");
    let r = io::save(&m, &out, &keep()).unwrap();
    assert_eq!(
        r.relocated,
        [("external_data.bin".to_string(), "small.data".to_string())]
    );
    assert_eq!(size(&dir.path().join("small.data")), 131072);
    assert_eq!(before, common::sha256(&in_bin));
    assert_eq!(size(&in_bin), 196608);
    // the original still loads and computes what it did: compare it with a fresh copy of the fixture
    let fresh = common::tempdir();
    let pristine = copy_fixture(fresh.path());
    ort_same_outputs(&input, &pristine);
    // the output is a valid model on its own
    let inline = dir.path().join("inline.onnx");
    inline_copy(&m, &inline);
    checker(&[&out]);
    ort_same_outputs(&out, &inline);
    // the CLI says where the data went
    let out2 = dir.path().join("small2.onnx");
    let (code, _, err) = common::cli(&[
        "run",
        input.to_str().unwrap(),
        out2.to_str().unwrap(),
        "-p",
        "dce",
    ]);
    assert_eq!(code, 0, "{err}");
    // dce changes nothing: the input's file is reused as it is
    assert!(!dir.path().join("small2.data").exists());
    assert_eq!(before, common::sha256(&in_bin));
}

#[test]
fn replacing_a_tensor_with_a_smaller_one_shrinks_the_data_file() {
    let src = fixture();
    let bin = common::root().join("fixtures/external_data.bin");
    let before = common::sha256(&bin);
    let mut m = io::load(&src).unwrap();
    quantize_weight(&mut m, "ext_w1");
    let dir = common::tempdir();
    // Keep: the new int8 weight is a new tensor, inline; the file loses all of ext_w1
    let out = dir.path().join("keep.onnx");
    io::save(&m, &out, &keep()).unwrap();
    assert_eq!(size(&dir.path().join("external_data.bin")), 196608 - 65536);
    // Threshold: the int8 weight (16384 bytes, a multiple of 64) goes out with the others
    let sub = dir.path().join("t");
    std::fs::create_dir_all(&sub).unwrap();
    let out_t = sub.join("thr.onnx");
    io::save(
        &m,
        &out_t,
        &SaveOptions {
            external: ExternalMode::Threshold {
                min_bytes: 1024,
                location: None,
            },
        },
    )
    .unwrap();
    assert_eq!(size(&sub.join("thr.data")), 196608 - 65536 + 16384);
    let inline = dir.path().join("inline.onnx");
    inline_copy(&m, &inline);
    checker(&[&out, &out_t]);
    ort_same_outputs(&out, &inline);
    ort_same_outputs(&out_t, &inline);
    assert_eq!(before, common::sha256(&bin));
}

/// A bigger model written by onnx itself (tensors back to back, unaligned), a 4-byte tensor first.
fn generate_big(dir: &Path) -> PathBuf {
    let script = r#"
import sys, os, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
D, L = 512, 4
r = np.random.default_rng(42)
inits = [numpy_helper.from_array(np.array([0.25], dtype=np.float32), "offset")]
nodes = [helper.make_node("Add", ["x", "offset"], ["h0"], name="add0")]
for k in range(1, L + 1):
    inits.append(numpy_helper.from_array((r.normal(0, 1, (D, D)) / np.sqrt(D)).astype(np.float32), f"w{k}"))
    inits.append(numpy_helper.from_array(r.normal(0, 0.1, D).astype(np.float32), f"b{k}"))
    nodes.append(helper.make_node("MatMul", [f"h{k-1}", f"w{k}"], [f"m{k}"], name=f"mm{k}"))
    nodes.append(helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"], name=f"add{k}"))
    nodes.append(helper.make_node("Tanh", [f"a{k}"], [f"h{k}"], name=f"act{k}"))
g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", D])],
                      [helper.make_tensor_value_info(f"h{L}", TensorProto.FLOAT, ["N", D])], inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
out = sys.argv[1]
onnx.save(m, out, save_as_external_data=True, all_tensors_to_one_file=True, location="big.bin",
          size_threshold=0)
"#;
    let path = dir.join("big.onnx");
    let out = Command::new(common::python())
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn bigger_generated_model_packs_exactly_the_live_tensors() {
    let gen = common::tempdir();
    let src = generate_big(gen.path());
    let bin = gen.path().join("big.bin");
    let before = common::sha256(&bin);
    let orig_size = size(&bin);
    // 4-byte offset + 4 x (1 MiB weight + 2 KiB bias), back to back
    assert_eq!(orig_size, 4 + 4 * (512 * 512 * 4 + 512 * 4));
    let m0 = io::load(&src).unwrap();
    // unchanged: the unaligned layout is copied as it is
    let dir = common::tempdir();
    let same = dir.path().join("same.onnx");
    io::save(&m0, &same, &keep()).unwrap();
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(dir.path().join("big.bin")).unwrap()
    );
    // remove w2 (1 MiB)
    let mut m = m0.clone();
    remove_matmul(&mut m, "mm2", "w2");
    let sub = dir.path().join("removed");
    std::fs::create_dir_all(&sub).unwrap();
    let out = sub.join("removed.onnx");
    io::save(&m, &out, &keep()).unwrap();
    // Packed: the 4-byte offset (padded to 64: 60 bytes of alignment), then the 7 other tensors, all
    // multiples of 64. So smaller by w2's 1 MiB, plus the 60 padding bytes the packing adds.
    let w2 = 512 * 512 * 4;
    let pad = ALIGN - 4;
    assert_eq!(size(&sub.join("big.bin")), orig_size - w2 + pad);
    // and again removing w3 from that output: smaller by exactly w3 (no new padding)
    let m2 = io::load(&out).unwrap();
    let mut m3 = m2.clone();
    remove_matmul(&mut m3, "mm3", "w3");
    let sub3 = dir.path().join("removed3");
    std::fs::create_dir_all(&sub3).unwrap();
    let out3 = sub3.join("removed3.onnx");
    io::save(&m3, &out3, &keep()).unwrap();
    assert_eq!(size(&sub3.join("big.bin")), orig_size - 2 * w2 + pad);
    let inline = dir.path().join("inline.onnx");
    inline_copy(&m3, &inline);
    checker(&[&out, &out3]);
    ort_same_outputs(&out3, &inline);
    let inline1 = dir.path().join("inline1.onnx");
    inline_copy(&m, &inline1);
    ort_same_outputs(&out, &inline1);
    assert_eq!(before, common::sha256(&bin));
}

#[test]
fn tensors_sharing_a_range_are_written_once() {
    // dedup-initializers leaves one of two identical tensors; here two tensors point at one range by hand
    let mut m = io::load(&fixture()).unwrap();
    let g = &m.graph;
    let w1 = g.value_by_name("ext_w1").unwrap();
    let w3 = g.value_by_name("ext_w3").unwrap();
    let t1 = g.constant(w1).unwrap().into_owned();
    let mut p = Patch::new("test-share");
    let mut t = t1.clone();
    t.name = Some("ext_w3".into());
    p.replace_initializer(w3, t);
    m.graph.apply(p).unwrap();
    let dir = common::tempdir();
    let out = dir.path().join("shared.onnx");
    io::save(&m, &out, &keep()).unwrap();
    // w1 and w2 live; w3 reads w1's range: two tensors of bytes
    assert_eq!(size(&dir.path().join("external_data.bin")), 2 * 65536);
    let back = io::load(&out).unwrap();
    let a = back
        .graph
        .constant(back.graph.value_by_name("ext_w1").unwrap())
        .unwrap()
        .into_owned();
    let b = back
        .graph
        .constant(back.graph.value_by_name("ext_w3").unwrap())
        .unwrap()
        .into_owned();
    assert!(a.same_content(&t1) && b.same_content(&t1));
}

#[test]
fn data_files_in_sub_folders_are_packed_there() {
    let m = io::load(&fixture()).unwrap();
    let dir = common::tempdir();
    let a = dir.path().join("a/m.onnx");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    io::save(
        &m,
        &a,
        &SaveOptions {
            external: ExternalMode::Threshold {
                min_bytes: 1024,
                location: Some("weights/w.bin".into()),
            },
        },
    )
    .unwrap();
    assert_eq!(size(&dir.path().join("a/weights/w.bin")), 196608);
    let mut m = io::load(&a).unwrap();
    remove_matmul(&mut m, "mm2", "ext_w2");
    let b = dir.path().join("b/m.onnx");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    io::save(&m, &b, &keep()).unwrap();
    assert_eq!(size(&dir.path().join("b/weights/w.bin")), 131072);
    assert_eq!(size(&dir.path().join("a/weights/w.bin")), 196608);
    let inline = dir.path().join("inline.onnx");
    inline_copy(&m, &inline);
    ort_same_outputs(&b, &inline);
}

#[test]
fn cli_run_dce_shrinks_the_data_file_and_says_where_it_went() {
    // a model whose ext_w2 is still stored but no longer read: dce removes it
    let mut m = io::load(&fixture()).unwrap();
    let g = &m.graph;
    let (id, n) = g.nodes().find(|(_, n)| n.name() == "mm2").unwrap();
    let (x, y) = (n.input(0).unwrap(), n.output(0).unwrap());
    let mut p = Patch::new("test-unlink");
    p.replace_all_uses(y, x.into());
    p.erase_node(id);
    m.graph.apply(p).unwrap();
    let dir = common::tempdir();
    let input = dir.path().join("m.onnx");
    io::save(&m, &input, &keep()).unwrap();
    // nothing was removed from storage yet: the three weights are all still there
    let in_bin = dir.path().join("external_data.bin");
    assert_eq!(size(&in_bin), 196608);
    let before = common::sha256(&in_bin);
    let out = dir.path().join("small.onnx");
    let (code, stdout, err) = common::cli(&[
        "run",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "-p",
        "dce",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("ext_w2"), "{stdout}");
    assert!(
        err.contains("external data 'external_data.bin' written as 'small.data'"),
        "{err}"
    );
    assert_eq!(size(&dir.path().join("small.data")), 131072);
    assert_eq!(before, common::sha256(&in_bin));
    checker(&[&out]);
    let inline = dir.path().join("inline.onnx");
    inline_copy(&io::load(&out).unwrap(), &inline);
    ort_same_outputs(&out, &inline);
    ort_same_outputs(&input, &inline);
}
