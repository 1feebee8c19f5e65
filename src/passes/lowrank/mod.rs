//! `lowrank`: truncated-SVD split of MatMul / Gemm / 1x1 Conv with a constant weight, `W ~ (U_r S_r^1/2)
//! (S_r^1/2 V_r^T)`, as two nodes (see `rule.rs` for the rewiring and `svd.rs` for the numerics).
//!
//! The pass walks every graph (bodies of If/Loop/Scan included; weights may live in an enclosing graph),
//! collects the candidate weights, decomposes them in parallel (one matrix per rayon task, each sequential,
//! so the result does not depend on the thread count), chooses each layer's rank, and rewrites. A layer is
//! split only when it saves at least `min_saving` of its weight's parameters; every candidate gets a remark.
//!
//! Whole-model modes (`budget.rs`): `target_params` allocates ranks across layers for a global parameter
//! count by the smallest error per saved parameter; `drift_budget` bisects that target, measuring each
//! candidate model with the pass services' drift measure, for the smallest model whose worst output cosine
//! stays within the budget. Both use the exact SVD of every layer (the allocation reads every singular value).

pub mod budget;
mod rule;
pub mod svd;

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ir::{Graph, Model, NodeId, Patch};
use crate::passes::fold::weights::OuterConstants;
use crate::passes::{Outcome, Pass, PassContext, PassReport};
use onnx_rewrite_linalg::faer::{self, Mat};
use rule::Matrix;
use svd::Target;

pub const PASS: &str = "lowrank";

/// The energy kept when no rank target is given.
pub const DEFAULT_ENERGY: f64 = 0.95;

crate::pass_options! {
    /// Options of `lowrank`: at most one of rank, ratio, energy, max_error, target_params, drift_budget (none:
    /// energy 0.95).
    pub struct LowRankOptions {
        /// Rank of every split layer (capped at full rank).
        rank: Option<u64> = None,
        /// Rank as a fraction of full rank min(K, N), in (0, 1].
        ratio: Option<f64> = None,
        /// Keep this fraction of the sum of squared singular values, in (0, 1].
        energy: Option<f64> = None,
        /// Largest relative Frobenius error ||W - W_r|| / ||W|| per layer, in [0, 1).
        max_error: Option<f64> = None,
        /// Whole model: keep at most this fraction, in (0, 1], of the considered layers' weight parameters; ranks go where they cost the least error per parameter (squared error relative to each layer's energy), exact SVD.
        target_params: Option<f64> = None,
        /// Whole model: the smallest parameter target whose worst output cosine against the original stays at least this, in (0, 1] (bisection, each candidate measured with the drift measure of the pass services: the input flags' samples).
        drift_budget: Option<f64> = None,
        /// drift_budget: largest number of bisection steps (candidate models measured besides the two ends).
        search_steps: u64 = 6,
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
    mode: Mode,
}

/// How ranks are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Each layer on its own.
    PerLayer(Target),
    /// Whole model: a fraction of the considered layers' parameters.
    Params(f64),
    /// Whole model: the smallest parameter target meeting this worst output cosine.
    Drift(f64),
}

/// Whether `e` is the error of a `drift_budget` that no split meets (exit code 4, as for drift past a
/// validation tolerance).
pub fn budget_unmet(e: &Error) -> bool {
    matches!(e, Error::BudgetUnmet { pass, .. } if pass == PASS)
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
        let mut modes: Vec<Mode> = targets.into_iter().map(Mode::PerLayer).collect();
        if let Some(f) = opts.target_params {
            if !(f > 0.0 && f <= 1.0) {
                return usage(format!("target_params={f} is outside (0, 1]"));
            }
            modes.push(Mode::Params(f));
        }
        if let Some(c) = opts.drift_budget {
            if !(c > 0.0 && c <= 1.0) {
                return usage(format!(
                    "drift_budget={c} is outside (0, 1] (the worst output cosine to keep)"
                ));
            }
            modes.push(Mode::Drift(c));
        }
        if modes.len() > 1 {
            return usage(format!(
                "give at most one of rank, ratio, energy, max_error, target_params, drift_budget ({} given)",
                modes.len()
            ));
        }
        if modes.is_empty() {
            modes.push(Mode::PerLayer(Target::Energy(DEFAULT_ENERGY)));
        }
        if !matches!(modes[0], Mode::PerLayer(_)) && opts.randomized == "always" {
            return usage(
                "randomized=always: target_params and drift_budget use the exact SVD (they read every singular value)"
                    .into(),
            );
        }
        if opts.search_steps == 0 {
            return usage("search_steps must be at least 1".into());
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
            mode: modes[0],
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

/// A layer input's whitening factor `L` and the number of rows it was estimated from.
type Whitening = (Mat<f64>, u64);

/// A candidate decomposed for the whole-model modes: the exact SVD (of `L^T W` when whitened) and the
/// whitening factor with its row count.
struct Prepared {
    d: svd::Decomp,
    white: Option<Whitening>,
}

enum Phase<'m> {
    Collect(Vec<Candidate>),
    Apply(BTreeMap<(usize, NodeId), (&'m Matrix, Plan)>),
}

struct Walker<'a> {
    ops: &'a [String],
    phase: Phase<'a>,
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
                    rule::split(g, &mut p, id, m, plan.rank, &plan.p, &plan.q, freed)?;
                    report.record(g.apply(p)?);
                }
            }
        }
        Ok(())
    }
}

/// Split the nodes of `plans` (keyed by graph index in walk order and node) in `model`.
fn apply_plans(
    model: &mut Model,
    ops: &[String],
    plans: BTreeMap<(usize, NodeId), (&Matrix, Plan)>,
    report: &mut PassReport,
    freed: &mut BTreeSet<String>,
) -> Result<()> {
    let mut walker = Walker {
        ops,
        phase: Phase::Apply(plans),
        graphs: 0,
    };
    walker.graph(
        &mut model.graph,
        &OuterConstants::default(),
        "",
        report,
        freed,
    )
}

/// Keeps faer sequential while alive (each matrix on one thread, layers in parallel one level up), then
/// restores the previous setting, also on an early return.
struct Sequential(faer::Par);

impl Sequential {
    fn new() -> Sequential {
        let previous = faer::get_global_parallelism();
        faer::set_global_parallelism(faer::Par::Seq);
        Sequential(previous)
    }
}

impl Drop for Sequential {
    fn drop(&mut self) {
        faer::set_global_parallelism(self.0);
    }
}

/// `x` in parts per million, rounded down (a stat never overstates a fraction or a cosine).
fn ppm(x: f64) -> u64 {
    (x * 1e6).floor().max(0.0) as u64
}

impl Pass for LowRank {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<PassReport> {
        if matches!(self.mode, Mode::Drift(_)) && cx.drift.is_none() {
            return Err(Error::Pass {
                pass: PASS.into(),
                msg: "drift_budget needs a drift measure (sample inputs to run the original and each candidate on), and none was given"
                    .into(),
            });
        }
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
        let Phase::Collect(found) = walker.phase else {
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
        let gram_of = |c: &Candidate| {
            c.m.rows_input
                .as_ref()
                .filter(|_| c.graph == 0)
                .and_then(|x| grams.get(x))
        };
        // Each matrix is decomposed sequentially, layers in parallel: results are collected in candidate order.
        let seq = Sequential::new();
        let decided: Vec<std::result::Result<Plan, String>> = match self.mode {
            Mode::PerLayer(target) => found
                .par_iter()
                .enumerate()
                .map(|(i, c)| self.plan(c, i as u64, target, gram_of(c)))
                .collect(),
            Mode::Params(_) | Mode::Drift(_) => {
                let prepared: Vec<std::result::Result<Prepared, String>> = found
                    .par_iter()
                    .map(|c| self.prepare(c, gram_of(c)))
                    .collect();
                let ranks = self.whole_model(model, cx, &found, &prepared, &mut report)?;
                found
                    .par_iter()
                    .zip(prepared)
                    .zip(ranks)
                    .map(|((c, p), r)| match (p, r) {
                        (Err(why), _) => Err(why),
                        (Ok(p), Some(r)) => self.finish(c, &p.d, p.white.as_ref(), r, "exact SVD"),
                        (Ok(_), None) => Err(self.left_whole(c)),
                    })
                    .collect()
            }
        };
        drop(seq);
        let mut plans = BTreeMap::new();
        let (mut before, mut after) = (0u64, 0u64);
        for (c, d) in found.iter().zip(decided) {
            match d {
                Ok(plan) => {
                    report.stat("lowrank_split", 1);
                    before += (c.m.k * c.m.n) as u64;
                    after += (plan.rank * (c.m.k + c.m.n)) as u64;
                    report.remark(&c.at, Outcome::Applied, plan.summary.clone());
                    plans.insert((c.graph, c.node), (&c.m, plan));
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
        apply_plans(model, &self.opts.ops, plans, &mut report, &mut freed)?;
        Ok(report)
    }
}

impl LowRank {
    /// The matrix to decompose: W, or `L^T W` with the whitening factor of the layer's input.
    fn matrix(
        &self,
        c: &Candidate,
        gram: Option<&Gram>,
    ) -> std::result::Result<(Mat<f64>, Option<Whitening>), String> {
        let w = svd::matrix(c.m.k, c.m.n, &c.m.data);
        match gram {
            Some(g) => {
                let l = svd::whitening(&g.sum, c.m.k, g.rows, self.opts.damping)?;
                Ok((svd::whiten(l.as_ref(), w.as_ref()), Some((l, g.rows))))
            }
            None => Ok((w, None)),
        }
    }

    /// Decompose one candidate and choose its rank; `Err(why)` when it is skipped.
    fn plan(
        &self,
        c: &Candidate,
        index: u64,
        target: Target,
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
        let (w, white) = self.matrix(c, gram)?;
        let fixed = match target {
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
            if let Some(r) = svd::select(&d, full, target, multiple) {
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
        let r = svd::select(&d, full, target, multiple).unwrap_or(full);
        self.finish(c, &d, white.as_ref(), r, &method)
    }

    /// The exact decomposition of one candidate, for the whole-model modes.
    fn prepare(&self, c: &Candidate, gram: Option<&Gram>) -> std::result::Result<Prepared, String> {
        if c.m.k.min(c.m.n) == 0 {
            return Err("its weight is empty".into());
        }
        let (w, white) = self.matrix(c, gram)?;
        Ok(Prepared {
            d: svd::exact(w.as_ref())?,
            white,
        })
    }

    /// The split of one candidate at rank `r` of `d`: its factors (mapped back through the whitening) and
    /// its remark; `Err(why)` when that rank does not save `min_saving`.
    fn finish(
        &self,
        c: &Candidate,
        d: &svd::Decomp,
        white: Option<&Whitening>,
        r: usize,
        method: &str,
    ) -> std::result::Result<Plan, String> {
        let (k, n) = (c.m.k, c.m.n);
        let (full, params) = (k.min(n), k * n);
        let after = r * (k + n);
        let saving = 1.0 - after as f64 / params as f64;
        let min_saving = self.opts.min_saving;
        if after >= params || saving < min_saving {
            return Err(format!(
                "rank {r} of {full} would keep {after} of {params} parameters (saving {:.1}% < {:.1}%)",
                saving * 100.0,
                min_saving * 100.0
            ));
        }
        let (mut p, q) = d.factors(r);
        let what = match white {
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

    /// Why a whole-model mode left a layer whole.
    fn left_whole(&self, c: &Candidate) -> String {
        let (k, n) = (c.m.k, c.m.n);
        let m = self.opts.multiple;
        if budget::rank_range(k, n, m as usize, self.opts.min_saving).is_none() {
            return format!(
                "no rank{} saves {:.1}% of its {} parameters ({k}x{n})",
                if m > 1 {
                    format!(" (a multiple of {m})")
                } else {
                    String::new()
                },
                self.opts.min_saving * 100.0,
                k * n
            );
        }
        format!(
            "left whole ({k}x{n}): the whole-model target was met by splitting layers that cost less error per saved parameter"
        )
    }

    /// The model with the candidates split at `ranks` (`None`: left whole), for a drift measure.
    fn variant(
        &self,
        model: &Model,
        found: &[Candidate],
        prepared: &[std::result::Result<Prepared, String>],
        ranks: &[Option<usize>],
    ) -> Result<Model> {
        let mut m = model.clone();
        let mut plans = BTreeMap::new();
        for ((c, p), r) in found.iter().zip(prepared).zip(ranks) {
            if let (Ok(p), Some(r)) = (p, r) {
                if let Ok(plan) = self.finish(c, &p.d, p.white.as_ref(), *r, "") {
                    plans.insert((c.graph, c.node), (&c.m, plan));
                }
            }
        }
        let mut scratch = PassReport::new(PASS);
        apply_plans(
            &mut m,
            &self.opts.ops,
            plans,
            &mut scratch,
            &mut BTreeSet::new(),
        )?;
        Ok(m)
    }

    /// The rank of every candidate (`None`: left whole) for `target_params` or `drift_budget`, with the
    /// model-level remark and stats.
    fn whole_model(
        &self,
        model: &Model,
        cx: &mut PassContext,
        found: &[Candidate],
        prepared: &[std::result::Result<Prepared, String>],
        report: &mut PassReport,
    ) -> Result<Vec<Option<usize>>> {
        let o = &self.opts;
        let multiple = o.multiple as usize;
        let idx: Vec<usize> = (0..found.len()).filter(|&i| prepared[i].is_ok()).collect();
        let layers: Vec<budget::Layer> = idx
            .iter()
            .map(|&i| budget::Layer {
                k: found[i].m.k,
                n: found[i].m.n,
                s: prepared[i]
                    .as_ref()
                    .map(|p| p.d.s.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let total: u64 = layers.iter().map(|l| (l.k * l.n) as u64).sum();
        let least = budget::smallest(&layers, multiple, o.min_saving);
        let expand = |a: &budget::Allocation| -> Vec<Option<usize>> {
            let mut v = vec![None; found.len()];
            for (j, &i) in idx.iter().enumerate() {
                v[i] = a.ranks[j];
            }
            v
        };
        let frac = |p: u64| {
            if total == 0 {
                1.0
            } else {
                p as f64 / total as f64
            }
        };
        let allocate = |want: u64| {
            budget::allocate(&layers, want, multiple, o.min_saving).map_err(|least| Error::Pass {
                pass: PASS.into(),
                msg: format!(
                    "target_params asks for at most {want} of the {total} weight parameters of the {} considered layers, below the smallest model: {least} (every layer at its smallest rank{}), target_params >= {:.4}",
                    layers.len(),
                    if multiple > 1 { format!(", a multiple of {multiple}") } else { String::new() },
                    frac(least)
                ),
            })
        };
        let splits = |a: &budget::Allocation| a.ranks.iter().filter(|r| r.is_some()).count();
        report.stat("lowrank_params_considered", total);
        let (chosen, target) = match self.mode {
            Mode::Params(f) => {
                let a = allocate((f * total as f64).floor() as u64)?;
                report.remark(
                    "<model>",
                    Outcome::Applied,
                    format!(
                        "target_params {f}: {} of {} considered layers split, weight parameters {total} -> {} ({:.4}), sum of squared relative errors {:.4}",
                        splits(&a),
                        layers.len(),
                        a.params,
                        frac(a.params),
                        a.error
                    ),
                );
                (a, f)
            }
            Mode::Drift(want) => {
                let mut evals = 0u64;
                let mut measure = |cx: &mut PassContext,
                                   report: &mut PassReport,
                                   a: &budget::Allocation|
                 -> Result<f64> {
                    let m = self.variant(model, found, prepared, &expand(a))?;
                    let c = cx.measure_drift(PASS, &m)?.min_cosine();
                    evals += 1;
                    cx.progress.advance(1);
                    report.remark(
                        "<model>",
                        Outcome::Applied,
                        format!(
                            "drift search: {} of {} layers split, weight parameters {} of {total} ({:.4}) -> worst output cosine {c:.6} ({} the budget {want})",
                            splits(a),
                            layers.len(),
                            a.params,
                            frac(a.params),
                            if c >= want { "meets" } else { "misses" }
                        ),
                    );
                    Ok(c)
                };
                let smallest = allocate(least)?;
                if splits(&smallest) == 0 {
                    report.remark(
                        "<model>",
                        Outcome::Skipped,
                        "drift_budget: no layer can be split (none saves min_saving)",
                    );
                    return Ok(vec![None; found.len()]);
                }
                cx.progress
                    .start("lowrank drift search", Some(o.search_steps + 2));
                let c_lo = measure(cx, report, &smallest)?;
                let (best, best_budget, best_c) = if c_lo >= want {
                    (smallest, least, c_lo)
                } else {
                    // the least lossy split: one greedy move from the whole model
                    let top = allocate(total - 1)?;
                    let c_hi = measure(cx, report, &top)?;
                    if c_hi < want {
                        cx.progress.finish();
                        let names: Vec<&str> = idx
                            .iter()
                            .zip(&top.ranks)
                            .filter(|(_, r)| r.is_some())
                            .map(|(&i, _)| match found[i].at.as_str() {
                                "" => "an unnamed node",
                                at => at,
                            })
                            .collect();
                        return Err(Error::BudgetUnmet {
                            pass: PASS.into(),
                            msg: format!(
                                "drift_budget cannot be met: the least lossy split ({} of {total} weight parameters kept, splitting {}) already gives worst output cosine {c_hi:.6} < {want}",
                                top.params,
                                names.join(", ")
                            ),
                        });
                    }
                    // bisection over the parameter budget: `lo` misses, `hi` meets
                    let (mut lo, mut hi) = (least, total - 1);
                    let mut lo_ranks = smallest.ranks.clone();
                    let (mut best, mut best_c) = (top, c_hi);
                    let mut steps = 0;
                    while steps < o.search_steps && hi - lo > 1 {
                        let mid = lo + (hi - lo) / 2;
                        let a = allocate(mid)?;
                        if a.ranks == best.ranks {
                            hi = mid;
                            continue;
                        }
                        if a.ranks == lo_ranks {
                            lo = mid;
                            continue;
                        }
                        steps += 1;
                        let c = measure(cx, report, &a)?;
                        if c >= want {
                            hi = mid;
                            best = a;
                            best_c = c;
                        } else {
                            lo = mid;
                            lo_ranks = a.ranks;
                        }
                    }
                    (best, hi, best_c)
                };
                cx.progress.finish();
                let target = frac(best_budget);
                report.remark(
                    "<model>",
                    Outcome::Applied,
                    format!(
                        "drift_budget {want}: target_params {target:.4} chosen after {evals} measured candidates, worst output cosine {best_c:.6}; {} of {} considered layers split, weight parameters {total} -> {} ({:.4}), sum of squared relative errors {:.4}",
                        splits(&best),
                        layers.len(),
                        best.params,
                        frac(best.params),
                        best.error
                    ),
                );
                report.stat("lowrank_drift_cosine_ppm", ppm(best_c));
                report.stat("lowrank_drift_evaluations", evals);
                (best, target)
            }
            Mode::PerLayer(_) => unreachable!("per-layer targets do not reach whole_model"),
        };
        report.stat("lowrank_target_ppm", ppm(target));
        report.stat("lowrank_params_kept", chosen.params);
        Ok(expand(&chosen))
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
        g.rows += onnx_rewrite_linalg::add_gram(&mut g.sum, k, values);
        Ok(())
    };
    cal.calibrate(model, &names, &mut observe)?;
    Ok(grams)
}
