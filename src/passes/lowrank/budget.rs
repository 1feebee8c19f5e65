//! Whole-model rank allocation of `lowrank`: per-layer ranks for a global parameter target, chosen by the
//! smallest error per saved parameter across all layers.
//!
//! Each candidate layer `l` (K x N, singular values `s`) is either left whole (K N parameters, no error) or
//! split at a rank `r` that is a multiple of `multiple` and saves at least `min_saving` (r (K + N) parameters,
//! error `sum_{i >= r} s_i^2`). The error is counted relative to the layer's own energy `||W_l||_F^2 =
//! sum s_i^2` (the squared relative Frobenius error of the layer, or of its output with whitening): a relative
//! weight error perturbs the layer's output by about the same relative amount whatever the layer's scale, and
//! what reaches the model's output is relative (LayerNorm, softmax, argmax), so a layer with small weights
//! (attention projections) is not sacrificed for a layer with large ones, which an error relative to the
//! model's total energy (absolute `s_i^2`) would do. The objective is `sum_l e_l^2`, `e_l` each layer's
//! relative error.
//!
//! Greedy from the whole model down: repeatedly take the move that adds the least error per parameter it
//! saves, until the parameters fit the target. A layer's moves are "split it" (whole -> the rank `r*` with the
//! smallest average error per saved parameter over the whole-to-r step, so the next moves of that layer never
//! cost less per parameter than this one: each layer's sequence of ratios is non-decreasing and the greedy is
//! the merge of sorted lists), then "drop `multiple` more singular values" (saves `multiple (K + N)`, costs
//! their `s_i^2`). The last move may overshoot the target; the slack is refilled by adding singular values
//! back, the most error removed per parameter first, while they fit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// What the allocation knows of one layer.
#[derive(Clone, Debug)]
pub struct Layer {
    pub k: usize,
    pub n: usize,
    /// Every singular value, non-increasing (of the whitened matrix in the data-aware mode).
    pub s: Vec<f64>,
}

impl Layer {
    fn params(&self) -> u64 {
        (self.k * self.n) as u64
    }

    fn unit(&self) -> u64 {
        (self.k + self.n) as u64
    }

    fn energy(&self) -> f64 {
        self.s.iter().map(|x| x * x).sum()
    }
}

/// The ranks a layer may take: multiples of `multiple` from `multiple` up to the largest that saves at
/// least `min_saving` of its parameters (`r (K + N) <= (1 - min_saving) K N` and `r (K + N) < K N`).
/// `None` when no rank qualifies.
pub fn rank_range(k: usize, n: usize, multiple: usize, min_saving: f64) -> Option<(usize, usize)> {
    let full = k.min(n);
    let params = (k * n) as f64;
    let unit = (k + n) as f64;
    let mut top = ((1.0 - min_saving) * params / unit).floor() as usize;
    top = top.min(full);
    while top > 0 && (top as f64) * unit >= params {
        top -= 1;
    }
    let m = multiple.max(1);
    let top = top / m * m;
    (top >= m).then_some((m, top))
}

/// The rank of each layer (`None`: left whole) and the parameter count, for a target of `budget`
/// parameters. `Err(smallest)` when even every layer at its smallest rank exceeds the budget (`smallest` is
/// that parameter count).
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub ranks: Vec<Option<usize>>,
    pub params: u64,
    /// `sum_l e_l^2` (each layer's squared relative error).
    pub error: f64,
}

/// The smallest parameter count any allocation reaches: every layer that can be split at its smallest rank.
pub fn smallest(layers: &[Layer], multiple: usize, min_saving: f64) -> u64 {
    layers
        .iter()
        .map(|l| match rank_range(l.k, l.n, multiple, min_saving) {
            Some((lo, _)) => lo as u64 * l.unit(),
            None => l.params(),
        })
        .sum()
}

/// A candidate move: `cost / saved` is the error added per parameter saved.
#[derive(Clone, Copy, Debug)]
struct Move {
    ratio: f64,
    layer: usize,
    /// The rank after the move.
    to: usize,
}

impl PartialEq for Move {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Move {}
impl PartialOrd for Move {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Move {
    /// Max-heap order: the smallest ratio first, then the lowest layer index (deterministic ties).
    fn cmp(&self, o: &Self) -> Ordering {
        o.ratio
            .total_cmp(&self.ratio)
            .then(o.layer.cmp(&self.layer))
    }
}

/// Allocate ranks for at most `budget` parameters over `layers`.
pub fn allocate(
    layers: &[Layer],
    budget: u64,
    multiple: usize,
    min_saving: f64,
) -> Result<Allocation, u64> {
    let least = smallest(layers, multiple, min_saving);
    if least > budget {
        return Err(least);
    }
    let m = multiple.max(1);
    // per layer: energy, prefix sums of s^2 (tail(r) = energy - prefix[r]), allowed range
    type Info = (f64, Vec<f64>, Option<(usize, usize)>);
    let info: Vec<Info> = layers
        .iter()
        .map(|l| {
            let mut prefix = Vec::with_capacity(l.s.len() + 1);
            let mut acc = 0.0;
            prefix.push(0.0);
            for x in &l.s {
                acc += x * x;
                prefix.push(acc);
            }
            (l.energy(), prefix, rank_range(l.k, l.n, m, min_saving))
        })
        .collect();
    // relative squared error of layer i at rank r
    let rel = |i: usize, r: usize| -> f64 {
        let (e, p, _) = &info[i];
        if *e <= 0.0 {
            return 0.0;
        }
        ((e - p[r.min(p.len() - 1)]).max(0.0)) / e
    };
    let mut ranks: Vec<Option<usize>> = vec![None; layers.len()];
    let mut params: u64 = layers.iter().map(Layer::params).sum();
    let mut heap = BinaryHeap::new();
    for (i, l) in layers.iter().enumerate() {
        let Some((lo, hi)) = info[i].2 else { continue };
        // the split move: whole -> r* minimising rel(r) / (KN - r (K + N)) over the allowed ranks
        let mut best: Option<Move> = None;
        let mut r = hi;
        while r >= lo {
            let saved = (l.params() - r as u64 * l.unit()) as f64;
            let ratio = rel(i, r) / saved;
            if best.is_none_or(|b| ratio < b.ratio) {
                best = Some(Move {
                    ratio,
                    layer: i,
                    to: r,
                });
            }
            r -= m;
        }
        heap.extend(best);
    }
    while params > budget {
        let Some(mv) = heap.pop() else { break };
        let l = &layers[mv.layer];
        let before = match ranks[mv.layer] {
            Some(r) => r as u64 * l.unit(),
            None => l.params(),
        };
        params = params - before + mv.to as u64 * l.unit();
        ranks[mv.layer] = Some(mv.to);
        let (lo, _) = info[mv.layer].2.expect("split layers have a range");
        if mv.to >= lo + m {
            let to = mv.to - m;
            let ratio = (rel(mv.layer, to) - rel(mv.layer, mv.to)) / (m as u64 * l.unit()) as f64;
            heap.push(Move {
                ratio,
                layer: mv.layer,
                to,
            });
        }
    }
    debug_assert!(params <= budget, "the smallest allocation fits");
    // refill the slack: add `multiple` singular values back to split layers, the most error removed per
    // parameter first, while they fit (and stay within the layer's range)
    let mut slack = budget - params;
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (i, l) in layers.iter().enumerate() {
            let (Some(r), Some((_, hi))) = (ranks[i], info[i].2) else {
                continue;
            };
            let cost = m as u64 * l.unit();
            if r + m > hi || cost > slack {
                continue;
            }
            let gain = (rel(i, r) - rel(i, r + m)) / cost as f64;
            if best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, i));
            }
        }
        let Some((_, i)) = best else { break };
        let cost = m as u64 * layers[i].unit();
        ranks[i] = ranks[i].map(|r| r + m);
        slack -= cost;
        params += cost;
    }
    let error = ranks
        .iter()
        .enumerate()
        .map(|(i, r)| r.map_or(0.0, |r| rel(i, r)))
        .sum();
    Ok(Allocation {
        ranks,
        params,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(k: usize, n: usize, decay: f64) -> Layer {
        let s = (0..k.min(n)).map(|i| decay.powi(i as i32)).collect();
        Layer { k, n, s }
    }

    #[test]
    fn range_respects_min_saving_and_multiple() {
        // 64x64: r * 128 <= 0.9 * 4096 -> r <= 28
        assert_eq!(rank_range(64, 64, 1, 0.1), Some((1, 28)));
        assert_eq!(rank_range(64, 64, 8, 0.1), Some((8, 24)));
        assert_eq!(rank_range(64, 64, 32, 0.1), None);
        // min_saving 0 still never gives a layer as big as the original: 32 * 128 = 4096 is not smaller
        assert_eq!(rank_range(64, 64, 1, 0.0), Some((1, 31)));
        assert_eq!(rank_range(1, 5, 1, 0.0), None);
    }

    #[test]
    fn meets_the_budget_and_prefers_the_steep_spectrum() {
        let layers = vec![layer(64, 64, 0.5), layer(64, 64, 0.99)];
        let total: usize = 2 * 64 * 64;
        let a = allocate(&layers, (total / 2) as u64, 1, 0.1).unwrap();
        assert!(a.params <= (total / 2) as u64, "{a:?}");
        let (r0, r1) = (a.ranks[0].unwrap(), a.ranks[1].unwrap());
        // the fast-decaying layer needs few singular values, the flat one gets the rest
        assert!(r0 < r1, "{a:?}");
        // the slack left is smaller than one more unit of any layer
        assert!((total / 2) as u64 - a.params < 128, "{a:?}");
        // beats the uniform split at the same parameter count
        let uniform = (total / 2) / 256;
        let u = |l: &Layer| {
            let e: f64 = l.energy();
            let kept: f64 = l.s.iter().take(uniform).map(|x| x * x).sum();
            (e - kept) / e
        };
        assert!(a.error < u(&layers[0]) + u(&layers[1]), "{a:?}");
    }

    #[test]
    fn infeasible_targets_report_the_smallest_model() {
        let layers = vec![layer(64, 64, 0.9), layer(2, 2, 0.9)];
        // 64x64 at rank 1: 128; 2x2 cannot be split (rank 1 keeps 4 of 4): 4
        assert_eq!(smallest(&layers, 1, 0.1), 132);
        assert_eq!(allocate(&layers, 100, 1, 0.1), Err(132));
        let a = allocate(&layers, 132, 1, 0.1).unwrap();
        assert_eq!(a.ranks, vec![Some(1), None]);
        assert_eq!(a.params, 132);
        // a budget at the full size splits nothing
        let a = allocate(&layers, 64 * 64 + 4, 1, 0.1).unwrap();
        assert_eq!(a.ranks, vec![None, None]);
        assert_eq!(a.error, 0.0);
    }
}
