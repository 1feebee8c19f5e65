//! Validate time and peak RSS on a generated ~100 MB model (six 2048x2048 f32 MatMuls), beside the same
//! comparison done with ONNX Runtime in Python (tools/ort_compare_bench.py), in one run:
//!
//!     cargo bench --bench validate
//!
//! Figures are printed, never asserted. Peak RSS of this process is reset (`/proc/self/clear_refs`) after the
//! model is generated and saved, so it covers load + compare only.

use std::process::Command;
use std::time::Instant;

use onnx_rewrite::io;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{DataType, Tensor};
use onnx_rewrite::validate::{self, ValidateOptions};

const WIDTH: usize = 2048;
const LAYERS: usize = 6;

fn generate(path: &std::path::Path) {
    let mut b = GraphBuilder::new("big_mlp");
    let mut x = b.input("x", DataType::FLOAT, &["1", &WIDTH.to_string()]);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for layer in 0..LAYERS {
        let vals: Vec<f32> = (0..WIDTH * WIDTH)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * (2.0 / (WIDTH as f32).sqrt())
            })
            .collect();
        let w = b.initializer(Tensor::from_f32(
            format!("w{layer}"),
            vec![WIDTH as i64, WIDTH as i64],
            &vals,
        ));
        x = b.node("MatMul", &[x, w], vec![], 1)[0];
        x = b.node("Relu", &[x], vec![], 1)[0];
    }
    b.output(x, DataType::FLOAT, &["1", &WIDTH.to_string()]);
    let m = model(b.build(), 17);
    io::save(&m, path, &Default::default()).unwrap();
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir_in(root.join("target")).unwrap();
    let path = dir.path().join("big_mlp.onnx");
    generate(&path);
    let bytes = std::fs::metadata(&path).unwrap().len();
    for optimize in [false, true] {
        // reset the high-water mark so each figure covers load + compare only
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let rss0 = peak_rss_mb();
        let t0 = Instant::now();
        let a = io::load(&path).unwrap();
        let b = io::load(&path).unwrap();
        let opts = ValidateOptions {
            optimize,
            ..Default::default()
        };
        let r = validate::compare(&a, &b, &opts).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        assert!(r.passed());
        println!(
            "onnx-rewrite validate (tract, {}): {:.2} s, peak RSS {:.0} MB (before: {:.0} MB), model {:.1} MB, {} tensors compared",
            if optimize { "optimised kernels" } else { "reference kernels" },
            secs,
            peak_rss_mb(),
            rss0,
            bytes as f64 / 1e6,
            r.outputs.len() + r.tensors.len()
        );
    }

    let venv = Command::new("bash")
        .arg(root.join("tools/venv.sh"))
        .output()
        .expect("bash runs");
    let py = String::from_utf8_lossy(&venv.stdout)
        .lines()
        .last()
        .unwrap_or("python3")
        .trim()
        .to_string();
    let out = Command::new(&py)
        .arg(root.join("tools/ort_compare_bench.py"))
        .arg(&path)
        .arg(&path)
        .output()
        .expect("python runs");
    if out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        println!(
            "ONNX Runtime in Python (ORT_DISABLE_ALL): {:.2} s, peak RSS {:.0} MB",
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
        );
    } else {
        println!(
            "ONNX Runtime side failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
