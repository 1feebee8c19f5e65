//! Static QDQ benchmark: a generated CNN (224x224 input, 10 conv layers of 64 channels with BatchNorm folded,
//! residual Adds, a Gemm head) calibrated on 8 seeded samples, quantised by us and by ONNX Runtime's
//! `quantize_static` (QDQ, per-channel int8 weights, uint8 activations, MinMax): time, CPU time and peak RSS of
//! each, file sizes, ORT latency of both outputs and the output cosine of each against the float model.
//!
//!     cargo bench --bench quantize_static
//!
//! Files go to `/work/bench-tmp/quantize_static` if that folder's parent exists, else `target/bench/quantize_static`,
//! and are deleted at the end (kept when `QUANTIZE_STATIC_KEEP` is set, to profile the child by hand). Each
//! quantizer runs as a subprocess under `/usr/bin/time -f '%e %U %S %M'` (wall seconds, user and system CPU
//! seconds, peak RSS in KB): ours is this bench binary re-run as `--child IN OUT CALIB` (library only: load, the
//! `quantize{mode=static}` pass with the tract calibrator, save); ONNX Runtime's is the pinned venv's python
//! (its time includes interpreter start and imports, measured apart and printed). Both use the machine's cores
//! (ours: tract's kernels on rayon's pool, RAYON_NUM_THREADS; ONNX Runtime: its intra-op threads), so CPU
//! seconds are printed beside wall time, which also depends on what else the machine runs. Figures are printed,
//! never asserted.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use onnx_rewrite::io;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{Attribute, DataType, Tensor, ValueId};
use onnx_rewrite::passes::quantize::{Quantize, QuantizeOptions};
use onnx_rewrite::passes::{Pass, PassContext};
use onnx_rewrite::validate::{TractCalibrator, ValidateOptions};

const SAMPLES: usize = 8;
const SIDE: i64 = 224;

fn vals(n: usize, salt: u64, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ salt.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

fn cnn() -> onnx_rewrite::ir::Model {
    let mut b = GraphBuilder::new("bench_cnn");
    let x = b.input("input", DataType::FLOAT, &["1", "3", "224", "224"]);
    let mut salt = 1;
    let mut conv =
        |b: &mut GraphBuilder, x: ValueId, cin: i64, cout: i64, k: i64, stride: i64, relu: bool| {
            salt += 2;
            let fan = (cin * k * k) as f32;
            let w = b.initializer(Tensor::from_f32(
                format!("w{salt}"),
                vec![cout, cin, k, k],
                &vals((cout * cin * k * k) as usize, salt, (6.0 / fan).sqrt()),
            ));
            let bias = b.initializer(Tensor::from_f32(
                format!("b{salt}"),
                vec![cout],
                &vals(cout as usize, salt + 1, 0.1),
            ));
            let y = b.node(
                "Conv",
                &[x, w, bias],
                vec![
                    Attribute::ints("pads", vec![k / 2; 4]),
                    Attribute::ints("strides", vec![stride, stride]),
                ],
                1,
            )[0];
            if relu {
                b.node("Relu", &[y], vec![], 1)[0]
            } else {
                y
            }
        };
    let mut h = conv(&mut b, x, 3, 64, 3, 2, true);
    for _ in 0..4 {
        let a = conv(&mut b, h, 64, 64, 3, 1, true);
        let c = conv(&mut b, a, 64, 64, 3, 1, false);
        let s = b.node("Add", &[c, h], vec![], 1)[0];
        h = b.node("Relu", &[s], vec![], 1)[0];
    }
    let h = conv(&mut b, h, 64, 64, 3, 2, true);
    let g = b.node("GlobalAveragePool", &[h], vec![], 1)[0];
    let f = b.node("Flatten", &[g], vec![], 1)[0];
    let w = b.initializer(Tensor::from_f32(
        "fc_w",
        vec![1000, 64],
        &vals(64000, 99, 0.3),
    ));
    let c = b.initializer(Tensor::from_f32("fc_b", vec![1000], &vals(1000, 98, 0.1)));
    let y = b.node("Gemm", &[f, w, c], vec![Attribute::int("transB", 1)], 1)[0];
    b.output(y, DataType::FLOAT, &["1", "1000"]);
    model(b.build(), 13)
}

fn child(input: &Path, output: &Path, calib: &Path) -> Result<()> {
    let mut m = io::load(input)?;
    let opts = QuantizeOptions {
        mode: "static".into(),
        ..Default::default()
    };
    let pass = Quantize::new(opts)?;
    let mut cx = PassContext {
        calibrator: Some(Box::new(TractCalibrator::new(ValidateOptions {
            inputs: vec![calib.to_path_buf()],
            ..Default::default()
        }))),
        ..Default::default()
    };
    pass.run(&mut m, &mut cx)?;
    io::save(&m, output, &Default::default())?;
    Ok(())
}

const PY_ORT: &str = r#"
import sys, numpy as np
from pathlib import Path
from onnxruntime.quantization import quantize_static, QuantFormat, QuantType, CalibrationMethod, CalibrationDataReader
src, dst, calib = sys.argv[1:4]
dirs = sorted(Path(calib).iterdir())
class R(CalibrationDataReader):
    def __init__(self): self.it = iter(dirs)
    def get_next(self):
        d = next(self.it, None)
        return None if d is None else {f.stem: np.load(f) for f in d.glob('*.npy')}
quantize_static(src, dst, R(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
"#;

const PY_IMPORT: &str = "import onnxruntime.quantization, numpy";

const PY_EVAL: &str = r#"
import sys, time, numpy as np, onnxruntime as ort
ref, calib = sys.argv[1], sys.argv[2]
x = {"input": np.random.default_rng(7).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)}
def sess(p):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.log_severity_level = 3
    return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
r = sess(ref).run(None, x)[0].ravel().astype(np.float64)
for p in sys.argv[3:]:
    s = sess(p); y = s.run(None, x)[0].ravel().astype(np.float64)
    for _ in range(3): s.run(None, x)
    t = []
    for _ in range(20):
        t0 = time.perf_counter(); s.run(None, x); t.append(time.perf_counter() - t0)
    print(f"{p}\t{np.median(t) * 1e3:.2f}\t{np.dot(r, y) / (np.linalg.norm(r) * np.linalg.norm(y)):.6f}")
"#;

fn python() -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/venv.sh"))
        .output()?;
    if !out.status.success() {
        bail!(
            "tools/venv.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = String::from_utf8(out.stdout)?;
    Ok(PathBuf::from(
        s.lines().last().context("venv.sh printed nothing")?.trim(),
    ))
}

/// (wall seconds, CPU seconds (user + system), peak RSS MB) of a command under /usr/bin/time.
fn timed(cmd: &mut Command) -> Result<(f64, f64, f64)> {
    let tf = std::env::temp_dir().join(format!("qs_time_{}", std::process::id()));
    let mut full = Command::new("/usr/bin/time");
    full.arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&tf)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    let out = full.output()?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    let t = std::fs::read_to_string(&tf)?;
    std::fs::remove_file(&tf).ok();
    let last = t.lines().last().context("no time output")?;
    let mut it = last.split_whitespace();
    let s: f64 = it.next().context("time")?.parse()?;
    let user: f64 = it.next().context("user")?.parse()?;
    let sys: f64 = it.next().context("sys")?.parse()?;
    let kb: f64 = it.next().context("rss")?.parse()?;
    Ok((s, user + sys, kb / 1024.0))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(
            Path::new(&args[i + 1]),
            Path::new(&args[i + 2]),
            Path::new(&args[i + 3]),
        );
    }
    let dir = if Path::new("/work/bench-tmp").exists() {
        PathBuf::from("/work/bench-tmp/quantize_static")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/quantize_static")
    };
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("cnn.onnx");
    io::save(&cnn(), &src, &Default::default())?;
    let calib = dir.join("calib");
    for s in 0..SAMPLES {
        let d = calib.join(format!("s{s}"));
        std::fs::create_dir_all(&d)?;
        let n = (3 * SIDE * SIDE) as usize;
        let t = Tensor::from_f32(
            "input",
            vec![1, 3, SIDE, SIDE],
            &vals(n, 1000 + s as u64, 1.0),
        );
        onnx_rewrite::validate::npy::write_npy(&d.join("input.npy"), &t)?;
    }
    let py = python()?;
    let ours = dir.join("ours.onnx");
    let theirs = dir.join("ort.onnx");
    let me = std::env::current_exe()?;
    let (t_ours, cpu_ours, rss_ours) = timed(
        Command::new(&me)
            .arg("--child")
            .arg(&src)
            .arg(&ours)
            .arg(&calib),
    )?;
    let (t_ort, cpu_ort, rss_ort) = timed(
        Command::new(&py)
            .arg("-c")
            .arg(PY_ORT)
            .arg(&src)
            .arg(&theirs)
            .arg(&calib),
    )?;
    let (t_imp, cpu_imp, rss_imp) = timed(Command::new(&py).arg("-c").arg(PY_IMPORT))?;
    let eval = Command::new(&py)
        .arg("-c")
        .arg(PY_EVAL)
        .arg(&src)
        .arg(&calib)
        .arg(&src)
        .arg(&ours)
        .arg(&theirs)
        .output()?;
    if !eval.status.success() {
        bail!(
            "evaluation failed: {}",
            String::from_utf8_lossy(&eval.stderr)
        );
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!("static QDQ of a generated CNN (1x3x224x224, 11 Conv, 64 ch), {SAMPLES} calibration samples");
    println!("| tool | time s | CPU s | peak RSS MB | file bytes |");
    println!("|---|---|---|---|---|");
    println!(
        "| onnx-rewrite (library child) | {t_ours:.2} | {cpu_ours:.2} | {rss_ours:.0} | {} |",
        size(&ours)
    );
    println!(
        "| onnxruntime quantize_static | {t_ort:.2} | {cpu_ort:.2} | {rss_ort:.0} | {} |",
        size(&theirs)
    );
    println!("| (python + imports alone) | {t_imp:.2} | {cpu_imp:.2} | {rss_imp:.0} | |");
    println!(
        "float file: {} bytes; speedup {:.1}x, RSS ratio {:.2}",
        size(&src),
        t_ort / t_ours,
        rss_ours / rss_ort
    );
    println!("ORT latency (1 thread, median of 20) and output cosine vs float:");
    print!("{}", String::from_utf8_lossy(&eval.stdout));
    if std::env::var_os("QUANTIZE_STATIC_KEEP").is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
