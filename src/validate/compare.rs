//! `compare`: the same inputs through both models, per-output metrics and checks, per-tensor attribution.

use std::collections::HashMap;

use tract_onnx::prelude::{DatumType, TValue, TVec};

use crate::error::{Error, Result};
use crate::ir::value::DimValue;
use crate::ir::{DataType, Model, Tensor as IrTensor, ValueDef};
use crate::passes::Progress;
use crate::validate::evaluate::{accuracy, measure_latency, AccuracyAcc, Latency};
use crate::validate::inputs::{prepare_samples, read_labels, InputSpec, Labels, Sample};
use crate::validate::metrics::{classifier_classes, Acc};
use crate::validate::report::{
    AccuracyPair, Check, LatencyPair, OutputReport, TensorDrift, ValidationReport,
};
use crate::validate::run::{from_tract, load, values_f32, Loaded, Runner};
use crate::validate::specialize::specialise;
use crate::validate::{Tolerances, ValidateOptions};

/// The outputs of one model run on one sample.
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub outputs: Vec<(String, IrTensor)>,
    /// Forms folded for tract (int4/uint4/blocked DequantizeLinear).
    pub remarks: Vec<String>,
}

pub(crate) fn sample_shapes(sample: &Sample) -> Vec<(String, DataType, Vec<usize>)> {
    sample
        .tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.dtype(),
                t.dims.iter().map(|d| *d as usize).collect(),
            )
        })
        .collect()
}

/// A bar over the samples of a run on stderr when there are several and stderr is a terminal (nothing
/// otherwise: logs and pipes stay clean).
fn samples_progress(label: &str, samples: usize) -> crate::passes::StderrProgress {
    let mut p = crate::passes::StderrProgress::with_enabled(
        samples > 1 && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    p.start(label, Some(samples as u64));
    p
}

/// Run `model` through tract on one sample; outputs in graph output order.
pub fn run_model(model: &Model, sample: &Sample) -> Result<RunOutput> {
    let loaded = load(model, &sample_shapes(sample))?;
    let runner = loaded.runner(&[], false)?;
    let outs = runner.run(sample)?;
    let outputs = runner
        .outputs
        .iter()
        .zip(outs.iter())
        .map(|(n, t)| Ok((n.clone(), from_tract(n, t)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(RunOutput {
        outputs,
        remarks: loaded.remarks,
    })
}

/// Intermediate values of the reference's main graph that the candidate also computes under the same name, in
/// the reference's node order (topological), with the producing op.
fn shared_intermediates(
    reference: &Model,
    candidate: &Model,
    limit: usize,
) -> Vec<(String, String)> {
    let (rg, cg) = (&reference.graph, &candidate.graph);
    let mut out = Vec::new();
    for (_, node) in rg.nodes() {
        if ["Constant", "Shape", "Size", "ConstantOfShape"]
            .iter()
            .any(|op| node.op.is(op))
        {
            continue;
        }
        for v in node.outputs.iter().flatten() {
            if rg.is_output(*v) {
                continue;
            }
            let name = rg.value_name(*v);
            let Some(cv) = cg.value_by_name(name) else {
                continue;
            };
            if matches!(cg.value(cv).def, ValueDef::Node(..))
                && !cg.is_output(cv)
                && readers_through_qdq(rg, *v) == readers_through_qdq(cg, cv)
            {
                out.push((name.to_string(), node.op.display()));
            }
        }
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    out
}

/// The nodes that read `v` (op type and name, sorted), looking through QuantizeLinear -> DequantizeLinear pairs.
/// A name is the same tensor in both models only when the same nodes read it: after fold-batchnorm the Conv's
/// output keeps its name but now carries the normalised values the BatchNormalization's readers read, so the
/// original's `conv_out` (read by the BatchNormalization) and the candidate's (read by the Relu) are different
/// tensors, and comparing them would put the drift where there is none.
fn readers_through_qdq(g: &crate::ir::Graph, v: crate::ir::ValueId) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![(v, 0u8)];
    while let Some((v, depth)) = todo.pop() {
        for id in g.consumers(v) {
            let Some(n) = g.node(id) else { continue };
            let qdq = n.op.is("QuantizeLinear") || n.op.is("DequantizeLinear");
            if qdq && depth < 4 {
                todo.extend(n.outputs.iter().flatten().map(|o| (*o, depth + 1)));
            } else {
                out.push((n.op.op_type.clone(), n.name().to_string()));
            }
        }
    }
    out.sort();
    out
}

fn is_float(dt: DatumType) -> bool {
    matches!(dt, DatumType::F32 | DatumType::F64 | DatumType::F16)
}

/// A model loaded and planned for one key: the sample's input shapes and the `If`s specialised on it.
struct Side {
    key: SideKey,
    runner: Runner,
}

type SideKey = (Vec<(String, DataType, Vec<usize>)>, Vec<(String, bool)>);

/// One model run sample after sample: loaded (and specialised on the sample's values when its main graph holds
/// `If`s) again only when the key changes. Remarks come from the first load (as before specialisation existed)
/// and from every specialisation (each different line once).
struct SideRunner<'a> {
    model: &'a Model,
    which: &'static str,
    expose: Vec<String>,
    optimize: bool,
    hint: Option<String>,
    current: Option<Side>,
    /// The first plan's load, kept (with `latency_runs`) to time the first sample.
    first: Option<Loaded>,
    keep_first: bool,
    loaded_once: bool,
    expose_remarks: Vec<String>,
    load_remarks: Vec<String>,
    spec_remarks: Vec<String>,
    /// The `If`s the current sample could not specialise (why), for the hint when tract then fails.
    unspecialised: Vec<String>,
}

impl<'a> SideRunner<'a> {
    fn new(
        model: &'a Model,
        which: &'static str,
        expose: Vec<String>,
        opts: &ValidateOptions,
    ) -> SideRunner<'a> {
        SideRunner {
            model,
            which,
            expose,
            optimize: opts.optimize,
            hint: default_dims_hint(model, opts),
            current: None,
            first: None,
            keep_first: opts.latency_runs.unwrap_or(0) > 0,
            loaded_once: false,
            expose_remarks: Vec::new(),
            load_remarks: Vec::new(),
            spec_remarks: Vec::new(),
            unspecialised: Vec::new(),
        }
    }

    /// Run one sample: graph outputs first, then the exposed tensors the plan has (names in `runner().outputs`).
    fn run(&mut self, sample: &Sample) -> Result<TVec<TValue>> {
        let shapes = sample_shapes(sample);
        let spec =
            specialise(self.model, sample).map_err(|e| name_model(e, self.which, self.model))?;
        let key: SideKey = (
            shapes.clone(),
            spec.as_ref().map(|s| s.taken.clone()).unwrap_or_default(),
        );
        self.unspecialised = spec
            .iter()
            .flat_map(|s| &s.remarks)
            .filter(|r| r.contains("not specialised"))
            .cloned()
            .collect();
        if let Some(s) = &spec {
            for r in &s.remarks {
                let r = format!("{}: {r}", self.which);
                if !self.spec_remarks.contains(&r) {
                    self.spec_remarks.push(r);
                }
            }
        }
        if self.current.as_ref().is_none_or(|c| c.key != key) {
            let model = spec.as_ref().map(|s| &s.model).unwrap_or(self.model);
            let first = !self.loaded_once;
            self.loaded_once = true;
            let mut remarks = Vec::new();
            let (loaded, runner) = prepare_side(
                model,
                self.which,
                &shapes,
                &self.expose,
                self.optimize,
                &mut remarks,
            )
            .map_err(|e| self.explain(e))?;
            if first {
                self.expose_remarks = remarks;
                self.load_remarks = loaded
                    .remarks
                    .iter()
                    .map(|m| format!("{}: {m}", self.which))
                    .collect();
                if self.keep_first {
                    self.first = Some(loaded);
                }
            }
            self.current = Some(Side { key, runner });
        }
        let side = self.current.as_ref().expect("loaded above");
        side.runner.run(sample).map_err(|e| self.explain(e))
    }

    fn runner(&self) -> &Runner {
        &self.current.as_ref().expect("a sample ran").runner
    }

    /// Name the model (and the ONNX op of the refused node); when typing failed or tract panicked, hint at the
    /// dims left at the default and at the `If`s that could not be specialised.
    fn explain(&self, e: Error) -> Error {
        match name_model(e, self.which, self.model) {
            Error::CannotValidate {
                model,
                node,
                op,
                msg,
                hint: None,
            } if wants_hint(&msg) => {
                let hints: Vec<String> = self
                    .hint
                    .iter()
                    .chain(&self.unspecialised)
                    .cloned()
                    .collect();
                Error::CannotValidate {
                    model,
                    node,
                    op,
                    msg,
                    hint: (!hints.is_empty()).then(|| hints.join("; ")),
                }
            }
            other => other,
        }
    }

    fn latency(&self, sample: &Sample, warmup: usize, runs: usize) -> Result<Latency> {
        let loaded = self
            .first
            .as_ref()
            .expect("kept when latency_runs is set and a sample ran");
        let plan = loaded.runner(&[], true).map_err(|e| self.explain(e))?;
        measure_latency(&plan, sample, warmup, runs)
    }
}

fn prepare_side(
    model: &Model,
    which: &str,
    shapes: &[(String, DataType, Vec<usize>)],
    expose: &[String],
    optimize: bool,
    remarks: &mut Vec<String>,
) -> Result<(Loaded, Runner)> {
    let loaded = load(model, shapes)?;
    let runner = match loaded.runner(expose, optimize) {
        Ok(r) => r,
        Err(e) if !expose.is_empty() => {
            remarks.push(format!(
                "{which}: exposing intermediate tensors failed ({e}); compared graph outputs only"
            ));
            loaded.runner(&[], optimize)?
        }
        Err(e) => return Err(e),
    };
    Ok((loaded, runner))
}

/// tract failed typing (analysing, translating, setting input facts) or planning the model, or panicked: the
/// failures symbolic dims left at a default value typically cause.
fn wants_hint(msg: &str) -> bool {
    [
        "could not type",
        "setting an input fact",
        "could not plan",
        "tract panicked",
    ]
    .iter()
    .any(|s| msg.contains(s))
}

/// Say which model an error is about; for an engine refusal, name the ONNX op of the node tract names (tract's
/// own op names differ: `EinSum` for MatMul...).
fn name_model(e: Error, which: &str, model: &Model) -> Error {
    match e {
        Error::Validate(m) => Error::Validate(format!("{which} model: {m}")),
        Error::CannotValidate {
            model: None,
            node,
            op,
            msg,
            hint,
        } => {
            let onnx_op = node.as_deref().and_then(|n| onnx_op_of(model, n));
            Error::CannotValidate {
                model: Some(which.to_string()),
                op: onnx_op.or(op),
                node,
                msg,
                hint,
            }
        }
        other => other,
    }
}

/// The op of the node named `name` in any graph of `model` (tract may suffix names: `conv.fix`, so a
/// dotted suffix is dropped until a node matches).
fn onnx_op_of(model: &Model, name: &str) -> Option<String> {
    let mut candidate = name;
    loop {
        let mut found = None;
        model.graph.walk(&mut |g| {
            if found.is_none() {
                found = g
                    .nodes()
                    .find(|(_, n)| n.name() == candidate)
                    .map(|(_, n)| n.op.display());
            }
        });
        if found.is_some() {
            return found;
        }
        candidate = &candidate[..candidate.rfind('.')?];
    }
}

/// "symbolic dims left at the default ..." when the inputs are random and some dim was not set by the user.
fn default_dims_hint(model: &Model, opts: &ValidateOptions) -> Option<String> {
    if !opts.inputs.is_empty() {
        return None;
    }
    let (mut named, mut unnamed): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for io in model.graph.runtime_inputs() {
        let Some((_, Some(shape))) = io.info.ty.as_ref().and_then(|t| t.as_tensor()) else {
            continue;
        };
        for (k, d) in shape.0.iter().enumerate() {
            match &d.value {
                DimValue::Param(p) if !opts.dims.contains_key(p) && !named.contains(p) => {
                    named.push(p.clone())
                }
                DimValue::Param(_) => {}
                DimValue::Fixed(v) if *v >= 0 => {}
                _ => unnamed.push(format!("{}[{k}]", model.graph.value_name(io.value))),
            }
        }
    }
    let d = opts.default_dim;
    let mut parts = Vec::new();
    if !named.is_empty() {
        parts.push(format!(
            "symbolic dims left at the default {d}: {} (set them with --dim NAME=VALUE)",
            named.join(", ")
        ));
    }
    if !unnamed.is_empty() {
        parts.push(format!(
            "unnamed dims left at the default {d}: {} (give inputs of the right shape with --input)",
            unnamed.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn checks(m: &crate::validate::Metrics, t: &Tolerances) -> Vec<Check> {
    let mut v = Vec::new();
    let mut c = |metric: &str, value: f64, limit: f64, passed: bool| {
        v.push(Check {
            metric: metric.into(),
            value,
            limit,
            passed,
        })
    };
    if m.nonfinite_mismatches > 0 {
        c("nonfinite", m.nonfinite_mismatches as f64, 0.0, false);
    }
    if let Some(l) = t.max_abs {
        c("max_abs", m.max_abs, l, m.max_abs <= l);
    }
    if let Some(l) = t.mean_abs {
        c("mean_abs", m.mean_abs, l, m.mean_abs <= l);
    }
    if let Some(l) = t.min_cosine {
        c("cosine", m.cosine, l, m.cosine >= l);
    }
    if let Some(l) = t.min_sqnr_db {
        c("sqnr_db", m.sqnr_db, l, m.sqnr_db >= l);
    }
    // Centred measures are `None` for a constant reference: skipped there (remark in `finish_outputs`).
    if let (Some(l), Some(x)) = (t.min_pearson, m.pearson) {
        c("pearson", x, l, x >= l);
    }
    if let (Some(l), Some(x)) = (t.min_sqnr_centered_db, m.sqnr_centered_db) {
        c("sqnr_centered_db", x, l, x >= l);
    }
    if let (Some(l), Some(x)) = (t.min_top1, m.top1) {
        c("top1", x, l, x >= l);
    }
    if let (Some(l), Some(x)) = (t.min_top5, m.top5) {
        c("top5", x, l, x >= l);
    }
    v
}

/// Per-output state across samples.
struct OutState {
    name: String,
    cand_index: usize,
    candidate_name: Option<String>,
    dtype: String,
    shape: Vec<usize>,
    acc: Acc,
    mismatch: Option<String>,
}

/// What one model's plan returned for one sample: graph outputs first, then exposed intermediate tensors.
struct PlanOutputs {
    names: Vec<String>,
    graph_outputs: usize,
    values: TVec<TValue>,
}

impl PlanOutputs {
    /// Index of each exposed (non-graph-output) tensor by name.
    fn exposed(&self) -> HashMap<&str, usize> {
        self.names
            .iter()
            .enumerate()
            .skip(self.graph_outputs)
            .map(|(i, n)| (n.as_str(), i))
            .collect()
    }
}

/// The reference side of a comparison, run once: the samples, the reference's outputs and exposed intermediate
/// tensors for every sample, its remarks and (with `latency_runs`) its latency. Any number of candidates can be
/// compared against it with `compare_with_reference`, e.g. one per pass of a pipeline, each with its own
/// tolerances. Memory: the reference's outputs and exposed tensors for every sample (`compare`, which makes one
/// comparison, runs the reference sample by sample instead).
pub struct ReferenceRun {
    opts: ValidateOptions,
    specs: Vec<InputSpec>,
    samples: Vec<Sample>,
    /// The reference's graph outputs, in order.
    outputs: Vec<String>,
    /// Intermediate tensors exposed (name, op of the reference node producing it), in topological order.
    shared: Vec<(String, String)>,
    runs: Vec<PlanOutputs>,
    labels: Option<Labels>,
    latency: Option<Latency>,
    expose_remarks: Vec<String>,
    load_remarks: Vec<String>,
    spec_remarks: Vec<String>,
}

impl ReferenceRun {
    /// Prepare the samples (`opts`: seed, samples, dims, inputs...) and run `reference` on each. With `like`, the
    /// intermediate tensors exposed are those `like` also computes (as `compare` does), else every intermediate
    /// tensor of the reference up to `attribution_limit`.
    pub fn new(
        reference: &Model,
        like: Option<&Model>,
        opts: &ValidateOptions,
    ) -> Result<ReferenceRun> {
        let (mut run, mut side) = ReferenceRun::prepare(reference, like, opts)?;
        let mut progress = samples_progress("reference", run.samples.len());
        for sample in &run.samples {
            run.runs.push(run_plan(&mut side, sample)?);
            progress.advance(1);
        }
        progress.finish();
        run.latency = reference_latency(&side, &run)?;
        run.expose_remarks = side.expose_remarks;
        run.load_remarks = side.load_remarks;
        run.spec_remarks = side.spec_remarks;
        Ok(run)
    }

    /// Everything but the runs: samples, exposed tensors, labels; the side that will run the reference.
    fn prepare<'a>(
        reference: &'a Model,
        like: Option<&Model>,
        opts: &ValidateOptions,
    ) -> Result<(ReferenceRun, SideRunner<'a>)> {
        let (specs, samples) = prepare_samples(reference, like, opts)?;
        let shared = if opts.attribution {
            shared_intermediates(reference, like.unwrap_or(reference), opts.attribution_limit)
        } else {
            Vec::new()
        };
        let expose: Vec<String> = shared.iter().map(|s| s.0.clone()).collect();
        let side = SideRunner::new(reference, "reference", expose, opts);
        let labels = match &opts.labels {
            Some(p) => Some(read_labels(p)?),
            None => None,
        };
        let outputs = reference
            .graph
            .outputs()
            .iter()
            .map(|o| reference.graph.value_name(o.value).to_string())
            .collect();
        let run = ReferenceRun {
            opts: opts.clone(),
            specs,
            samples,
            outputs,
            shared,
            runs: Vec::new(),
            labels,
            latency: None,
            expose_remarks: Vec::new(),
            load_remarks: Vec::new(),
            spec_remarks: Vec::new(),
        };
        Ok((run, side))
    }

    /// The samples both models run on.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }
}

/// Run one sample and keep what the plan returned with the names of its outputs.
fn run_plan(side: &mut SideRunner, sample: &Sample) -> Result<PlanOutputs> {
    let values = side.run(sample)?;
    let r = side.runner();
    Ok(PlanOutputs {
        names: r.outputs.clone(),
        graph_outputs: r.graph_outputs,
        values,
    })
}

fn reference_latency(side: &SideRunner, run: &ReferenceRun) -> Result<Option<Latency>> {
    Ok(match run.opts.latency_runs.unwrap_or(0) {
        0 => None,
        n => Some(side.latency(&run.samples[0], run.opts.warmup_runs, n)?),
    })
}

/// Compare `candidate` against `reference` on the same inputs (see the module docs for options and metrics).
/// The reference runs sample by sample next to the candidate, so memory holds one sample's tensors.
pub fn compare(
    reference: &Model,
    candidate: &Model,
    opts: &ValidateOptions,
) -> Result<ValidationReport> {
    let (run, side) = ReferenceRun::prepare(reference, Some(candidate), opts)?;
    compare_runs(&run, Some(side), candidate, &opts.tolerances)
}

/// Compare `candidate` against a reference run: the same samples and options (those `reference` was made with),
/// checked against `tolerances`.
pub fn compare_with_reference(
    reference: &ReferenceRun,
    candidate: &Model,
    tolerances: &Tolerances,
) -> Result<ValidationReport> {
    compare_runs(reference, None, candidate, tolerances)
}

/// The comparison proper. The reference's outputs come from `reference.runs`, or, with `live`, from running it
/// on each sample just before the candidate.
fn compare_runs(
    reference: &ReferenceRun,
    mut live: Option<SideRunner>,
    candidate: &Model,
    tolerances: &Tolerances,
) -> Result<ValidationReport> {
    let opts = &reference.opts;
    let mut remarks = Vec::new();
    let mut states = match_outputs(&reference.outputs, candidate, &mut remarks)?;

    // The reference's exposed tensors the candidate computes too.
    let expose: Vec<String> = reference
        .shared
        .iter()
        .filter(|(n, _)| computes(candidate, n))
        .map(|(n, _)| n.clone())
        .collect();
    let mut side = SideRunner::new(candidate, "candidate", expose.clone(), opts);
    let mut tensor_acc: Vec<(String, Vec<usize>, Acc)> = Vec::new();
    let mut acc_ref = AccuracyAcc::default();
    let mut acc_cand = AccuracyAcc::default();
    let mut classifier_output: Option<usize> = None;
    let mut progress = samples_progress("candidate", reference.samples.len());
    for (k, sample) in reference.samples.iter().enumerate() {
        progress.advance(1);
        let ro_live;
        let ro = match &mut live {
            Some(r) => {
                ro_live = run_plan(r, sample)?;
                &ro_live
            }
            None => &reference.runs[k],
        };
        let co = run_plan(&mut side, sample)?;
        let labels = reference.labels.is_some();
        compare_outputs(
            k,
            ro,
            &co,
            &mut states,
            labels,
            &mut classifier_output,
            (&mut acc_ref, &mut acc_cand),
        );
        attribute(k, &expose, ro, &co, &mut tensor_acc);
    }

    let (r_expose, r_load, r_spec) = match &live {
        Some(r) => (&r.expose_remarks, &r.load_remarks, &r.spec_remarks),
        None => (
            &reference.expose_remarks,
            &reference.load_remarks,
            &reference.spec_remarks,
        ),
    };
    let mut all_remarks = r_expose.clone();
    all_remarks.extend(side.expose_remarks.iter().cloned());
    all_remarks.extend(r_load.iter().cloned());
    all_remarks.extend(side.load_remarks.iter().cloned());
    all_remarks.extend(r_spec.iter().cloned());
    all_remarks.extend(side.spec_remarks.iter().cloned());
    all_remarks.append(&mut remarks);
    let mut remarks = all_remarks;

    let outputs = finish_outputs(states, tolerances, &mut remarks);
    let op_of: HashMap<&str, &str> = reference
        .shared
        .iter()
        .map(|(n, o)| (n.as_str(), o.as_str()))
        .collect();
    // Where drift begins: the centred SQNR where it is defined (an offset cannot hide drift), else the raw one.
    let drift_limit = tolerances
        .min_sqnr_centered_db
        .or(tolerances.min_sqnr_db)
        .unwrap_or(20.0);
    let tensors: Vec<TensorDrift> = tensor_acc
        .into_iter()
        .map(|(name, shape, acc)| {
            let m = acc.finish();
            TensorDrift {
                op: op_of.get(name.as_str()).unwrap_or(&"?").to_string(),
                name,
                shape,
                sqnr_db: m.sqnr_db,
                sqnr_centered_db: m.sqnr_centered_db,
                max_abs: m.max_abs,
                cosine: m.cosine,
            }
        })
        .collect();
    let first_drift = tensors
        .iter()
        .find(|t| {
            let s = t.sqnr_centered_db.unwrap_or(t.sqnr_db);
            s < drift_limit || s.is_nan()
        })
        .map(|t| t.name.clone());
    if opts.attribution && tensors.is_empty() && !expose.is_empty() {
        remarks.push("no shared intermediate tensor could be compared".into());
    }

    let accuracy_pair = match (&reference.labels, classifier_output) {
        (Some(l), Some(_)) => Some(AccuracyPair {
            reference: accuracy(&acc_ref, l)?,
            candidate: accuracy(&acc_cand, l)?,
        }),
        (Some(_), None) => {
            return Err(Error::Validate(
                "labels given but no output is classifier-like".into(),
            ))
        }
        _ => None,
    };

    let r_latency = match &live {
        Some(r) => reference_latency(r, reference)?,
        None => reference.latency.clone(),
    };
    let latency = match (r_latency, opts.latency_runs.unwrap_or(0)) {
        (Some(r), n) if n > 0 => Some(LatencyPair {
            reference: r,
            candidate: side.latency(&reference.samples[0], opts.warmup_runs, n)?,
        }),
        _ => None,
    };

    let passed = outputs.iter().all(|o| o.passed);
    Ok(ValidationReport {
        passed,
        samples: reference.samples.len(),
        inputs: reference.specs.clone(),
        tolerances: tolerances.clone(),
        outputs,
        tensors,
        first_drift,
        remarks,
        latency,
        accuracy: accuracy_pair,
    })
}

/// Does `model`'s main graph compute `name` as an intermediate (node-defined, not a graph output)?
fn computes(model: &Model, name: &str) -> bool {
    let g = &model.graph;
    g.value_by_name(name)
        .is_some_and(|v| matches!(g.value(v).def, ValueDef::Node(..)) && !g.is_output(v))
}

/// Match the candidate's outputs to the reference's by name, else by position when the counts agree.
fn match_outputs(
    r_outs: &[String],
    candidate: &Model,
    remarks: &mut Vec<String>,
) -> Result<Vec<OutState>> {
    let cg = &candidate.graph;
    let c_outs: Vec<String> = cg
        .outputs()
        .iter()
        .map(|o| cg.value_name(o.value).to_string())
        .collect();
    let mut states = Vec::new();
    for (i, name) in r_outs.iter().enumerate() {
        let (j, cname) = match c_outs.iter().position(|n| n == name) {
            Some(j) => (j, None),
            None if r_outs.len() == c_outs.len() => (i, Some(c_outs[i].clone())),
            None => {
                return Err(Error::Validate(format!(
                    "the candidate has no output '{name}' (its outputs: {c_outs:?})"
                )))
            }
        };
        states.push(OutState {
            name: name.clone(),
            cand_index: j,
            candidate_name: cname,
            dtype: String::new(),
            shape: Vec::new(),
            acc: Acc::default(),
            mismatch: None,
        });
    }
    if c_outs.len() > r_outs.len() {
        remarks.push(format!(
            "the candidate has {} extra outputs, not compared",
            c_outs.len() - r_outs.len()
        ));
    }
    Ok(states)
}

/// Fold sample `k`'s graph outputs into the per-output accumulators (and the accuracy rows with labels).
fn compare_outputs(
    k: usize,
    ro: &PlanOutputs,
    co: &PlanOutputs,
    states: &mut [OutState],
    labels: bool,
    classifier_output: &mut Option<usize>,
    (acc_ref, acc_cand): (&mut AccuracyAcc, &mut AccuracyAcc),
) {
    for (i, st) in states.iter_mut().enumerate() {
        let (a, b) = (&ro.values[i], &co.values[st.cand_index]);
        if k == 0 {
            st.dtype = format!("{:?}", a.datum_type()).to_lowercase();
            st.shape = a.shape().to_vec();
        }
        if st.mismatch.is_some() {
            continue;
        }
        if a.shape() != b.shape() {
            st.mismatch = Some(format!(
                "shape {:?} in the reference, {:?} in the candidate",
                a.shape(),
                b.shape()
            ));
            continue;
        }
        let (Some(av), Some(bv)) = (values_f32(a), values_f32(b)) else {
            st.mismatch = Some(format!(
                "types {:?} / {:?} cannot be compared as numbers",
                a.datum_type(),
                b.datum_type()
            ));
            continue;
        };
        let classes = classifier_classes(a.shape(), is_float(a.datum_type()));
        st.acc.add(&av, &bv, classes);
        if let (true, Some(c)) = (labels, classes) {
            if classifier_output.is_none_or(|o| o == i) {
                *classifier_output = Some(i);
                acc_ref.add(&av, c);
                acc_cand.add(&bv, c);
            }
        }
    }
}

/// Attribution: fold sample `k`'s exposed tensors present in both plans (float, same shape) into `tensor_acc`,
/// which keeps the order of the first sample; samples of other shapes may change which tensors exist, so later
/// samples match by name.
fn attribute(
    k: usize,
    expose: &[String],
    ro: &PlanOutputs,
    co: &PlanOutputs,
    tensor_acc: &mut Vec<(String, Vec<usize>, Acc)>,
) {
    let (r_index, c_index) = (ro.exposed(), co.exposed());
    let mut ti = 0;
    for name in expose {
        let (Some(&ri), Some(&ci)) = (r_index.get(name.as_str()), c_index.get(name.as_str()))
        else {
            continue;
        };
        let (a, b): (&TValue, &TValue) = (&ro.values[ri], &co.values[ci]);
        if !is_float(a.datum_type()) || !is_float(b.datum_type()) || a.shape() != b.shape() {
            continue;
        }
        let (Some(av), Some(bv)) = (values_f32(a), values_f32(b)) else {
            continue;
        };
        if k == 0 {
            tensor_acc.push((name.clone(), a.shape().to_vec(), Acc::default()));
        }
        let slot = if tensor_acc.get(ti).is_some_and(|t| &t.0 == name) {
            Some(ti)
        } else {
            tensor_acc.iter().position(|t| &t.0 == name)
        };
        if let Some(s) = slot {
            tensor_acc[s].2.add(&av, &bv, None);
            ti = s + 1;
        }
    }
}

/// Metrics and checks per output; a shape or type mismatch fails its output with a remark.
fn finish_outputs(
    states: Vec<OutState>,
    tol: &Tolerances,
    remarks: &mut Vec<String>,
) -> Vec<OutputReport> {
    let mut outputs = Vec::new();
    for st in states {
        let (metrics, chks) = match &st.mismatch {
            Some(m) => {
                remarks.push(format!("output '{}': {m}", st.name));
                (
                    None,
                    vec![Check {
                        metric: "shape".into(),
                        value: f64::NAN,
                        limit: f64::NAN,
                        passed: false,
                    }],
                )
            }
            None => {
                let m = st.acc.finish();
                if m.elements == 0 {
                    // legitimate (a detector's boxes after NMS can be none) but vacuous: say so
                    remarks.push(format!(
                        "output '{}' has no elements on these samples: nothing of it was compared",
                        st.name
                    ));
                } else if m.pearson.is_none()
                    && (tol.min_pearson.is_some() || tol.min_sqnr_centered_db.is_some())
                {
                    remarks.push(format!(
                        "output '{}': the reference is constant, so pearson and sqnr_centered_db are undefined \
                         and not checked; raw metrics only",
                        st.name
                    ));
                }
                let c = checks(&m, tol);
                (Some(m), c)
            }
        };
        let passed = chks.iter().all(|c| c.passed);
        outputs.push(OutputReport {
            name: st.name,
            candidate_name: st.candidate_name,
            dtype: st.dtype,
            shape: st.shape,
            metrics,
            checks: chks,
            passed,
        });
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{model, GraphBuilder};
    use crate::validate::run::engine_error;

    fn conv_model() -> Model {
        let mut b = GraphBuilder::new("main");
        let x = b.input("x", DataType::FLOAT, &["N", "3", "?", "8"]);
        let w = b.initializer(IrTensor::from_f32("w", vec![2, 3, 1, 1], &[0.5; 6]));
        let y = b.named_node(
            "conv1",
            crate::ir::OpKey::onnx("Conv"),
            &[Some(x), Some(w)],
            &["y"],
            vec![],
        );
        b.output(y[0], DataType::FLOAT, &["N", "2", "?", "8"]);
        model(b.build(), 17)
    }

    #[test]
    fn the_innermost_tract_node_is_named_with_its_onnx_op() {
        // tract's chain for a failure inside an If body: the If, then the body's node
        let e = engine_error(
            "tract could not type: Failed analyse for node #7 \"outer_if\" If: Failed analyse for node #2 \
             \"conv1.fix\" EinSum: Impossible to unify 5 with 3."
                .into(),
        );
        let Error::CannotValidate { node, op, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(node.as_deref(), Some("conv1.fix"));
        assert_eq!(op.as_deref(), Some("EinSum"));
        // the ONNX op replaces tract's, found through the dotted suffix tract adds
        let e = name_model(e, "candidate", &conv_model());
        let Error::CannotValidate {
            model, node, op, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(model.as_deref(), Some("candidate"));
        assert_eq!(node.as_deref(), Some("conv1.fix"));
        assert_eq!(op.as_deref(), Some("Conv"));
        assert_eq!(e.exit_code(), 5);
        assert!(e
            .to_string()
            .starts_with("cannot validate the candidate model: node 'conv1.fix' (Conv): "));
        // a panic message has no node
        let e = engine_error("running: tract panicked: index out of bounds".into());
        assert!(matches!(
            e,
            Error::CannotValidate {
                node: None,
                op: None,
                ..
            }
        ));
        assert_eq!(e.exit_code(), 5);
    }

    #[test]
    fn dims_hint_lists_named_and_unnamed_defaults() {
        let m = conv_model();
        let mut opts = ValidateOptions::default();
        assert_eq!(
            default_dims_hint(&m, &opts).as_deref(),
            Some(
                "symbolic dims left at the default 1: N (set them with --dim NAME=VALUE); unnamed dims \
                 left at the default 1: x[2] (give inputs of the right shape with --input)"
            )
        );
        opts.dims.insert("N".into(), 2);
        assert_eq!(
            default_dims_hint(&m, &opts).as_deref(),
            Some("unnamed dims left at the default 1: x[2] (give inputs of the right shape with --input)")
        );
        opts.inputs.push("sample.npy".into());
        assert_eq!(
            default_dims_hint(&m, &opts),
            None,
            "inputs from files set every dim"
        );
    }
}
