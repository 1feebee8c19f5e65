//! IO benchmark: load -> save round trip of big models, against `cp` and Python `onnx.load` + `onnx.save`.
//!
//!     cargo bench --bench io                  # ~250 MB inline model (best of 3) and a >2 GB external-data model (1 run)
//!     cargo bench --bench io -- --skip-2gb    # only the 250 MB model
//!     cargo bench --bench io -- --build-cli   # rebuild target/release/onnx-rewrite first even if it exists
//!
//! Models are generated with the library's builder (deterministic content) into `target/bench/` and reused when a
//! manifest says they were made with the same parameters and the files still have the recorded sizes; generation
//! is not measured. Every measured run is a subprocess under `/usr/bin/time -f '%e %M'`, with `sync` before it
//! (so writeback left by an earlier run is not charged to it) and the inputs in the page cache; one unmeasured
//! `cp` per model comes first, since the first big write after a pause is much slower on this VM. While it runs the
//! bench samples `/proc/<pid>/status` of the process tree every 20 ms for `RssAnon` (anonymous memory: what the
//! tool allocated, as opposed to the mapped input file) and `VmHWM` (a cross-check of `%M`).
//!
//! Tools measured on each model:
//! - `onnx-rewrite convert`: the release CLI, `target/release/onnx-rewrite convert IN OUT` (Keep mode);
//! - `lib (bench child)`: this bench binary re-run as `--roundtrip-child IN OUT`, doing `io::load` + `io::save`
//!   with default options: the library alone, independent of the CLI;
//! - `cp`, and `cp + fsync` (`cp` then `sync FILE...`): our saves fsync their outputs, plain `cp` does not;
//! - `python onnx`: `onnx.load(IN)` + `onnx.save(model, OUT)` (with `save_as_external_data` for the external
//!   model) in the pinned venv (`tools/venv.sh`). Its time includes interpreter start and `import onnx`, printed
//!   separately.
//!
//! Outputs of our tools are checked byte-identical to the inputs; every output is deleted after its run.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use rayon::prelude::*;

use onnx_rewrite::io::{self, ExternalMode, SaveOptions};
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{DataType, Tensor};

/// Bump when the generator changes, so stale generated files are not reused.
const GEN_VERSION: u32 = 1;

const PY_ROUNDTRIP: &str = r#"
import sys, onnx
src, dst, loc = sys.argv[1], sys.argv[2], sys.argv[3]
m = onnx.load(src)
if loc == "-":
    onnx.save(m, dst)
else:
    onnx.save(m, dst, save_as_external_data=True, all_tensors_to_one_file=True, location=loc, size_threshold=1024)
"#;

/// A generated benchmark model.
struct Spec {
    /// File stem in target/bench/ (`<stem>.onnx`, external data `<stem>.data`).
    stem: &'static str,
    label: &'static str,
    hidden: usize,
    layers: usize,
    external: bool,
    runs: usize,
}

impl Spec {
    fn params(&self) -> String {
        format!(
            "gen=v{GEN_VERSION} hidden={} layers={} external={}",
            self.hidden, self.layers, self.external
        )
    }
    fn model_name(&self) -> String {
        format!("{}.onnx", self.stem)
    }
    fn data_name(&self) -> String {
        format!("{}.data", self.stem)
    }
    /// The input files (model first), relative to the bench folder.
    fn files(&self) -> Vec<String> {
        let mut v = vec![self.model_name()];
        if self.external {
            v.push(self.data_name());
        }
        v
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench io: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--roundtrip-child") {
        let [_, src, dst] = &args[..] else {
            bail!("usage: --roundtrip-child IN OUT");
        };
        let m = io::load(Path::new(src))?;
        io::save(&m, Path::new(dst), &SaveOptions::default())?;
        return Ok(());
    }
    let mut skip_2gb = false;
    let mut build_cli = false;
    for a in &args {
        match a.as_str() {
            "--skip-2gb" => skip_2gb = true,
            "--build-cli" => build_cli = true,
            "--bench" => {} // passed by `cargo bench`
            other => bail!("unknown argument {other:?} (known: --skip-2gb, --build-cli)"),
        }
    }

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let bench_dir = target.join("bench");
    let out_dir = bench_dir.join("out");
    let log_dir = bench_dir.join("logs");
    fs::create_dir_all(&bench_dir)?;
    fs::create_dir_all(&log_dir)?;
    let _ = fs::remove_dir_all(&out_dir);

    if !Path::new("/usr/bin/time").exists() {
        bail!("/usr/bin/time is missing (Debian package `time`)");
    }

    let mut specs = vec![Spec {
        stem: "mlp_250mb",
        label: "250MB inline",
        hidden: 1024,
        layers: 60,
        external: false,
        runs: 3,
    }];
    if !skip_2gb {
        specs.push(Spec {
            stem: "mlp_2gb",
            label: ">2GB external",
            hidden: 4096,
            layers: 34,
            external: true,
            runs: 1,
        });
    }

    // the CLI
    let cli = target.join("release").join("onnx-rewrite");
    if build_cli || !cli.exists() {
        eprintln!("bench io: building the release CLI (cargo build --release --bin onnx-rewrite)");
        let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--bin", "onnx-rewrite"])
            .current_dir(&root)
            .status()
            .context("running cargo build")?;
        if !st.success() {
            bail!("cargo build --release --bin onnx-rewrite failed");
        }
    }
    let cli_note = stale_note(&cli, &root.join("src"));

    // the pinned Python
    let python = match Command::new("bash")
        .arg(root.join("tools/venv.sh"))
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        _ => None,
    };
    let py_import = python.as_ref().and_then(|py| {
        let t = Instant::now();
        let ok = Command::new(py)
            .args(["-c", "import onnx"])
            .stdout(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then(|| t.elapsed().as_secs_f64())
    });
    let py_version = python.as_ref().and_then(|py| {
        let o = Command::new(py)
            .args([
                "-c",
                "import sys, onnx; print(sys.version.split()[0], onnx.__version__)",
            ])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
    });

    for s in &specs {
        generate(s, &bench_dir)?;
    }

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for s in &specs {
        let inputs: Vec<PathBuf> = s.files().iter().map(|f| bench_dir.join(f)).collect();
        let in_bytes: u64 = inputs.iter().map(|p| file_len(p)).sum();
        eprintln!(
            "bench io: measuring {} ({} bytes in {} file(s)), {} run(s) per tool",
            s.label,
            in_bytes,
            inputs.len(),
            s.runs
        );
        warm(&inputs)?;
        // An unmeasured write of the same size first: on this VM the first big write after a pause (or after
        // deleting big files) is consistently slower, which would otherwise be charged to whichever tool runs
        // first.
        fs::create_dir_all(&out_dir)?;
        let t = Instant::now();
        let st = Command::new("cp")
            .args(&inputs)
            .arg(&out_dir)
            .status()
            .context("warm-up cp")?;
        let _ = Command::new("sync").status();
        eprintln!(
            "bench io:   warm-up cp (not measured): {:.3}s",
            t.elapsed().as_secs_f64()
        );
        fs::remove_dir_all(&out_dir)?;
        if !st.success() {
            bail!("warm-up cp failed: {st}");
        }
        let out_model = out_dir.join(s.model_name());
        let out_files: Vec<PathBuf> = s.files().iter().map(|f| out_dir.join(f)).collect();

        let mut tools: Vec<Tool> = vec![
            Tool {
                name: "onnx-rewrite convert",
                ours: true,
                cmd: vec![
                    cli.clone().into(),
                    "convert".into(),
                    inputs[0].clone().into(),
                    out_model.clone().into(),
                ],
            },
            Tool {
                name: "lib (bench child)",
                ours: true,
                cmd: vec![
                    std::env::current_exe()?.into(),
                    "--roundtrip-child".into(),
                    inputs[0].clone().into(),
                    out_model.clone().into(),
                ],
            },
            Tool {
                name: "cp",
                ours: false,
                cmd: {
                    let mut c: Vec<OsString> = vec!["cp".into()];
                    c.extend(inputs.iter().map(|p| p.clone().into()));
                    c.push(out_dir.clone().into());
                    c
                },
            },
            Tool {
                name: "cp + fsync",
                ours: false,
                cmd: {
                    let q = |p: &Path| format!("'{}'", p.display());
                    let srcs: Vec<String> = inputs.iter().map(|p| q(p)).collect();
                    let dsts: Vec<String> = out_files.iter().map(|p| q(p)).collect();
                    vec![
                        "bash".into(),
                        "-c".into(),
                        format!(
                            "cp {} {} && sync {}",
                            srcs.join(" "),
                            q(&out_dir),
                            dsts.join(" ")
                        )
                        .into(),
                    ]
                },
            },
        ];
        match &python {
            Some(py) => tools.push(Tool {
                name: "python onnx",
                ours: false,
                cmd: vec![
                    py.into(),
                    "-c".into(),
                    PY_ROUNDTRIP.into(),
                    inputs[0].clone().into(),
                    out_model.clone().into(),
                    if s.external {
                        s.data_name().into()
                    } else {
                        "-".into()
                    },
                ],
            }),
            None => notes.push("python: tools/venv.sh failed; python rows skipped".into()),
        }

        let mut results: Vec<Vec<Measured>> = vec![Vec::new(); tools.len()];
        for round in 0..s.runs {
            for (ti, tool) in tools.iter().enumerate() {
                fs::create_dir_all(&out_dir)?;
                let log = log_dir.join(format!(
                    "{}.{}.{round}.log",
                    s.stem,
                    tool.name.replace([' ', '(', ')', '+'], "_")
                ));
                let _ = Command::new("sync").status();
                let mut m = measure(&tool.cmd, &log, &out_dir)?;
                m.written = dir_bytes(&out_dir);
                if m.ok {
                    m.identical = Some(same_files(&inputs, &out_files, &out_dir)?);
                }
                eprintln!(
                    "bench io:   {:<22} run {}: {}",
                    tool.name,
                    round + 1,
                    m.short()
                );
                fs::remove_dir_all(&out_dir)?;
                results[ti].push(m);
            }
        }
        for (tool, runs) in tools.iter().zip(results) {
            rows.push(Row::from_runs(tool, s, runs));
        }
    }
    let _ = fs::remove_dir_all(&out_dir);

    print_report(
        &rows, &specs, &bench_dir, &cli, cli_note, py_version, py_import, &notes,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// generation

/// Deterministic f32 weights in [-scale, scale) (splitmix64), little-endian.
fn weights(seed: u64, n: usize, scale: f32) -> Bytes {
    const CHUNK: usize = 1 << 16;
    let mut out = vec![0u8; n * 4];
    out.par_chunks_mut(CHUNK * 4)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let mut state = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(ci as u64 * 0xD1B5_4A32_D192_ED03);
            for b in chunk.chunks_exact_mut(4) {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                b.copy_from_slice(&((u * 2.0 - 1.0) * scale).to_le_bytes());
            }
        });
    Bytes::from(out)
}

/// Reuse the files when the manifest matches the parameters and the sizes on disk; else (re)generate.
fn generate(s: &Spec, dir: &Path) -> Result<()> {
    let manifest = dir.join(format!("{}.manifest", s.stem));
    let files = s.files();
    if let Ok(text) = fs::read_to_string(&manifest) {
        let mut lines = text.lines();
        if lines.next() == Some(s.params().as_str()) {
            let sizes: Vec<(String, u64)> = lines
                .filter_map(|l| {
                    let (n, b) = l.split_once(' ')?;
                    Some((n.to_string(), b.parse().ok()?))
                })
                .collect();
            let names: Vec<&String> = sizes.iter().map(|(n, _)| n).collect();
            if names == files.iter().collect::<Vec<_>>()
                && sizes.iter().all(|(n, b)| file_len(&dir.join(n)) == *b)
            {
                eprintln!("bench io: reusing {} ({})", s.model_name(), s.params());
                return Ok(());
            }
        }
    }
    let _ = fs::remove_file(&manifest);
    for f in &files {
        let _ = fs::remove_file(dir.join(f));
    }
    let need = (s.hidden * s.hidden * 4 * s.layers) as u64;
    if let Some(free) = free_bytes(dir) {
        if free < need * 3 + (2 << 30) {
            bail!(
                "not enough disk for {}: {} MB free, want {} MB (input, one output and slack)",
                s.model_name(),
                free >> 20,
                (need * 3 + (2 << 30)) >> 20
            );
        }
    }
    eprintln!(
        "bench io: generating {} ({} layers of {}x{} f32, {} MB of weights)",
        s.model_name(),
        s.layers,
        s.hidden,
        s.hidden,
        need / 1_000_000
    );
    let t = Instant::now();
    let d = s.hidden as i64;
    let dim = s.hidden.to_string();
    let mut b = GraphBuilder::new(&format!("bench_{}", s.stem));
    let mut h = b.input("x", DataType::FLOAT, &["N", &dim]);
    let scale = 1.0 / (s.hidden as f32).sqrt();
    for i in 0..s.layers {
        let w = b.initializer(Tensor::from_raw(
            format!("layer{i}.weight"),
            DataType::FLOAT,
            vec![d, d],
            weights(2 * i as u64 + 1, s.hidden * s.hidden, scale),
        ));
        let bias = b.initializer(Tensor::from_raw(
            format!("layer{i}.bias"),
            DataType::FLOAT,
            vec![d],
            weights(2 * i as u64 + 2, s.hidden, 0.01),
        ));
        let mm = b.node("MatMul", &[h, w], vec![], 1)[0];
        let add = b.node("Add", &[mm, bias], vec![], 1)[0];
        h = b.node("Relu", &[add], vec![], 1)[0];
    }
    b.output(h, DataType::FLOAT, &["N", &dim]);
    let m = model(b.build(), 17);
    let opts = SaveOptions {
        external: if s.external {
            ExternalMode::Threshold {
                min_bytes: 1024,
                location: None,
            }
        } else {
            ExternalMode::Keep
        },
    };
    io::save(&m, &dir.join(s.model_name()), &opts)?;
    drop(m);
    let mut text = s.params() + "\n";
    for f in &files {
        let len = file_len(&dir.join(f));
        if len == 0 {
            bail!("generation did not write {f}");
        }
        text += &format!("{f} {len}\n");
    }
    fs::write(&manifest, text)?;
    eprintln!(
        "bench io: generated {} in {:.1}s",
        s.model_name(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// measuring

struct Tool {
    name: &'static str,
    /// Our own round trip: its output must be byte-identical to the input.
    ours: bool,
    cmd: Vec<OsString>,
}

#[derive(Clone, Debug, Default)]
struct Measured {
    ok: bool,
    error: String,
    /// Wall time measured by the bench (spawn to exit of /usr/bin/time).
    secs: f64,
    /// `%e` of /usr/bin/time (10 ms resolution).
    time_secs: f64,
    /// `%M` of /usr/bin/time: peak RSS of the child, KiB.
    maxrss_kb: u64,
    /// Sampled max of VmHWM / RssAnon over the process tree, KiB.
    hwm_kb: u64,
    anon_kb: u64,
    written: u64,
    /// Output vs input files: Ok when byte-identical, else what differs.
    identical: Option<std::result::Result<(), String>>,
}

impl Measured {
    fn short(&self) -> String {
        if !self.ok {
            return format!("FAILED: {}", self.error);
        }
        format!(
            "{:.3}s (time: {:.2}s), maxrss {} MB, anon {} MB, {}",
            self.secs,
            self.time_secs,
            self.maxrss_kb / 1024,
            self.anon_kb / 1024,
            match &self.identical {
                Some(Ok(())) => "output byte-identical".to_string(),
                Some(Err(e)) => format!("output differs: {e}"),
                None => String::new(),
            }
        )
    }
}

fn measure(cmd: &[OsString], log: &Path, out_dir: &Path) -> Result<Measured> {
    let time_file = log.with_extension("time");
    let _ = fs::remove_file(&time_file);
    let logf = fs::File::create(log)?;
    let start = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&time_file)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .context("spawning /usr/bin/time")?;
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut hwm, mut anon) = (0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                for p in descendants(pid) {
                    if let Some((h, a)) = proc_mem(p) {
                        hwm = hwm.max(h);
                        anon = anon.max(a);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (hwm, anon)
        })
    };
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let (hwm_kb, anon_kb) = sampler.join().map_err(|_| anyhow!("sampler panicked"))?;
    let mut m = Measured {
        secs,
        hwm_kb,
        anon_kb,
        ..Default::default()
    };
    let time_text = fs::read_to_string(&time_file).unwrap_or_default();
    if let Some(last) = time_text.lines().rev().find(|l| !l.trim().is_empty()) {
        let mut it = last.split_whitespace();
        m.time_secs = it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        m.maxrss_kb = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    }
    let _ = fs::remove_file(&time_file);
    let out_empty = fs::read_dir(out_dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if !status.success() {
        m.error = format!("exit {status}: {}", tail(log));
    } else if out_empty {
        m.error = format!("exited 0 but wrote no output: {}", tail(log));
    } else {
        m.ok = true;
    }
    Ok(m)
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let t: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let t = t[t.len().saturating_sub(3)..].join(" | ");
    if t.is_empty() {
        "(no output)".into()
    } else {
        t
    }
}

/// All processes below `pid` (children of every thread, recursively).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                for c in s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                    out.push(c);
                    stack.push(c);
                }
            }
        }
    }
    out
}

/// (VmHWM, RssAnon) in KiB.
fn proc_mem(pid: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("RssAnon:").unwrap_or(0)))
}

/// Read the inputs once so every tool starts with them in the page cache.
fn warm(files: &[PathBuf]) -> Result<()> {
    let mut buf = vec![0u8; 8 << 20];
    for f in files {
        let mut r = fs::File::open(f)?;
        while r.read(&mut buf)? > 0 {}
    }
    Ok(())
}

/// Compare each output with its input, and check the output folder holds nothing else.
fn same_files(
    inputs: &[PathBuf],
    outputs: &[PathBuf],
    out_dir: &Path,
) -> Result<std::result::Result<(), String>> {
    let mut extra: Vec<String> = fs::read_dir(out_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !outputs
                .iter()
                .any(|o| o.file_name().unwrap().to_string_lossy() == *n)
        })
        .collect();
    extra.sort();
    for (i, o) in inputs.iter().zip(outputs) {
        let name = o.file_name().unwrap().to_string_lossy().into_owned();
        if !o.exists() {
            return Ok(Err(format!("{name} missing")));
        }
        let (li, lo) = (file_len(i), file_len(o));
        if li != lo {
            return Ok(Err(format!("{name} is {lo} bytes, input {li}")));
        }
        let (mut a, mut b) = (fs::File::open(i)?, fs::File::open(o)?);
        let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
        let mut pos = 0u64;
        loop {
            let n = read_full(&mut a, &mut ba)?;
            let m = read_full(&mut b, &mut bb)?;
            if n != m || ba[..n] != bb[..m] {
                let k = ba[..n]
                    .iter()
                    .zip(&bb[..m])
                    .position(|(x, y)| x != y)
                    .unwrap_or(n.min(m));
                return Ok(Err(format!("{name} differs at byte {}", pos + k as u64)));
            }
            if n == 0 {
                break;
            }
            pos += n as u64;
        }
    }
    if !extra.is_empty() {
        return Ok(Err(format!("extra files written: {}", extra.join(", "))));
    }
    Ok(Ok(()))
}

fn read_full(r: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn dir_bytes(d: &Path) -> u64 {
    fs::read_dir(d)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Free bytes on the file system holding `dir` (from `df -Pk`).
fn free_bytes(dir: &Path) -> Option<u64> {
    let o = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A warning when the CLI binary is older than some source file (it may be a stale build).
fn stale_note(bin: &Path, src: &Path) -> Option<String> {
    let bin_t = fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    newest = Some((t, p));
                }
            }
        }
    }
    let (t, p) = newest?;
    (t > bin_t).then(|| {
        format!(
            "{} is older than {} (stale build? rerun with -- --build-cli)",
            bin.display(),
            p.display()
        )
    })
}

// ---------------------------------------------------------------------------------------------------------------
// report

struct Row {
    tool: &'static str,
    ours: bool,
    model: &'static str,
    runs: usize,
    /// The best successful run, if any.
    best: Option<Measured>,
    /// Max over successful runs.
    maxrss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    identical: String,
    error: Option<String>,
}

impl Row {
    fn from_runs(tool: &Tool, s: &Spec, runs: Vec<Measured>) -> Row {
        let ok: Vec<&Measured> = runs.iter().filter(|m| m.ok).collect();
        let best = ok
            .iter()
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .map(|m| (*m).clone());
        let identical = if runs.iter().all(|m| m.identical == Some(Ok(()))) {
            "yes".to_string()
        } else if let Some(Some(Err(e))) = runs
            .iter()
            .map(|m| m.identical.clone())
            .find(|i| matches!(i, Some(Err(_))))
        {
            format!("NO ({e})")
        } else {
            "-".to_string()
        };
        Row {
            tool: tool.name,
            ours: tool.ours,
            model: s.label,
            runs: runs.len(),
            maxrss_kb: ok.iter().map(|m| m.maxrss_kb).max().unwrap_or(0),
            hwm_kb: ok.iter().map(|m| m.hwm_kb).max().unwrap_or(0),
            anon_kb: ok.iter().map(|m| m.anon_kb).max().unwrap_or(0),
            error: runs.iter().find(|m| !m.ok).map(|m| m.error.clone()),
            best,
            identical,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    rows: &[Row],
    specs: &[Spec],
    bench_dir: &Path,
    cli: &Path,
    cli_note: Option<String>,
    py_version: Option<String>,
    py_import: Option<f64>,
    notes: &[String],
) {
    println!();
    println!("== onnx-rewrite IO benchmark ==");
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!("machine: {cpus} CPUs, {} GiB RAM", mem >> 20);
    for s in specs {
        let sizes: Vec<String> = s
            .files()
            .iter()
            .map(|f| format!("{f} {} B", file_len(&bench_dir.join(f))))
            .collect();
        println!(
            "model {:<14} {} layers MatMul+Add+Relu, {}x{} f32 weights: {}",
            s.label,
            s.layers,
            s.hidden,
            s.hidden,
            sizes.join(", ")
        );
    }
    println!("cli: {}", cli.display());
    if let Some(n) = cli_note {
        println!("warning: {n}");
    }
    match (py_version, py_import) {
        (Some(v), Some(t)) => {
            println!("python: {v} (python + `import onnx` alone: {t:.2}s, included in its times)")
        }
        _ => println!("python: unavailable"),
    }
    for n in notes {
        println!("note: {n}");
    }
    println!(
        "seconds: best of the runs, wall clock of the subprocess; GB/s: bytes written / seconds (GB = 1e9);\n\
         peak RSS: /usr/bin/time %M; anon: max sampled RssAnon (every 20 ms); HWM: max sampled VmHWM (cross-check);\n\
         memory columns are the max over runs; x cp / x cp+fs / x py: seconds / seconds of cp, cp + fsync, python."
    );
    println!();
    println!(
        "{:<22} {:<14} {:>4} {:>8} {:>6} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7}  identical",
        "tool",
        "model",
        "runs",
        "seconds",
        "GB/s",
        "peak RSS",
        "anon MB",
        "HWM MB",
        "x cp",
        "x cp+fs",
        "x py"
    );
    println!("{}", "-".repeat(120));
    for r in rows {
        let base = |name: &str| {
            rows.iter()
                .find(|o| o.model == r.model && o.tool == name)
                .and_then(|o| o.best.as_ref())
                .map(|m| m.secs)
        };
        match &r.best {
            Some(m) => {
                let ratio = |b: Option<f64>| match b {
                    Some(b) if b > 0.0 => format!("{:.2}", m.secs / b),
                    _ => "-".into(),
                };
                let ident = if r.ours {
                    r.identical.clone()
                } else if r.identical == "yes" {
                    "yes".into()
                } else {
                    format!("{} (informational)", r.identical)
                };
                println!(
                    "{:<22} {:<14} {:>4} {:>8.3} {:>6.2} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7}  {}",
                    r.tool,
                    r.model,
                    r.runs,
                    m.secs,
                    m.written as f64 / 1e9 / m.secs,
                    r.maxrss_kb / 1024,
                    r.anon_kb / 1024,
                    r.hwm_kb / 1024,
                    ratio(base("cp")),
                    ratio(base("cp + fsync")),
                    ratio(base("python onnx")),
                    ident,
                );
            }
            None => println!(
                "{:<22} {:<14} {:>4} FAILED: {}",
                r.tool,
                r.model,
                r.runs,
                r.error.as_deref().unwrap_or("?")
            ),
        }
    }
    for r in rows
        .iter()
        .filter(|r| r.best.is_some() && r.error.is_some())
    {
        println!(
            "note: {} on {}: some runs failed: {}",
            r.tool,
            r.model,
            r.error.as_deref().unwrap_or("?")
        );
    }
    println!();
    for r in rows.iter().filter(|r| r.ours) {
        let verdict = match (&r.best, r.identical.as_str()) {
            (Some(_), "yes") => {
                "output byte-identical to the input (model and external data)".to_string()
            }
            (None, _) => "no successful run".to_string(),
            (_, other) => format!("output NOT identical: {other}"),
        };
        println!("check: {} on {}: {verdict}", r.tool, r.model);
    }
}
