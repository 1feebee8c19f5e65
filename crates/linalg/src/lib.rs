//! Non-generic f64 entry points to faer for onnx-rewrite's `lowrank` pass.
//!
//! faer's routines are generic, so they are compiled in the crate that names them with that crate's
//! optimisation level: called from onnx-rewrite, a debug build (tests) ran its SVDs unoptimised, 30-100x
//! slower. Here they are instantiated once for f64 in a dependency, which the dev profile builds with
//! `opt-level = 2` like every other dependency, and release builds inline as before. Every routine runs
//! sequentially (`Par::Seq`) unless it says otherwise: callers parallelise over matrices.

pub use faer;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// A K x N matrix from row-major data (`data.len() == k * n`).
pub fn from_row_major(k: usize, n: usize, data: &[f64]) -> Mat<f64> {
    assert_eq!(data.len(), k * n, "row-major data of {k}x{n}");
    Mat::from_fn(k, n, |i, j| data[i * n + j])
}

/// The entries of `a`, row-major.
pub fn to_row_major(a: MatRef<'_, f64>) -> Vec<f64> {
    let (r, c) = (a.nrows(), a.ncols());
    let mut out = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            out.push(a[(i, j)]);
        }
    }
    out
}

/// Every entry is finite.
pub fn is_finite(a: MatRef<'_, f64>) -> bool {
    (0..a.ncols()).all(|j| (0..a.nrows()).all(|i| a[(i, j)].is_finite()))
}

/// ||a||_F^2.
pub fn frob2(a: MatRef<'_, f64>) -> f64 {
    let mut acc = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            acc += a[(i, j)] * a[(i, j)];
        }
    }
    acc
}

/// `a b`.
pub fn product(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
    out
}

/// Thin SVD `a = U diag(s) V^T` (U: K x m, V: N x m, m = min(K, N), s non-increasing), with faer's global
/// parallelism.
pub fn thin_svd(a: MatRef<'_, f64>) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>), String> {
    let svd = a
        .thin_svd()
        .map_err(|e| format!("SVD did not converge ({e:?})"))?;
    let m = a.nrows().min(a.ncols());
    let s = (0..m).map(|i| svd.S().column_vector()[i]).collect();
    Ok((svd.U().to_owned(), s, svd.V().to_owned()))
}

/// The singular values of `a`, non-increasing, with faer's global parallelism.
pub fn singular_values(a: MatRef<'_, f64>) -> Result<Vec<f64>, String> {
    a.singular_values()
        .map_err(|e| format!("SVD did not converge ({e:?})"))
}

/// The thin Q factor of `a = Q R` (orthonormal columns).
pub fn thin_q(a: MatRef<'_, f64>) -> Mat<f64> {
    a.qr().compute_thin_Q()
}

/// The lower Cholesky factor `L` of a symmetric positive definite `c = L L^T`.
pub fn cholesky_lower(c: MatRef<'_, f64>) -> Result<Mat<f64>, String> {
    let llt = c
        .llt(faer::Side::Lower)
        .map_err(|e| format!("not positive definite ({e:?})"))?;
    Ok(llt.L().to_owned())
}

/// Solve `u x = b` in place (`u` upper triangular, `b` overwritten by `x`).
pub fn solve_upper_in_place(u: MatRef<'_, f64>, b: MatMut<'_, f64>) {
    faer::linalg::triangular_solve::solve_upper_triangular_in_place(u, b, Par::Seq);
}

/// `a[:, ..r] diag(scale)`, row-major (K x r).
pub fn scaled_columns(a: MatRef<'_, f64>, r: usize, scale: &[f64]) -> Vec<f64> {
    let k = a.nrows();
    let mut out = vec![0.0; k * r];
    for i in 0..k {
        for j in 0..r {
            out[i * r + j] = a[(i, j)] * scale[j];
        }
    }
    out
}

/// `diag(scale) a[:, ..r]^T`, row-major (r x N).
pub fn scaled_columns_t(a: MatRef<'_, f64>, r: usize, scale: &[f64]) -> Vec<f64> {
    let n = a.nrows();
    let mut out = vec![0.0; r * n];
    for i in 0..r {
        for j in 0..n {
            out[i * n + j] = scale[i] * a[(j, i)];
        }
    }
    out
}

/// Add `sum_rows x x^T` to `gram` (K x K, row-major) for the rows of `values` (row-major, K per row) whose
/// entries are all finite; returns how many rows were added. The rows are gathered in f64 and multiplied as
/// one `X^T X` product (sequential, so the sums do not depend on the thread count).
pub fn add_gram(gram: &mut [f64], k: usize, values: &[f32]) -> u64 {
    assert_eq!(gram.len(), k * k, "gram of {k}x{k}");
    if k == 0 {
        return 0;
    }
    let rows: Vec<&[f32]> = values
        .chunks_exact(k)
        .filter(|r| r.iter().all(|v| v.is_finite()))
        .collect();
    if rows.is_empty() {
        return 0;
    }
    let x = Mat::from_fn(rows.len(), k, |i, j| f64::from(rows[i][j]));
    let mut g = from_row_major(k, k, gram);
    matmul(
        g.as_mut(),
        Accum::Add,
        x.transpose(),
        x.as_ref(),
        1.0,
        Par::Seq,
    );
    gram.copy_from_slice(&to_row_major(g.as_ref()));
    rows.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd_reconstructs() {
        let a = from_row_major(3, 2, &[3.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
        let (u, s, v) = thin_svd(a.as_ref()).unwrap();
        assert!((s[0] - 3.0).abs() < 1e-12 && (s[1] - 2.0).abs() < 1e-12);
        let us = Mat::from_fn(3, 2, |i, j| u[(i, j)] * s[j]);
        let back = product(us.as_ref(), v.transpose());
        for (x, y) in to_row_major(back.as_ref())
            .iter()
            .zip(to_row_major(a.as_ref()))
        {
            assert!((x - y).abs() < 1e-12);
        }
        assert_eq!(singular_values(a.as_ref()).unwrap().len(), 2);
    }

    #[test]
    fn gram_adds_finite_rows() {
        let mut g = vec![1.0; 4];
        let n = add_gram(&mut g, 2, &[1.0, 2.0, f32::NAN, 1.0, 3.0, -1.0]);
        assert_eq!(n, 2);
        // 1 + [1 2]^T [1 2] + [3 -1]^T [3 -1]
        assert_eq!(g, vec![11.0, 0.0, 0.0, 6.0]);
    }
}
