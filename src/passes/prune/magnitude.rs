//! Unstructured magnitude pruning and N:M pruning of the constant weights of Conv / ConvTranspose / Gemm /
//! MatMul, wherever the weight lives (initializer, sparse initializer, `Constant` node, enclosing graph).
//!
//! Ties in magnitude are broken by element index, so the result never depends on sort stability or threads.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::tensor::DataType;
use crate::ir::{AttrList, GraphRoot, Model, Patch, SparseForm, Tensor, WeightRef};
use crate::passes::{Outcome, PassReport};

use super::{Method, Prune, PASS};

/// The sparsity of one pruned weight.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerSparsity {
    /// The node that reads the weight (with its subgraph path).
    pub node: String,
    pub op: String,
    pub weight: String,
    pub numel: u64,
    pub zeros_before: u64,
    pub zeros_after: u64,
    /// zeros_after / numel.
    pub sparsity: f64,
    /// Written as a sparse initializer / `sparse_value` (`sparse_storage`).
    pub stored_sparse: bool,
}

/// How an op reads its weight along the reduction dimension: element `(o, r, i)` sits at
/// `o * len * inner + r * inner + i`, and `r` runs over the reduction; `part` is the length of an independent
/// part of `r` (a Conv group) that an N:M block must not straddle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reduction {
    pub outer: usize,
    pub len: usize,
    pub inner: usize,
    pub part: usize,
}

/// The reduction layout of `op`'s weight of dims `dims`; None when the op reads it in a form we do not know.
pub(crate) fn reduction_of(op: &str, dims: &[i64], group: i64, trans_b: bool) -> Option<Reduction> {
    let d: Vec<usize> = dims
        .iter()
        .map(|&x| usize::try_from(x).ok())
        .collect::<Option<_>>()?;
    let prod = |s: &[usize]| s.iter().product::<usize>();
    match op {
        "Conv" if d.len() >= 3 => Some(Reduction {
            outer: d[0],
            len: prod(&d[1..]),
            inner: 1,
            part: prod(&d[1..]),
        }),
        "ConvTranspose" if d.len() >= 3 && group >= 1 && d[0] % group as usize == 0 => {
            Some(Reduction {
                outer: 1,
                len: d[0],
                inner: prod(&d[1..]),
                part: d[0] / group as usize,
            })
        }
        "Gemm" if d.len() == 2 => Some(if trans_b {
            Reduction {
                outer: d[0],
                len: d[1],
                inner: 1,
                part: d[1],
            }
        } else {
            Reduction {
                outer: 1,
                len: d[0],
                inner: d[1],
                part: d[0],
            }
        }),
        "MatMul" if d.len() >= 2 => {
            let r = d.len();
            Some(Reduction {
                outer: prod(&d[..r - 2]),
                len: d[r - 2],
                inner: d[r - 1],
                part: d[r - 2],
            })
        }
        _ => None,
    }
}

struct Target {
    w: WeightRef,
    node: String,
    op: String,
    layout: Option<Reduction>,
    /// The weight as the op reads it (dequantized when the storage is quantized).
    values: Vec<f64>,
    /// The stored tensor.
    tensor: Tensor,
    /// Set when the storage is quantized: each element's zero point, written where the weight is pruned.
    zero_points: Option<Vec<f64>>,
}

/// A weight stored quantized and dequantized in the graph: `DequantizeLinear(q, scale[, zero_point])` per
/// tensor or per axis, or `Mul(Cast(q), scale)` (either operand order, `scale` broadcast as numpy does), `q`,
/// `scale` and the zero point constant. Already-quantized exports store weights this way.
struct Dequantized {
    storage: WeightRef,
    scale: Tensor,
    zero_point: Option<Tensor>,
    /// DequantizeLinear's axis (None: `Mul`, broadcast).
    axis: Option<i64>,
}

fn dequantized(site: &crate::ir::Site<'_>, v: crate::ir::ValueId) -> Result<Option<Dequantized>> {
    let g = site.graph();
    let Some((_, node)) = g.producer(v) else {
        return Ok(None);
    };
    if !node.op.is_default_domain() {
        return Ok(None);
    }
    let konst = |x: Option<crate::ir::ValueId>| x.and_then(|x| site.scope.constant(x));
    if node.op.is("DequantizeLinear") {
        if node.get_int("block_size")?.unwrap_or(0) != 0 {
            return Ok(None);
        }
        let (Some(q), Some(scale)) = (node.input(0), konst(node.input(1))) else {
            return Ok(None);
        };
        let Some(storage) = site.scope.weight(q) else {
            return Ok(None);
        };
        let zero_point = match node.input(2) {
            None => None,
            Some(z) => match site.scope.constant(z) {
                Some(t) => Some(t.into_owned()),
                None => return Ok(None),
            },
        };
        return Ok(Some(Dequantized {
            storage,
            scale: scale.into_owned(),
            zero_point,
            axis: Some(node.get_int("axis")?.unwrap_or(1)),
        }));
    }
    if node.op.is("Mul") {
        for (a, b) in [(0, 1), (1, 0)] {
            let Some((_, cast)) = node.input(a).and_then(|x| g.producer(x)) else {
                continue;
            };
            if !cast.op.is("Cast") {
                continue;
            }
            let (Some(q), Some(scale)) = (cast.input(0), konst(node.input(b))) else {
                continue;
            };
            if let Some(storage) = site.scope.weight(q) {
                return Ok(Some(Dequantized {
                    storage,
                    scale: scale.into_owned(),
                    zero_point: None,
                    axis: None,
                }));
            }
        }
    }
    Ok(None)
}

/// Per element of a `dims` tensor: the index of the `small`-dims tensor broadcast onto it (numpy rules, or
/// along `axis` for a 1-D per-axis tensor); None when it does not broadcast to exactly `dims`.
fn broadcast_index(dims: &[i64], small: &[i64], axis: Option<i64>) -> Option<Vec<usize>> {
    let n: usize = dims.iter().map(|d| *d as usize).product();
    let numel: i64 = small.iter().product();
    if numel == 1 {
        return Some(vec![0; n]);
    }
    // the small tensor's dims aligned to `dims`
    let aligned: Vec<i64> = match axis {
        Some(a) => {
            let a = if a < 0 { a + dims.len() as i64 } else { a };
            if small.len() != 1 || a < 0 || a as usize >= dims.len() || dims[a as usize] != small[0]
            {
                return None;
            }
            (0..dims.len())
                .map(|i| if i == a as usize { small[0] } else { 1 })
                .collect()
        }
        None => {
            if small.len() > dims.len() {
                return None;
            }
            let mut v = vec![1; dims.len() - small.len()];
            v.extend_from_slice(small);
            v
        }
    };
    if aligned.iter().zip(dims).any(|(s, d)| *s != 1 && s != d) {
        return None;
    }
    // strides of the small tensor over the aligned axes (0 where broadcast)
    let mut strides = vec![0usize; dims.len()];
    let mut acc = 1usize;
    for i in (0..dims.len()).rev() {
        if aligned[i] != 1 {
            strides[i] = acc;
            acc *= aligned[i] as usize;
        }
    }
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        out.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if (idx[k] as i64) < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Some(out)
}

fn is_float(dt: DataType) -> bool {
    dt.is_float()
}

/// Find the weights to prune: input 1 of every node of the chosen ops in the main graph and its subgraphs,
/// each weight once (the first reader decides its layout).
fn targets(p: &Prune, model: &Model, report: &mut PassReport) -> Result<Vec<Target>> {
    let mut out: Vec<Target> = Vec::new();
    let mut seen: BTreeMap<(Vec<(u32, usize)>, String), usize> = BTreeMap::new();
    type Found = (WeightRef, String, String, i64, bool, Option<Dequantized>);
    let mut found: Vec<Found> = Vec::new();
    model.visit_graphs(&mut |site| {
        let g = site.graph();
        for (_, node) in g.nodes() {
            let op = node.op.op_type.as_str();
            if !node.op.is_default_domain() || !p.ops.iter().any(|o| o == op) {
                continue;
            }
            let at = site.at(node.name());
            if site.root != GraphRoot::Main {
                report.remark(
                    at,
                    Outcome::Skipped,
                    "weights of model-local functions are not pruned",
                );
                continue;
            }
            let Some(wv) = node.input(1) else { continue };
            let (w, deq) = match site.scope.weight(wv) {
                Some(w) => (w, None),
                None => match dequantized(&site, wv)? {
                    Some(d) => (d.storage.clone(), Some(d)),
                    None => {
                        report.remark(at, Outcome::Skipped, "input 1 is not a constant weight");
                        continue;
                    }
                },
            };
            let group = node.get_int("group")?.unwrap_or(1);
            let trans_b = node.get_int("transB")?.unwrap_or(0) != 0;
            found.push((w, at, op.to_string(), group, trans_b, deq));
        }
        Ok(())
    })?;
    for (w, at, op, group, trans_b, deq) in found {
        let key = (
            w.path
                .0
                .iter()
                .map(|s| (s.node.index() as u32, s.sub))
                .collect(),
            w.name.clone(),
        );
        if seen.contains_key(&key) {
            continue;
        }
        let tensor = model.graph.read_weight(&w)?.into_owned();
        // quantized storage: ranked by the dequantized values, pruned by writing the zero point
        let (values, zero_points) = if let Some(d) = deq {
            let dt = tensor.dtype();
            let int = [
                DataType::INT8,
                DataType::UINT8,
                DataType::INT16,
                DataType::UINT16,
            ];
            let how = |why: &str| format!("weight '{}' ({}): {why}", w.name, dt.name());
            if !int.contains(&dt) || !d.scale.dtype().is_float() {
                report.remark(
                    at,
                    Outcome::Skipped,
                    how("quantized storage of a type not pruned"),
                );
                continue;
            }
            let si = broadcast_index(&tensor.dims, &d.scale.dims, d.axis);
            let zi = match &d.zero_point {
                Some(z) => broadcast_index(&tensor.dims, &z.dims, d.axis),
                None => si.as_ref().map(|v| vec![0; v.len()]),
            };
            let (Some(si), Some(zi)) = (si, zi) else {
                report.remark(
                    at,
                    Outcome::Skipped,
                    how("its scale does not broadcast onto it"),
                );
                continue;
            };
            let scale = d.scale.to_f64_vec()?;
            let zp = match &d.zero_point {
                Some(z) => z.to_f64_vec()?,
                None => vec![0.0],
            };
            let zero_points: Vec<f64> = zi.iter().map(|&k| zp[k]).collect();
            let values = tensor
                .to_f64_vec()?
                .iter()
                .zip(&si)
                .zip(&zero_points)
                .map(|((x, &k), z)| (x - z) * scale[k])
                .collect();
            (values, Some(zero_points))
        } else if is_float(tensor.dtype()) {
            (tensor.to_f64_vec()?, None)
        } else {
            report.remark(
                at,
                Outcome::Skipped,
                format!(
                    "weight '{}' is {}, not a float type",
                    w.name,
                    tensor.dtype().name()
                ),
            );
            continue;
        };
        let layout = reduction_of(&op, &tensor.dims, group, trans_b);
        seen.insert(key, out.len());
        out.push(Target {
            w,
            node: at,
            op,
            layout,
            values,
            tensor,
            zero_points,
        });
    }
    Ok(out)
}

/// Indices of the `k` smallest |v| (ties by index).
fn smallest(values: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Zero the N:M pattern: in every block of `m` consecutive reduction positions keep the `n` largest |w|.
/// Returns false (nothing done) when the reduction does not split into whole blocks.
pub(crate) fn nm_mask(values: &mut [f64], r: Reduction, n: usize, m: usize) -> bool {
    if r.part == 0 || r.part % m != 0 || r.len % r.part != 0 {
        return false;
    }
    let mut block = Vec::with_capacity(m);
    for o in 0..r.outer {
        for i in 0..r.inner {
            for b in 0..r.len / m {
                block.clear();
                for j in 0..m {
                    block.push(o * r.len * r.inner + (b * m + j) * r.inner + i);
                }
                let mut order = block.clone();
                order.sort_by(|&a, &c| values[a].abs().total_cmp(&values[c].abs()).then(a.cmp(&c)));
                for &e in &order[..m - n] {
                    values[e] = 0.0;
                }
            }
        }
    }
    true
}

/// Does `values` satisfy N:M along `r` (at most `n` non-zeros in every block)?
pub fn satisfies_nm(
    values: &[f64],
    r_op: &str,
    dims: &[i64],
    group: i64,
    trans_b: bool,
    n: usize,
    m: usize,
) -> bool {
    let Some(r) = reduction_of(r_op, dims, group, trans_b) else {
        return false;
    };
    if r.part % m != 0 {
        return false;
    }
    for o in 0..r.outer {
        for i in 0..r.inner {
            for b in 0..r.len / m {
                let nz = (0..m)
                    .filter(|j| values[o * r.len * r.inner + (b * m + j) * r.inner + i] != 0.0)
                    .count();
                if nz > n {
                    return false;
                }
            }
        }
    }
    true
}

pub(super) fn run(
    p: &Prune,
    model: &mut Model,
    report: &mut PassReport,
) -> Result<Vec<LayerSparsity>> {
    let mut ts = targets(p, model, report)?;
    let zeros = |v: &[f64]| v.iter().filter(|x| **x == 0.0).count() as u64;
    let before: Vec<u64> = ts.iter().map(|t| zeros(&t.values)).collect();
    let mut skip = vec![false; ts.len()];
    match p.method {
        Method::Nm => {
            for (k, t) in ts.iter_mut().enumerate() {
                let ok = t
                    .layout
                    .is_some_and(|r| nm_mask(&mut t.values, r, p.n, p.m));
                if !ok {
                    skip[k] = true;
                    report.remark(
                        t.node.clone(),
                        Outcome::Skipped,
                        format!(
                            "weight '{}' {:?}: its reduction dimension does not split into blocks of {}",
                            t.w.name, t.tensor.dims, p.m
                        ),
                    );
                }
            }
        }
        Method::Magnitude => {
            if let Some(th) = p.threshold {
                for t in ts.iter_mut() {
                    for v in t.values.iter_mut() {
                        if v.abs() < th {
                            *v = 0.0;
                        }
                    }
                }
            } else if p.global {
                let mut all: Vec<(f64, usize, usize)> = Vec::new();
                for (k, t) in ts.iter().enumerate() {
                    all.extend(t.values.iter().enumerate().map(|(i, v)| (v.abs(), k, i)));
                }
                let kk = (all.len() as f64 * p.sparsity).floor() as usize;
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                for &(_, k, i) in &all[..kk] {
                    ts[k].values[i] = 0.0;
                }
            } else {
                for t in ts.iter_mut() {
                    let kk = (t.values.len() as f64 * p.sparsity).floor() as usize;
                    for i in smallest(&t.values, kk) {
                        t.values[i] = 0.0;
                    }
                }
            }
        }
        Method::Channel => unreachable!("channel pruning is not magnitude pruning"),
    }
    let mut out = Vec::new();
    for (k, t) in ts.into_iter().enumerate() {
        if skip[k] {
            continue;
        }
        let after = zeros(&t.values);
        let numel = t.values.len() as u64;
        out.push(LayerSparsity {
            node: t.node.clone(),
            op: t.op.clone(),
            weight: t.w.name.clone(),
            numel,
            zeros_before: before[k],
            zeros_after: after,
            sparsity: if numel == 0 {
                0.0
            } else {
                after as f64 / numel as f64
            },
            stored_sparse: false,
        });
        report.stat("weights_pruned", after - before[k]);
        if after == before[k] {
            if p.sparse_storage {
                let last = out.len() - 1;
                out[last].stored_sparse = store_sparse(
                    p,
                    model,
                    &t.w,
                    &t.node,
                    &t.tensor,
                    stored_zeros(&t, &t.tensor, after)?,
                    report,
                )?;
            }
            continue;
        }
        let stored = match &t.zero_points {
            // quantized storage: pruned elements take their zero point, the others keep their integers
            Some(zp) => {
                let mut q = t.tensor.to_f64_vec()?;
                for ((x, v), z) in q.iter_mut().zip(&t.values).zip(zp) {
                    if *v == 0.0 {
                        *x = *z;
                    }
                }
                q
            }
            None => t.values.clone(),
        };
        let mut nt = Tensor::from_f64_as(
            t.tensor.name(),
            t.tensor.dtype(),
            t.tensor.dims.clone(),
            &stored,
        )
        .map_err(|e| Error::Pass {
            pass: PASS.into(),
            msg: format!("weight '{}': {e}", t.w.name),
        })?;
        nt.name = t.tensor.name.clone();
        nt.doc_string = t.tensor.doc_string.clone();
        nt.metadata_props = t.tensor.metadata_props.clone();
        let mut patch = Patch::new(PASS);
        patch.replace_weight(&t.w, nt.clone());
        report.record(model.graph.apply_at(&t.w.path, patch)?);
        if p.sparse_storage {
            // the dense replacement may have changed the storage (a sparse initializer became dense): look again
            let w = model
                .graph
                .subgraph_at(&t.w.path)
                .and_then(|g| g.weight(t.w.value))
                .map(|w| WeightRef {
                    path: t.w.path.clone(),
                    ..w
                });
            if let Some(w) = w {
                let last = out.len() - 1;
                let zeros = stored_zeros(&t, &nt, after)?;
                out[last].stored_sparse = store_sparse(p, model, &w, &t.node, &nt, zeros, report)?;
            }
        }
        report.remark(
            t.node,
            Outcome::Applied,
            format!(
                "weight '{}': {} of {} zero ({:.1}%)",
                t.w.name,
                after,
                numel,
                100.0 * after as f64 / numel.max(1) as f64
            ),
        );
    }
    Ok(out)
}

/// Zeros of the stored tensor: the pruned weight's zeros, except for quantized storage, whose pruned elements
/// hold their zero point (a sparse form keeps those that are not 0).
fn stored_zeros(t: &Target, stored: &Tensor, weight_zeros: u64) -> Result<u64> {
    Ok(match t.zero_points {
        Some(_) => stored.to_f64_vec()?.iter().filter(|x| **x == 0.0).count() as u64,
        None => weight_zeros,
    })
}

/// Store pruned weight `w` (content `dense`, `zeros` of its elements zero) sparse when `sparse_storage` allows
/// it; a remark says why not otherwise. Returns whether it was stored sparse.
fn store_sparse(
    p: &Prune,
    model: &mut Model,
    w: &WeightRef,
    node: &str,
    dense: &Tensor,
    zeros: u64,
    report: &mut PassReport,
) -> Result<bool> {
    let numel = dense.numel()?;
    let nnz = numel - zeros;
    let density = if numel == 0 {
        1.0
    } else {
        nnz as f64 / numel as f64
    };
    let keep = |report: &mut PassReport, why: String| -> Result<bool> {
        report.remark(
            node.to_string(),
            Outcome::Skipped,
            format!("weight '{}' kept dense: {why}", w.name),
        );
        Ok(false)
    };
    if !w.path.0.is_empty() {
        // a Constant with sparse_value is legal in a body too, but ONNX Runtime's densifying of it is only
        // exercised here for the main graph: a body weight stays dense rather than untested
        return keep(
            report,
            "sparse storage is done for main-graph weights only (this one lives in a subgraph)"
                .into(),
        );
    }
    if density > p.sparse_density {
        return keep(
            report,
            format!(
                "density {density:.3} is above sparse_density={}",
                p.sparse_density
            ),
        );
    }
    let elem = dense.dtype().bits().unwrap_or(0) / 8;
    // sparse: nnz values of the weight's dtype + nnz int64 linear indices; dense: every element
    if elem == 0 || nnz * (elem + 8) >= numel * elem {
        return keep(
            report,
            format!(
                "its sparse form ({nnz} values + {nnz} int64 indices) would not be smaller than the dense one"
            ),
        );
    }
    // Constant's `sparse_value` exists since opset 11
    if model.opset("").is_some_and(|v| v < 11) {
        return keep(
            report,
            "Constant's sparse_value needs opset 11 or later".into(),
        );
    }
    let sp = crate::ir::weight::sparsify(dense, &w.name)?;
    // an initializer becomes a `Constant` with `sparse_value`, not a sparse initializer: onnx.checker's
    // full_check types sparse initializers as sparse_tensor(T), which Conv / MatMul inputs refuse
    let g = model
        .graph
        .subgraph_at(&w.path)
        .ok_or_else(|| Error::Pass {
            pass: PASS.into(),
            msg: format!("weight '{}': its graph is gone", w.name),
        })?;
    let mut patch = Patch::new(PASS);
    patch.store_sparse(g, w, sp, SparseForm::Constant);
    report.record(model.graph.apply_at(&w.path, patch)?);
    report.stat("weights_stored_sparse", 1);
    report.remark(
        node.to_string(),
        Outcome::Applied,
        format!(
            "weight '{}' stored sparse: {nnz} of {numel} non-zero, {} -> {} bytes",
            w.name,
            numel * elem,
            nnz * (elem + 8)
        ),
    );
    Ok(true)
}
