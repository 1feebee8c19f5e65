//! From calibration statistics to quantization parameters: the clipping range of an activation (MinMax,
//! Percentile, Entropy) and the scale / zero point of a range for int8 or uint8.

use crate::passes::quantize::calibrate::{Histogram, TensorStats};

/// How an activation's clipping range is chosen from its statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    /// The full range seen.
    MinMax,
    /// Clip symmetric magnitudes at this percentile (e.g. 99.999) of all values seen.
    Percentile(f64),
    /// The threshold minimising the KL divergence between the magnitude histogram and its 128-level
    /// quantization into 128 levels (256 for a non-negative tensor): TensorRT's entropy calibration.
    Entropy,
}

/// The clipping range of one tensor; `None` when nothing (non-NaN) was seen.
pub fn clip_range(stats: &TensorStats, method: RangeMethod) -> Option<(f32, f32)> {
    let (lo, hi) = stats.minmax.range()?;
    if too_few_for_histogram(stats) {
        return Some((lo, hi));
    }
    let t = match method {
        RangeMethod::MinMax => return Some((lo, hi)),
        RangeMethod::Percentile(p) => stats.histogram.as_ref()?.abs_percentile(p)?,
        RangeMethod::Entropy => {
            // a one-sided (non-negative) tensor spends all 256 levels of uint8 on [0, t]
            let levels = if lo >= 0.0 { 256 } else { 128 };
            entropy_threshold(stats.histogram.as_ref()?, levels)?
        }
    };
    Some((lo.max(-t), hi.min(t)))
}

/// Fewer values seen than histogram bins: a clipping statistic would throw real values away (a classifier's
/// logits, a pooled vector), so the full range is used.
pub fn too_few_for_histogram(stats: &TensorStats) -> bool {
    stats
        .histogram
        .as_ref()
        .is_none_or(|h| stats.minmax.count < h.bins.len() as u64)
}

/// KL-optimal symmetric threshold over the magnitude histogram (bins folded around 0).
pub fn entropy_threshold(h: &Histogram, levels: usize) -> Option<f32> {
    let n = h.bins.len();
    let half = n / 2;
    if h.total() == 0 || half == 0 {
        return None;
    }
    // magnitude histogram: bin k covers [k w, (k+1) w)
    let abs: Vec<f64> = (0..half)
        .map(|k| (h.bins[half - 1 - k] + h.bins[half + k]) as f64)
        .collect();
    let w = f64::from(h.limit) / half as f64;
    if half <= levels {
        return Some(h.limit);
    }
    let mut best = (f64::INFINITY, half);
    for i in levels..=half {
        // reference distribution: the first i bins, outliers folded into the last
        let mut p: Vec<f64> = abs[..i].to_vec();
        p[i - 1] += abs[i..].iter().sum::<f64>();
        let psum: f64 = p.iter().sum();
        if psum == 0.0 {
            continue;
        }
        // candidate: the i bins merged into levels levels, each level spread evenly over its non-empty bins
        let mut q = vec![0f64; i];
        for l in 0..levels {
            let (a, b) = (
                l * i / levels,
                ((l + 1) * i / levels).max(l * i / levels + 1),
            );
            let mass: f64 = abs[a..b].iter().sum();
            let nonzero = abs[a..b].iter().filter(|&&c| c > 0.0).count();
            if nonzero > 0 {
                for k in a..b {
                    if abs[k] > 0.0 {
                        q[k] = mass / nonzero as f64;
                    }
                }
            }
        }
        let qsum: f64 = q.iter().sum();
        let mut kl = 0.0;
        for k in 0..i {
            if p[k] > 0.0 {
                let pk = p[k] / psum;
                // a reference bin the candidate leaves empty (the folded outliers) costs as if nearly impossible
                let qk = if q[k] > 0.0 { q[k] / qsum } else { 1e-12 };
                kl += pk * (pk / qk).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    Some((best.1 as f64 * w) as f32)
}

/// Scale and zero point of an asymmetric activation range for `signed` (int8: -128..=127) or uint8
/// (0..=255). The range is widened to contain 0 so that zero is exact (padding, Relu).
pub fn activation_params(lo: f32, hi: f32, signed: bool) -> (f32, i32) {
    let (qmin, qmax) = if signed {
        (-128f64, 127f64)
    } else {
        (0f64, 255f64)
    };
    let lo = f64::from(lo.min(0.0));
    let hi = f64::from(hi.max(0.0));
    let scale = (hi - lo) / (qmax - qmin);
    let scale = scale as f32;
    if !(scale.is_finite() && scale > 0.0) {
        return (1.0, if signed { 0 } else { 0 });
    }
    let zp = (qmin - lo / f64::from(scale)).round().clamp(qmin, qmax) as i32;
    (scale, zp)
}

/// Symmetric int8 scale of a weight slice with largest magnitude `abs_max` (zero point 0, levels -127..=127).
pub fn weight_scale(abs_max: f64) -> f32 {
    let s = (abs_max / 127.0) as f32;
    if s.is_finite() && s > 0.0 {
        s
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::quantize::calibrate::Observer;
    use crate::passes::quantize::calibrate::{StatsCollector, StatsOptions};

    #[test]
    fn uint8_params_keep_zero_exact() {
        let (s, zp) = activation_params(-1.0, 3.0, false);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(zp, 64); // 1 / (4/255) = 63.75 -> 64
        let (s, zp) = activation_params(0.5, 2.0, true);
        assert!((s - 2.0 / 255.0).abs() < 1e-7);
        assert_eq!(zp, -128);
        assert_eq!(activation_params(0.0, 0.0, false), (1.0, 0));
    }

    #[test]
    fn percentile_and_entropy_clip_outliers() {
        let mut c = StatsCollector::new(StatsOptions {
            histogram_bins: 2048,
        });
        // a bulk in [-1, 1] and one outlier at 100
        let mut v: Vec<f32> = (0..100_000)
            .map(|i| ((i % 2001) as f32 - 1000.0) / 1000.0)
            .collect();
        v.push(100.0);
        c.observe("x", &v).unwrap();
        let s = &c.stats["x"];
        assert_eq!(clip_range(s, RangeMethod::MinMax), Some((-1.0, 100.0)));
        let (lo, hi) = clip_range(s, RangeMethod::Percentile(99.9)).unwrap();
        assert!(hi < 2.0 && hi >= 0.99 && lo <= -0.99, "{lo} {hi}");
        // entropy cannot go below `levels` bins of the magnitude histogram: 128 x (100 / 1024) = 12.5 here,
        // which still drops the outlier's 100
        let (_, hi) = clip_range(s, RangeMethod::Entropy).unwrap();
        assert!(hi <= 12.5 + 1e-3 && hi >= 1.0, "{hi}");
    }
}
