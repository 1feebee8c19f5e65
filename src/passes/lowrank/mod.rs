//! `lowrank`: truncated-SVD split of MatMul / Gemm / 1x1 Conv with a constant weight, `W ~ (U_r S_r^1/2)
//! (S_r^1/2 V_r^T)`, as two nodes (see `rule.rs` for the rewiring and `svd.rs` for the numerics).
//!
//! The pass walks every graph (bodies of If/Loop/Scan included; weights may live in an enclosing graph),
//! collects the candidate weights, decomposes them in parallel (one matrix per rayon task, each sequential,
//! so the result does not depend on the thread count), chooses each layer's rank, and rewrites. A layer is
//! split only when it saves at least `min_saving` of its weight's parameters; every candidate gets a remark.

mod rule;
pub mod svd;

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ir::{Graph, Model, NodeId, Patch};
use crate::passes::fold::weights::OuterConstants;
use crate::passes::{Outcome, Pass, PassContext, PassReport};
use rule::Matrix;
use svd::Target;

pub const PASS: &str = "lowrank";

/// The energy kept when no rank target is given.
pub const DEFAULT_ENERGY: f64 = 0.95;

crate::pass_options! {
    /// Options of `lowrank`: at most one of rank, ratio, energy, max_error (none: energy 0.95).
    pub struct LowRankOptions {
        /// Rank of every split layer (capped at full rank).
        rank: Option<u64> = None,
        /// Rank as a fraction of full rank min(K, N), in (0, 1].
        ratio: Option<f64> = None,
        /// Keep this fraction of the sum of squared singular values, in (0, 1].
        energy: Option<f64> = None,
        /// Largest relative Frobenius error ||W - W_r|| / ||W|| per layer, in [0, 1).
        max_error: Option<f64> = None,
        /// Round each rank up to a multiple of this.
        multiple: u64 = 1,
        /// Split a layer only when it saves at least this fraction of its weight's parameters.
        min_saving: f64 = 0.1,
        /// Op types to consider (MatMul, Gemm, Conv).
        ops: Vec<String> = vec!["MatMul".into(), "Gemm".into(), "Conv".into()],
        /// Randomized SVD: auto (for a fixed rank or ratio far below full rank), always, never.
        randomized: String = "auto".into(),
        /// Extra columns of the randomized SVD's test matrix.
        oversample: u64 = 10,
        /// Power iterations of the randomized SVD.
        power_iters: u64 = 2,
        /// Seed of the randomized SVD (each layer uses seed + its index).
        seed: u64 = 0,
        /// Largest K*N whose randomized result is checked against the exact singular values.
        check_limit: u64 = 1 << 20,
        /// Relative excess error over the optimal truncation a checked randomized result may have (else exact).
        randomized_tolerance: f64 = 0.02,
        /// Minimise each layer's output error on calibration samples (the calibrator of the pass services)
        /// instead of its weight error: SVD of `L^T W` with `L L^T` the input's second-moment matrix (MatMul and
        /// Gemm without transA in the main graph; other layers use the plain SVD).
        data_aware: bool = false,
        /// Regularisation of the input covariance, relative to its mean diagonal.
        damping: f64 = 0.01,
    }
}

pub struct LowRank {
    opts: LowRankOptions,
    target: Target,
}

impl LowRank {
    pub fn new(opts: LowRankOptions) -> Result<LowRank> {
        let usage = |m: String| Err(Error::Usage(format!("pass '{PASS}': {m}")));
        let mut targets = Vec::new();
        if let Some(r) = opts.rank {
            if r == 0 {
                return usage("rank must be at least 1".into());
            }
            targets.push(Target::Rank(r as usize));
        }
        if let Some(f) = opts.ratio {
            if !(f > 0.0 && f <= 1.0) {
                return usage(format!("ratio={f} is outside (0, 1]"));
            }
            targets.push(Target::Ratio(f));
        }
        if let Some(e) = opts.energy {
            if !(e > 0.0 && e <= 1.0) {
                return usage(format!("energy={e} is outside (0, 1]"));
            }
            targets.push(Target::Energy(e));
        }
        if let Some(e) = opts.max_error {
            if !(0.0..1.0).contains(&e) {
                return usage(format!("max_error={e} is outside [0, 1)"));
            }
            targets.push(Target::MaxError(e));
        }
        if targets.len() > 1 {
            return usage(format!(
                "give at most one of rank, ratio, energy, max_error ({} given)",
                targets.len()
            ));
        }
        if targets.is_empty() {
            targets.push(Target::Energy(DEFAULT_ENERGY));
        }
        if !(opts.min_saving < 1.0) || opts.min_saving.is_nan() {
            return usage(format!("min_saving={} must be below 1", opts.min_saving));
        }
        if opts.multiple == 0 {
            return usage("multiple must be at least 1".into());
        }
        if !matches!(opts.randomized.as_str(), "auto" | "always" | "never") {
            return usage(format!(
                "randomized={} (expected auto, always or never)",
                opts.randomized
            ));
        }
        for op in &opts.ops {
            if !matches!(op.as_str(), "MatMul" | "Gemm" | "Conv") {
                return usage(format!("op '{op}' (expected MatMul, Gemm or Conv)"));
            }
        }
        Ok(LowRank {
            target: targets[0],
            opts,
        })
    }
}

/// One candidate layer, found in the first walk.
struct Candidate {
    graph: usize,
    node: NodeId,
    at: String,
    m: Matrix,
}

/// The decision for one candidate.
struct Plan {
    rank: usize,
    p: Vec<f64>,
    q: Vec<f64>,
    summary: String,
}

enum Phase {
    Collect(Vec<Candidate>),
    Apply(BTreeMap<(usize, NodeId), (Matrix, Plan)>),
}

struct Walker<'a> {
    ops: &'a [String],
    phase: Phase,
    graphs: usize,
}

impl Walker<'_> {
    fn graph(
        &mut self,
        g: &mut Graph,
        outer: &OuterConstants,
        path: &str,
        report: &mut PassReport,
        freed: &mut BTreeSet<String>,
    ) -> Result<()> {
        let me = self.graphs;
        self.graphs += 1;
        let mut recurse = |g: &mut Graph,
                           outer: &OuterConstants,
                           path: &str,
                           report: &mut PassReport,
                           freed: &mut BTreeSet<String>| {
            self.graph(g, outer, path, report, freed)
        };
        crate::passes::fold::for_each_body(g, outer, path, PASS, report, freed, &mut recurse)?;
        for id in g.node_ids().to_vec() {
            let Some(node) = g.node(id) else { continue };
            let at = format!("{path}{}", node.name());
            match &mut self.phase {
                Phase::Collect(found) => match rule::matrix_of(g, outer, id, self.ops)? {
                    Ok(None) => {}
                    Ok(Some(m)) => found.push(Candidate {
                        graph: me,
                        node: id,
                        at,
                        m,
                    }),
                    Err(why) => {
                        report.stat("lowrank_skipped", 1);
                        report.remark(at, Outcome::Skipped, why);
                    }
                },
                Phase::Apply(plans) => {
                    let Some((m, plan)) = plans.remove(&(me, id)) else {
                        continue;
                    };
                    let mut p = Patch::new(PASS);
                    rule::split(g, &mut p, id, &m, plan.rank, &plan.p, &plan.q, freed)?;
                    report.record(g.apply(p)?);
                }
            }
        }
        Ok(())
    }
}

impl Pass for LowRank {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(PASS);
        let mut freed = BTreeSet::new();
        let mut walker = Walker {
            ops: &self.opts.ops,
            phase: Phase::Collect(Vec::new()),
            graphs: 0,
        };
        walker.graph(
            &mut model.graph,
            &OuterConstants::default(),
            "",
            &mut report,
            &mut freed,
        )?;
        let Phase::Collect(found) = std::mem::replace(&mut walker.phase, Phase::Collect(vec![]))
        else {
            unreachable!()
        };
        let grams = if self.opts.data_aware {
            let Some(cal) = cx.calibrator.as_mut() else {
                return Err(Error::Pass {
                    pass: PASS.into(),
                    msg: "data_aware needs a calibrator (calibration samples)".into(),
                });
            };
            second_moments(model, &found, cal.as_mut())?
        } else {
            BTreeMap::new()
        };
        // Each matrix is decomposed sequentially (faer's global parallelism set to Seq while the pass runs),
        // layers in parallel: results are collected in candidate order.
        let previous = faer::get_global_parallelism();
        faer::set_global_parallelism(faer::Par::Seq);
        let decided: Vec<std::result::Result<Plan, String>> = found
            .par_iter()
            .enumerate()
            .map(|(i, c)| {
                let gram =
                    c.m.rows_input
                        .as_ref()
                        .filter(|_| c.graph == 0)
                        .and_then(|x| grams.get(x));
                self.plan(c, i as u64, gram)
            })
            .collect();
        faer::set_global_parallelism(previous);
        let mut plans = BTreeMap::new();
        let (mut before, mut after) = (0u64, 0u64);
        for (c, d) in found.into_iter().zip(decided) {
            match d {
                Ok(plan) => {
                    report.stat("lowrank_split", 1);
                    before += (c.m.k * c.m.n) as u64;
                    after += (plan.rank * (c.m.k + c.m.n)) as u64;
                    report.remark(&c.at, Outcome::Applied, plan.summary.clone());
                    plans.insert((c.graph, c.node), (c.m, plan));
                }
                Err(why) => {
                    report.stat("lowrank_skipped", 1);
                    report.remark(&c.at, Outcome::Skipped, why);
                }
            }
        }
        report.stat("lowrank_params_before", before);
        report.stat("lowrank_params_after", after);
        report.stats.entry("lowrank_split".into()).or_insert(0);
        report.stats.entry("lowrank_skipped".into()).or_insert(0);
        if plans.is_empty() {
            return Ok(report);
        }
        walker.phase = Phase::Apply(plans);
        walker.graphs = 0;
        walker.graph(
            &mut model.graph,
            &OuterConstants::default(),
            "",
            &mut report,
            &mut freed,
        )?;
        Ok(report)
    }
}

impl LowRank {
    /// Decompose one candidate and choose its rank; `Err(why)` when it is skipped.
    fn plan(
        &self,
        c: &Candidate,
        index: u64,
        gram: Option<&Gram>,
    ) -> std::result::Result<Plan, String> {
        let o = &self.opts;
        let (k, n) = (c.m.k, c.m.n);
        let full = k.min(n);
        if full == 0 {
            return Err("its weight is empty".into());
        }
        let params = k * n;
        // the largest rank that saves min_saving: r (K + N) <= (1 - min_saving) K N
        let budget = ((1.0 - o.min_saving) * params as f64 / (k + n) as f64).floor() as usize;
        let mut w = svd::matrix(k, n, &c.m.data);
        let mut white = None;
        if let Some(g) = gram {
            let l = svd::whitening(&g.sum, k, g.rows, o.damping)?;
            w = svd::whiten(l.as_ref(), w.as_ref());
            white = Some((l, g.rows));
        }
        let fixed = match self.target {
            Target::Rank(r) => Some(r.min(full)),
            Target::Ratio(f) => Some(((f * full as f64).ceil() as usize).min(full)),
            _ => None,
        };
        let multiple = o.multiple as usize;
        let use_randomized = match (o.randomized.as_str(), fixed) {
            ("always", _) => true,
            ("auto", Some(r)) => full >= 256 && r + o.oversample as usize <= full / 4,
            _ => false,
        };
        let mut method = "exact SVD".to_string();
        let mut decomp = None;
        if use_randomized {
            let want = match fixed {
                Some(r) => r.div_ceil(multiple) * multiple,
                None => budget.max(1),
            };
            let d = svd::randomized(
                w.as_ref(),
                want.min(full),
                o.oversample as usize,
                o.power_iters as usize,
                o.seed.wrapping_add(index),
            )?;
            method = "randomized SVD".into();
            if let Some(r) = svd::select(&d, full, self.target, multiple) {
                if r <= d.s.len() {
                    let mut ok = true;
                    if (k * n) as u64 <= o.check_limit {
                        let s = svd::singular_values(w.as_ref())?;
                        let opt = svd::optimal_error(&s, r);
                        let got = d.rel_error(r);
                        ok = got <= opt * (1.0 + o.randomized_tolerance) + 1e-12;
                        method = format!(
                            "randomized SVD, error {got:.4} vs optimal {opt:.4}{}",
                            if ok { "" } else { ": exact SVD used" }
                        );
                    } else {
                        method = "randomized SVD (unchecked: larger than check_limit)".into();
                    }
                    if ok {
                        decomp = Some(d);
                    }
                }
            }
            if decomp.is_none() && !method.contains("exact") {
                method = "exact SVD (the randomized one did not reach the target)".into();
            }
        }
        let d = match decomp {
            Some(d) => d,
            None => svd::exact(w.as_ref())?,
        };
        let r = svd::select(&d, full, self.target, multiple).unwrap_or(full);
        let after = r * (k + n);
        let saving = 1.0 - after as f64 / params as f64;
        if after >= params || saving < o.min_saving {
            return Err(format!(
                "rank {r} of {full} would keep {after} of {params} parameters (saving {:.1}% < {:.1}%)",
                saving * 100.0,
                o.min_saving * 100.0
            ));
        }
        let (mut p, q) = d.factors(r);
        let what = match &white {
            Some((l, rows)) => {
                svd::unwhiten(l.as_ref(), &mut p, k, r);
                format!("data-aware on {rows} rows, output")
            }
            None => "weight".into(),
        };
        Ok(Plan {
            rank: r,
            summary: format!(
                "rank {r} of {full} ({k}x{n}): energy kept {:.4}, relative {what} error {:.4}, params {params} -> {after} ({method})",
                d.energy(r),
                d.rel_error(r),
            ),
            p,
            q,
        })
    }
}

/// Running `sum x x^T` over the rows of one tensor.
struct Gram {
    k: usize,
    sum: Vec<f64>,
    rows: u64,
}

/// Second moments of the inputs of the data-aware candidates, streamed through the calibrator (one sample's
/// activations at a time).
fn second_moments(
    model: &Model,
    found: &[Candidate],
    cal: &mut dyn crate::passes::quantize::calibrate::Calibrator,
) -> Result<BTreeMap<String, Gram>> {
    let mut grams: BTreeMap<String, Gram> = BTreeMap::new();
    for c in found.iter().filter(|c| c.graph == 0) {
        if let Some(x) = &c.m.rows_input {
            grams.entry(x.clone()).or_insert_with(|| Gram {
                k: c.m.k,
                sum: vec![0.0; c.m.k * c.m.k],
                rows: 0,
            });
        }
    }
    if grams.is_empty() {
        return Ok(grams);
    }
    let names: Vec<String> = grams.keys().cloned().collect();
    let mut observe = |name: &str, values: &[f32]| -> Result<()> {
        let Some(g) = grams.get_mut(name) else {
            return Ok(());
        };
        let k = g.k;
        if k == 0 || values.len() % k != 0 {
            return Err(Error::Pass {
                pass: PASS.into(),
                msg: format!("'{name}' has {} values, not rows of {k}", values.len()),
            });
        }
        let row: &mut Vec<f64> = &mut vec![0.0; k];
        for chunk in values.chunks_exact(k) {
            for (d, s) in row.iter_mut().zip(chunk) {
                *d = f64::from(*s);
            }
            if row.iter().any(|v| !v.is_finite()) {
                continue;
            }
            for i in 0..k {
                let xi = row[i];
                let line = &mut g.sum[i * k..(i + 1) * k];
                for (j, xj) in row.iter().enumerate() {
                    line[j] += xi * xj;
                }
            }
            g.rows += 1;
        }
        Ok(())
    };
    cal.calibrate(model, &names, &mut observe)?;
    Ok(grams)
}
