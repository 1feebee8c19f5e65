//! The plan: for each channel group, which channels go. Plain serde data (`dry_run` prints it, `plan` saves
//! it, `load_plan` reads it back, possibly edited).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ir::tensor::axis::Reduction as Red;
use crate::ir::Graph;
use crate::passes::prune::{Importance, Prune};

use super::analysis::{Analysis, Role, SiteKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupPlan {
    /// The body holding the group (`if_0/then_branch`; absent for the main graph).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub graph: String,
    /// Group id (its first producer's position among the groups of its graph).
    pub id: usize,
    pub channels: usize,
    /// Producer node names.
    pub producers: Vec<String>,
    /// Why the group cannot be pruned (the node that froze it).
    pub frozen: Option<String>,
    /// Channel ranges pruned independently (a Split cuts the group; a grouped conv's blocks).
    pub ranges: Vec<(usize, usize)>,
    /// A grouped Conv reads or writes the group in this many equal blocks: the same offsets are pruned in
    /// every block (absent when 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub blocks: usize,
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

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// One analysed graph: where it sits (`if_0/then_branch`, empty for the main graph), the graph, its groups.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub display: &'a str,
    pub graph: &'a Graph,
    pub a: &'a Analysis,
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
    if gr.blocks > 1 && gr.channels.is_multiple_of(gr.blocks) {
        let bl = gr.channels / gr.blocks;
        cuts.extend((1..gr.blocks).map(|b| b * bl));
        cuts.sort();
    }
    cuts.insert(0, 0);
    cuts.push(gr.channels);
    cuts.dedup();
    cuts.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The ranges a plan chooses independently, each with the number of channels one choice drops: the group's
/// ranges, or for a group of `blocks` > 1 (cut only at block boundaries, else the analysis froze it) block 0,
/// each chosen offset dropping one channel per block.
fn units(a: &Analysis, root: usize) -> (Vec<(usize, usize)>, usize) {
    let gr = &a.groups[root];
    if gr.blocks > 1 {
        (vec![(0, gr.channels / gr.blocks)], gr.blocks)
    } else {
        (ranges(a, root), 1)
    }
}

/// Importance of each offset of a blocked group: summed over the blocks (per channel otherwise).
fn unit_scores(a: &Analysis, root: usize, sc: &[f64]) -> Vec<f64> {
    let gr = &a.groups[root];
    if gr.blocks <= 1 {
        return sc.to_vec();
    }
    let bl = gr.channels / gr.blocks;
    (0..bl)
        .map(|j| (0..gr.blocks).map(|b| sc[b * bl + j]).sum())
        .collect()
}

/// Kept count of a range of `len` channels at `ratio`, rounded up to a multiple of `round_to` (at most len,
/// never zero).
pub fn kept_count(len: usize, ratio: f64, round_to: usize) -> usize {
    let drop = (len as f64 * ratio).floor() as usize;
    let keep = (len - drop).max(1);
    (keep.div_ceil(round_to) * round_to).min(len)
}

/// The plan over every analysed graph (with `global`, one ranking over all of them).
pub fn make(p: &Prune, scopes: &[Scope]) -> Result<Plan> {
    let mut groups = Vec::new();
    // per (scope, root): offset scores (summed over blocks for a blocked group)
    let mut us: HashMap<(usize, usize), Vec<f64>> = HashMap::new();
    for (si, s) in scopes.iter().enumerate() {
        let sc = scores(p, s.graph, s.a)?;
        for r in s.a.roots() {
            us.insert((si, r), unit_scores(s.a, r, &sc[r]));
        }
    }
    // global: one threshold on importance normalised by each group's mean
    let mut drop_count: HashMap<(usize, usize, usize), usize> = Default::default();
    if p.global {
        // (score, scope, root, unit idx, offset)
        let mut all: Vec<(f64, usize, usize, usize, usize)> = Vec::new();
        let mut total = 0;
        for (si, s) in scopes.iter().enumerate() {
            for r in s.a.roots() {
                if s.a.groups[r].frozen.is_some() {
                    continue;
                }
                let (rs, weight) = units(s.a, r);
                let u = &us[&(si, r)];
                let mean = u.iter().sum::<f64>() / u.len().max(1) as f64;
                for (k, (lo, hi)) in rs.into_iter().enumerate() {
                    total += (hi - lo) * weight;
                    for ch in lo..hi {
                        let v = if mean > 0.0 { u[ch] / mean } else { 0.0 };
                        all.push((v, si, r, k, ch));
                    }
                }
            }
        }
        all.sort_by(|x, y| {
            x.0.total_cmp(&y.0)
                .then(x.1.cmp(&y.1))
                .then(x.2.cmp(&y.2))
                .then(x.4.cmp(&y.4))
        });
        let target = (total as f64 * p.ratio).floor() as usize;
        let mut taken = 0;
        for &(_, si, r, k, _) in &all {
            if taken >= target {
                break;
            }
            let (rs, weight) = units(scopes[si].a, r);
            let (lo, hi) = rs[k];
            let len = hi - lo;
            let e = drop_count.entry((si, r, k)).or_default();
            if len - *e > 1 {
                *e += 1;
                taken += weight;
            }
        }
    }
    for (si, s) in scopes.iter().enumerate() {
        let a = s.a;
        for r in a.roots() {
            let gr = &a.groups[r];
            let (rs, _) = units(a, r);
            let u = &us[&(si, r)];
            let mut pruned = Vec::new();
            if gr.frozen.is_none() {
                for (k, &(lo, hi)) in rs.iter().enumerate() {
                    let len = hi - lo;
                    let keep = if p.global {
                        let d = drop_count.get(&(si, r, k)).copied().unwrap_or(0);
                        ((len - d).div_ceil(p.round_to) * p.round_to).min(len)
                    } else {
                        kept_count(len, p.ratio, p.round_to)
                    };
                    let mut idx: Vec<usize> = (lo..hi).collect();
                    idx.sort_by(|&x, &y| u[x].total_cmp(&u[y]).then(x.cmp(&y)));
                    pruned.extend_from_slice(&idx[..len - keep]);
                }
                if gr.blocks > 1 {
                    // the same offsets in every block
                    let bl = gr.channels / gr.blocks;
                    let offsets = std::mem::take(&mut pruned);
                    for b in 0..gr.blocks {
                        pruned.extend(offsets.iter().map(|o| b * bl + o));
                    }
                }
            }
            pruned.sort();
            groups.push(GroupPlan {
                graph: s.display.to_string(),
                id: r,
                channels: gr.channels,
                producers: gr
                    .producers
                    .iter()
                    .map(|n| {
                        s.graph
                            .node(*n)
                            .map(|n| n.name().to_string())
                            .unwrap_or_default()
                    })
                    .collect(),
                frozen: gr.frozen.clone(),
                ranges: ranges(a, r),
                blocks: gr.blocks,
                pruned,
            });
        }
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

/// Check a loaded plan against the analyses: same groups in the same graphs, channels in range, every range
/// keeps a channel, a grouped conv's blocks lose the same offsets.
pub fn check(plan: &Plan, scopes: &[Scope], file: &str) -> Result<()> {
    let bad = |msg: String| Error::invalid(format!("plan '{file}'"), msg);
    let roots: Vec<(&Scope, usize)> = scopes
        .iter()
        .flat_map(|s| s.a.roots().into_iter().map(move |r| (s, r)))
        .collect();
    if plan.groups.len() != roots.len() {
        return Err(bad(format!(
            "{} groups, the model has {}",
            plan.groups.len(),
            roots.len()
        )));
    }
    for (gp, &(s, r)) in plan.groups.iter().zip(&roots) {
        let a = s.a;
        let gr = &a.groups[r];
        let at = if s.display.is_empty() {
            String::new()
        } else {
            format!(" of '{}'", s.display)
        };
        if gp.id != r || gp.channels != gr.channels || gp.graph != s.display {
            return Err(bad(format!(
                "group {}{} does not match the model's group {r}{at} ({} channels)",
                gp.id,
                if gp.graph.is_empty() {
                    String::new()
                } else {
                    format!(" of '{}'", gp.graph)
                },
                gr.channels
            )));
        }
        if gr.frozen.is_some() && !gp.pruned.is_empty() {
            return Err(bad(format!(
                "group {r}{at} is frozen ({}) but the plan prunes it",
                gr.frozen.as_deref().unwrap_or("")
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for &c in &gp.pruned {
            if c >= gr.channels || !seen.insert(c) {
                return Err(bad(format!(
                    "group {r}{at}: channel {c} is out of range or repeated"
                )));
            }
        }
        if gp.blocks != gr.blocks {
            return Err(bad(format!(
                "group {r}{at}: blocks is {}, the model's grouped convs need {}",
                gp.blocks, gr.blocks
            )));
        }
        if gr.blocks > 1 && gr.frozen.is_none() {
            let bl = gr.channels / gr.blocks;
            for &c in &gp.pruned {
                if let Some(b) = (0..gr.blocks).find(|b| !seen.contains(&(b * bl + c % bl))) {
                    return Err(bad(format!(
                        "group {r}{at}: channel {c} is pruned but channel {} is not: a grouped conv ('{}') needs the same offsets pruned in each of its {} blocks of {bl}",
                        b * bl + c % bl,
                        gr.blocks_by.as_deref().unwrap_or(""),
                        gr.blocks
                    )));
                }
            }
        }
        for (lo, hi) in ranges(a, r) {
            if (lo..hi).all(|c| seen.contains(&c)) {
                return Err(bad(format!(
                    "group {r}{at}: channels {lo}..{hi} would all be pruned"
                )));
            }
        }
    }
    Ok(())
}
