//! The plan: for each channel group, which channels go. Plain serde data (`dry_run` prints it, `plan` saves
//! it, `load_plan` reads it back, possibly edited).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ir::tensor::axis::Reduction as Red;
use crate::ir::Graph;
use crate::passes::prune::{Importance, Prune};

use super::analysis::{Analysis, Role, SiteKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupPlan {
    /// Group id (its first producer's position among the groups).
    pub id: usize,
    pub channels: usize,
    /// Producer node names.
    pub producers: Vec<String>,
    /// Why the group cannot be pruned (the node that froze it).
    pub frozen: Option<String>,
    /// Channel ranges pruned independently (a Split cuts the group).
    pub ranges: Vec<(usize, usize)>,
    /// Channels dropped, ascending.
    pub pruned: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub ratio: f64,
    pub global: bool,
    pub importance: String,
    pub round_to: usize,
    pub groups: Vec<GroupPlan>,
}

/// Importance of every channel of every root group (indexed by root id).
fn scores(p: &Prune, g: &Graph, a: &Analysis) -> Result<Vec<Vec<f64>>> {
    let mut s: Vec<Vec<f64>> = a.groups.iter().map(|gr| vec![0.0; gr.channels]).collect();
    let mut has_bn = vec![false; a.groups.len()];
    let want_bn = p.importance == Importance::BnGamma;
    for pass in 0..2 {
        for site in &a.sites {
            let SiteKind::Tensor { slot, axis, role } = site.kind else {
                continue;
            };
            let use_it = match (pass, role) {
                (0, Role::BnScale) => want_bn,
                (1, Role::Producer) => true,
                _ => false,
            };
            if !use_it {
                continue;
            }
            let node = g.node(site.node).expect("live node");
            let Some(t) = node.input(slot).and_then(|v| g.constant(v)) else {
                continue;
            };
            let r = if p.importance == Importance::L2 {
                Red::L2
            } else {
                Red::AbsSum
            };
            let v = t.reduce_axis(axis as i64, r)?;
            let pos = a.positions(&site.layout);
            if v.len() != pos.len() * site.layout.block {
                continue;
            }
            for (i, (grp, ch)) in pos.into_iter().enumerate() {
                if pass == 1 && has_bn[grp] {
                    continue;
                }
                let val: f64 = v[i * site.layout.block..(i + 1) * site.layout.block]
                    .iter()
                    .sum();
                s[grp][ch] += val;
                if pass == 0 {
                    has_bn[grp] = true;
                }
            }
        }
    }
    Ok(s)
}

fn ranges(a: &Analysis, root: usize) -> Vec<(usize, usize)> {
    let gr = &a.groups[root];
    let mut cuts: Vec<usize> = gr
        .cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < gr.channels)
        .collect();
    cuts.insert(0, 0);
    cuts.push(gr.channels);
    cuts.dedup();
    cuts.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Kept count of a range of `len` channels at `ratio`, rounded up to a multiple of `round_to` (at most len,
/// never zero).
pub fn kept_count(len: usize, ratio: f64, round_to: usize) -> usize {
    let drop = (len as f64 * ratio).floor() as usize;
    let keep = (len - drop).max(1);
    (keep.div_ceil(round_to) * round_to).min(len)
}

pub fn make(p: &Prune, g: &Graph, a: &Analysis) -> Result<Plan> {
    let sc = scores(p, g, a)?;
    let mut groups = Vec::new();
    let roots = a.roots();
    // global: one threshold on importance normalised by each group's mean
    let mut drop_count: std::collections::HashMap<(usize, usize), usize> = Default::default();
    if p.global {
        let mut all: Vec<(f64, usize, usize, usize)> = Vec::new(); // (score, root, range idx, ch)
        let mut total = 0;
        for &r in &roots {
            if a.groups[r].frozen.is_some() {
                continue;
            }
            let mean = sc[r].iter().sum::<f64>() / sc[r].len().max(1) as f64;
            for (k, (lo, hi)) in ranges(a, r).into_iter().enumerate() {
                total += hi - lo;
                for ch in lo..hi {
                    let v = if mean > 0.0 { sc[r][ch] / mean } else { 0.0 };
                    all.push((v, r, k, ch));
                }
            }
        }
        all.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.3.cmp(&y.3)));
        let target = (total as f64 * p.ratio).floor() as usize;
        let mut taken = 0;
        for &(_, r, k, _) in &all {
            if taken >= target {
                break;
            }
            let (lo, hi) = ranges(a, r)[k];
            let len = hi - lo;
            let e = drop_count.entry((r, k)).or_default();
            if len - *e > 1 {
                *e += 1;
                taken += 1;
            }
        }
    }
    for &r in &roots {
        let gr = &a.groups[r];
        let rs = ranges(a, r);
        let mut pruned = Vec::new();
        if gr.frozen.is_none() {
            for (k, &(lo, hi)) in rs.iter().enumerate() {
                let len = hi - lo;
                let keep = if p.global {
                    let d = drop_count.get(&(r, k)).copied().unwrap_or(0);
                    ((len - d).div_ceil(p.round_to) * p.round_to).min(len)
                } else {
                    kept_count(len, p.ratio, p.round_to)
                };
                let mut idx: Vec<usize> = (lo..hi).collect();
                idx.sort_by(|&x, &y| sc[r][x].total_cmp(&sc[r][y]).then(x.cmp(&y)));
                pruned.extend_from_slice(&idx[..len - keep]);
            }
        }
        pruned.sort();
        groups.push(GroupPlan {
            id: r,
            channels: gr.channels,
            producers: gr
                .producers
                .iter()
                .map(|n| g.node(*n).map(|n| n.name().to_string()).unwrap_or_default())
                .collect(),
            frozen: gr.frozen.clone(),
            ranges: rs,
            pruned,
        });
    }
    Ok(Plan {
        ratio: p.ratio,
        global: p.global,
        importance: match p.importance {
            Importance::L1 => "l1",
            Importance::L2 => "l2",
            Importance::BnGamma => "bn",
        }
        .into(),
        round_to: p.round_to,
        groups,
    })
}

/// Check a loaded plan against the analysis: same groups, channels in range, every range keeps a channel.
pub fn check(plan: &Plan, a: &Analysis, file: &str) -> Result<()> {
    let bad = |msg: String| Error::invalid(format!("plan '{file}'"), msg);
    let roots = a.roots();
    if plan.groups.len() != roots.len() {
        return Err(bad(format!(
            "{} groups, the model has {}",
            plan.groups.len(),
            roots.len()
        )));
    }
    for (gp, &r) in plan.groups.iter().zip(&roots) {
        let gr = &a.groups[r];
        if gp.id != r || gp.channels != gr.channels {
            return Err(bad(format!(
                "group {} does not match the model's group {r} ({} channels)",
                gp.id, gr.channels
            )));
        }
        if gr.frozen.is_some() && !gp.pruned.is_empty() {
            return Err(bad(format!(
                "group {r} is frozen ({}) but the plan prunes it",
                gr.frozen.as_deref().unwrap_or("")
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for &c in &gp.pruned {
            if c >= gr.channels || !seen.insert(c) {
                return Err(bad(format!(
                    "group {r}: channel {c} is out of range or repeated"
                )));
            }
        }
        for (lo, hi) in ranges(a, r) {
            if (lo..hi).all(|c| seen.contains(&c)) {
                return Err(bad(format!(
                    "group {r}: channels {lo}..{hi} would all be pruned"
                )));
            }
        }
    }
    Ok(())
}
