//! `evaluate`: what one model costs (file size, parameters by dtype, MACs per op type from tract's typed model)
//! and how fast / accurate it is (latency median, top-1/top-5 against labels).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::Cost;

use crate::error::{Error, Result};
use crate::ir::{Graph, Model, TensorData};
use crate::validate::compare::sample_shapes;
use crate::validate::inputs::{prepare_samples, read_labels, InputSpec, Labels, Sample};
use crate::validate::metrics::{argmax, classifier_classes, ser_f64, ser_opt_f64, top5};
use crate::validate::report::fmt_num;
use crate::validate::run::{guard, load, values_f32, Runner};
use crate::validate::ValidateOptions;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileSize {
    pub path: Option<PathBuf>,
    /// The .onnx file (or, without a path, the model serialized with every tensor inline).
    pub model_bytes: u64,
    /// External data files referenced by the model (each file counted once).
    pub external_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ParamCount {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub warmup: usize,
    pub runs: usize,
    #[serde(serialize_with = "ser_f64")]
    pub median_ms: f64,
    #[serde(serialize_with = "ser_f64")]
    pub min_ms: f64,
    #[serde(serialize_with = "ser_f64")]
    pub max_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    pub rows: u64,
    #[serde(serialize_with = "ser_f64")]
    pub top1: f64,
    #[serde(serialize_with = "ser_opt_f64")]
    pub top5: Option<f64>,
}

/// The result of `evaluate`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvaluationReport {
    pub file: FileSize,
    /// Initializers and Constant-node tensors of every graph (subgraphs included), by dtype name.
    pub params: BTreeMap<String, ParamCount>,
    pub params_total: u64,
    pub inputs: Vec<InputSpec>,
    /// Multiply-accumulates per op type (tract op names of the decluttered typed model) at the input shapes.
    pub macs: BTreeMap<String, u64>,
    pub macs_total: u64,
    pub latency: Option<Latency>,
    pub accuracy: Option<Accuracy>,
    pub remarks: Vec<String>,
}

/// Collected predictions (top-5 indices per row) of one classifier output over all samples.
#[derive(Clone, Debug, Default)]
pub(crate) struct AccuracyAcc {
    rows: Vec<Vec<usize>>,
    classes: usize,
}

impl AccuracyAcc {
    pub fn add(&mut self, values: &[f32], classes: usize) {
        // A class count of 0 (an empty last dim from a model) would make `chunks_exact` panic: no rows.
        if classes == 0 {
            return;
        }
        self.classes = classes;
        for row in values.chunks_exact(classes) {
            let idx = top5(row);
            debug_assert_eq!(idx[0], argmax(row));
            self.rows.push(idx);
        }
    }
}

pub(crate) fn accuracy(acc: &AccuracyAcc, labels: &Labels) -> Result<Accuracy> {
    let path = labels.path.display();
    let labels = &labels.values[..];
    if acc.rows.len() != labels.len() {
        return Err(Error::Usage(format!(
            "{path}: {} labels but the classifier output gave {} rows (one label per row over all samples)",
            labels.len(),
            acc.rows.len()
        )));
    }
    if let Some(i) = labels.iter().position(|l| *l as u64 >= acc.classes as u64) {
        return Err(Error::Usage(format!(
            "{path}: label {i} is {} but the classifier output has {} classes (0..{})",
            labels[i],
            acc.classes,
            acc.classes.saturating_sub(1)
        )));
    }
    let n = labels.len() as f64;
    let top1 = acc
        .rows
        .iter()
        .zip(labels)
        .filter(|(r, l)| r[0] as i64 == **l)
        .count() as f64;
    let top5 = acc
        .rows
        .iter()
        .zip(labels)
        .filter(|(r, l)| r.iter().any(|i| *i as i64 == **l))
        .count() as f64;
    Ok(Accuracy {
        rows: labels.len() as u64,
        top1: if n > 0.0 { top1 / n } else { 0.0 },
        top5: (acc.classes > 5 && n > 0.0).then(|| top5 / n),
    })
}

/// Warm up, then time `runs` runs on one sample (inputs converted once, outside the timing).
pub(crate) fn measure_latency(
    runner: &Runner,
    sample: &Sample,
    warmup: usize,
    runs: usize,
) -> Result<Latency> {
    let fed = runner.feed(sample)?;
    for _ in 0..warmup {
        runner.run_fed(fed.clone())?;
    }
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        runner.run_fed(fed.clone())?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = if t.len() % 2 == 1 {
        t[t.len() / 2]
    } else {
        (t[t.len() / 2 - 1] + t[t.len() / 2]) / 2.0
    };
    Ok(Latency {
        warmup,
        runs: t.len(),
        median_ms: median,
        min_ms: t[0],
        max_ms: t[t.len() - 1],
    })
}

fn count_params(g: &Graph, out: &mut BTreeMap<String, ParamCount>, files: &mut BTreeSet<PathBuf>) {
    let mut add = |t: &crate::ir::Tensor| {
        let e = out.entry(t.dtype().name().into_owned()).or_default();
        // Saturating: counts come from the model file and must not overflow into a panic.
        e.count = e.count.saturating_add(t.numel().unwrap_or(0));
        e.bytes = e.bytes.saturating_add(t.byte_size());
        if let TensorData::External(x) = &t.data {
            files.insert(PathBuf::from(&x.location));
        }
    };
    for (_, t) in g.initializers() {
        add(t);
    }
    for (_, n) in g.nodes() {
        if n.op.is("Constant") {
            if let Some(v) = n.output(0) {
                if let Some(t) = g.constant(v) {
                    add(&t);
                }
            }
        }
    }
    for (_, sg) in g.subgraphs() {
        count_params(sg, out, files);
    }
}

fn file_size(model: &Model, path: Option<&Path>, files: &BTreeSet<PathBuf>) -> Result<FileSize> {
    let path = path.map(Path::to_path_buf).or_else(|| model.source.clone());
    match &path {
        Some(p) => {
            let meta = std::fs::metadata(p).map_err(|source| Error::Read {
                path: p.clone(),
                source,
            })?;
            let dir = p.parent().unwrap_or(Path::new("."));
            let mut ext = 0;
            for f in files {
                ext += std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
            }
            Ok(FileSize {
                path: path.clone(),
                model_bytes: meta.len(),
                external_bytes: ext,
                total_bytes: meta.len() + ext,
            })
        }
        None => {
            let n = crate::io::to_bytes(model)?.len() as u64;
            Ok(FileSize {
                path: None,
                model_bytes: n,
                external_bytes: 0,
                total_bytes: n,
            })
        }
    }
}

/// MACs per tract op type from the decluttered typed model (concrete shapes).
fn macs(typed: &TypedModel) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
    let mut out = BTreeMap::new();
    let mut remarks = Vec::new();
    for node in typed.nodes() {
        let facts = guard("reading node facts", || typed.node_input_facts(node.id))?;
        let costs = match guard("computing costs", || node.op.cost(&facts)) {
            Ok(c) => c,
            Err(e) => {
                remarks.push(format!("no cost for node '{}': {e}", node.name));
                continue;
            }
        };
        for (cost, n) in costs {
            if let Cost::FMA(_) = cost {
                match n.to_i64() {
                    Ok(n) => {
                        let e = out.entry(node.op.name().to_string()).or_insert(0u64);
                        *e = e.saturating_add(n.max(0) as u64);
                    }
                    Err(_) => remarks.push(format!("node '{}': symbolic MAC count {n}", node.name)),
                }
            }
        }
    }
    Ok((out, remarks))
}

/// Evaluate one model: size (of `path`, else of the file it was loaded from, else serialized), parameters,
/// MACs at the chosen input shapes, latency (default 10 runs after `warmup_runs`), accuracy when
/// `opts.labels` is set (the first classifier-like output against the labels, rows over all samples).
pub fn evaluate(
    model: &Model,
    path: Option<&Path>,
    opts: &ValidateOptions,
) -> Result<EvaluationReport> {
    let mut params = BTreeMap::new();
    let mut files = BTreeSet::new();
    count_params(&model.graph, &mut params, &mut files);
    let params_total = params.values().fold(0u64, |a, p| a.saturating_add(p.count));
    let file = file_size(model, path, &files)?;
    let (inputs, samples) = prepare_samples(model, None, opts)?;
    // Read the labels before any run, so that a bad labels file fails at once.
    let labels = opts.labels.as_deref().map(read_labels).transpose()?;
    let loaded = load(model, &sample_shapes(&samples[0]))?;
    let mut remarks = loaded.remarks.clone();
    let typed = loaded.typed()?;
    let (macs, mut r) = macs(&typed)?;
    remarks.append(&mut r);
    drop(typed);
    let macs_total = macs.values().fold(0u64, |a, n| a.saturating_add(*n));
    let runner = loaded.runner(&[], true)?;
    let runs = opts.latency_runs.unwrap_or(10);
    let latency = if runs > 0 {
        Some(measure_latency(
            &runner,
            &samples[0],
            opts.warmup_runs,
            runs,
        )?)
    } else {
        None
    };
    let accuracy = match &labels {
        None => None,
        Some(labels) => {
            let mut acc = AccuracyAcc::default();
            let mut runner = runner;
            let mut shapes = sample_shapes(&samples[0]);
            let mut out_ix = None;
            for s in &samples {
                if sample_shapes(s) != shapes {
                    shapes = sample_shapes(s);
                    runner = load(model, &shapes)?.runner(&[], true)?;
                }
                let outs = runner.run(s)?;
                let ix = match out_ix {
                    Some(i) => i,
                    None => {
                        let i = outs
                            .iter()
                            .position(|t| {
                                classifier_classes(
                                    t.shape(),
                                    matches!(
                                        t.datum_type(),
                                        DatumType::F32 | DatumType::F16 | DatumType::F64
                                    ),
                                )
                                .is_some()
                            })
                            .ok_or_else(|| {
                                Error::Validate(
                                    "labels given but no output is classifier-like".into(),
                                )
                            })?;
                        out_ix = Some(i);
                        i
                    }
                };
                let Some(t) = outs.get(ix) else {
                    return Err(Error::Validate(format!(
                        "sample {}: the model gave {} outputs, fewer than the first sample",
                        s.origin,
                        outs.len()
                    )));
                };
                let v = values_f32(t).unwrap_or_default();
                acc.add(&v, *t.shape().last().unwrap_or(&1));
            }
            Some(accuracy(&acc, labels)?)
        }
    };
    Ok(EvaluationReport {
        file,
        params,
        params_total,
        inputs,
        macs,
        macs_total,
        latency,
        accuracy,
        remarks,
    })
}

impl EvaluationReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl fmt::Display for EvaluationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fs = &self.file;
        writeln!(
            f,
            "file: {} bytes ({} model + {} external){}",
            fs.total_bytes,
            fs.model_bytes,
            fs.external_bytes,
            match &fs.path {
                Some(p) => format!(" {}", p.display()),
                None => " (serialized size)".into(),
            }
        )?;
        writeln!(f, "parameters: {}", self.params_total)?;
        for (dt, p) in &self.params {
            writeln!(f, "  {dt:<6} {:>12} params {:>12} bytes", p.count, p.bytes)?;
        }
        for i in &self.inputs {
            writeln!(f, "input {}: {}{:?} {}", i.name, i.dtype, i.shape, i.source)?;
        }
        writeln!(
            f,
            "MACs: {} (FLOPs ~ {})",
            self.macs_total,
            self.macs_total.saturating_mul(2)
        )?;
        for (op, n) in &self.macs {
            writeln!(f, "  {op:<20} {n:>14}")?;
        }
        if let Some(l) = &self.latency {
            writeln!(
                f,
                "latency: median {} ms (min {}, max {}; {} runs after {} warm-up)",
                fmt_num(l.median_ms),
                fmt_num(l.min_ms),
                fmt_num(l.max_ms),
                l.runs,
                l.warmup
            )?;
        }
        if let Some(a) = &self.accuracy {
            writeln!(
                f,
                "accuracy: top1 {} top5 {} ({} rows)",
                fmt_num(a.top1),
                a.top5.map(fmt_num).unwrap_or("-".into()),
                a.rows
            )?;
        }
        for r in &self.remarks {
            writeln!(f, "remark: {r}")?;
        }
        Ok(())
    }
}
