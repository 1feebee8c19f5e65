//! `compare`: the same inputs through both models, per-output metrics and checks, per-tensor attribution.

use std::collections::HashMap;

use tract_onnx::prelude::{DatumType, TValue};

use crate::error::{Error, Result};
use crate::ir::{DataType, Model, Tensor as IrTensor, ValueDef};
use crate::validate::evaluate::{accuracy, measure_latency, AccuracyAcc};
use crate::validate::inputs::{prepare_samples, read_labels, Sample};
use crate::validate::metrics::{classifier_classes, Acc};
use crate::validate::report::{
    AccuracyPair, Check, LatencyPair, OutputReport, TensorDrift, ValidationReport,
};
use crate::validate::run::{from_tract, load, values_f32, Loaded, Runner};
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
            if matches!(cg.value(cv).def, ValueDef::Node(..)) && !cg.is_output(cv) {
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

fn is_float(dt: DatumType) -> bool {
    matches!(dt, DatumType::F32 | DatumType::F64 | DatumType::F16)
}

struct Side {
    loaded: Loaded,
    runner: Runner,
}

fn prepare_side(
    model: &Model,
    which: &str,
    shapes: &[(String, DataType, Vec<usize>)],
    expose: &[String],
    optimize: bool,
    remarks: &mut Vec<String>,
) -> Result<Side> {
    let loaded = load(model, shapes).map_err(|e| prefix(e, which))?;
    let runner = match loaded.runner(expose, optimize) {
        Ok(r) => r,
        Err(e) if !expose.is_empty() => {
            remarks.push(format!(
                "{which}: exposing intermediate tensors failed ({e}); compared graph outputs only"
            ));
            loaded.runner(&[], optimize).map_err(|e| prefix(e, which))?
        }
        Err(e) => return Err(prefix(e, which)),
    };
    Ok(Side { loaded, runner })
}

fn prefix(e: Error, which: &str) -> Error {
    match e {
        Error::Validate(m) => Error::Validate(format!("{which} model: {m}")),
        other => other,
    }
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
    // Centred measures are `None` for a constant reference: skipped there (remark in `compare`).
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

/// Compare `candidate` against `reference` on the same inputs (see the module docs for options and metrics).
pub fn compare(
    reference: &Model,
    candidate: &Model,
    opts: &ValidateOptions,
) -> Result<ValidationReport> {
    let (specs, samples) = prepare_samples(reference, Some(candidate), opts)?;
    let mut remarks = Vec::new();
    let shared = if opts.attribution {
        shared_intermediates(reference, candidate, opts.attribution_limit)
    } else {
        Vec::new()
    };
    let expose: Vec<String> = shared.iter().map(|s| s.0.clone()).collect();
    let op_of: HashMap<&str, &str> = shared
        .iter()
        .map(|(n, o)| (n.as_str(), o.as_str()))
        .collect();

    let mut shapes = sample_shapes(&samples[0]);
    let mut r = prepare_side(
        reference,
        "reference",
        &shapes,
        &expose,
        opts.optimize,
        &mut remarks,
    )?;
    let mut c = prepare_side(
        candidate,
        "candidate",
        &shapes,
        &expose,
        opts.optimize,
        &mut remarks,
    )?;
    for m in &r.loaded.remarks {
        remarks.push(format!("reference: {m}"));
    }
    for m in &c.loaded.remarks {
        remarks.push(format!("candidate: {m}"));
    }

    // Match outputs by name, else by position when the counts agree.
    let r_outs = r.loaded.outputs.clone();
    let c_outs = c.loaded.outputs.clone();
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

    let mut tensor_acc: Vec<(String, Vec<usize>, Acc, bool)> = Vec::new();
    let labels = match &opts.labels {
        Some(p) => Some(read_labels(p)?),
        None => None,
    };
    let mut acc_ref = AccuracyAcc::default();
    let mut acc_cand = AccuracyAcc::default();
    let mut classifier_output: Option<usize> = None;

    for (k, sample) in samples.iter().enumerate() {
        let s_shapes = sample_shapes(sample);
        if s_shapes != shapes {
            // Samples of another shape (files): reload both models at that shape.
            shapes = s_shapes;
            let mut ignored = Vec::new();
            r = prepare_side(
                reference,
                "reference",
                &shapes,
                &expose,
                opts.optimize,
                &mut ignored,
            )?;
            c = prepare_side(
                candidate,
                "candidate",
                &shapes,
                &expose,
                opts.optimize,
                &mut ignored,
            )?;
        }
        let ro = r.runner.run(sample).map_err(|e| prefix(e, "reference"))?;
        let co = c.runner.run(sample).map_err(|e| prefix(e, "candidate"))?;
        for (i, st) in states.iter_mut().enumerate() {
            let (a, b) = (&ro[i], &co[st.cand_index]);
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
            if let (Some(_), Some(c)) = (&labels, classes) {
                if classifier_output.is_none_or(|o| o == i) {
                    classifier_output = Some(i);
                    acc_ref.add(&av, c);
                    acc_cand.add(&bv, c);
                }
            }
        }
        // Attribution: exposed tensors present in both plans.
        let r_index: HashMap<&str, usize> = r
            .runner
            .outputs
            .iter()
            .enumerate()
            .skip(r.runner.graph_outputs)
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let c_index: HashMap<&str, usize> = c
            .runner
            .outputs
            .iter()
            .enumerate()
            .skip(c.runner.graph_outputs)
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut ti = 0;
        for name in &expose {
            let (Some(&ri), Some(&ci)) = (r_index.get(name.as_str()), c_index.get(name.as_str()))
            else {
                continue;
            };
            let (a, b): (&TValue, &TValue) = (&ro[ri], &co[ci]);
            if !is_float(a.datum_type()) || !is_float(b.datum_type()) || a.shape() != b.shape() {
                continue;
            }
            let (Some(av), Some(bv)) = (values_f32(a), values_f32(b)) else {
                continue;
            };
            if k == 0 {
                tensor_acc.push((name.clone(), a.shape().to_vec(), Acc::default(), true));
            }
            // Samples of other shapes may change which tensors exist: match by name.
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
        drop(ro);
        drop(co);
    }

    let tol = &opts.tolerances;
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
                if m.pearson.is_none()
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
    // Where drift begins: the centred SQNR where it is defined (an offset cannot hide drift), else the raw one.
    let drift_limit = tol.min_sqnr_centered_db.or(tol.min_sqnr_db).unwrap_or(20.0);
    let tensors: Vec<TensorDrift> = tensor_acc
        .into_iter()
        .map(|(name, shape, acc, _)| {
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

    let accuracy_pair = match (&labels, classifier_output) {
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

    let latency = match opts.latency_runs.unwrap_or(0) {
        0 => None,
        n => {
            let rp = r.loaded.runner(&[], true)?;
            let cp = c.loaded.runner(&[], true)?;
            Some(LatencyPair {
                reference: measure_latency(&rp, &samples[0], opts.warmup_runs, n)?,
                candidate: measure_latency(&cp, &samples[0], opts.warmup_runs, n)?,
            })
        }
    };

    let passed = outputs.iter().all(|o| o.passed);
    Ok(ValidationReport {
        passed,
        samples: samples.len(),
        inputs: specs,
        tolerances: tol.clone(),
        outputs,
        tensors,
        first_drift,
        remarks,
        latency,
        accuracy: accuracy_pair,
    })
}
