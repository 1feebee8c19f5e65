//! Numerics of `lowrank`: truncated SVD of one weight matrix (exact through faer, or randomized with
//! oversampling and power iterations from a seeded generator), rank selection, and the two factors.
//!
//! Everything is f64 and single-threaded per matrix (`Par::Seq`): layers run in parallel one level up, and a
//! matrix's result never depends on how many threads exist.

use onnx_rewrite_linalg as la;
use onnx_rewrite_linalg::faer::{Mat, MatRef};

/// A (possibly partial) singular value decomposition `W ~ U diag(s) V^T` of a K x N matrix.
#[derive(Clone, Debug)]
pub struct Decomp {
    /// K x m, orthonormal columns.
    pub u: Mat<f64>,
    /// m singular values, non-increasing.
    pub s: Vec<f64>,
    /// N x m, orthonormal columns.
    pub v: Mat<f64>,
    /// ||W||_F^2.
    pub frob2: f64,
    /// Every singular value is known (exact thin SVD).
    pub complete: bool,
}

impl Decomp {
    /// Relative Frobenius error of the rank-`r` truncation `U_r S_r V_r^T`: both the exact SVD and the
    /// randomized one give `U_r U_r^T W` (an orthogonal projection of W), whose error is
    /// `sqrt(||W||^2 - sum_{i<r} s_i^2)`.
    pub fn rel_error(&self, r: usize) -> f64 {
        if self.frob2 <= 0.0 {
            return 0.0;
        }
        let kept: f64 = self.s.iter().take(r).map(|x| x * x).sum();
        ((self.frob2 - kept).max(0.0) / self.frob2).sqrt()
    }

    /// Fraction of sum s^2 (= ||W||_F^2) kept by the first `r` singular values.
    pub fn energy(&self, r: usize) -> f64 {
        if self.frob2 <= 0.0 {
            return 1.0;
        }
        let kept: f64 = self.s.iter().take(r).map(|x| x * x).sum();
        (kept / self.frob2).min(1.0)
    }

    /// The factors `P = U_r S_r^1/2` (K x r, row-major) and `Q = S_r^1/2 V_r^T` (r x N, row-major).
    pub fn factors(&self, r: usize) -> (Vec<f64>, Vec<f64>) {
        let root: Vec<f64> = self.s[..r].iter().map(|x| x.max(0.0).sqrt()).collect();
        (
            la::scaled_columns(self.u.as_ref(), r, &root),
            la::scaled_columns_t(self.v.as_ref(), r, &root),
        )
    }
}

/// A K x N matrix from row-major data.
pub fn matrix(k: usize, n: usize, data: &[f64]) -> Mat<f64> {
    la::from_row_major(k, n, data)
}

/// Exact thin SVD. An error when it does not converge (non-finite weights).
pub fn exact(w: MatRef<'_, f64>) -> Result<Decomp, String> {
    if !la::is_finite(w) {
        return Err("the weight has non-finite values".into());
    }
    let (u, s, v) = la::thin_svd(w)?;
    Ok(Decomp {
        u,
        s,
        v,
        frob2: la::frob2(w),
        complete: true,
    })
}

/// Singular values only (cheaper than `exact`), to check a randomized decomposition against.
pub fn singular_values(w: MatRef<'_, f64>) -> Result<Vec<f64>, String> {
    if !la::is_finite(w) {
        return Err("the weight has non-finite values".into());
    }
    la::singular_values(w)
}

/// splitmix64: a small seeded generator; the same seed gives the same stream on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller, one value per call).
    fn gauss(&mut self) -> f64 {
        let (a, b) = (self.unit(), self.unit());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }
}

/// Randomized SVD (Halko, Martinsson, Tropp 2011): a Gaussian test matrix of `rank + oversample` columns, `power`
/// subspace iterations with re-orthonormalisation, then the exact SVD of the small projected matrix.
pub fn randomized(
    w: MatRef<'_, f64>,
    rank: usize,
    oversample: usize,
    power: usize,
    seed: u64,
) -> Result<Decomp, String> {
    if !la::is_finite(w) {
        return Err("the weight has non-finite values".into());
    }
    let (k, n) = (w.nrows(), w.ncols());
    let l = (rank + oversample).min(k.min(n));
    let mut rng = SplitMix(seed);
    let omega = Mat::from_fn(n, l, |_, _| rng.gauss());
    let mut q = la::thin_q(la::product(w, omega.as_ref()).as_ref());
    for _ in 0..power {
        let z = la::thin_q(la::product(w.transpose(), q.as_ref()).as_ref());
        q = la::thin_q(la::product(w, z.as_ref()).as_ref());
    }
    let b = la::product(q.transpose(), w); // l x N
    let (bu, s, v) = la::thin_svd(b.as_ref())?;
    Ok(Decomp {
        u: la::product(q.as_ref(), bu.as_ref()),
        s,
        v,
        frob2: la::frob2(w),
        complete: false,
    })
}

/// The whitening factor of a layer's input: the lower Cholesky factor `L` of `C = G / count + damping *
/// mean(diag(G / count)) I`, where `G = sum x x^T` over the `count` input rows (K x K, row-major). With
/// `C = L L^T`, the output error of a replacement weight is `||X (W - W')||_F^2 = count tr((W - W')^T C
/// (W - W'))` (up to the damping) `= count ||L^T (W - W')||_F^2`, so truncating the SVD of `L^T W` minimises it.
pub fn whitening(gram: &[f64], k: usize, count: u64, damping: f64) -> Result<Mat<f64>, String> {
    if count == 0 {
        return Err("no calibration rows".into());
    }
    let c = count as f64;
    let mean_diag = (0..k).map(|i| gram[i * k + i]).sum::<f64>() / k as f64 / c;
    let eps = damping * mean_diag.max(f64::MIN_POSITIVE);
    let mut cov: Vec<f64> = gram.iter().map(|g| g / c).collect();
    for i in 0..k {
        cov[i * k + i] += eps;
    }
    la::cholesky_lower(la::from_row_major(k, k, &cov).as_ref())
        .map_err(|e| format!("the input covariance is {e}"))
}

/// `L^T W` (K x N).
pub fn whiten(l: MatRef<'_, f64>, w: MatRef<'_, f64>) -> Mat<f64> {
    la::product(l.transpose(), w)
}

/// Map a factor `P'` (K x r, row-major) of `L^T W ~ P' Q` back to `P = L^{-T} P'`, so that `W ~ P Q`.
pub fn unwhiten(l: MatRef<'_, f64>, p: &mut [f64], k: usize, r: usize) {
    let mut pm = matrix(k, r, p);
    la::solve_upper_in_place(l.transpose(), pm.as_mut());
    p.copy_from_slice(&la::to_row_major(pm.as_ref()));
}

/// Relative error of the optimal rank-`r` truncation from the exact singular values.
pub fn optimal_error(s: &[f64], r: usize) -> f64 {
    let total: f64 = s.iter().map(|x| x * x).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let tail: f64 = s.iter().skip(r).map(|x| x * x).sum();
    (tail / total).sqrt()
}

/// How the rank of a layer is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Rank(usize),
    /// Fraction of full rank min(K, N).
    Ratio(f64),
    /// Fraction of sum s^2 to keep.
    Energy(f64),
    /// Largest relative Frobenius error allowed.
    MaxError(f64),
}

/// The rank `target` asks for on `d` (at least 1, at most full rank), rounded up to a multiple of `multiple`
/// (capped at full rank). `None` when the decomposition is partial and does not reach the target.
pub fn select(d: &Decomp, full: usize, target: Target, multiple: usize) -> Option<usize> {
    let r = match target {
        Target::Rank(r) => r.min(full),
        Target::Ratio(f) => ((f * full as f64).ceil() as usize).min(full),
        Target::Energy(e) => {
            let want = e * d.frob2;
            let mut acc = 0.0;
            let mut found = None;
            for (i, s) in d.s.iter().enumerate() {
                acc += s * s;
                if acc >= want * (1.0 - 1e-12) {
                    found = Some(i + 1);
                    break;
                }
            }
            match found {
                Some(r) => r,
                None if d.complete => full,
                None => return None,
            }
        }
        Target::MaxError(f) => {
            let found = (0..=d.s.len()).find(|&r| d.rel_error(r) <= f);
            match found {
                Some(r) => r,
                None if d.complete => full,
                None => return None,
            }
        }
    };
    let r = r.max(1);
    let m = multiple.max(1);
    Some((r.div_ceil(m) * m).min(full))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(k: usize, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix(seed);
        // a decaying spectrum: sum of rank-one terms with weights 1/(i+1)
        let mut w = vec![0.0; k * n];
        for t in 0..k.min(n) {
            let a: Vec<f64> = (0..k).map(|_| rng.gauss()).collect();
            let b: Vec<f64> = (0..n).map(|_| rng.gauss()).collect();
            let c = 1.0 / (t as f64 + 1.0).powi(2);
            for i in 0..k {
                for j in 0..n {
                    w[i * n + j] += c * a[i] * b[j];
                }
            }
        }
        w
    }

    #[test]
    fn full_rank_factors_reproduce_the_matrix() {
        let (k, n) = (7, 5);
        let w = sample(k, n, 1);
        let d = exact(matrix(k, n, &w).as_ref()).unwrap();
        let (p, q) = d.factors(5);
        let scale: f64 = w.iter().map(|x| x.abs()).fold(0.0, f64::max);
        for i in 0..k {
            for j in 0..n {
                let x: f64 = (0..5).map(|t| p[i * 5 + t] * q[t * n + j]).sum();
                // f64 SVD backward error: a few hundred eps64 relative to the largest entry
                assert!(
                    (x - w[i * n + j]).abs() <= 1e-12 * scale.max(1.0),
                    "{i},{j}"
                );
            }
        }
        assert!(d.rel_error(5) < 1e-7);
    }

    #[test]
    fn rank_selection() {
        let (k, n) = (20, 12);
        let w = sample(k, n, 2);
        let d = exact(matrix(k, n, &w).as_ref()).unwrap();
        assert_eq!(select(&d, 12, Target::Rank(5), 1), Some(5));
        assert_eq!(select(&d, 12, Target::Rank(5), 4), Some(8));
        assert_eq!(select(&d, 12, Target::Ratio(0.5), 1), Some(6));
        let r = select(&d, 12, Target::Energy(0.9), 1).unwrap();
        assert!(d.energy(r) >= 0.9 && (r == 1 || d.energy(r - 1) < 0.9));
        let r = select(&d, 12, Target::MaxError(0.1), 1).unwrap();
        assert!(d.rel_error(r) <= 0.1 && (r == 0 || d.rel_error(r - 1) > 0.1));
    }

    #[test]
    fn randomized_is_close_to_optimal_and_deterministic() {
        let (k, n) = (120, 90);
        let w = sample(k, n, 3);
        let m = matrix(k, n, &w);
        let s = singular_values(m.as_ref()).unwrap();
        let a = randomized(m.as_ref(), 10, 10, 2, 7).unwrap();
        let b = randomized(m.as_ref(), 10, 10, 2, 7).unwrap();
        assert_eq!(a.s, b.s);
        let opt = optimal_error(&s, 10);
        assert!(
            a.rel_error(10) <= opt * 1.02 + 1e-12,
            "{} vs {opt}",
            a.rel_error(10)
        );
    }
}
