//! The arithmetic of quantization parameters: the clipping range of an activation from its calibration
//! statistics (MinMax, Percentile, Entropy), the scale / zero point of a range for int8 or uint8, symmetric
//! int8 weight scales per channel and the weight's integers at those scales, and the bias correction's mean
//! output shift of a weight's quantization error. Plain functions of numbers; the plan stage calls them.

use super::select::WeightLayout;
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
        return (1.0, 0);
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

/// Per-tensor parameters of a constant stored in the activation type: its own min / max (with 0).
pub fn table_params(v: &[f64], signed: bool) -> (f32, i32) {
    let lo = v.iter().copied().fold(0f64, f64::min) as f32;
    let hi = v.iter().copied().fold(0f64, f64::max) as f32;
    activation_params(lo, hi, signed)
}

/// (outer, channels, inner) of a weight of `dims` split around the channel `axis`; one channel when per
/// tensor (or when `axis` is past the rank).
fn channel_split(dims: &[i64], axis: Option<usize>, len: usize) -> (usize, usize, usize) {
    let d: Vec<usize> = dims.iter().map(|x| *x as usize).collect();
    match axis {
        Some(a) if a < d.len() => (
            d[..a].iter().product::<usize>(),
            d[a],
            d[a + 1..].iter().product::<usize>(),
        ),
        _ => (1, 1, len),
    }
}

/// Symmetric int8 scales of weight values `w` of shape `dims`: one per channel on `axis` (one for the tensor
/// without), from each channel's largest finite magnitude.
pub fn weight_scales(w: &[f64], dims: &[i64], axis: Option<usize>) -> Vec<f32> {
    let (outer, ch, inner) = channel_split(dims, axis, w.len());
    let mut absmax = vec![0f64; ch];
    for o in 0..outer {
        for (c, m) in absmax.iter_mut().enumerate() {
            for x in &w[(o * ch + c) * inner..(o * ch + c + 1) * inner] {
                if x.is_finite() {
                    *m = m.max(x.abs());
                }
            }
        }
    }
    absmax.iter().map(|m| weight_scale(*m)).collect()
}

/// The int8 values of weight `w` at `scales` (one per channel on `axis`, or one): round(w / s) clamped to
/// -127..=127, the symmetric range whose zero point is 0.
pub fn quantize_symmetric(w: &[f64], dims: &[i64], axis: Option<usize>, scales: &[f32]) -> Vec<i8> {
    let (outer, ch, inner) = channel_split(dims, axis, w.len());
    let mut q = vec![0i8; w.len()];
    for o in 0..outer {
        for (c, s) in scales[..ch].iter().enumerate() {
            let s = f64::from(*s);
            for k in (o * ch + c) * inner..(o * ch + c + 1) * inner {
                q[k] = (w[k] / s).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    q
}

/// The quantization error W_q - W of each weight element (per channel on `axis`, or per tensor).
pub fn weight_error(
    w: &[f64],
    dims: &[i64],
    axis: Option<usize>,
    q: &[i8],
    scales: &[f32],
) -> Vec<f64> {
    let (ch, inner) = match axis {
        Some(a) => (
            dims[a] as usize,
            dims[a + 1..].iter().map(|d| *d as usize).product::<usize>(),
        ),
        None => (1, w.len()),
    };
    w.iter()
        .zip(q)
        .enumerate()
        .map(|(i, (x, qi))| f64::from(*qi) * f64::from(scales[(i / inner) % ch]) - x)
        .collect()
}

/// The mean output shift E[(W_q - W) x] per output channel, from the quantization error `err` of a weight of
/// `dims` laid out as `layout` and the per-channel means of its input x; `None` for a layout or input it does
/// not understand.
pub(super) fn mean_shift(
    layout: WeightLayout,
    dims: &[i64],
    err: &[f64],
    mean: &[f64],
) -> Option<Vec<f64>> {
    let d: Vec<usize> = dims.iter().map(|x| *x as usize).collect();
    match layout {
        WeightLayout::Conv if d.len() >= 2 => {
            let (m, cg) = (d[0], d[1]);
            let k: usize = d[2..].iter().product();
            if cg == 0 || !mean.len().is_multiple_of(cg) {
                return None;
            }
            let groups = mean.len() / cg;
            if groups == 0 || m % groups != 0 {
                return None;
            }
            let per = m / groups;
            Some(
                (0..m)
                    .map(|o| {
                        let gi = o / per;
                        (0..cg)
                            .map(|c| {
                                let e: f64 =
                                    err[(o * cg + c) * k..(o * cg + c + 1) * k].iter().sum();
                                e * mean[gi * cg + c]
                            })
                            .sum()
                    })
                    .collect(),
            )
        }
        WeightLayout::RowsOut if d.len() == 2 && mean.len() == d[1] => Some(
            (0..d[0])
                .map(|n| (0..d[1]).map(|k| err[n * d[1] + k] * mean[k]).sum())
                .collect(),
        ),
        WeightLayout::ColsOut if d.len() == 2 && mean.len() == d[0] => Some(
            (0..d[1])
                .map(|n| (0..d[0]).map(|k| err[k * d[1] + n] * mean[k]).sum())
                .collect(),
        ),
        _ => None,
    }
}

/// Below this signal-to-quantization-noise ratio a tensor's 8 bits are a catastrophe, and it stays float.
/// 8-bit steps of a range R are R / 255 wide and add noise of R^2 / (12 * 255^2) per value when the values
/// spread over many steps, so SQNR = 10 log10(12 * 255^2) - 20 log10(R / rms) = 58.9 dB - 20 log10(R / rms).
/// Activations whose range is a few standard deviations wide (R / rms about 10: 39 dB) or heavy tailed (R / rms
/// about 100: 19 dB) stay well above 10 dB; below it the range is more than 280 rms values wide: a few
/// outliers set it, the bulk of the values falls within a step or two of zero, and the noise is over a tenth
/// of the signal.
pub const CATASTROPHIC_SQNR_DB: f64 = 10.0;

/// The SQNR (dB) of `values` quantised and dequantised at `scale` / `zero_point` in int8 or uint8 (clipping
/// included): +inf when nothing changes, `None` when there is no signal to compare with (all zero, or empty).
pub fn fake_quant_sqnr_db(
    values: &[f32],
    scale: f32,
    zero_point: i32,
    signed: bool,
) -> Option<f64> {
    let (qmin, qmax) = if signed {
        (-128.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    let (s, z) = (f64::from(scale), f64::from(zero_point));
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for x in values.iter().filter(|x| x.is_finite()) {
        let x = f64::from(*x);
        // QuantizeLinear rounds half to even
        let q = ((x / s).round_ties_even() + z).clamp(qmin, qmax);
        let d = (q - z) * s;
        signal += x * x;
        noise += (x - d) * (x - d);
    }
    if signal == 0.0 {
        return None;
    }
    Some(if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A uniform ramp over its own range loses about 58.9 dB - 20 log10(R / rms) = 58.9 - 20 log10(sqrt(3)) =
    /// 54.1 dB (rms of a uniform [0, R] is R / sqrt(3)); the sampling of the ramp and the half-step at its ends
    /// move that by well under 1 dB. Small values in a range set by a rare outlier 1000x larger (seen by min /
    /// max, not in the evenly spaced subsample) all round to 0: 0 dB, below the catastrophe line.
    #[test]
    fn sqnr_of_fake_quantization() {
        let ramp: Vec<f32> = (0..10_000).map(|i| i as f32 / 9999.0).collect();
        let (s, z) = activation_params(0.0, 1.0, false);
        let db = fake_quant_sqnr_db(&ramp, s, z, false).unwrap();
        assert!((db - 54.1).abs() < 1.0, "{db}");
        let spiky: Vec<f32> = (0..10_000).map(|i| ((i % 7) as f32 - 3.0) * 1e-3).collect();
        let (s, z) = activation_params(-0.003, 3.0, false);
        let db = fake_quant_sqnr_db(&spiky, s, z, false).unwrap();
        assert!(db < CATASTROPHIC_SQNR_DB, "{db}");
        assert_eq!(fake_quant_sqnr_db(&[0.0; 4], s, z, false), None);
    }
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
        assert!((0.99..2.0).contains(&hi) && lo <= -0.99, "{lo} {hi}");
        // entropy cannot go below `levels` bins of the magnitude histogram: 128 x (100 / 1024) = 12.5 here,
        // which still drops the outlier's 100
        let (_, hi) = clip_range(s, RangeMethod::Entropy).unwrap();
        assert!((1.0..=12.5 + 1e-3).contains(&hi), "{hi}");
    }
}
