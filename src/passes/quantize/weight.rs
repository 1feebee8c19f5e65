//! Weight-only quantization (`quantize{mode=weight}`): every constant weight of the chosen ops (Conv,
//! ConvTranspose, Gemm, MatMul; Gather opt-in), wherever it lives (an initializer, a sparse initializer, a
//! `Constant` node in any value form, or a constant of an enclosing graph read from an If / Loop / Scan body),
//! becomes an integer initializer `<w>_quantized`, a scale `<w>_scale` and a zero point `<w>_zero_point`, read
//! by one `DequantizeLinear` (`<w>_DequantizeLinear`, output `<w>_DequantizeLinear_Output`) placed in the graph
//! that held the weight; every reader, in that graph or in a body, reads the DequantizeLinear output and the
//! float weight is removed.
//!
//! Rules (each decision is a remark at the reading node):
//! - a weight is quantized only when every reader is a weight slot of a chosen op: a weight also read by another
//!   op (or a graph output, or the wrong slot) stays float, since quantizing it would change that reader too;
//! - the per-channel axis is the op's output-channel axis: Conv 0, ConvTranspose 1, Gemm 0 when transB=1 else
//!   1, MatMul the last axis of B, Gather 0 (one scale per embedding row); readers that disagree on the axis
//!   get one per-tensor scale;
//! - per-channel needs ai.onnx 13 (DequantizeLinear's `axis`): an older model is raised to 13 with the
//!   `upgrade-opset` pass; when that fails, weights fall back to per-tensor (DequantizeLinear exists from 10);
//!   a model below 10 that cannot be raised is left unchanged. f16 / bf16 weights need DequantizeLinear-19
//!   (f16 scales) and are left float below it;
//! - already-quantized parts are left alone: a weight slot fed by a DequantizeLinear, a Mul of a Cast (int8
//!   storage), or any non-constant value is not a constant weight; QLinear*, *Integer and com.microsoft ops
//!   are not chosen ops;
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

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::ir::AttrList;

use super::params::{
    param_tensors, quantize_tensor_full, F32Quantizer, QType, QuantSpec, Quantized,
};
use crate::error::{Error, Result};
use crate::io::external::Spill;
use crate::ir::tensor::{ExternalRef, TensorData};
use crate::ir::{
    DataType, GraphPath, GraphRoot, Model, Patch, Tensor, ValueDef, WeightRef, WeightStorage,
};
use crate::passes::{Outcome, PassContext, PassReport};

/// Weights with fewer elements stay float by default (biases, norms: little to save, much to lose).
pub const DEFAULT_MIN_ELEMENTS: u64 = 256;

/// The op types weight-only quantization knows the weight slot and channel axis of.
pub const KNOWN_OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"];

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

/// One node input (or graph output) that reads a weight.
#[derive(Clone, Debug)]
struct Reader {
    /// `if_0/then_branch/conv` (node name with the subgraph path).
    at: String,
    /// The node's own name, for include / exclude.
    node: String,
    op: String,
    /// The per-channel axis when this is the weight slot of a chosen op (already normalised), else None.
    target: Option<TargetSlot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TargetSlot {
    axis: usize,
}

struct Candidate {
    w: WeightRef,
    readers: Vec<Reader>,
}

/// The weight slot of a chosen op and the per-channel axis for a weight of rank `rank`.
fn weight_slot(node: &crate::ir::Node, rank: usize) -> Result<Option<(usize, Option<usize>)>> {
    let op = node.op.op_type.as_str();
    Ok(match op {
        "Conv" if rank >= 3 => Some((1, Some(0))),
        "ConvTranspose" if rank >= 3 => Some((1, Some(1))),
        "Gemm" if rank == 2 => {
            let t = node.get_int("transB")?.unwrap_or(0) != 0;
            Some((1, Some(if t { 0 } else { 1 })))
        }
        "MatMul" if rank >= 2 => Some((1, Some(rank - 1))),
        "MatMul" if rank == 1 => Some((1, None)),
        "Gather" if rank >= 1 => Some((0, Some(0))),
        _ => None,
    })
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

/// Why a chosen op's weight slot is not a constant, for the remark.
fn not_constant_reason(g: &crate::ir::Graph, v: crate::ir::ValueId) -> String {
    let name = g.value_name(v);
    match g.value(v).def {
        ValueDef::Node(n, _) => {
            let op = g.node(n).map(|n| n.op.display()).unwrap_or_default();
            if op == "DequantizeLinear" {
                format!("weight '{name}' is already quantized (read through DequantizeLinear)")
            } else if op == "Mul" && reads_int_storage(g, n) {
                format!("weight '{name}' is already quantized (integer storage read through Cast and Mul)")
            } else {
                format!("weight '{name}' is computed by a {op} node, not a constant")
            }
        }
        ValueDef::Initializer => {
            format!("weight '{name}' is also a graph input (can be overridden at run time)")
        }
        ValueDef::Outer => {
            format!("weight '{name}' comes from an enclosing graph and is not a constant there")
        }
        _ => format!("weight '{name}' is a graph input, not a constant"),
    }
}

/// Does this Mul read a Cast of an 8-bit (or 4-bit) integer constant (a weight stored quantized)?
fn reads_int_storage(g: &crate::ir::Graph, mul: crate::ir::NodeId) -> bool {
    let Some(m) = g.node(mul) else { return false };
    m.inputs.iter().flatten().any(|v| match g.producer(*v) {
        Some((_, c)) if c.op.is("Cast") => c.input(0).is_some_and(|x| {
            let dt = match g.constant(x) {
                Some(t) => t.dtype(),
                None => return false,
            };
            matches!(
                dt,
                DataType::INT8 | DataType::UINT8 | DataType::INT4 | DataType::UINT4
            )
        }),
        _ => false,
    })
}

/// Find every constant read by a chosen op's weight slot, with all its readers. Remarks for weight slots that
/// are not constants go to `report`.
fn collect(
    model: &Model,
    cfg: &WeightConfig,
    report: &mut PassReport,
) -> Result<(
    BTreeMap<(GraphPath, String), Candidate>,
    BTreeMap<GraphPath, BTreeSet<String>>,
)> {
    let mut cands: BTreeMap<(GraphPath, String), Candidate> = BTreeMap::new();
    // every read of every constant, keyed like `cands`; folded in after the walk
    let mut reads: BTreeMap<(GraphPath, String), (WeightRef, Vec<Reader>)> = BTreeMap::new();
    let mut outer_names: BTreeMap<GraphPath, BTreeSet<String>> = BTreeMap::new();
    model.visit_graphs(&mut |site| {
        if site.root != GraphRoot::Main {
            return Ok(());
        }
        let g = site.graph();
        if !site.path.is_root() {
            outer_names.insert(site.path.clone(), site.scope.outer_names());
        }
        for (_, node) in g.nodes() {
            let chosen = node.op.is_default_domain()
                && cfg.ops.contains(&node.op.op_type)
                && !(cfg.bodies_only && site.path.is_root());
            for (slot, v) in node.inputs.iter().enumerate() {
                let Some(v) = *v else { continue };
                let w = site.scope.weight(v);
                let mut target = None;
                if chosen {
                    // which slot is the weight depends on the weight's rank: read dims cheaply
                    let rank = w.as_ref().and_then(|w| weight_rank(model, w));
                    let want_slot = match node.op.op_type.as_str() {
                        "Gather" => 0,
                        _ => 1,
                    };
                    if slot == want_slot {
                        match (&w, rank) {
                            (None, _) => {
                                report.remark(
                                    site.at(node.name()),
                                    Outcome::Skipped,
                                    not_constant_reason(g, v),
                                );
                            }
                            (Some(_), Some(r)) => match weight_slot(node, r)? {
                                Some((s, axis)) if s == slot => {
                                    target = Some(
                                        axis.map(|a| TargetSlot { axis: a })
                                            .unwrap_or(TargetSlot { axis: usize::MAX }),
                                    )
                                }
                                _ => {}
                            },
                            _ => {}
                        }
                    }
                }
                let Some(w) = w else { continue };
                let reader = Reader {
                    at: site.at(node.name()),
                    node: node.name().to_string(),
                    op: node.op.display(),
                    target,
                };
                reads
                    .entry((w.path.clone(), w.name.clone()))
                    .or_insert_with(|| (w.clone(), Vec::new()))
                    .1
                    .push(reader);
            }
        }
        for io in g.outputs() {
            if let Some(w) = site.scope.weight(io.value) {
                reads
                    .entry((w.path.clone(), w.name.clone()))
                    .or_insert_with(|| (w.clone(), Vec::new()))
                    .1
                    .push(Reader {
                        at: site.at(g.value_name(io.value)),
                        node: String::new(),
                        op: "graph output".into(),
                        target: None,
                    });
            }
        }
        Ok(())
    })?;
    for (key, (w, readers)) in reads {
        if readers.iter().any(|r| r.target.is_some()) {
            cands.insert(key, Candidate { w, readers });
        }
    }
    Ok((cands, outer_names))
}

/// The rank of a weight (read without copying data for initializers).
fn weight_rank(model: &Model, w: &WeightRef) -> Option<usize> {
    match w.storage {
        WeightStorage::Initializer => model
            .graph
            .subgraph_at(&w.path)?
            .value(w.value)
            .init
            .as_ref()
            .map(|t| t.dims.len()),
        _ => model.graph.read_weight(w).ok().map(|t| t.dims.len()),
    }
}

/// A weight the pass will quantize.
struct Job {
    w: WeightRef,
    tensor: Tensor,
    spec: QuantSpec,
    readers: Vec<Reader>,
    fallback: Option<String>,
}

/// Decide for every candidate; `per_axis_ok`: the model's opset allows per-channel DequantizeLinear.
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
        let targets: Vec<&Reader> = c.readers.iter().filter(|r| r.target.is_some()).collect();
        let skip = |report: &mut PassReport, why: String| {
            for r in &targets {
                report.remark(r.at.clone(), Outcome::Skipped, why.clone());
            }
            report.stat("weights_skipped", 1);
        };
        if let Some(other) = c.readers.iter().find(|r| r.target.is_none()) {
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
        let axes: BTreeSet<usize> = targets
            .iter()
            .filter_map(|r| r.target.map(|t| t.axis))
            .collect();
        let mut fallback = None;
        let axis = if !cfg.per_channel {
            None
        } else if axes.len() != 1 || axes.contains(&usize::MAX) {
            fallback = Some(if axes.contains(&usize::MAX) {
                "a 1-D MatMul weight has no channel axis: per-tensor".to_string()
            } else {
                format!("readers need different channel axes {axes:?}: one per-tensor scale")
            });
            None
        } else if let Some(note) = per_axis_note {
            fallback = Some(format!("{note}: per-tensor"));
            None
        } else {
            axes.first().map(|a| *a as i64)
        };
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
            spec,
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
                    for r in c.readers.iter().filter(|r| r.target.is_some()) {
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
        apply(model, &job, q, outer.get(&job.w.path), report)?;
    }
    Ok(())
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

fn apply(
    model: &mut Model,
    job: &Job,
    q: Quantized,
    outer_names: Option<&BTreeSet<String>>,
    report: &mut PassReport,
) -> Result<()> {
    let g = model
        .graph
        .subgraph_at(&job.w.path)
        .ok_or_else(|| Error::Pass {
            pass: report.pass.clone(),
            msg: format!("weight '{}': its graph disappeared", job.w.name),
        })?;
    let mut p = Patch::new(&report.pass);
    if let Some(names) = outer_names {
        p.avoid_names(names.clone());
    }
    let base = job.w.name.as_str();
    let bytes_before = job.tensor.byte_size();
    let bytes_after = q.q.byte_size() + q.scale.byte_size() + q.zero_point.byte_size();
    let (out, node_name) =
        super::add_dequantize(&mut p, g, base, q.q, q.scale, q.zero_point, job.spec.axis);
    p.replace_all_uses(job.w.value, out);
    p.remove_weight(&job.w);
    let log = model.graph.apply_at(&job.w.path, p)?;
    report.record(log);
    report.stat("weights_quantized", 1);
    report.stat("bytes_before", bytes_before);
    report.stat("bytes_after", bytes_after);
    let gran = match job.spec.axis {
        Some(a) => format!("per-channel axis {a}"),
        None => "per-tensor".to_string(),
    };
    let mut why = format!(
        "weight '{}' ({}, {} {}) -> {} {}{} through '{node_name}' ({} -> {} bytes)",
        job.w.name,
        storage_text(&job.w.storage),
        dims_text(&job.tensor.dims),
        job.tensor.dtype().name(),
        job.spec.qtype,
        if job.spec.symmetric { "symmetric " } else { "" },
        gran,
        bytes_before,
        bytes_after
    );
    if let Some(f) = &job.fallback {
        why.push_str(&format!(" ({f})"));
    }
    for r in &job.readers {
        report.remark(r.at.clone(), Outcome::Applied, why.clone());
    }
    Ok(())
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
