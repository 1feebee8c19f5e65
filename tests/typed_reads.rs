//! Typed tensor reads against the `onnx` Python package: every numeric initializer and `Constant` value tensor
//! of the fixtures (raw_data, float_data, int32_data for float16 / bfloat16 / bool / int8, int64_data,
//! double_data, uint64_data, external data, int4) read with `to_f64_vec` / `to_i64_vec` must equal
//! `onnx.numpy_helper.to_array` exactly (compared as f64 bit patterns: no tolerance, both sides decode the same
//! stored bits).

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use onnx_rewrite::io;
use onnx_rewrite::ir::{AttrList, DataType, Tensor};

const SCRIPT: &str = r#"
import json, sys
import numpy as np
import onnx
from onnx import numpy_helper
out = {}
for path in sys.argv[1:]:
    m = onnx.load(path)
    tensors = [(t.name, t) for t in m.graph.initializer]
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    tensors.append((n.output[0], a.t))
    got = {}
    for name, t in tensors:
        if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            continue
        a = numpy_helper.to_array(t).reshape(-1)
        if t.data_type in (1, 10, 11, 16):
            got[name] = ["f", [int(x) for x in a.astype(np.float64).view(np.uint64)]]
        else:
            b = a if t.data_type == onnx.TensorProto.UINT64 else a.astype(np.int64)
            got[name] = ["i", [int(x) for x in b]]
    out[path] = got
print(json.dumps(out))
"#;

fn ours(t: &Tensor) -> (String, Vec<i128>) {
    if t.dtype().is_float() {
        let v = t.to_f64_vec().unwrap();
        ("f".into(), v.iter().map(|x| x.to_bits() as i128).collect())
    } else if t.dtype() == DataType::UINT64 {
        let v = t.to_vec::<u64>().unwrap();
        ("i".into(), v.iter().map(|x| *x as i128).collect())
    } else {
        let v = t.to_i64_vec().unwrap();
        ("i".into(), v.iter().map(|x| *x as i128).collect())
    }
}

#[test]
fn reads_equal_onnx_numpy_helper() {
    let mut files: Vec<String> = common::fixtures()
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    for f in ["dq_int4_axis_scale.onnx", "dq_blocked_zero_point.onnx"] {
        let p = common::root().join("fixtures/hostile/loads").join(f);
        files.push(p.to_str().unwrap().to_string());
    }
    let out = Command::new(common::python())
        .arg("-c")
        .arg(SCRIPT)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: BTreeMap<String, BTreeMap<String, (String, Vec<i128>)>> =
        serde_json::from_slice(&out.stdout).unwrap();
    let mut compared = 0;
    let mut dtypes = std::collections::BTreeSet::new();
    let mut forms = std::collections::BTreeSet::new();
    for file in &files {
        let model = io::load(file.as_ref()).unwrap();
        let g = &model.graph;
        let mut tensors: Vec<(String, Tensor)> = g
            .initializers()
            .map(|(v, t)| (g.value_name(v).to_string(), t.clone()))
            .collect();
        for (_, n) in g.nodes() {
            if n.op.is("Constant") {
                if let Some(t) = n.attr("value").and_then(|a| a.t.clone()) {
                    tensors.push((g.value_name(n.output(0).unwrap()).to_string(), t));
                }
            }
        }
        let expect = &want[file];
        for (name, t) in tensors {
            let Some(w) = expect.get(&name) else {
                assert!(
                    matches!(
                        t.dtype(),
                        DataType::STRING | DataType::COMPLEX64 | DataType::COMPLEX128
                    ),
                    "{file}: {name} not read by python"
                );
                continue;
            };
            assert_eq!(&ours(&t), w, "{file}: tensor {name} ({})", t.dtype().name());
            compared += 1;
            dtypes.insert(t.dtype().name().into_owned());
            forms.insert(
                format!("{:?}", t.data)
                    .split('(')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    // the fixtures hold these types and storage forms; the check must have seen them all
    for d in [
        "f32", "f16", "bf16", "f64", "i8", "u8", "i64", "u64", "bool", "i4",
    ] {
        assert!(dtypes.contains(d), "no {d} tensor compared: {dtypes:?}");
    }
    for f in ["Raw", "Float", "Int32", "Int64", "Uint64", "External"] {
        assert!(forms.contains(f), "no {f} storage compared: {forms:?}");
    }
    assert!(compared > 20, "{compared}");
}

/// Every code of the float8 types, float8e8m0 and float4e2m1 decodes as `ml_dtypes` (what onnx's numpy_helper
/// uses) decodes it: exhaustive, exact (NaN compared as NaN, since payload bits differ).
#[test]
fn small_floats_decode_like_ml_dtypes() {
    let script = r#"
import json
import numpy as np
import ml_dtypes as m
out = {}
for code, name, n in [(17, "float8_e4m3fn", 256), (18, "float8_e4m3fnuz", 256), (19, "float8_e5m2", 256),
                      (20, "float8_e5m2fnuz", 256), (24, "float8_e8m0fnu", 256), (23, "float4_e2m1fn", 16)]:
    v = np.arange(n, dtype=np.uint8).view(getattr(m, name)).astype(np.float64)
    out[code] = [None if np.isnan(x) else int(b) for x, b in zip(v, v.view(np.uint64))]
print(json.dumps(out))
"#;
    let out = Command::new(common::python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: BTreeMap<i32, Vec<Option<u64>>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(want.len(), 6);
    for (code, want) in want {
        let dt = DataType(code);
        let raw: Vec<u8> = if code == 23 {
            (0u8..16).step_by(2).map(|c| c | ((c + 1) << 4)).collect()
        } else {
            (0..=255u8).collect()
        };
        let t = Tensor::from_raw("codes", dt, vec![want.len() as i64], raw.into());
        t.check().unwrap();
        let got: Vec<Option<u64>> = t
            .to_f64_vec()
            .unwrap()
            .iter()
            .map(|x| (!x.is_nan()).then(|| x.to_bits()))
            .collect();
        assert_eq!(got, want, "{}", dt.name());
    }
}
