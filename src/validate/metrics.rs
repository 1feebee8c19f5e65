//! Drift metrics between a reference and a candidate tensor, accumulated in f64 over every sample (so memory is
//! bounded by one sample) and finished into `Metrics`.
//!
//! Definitions (over all elements of all samples, a = reference, b = candidate):
//! - `max_abs` = max |a - b|, `mean_abs` = mean |a - b|;
//! - `cosine` = a.b / (|a| |b|) (1 when both are all zero, 0 when exactly one is);
//! - `sqnr_db` = 10 log10(sum a^2 / sum (a - b)^2) (+inf when identical, -inf when a is all zero and b is not);
//! - centred measures, which an offset shared by both tensors cannot hide (an output around 65 with a spread of 3
//!   keeps cosine > 0.99 and SQNR > 20 dB even when the candidate is garbage): with ma, mb the means of a and b,
//!   `pearson` = sum (a - ma)(b - mb) / sqrt(sum (a - ma)^2 sum (b - mb)^2) (0 when b is constant and a is not),
//!   `sqnr_centered_db` = 10 log10(sum (a - ma)^2 / sum (a - b)^2): the noise is still the whole error (an
//!   offset in the candidate is drift), only the signal is the reference's variance instead of its power. Both
//!   are `None` when the reference is constant (zero variance, e.g. a scalar output or an all-zero mask): they
//!   are undefined there, and the raw `sqnr_db` / `max_abs` checks are what judge such an output. Since
//!   sum a^2 >= sum (a - ma)^2, `sqnr_db` >= `sqnr_centered_db` always;
//! - for classifier-like outputs (float, rank <= 2 once leading 1-dims are dropped, last dim >= 2: each row
//!   along the last axis is one prediction): `top1` = fraction of rows whose argmax agrees; `top5` (last dim >
//!   5) = fraction of rows whose reference argmax is among the candidate's five largest.
//!
//! Positions where both values are the same non-finite value (both NaN, or the same infinity) count as equal; a
//! position where only one is non-finite, or they differ, is counted in `nonfinite_mismatches` (and left out of
//! the sums). Any such mismatch fails the comparison.

use serde::Serialize;

pub use crate::json::{ser_f64, ser_opt_f64};

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
    /// Pearson correlation (centred cosine); `None` when the reference is constant.
    #[serde(serialize_with = "ser_opt_f64")]
    pub pearson: Option<f64>,
    /// SQNR in dB against the reference's variance; `None` when the reference is constant.
    #[serde(serialize_with = "ser_opt_f64")]
    pub sqnr_centered_db: Option<f64>,
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
    /// Centred moments over the finite pairs (merged sample by sample with Chan et al.'s update, so a large
    /// offset does not cancel catastrophically as it would in sum a^2 - n ma^2).
    mom: Moments,
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

/// Count, means and centred second moments of the pairs (a, b).
#[derive(Clone, Debug, Default)]
struct Moments {
    n: u64,
    ma: f64,
    mb: f64,
    /// sum (a - ma)^2, sum (b - mb)^2, sum (a - ma)(b - mb)
    saa: f64,
    sbb: f64,
    sab: f64,
}

impl Moments {
    /// Two-pass moments of the pairs of one sample where both values are finite (no copy of the data).
    fn of(a: &[f32], b: &[f32]) -> Moments {
        let finite = || {
            a.iter()
                .zip(b)
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| (*x as f64, *y as f64))
        };
        let (n, sa, sb) =
            finite().fold((0u64, 0.0, 0.0), |(n, x, y), (p, q)| (n + 1, x + p, y + q));
        if n == 0 {
            return Moments::default();
        }
        let (ma, mb) = (sa / n as f64, sb / n as f64);
        let mut m = Moments {
            n,
            ma,
            mb,
            ..Default::default()
        };
        for (x, y) in finite() {
            let (da, db) = (x - ma, y - mb);
            m.saa += da * da;
            m.sbb += db * db;
            m.sab += da * db;
        }
        m
    }

    /// Merge another chunk (Chan, Golub, LeVeque: pairwise update of means and co-moments).
    fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = o.clone();
            return;
        }
        let (n1, n2) = (self.n as f64, o.n as f64);
        let n = n1 + n2;
        let (da, db) = (o.ma - self.ma, o.mb - self.mb);
        self.saa += o.saa + da * da * n1 * n2 / n;
        self.sbb += o.sbb + db * db * n1 * n2 / n;
        self.sab += o.sab + da * db * n1 * n2 / n;
        self.ma += da * n2 / n;
        self.mb += db * n2 / n;
        self.n += o.n;
    }
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
        self.mom.merge(&Moments::of(a, b));
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
        // Centred measures: undefined for a constant reference (see the module docs). A variance that is only
        // rounding (every reference value equal in f32 gives exactly 0 here: the two-pass chunk means are exact
        // for equal values) is treated as zero.
        let m = &self.mom;
        let (pearson, sqnr_centered_db) = if m.saa > 0.0 {
            let p = if m.sbb == 0.0 {
                0.0
            } else {
                (m.sab / (m.saa.sqrt() * m.sbb.sqrt())).clamp(-1.0, 1.0)
            };
            let s = if self.ee == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (m.saa / self.ee).log10()
            };
            (Some(p), Some(s))
        } else {
            (None, None)
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
            pearson,
            sqnr_centered_db,
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

    /// Deterministic pseudo-random values in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn an_offset_hides_garbage_from_raw_metrics_but_not_from_centred_ones() {
        // reference: 65 + 3 * signal; candidate: 65 + 3 * unrelated signal (the permuted-weights failure)
        let (s, t) = (noise(4096, 1), noise(4096, 2));
        let a: Vec<f32> = s.iter().map(|v| 65.0 + 3.0 * v).collect();
        let b: Vec<f32> = t.iter().map(|v| 65.0 + 3.0 * v).collect();
        let mut acc = Acc::default();
        acc.add(&a, &b, None);
        let m = acc.finish();
        assert!(m.cosine > 0.99 && m.sqnr_db > 20.0, "{m:?}");
        assert!(m.pearson.unwrap().abs() < 0.1, "{m:?}");
        assert!(m.sqnr_centered_db.unwrap() < 0.0, "{m:?}");
        assert!(m.sqnr_db >= m.sqnr_centered_db.unwrap());
        // a small relative perturbation keeps both high
        let c: Vec<f32> = a.iter().zip(&t).map(|(x, n)| x + 0.01 * n).collect();
        let mut acc = Acc::default();
        acc.add(&a, &c, None);
        let m = acc.finish();
        assert!(m.pearson.unwrap() > 0.999, "{m:?}");
        assert!(m.sqnr_centered_db.unwrap() > 40.0, "{m:?}");
    }

    #[test]
    fn centred_moments_merge_exactly_across_samples() {
        // Chunked (one sample at a time) equals one pass over everything up to f64 rounding: sums of n = 3000
        // centred terms, each rounded at the scale of the offset (1000) while the spread is ~1, differ by at
        // most about n eps64 * 1000 = 3.3e-10 relative; 1e-9 bounds that.
        let a: Vec<f32> = noise(3000, 3).iter().map(|v| 1000.0 + v).collect();
        let b: Vec<f32> = noise(3000, 4)
            .iter()
            .zip(&a)
            .map(|(n, x)| x + 0.1 * n)
            .collect();
        let mut one = Acc::default();
        one.add(&a, &b, None);
        let mut parts = Acc::default();
        for (ca, cb) in a.chunks(700).zip(b.chunks(700)) {
            parts.add(ca, cb, None);
        }
        let (m1, m2) = (one.finish(), parts.finish());
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(1.0);
        assert!(
            close(m1.pearson.unwrap(), m2.pearson.unwrap()),
            "{m1:?} {m2:?}"
        );
        assert!(
            close(m1.sqnr_centered_db.unwrap(), m2.sqnr_centered_db.unwrap()),
            "{m1:?} {m2:?}"
        );
        // against the textbook definition
        let n = a.len() as f64;
        let ma = a.iter().map(|x| *x as f64).sum::<f64>() / n;
        let mb = b.iter().map(|x| *x as f64).sum::<f64>() / n;
        let (mut saa, mut sbb, mut sab, mut ee) = (0.0, 0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (*x as f64, *y as f64);
            saa += (x - ma) * (x - ma);
            sbb += (y - mb) * (y - mb);
            sab += (x - ma) * (y - mb);
            ee += (x - y) * (x - y);
        }
        assert!(close(m2.pearson.unwrap(), sab / (saa * sbb).sqrt()));
        assert!(close(
            m2.sqnr_centered_db.unwrap(),
            10.0 * (saa / ee).log10()
        ));
    }

    #[test]
    fn constant_reference_has_no_centred_measures() {
        let mut acc = Acc::default();
        acc.add(&[2.5; 8], &[2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.6], None);
        let m = acc.finish();
        assert_eq!((m.pearson, m.sqnr_centered_db), (None, None));
        assert!(m.sqnr_db.is_finite());
        // a constant candidate against a varying reference: no correlation
        let mut acc = Acc::default();
        acc.add(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0], None);
        let m = acc.finish();
        assert_eq!(m.pearson, Some(0.0));
        assert!((m.sqnr_centered_db.unwrap() - 10.0 * (2.0f64 / 2.0).log10()).abs() < 1e-12);
    }
}
