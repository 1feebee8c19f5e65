//! Weight-only quantization benchmark: int8 of a generated 5-layer 2048x2048 MLP (about 84 MB of f32 weights)
//! through the release CLI (`onnx-rewrite quantize IN OUT --mode weight`), beside ONNX Runtime's
//! `quantize_dynamic` (python, same model, same run) and `cp` of the input.
//!
//!     cargo build --release --bin onnx-rewrite && cargo bench --bench quantize
//!     cargo bench --bench quantize -- --runs 5      # best of 5 instead of 3
//!
//! The MLP layers are `MatMul(x, W[2048, 2048]) + b -> Relu`, the Gemm-free form of a Gemm MLP, because
//! `quantize_dynamic` quantizes MatMul (to MatMulInteger) but has no dynamic Gemm: with Gemm layers it would
//! leave the model float and the comparison would be empty. Both tools quantize all five weights per tensor
//! int8 (ours with `--per-tensor --symmetric` to match; our default per-channel asymmetric is timed too).
//!
//! Every tool runs as a subprocess under `/usr/bin/time -f '%e %M'` (wall seconds, peak RSS in KB) after a
//! `sync`, best wall time of N runs (peak RSS of that run). The python time includes interpreter start and
//! `import onnxruntime.quantization`, measured apart and printed. The model is generated into a temp dir under
//! /work/bench-tmp (or $TMPDIR when that does not exist) and deleted at the end; free disk is checked first.
//! Outputs are checked: ours must be <= 0.27x the input size and load in the library.
//!
//! Then the streaming case: weight-only int8 of a generated external-data model (MatMul layers of 8192 x 8192
//! f32, 256 MiB each; 8 GB by default, `--stream-gb X` to change, `--stream-gb 0` to skip), written straight
//! to disk without holding it in memory, quantized by our CLI (per-channel default) through each entry point
//! (`quantize`, `run -p quantize{mode=weight}`, a recipe with `--no-validate`) beside `cp` of the input (model
//! and data file). Besides wall time and peak RSS (which counts the mapped, file-backed data
//! pages), it prints the peak *anonymous* RSS of our CLI: `RssAnon` of /proc/<pid>/status, sampled every
//! 2 ms while it runs. ONNX Runtime's quantizer is not run on it: it loads the whole model into memory.
//! The size is reduced (and said) when the disk has less than twice the model plus a quarter of it plus
//! 15 GB free (`--keep-free GB` to change the 15).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use onnx_rewrite::io;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::tensor::{ExternalRef, TensorData};
use onnx_rewrite::ir::{DataType, MetaEntry, Tensor};

const LAYERS: usize = 5;
const DIM: usize = 2048;

const PY_DYNAMIC: &str = r#"
import sys
from onnxruntime.quantization import quantize_dynamic, QuantType
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=False)
"#;

const PY_IMPORT: &str = "import onnxruntime.quantization\n";

fn values(n: usize, salt: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = (i ^ (salt << 40)).wrapping_add(0x9E3779B97F4A7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.03
        })
        .collect()
}

fn generate(path: &Path) -> Result<()> {
    let mut b = GraphBuilder::new("mlp");
    let mut x = b.input("x", DataType::FLOAT, &["batch", &DIM.to_string()]);
    for l in 0..LAYERS {
        let w = b.initializer(Tensor::from_vec(
            format!("w{l}"),
            vec![DIM as i64, DIM as i64],
            values(DIM * DIM, l as u64 + 1),
        )?);
        let bias = b.initializer(Tensor::from_vec(
            format!("b{l}"),
            vec![DIM as i64],
            values(DIM, 100 + l as u64),
        )?);
        let y = b.node("MatMul", &[x, w], vec![], 1)[0];
        let y = b.node("Add", &[y, bias], vec![], 1)[0];
        x = if l + 1 < LAYERS {
            b.node("Relu", &[y], vec![], 1)[0]
        } else {
            y
        };
    }
    b.output(x, DataType::FLOAT, &["batch", &DIM.to_string()]);
    io::save(&model(b.build(), 17), path, &Default::default())?;
    Ok(())
}

const BIG_DIM: usize = 8192;

/// Write an external-data MLP of `layers` MatMul weights [BIG_DIM, BIG_DIM] (f32) to `dir/big.onnx` +
/// `dir/big.data`, streaming the data (one 16 MiB window in memory).
fn generate_big(dir: &Path, layers: usize) -> Result<PathBuf> {
    use std::io::Write;
    let data = dir.join("big.data");
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&data)?);
    let per = BIG_DIM * BIG_DIM;
    let window = 4 << 20;
    let mut ranges = Vec::new();
    let mut offset = 0u64;
    for l in 0..layers {
        let mut done = 0;
        while done < per {
            let n = window.min(per - done);
            let v = values(n, (l as u64 + 1) * 1_000_003 + done as u64);
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            f.write_all(&bytes)?;
            done += n;
        }
        ranges.push((offset, (per * 4) as u64));
        offset += (per * 4) as u64;
    }
    f.flush()?;
    drop(f);
    let mut resolver = io::external::Resolver::new(Some(dir));
    let file = resolver
        .open("big.data")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut b = GraphBuilder::new("big_mlp");
    let mut x = b.input("x", DataType::FLOAT, &["batch", &BIG_DIM.to_string()]);
    for (l, (o, len)) in ranges.iter().enumerate() {
        resolver.note("big.data", *o, *len);
        let mut t = Tensor::from_raw(
            format!("w{l}"),
            DataType::FLOAT,
            vec![BIG_DIM as i64, BIG_DIM as i64],
            Default::default(),
        );
        t.data = TensorData::External(ExternalRef {
            entries: vec![
                MetaEntry::new("location", "big.data"),
                MetaEntry::new("offset", &o.to_string()),
                MetaEntry::new("length", &len.to_string()),
            ],
            location: "big.data".into(),
            offset: *o,
            length: *len,
            file: file.clone(),
        });
        // TensorProto.DataLocation.EXTERNAL
        t.data_location = Some(1);
        let w = b.initializer(t);
        let y = b.node("MatMul", &[x, w], vec![], 1)[0];
        x = if l + 1 < layers {
            b.node("Relu", &[y], vec![], 1)[0]
        } else {
            y
        };
    }
    resolver.finish();
    b.output(x, DataType::FLOAT, &["batch", &BIG_DIM.to_string()]);
    let path = dir.join("big.onnx");
    // the data file is the input's own, untouched: the save points at it in place
    io::save(&model(b.build(), 17), &path, &Default::default())?;
    Ok(path)
}

/// Run `cmd`, sampling /proc/<pid>/status every 2 ms: (wall seconds, peak RssAnon KB, peak VmRSS KB; both
/// sampled, so a peak shorter than the interval can be missed).
fn timed_anon(cmd: &mut Command) -> Result<(f64, u64, u64)> {
    Command::new("sync").status()?;
    let t0 = std::time::Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let (mut peak_anon, mut peak_rss) = (0u64, 0u64);
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            peak_anon = peak_anon.max(field(&text, "RssAnon:").unwrap_or(0));
            peak_rss = peak_rss.max(field(&text, "VmRSS:").unwrap_or(0));
        }
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let secs = t0.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            e.read_to_string(&mut err)?;
        }
        bail!("{cmd:?} failed: {err}");
    }
    Ok((secs, peak_anon, peak_rss))
}

fn streaming_case(parent: &Path, bin: &Path, want_gb: f64, keep_free: f64) -> Result<()> {
    let free = free_gb(parent)?;
    // input + cp copy + int8 output (a quarter) + `keep_free` GB (15 unless told) kept free
    let fits = ((free - keep_free) / 2.25).max(0.0);
    let gb = want_gb.min(fits);
    let layer_gb = (BIG_DIM * BIG_DIM * 4) as f64 / 1e9;
    let layers = (gb / layer_gb).floor() as usize;
    if layers == 0 {
        println!(
            "\nstreaming case: skipped ({free:.1} GB free under {}: not room for one layer with {keep_free} GB kept free)",
            parent.display()
        );
        return Ok(());
    }
    let dir = tempfile::Builder::new()
        .prefix("qstream")
        .tempdir_in(parent)?;
    let t0 = std::time::Instant::now();
    let input = generate_big(dir.path(), layers)?;
    let data = dir.path().join("big.data");
    let in_bytes = std::fs::metadata(&input)?.len() + std::fs::metadata(&data)?.len();
    println!(
        "\nstreaming case: {layers} x MatMul {BIG_DIM}x{BIG_DIM} + Relu, external data, {:.2} GB{} (generated in {:.0} s)",
        in_bytes as f64 / 1e9,
        if gb < want_gb {
            format!(
                " (asked {want_gb} GB; {free:.1} GB free under {} leaves room for this with {keep_free} GB kept free)",
                parent.display()
            )
        } else {
            String::new()
        },
        t0.elapsed().as_secs_f64()
    );
    // cp of the input (model and data file), then the copy is deleted before our run
    let cp_dir = dir.path().join("cp");
    std::fs::create_dir_all(&cp_dir)?;
    // warm the page cache once with a read, unmeasured
    Command::new("cat")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .status()?;
    let cp = timed(Command::new("cp").arg(&input).arg(&data).arg(&cp_dir))?;
    std::fs::remove_dir_all(&cp_dir)?;
    // the same streaming through every entry point: the quantize command, `run -p` and a recipe (one pipeline,
    // one scratch folder beside the output)
    let recipe = dir.path().join("weight.toml");
    std::fs::write(
        &recipe,
        "[[pass]]\nname = \"quantize\"\noptions = { mode = \"weight\" }\n",
    )?;
    let entry_points: [(&str, Vec<String>); 3] = [
        (
            "onnx-rewrite quantize (per-channel, streamed)",
            vec![
                "quantize".into(),
                "IN".into(),
                "OUT".into(),
                "--mode".into(),
                "weight".into(),
            ],
        ),
        (
            "onnx-rewrite run -p quantize{mode=weight}",
            vec![
                "run".into(),
                "IN".into(),
                "OUT".into(),
                "-p".into(),
                "quantize{mode=weight}".into(),
            ],
        ),
        (
            "onnx-rewrite run --recipe (quantize weight)",
            vec![
                "run".into(),
                "IN".into(),
                "OUT".into(),
                "--recipe".into(),
                recipe.display().to_string(),
                "--no-validate".into(),
            ],
        ),
    ];
    println!(
        "\n{:<44} {:>8} {:>14} {:>12} {:>10}",
        "tool", "seconds", "peak anon MB", "peak RSS MB", "out GB"
    );
    println!(
        "{:<44} {:>8.2} {:>14} {:>12.1} {:>10.2}",
        "cp (model + data file)",
        cp.secs,
        "-",
        cp.peak_kb as f64 / 1024.0,
        in_bytes as f64 / 1e9
    );
    for (k, (label, args)) in entry_points.iter().enumerate() {
        let out_dir = dir.path().join(format!("out{k}"));
        std::fs::create_dir_all(&out_dir)?;
        let out = out_dir.join("q.onnx");
        let args: Vec<std::ffi::OsString> = args
            .iter()
            .map(|a| match a.as_str() {
                "IN" => input.clone().into_os_string(),
                "OUT" => out.clone().into_os_string(),
                a => a.into(),
            })
            .collect();
        let (secs, anon_kb, rss_kb) = timed_anon(Command::new(bin).args(&args))?;
        let out_bytes: u64 = std::fs::read_dir(&out_dir)?
            .map(|e| Ok(e?.metadata()?.len()))
            .collect::<Result<Vec<u64>>>()?
            .iter()
            .sum();
        let q = io::load(&out).context("streamed output does not load")?;
        let external = q
            .graph
            .initializers()
            .filter(|(_, t)| t.is_external() && t.dtype() == DataType::INT8)
            .count();
        if external != layers {
            bail!("{label}: {external} external int8 weights, want {layers}");
        }
        let ratio = out_bytes as f64 / in_bytes as f64;
        println!(
            "{:<44} {:>8.2} {:>14.1} {:>12.1} {:>10.2}",
            label,
            secs,
            anon_kb as f64 / 1024.0,
            rss_kb as f64 / 1024.0,
            out_bytes as f64 / 1e9
        );
        println!(
            "  ratios: / cp = {:.1}x time; output {ratio:.3}x the input; peak anonymous RSS {:.0} MB ({} 1 GB; \
             sampled every 2 ms; peak RSS counts the mapped data pages, which the kernel reclaims at will)",
            secs / cp.secs.max(0.01),
            anon_kb as f64 / 1024.0,
            if anon_kb < 1 << 20 { "under" } else { "OVER" },
        );
        if ratio > 0.27 {
            bail!("{label}: streamed output is {ratio:.3}x the input (want <= 0.27)");
        }
        drop(q);
        std::fs::remove_dir_all(&out_dir)?;
    }
    dir.close()?;
    Ok(())
}

struct Run {
    secs: f64,
    peak_kb: u64,
}

fn timed(cmd: &mut Command) -> Result<Run> {
    Command::new("sync").status()?;
    let tf = tempfile::NamedTempFile::new()?;
    let mut full = Command::new("/usr/bin/time");
    full.arg("-f").arg("%e %M").arg("-o").arg(tf.path());
    full.arg(cmd.get_program());
    full.args(cmd.get_args());
    let out = full.output()?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    let text = std::fs::read_to_string(tf.path())?;
    let last = text.lines().last().context("no /usr/bin/time output")?;
    let mut it = last.split_whitespace();
    Ok(Run {
        secs: it.next().context("time")?.parse()?,
        peak_kb: it.next().context("rss")?.parse()?,
    })
}

fn best(runs: usize, mut f: impl FnMut() -> Result<Run>) -> Result<Run> {
    let mut best: Option<Run> = None;
    for _ in 0..runs {
        let r = f()?;
        if best.as_ref().is_none_or(|b| r.secs < b.secs) {
            best = Some(r);
        }
    }
    best.context("no run")
}

fn python() -> PathBuf {
    std::env::var_os("ONNX_REWRITE_VENV")
        .map(|v| PathBuf::from(v).join("bin/python"))
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        })
}

fn cli() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let p = target.join("release/onnx-rewrite");
    if !p.exists() {
        bail!(
            "{} is missing: run `cargo build --release --bin onnx-rewrite` first",
            p.display()
        );
    }
    Ok(p)
}

fn free_gb(dir: &Path) -> Result<f64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).context("df output")?;
    let avail: f64 = line
        .split_whitespace()
        .nth(3)
        .context("df avail")?
        .parse()?;
    Ok(avail / 1024.0 / 1024.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    let base = Path::new("/work/bench-tmp");
    let parent = if base.is_dir() || std::fs::create_dir_all(base).is_ok() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let free = free_gb(&parent)?;
    if free < 2.0 {
        bail!(
            "only {free:.1} GB free under {}: need 2 GB",
            parent.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("qbench")
        .tempdir_in(&parent)?;
    let input = dir.path().join("mlp.onnx");
    generate(&input)?;
    let in_bytes = std::fs::metadata(&input)?.len();
    println!(
        "model: {LAYERS} x MatMul {DIM}x{DIM} + Add + Relu, {:.1} MB ({})",
        in_bytes as f64 / 1e6,
        input.display()
    );
    let bin = cli()?;
    let out_ours = dir.path().join("ours.onnx");
    let out_ours_pc = dir.path().join("ours_pc.onnx");
    let out_ort = dir.path().join("ort.onnx");
    let out_cp = dir.path().join("cp.onnx");
    // warm the page cache and the disk path once, unmeasured
    timed(Command::new("cp").arg(&input).arg(&out_cp))?;

    let cp = best(runs, || timed(Command::new("cp").arg(&input).arg(&out_cp)))?;
    let ours = best(runs, || {
        timed(
            Command::new(&bin)
                .arg("quantize")
                .arg(&input)
                .arg(&out_ours)
                .args(["--mode", "weight", "--per-tensor", "--symmetric"]),
        )
    })?;
    let ours_pc = best(runs, || {
        timed(
            Command::new(&bin)
                .arg("quantize")
                .arg(&input)
                .arg(&out_ours_pc)
                .args(["--mode", "weight"]),
        )
    })?;
    let py = python();
    let import = best(runs, || timed(Command::new(&py).arg("-c").arg(PY_IMPORT)))?;
    let ort = best(runs, || {
        timed(
            Command::new(&py)
                .arg("-c")
                .arg(PY_DYNAMIC)
                .arg(&input)
                .arg(&out_ort),
        )
    })?;

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    for (p, what) in [
        (&out_ours, "ours per-tensor"),
        (&out_ours_pc, "ours per-channel"),
    ] {
        let ratio = size(p) as f64 / in_bytes as f64;
        if ratio > 0.27 {
            bail!("{what}: output is {ratio:.3}x the input (want <= 0.27)");
        }
        io::load(p).with_context(|| format!("{what}: output does not load"))?;
    }
    println!(
        "\n{:<44} {:>8} {:>10} {:>10}",
        "tool", "seconds", "peak MB", "out MB"
    );
    let row = |name: &str, r: &Run, out: &Path| {
        println!(
            "{name:<44} {:>8.2} {:>10.1} {:>10.1}",
            r.secs,
            r.peak_kb as f64 / 1024.0,
            size(out) as f64 / 1e6
        );
    };
    row("cp", &cp, &out_cp);
    row(
        "onnx-rewrite quantize (per-tensor symmetric)",
        &ours,
        &out_ours,
    );
    row(
        "onnx-rewrite quantize (default: per-channel)",
        &ours_pc,
        &out_ours_pc,
    );
    row("onnxruntime quantize_dynamic (QInt8)", &ort, &out_ort);
    println!(
        "{:<44} {:>8.2} {:>10.1}",
        "  (python + import onnxruntime.quantization)",
        import.secs,
        import.peak_kb as f64 / 1024.0
    );
    let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    println!(
        "\nratios: quantize_dynamic / ours = {:.1}x time, {:.1}x peak RSS; ours / cp = {:.1}x time \
         (cp {:.2} s; timer resolution 0.01 s)",
        r(ort.secs, ours.secs),
        r(ort.peak_kb as f64, ours.peak_kb as f64),
        r(ours.secs, cp.secs),
        cp.secs
    );
    drop(dir);
    let stream_gb = args
        .iter()
        .position(|a| a == "--stream-gb")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(8.0f64);
    let keep_free = args
        .iter()
        .position(|a| a == "--keep-free")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(15.0f64);
    if stream_gb > 0.0 {
        streaming_case(&parent, &bin, stream_gb, keep_free)?;
    }
    Ok(())
}
