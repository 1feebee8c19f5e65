//! Weight-only quantization (`quantize{mode=weight}`): every constant weight of the chosen ops (Conv,
//! ConvTranspose, Gemm, MatMul, the tables of Gather, the `W` / `R` of LSTM / GRU / RNN), wherever it lives (an
//! initializer, a sparse initializer, a `Constant` node in any value form, or a constant of an enclosing graph
//! read from an If / Loop / Scan body), becomes an integer initializer `<w>_quantized`, a scale `<w>_scale` and
//! a zero point `<w>_zero_point` in the graph that held the weight, and the float weight is removed. How the
//! readers get float values back is the weight's `Layout` (`emit`):
//! - `Dequantize`: one `DequantizeLinear` (`<w>_DequantizeLinear`, output `<w>_DequantizeLinear_Output`) that
//!   every reader, in that graph or in a body, reads in place of the weight;
//! - `Flat`: a recurrent `W` / `R` of more than one direction, stored as `[D * G * hidden, k]` with one scale
//!   per row, dequantized, then `Reshape`d back (`<w>_Reshape`);
//! - `Rows`: an embedding table: each Gather reads the integer table and its gathered rows are dequantized.
//!
//! Data flow: `collect` walks every graph and finds each constant with all its readers (a reader's `Role` says
//! which scales its slot wants), `plan` decides per weight (skip with a reason, or a `QuantSpec` and a
//! `Layout`), `run` quantizes the planned weights (parallel, or streamed) and `emit` writes one patch per weight.
//!
//! Rules (each decision is a remark at the reading node):
//! - a weight is quantized only when every reader is a weight slot of a chosen op: a weight also read by another
//!   op (or a graph output, or the wrong slot) stays float, since quantizing it would change that reader too;
//! - the per-channel axis is the op's output-channel axis: Conv 0, ConvTranspose 1, Gemm 0 when transB=1 else
//!   1, MatMul the last axis of B; a recurrent `W` `[D, G*hidden, input]` / `R` `[D, G*hidden, hidden]` gets one
//!   scale per gate row of each direction (DequantizeLinear's per-axis scale is 1-D along one axis, so one
//!   direction is quantized along axis 1 in place and several through the `Flat` layout); an embedding table
//!   gets one scale per row (see `Rows`); readers that disagree on the axis get one per-tensor scale;
//! - recurrent biases `B` (and initial states, peepholes) stay float: `[D, 2*G*hidden]` values, small beside
//!   `W` and `R`, and added in float at every step;
//! - per-channel needs ai.onnx 13 (DequantizeLinear's `axis`): an older model is raised to 13 with the
//!   `upgrade-opset` pass; when that fails, weights fall back to per-tensor (DequantizeLinear exists from 10);
//!   a model below 10 that cannot be raised is left unchanged. f16 / bf16 weights need DequantizeLinear-19
//!   (f16 scales) and are left float below it;
//! - already-quantized parts are left alone: a weight slot fed by a DequantizeLinear, a Mul of a Cast (int8
//!   storage), or any non-constant value is not a constant weight; QLinear*, *Integer and com.microsoft ops
//!   are not chosen ops. A Gather of a computed tensor or of an integer constant is data movement, not a table
//!   lookup, and gets no remark (except an 8-bit table: already quantized);
//! - tensors with fewer than `min_elements` elements, non-float dtypes or non-finite values stay float.
//!
//! The quantization itself is parallel over weights (rayon) and deterministic: the patches are applied in a
//! fixed order (graph path, then weight name).
//!
//! Streaming (`WeightConfig::spill`, set by the CLI to the output's folder): an f32 weight held in external
//! data is never copied into memory. It is read in place from its mapped data file (per-channel ranges in
//! one pass, then the integer values), written window by window to an unnamed scratch file, and the
//! quantized tensor refers to that file under the weight's data location; saving copies it into the
//! output's data file. Weights are streamed one at a time, so memory holds one window and the parameters,
//! whatever the model's size.

mod collect;
mod emit;
pub mod nbits;

use collect::{collect, Candidate, Reader, Role};

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use super::params::{
    param_tensors, quantize_tensor_full, F32Quantizer, QType, QuantSpec, Quantized,
};
use crate::error::{Error, Result};
use crate::io::external::Spill;
use crate::ir::tensor::{ExternalRef, TensorData};
use crate::ir::{DataType, GraphPath, Model, NodeId, Tensor, WeightRef, WeightStorage};
use crate::passes::{Outcome, PassContext, PassReport};

/// Weights with fewer elements stay float by default (biases, norms: little to save, much to lose).
pub const DEFAULT_MIN_ELEMENTS: u64 = 256;

/// The op types weight-only quantization knows the weight slot and channel axis of.
pub const KNOWN_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Gather",
    "LSTM",
    "GRU",
    "RNN",
];

/// The recurrent ops: their `W` (slot 1) and `R` (slot 2) are `[num_directions, G * hidden, k]`.
const RECURRENT: &[&str] = &["LSTM", "GRU", "RNN"];

/// What the weight pass does, resolved from the options.
#[derive(Clone, Debug)]
pub struct WeightConfig {
    pub qtype: QType,
    pub symmetric: bool,
    pub per_channel: bool,
    pub reduce_range: bool,
    pub min_elements: u64,
    pub ops: BTreeSet<String>,
    /// Node-name patterns (`*` and `?` wildcards): when not empty, only weights read by a matching node.
    pub include: Vec<String>,
    /// Node-name patterns: weights read by a matching node stay float.
    pub exclude: Vec<String>,
    /// Only weights read by nodes inside `If` / `Loop` / `Scan` bodies (static mode's complement: it quantizes
    /// the main graph's activations and weights itself).
    pub bodies_only: bool,
    /// Where f32 weights held in external data are quantized to (module docs: streaming); `None`: in memory.
    pub spill: Option<Spill>,
}

/// `*` matches any run of characters, `?` one character; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn dims_text(dims: &[i64]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

fn storage_text(s: &WeightStorage) -> &'static str {
    match s {
        WeightStorage::Initializer => "initializer",
        WeightStorage::SparseInitializer => "sparse initializer",
        WeightStorage::Constant { .. } => "Constant node",
    }
}

/// How the readers of a quantized weight get float values back (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    /// One DequantizeLinear of the whole weight (per tensor or along `spec.axis`), read in place of it.
    Dequantize,
    /// Quantized as `[dims[0] * dims[1], dims[2]]` per row (`spec.axis` 0), dequantized, then reshaped back to
    /// `dims`: a recurrent weight of several directions gets a scale per gate row of each direction.
    Flat,
    /// Each Gather reads the integer table; its gathered rows are dequantized: `per_row`, by the scales (and
    /// zero points) gathered with the same indices, else by one DequantizeLinear with the table's scale.
    Rows { per_row: bool },
}

/// A weight the pass will quantize.
struct Job {
    w: WeightRef,
    /// The weight (for `Layout::Flat` viewed as 2-D: same data, other dims).
    tensor: Tensor,
    /// The weight's own dims.
    dims: Vec<i64>,
    spec: QuantSpec,
    layout: Layout,
    readers: Vec<Reader>,
    fallback: Option<String>,
}

/// The spec's axis and the layout for readers of these roles, with a note when the layout falls back.
fn choose_layout(
    cfg: &WeightConfig,
    c: &Candidate,
    dims: &[i64],
    per_axis_note: Option<&str>,
) -> (Option<i64>, Layout, Option<String>) {
    let roles: BTreeSet<Role> = c.readers.iter().filter_map(|r| r.role).collect();
    let whole = |axis: Option<usize>| (axis.map(|a| a as i64), Layout::Dequantize);
    let (axis, layout) = match roles.iter().next() {
        Some(Role::Table { axis }) if roles.len() == 1 => {
            let elsewhere = c.readers.iter().find(|r| r.path != c.w.path);
            let output = c.readers.iter().find(|r| r.feeds_output);
            match (elsewhere, output) {
                // Gather on the integer table, then dequantize the gathered rows: the file is the same size
                // as dequantizing the table first (per-row scales: 5 bytes a row either way), but ONNX Runtime
                // does not fold a DequantizeLinear of an initializer, so a table dequantized first is
                // dequantized whole on every run: measured on minilm_l3_paraphrase (30522 x 384), 8.2 ms a
                // run against 2.3 ms gathering int8 rows (float model 2.7 ms), same outputs. Per row rather
                // than per tensor: that table's rows span 0.027 to 1.06 in max |x|, and one scale for all
                // moved the worst token's output cosine to 0.9972 (per row 0.99996) for 0.45% fewer bytes.
                // A DequantizeLinear cannot take gathered per-row scales (its scale is a scalar or 1-D along
                // one axis), so per-row rows are dequantized as (Cast(q) - Cast(zero point)) * scale, which
                // is what DequantizeLinear computes, bit for bit.
                (None, None) => {
                    let per_row = cfg.per_channel && *axis == 0 && dims.len() >= 2;
                    let note = (cfg.per_channel && !per_row).then(|| {
                        if *axis != 0 {
                            format!("gathered along axis {axis}: one scale for the table")
                        } else {
                            "a 1-D table: one scale".to_string()
                        }
                    });
                    return (per_row.then_some(0), Layout::Rows { per_row }, note);
                }
                (Some(r), _) | (None, Some(r)) => {
                    let why = if r.path != c.w.path {
                        format!("{} reads it from another graph", r.at)
                    } else {
                        format!("the rows {} gathers are a graph output", r.at)
                    };
                    if cfg.per_channel && per_axis_note.is_none() {
                        return (
                            Some(0),
                            Layout::Dequantize,
                            Some(format!(
                                "{why}: the table is dequantized whole before the Gather"
                            )),
                        );
                    }
                    whole(None)
                }
            }
        }
        Some(Role::Recurrent) if roles.len() == 1 && cfg.per_channel && per_axis_note.is_none() => {
            if dims.first().is_some_and(|d| *d > 1) {
                (Some(0), Layout::Flat)
            } else {
                whole(Some(1))
            }
        }
        _ => {
            let axes: BTreeSet<Option<usize>> = roles.iter().map(|r| r.plain_axis()).collect();
            if !cfg.per_channel {
                whole(None)
            } else if axes.len() != 1 || axes.contains(&None) {
                let note = if axes.contains(&None) && axes.len() == 1 {
                    "a 1-D MatMul weight has no channel axis: per-tensor".to_string()
                } else {
                    format!(
                        "readers need different channel axes {:?}: one per-tensor scale",
                        axes.iter().flatten().collect::<Vec<_>>()
                    )
                };
                return (None, Layout::Dequantize, Some(note));
            } else if let Some(note) = per_axis_note {
                return (
                    None,
                    Layout::Dequantize,
                    Some(format!("{note}: per-tensor")),
                );
            } else if roles.len() == 1 && roles.contains(&Role::Lifted) {
                return (
                    Some(0),
                    Layout::Dequantize,
                    Some("stored 2-D, its rows moved into the op's gate rows: one scale per gate row".into()),
                );
            } else {
                whole(axes.first().copied().flatten())
            }
        }
    };
    let fallback = match (cfg.per_channel, per_axis_note, axis) {
        (true, Some(note), None) => Some(format!("{note}: per-tensor")),
        _ => None,
    };
    (axis, layout, fallback)
}

/// Decide for every candidate; `per_axis_note`: why the model's opset forbids per-channel DequantizeLinear.
fn plan(
    model: &Model,
    cfg: &WeightConfig,
    cands: BTreeMap<(GraphPath, String), Candidate>,
    opset: i64,
    per_axis_note: Option<&str>,
    report: &mut PassReport,
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for (_, c) in cands {
        let targets: Vec<&Reader> = c.readers.iter().filter(|r| r.role.is_some()).collect();
        let skip = |report: &mut PassReport, why: String| {
            for r in &targets {
                report.remark(r.at.clone(), Outcome::Skipped, why.clone());
            }
            report.stat("weights_skipped", 1);
        };
        if let Some(other) = c.readers.iter().find(|r| r.role.is_none()) {
            skip(
                report,
                format!(
                    "weight '{}' is also read by {} ({}), which is not a weight slot of a chosen op: kept float",
                    c.w.name, other.at, other.op
                ),
            );
            continue;
        }
        if let Some((r, p)) = targets.iter().find_map(|r| {
            cfg.exclude
                .iter()
                .find(|p| glob_match(p, &r.node) || glob_match(p, &c.w.name))
                .map(|p| (r, p))
        }) {
            skip(
                report,
                format!(
                    "excluded: '{}' matches '{p}'",
                    if glob_match(p, &r.node) {
                        &r.node
                    } else {
                        &c.w.name
                    }
                ),
            );
            continue;
        }
        if !cfg.include.is_empty()
            && !targets.iter().any(|r| {
                cfg.include
                    .iter()
                    .any(|p| glob_match(p, &r.node) || glob_match(p, &c.w.name))
            })
        {
            skip(report, "not matched by any include pattern".into());
            continue;
        }
        let tensor = model.graph.read_weight(&c.w)?.into_owned();
        let numel = tensor.numel()?;
        let dt = tensor.dtype();
        let scale_dtype = match dt {
            DataType::FLOAT => DataType::FLOAT,
            DataType::FLOAT16 | DataType::BFLOAT16 if opset >= 19 => dt,
            DataType::FLOAT16 | DataType::BFLOAT16 => {
                skip(
                    report,
                    format!(
                        "weight '{}' is {}: DequantizeLinear with a {} scale needs ai.onnx 19 (model has {opset})",
                        c.w.name,
                        dt.name(),
                        dt.name()
                    ),
                );
                continue;
            }
            other => {
                skip(
                    report,
                    format!(
                        "weight '{}' is {}, not f32 / f16 / bf16",
                        c.w.name,
                        other.name()
                    ),
                );
                continue;
            }
        };
        if numel < cfg.min_elements {
            skip(
                report,
                format!(
                    "weight '{}' has {numel} elements, fewer than min_elements={}",
                    c.w.name, cfg.min_elements
                ),
            );
            continue;
        }
        let dims = tensor.dims.clone();
        let (axis, layout, fallback) = choose_layout(cfg, &c, &dims, per_axis_note);
        let mut tensor = tensor;
        if layout == Layout::Flat {
            // the same data viewed as [D * G * hidden, k]: row-major, so one row per gate row per direction
            tensor.dims = vec![dims[0] * dims[1], dims[2]];
        }
        let spec = QuantSpec {
            qtype: cfg.qtype,
            symmetric: cfg.symmetric,
            axis,
            reduce_range: cfg.reduce_range,
            scale_dtype,
        };
        jobs.push(Job {
            w: c.w,
            tensor,
            dims,
            spec,
            layout,
            readers: c.readers,
            fallback,
        });
    }
    Ok(jobs)
}

/// Run weight-only quantization on `model`.
pub fn run(
    model: &mut Model,
    cfg: &WeightConfig,
    _cx: &mut PassContext,
    report: &mut PassReport,
) -> Result<()> {
    let Some(mut opset) = model.opset("") else {
        report.remark(
            "model",
            Outcome::Skipped,
            "imports no ai.onnx opset: no DequantizeLinear can be added",
        );
        return Ok(());
    };
    let (mut cands, mut outer) = collect(model, cfg, report)?;
    if cands.is_empty() {
        return Ok(());
    }
    let mut per_axis_note: Option<String> = None;
    let want = if cfg.per_channel { 13 } else { 10 };
    if opset < want {
        // raised on a copy: on failure the model is as it was
        match crate::passes::convert::ensure_opset(model, want) {
            Ok(r) => {
                report.record(r.map(|r| r.changes).unwrap_or_default());
                report.remark(
                    "model",
                    Outcome::Applied,
                    format!(
                        "ai.onnx opset {opset} -> {want} with upgrade-opset: {} DequantizeLinear needs {want}",
                        if cfg.per_channel { "per-channel" } else { "" }
                    ),
                );
                opset = want;
                // node and value ids may have moved: find the weights again
                let mut scratch = PassReport::new(&report.pass);
                (cands, outer) = collect(model, cfg, &mut scratch)?;
            }
            Err(e) if opset >= 10 => {
                per_axis_note = Some(format!(
                    "per-channel DequantizeLinear needs ai.onnx 13, the model has {opset} and upgrade-opset failed ({e})"
                ));
                report.remark(
                    "model",
                    Outcome::Skipped,
                    format!("cannot raise ai.onnx opset {opset} -> 13: {e}; weights quantized per tensor"),
                );
            }
            Err(e) => {
                report.remark(
                    "model",
                    Outcome::Skipped,
                    format!("DequantizeLinear needs ai.onnx 10, the model has {opset} and upgrade-opset failed: {e}"),
                );
                for c in cands.values() {
                    for r in c.readers.iter().filter(|r| r.role.is_some()) {
                        report.remark(
                            r.at.clone(),
                            Outcome::Skipped,
                            "opset too old for DequantizeLinear",
                        );
                    }
                }
                return Ok(());
            }
        }
    }
    let jobs = plan(model, cfg, cands, opset, per_axis_note.as_deref(), report)?;
    // the arithmetic: weights in memory in parallel; weights on disk one at a time (each in parallel inside),
    // straight into scratch files. Results in job order.
    let streamed = |j: &Job| {
        cfg.spill.is_some() && j.tensor.is_external() && j.tensor.dtype() == DataType::FLOAT
    };
    let mut results: Vec<Option<Result<Quantized>>> = jobs
        .par_iter()
        .map(|j| (!streamed(j)).then(|| quantize_tensor_full(&j.tensor, &j.spec)))
        .collect();
    if let Some(spill) = &cfg.spill {
        for (j, r) in jobs.iter().zip(results.iter_mut()) {
            if r.is_none() {
                *r = Some(quantize_to_spill(j, spill));
            }
        }
    }
    let mut biases = BTreeSet::new();
    for (job, q) in jobs.into_iter().zip(results) {
        let q = match q.unwrap_or_else(|| {
            Err(Error::Pass {
                pass: report.pass.clone(),
                msg: format!("weight '{}' was not quantized", job.w.name),
            })
        }) {
            Ok(q) => q,
            Err(e) => {
                for r in job.readers.iter() {
                    report.remark(
                        r.at.clone(),
                        Outcome::Skipped,
                        format!("cannot quantize: {e}"),
                    );
                }
                report.stat("weights_skipped", 1);
                continue;
            }
        };
        for r in &job.readers {
            if RECURRENT.contains(&r.op.as_str()) {
                biases.insert((r.path.clone(), r.id, r.at.clone()));
            }
        }
        emit::apply(model, &job, q, outer.get(&job.w.path), report)?;
    }
    for (path, id, at) in biases {
        bias_remark(model, &path, id, &at, report);
    }
    Ok(())
}

/// The remark that a quantized recurrent node keeps its bias `B` float (when it has one).
fn bias_remark(
    model: &Model,
    path: &GraphPath,
    id: Option<NodeId>,
    at: &str,
    report: &mut PassReport,
) {
    let Some(g) = model.graph.subgraph_at(path) else {
        return;
    };
    let Some(b) = id.and_then(|id| g.node(id)).and_then(|n| n.input(3)) else {
        return;
    };
    let dims = g
        .constant(b)
        .map(|t| format!(" ({} {})", dims_text(&t.dims), t.dtype().name()))
        .unwrap_or_default();
    report.remark(
        at.to_string(),
        Outcome::Skipped,
        format!(
            "bias '{}'{dims} stays float: small beside W and R, and added in float at every step",
            g.value_name(b)
        ),
    );
}

/// Quantize an f32 weight held in external data into a scratch file: the weight is read in place from its
/// mapped file, the integer values are written window by window, and the quantized tensor refers to the
/// scratch file under the weight's own data location (so a save keeps it external, beside the rest).
fn quantize_to_spill(j: &Job, spill: &Spill) -> Result<Quantized> {
    let TensorData::External(src) = &j.tensor.data else {
        return quantize_tensor_full(&j.tensor, &j.spec);
    };
    let fq = F32Quantizer::new(&j.tensor, &j.spec)?;
    let base = j.tensor.name();
    let name = format!("{base}_quantized");
    let file = spill.write_with(&name, fq.len(), |start, window| {
        fq.quantize_into(start, window);
        Ok(())
    })?;
    let mut q = Tensor::from_raw(
        name,
        j.spec.qtype.dtype(),
        j.tensor.dims.clone(),
        bytes::Bytes::new(),
    );
    q.data = TensorData::External(ExternalRef {
        entries: Vec::new(),
        location: src.location.clone(),
        offset: 0,
        length: fq.len() as u64,
        file,
    });
    let (scale, zero_point) = param_tensors(base, &j.spec, &fq.params)?;
    Ok(Quantized {
        q,
        scale,
        zero_point,
        params: fq.params,
    })
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("conv*", "conv_1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("/enc*/fc?", "/encoder/layer.0/fc1"));
        assert!(!glob_match("/enc*/fc?", "/encoder/layer.0/fc12"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }
}
