//! Static QDQ quantization (`quantize{mode=static}`): calibrate activation ranges on sample inputs through the
//! pipeline's `Calibrator`, then insert QuantizeLinear -> DequantizeLinear pairs on the activations feeding
//! quantisable ops and on their outputs, in the layout ONNX Runtime fuses into integer kernels:
//!
//! - one shared Q/DQ pair per tensor (every reader reads the DequantizeLinear output; a graph output keeps the
//!   float value);
//! - weights of Conv / ConvTranspose / Gemm / MatMul become int8 initializers with a symmetric per-channel (or
//!   per-tensor) scale behind one DequantizeLinear; the float weight leaves the file;
//! - a bias becomes int32 with scale = input scale x weight scale and zero point 0;
//! - Relu / Clip right after a quantised op is absorbed: the pair goes on its output instead (exact, ONNX
//!   Runtime fuses the activation into the kernel);
//! - data-movement ops (Reshape, Transpose, Flatten, Squeeze, Unsqueeze, MaxPool, Identity) whose input is
//!   quantised get a pair on their output with their input's parameters (exact: they move integers).
//!
//! Quality options beyond ONNX Runtime's: cross-layer equalisation (`cle.rs`) through positively homogeneous
//! activations, Percentile / Entropy ranges, bias correction, and a sensitivity search (`drift_budget`) that
//! keeps the layers whose quantization costs the most output cosine in float until the budget is met. Every
//! choice is a remark.
//!
//! Four stages, one module each, data flowing one way (this module only sequences them):
//!
//! 1. `select` (graph + options -> `QdqSite`s, or why a candidate stays float; `dataflow` holds the graph facts
//!    it asks about) and `tensor_set` (which tensors the sites quantise);
//! 2. `observe` (the calibrator -> per-tensor statistics, per-channel means for bias correction);
//! 3. the plan: `decide` (statistics -> parameters, weight scales, bias shifts, nodes left float),
//!    `sensitivity` (the drift budget may keep more float), `plan` (`assemble` -> the serde `QdqPlan`, read /
//!    write), `bind` (a plan, assembled or loaded, checked against the graph and resolved to ids);
//! 4. `build` (bound plan -> one `Patch`).
//!
//! `load_plan` replaces 1-3 (bind excepted) by a plan read from a file: the opset is raised and equalisation
//! run again as the plan says, nothing is calibrated. `plan` writes the plan a run builds from; `dry_run` runs
//! on a copy and leaves the model as it was. A calibrating run builds from its own plan
//! by the road a loaded one takes, so loading the plan a run wrote rebuilds the same bytes.
//!
//! Activations are those of the main graph (the calibrator runs it); nodes inside `If`/`Loop` bodies are left
//! with a remark (weight-only quantization reaches the weights they read).

mod bind;
mod build;
pub mod cle;
mod dataflow;
mod decide;
mod observe;
pub mod plan;
pub mod ranges;
mod select;
mod sensitivity;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ir::{Model, NodeId};
use crate::passes::{Outcome, PassContext, PassReport};

use bind::{bind, PlanSource};
use decide::{decide, Calibration};
use plan::{assemble, PlanHeader};
pub use plan::{
    QdqBiasUse, QdqBodyWeights, QdqConstant, QdqConstantUse, QdqDecision, QdqNode, QdqPlan,
    QdqTensor, QdqWeight, QdqWeightUse,
};
use ranges::RangeMethod;
pub use select::default_ops;
use select::{QdqSite, Selection};

use super::PASS;

crate::pass_options! {
    /// Options of static QDQ quantization.
    pub struct StaticQdqOptions {
        /// Activation range method: minmax, percentile or entropy.
        method: String = "minmax".to_string(),
        /// Percentile of magnitudes kept by method=percentile.
        percentile: f64 = 99.999,
        /// Activation type: uint8 or int8.
        activation_type: String = "uint8".to_string(),
        /// Per-channel weight scales (needs ai.onnx 13: the opset is raised, or per-tensor is used where it cannot be).
        per_channel: bool = true,
        /// Op types to quantise.
        ops: Vec<String> = default_ops(),
        /// Only nodes matching one of these (node name, op type, or a name pattern with `*` / `?`); empty = all.
        include: Vec<String> = Vec::new(),
        /// Nodes matching one of these (node name, op type, or a name pattern with `*` / `?`) stay float.
        exclude: Vec<String> = Vec::new(),
        /// Cross-layer equalisation of Conv/Gemm -> Relu/LeakyRelu/PRelu -> Conv/Gemm chains before quantising.
        equalize: bool = false,
        /// Correct each bias for the mean shift its weight's quantization error causes (from the per-channel means of the layer's input seen in calibration).
        bias_correction: bool = false,
        /// Keep the most sensitive layers float until the worst output cosine against the original is at least this (0 = off).
        drift_budget: f64 = 0.0,
        /// Op types outside the QDQ set whose weights become int8 weight-only (asymmetric per channel), wherever they are read: their activations have no Q/DQ form, but their weights need no float copy.
        weight_only_ops: Vec<String> = vec!["LSTM".into(), "GRU".into(), "RNN".into()],
        /// Histogram bins per activation for percentile / entropy.
        histogram_bins: usize = 2048,
        /// Write the plan the model is built from (JSON) here.
        plan: Option<PathBuf> = None,
        /// Build the model from this plan (as written with `plan`, possibly edited) instead of calibrating; the calibration and placement options are then the plan's.
        load_plan: Option<PathBuf> = None,
        /// Plan only: the model is left as it was (the report and `plan` still say what would be done).
        dry_run: bool = false,
    }
}

fn parse_method(opts: &StaticQdqOptions) -> Result<RangeMethod> {
    match opts.method.as_str() {
        "minmax" => Ok(RangeMethod::MinMax),
        "percentile" => {
            if !(opts.percentile > 0.0 && opts.percentile <= 100.0) {
                return Err(Error::Usage(format!(
                    "pass '{PASS}': percentile={} is outside (0, 100]",
                    opts.percentile
                )));
            }
            Ok(RangeMethod::Percentile(opts.percentile))
        }
        "entropy" => Ok(RangeMethod::Entropy),
        m => Err(Error::Usage(format!(
            "pass '{PASS}': method={m} is not one of minmax, percentile, entropy"
        ))),
    }
}

impl StaticQdqOptions {
    /// Usage errors (bad method, percentile, activation type or budget) before anything runs.
    pub fn check(&self) -> Result<()> {
        parse_method(self)?;
        parse_signed(self)?;
        if !(0.0..=1.0).contains(&self.drift_budget) {
            return Err(Error::Usage(format!(
                "pass '{PASS}': drift_budget={} is outside [0, 1]",
                self.drift_budget
            )));
        }
        Ok(())
    }
}

fn parse_signed(opts: &StaticQdqOptions) -> Result<bool> {
    match opts.activation_type.as_str() {
        "int8" => Ok(true),
        "uint8" => Ok(false),
        t => Err(Error::Usage(format!(
            "pass '{PASS}': activation_type={t} is not int8 or uint8"
        ))),
    }
}

/// Static QDQ quantization of `model` with the calibrator (and, for `drift_budget`, the drift measure) of `cx`.
pub fn quantize_static(
    model: &mut Model,
    cx: &mut PassContext,
    opts: &StaticQdqOptions,
) -> Result<PassReport> {
    Ok(run(model, cx, opts)?.0)
}

/// `quantize_static`, also returning the plan the model was (or, with `dry_run`, would be) built from.
pub fn run(
    model: &mut Model,
    cx: &mut PassContext,
    opts: &StaticQdqOptions,
) -> Result<(PassReport, QdqPlan)> {
    opts.check()?;
    if !opts.dry_run {
        let (mut report, plan) = run_on(model, cx, opts)?;
        refuse_broken(model, cx, &mut report)?;
        return Ok((report, plan));
    }
    let mut trial = model.clone();
    let (mut report, plan) = run_on(&mut trial, cx, opts)?;
    report.changed = false;
    report.changes = Default::default();
    Ok((report, plan))
}

/// No model whose outputs are non-finite where the original's are finite leaves this pass: with a drift
/// measure (the CLI always gives one, on the calibration samples) the quantised model is run and a broken one
/// is an error (exit 4) naming the first such output; without one there is nothing to run it on. A model the
/// measure cannot run as a whole (tract types an `If` the calibrator specialises per sample) is said in a
/// remark, not refused: the calibration itself ran it.
fn refuse_broken(model: &Model, cx: &mut PassContext, report: &mut PassReport) -> Result<()> {
    if cx.drift.is_none() {
        return Ok(());
    }
    let drift = match cx.measure_drift(PASS, model) {
        Ok(d) => d,
        Err(e @ (Error::CannotValidate { .. } | Error::Validate(_))) => {
            report.remark(
                "<model>",
                Outcome::Skipped,
                format!("outputs not checked for non-finite values: {e}"),
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match drift.first_broken() {
        Some(o) => Err(Error::NonFinite {
            pass: PASS.into(),
            msg: format!(
                "static QDQ would make output '{}' non-finite (NaN or inf) at {} of its {} values on the {} \
                 sample(s) where the original's are finite: not written (a tensor read by an op that amplifies \
                 8-bit errors? exclude its nodes with --exclude, or use --mode weight)",
                o.name, o.broken, o.elements, drift.samples
            ),
        }),
        None => Ok(()),
    }
}

fn run_on(
    model: &mut Model,
    cx: &mut PassContext,
    opts: &StaticQdqOptions,
) -> Result<(PassReport, QdqPlan)> {
    let mut report = PassReport::new(PASS);
    let (plan, source, calibrated) = match &opts.load_plan {
        Some(path) => (
            prepare_loaded(model, path, &mut report)?,
            PlanSource::File(path),
            None,
        ),
        None => {
            let (plan, n) = make_plan(model, cx, opts, &mut report)?;
            (plan, PlanSource::Computed, Some(n))
        }
    };
    let bound = bind(&model.graph, &plan, source)?;
    if let Some(path) = &opts.plan {
        plan.write(path)?;
    }
    if calibrated.is_none() {
        replay(&plan, &mut report);
    }
    let (patch, built) = build::build(&model.graph, &bound)?;
    report.record(model.graph.apply(patch)?);
    for n in &bound.nodes {
        report.remark(n.at.clone(), Outcome::Applied, n.summary());
    }
    for (at, o, why) in built.remarks {
        report.remark(at, o, why);
    }
    let kept = plan
        .nodes
        .iter()
        .filter(|n| n.decision == QdqDecision::KeptFloat)
        .count();
    report.stat("nodes_quantized", bound.nodes.len() as u64);
    report.stat("nodes_kept_float", kept as u64);
    report.stat("activations_quantized", built.tensors);
    report.stat("weights_quantized", built.weights);
    report.stat("biases_quantized", built.biases);
    report.stat("weight_bytes_before", built.bytes_before);
    report.stat("weight_bytes_after", built.bytes_after);
    report.stat("calibration_tensors", calibrated.unwrap_or(0) as u64);
    if let Some(bw) = &plan.body_weights {
        quantize_body_weights(model, cx, bw, true, "body_", &mut report)?;
    }
    if let Some(wo) = &plan.weight_only {
        quantize_body_weights(model, cx, wo, false, "weight_only_", &mut report)?;
    }
    Ok((report, plan))
}

/// Stages 1-3 on a calibrating run: raise the opset, equalise, select, observe, decide, search, assemble.
/// Returns the plan and the number of tensors calibrated.
fn make_plan(
    model: &mut Model,
    cx: &mut PassContext,
    opts: &StaticQdqOptions,
    report: &mut PassReport,
) -> Result<(QdqPlan, usize)> {
    let method = parse_method(opts)?;
    let signed = parse_signed(opts)?;
    let per_channel = raise_opset(model, opts.per_channel, report)?;
    if opts.equalize {
        cle::equalize(&mut model.graph, report)?;
    }
    remark_bodies(model, report);
    let selection = select::select(&model.graph, opts, per_channel)?;
    for s in &selection {
        if let Selection::Skipped { at, reason, .. } = s {
            report.remark(at.clone(), Outcome::Skipped, reason.clone());
        }
    }
    let (set, observed) = {
        let sites: Vec<&QdqSite> = selection.iter().filter_map(Selection::site).collect();
        let set = select::tensor_set(&model.graph, &sites, &opts.exclude);
        let observed = observe::observe(model, cx, &sites, &set, method, opts)?;
        (set, observed)
    };
    let cal = Calibration {
        method,
        signed,
        bias_correction: opts.bias_correction,
    };
    let mut choices = decide(&model.graph, selection, &set, &observed, cal, report)?;
    let header = PlanHeader {
        opset: model.opset(""),
        equalize: opts.equalize,
        body_weights: body_weights(model, opts, per_channel),
        weight_only: weight_only(model, opts, per_channel),
    };
    if opts.drift_budget > 0.0 {
        let trials = sensitivity::Trials {
            model,
            choices: &choices,
            exclude: &opts.exclude,
            header: &header,
        };
        let kept = sensitivity::search(&trials, cx, opts.drift_budget, report)?;
        for (n, why) in kept {
            choices.float.insert(n, (QdqDecision::KeptFloat, why));
        }
    }
    let chosen: BTreeSet<NodeId> = choices.candidates().iter().map(|s| s.node).collect();
    let plan = assemble(&model.graph, &choices, &chosen, &opts.exclude, &header);
    Ok((plan, observed.tensors))
}

/// Per-axis DequantizeLinear needs ai.onnx 13 and QuantizeLinear 10: raise the model, or fall back to
/// per-tensor weight scales where 13 cannot be reached. Returns whether weights are per channel.
fn raise_opset(model: &mut Model, per_channel: bool, report: &mut PassReport) -> Result<bool> {
    let opset = model.opset("").unwrap_or(1);
    if opset >= 13 || (!per_channel && opset >= 10) {
        return Ok(per_channel);
    }
    match crate::passes::convert::ensure_opset(model, 13) {
        Ok(r) => {
            if let Some(r) = r {
                report.changes.extend(r.changes);
            }
            report.remark(
                "<model>",
                Outcome::Applied,
                format!("ai.onnx opset raised from {opset} to 13 for per-axis Q/DQ"),
            );
            Ok(per_channel)
        }
        Err(e) if opset >= 10 => {
            report.remark(
                "<model>",
                Outcome::Skipped,
                format!("opset {opset} cannot be raised to 13 ({e}): per-tensor weight scales"),
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Read a plan and bring the model to the state the plan was made in: its opset, and equalised when it was.
fn prepare_loaded(model: &mut Model, path: &Path, report: &mut PassReport) -> Result<QdqPlan> {
    let plan = QdqPlan::read(path)?;
    let bad = |msg: String| Error::Invalid {
        file: Some(path.to_path_buf()),
        at: "opset".into(),
        msg,
    };
    let have = model.opset("");
    if have != plan.opset {
        let from = have.unwrap_or(1);
        match plan.opset {
            Some(to) if from < to => {
                let r = crate::passes::convert::ensure_opset(model, to).map_err(|e| {
                    bad(format!(
                        "the plan is for ai.onnx opset {to}; raising the model from {from} failed: {e}"
                    ))
                })?;
                if let Some(r) = r {
                    report.changes.extend(r.changes);
                }
                report.remark(
                    "<model>",
                    Outcome::Applied,
                    format!("ai.onnx opset raised from {from} to {to} for per-axis Q/DQ"),
                );
            }
            _ => {
                return Err(bad(format!(
                    "the plan is for ai.onnx opset {:?}, the model imports {have:?}",
                    plan.opset
                )))
            }
        }
    }
    if plan.equalize {
        cle::equalize(&mut model.graph, report)?;
    }
    remark_bodies(model, report);
    Ok(plan)
}

/// A loaded plan's decisions, said as a calibrating run says them.
fn replay(plan: &QdqPlan, report: &mut PassReport) {
    for n in plan
        .nodes
        .iter()
        .filter(|n| n.decision != QdqDecision::Quantize)
    {
        let why = n
            .reason
            .clone()
            .unwrap_or_else(|| "float in the plan".into());
        report.remark(n.node.clone(), Outcome::Skipped, why);
    }
    for t in &plan.tensors {
        if let Some(why) = &t.reason {
            let o = if t.scale.is_some() {
                Outcome::Applied
            } else {
                Outcome::Skipped
            };
            report.remark(t.name.clone(), o, why.clone());
        }
    }
}

/// Nodes with bodies: their activations are not calibrated.
fn remark_bodies(model: &Model, report: &mut PassReport) {
    for (_, n) in model.graph.nodes() {
        if n.has_subgraphs() {
            report.remark(
                select::display_name(n),
                Outcome::Skipped,
                "body activations stay float (the calibrator runs the main graph); the weights its bodies read \
                 become int8 weight-only (asymmetric per channel)",
            );
        }
    }
}

/// How the weights read inside bodies will be quantised (None when the model has no bodies).
fn body_weights(
    model: &Model,
    opts: &StaticQdqOptions,
    per_channel: bool,
) -> Option<QdqBodyWeights> {
    let known = crate::passes::quantize::weight::KNOWN_OPS;
    model
        .graph
        .nodes()
        .any(|(_, n)| n.has_subgraphs())
        .then(|| QdqBodyWeights {
            per_channel,
            ops: opts
                .ops
                .iter()
                .filter(|o| known.contains(&o.as_str()))
                .cloned()
                .collect(),
            include: opts.include.clone(),
            exclude: opts.exclude.clone(),
        })
}

/// How the weights of the ops outside the QDQ set (`weight_only_ops`: LSTM / GRU / RNN) will be quantised,
/// when the model has one of them anywhere.
fn weight_only(
    model: &Model,
    opts: &StaticQdqOptions,
    per_channel: bool,
) -> Option<QdqBodyWeights> {
    let mut found = false;
    model.walk(&mut |g| {
        found |= g
            .nodes()
            .any(|(_, n)| n.op.is_default_domain() && opts.weight_only_ops.contains(&n.op.op_type))
    });
    found.then(|| QdqBodyWeights {
        per_channel,
        ops: opts.weight_only_ops.clone(),
        include: opts.include.clone(),
        exclude: opts.exclude.clone(),
    })
}

/// Weights static QDQ cannot give Q/DQ activations still leave the file float32 only where they must: those
/// read inside `If` / `Loop` / `Scan` bodies (`bodies_only`: their activations are not calibrated) and those of
/// ops outside the QDQ set (LSTM / GRU / RNN, wherever they are) become int8 read through a DequantizeLinear, by
/// the weight-only pass, in its own (more accurate) asymmetric per-channel form: with float activations around
/// them no integer kernel needs the symmetric one. Its stats are reported with `prefix` (`body_`,
/// `weight_only_`).
fn quantize_body_weights(
    model: &mut Model,
    cx: &mut PassContext,
    bw: &QdqBodyWeights,
    bodies_only: bool,
    prefix: &str,
    report: &mut PassReport,
) -> Result<()> {
    if bodies_only && !model.graph.nodes().any(|(_, n)| n.has_subgraphs()) {
        return Ok(());
    }
    let cfg = crate::passes::quantize::weight::WeightConfig {
        qtype: crate::passes::quantize::params::QType::Int8,
        symmetric: false,
        per_channel: bw.per_channel,
        reduce_range: false,
        min_elements: crate::passes::quantize::weight::DEFAULT_MIN_ELEMENTS,
        ops: bw.ops.iter().cloned().collect(),
        include: bw.include.clone(),
        exclude: bw.exclude.clone(),
        bodies_only,
        spill: None,
    };
    let mut body = PassReport::new(PASS);
    crate::passes::quantize::weight::run(model, &cfg, cx, &mut body)?;
    report.changed |= body.changed;
    report.changes.extend(body.changes);
    for (k, n) in body.stats {
        report.stat(&format!("{prefix}{k}"), n);
    }
    report.remarks.extend(body.remarks);
    Ok(())
}

/// Plans made without an executor, for the stages' unit tests: selection and planning on builder graphs, with
/// calibration statistics fed by hand.
#[cfg(test)]
pub(super) mod testing {
    use std::collections::BTreeMap;

    use super::observe::Observed;
    use super::*;
    use crate::ir::builder::{model, GraphBuilder};
    use crate::ir::{DataType, Tensor};
    use crate::passes::quantize::calibrate::{Observer, StatsCollector, StatsOptions};

    /// x[1,2,4,4] -> Conv(w, b) -> Relu -> Reshape -> MatMul(w2) -> y, and x -> Sigmoid -> s: a graph input read
    /// by a quantised Conv and by an op left float.
    pub fn chain() -> Model {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["1", "2", "4", "4"]);
        let w: Vec<f32> = (0..6).map(|i| 0.25 * i as f32 - 0.6).collect();
        let w = b.initializer(Tensor::from_f32("w", vec![3, 2, 1, 1], &w));
        let bias = b.initializer(Tensor::from_f32("b", vec![3], &[0.1, -0.2, 0.3]));
        let c = b.node("Conv", &[x, w, bias], vec![], 1)[0];
        let r = b.node("Relu", &[c], vec![], 1)[0];
        let shape = b.initializer(Tensor::from_i64("shape", vec![2], &[1, 48]));
        let f = b.node("Reshape", &[r, shape], vec![], 1)[0];
        let w2: Vec<f32> = (0..96)
            .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5)
            .collect();
        let w2 = b.initializer(Tensor::from_f32("w2", vec![48, 2], &w2));
        let y = b.node("MatMul", &[f, w2], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["1", "2"]);
        let s = b.node("Sigmoid", &[x], vec![], 1)[0];
        b.output(s, DataType::FLOAT, &["1", "2", "4", "4"]);
        model(b.build(), 13)
    }

    /// The plan of `m` under `opts` (uint8, min / max) with each calibrated tensor seen over `range(name)`, and
    /// with bias correction the inputs of biased layers seen with per-channel means 0.3, -0.7, 1.1, ...
    pub fn synthetic_plan(
        m: &Model,
        opts: &StaticQdqOptions,
        range: impl Fn(&str) -> (f32, f32),
    ) -> QdqPlan {
        let g = &m.graph;
        let selection = select::select(g, opts, opts.per_channel).unwrap();
        let sites: Vec<&QdqSite> = selection.iter().filter_map(Selection::site).collect();
        let set = select::tensor_set(g, &sites, &opts.exclude);
        let mut stats = StatsCollector::new(StatsOptions { histogram_bins: 0 });
        for (v, src) in &set {
            if src.is_none() {
                let (lo, hi) = range(g.value_name(*v));
                stats.observe(g.value_name(*v), &[lo, hi]).unwrap();
            }
        }
        let mut means = BTreeMap::new();
        for s in sites.iter().filter(|s| s.bias.is_some()) {
            let channels = g.constant(s.weight.unwrap().1).unwrap().dims[1] as usize;
            let m: Vec<f64> = (0..channels)
                .map(|c| [0.3, -0.7, 1.1][c % 3] * (1 + c / 3) as f64)
                .collect();
            means.insert(s.acts[0], m);
        }
        let observed = Observed {
            stats: stats.stats,
            means,
            tensors: 0,
            samples: BTreeMap::new(),
        };
        let cal = Calibration {
            method: RangeMethod::MinMax,
            signed: false,
            bias_correction: opts.bias_correction,
        };
        let mut report = PassReport::new(PASS);
        let choices = decide(g, selection, &set, &observed, cal, &mut report).unwrap();
        let header = PlanHeader {
            opset: m.opset(""),
            equalize: false,
            body_weights: None,
            weight_only: None,
        };
        let chosen = choices.candidates().iter().map(|s| s.node).collect();
        assemble(g, &choices, &chosen, &opts.exclude, &header)
    }
}
