//! Observation, the second stage: run the calibrator once over its samples with every tensor the selected
//! sites quantise exposed, folding each into streaming statistics (`calibrate::StatsCollector`: min / max, and
//! a histogram for percentile / entropy) as it is produced. For bias correction the inputs of layers with a
//! bias are also folded into per-channel means, and every calibrated tensor keeps a bounded, evenly spaced
//! subsample of its values (`Subsample`), on which the plan stage measures what 8 bits cost the tensor once its
//! parameters are known. The plan stage turns the statistics into parameters; nothing here decides anything.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::ir::{Model, ValueId};
use crate::passes::quantize::calibrate::{Observer, StatsCollector, StatsOptions, TensorStats};
use crate::passes::PassContext;

use super::ranges::RangeMethod;
use super::select::{QdqSite, WeightLayout};
use super::{StaticQdqOptions, PASS};

/// What calibration saw.
pub(super) struct Observed {
    /// Statistics per tensor name.
    pub stats: BTreeMap<String, TensorStats>,
    /// Per-channel means of the inputs of layers with a bias (bias correction only).
    pub means: BTreeMap<ValueId, Vec<f64>>,
    /// How many tensors were exposed.
    pub tensors: usize,
    /// An evenly spaced subsample of each calibrated tensor's values (by name).
    pub samples: BTreeMap<String, Vec<f32>>,
}

/// Values kept per tensor: between `SUBSAMPLE` and twice as many, whatever the number of samples. 8 KB to 16
/// KB a tensor; enough to measure a signal-to-noise ratio to a fraction of a dB (the threshold it is compared
/// to is tens of dB from normal tensors).
pub(super) const SUBSAMPLE: usize = 2048;

/// Every `stride`-th value of a tensor's stream over all samples; when twice `SUBSAMPLE` are kept, every other
/// one is dropped and the stride doubles, so memory stays bounded and the kept values stay evenly spaced
/// (deterministic: it depends only on the order values come in).
#[derive(Default)]
struct Subsample {
    values: Vec<f32>,
    stride: usize,
    /// Position in the stream of the next value to keep, counted from the start of the next observation.
    next: usize,
}

impl Subsample {
    fn push(&mut self, values: &[f32]) {
        self.stride = self.stride.max(1);
        let mut i = self.next;
        while i < values.len() {
            self.values.push(values[i]);
            if self.values.len() >= 2 * SUBSAMPLE {
                self.values = self.values.iter().step_by(2).copied().collect();
                self.stride *= 2;
                // the last value kept is still kept (index 2 * SUBSAMPLE - 1 is odd: it was dropped): move
                // on from the last kept one by the new stride
                i = i + self.stride - self.stride / 2;
            } else {
                i += self.stride;
            }
        }
        self.next = i - values.len();
    }
}

/// Calibrate the tensors of `set` that take their own range (`None`), plus, with `bias_correction`, the
/// inputs of the sites that have a bias and a layout bias correction understands.
pub(super) fn observe(
    model: &Model,
    cx: &mut PassContext,
    sites: &[&QdqSite],
    set: &BTreeMap<ValueId, Option<ValueId>>,
    method: RangeMethod,
    opts: &StaticQdqOptions,
) -> Result<Observed> {
    let g = &model.graph;
    let mut wanted: Vec<String> = set
        .iter()
        .filter(|(_, src)| src.is_none())
        .map(|(v, _)| g.value_name(*v).to_string())
        .collect();
    // bias correction: per-channel means of the inputs of layers with a bias
    let mut channel = BTreeMap::new();
    if opts.bias_correction {
        for s in sites
            .iter()
            .filter(|s| s.bias.is_some() && s.layout != WeightLayout::Other)
        {
            let name = g.value_name(s.acts[0]).to_string();
            if !wanted.contains(&name) {
                wanted.push(name.clone());
            }
            channel.insert(
                name,
                (s.layout != WeightLayout::Conv, Vec::new(), Vec::new()),
            );
        }
    }
    cx.progress.start("calibrating", None);
    let bins = if method == RangeMethod::MinMax {
        0
    } else {
        opts.histogram_bins.max(256)
    };
    let mut collector = Collector {
        stats: StatsCollector::new(StatsOptions {
            histogram_bins: bins,
        }),
        channel,
        samples: BTreeMap::new(),
    };
    if !wanted.is_empty() {
        let n = cx
            .calibrator(PASS)?
            .calibrate(model, &wanted, &mut collector)?;
        if n == 0 {
            return Err(Error::Validate("calibration ran on no samples".into()));
        }
        for t in &wanted {
            if !collector.stats.stats.contains_key(t) {
                return Err(Error::Validate(format!(
                    "calibration produced no values for tensor '{t}'"
                )));
            }
        }
    }
    cx.progress.finish();
    let mut means: BTreeMap<ValueId, Vec<f64>> = BTreeMap::new();
    for (name, (_, sums, counts)) in collector.channel {
        if let Some(v) = g.value_by_name(&name) {
            if !sums.is_empty() && counts.iter().all(|c| *c > 0) {
                means.insert(
                    v,
                    sums.iter()
                        .zip(&counts)
                        .map(|(s, c)| s / *c as f64)
                        .collect(),
                );
            }
        }
    }
    Ok(Observed {
        stats: collector.stats.stats,
        means,
        tensors: wanted.len(),
        samples: collector
            .samples
            .into_iter()
            .map(|(k, s)| (k, s.values))
            .collect(),
    })
}

/// Statistics per tensor plus, for some, the mean of each channel (axis 1, or the last axis).
struct Collector {
    stats: StatsCollector,
    /// tensor -> (channel on the last axis?, sums, counts)
    channel: BTreeMap<String, (bool, Vec<f64>, Vec<u64>)>,
    samples: BTreeMap<String, Subsample>,
}

impl Collector {
    fn keep(&mut self, tensor: &str, values: &[f32]) {
        match self.samples.get_mut(tensor) {
            Some(s) => s.push(values),
            None => {
                let mut s = Subsample::default();
                s.push(values);
                self.samples.insert(tensor.to_string(), s);
            }
        }
    }
}

impl Observer for Collector {
    fn observe(&mut self, tensor: &str, values: &[f32]) -> Result<()> {
        self.keep(tensor, values);
        self.stats.observe(tensor, values)
    }

    fn observe_shaped(&mut self, tensor: &str, dims: &[usize], values: &[f32]) -> Result<()> {
        self.keep(tensor, values);
        self.stats.observe(tensor, values)?;
        if let Some((last, sums, counts)) = self.channel.get_mut(tensor) {
            let axis = if *last {
                dims.len().saturating_sub(1)
            } else {
                1
            };
            if dims.len() > axis && dims.iter().product::<usize>() == values.len() {
                let ch = dims[axis];
                let inner: usize = dims[axis + 1..].iter().product();
                if sums.is_empty() {
                    *sums = vec![0.0; ch];
                    *counts = vec![0; ch];
                }
                if sums.len() == ch && inner > 0 {
                    // blocks of `inner` values share a channel; each channel's sum takes its values in the
                    // order they come
                    for (b, block) in values.chunks(inner).enumerate() {
                        let c = b % ch;
                        let (s, k) = (&mut sums[c], &mut counts[c]);
                        for v in block {
                            if v.is_finite() {
                                *s += f64::from(*v);
                                *k += 1;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fed 0, 1, 2, ... in chunks of odd sizes, the subsample stays bounded and evenly spaced: every kept value
    /// is the previous one plus the final stride.
    #[test]
    fn subsample_is_bounded_and_evenly_spaced() {
        let mut s = Subsample::default();
        let mut at = 0u32;
        for chunk in [1usize, 7, 3000, 513, 10_000, 4097, 1]
            .iter()
            .cycle()
            .take(40)
        {
            let v: Vec<f32> = (at..at + *chunk as u32).map(|x| x as f32).collect();
            at += *chunk as u32;
            s.push(&v);
        }
        assert!(s.values.len() >= SUBSAMPLE && s.values.len() < 2 * SUBSAMPLE);
        assert_eq!(s.values[0], 0.0);
        for w in s.values.windows(2) {
            assert_eq!(w[1] - w[0], s.stride as f32, "{w:?}");
        }
    }
}
