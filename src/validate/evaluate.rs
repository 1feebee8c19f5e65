//! `evaluate`: what one model costs (file size, parameters by dtype, MACs per ONNX op type from tract's typed model)
//! and how fast / accurate it is (latency median, top-1/top-5 against labels).

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use crate::validate::specialize::{specialise, Specialised};
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
    /// Initializers and Constant-node tensors of every graph (subgraphs included), by dtype name: the count of
    /// `inspect` (`dump::stats`, one definition for both).
    pub params: BTreeMap<String, ParamCount>,
    pub params_total: u64,
    /// Of `params_total`, elements in initializers (all graphs).
    pub initializer_params: u64,
    /// Of `params_total`, elements in `Constant` node values (all graphs).
    pub constant_params: u64,
    pub inputs: Vec<InputSpec>,
    /// Multiply-accumulates per ONNX op type of the model (`Conv`, `MatMul`...) at the input shapes, from tract's
    /// cost model (tract nodes traced back to the ONNX node they come from; untraced ones as `tract:<op>`).
    pub macs: BTreeMap<String, u64>,
    pub macs_total: u64,
    pub latency: Option<Latency>,
    pub accuracy: Option<Accuracy>,
    /// tract kernels the accuracy runs used: `reference` (default) or `optimized` (`optimize`). Latency is
    /// always measured optimised.
    pub kernels: String,
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

/// External data files referenced by initializers of any graph.
fn external_files(g: &Graph, files: &mut BTreeSet<PathBuf>) {
    g.walk(&mut |g| {
        for (_, t) in g.initializers() {
            if let TensorData::External(x) = &t.data {
                files.insert(PathBuf::from(&x.location));
            }
        }
    });
}

impl FileSize {
    /// What `model` takes on disk at `path` (the .onnx file and each external data file it references once).
    pub fn of(model: &Model, path: &Path) -> Result<FileSize> {
        let mut files = BTreeSet::new();
        external_files(&model.graph, &mut files);
        file_size(model, Some(path), &files)
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

/// The ONNX op of each main-graph node under the name tract gives it: the node's name, or its first output's
/// name when it has none (tract-onnx names its nodes that way).
fn onnx_ops_by_tract_name(model: &Model) -> HashMap<String, String> {
    let g = &model.graph;
    let mut out = HashMap::new();
    for (_, n) in g.nodes() {
        let key = match n.name() {
            "" => match n.output(0) {
                Some(v) => g.value_name(v).to_string(),
                None => continue,
            },
            name => name.to_string(),
        };
        out.entry(key).or_insert_with(|| n.op.display());
    }
    out
}

/// The ONNX op a tract node comes from: tract keeps the ONNX node's name and appends `.<suffix>` to the nodes
/// it derives from it while typing and decluttering (`fc.einsum`, `conv.add_bias`), so the longest prefix of
/// the name ending at a `.` that names an ONNX node wins.
fn onnx_op_of<'a>(ops: &'a HashMap<String, String>, tract_name: &str) -> Option<&'a str> {
    let mut name = tract_name;
    loop {
        if let Some(op) = ops.get(name) {
            return Some(op.as_str());
        }
        name = &name[..name.rfind('.')?];
    }
}

/// MACs per ONNX op type of `model`, from tract's decluttered typed model (concrete shapes). A tract node that
/// cannot be traced back to an ONNX node is counted under `tract:<op>` with a remark.
fn macs(model: &Model, typed: &TypedModel) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
    let ops = onnx_ops_by_tract_name(model);
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
                let n = match n.to_i64() {
                    Ok(n) => n.max(0) as u64,
                    Err(_) => {
                        remarks.push(format!("node '{}': symbolic MAC count {n}", node.name));
                        continue;
                    }
                };
                let op = match onnx_op_of(&ops, &node.name) {
                    Some(op) => op.to_string(),
                    None => {
                        remarks.push(format!(
                            "MACs of tract node '{}' ({}) not traced to an ONNX node",
                            node.name,
                            node.op.name()
                        ));
                        format!("tract:{}", node.op.name())
                    }
                };
                // saturating: counts come from the model file and must not overflow into a panic
                let e: &mut u64 = out.entry(op).or_insert(0);
                *e = e.saturating_add(n);
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
    let stats = crate::dump::stats::stats(model);
    let params: BTreeMap<String, ParamCount> = stats
        .params_by_dtype
        .iter()
        .map(|(dt, c)| {
            (
                dt.clone(),
                ParamCount {
                    count: c.params,
                    bytes: c.bytes,
                },
            )
        })
        .collect();
    let params_total = stats.params();
    let mut files = BTreeSet::new();
    external_files(&model.graph, &mut files);
    let file = file_size(model, path, &files)?;
    let (inputs, samples) = prepare_samples(model, None, opts)?;
    // Read the labels before any run, so that a bad labels file fails at once.
    let labels = opts.labels.as_deref().map(read_labels).transpose()?;
    // An `If` whose condition follows from the sample runs specialised (MACs and latency: the first sample's).
    let first = specialise(model, &samples[0])?;
    let run_model = first.as_ref().map_or(model, |s| &s.model);
    // a broken model (e.g. a DequantizeLinear scale that does not fit) is named by its file
    let loaded = load(run_model, &sample_shapes(&samples[0])).map_err(|e| match path {
        Some(p) => e.in_file(p),
        None => e,
    })?;
    let mut remarks = loaded.remarks.clone();
    remarks.extend(first.iter().flat_map(|s| s.remarks.iter().cloned()));
    let typed = loaded.typed()?;
    let (macs, mut r) = macs(run_model, &typed)?;
    remarks.append(&mut r);
    drop(typed);
    let macs_total = macs.values().fold(0u64, |a, n| a.saturating_add(*n));
    let runs = opts.latency_runs.unwrap_or(10);
    let latency = if runs > 0 {
        // latency is always measured with tract's optimised kernels (what a deployment would run)
        let fast = loaded.runner(&[], true)?;
        Some(measure_latency(&fast, &samples[0], opts.warmup_runs, runs)?)
    } else {
        None
    };
    let accuracy = match &labels {
        None => None,
        Some(labels) => {
            let mut acc = AccuracyAcc::default();
            // accuracy with the kernels `optimize` chooses (reference by default, as `compare`)
            let mut runner = loaded.runner(&[], opts.optimize)?;
            let taken = |s: &Option<Specialised>| s.as_ref().map(|s| s.taken.clone());
            let mut key = (sample_shapes(&samples[0]), taken(&first));
            let mut out_ix = None;
            for s in &samples {
                let spec = specialise(model, s)?;
                if (sample_shapes(s), taken(&spec)) != key {
                    key = (sample_shapes(s), taken(&spec));
                    let m = spec.as_ref().map_or(model, |s| &s.model);
                    runner = load(m, &key.0)?.runner(&[], opts.optimize)?;
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
        initializer_params: stats.initializer_params,
        constant_params: stats.constant_params,
        inputs,
        macs,
        macs_total,
        latency,
        accuracy,
        kernels: if opts.optimize {
            "optimized"
        } else {
            "reference"
        }
        .into(),
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
        writeln!(
            f,
            "parameters: {} ({} in initializers, {} in Constant nodes)",
            self.params_total, self.initializer_params, self.constant_params
        )?;
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
                "accuracy: top1 {} top5 {} ({} rows, {} kernels)",
                fmt_num(a.top1),
                a.top5.map(fmt_num).unwrap_or("-".into()),
                a.rows,
                self.kernels
            )?;
        }
        for r in &self.remarks {
            writeln!(f, "remark: {r}")?;
        }
        Ok(())
    }
}
