//! Calibration: the `Calibrator` trait (an executor that runs a model on sample inputs with chosen intermediate
//! tensors exposed) and the streaming statistics that activations are folded into.
//!
//! The quantize pass does not know how a model is run: it asks a `Calibrator` (implemented with tract in
//! `crate::validate::TractCalibrator`) to stream every requested tensor of every sample into an `Observer`.
//! `collect_stats` does that with a `StatsCollector`, which keeps per tensor a `MinMax` and optionally a
//! `Histogram`. Each batch is folded in as soon as it is produced and then dropped, so memory stays bounded by
//! one sample's activations plus the fixed-size statistics, never by samples x activations.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Model;

/// Receives the values of one exposed tensor for one sample. Values are given as f32 whatever the tensor's
/// type (integer and f16 activations are widened).
pub trait Observer {
    fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<()>;

    /// The same with the tensor's dims (row-major); calibrators that know them call this one. Observers that
    /// need per-channel statistics (bias correction) override it.
    fn observe_shaped(&mut self, tensor: &str, _dims: &[usize], values: &[f32]) -> Result<()> {
        self.observe(tensor, values)
    }
}

impl<F: FnMut(&str, &[f32]) -> Result<()>> Observer for F {
    fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<()> {
        self(tensor, values)
    }
}

/// An executor for calibration. `calibrate` runs `model` once per sample (the samples are the calibrator's
/// own: files, a folder or seeded random inputs), exposing every tensor named in `tensors` (graph inputs,
/// intermediate values or outputs of the main graph) and calls `observer.observe` for each of them as soon as
/// the sample has run. It returns the number of samples run.
///
/// Contract: a tensor name that does not exist in the model is an error naming it; an implementation never
/// keeps more than one sample's exposed tensors alive at once.
pub trait Calibrator {
    fn calibrate(
        &mut self,
        model: &Model,
        tensors: &[String],
        observer: &mut dyn Observer,
    ) -> Result<usize>;
}

/// Running minimum and maximum (NaNs are counted apart and ignored for the range).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MinMax {
    pub min: f32,
    pub max: f32,
    /// Number of finite-or-infinite (non-NaN) values seen.
    pub count: u64,
    pub nan_count: u64,
}

impl Default for MinMax {
    fn default() -> Self {
        MinMax {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            nan_count: 0,
        }
    }
}

impl MinMax {
    pub fn update(&mut self, values: &[f32]) {
        // 16 independent lanes (the compiler turns them into vector min / max / compare): a NaN compares
        // false, so it never becomes an end of the range, and is counted apart (u32 lanes, emptied every 2^30
        // chunks so they cannot overflow)
        const L: usize = 16;
        let mut lo = [self.min; L];
        let mut hi = [self.max; L];
        let mut nans = 0u64;
        let chunks = values.chunks_exact(L);
        let tail = chunks.remainder();
        let body = &values[..values.len() - tail.len()];
        for block in body.chunks(L << 30) {
            let mut nan = [0u32; L];
            for c in block.chunks_exact(L) {
                let c: &[f32; L] = c.try_into().expect("chunks of L");
                for j in 0..L {
                    let v = c[j];
                    lo[j] = if v < lo[j] { v } else { lo[j] };
                    hi[j] = if v > hi[j] { v } else { hi[j] };
                    nan[j] += u32::from(v.is_nan());
                }
            }
            nans += nan.iter().map(|n| u64::from(*n)).sum::<u64>();
        }
        // lanes that saw nothing still hold the old range, which folds back unchanged
        for v in lo {
            if v < self.min {
                self.min = v;
            }
        }
        for v in hi {
            if v > self.max {
                self.max = v;
            }
        }
        for &v in tail {
            if v < self.min {
                self.min = v;
            }
            if v > self.max {
                self.max = v;
            }
        }
        nans += tail.iter().filter(|v| v.is_nan()).count() as u64;
        self.nan_count += nans;
        self.count += values.len() as u64 - nans;
    }

    /// The range seen, or `None` when no (non-NaN) value was seen.
    pub fn range(&self) -> Option<(f32, f32)> {
        (self.count > 0).then_some((self.min, self.max))
    }

    /// The largest magnitude seen (0 when nothing was seen).
    pub fn abs_max(&self) -> f32 {
        match self.range() {
            Some((lo, hi)) => lo.abs().max(hi.abs()),
            None => 0.0,
        }
    }
}

/// A streaming histogram over a symmetric range `[-limit, limit]` with a fixed number of bins. The range is not
/// known in advance: it starts at the first batch's largest magnitude and doubles (merging bins pairwise, which
/// is exact) whenever a later value falls outside. Memory is `bins` counters whatever the number of samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    /// Half width of the covered range; bins are `2 * limit / bins.len()` wide.
    pub limit: f32,
    pub bins: Vec<u64>,
    /// Values that were NaN (not binned).
    pub nan_count: u64,
}

impl Histogram {
    /// `bins` is rounded up to a multiple of 4 (so that doubling the range merges whole bin pairs) and is at
    /// least 4.
    pub fn new(bins: usize) -> Histogram {
        let n = bins.max(4).div_ceil(4) * 4;
        Histogram {
            limit: 0.0,
            bins: vec![0; n],
            nan_count: 0,
        }
    }

    pub fn total(&self) -> u64 {
        self.bins.iter().sum()
    }

    fn width(&self) -> f32 {
        2.0 * self.limit / self.bins.len() as f32
    }

    /// Double the range, merging bins pairwise into the middle half.
    fn widen(&mut self) {
        let n = self.bins.len();
        let mut merged = vec![0u64; n];
        for (i, c) in self.bins.iter().enumerate() {
            merged[n / 4 + i / 2] += c;
        }
        self.bins = merged;
        self.limit *= 2.0;
    }

    pub fn update(&mut self, values: &[f32]) {
        // largest finite magnitude, in 16 lanes (vector compares)
        const L: usize = 16;
        let mut lanes = [0f32; L];
        let chunks = values.chunks_exact(L);
        let tail = chunks.remainder();
        for c in chunks {
            let c: &[f32; L] = c.try_into().expect("chunks of L");
            for j in 0..L {
                let a = c[j].abs();
                lanes[j] = if a > lanes[j] && a < f32::INFINITY {
                    a
                } else {
                    lanes[j]
                };
            }
        }
        let mut abs_max = 0f32;
        for a in lanes.into_iter().chain(tail.iter().map(|v| v.abs())) {
            if a > abs_max && a < f32::INFINITY {
                abs_max = a;
            }
        }
        if self.limit == 0.0 {
            if abs_max == 0.0 {
                // Only zeros (or nothing finite) so far: keep a tiny range, it widens on the first real value.
                self.limit = f32::MIN_POSITIVE * self.bins.len() as f32;
            } else {
                self.limit = abs_max;
            }
        }
        while abs_max > self.limit {
            self.widen();
        }
        let n = self.bins.len();
        let w = self.width();
        let lim = self.limit;
        // bin indices a block at a time (a vector loop; a NaN goes to the extra slot n), then counted into 4
        // interleaved copies of the bins so that runs of equal values (the zeros after a Relu) do not wait on
        // one counter; the copies are summed at the end: the same counts as one pass value by value
        const B: usize = 64;
        let mut idx = [0usize; B];
        let mut copies = vec![0u64; 4 * (n + 1)];
        for block in values.chunks(B) {
            for (slot, &v) in idx.iter_mut().zip(block) {
                let x = v.clamp(-lim, lim);
                let i = (((x + lim) / w) as usize).min(n - 1);
                *slot = if v.is_nan() { n } else { i };
            }
            for (j, &i) in idx[..block.len()].iter().enumerate() {
                copies[(j & 3) * (n + 1) + i] += 1;
            }
        }
        for c in copies.chunks_exact(n + 1) {
            for (b, k) in self.bins.iter_mut().zip(c) {
                *b += k;
            }
            self.nan_count += c[n];
        }
    }

    /// The value below which a fraction `q` (0..=1) of the binned values lie (upper edge of that bin).
    pub fn quantile(&self, q: f64) -> Option<f32> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let want = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        let w = self.width();
        for (i, c) in self.bins.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(-self.limit + (i + 1) as f32 * w);
            }
        }
        Some(self.limit)
    }

    /// A symmetric clipping threshold keeping `percentile` (e.g. 99.99) percent of the magnitudes.
    pub fn abs_percentile(&self, percentile: f64) -> Option<f32> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let n = self.bins.len();
        let w = self.width();
        let want = (percentile / 100.0).clamp(0.0, 1.0) * total as f64;
        // Bins symmetric around zero: walk outwards from the centre pairing bin n/2-1-k with n/2+k.
        let mut seen = 0u64;
        for k in 0..n / 2 {
            seen += self.bins[n / 2 - 1 - k] + self.bins[n / 2 + k];
            if seen as f64 >= want {
                return Some((k + 1) as f32 * w);
            }
        }
        Some(self.limit)
    }
}

/// What to keep per tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsOptions {
    /// Number of histogram bins; 0 keeps min/max only.
    pub histogram_bins: usize,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            histogram_bins: 2048,
        }
    }
}

/// The statistics of one tensor over all samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorStats {
    pub minmax: MinMax,
    pub histogram: Option<Histogram>,
    /// Number of samples (batches) folded in.
    pub batches: u64,
}

/// An `Observer` folding each batch into `TensorStats` at once.
#[derive(Clone, Debug, Default)]
pub struct StatsCollector {
    pub options: StatsOptions,
    pub stats: BTreeMap<String, TensorStats>,
}

impl StatsCollector {
    pub fn new(options: StatsOptions) -> StatsCollector {
        StatsCollector {
            options,
            stats: BTreeMap::new(),
        }
    }
}

impl Observer for StatsCollector {
    fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<()> {
        let bins = self.options.histogram_bins;
        let s = self
            .stats
            .entry(tensor.to_string())
            .or_insert_with(|| TensorStats {
                minmax: MinMax::default(),
                histogram: (bins > 0).then(|| Histogram::new(bins)),
                batches: 0,
            });
        s.minmax.update(values);
        if let Some(h) = &mut s.histogram {
            h.update(values);
        }
        s.batches += 1;
        Ok(())
    }
}

/// Run `calibrator` over `model` and return the statistics of every tensor in `tensors`. A requested tensor
/// that produced no data is an error (a calibrator that silently skipped it would give a wrong range).
pub fn collect_stats(
    calibrator: &mut dyn Calibrator,
    model: &Model,
    tensors: &[String],
    options: StatsOptions,
) -> Result<BTreeMap<String, TensorStats>> {
    let mut collector = StatsCollector::new(options);
    let samples = calibrator.calibrate(model, tensors, &mut collector)?;
    if samples == 0 {
        return Err(Error::Validate("calibration ran on no samples".to_string()));
    }
    for t in tensors {
        if !collector.stats.contains_key(t) {
            return Err(Error::Validate(format!(
                "calibration produced no values for tensor '{t}'"
            )));
        }
    }
    Ok(collector.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_streams() {
        let mut m = MinMax::default();
        assert_eq!(m.range(), None);
        m.update(&[1.0, -2.0, f32::NAN]);
        m.update(&[3.0]);
        assert_eq!(m.range(), Some((-2.0, 3.0)));
        assert_eq!(m.nan_count, 1);
        assert_eq!(m.abs_max(), 3.0);
    }

    /// The lane-wise update gives the range a plain scan gives, NaNs counted apart, for every length around the
    /// lane width and NaNs / infinities anywhere.
    #[test]
    fn minmax_lanes_match_a_plain_scan() {
        for n in [0usize, 1, 15, 16, 17, 33, 100] {
            for nan_at in [None, Some(0), Some(n / 2), Some(n.saturating_sub(1))] {
                let mut v: Vec<f32> = (0..n)
                    .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.5)
                    .collect();
                if n > 3 {
                    v[n / 3] = f32::NEG_INFINITY;
                }
                if let Some(i) = nan_at.filter(|i| *i < n) {
                    v[i] = f32::NAN;
                }
                let finite: Vec<f32> = v.iter().copied().filter(|x| !x.is_nan()).collect();
                let mut m = MinMax::default();
                m.update(&v[..n / 2]);
                m.update(&v[n / 2..]);
                assert_eq!(m.count, finite.len() as u64, "n={n}");
                assert_eq!(m.nan_count, (n - finite.len()) as u64, "n={n}");
                let want = finite
                    .iter()
                    .fold(None, |r: Option<(f32, f32)>, &x| match r {
                        None => Some((x, x)),
                        Some((a, b)) => Some((a.min(x), b.max(x))),
                    });
                assert_eq!(m.range(), want, "n={n} nan_at={nan_at:?}");
            }
        }
    }

    /// `Histogram::update` as one plain pass, value by value: the blocked, lane-wise update must give the same
    /// limit, bins and NaN count.
    fn plain_update(h: &mut Histogram, values: &[f32]) {
        let mut abs_max = 0f32;
        for &v in values {
            if v.is_finite() {
                abs_max = abs_max.max(v.abs());
            }
        }
        if h.limit == 0.0 {
            h.limit = if abs_max == 0.0 {
                f32::MIN_POSITIVE * h.bins.len() as f32
            } else {
                abs_max
            };
        }
        while abs_max > h.limit {
            h.widen();
        }
        let n = h.bins.len();
        let w = h.width();
        for &v in values {
            if v.is_nan() {
                h.nan_count += 1;
                continue;
            }
            let x = v.clamp(-h.limit, h.limit);
            h.bins[(((x + h.limit) / w) as usize).min(n - 1)] += 1;
        }
    }

    #[test]
    fn histogram_update_matches_a_plain_pass() {
        let vals = |n: usize, salt: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| match (i * 7 + salt) % 11 {
                    0 | 1 | 2 => 0.0, // runs of zeros, as after a Relu
                    3 if i % 5 == 0 => f32::NAN,
                    4 if i % 7 == 0 => f32::INFINITY,
                    5 if i % 9 == 0 => -f32::INFINITY,
                    _ => (((i * 2654435761 + salt) % 10007) as f32 / 10007.0 - 0.4) * scale,
                })
                .collect()
        };
        for bins in [8, 64, 2048] {
            let mut a = Histogram::new(bins);
            let mut b = Histogram::new(bins);
            // the range widens between batches; lengths around the lane and block widths
            for (k, (n, scale)) in [
                (0, 1.0),
                (1, 0.0),
                (15, 1.0),
                (64, 1.0),
                (65, 3.0),
                (1000, 0.5),
                (4099, 40.0),
            ]
            .into_iter()
            .enumerate()
            {
                let v = vals(n, k, scale);
                a.update(&v);
                plain_update(&mut b, &v);
                assert_eq!(a, b, "bins={bins} batch {k}");
            }
            assert!(a.total() > 0 && a.nan_count > 0);
        }
    }

    #[test]
    fn histogram_widens_exactly() {
        let mut h = Histogram::new(8);
        h.update(&[-1.0, -0.1, 0.1, 0.6]);
        assert_eq!(h.limit, 1.0);
        assert_eq!(h.total(), 4);
        h.update(&[3.5]);
        assert_eq!(h.limit, 4.0);
        assert_eq!(h.total(), 5);
        // the widened histogram equals one built in a single pass over the same range
        let mut one = Histogram::new(8);
        one.limit = 4.0;
        one.update(&[-1.0, -0.1, 0.1, 0.6, 3.5]);
        assert_eq!(h.bins, one.bins);
        assert_eq!(h.abs_percentile(100.0), Some(4.0));
        assert!(h.abs_percentile(50.0).unwrap() <= 1.0);
        assert!(h.quantile(1.0).unwrap() >= 3.5);
    }

    #[test]
    fn collector_folds_batches() {
        let mut c = StatsCollector::new(StatsOptions { histogram_bins: 16 });
        c.observe("a", &[1.0, 2.0]).unwrap();
        c.observe("a", &[-5.0]).unwrap();
        let s = &c.stats["a"];
        assert_eq!(s.batches, 2);
        assert_eq!(s.minmax.range(), Some((-5.0, 2.0)));
        assert_eq!(s.histogram.as_ref().unwrap().total(), 3);
    }
}
