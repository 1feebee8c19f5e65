//! `lowrank` numerics on every weight of a generated BERT-base-sized stack (12 layers of 768x768 x4, 768x3072,
//! 3072x768: 72 matrices, 85M parameters) beside numpy's `linalg.svd` on the same matrices, in one run:
//!
//!     cargo bench --bench lowrank
//!
//! Prints, never asserts: the exact path (faer thin SVD, layers in parallel with rayon as the pass runs them)
//! against numpy's full thin SVD (LAPACK gesdd through OpenBLAS, sequential over matrices, BLAS threads as
//! numpy sets them); the randomized path at rank 64 against the same numpy time, with its error beside the
//! optimal truncation's; the ranks and errors energy 0.9 picks. Peak RSS: this process's VmHWM (reset after
//! the matrices are generated and written) and numpy's ru_maxrss. The matrices go to /work/bench-tmp (f32,
//! 340 MB) and are deleted at the end. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for numpy only.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use onnx_rewrite::passes::lowrank::svd;
use rayon::prelude::*;

const LAYERS: usize = 12;
const HIDDEN: usize = 768;
const FFN: usize = 3072;

fn shapes() -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for _ in 0..LAYERS {
        v.extend([(HIDDEN, HIDDEN); 4]);
        v.push((HIDDEN, FFN));
        v.push((FFN, HIDDEN));
    }
    v
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

/// A trained-looking weight: a rank-64 part carrying most of the energy plus full-rank noise, in f32.
fn generate(k: usize, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let r = 64;
    let a: Vec<f64> = (0..k * r).map(|_| rng.next()).collect();
    let b: Vec<f64> = (0..r * n)
        .map(|_| rng.next() / (1.0 + (rng.next() + 0.5) * 4.0))
        .collect();
    let mut w = vec![0f32; k * n];
    for i in 0..k {
        for t in 0..r {
            let x = a[i * r + t] / (1.0 + t as f64 * 0.1);
            let row = &b[t * n..(t + 1) * n];
            for (j, y) in row.iter().enumerate() {
                w[i * n + j] += (x * y) as f32;
            }
        }
        for v in &mut w[i * n..(i + 1) * n] {
            *v += (rng.next() * 0.05) as f32;
        }
    }
    w
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

const NUMPY: &str = r#"
import sys, time, resource, json
import numpy as np
path, spec = sys.argv[1], json.loads(sys.argv[2])
data = np.fromfile(path, dtype=np.float32)
mats, off = [], 0
for k, n in spec:
    mats.append(data[off:off + k * n].reshape(k, n).astype(np.float64)); off += k * n
del data
t = time.perf_counter()
for m in mats:
    np.linalg.svd(m, full_matrices=False)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"#;

fn main() {
    let dir = PathBuf::from("/work/bench-tmp/lowrank");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("weights.f32");
    let shapes = shapes();
    let mats: Vec<Vec<f64>> = shapes
        .par_iter()
        .enumerate()
        .map(|(i, &(k, n))| generate(k, n, i as u64 + 1))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|w| w.into_iter().map(f64::from).collect())
        .collect();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for m in &mats {
            for v in m {
                f.write_all(&(*v as f32).to_le_bytes()).unwrap();
            }
        }
    }
    let params: usize = shapes.iter().map(|(k, n)| k * n).sum();
    println!(
        "{} matrices, {params} parameters, rayon threads {}",
        shapes.len(),
        rayon::current_num_threads()
    );
    faer::set_global_parallelism(faer::Par::Seq);
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    // exact: every singular triple, as the pass's exact path
    let t = Instant::now();
    // per matrix: optimal rank-64 error, the rank energy 0.9 picks and its error (the factors are dropped)
    let exact: Vec<(f64, usize, f64)> = shapes
        .par_iter()
        .zip(&mats)
        .map(|(&(k, n), w)| {
            let d = svd::exact(svd::matrix(k, n, w).as_ref()).unwrap();
            let r = svd::select(&d, k.min(n), svd::Target::Energy(0.9), 1).unwrap();
            (d.rel_error(64), r, d.rel_error(r))
        })
        .collect();
    let exact_s = t.elapsed().as_secs_f64();
    let exact_rss = peak_rss_kb();

    // randomized at rank 64 (oversample 10, 2 power iterations, as the pass's defaults)
    let t = Instant::now();
    let rand: Vec<f64> = shapes
        .par_iter()
        .zip(&mats)
        .enumerate()
        .map(|(i, (&(k, n), w))| {
            svd::randomized(svd::matrix(k, n, w).as_ref(), 64, 10, 2, i as u64)
                .unwrap()
                .rel_error(64)
        })
        .collect();
    let rand_s = t.elapsed().as_secs_f64();
    let rand_rss = peak_rss_kb();

    let mut excess_max: f64 = 0.0;
    let (mut e_opt, mut e_rand) = (0.0, 0.0);
    for (d, &x) in exact.iter().zip(&rand) {
        let o = d.0;
        e_opt += o;
        e_rand += x;
        excess_max = excess_max.max(x / o - 1.0);
    }
    let nm = shapes.len() as f64;
    let mut ranks = Vec::new();
    let mut e09 = 0.0;
    for d in &exact {
        e09 += d.2;
        ranks.push(d.1);
    }

    let spec = serde_json::to_string(&shapes).unwrap();
    let py = std::env::var("ONNX_REWRITE_VENV")
        .map(|v| PathBuf::from(v).join("bin/python"))
        .unwrap_or_else(|_| PathBuf::from("target/pyenv/bin/python"));
    let out = Command::new(&py)
        .args(["-c", NUMPY, file.to_str().unwrap(), &spec])
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .expect("python");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let np: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|_| panic!("numpy failed: {}", String::from_utf8_lossy(&out.stderr)));
    let np_s = np["seconds"].as_f64().unwrap();
    let np_rss = np["peak_rss_kb"].as_u64().unwrap();
    println!("exact thin SVD (all triples): ours {exact_s:.2} s, numpy {np_s:.2} s, ours/numpy {:.2}x; peak RSS ours {} MB, numpy {} MB",
        exact_s / np_s, exact_rss / 1024, np_rss / 1024);
    println!("randomized rank 64: ours {rand_s:.2} s, {:.1}x faster than numpy's full SVD; peak RSS {} MB",
        np_s / rand_s, rand_rss / 1024);
    println!("rank 64 relative Frobenius error, mean over matrices: optimal (exact) {:.5}, randomized {:.5}; worst excess {:.3}%",
        e_opt / nm, e_rand / nm, excess_max * 100.0);
    let after: usize = ranks
        .iter()
        .zip(&shapes)
        .map(|(r, (k, n))| r * (k + n))
        .sum();
    println!("energy 0.9 (exact): ranks {}..{} (mean {:.0}), mean error {:.4}, params {params} -> {after}",
        ranks.iter().min().unwrap(), ranks.iter().max().unwrap(),
        ranks.iter().sum::<usize>() as f64 / nm, e09 / nm);
}
