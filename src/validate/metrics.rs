//! Drift metrics between a reference and a candidate tensor, accumulated in f64 over every sample (so memory is
//! bounded by one sample) and finished into `Metrics`.
//!
//! Definitions (over all elements of all samples, a = reference, b = candidate):
//! - `max_abs` = max |a - b|, `mean_abs` = mean |a - b|;
//! - `cosine` = a.b / (|a| |b|) (1 when both are all zero, 0 when exactly one is);
//! - `sqnr_db` = 10 log10(sum a^2 / sum (a - b)^2) (+inf when identical, -inf when a is all zero and b is not);
//! - for classifier-like outputs (float, rank <= 2 once leading 1-dims are dropped, last dim >= 2: each row
//!   along the last axis is one prediction): `top1` = fraction of rows whose argmax agrees; `top5` (last dim >
//!   5) = fraction of rows whose reference argmax is among the candidate's five largest.
//!
//! Positions where both values are the same non-finite value (both NaN, or the same infinity) count as equal; a
//! position where only one is non-finite, or they differ, is counted in `nonfinite_mismatches` (and left out of
//! the sums). Any such mismatch fails the comparison.

use serde::{Serialize, Serializer};

/// Serialize an f64 so JSON stays valid and stable: finite numbers as numbers, others as "inf", "-inf", "nan".
pub fn ser_f64<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("nan")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

pub fn ser_opt_f64<S: Serializer>(v: &Option<f64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser_f64(v, s),
        None => s.serialize_none(),
    }
}

/// The metrics of one tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Elements compared (all samples).
    pub elements: u64,
    #[serde(serialize_with = "ser_f64")]
    pub max_abs: f64,
    #[serde(serialize_with = "ser_f64")]
    pub mean_abs: f64,
    #[serde(serialize_with = "ser_f64")]
    pub cosine: f64,
    #[serde(serialize_with = "ser_f64")]
    pub sqnr_db: f64,
    /// Rows compared for top-k (0 when the tensor is not classifier-like).
    pub rows: u64,
    #[serde(serialize_with = "ser_opt_f64")]
    pub top1: Option<f64>,
    #[serde(serialize_with = "ser_opt_f64")]
    pub top5: Option<f64>,
    pub nonfinite_mismatches: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Acc {
    n: u64,
    sum_abs: f64,
    max_abs: f64,
    dot: f64,
    aa: f64,
    bb: f64,
    ee: f64,
    nonfinite: u64,
    rows: u64,
    top1: u64,
    top5: u64,
    topk_classes: usize,
}

/// Classifier-like: rank <= 2 once leading 1-dims are dropped and the last dim is >= 2. Returns the class count.
pub(crate) fn classifier_classes(shape: &[usize], is_float: bool) -> Option<usize> {
    if !is_float {
        return None;
    }
    let first = shape.iter().position(|d| *d != 1).unwrap_or(shape.len());
    let rest = &shape[first..];
    let c = *shape.last()?;
    (rest.len() <= 2 && c >= 2).then_some(c)
}

pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] || (row[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}

/// Indices of the five largest values, largest first (ties: lower index first).
pub(crate) fn top5(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&i, &j| {
        row[j]
            .partial_cmp(&row[i])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(i.cmp(&j))
    });
    idx.truncate(5);
    idx
}

impl Acc {
    /// Fold one sample. `a` and `b` have the same length; `classes` is set for classifier-like tensors.
    pub fn add(&mut self, a: &[f32], b: &[f32], classes: Option<usize>) {
        for (&x, &y) in a.iter().zip(b) {
            if !x.is_finite() || !y.is_finite() {
                let same = (x.is_nan() && y.is_nan()) || x == y;
                if same {
                    self.n += 1;
                } else {
                    self.nonfinite += 1;
                }
                continue;
            }
            let (x, y) = (x as f64, y as f64);
            let e = (x - y).abs();
            self.n += 1;
            self.sum_abs += e;
            if e > self.max_abs {
                self.max_abs = e;
            }
            self.dot += x * y;
            self.aa += x * x;
            self.bb += y * y;
            self.ee += e * e;
        }
        if let Some(c) = classes {
            self.topk_classes = c;
            for (ra, rb) in a.chunks_exact(c).zip(b.chunks_exact(c)) {
                self.rows += 1;
                let t = argmax(ra);
                if argmax(rb) == t {
                    self.top1 += 1;
                }
                if top5(rb).contains(&t) {
                    self.top5 += 1;
                }
            }
        }
    }

    pub fn finish(&self) -> Metrics {
        let cosine = if self.aa == 0.0 && self.bb == 0.0 {
            1.0
        } else if self.aa == 0.0 || self.bb == 0.0 {
            0.0
        } else {
            (self.dot / (self.aa.sqrt() * self.bb.sqrt())).clamp(-1.0, 1.0)
        };
        let sqnr_db = if self.ee == 0.0 {
            f64::INFINITY
        } else if self.aa == 0.0 {
            f64::NEG_INFINITY
        } else {
            10.0 * (self.aa / self.ee).log10()
        };
        let rows = self.rows;
        Metrics {
            elements: self.n + self.nonfinite,
            max_abs: self.max_abs,
            mean_abs: if self.n > 0 {
                self.sum_abs / self.n as f64
            } else {
                0.0
            },
            cosine,
            sqnr_db,
            rows,
            top1: (rows > 0).then(|| self.top1 as f64 / rows as f64),
            top5: (rows > 0 && self.topk_classes > 5).then(|| self.top5 as f64 / rows as f64),
            nonfinite_mismatches: self.nonfinite,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_is_zero_drift() {
        let mut acc = Acc::default();
        let a = [1.0f32, -2.0, 3.0, 0.5, 9.0, 1.0];
        acc.add(&a, &a, Some(6));
        let m = acc.finish();
        assert_eq!(m.max_abs, 0.0);
        assert_eq!(m.cosine, 1.0);
        assert!(m.sqnr_db.is_infinite() && m.sqnr_db > 0.0);
        assert_eq!(m.top1, Some(1.0));
        assert_eq!(m.top5, Some(1.0));
    }

    #[test]
    fn flipped_sign() {
        let mut acc = Acc::default();
        acc.add(&[1.0, 2.0], &[-1.0, -2.0], Some(2));
        let m = acc.finish();
        assert!((m.cosine + 1.0).abs() < 1e-12);
        assert!((m.sqnr_db - 10.0 * (5.0f64 / 20.0).log10()).abs() < 1e-12);
        assert_eq!(m.top1, Some(0.0));
        assert_eq!(m.top5, None);
    }

    #[test]
    fn classifier_shapes() {
        assert_eq!(classifier_classes(&[1, 10], true), Some(10));
        assert_eq!(classifier_classes(&[4, 10], true), Some(10));
        assert_eq!(classifier_classes(&[1, 3, 8, 8], true), None);
        assert_eq!(classifier_classes(&[1, 10], false), None);
    }
}
