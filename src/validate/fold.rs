//! Forms tract 0.23.9 cannot load: int4 / uint4 tensors and blocked (`block_size`) DequantizeLinear. A
//! DequantizeLinear whose inputs are all constant is folded exactly into a float initializer for the tract run
//! (`y = (x - zero_point) * scale` in f32, as the ONNX reference computes it) and reported as a remark; any
//! other use of those forms (activation Q/DQ to int4, an int4 runtime input) is refused with an error naming
//! the node. Never a silent pass.

use crate::error::{Error, Result};
use crate::ir::{AttrList, Attribute, DataType, Graph, Model, Patch, Tensor, ValueId};

fn is_4bit(dt: DataType) -> bool {
    matches!(dt, DataType::INT4 | DataType::UINT4)
}

/// The integer values of a constant tensor (4-bit types unpacked, low nibble first).
fn int_values(t: &Tensor) -> Result<Vec<i64>> {
    let dt = t.dtype();
    if is_4bit(dt) {
        let n = t.numel()? as usize;
        let raw = t.raw_bytes()?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let b = raw.get(i / 2).copied().unwrap_or(0);
            let nib = if i % 2 == 0 { b & 0x0f } else { b >> 4 };
            out.push(if dt == DataType::INT4 {
                ((nib << 4) as i8 >> 4) as i64
            } else {
                nib as i64
            });
        }
        return Ok(out);
    }
    match dt {
        DataType::UINT16 => Ok(t
            .raw_bytes()?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
            .collect()),
        DataType::INT16 => Ok(t
            .raw_bytes()?
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
            .collect()),
        _ => t.to_i64_vec(),
    }
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Dequantize constant `x` with `scale` / `zero_point` (per tensor, per axis or blocked along `axis`).
fn dequantize(
    x: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    axis: i64,
    block: i64,
) -> Result<Vec<f32>> {
    let xv = int_values(x)?;
    let sv = scale.to_f32_vec()?;
    let zv = match zp {
        Some(z) => int_values(z)?,
        None => vec![0; sv.len()],
    };
    if zv.len() != sv.len() {
        return Err(Error::Validate("zero point and scale sizes differ".into()));
    }
    let xd: Vec<usize> = x.dims.iter().map(|d| *d as usize).collect();
    let rank = xd.len() as i64;
    if sv.len() == 1 {
        return Ok(xv.iter().map(|q| (q - zv[0]) as f32 * sv[0]).collect());
    }
    let axis = if axis < 0 { axis + rank } else { axis };
    if axis < 0 || axis >= rank {
        return Err(Error::Validate(format!(
            "axis {axis} out of range for rank {rank}"
        )));
    }
    let axis = axis as usize;
    let xs = strides(&xd);
    let sd: Vec<usize> = scale.dims.iter().map(|d| *d as usize).collect();
    let mut out = Vec::with_capacity(xv.len());
    if block <= 0 {
        if sv.len() != xd[axis] {
            return Err(Error::Validate(format!(
                "per-axis scale has {} values for axis {axis} of size {}",
                sv.len(),
                xd[axis]
            )));
        }
        for (i, q) in xv.iter().enumerate() {
            let c = (i / xs[axis]) % xd[axis];
            out.push((q - zv[c]) as f32 * sv[c]);
        }
    } else {
        let b = block as usize;
        if sd.len() != xd.len() || sd[axis] != xd[axis].div_ceil(b) {
            return Err(Error::Validate(format!(
                "blocked scale dims {sd:?} do not fit x dims {xd:?} with block_size {b} on axis {axis}"
            )));
        }
        let ss = strides(&sd);
        for (i, q) in xv.iter().enumerate() {
            let mut si = 0;
            for d in 0..xd.len() {
                let mut c = (i / xs[d]) % xd[d];
                if d == axis {
                    c /= b;
                }
                si += c * ss[d];
            }
            out.push((q - zv[si]) as f32 * sv[si]);
        }
    }
    Ok(out)
}

/// tract 0.23.9 reads a `ConstantOfShape` without a `value` attribute as f64 zeros (the spec says f32), which
/// then fails type inference downstream. Give such nodes the explicit spec default; returns how many.
fn explicit_constant_of_shape(model: &mut Model) -> Result<usize> {
    let mut count = 0;
    model.graph.walk_mut(&mut |g| {
        let ids: Vec<_> = g
            .nodes()
            .filter(|(_, n)| n.op.is("ConstantOfShape") && n.attr("value").is_none())
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut p = Patch::new("validate-tract-compat");
        for id in &ids {
            p.set_attr(
                *id,
                Attribute::tensor("value", Tensor::from_f32("value", vec![1], &[0.0])),
            );
        }
        count += ids.len();
        g.apply(p).map(|_| ())
    })?;
    Ok(count)
}

/// Fold what tract cannot load; returns the (possibly) rewritten model and one remark per fold.
pub fn fold_unsupported(model: &Model) -> Result<(Model, Vec<String>)> {
    let mut owned = None;
    if model
        .graph
        .nodes()
        .any(|(_, n)| n.op.is("ConstantOfShape") && n.attr("value").is_none())
        || model.graph.subgraphs().next().is_some()
    {
        let mut m = model.clone();
        if explicit_constant_of_shape(&mut m)? > 0 {
            owned = Some(m);
        }
    }
    let model = owned.as_ref().unwrap_or(model);
    let g = &model.graph;
    let mut remarks = Vec::new();
    let mut folds: Vec<(ValueId, Tensor, String)> = Vec::new(); // (DQ output, folded tensor, DQ node)
    let mut feeders: Vec<ValueId> = Vec::new();
    for (_, node) in g.nodes() {
        let op = &node.op;
        let dt_of = |v: Option<ValueId>| {
            v.and_then(|v| g.constant(v).map(|t| t.dtype()))
                .or_else(|| v.and_then(|v| declared_dtype(g, v)))
        };
        if op.is("DequantizeLinear") {
            let block = node.get_int("block_size").ok().flatten().unwrap_or(0);
            let xdt = dt_of(node.input(0));
            let four = xdt.is_some_and(is_4bit);
            if !four && block == 0 {
                continue;
            }
            let what = format!(
                "{}{}",
                xdt.map(|d| d.name().into_owned()).unwrap_or("?".into()),
                if block != 0 {
                    format!(", block_size={block}")
                } else {
                    String::new()
                }
            );
            let consts: Vec<Option<std::borrow::Cow<'_, Tensor>>> = (0..3)
                .map(|i| node.input(i).and_then(|v| g.constant(v)))
                .collect();
            let (Some(x), Some(s)) = (&consts[0], &consts[1]) else {
                return Err(Error::Validate(format!(
                    "DequantizeLinear '{}' ({what}) reads a non-constant input: tract 0.23.9 cannot run \
                     int4/uint4/blocked DequantizeLinear and it cannot be folded; refusing to validate",
                    label(g, node)
                )));
            };
            if node.input(2).is_some() && consts[2].is_none() {
                return Err(Error::Validate(format!(
                    "DequantizeLinear '{}' ({what}) has a non-constant zero point; refusing to validate",
                    label(g, node)
                )));
            }
            if s.dtype() != DataType::FLOAT {
                return Err(Error::Validate(format!(
                    "DequantizeLinear '{}' ({what}) has a {} scale; only f32 scales can be folded",
                    label(g, node),
                    s.dtype().name()
                )));
            }
            let axis = node.get_int("axis").ok().flatten().unwrap_or(1);
            let y = dequantize(x, s, consts[2].as_deref(), axis, block).map_err(|e| {
                Error::Validate(format!(
                    "DequantizeLinear '{}' ({what}): {e}",
                    label(g, node)
                ))
            })?;
            let out = node.output(0).ok_or_else(|| {
                Error::Validate(format!("DequantizeLinear '{}' has no output", node.name()))
            })?;
            let t = Tensor::from_f32("", x.dims.clone(), &y);
            remarks.push(format!(
                "folded constant DequantizeLinear '{}' ({what}) into f32 weights for the tract run: tract 0.23.9 \
                 cannot load int4/uint4/blocked DequantizeLinear; the dequantized values are exact, the \
                 low-bit storage itself is not what ran",
                label(g, node)
            ));
            feeders.extend(node.inputs.iter().flatten().copied());
            let anchor = if node.name().is_empty() {
                g.value_name(out).to_string()
            } else {
                node.name().to_string()
            };
            folds.push((out, t, anchor));
        } else if op.is("QuantizeLinear") {
            let out_dt = node
                .get_int("output_dtype")
                .ok()
                .flatten()
                .map(|d| DataType(d as i32))
                .or_else(|| dt_of(node.input(2)));
            let block = node.get_int("block_size").ok().flatten().unwrap_or(0);
            if out_dt.is_some_and(is_4bit) || block != 0 {
                return Err(Error::Validate(format!(
                    "QuantizeLinear '{}' quantizes to {}{}: tract 0.23.9 cannot run int4/uint4/blocked \
                     quantization of a runtime tensor; refusing to validate (no silent pass)",
                    label(g, node),
                    out_dt.map(|d| d.name().into_owned()).unwrap_or("?".into()),
                    if block != 0 { " blocked" } else { "" }
                )));
            }
        }
    }
    for io in g.runtime_inputs() {
        if let Some(dt) = declared_dtype(g, io.value) {
            if is_4bit(dt) {
                return Err(Error::Validate(format!(
                    "input '{}' is {}: tract 0.23.9 cannot run 4-bit tensors",
                    g.value_name(io.value),
                    dt.name()
                )));
            }
        }
    }
    if folds.is_empty() {
        return Ok((model.clone(), remarks));
    }
    let mut m = model.clone();
    let mut p = Patch::new("validate-fold");
    for (out, t, name) in folds {
        let dq = m.graph.producer(out).map(|(id, _)| id);
        let nv = p.add_initializer(&m.graph, &name, t);
        p.replace_all_uses(out, nv);
        for (i, o) in m.graph.outputs().iter().enumerate() {
            if o.value == out {
                p.set_graph_output(i, nv);
            }
        }
        if let Some(dq) = dq {
            p.erase_node(dq);
        }
    }
    m.graph.apply(p)?;
    // The low-bit constants the folded nodes read are unused now: drop them, or tract fails loading them.
    let mut p = Patch::new("validate-fold");
    let mut any = false;
    feeders.sort();
    feeders.dedup();
    for v in feeders {
        if !m.graph.uses(v).is_empty() || m.graph.is_output(v) {
            continue;
        }
        if m.graph.initializers().any(|(iv, _)| iv == v) {
            p.remove_initializer(v);
            any = true;
        } else if let Some((id, n)) = m.graph.producer(v) {
            if n.op.is("Constant") {
                p.erase_node(id);
                any = true;
            }
        }
    }
    if any {
        m.graph.apply(p)?;
    }
    Ok((m, remarks))
}

/// The node's name, or `<op> -> <first output>` for an unnamed node.
fn label(g: &Graph, node: &crate::ir::Node) -> String {
    if !node.name().is_empty() {
        return node.name().to_string();
    }
    let out = node.output(0).map(|v| g.value_name(v)).unwrap_or("?");
    format!("{} -> {out}", node.op.display())
}

fn declared_dtype(g: &Graph, v: ValueId) -> Option<DataType> {
    g.inputs()
        .iter()
        .chain(g.value_info())
        .chain(g.outputs())
        .find(|io| io.value == v)
        .and_then(|io| io.info.ty.as_ref())
        .and_then(|t| t.as_tensor())
        .map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn int4_unpack_and_blocked() {
        // int4 values [-8, 7, 1, -1] packed low nibble first
        let x = Tensor::from_raw("x", DataType::INT4, vec![4], Bytes::from(vec![0x78, 0xf1]));
        assert_eq!(int_values(&x).unwrap(), vec![-8, 7, 1, -1]);
        let s = Tensor::from_f32("s", vec![2], &[0.5, 2.0]);
        let y = dequantize(&x, &s, None, 0, 2).unwrap();
        assert_eq!(y, vec![-4.0, 3.5, 2.0, -2.0]);
    }
}
