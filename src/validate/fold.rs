//! Forms tract 0.23.9 cannot load: int4 / uint4 tensors and blocked (`block_size`) DequantizeLinear. A
//! DequantizeLinear whose inputs are all constant is folded exactly into a float initializer for the tract run
//! (`y = (x - zero_point) * scale` in f32, as the ONNX reference computes it) and reported as a remark; any
//! other use of those forms (activation Q/DQ to int4, an int4 runtime input) is refused with an error naming
//! the node. Never a silent pass.

use crate::error::{Error, Result};
use crate::ir::tensor::ParamLayout;
use crate::ir::{
    AttrList, Attribute, ConstantForm, DataType, Graph, Model, Patch, Tensor, ValueId,
};

fn is_4bit(dt: DataType) -> bool {
    matches!(dt, DataType::INT4 | DataType::UINT4)
}

/// Dequantize constant `x` with `scale` / `zero_point` (per tensor, per axis or blocked along `axis`), as the
/// ONNX reference computes it: `y = (x - zero_point) * scale` in f32. The parameter shapes are checked
/// against the spec first (`ParamLayout::resolve`); a mismatch is an error, never an index past the data.
fn dequantize(
    x: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    axis: i64,
    block: i64,
) -> Result<Vec<f32>> {
    let layout = ParamLayout::resolve(&x.dims, &scale.dims, axis, block)
        .map_err(|e| param_error("scale", scale, e))?;
    let xv = x.to_i64_vec()?;
    let sv = layout
        .broadcast(&scale.to_f32_vec()?, xv.len())
        .map_err(|e| param_error("scale", scale, e))?;
    let zv = match zp {
        Some(z) => {
            if z.dtype() != x.dtype() {
                return Err(Error::invalid(
                    "",
                    format!(
                        "zero point '{}' is {} but x '{}' is {}",
                        z.name(),
                        z.dtype().name(),
                        x.name(),
                        x.dtype().name()
                    ),
                ));
            }
            let zl = ParamLayout::resolve(&x.dims, &z.dims, axis, block)
                .map_err(|e| param_error("zero point", z, e))?;
            if zl != layout {
                return Err(Error::invalid(
                    "",
                    format!(
                        "zero point dims {:?} differ from scale dims {:?}",
                        z.dims, scale.dims
                    ),
                ));
            }
            zl.broadcast(&z.to_i64_vec()?, xv.len())
                .map_err(|e| param_error("zero point", z, e))?
        }
        None => vec![0; xv.len()],
    };
    Ok(xv
        .iter()
        .zip(zv.iter().zip(&sv))
        .map(|(q, (z, s))| (q - z) as f32 * s)
        .collect())
}

fn param_error(what: &str, t: &Tensor, e: Error) -> Error {
    match e {
        Error::Invalid { msg, .. } => Error::invalid("", format!("{what} '{}': {msg}", t.name())),
        other => other,
    }
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

/// Does any graph hold a sparse initializer or a `Constant` with `sparse_value`?
fn has_sparse(model: &Model) -> bool {
    let mut any = false;
    model.walk(&mut |g| {
        any |= !g.sparse_initializers.is_empty()
            || g.nodes()
                .any(|(_, n)| ConstantForm::of(n) == Some(ConstantForm::SparseValue));
    });
    any
}

/// tract 0.23.9 reads neither `GraphProto.sparse_initializer` nor `Constant.sparse_value` (`prune
/// sparse_storage` writes both): make them dense for the tract run; the values are exactly the ones ONNX
/// Runtime densifies at load. Returns how many.
fn densify_sparse(model: &mut Model) -> Result<usize> {
    let mut count = 0;
    model.walk_mut(&mut |g| {
        let mut ws = Vec::new();
        for (_, n) in g.nodes() {
            if ConstantForm::of(n) == Some(ConstantForm::SparseValue) {
                if let Some(w) = n.output(0).and_then(|v| g.weight(v)) {
                    ws.push(w);
                }
            }
        }
        for s in &g.sparse_initializers {
            if let Some(w) = s
                .values
                .as_ref()
                .and_then(|v| v.name.as_deref())
                .and_then(|n| g.value_by_name(n))
                .and_then(|v| g.weight(v))
            {
                ws.push(w);
            }
        }
        if ws.is_empty() {
            return Ok(());
        }
        let mut p = Patch::new("validate-tract-compat");
        for w in &ws {
            p.replace_weight(w, g.read_weight(w)?.into_owned());
        }
        count += ws.len();
        g.apply(p).map(|_| ())
    })?;
    Ok(count)
}

/// Fold what tract cannot load; returns the (possibly) rewritten model and one remark per fold.
pub fn fold_unsupported(model: &Model) -> Result<(Model, Vec<String>)> {
    let mut owned = None;
    let mut remarks = Vec::new();
    let sparse = has_sparse(model);
    if model
        .graph
        .nodes()
        .any(|(_, n)| n.op.is("ConstantOfShape") && n.attr("value").is_none())
        || model.graph.subgraphs().next().is_some()
        || sparse
    {
        let mut m = model.clone();
        let cos = explicit_constant_of_shape(&mut m)?;
        let dens = if sparse { densify_sparse(&mut m)? } else { 0 };
        if dens > 0 {
            remarks.push(format!(
                "densified {dens} sparse weight(s) (sparse initializers / Constant sparse_value) for the tract \
                 run: tract 0.23.9 cannot load sparse tensors; the dense values are exactly those ONNX Runtime \
                 makes at load"
            ));
        }
        if cos + dens > 0 {
            owned = Some(m);
        }
    }
    let model = owned.as_ref().unwrap_or(model);
    let g = &model.graph;
    let mut folds: Vec<(ValueId, Tensor, String)> = Vec::new(); // (DQ output, folded tensor, DQ node)
    let mut nbits: Vec<(crate::ir::NodeId, Tensor)> = Vec::new(); // (MatMulNBits node, its B as f32 [K, N])
    let mut feeders: Vec<ValueId> = Vec::new();
    for (id, node) in g.nodes() {
        let op = &node.op;
        if op.domain.as_deref() == Some("com.microsoft") && op.op_type == "MatMulNBits" {
            let w = matmul_nbits_weight(g, node)?;
            remarks.push(format!(
                "folded MatMulNBits '{}' into MatMul with its dequantized f32 weight for the tract run: tract \
                 0.23.9 runs only some of its variants; the dequantized values are exact, the packed storage \
                 itself is not what ran",
                label(g, node)
            ));
            feeders.extend(node.inputs.iter().skip(1).flatten().copied());
            nbits.push((id, w));
            continue;
        }
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
            // A parameter that does not fit x breaks the model itself (ONNX Runtime refuses it too): a bad-model
            // error naming the node, not a validation failure.
            let y = dequantize(x, s, consts[2].as_deref(), axis, block).map_err(|e| match e {
                Error::Invalid { at, msg, .. } => Error::invalid(
                    format!("DequantizeLinear '{}' ({what})", label(g, node)),
                    if at.is_empty() {
                        msg
                    } else {
                        format!("{at}: {msg}")
                    },
                ),
                other => other,
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
    if folds.is_empty() && nbits.is_empty() {
        return Ok((model.clone(), remarks));
    }
    let mut m = model.clone();
    let mut p = Patch::new("validate-fold");
    for (id, w) in nbits {
        // in place, so its output keeps its name: MatMul(A, W) (+ bias through an Add would rename it, so a
        // bias is refused above); the packed inputs are cleared and dropped with the other feeders
        let node = m.graph.node(id).expect("live node");
        let anchor = label(&m.graph, node);
        let n_inputs = node.inputs.len();
        let wv = p.add_initializer(&m.graph, &anchor, w);
        p.set_op(id, crate::ir::OpKey::onnx("MatMul"));
        p.set_input(id, 1, Some(wv));
        for slot in 2..n_inputs {
            p.set_input(id, slot, None);
        }
        for a in ["K", "N", "bits", "block_size", "accuracy_level"] {
            p.remove_attr(id, a);
        }
    }
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

/// The f32 `[K, N]` weight a MatMulNBits node computes with (ORT's contrib spec): `B` uint8 `[N, k_blocks,
/// blob]` holding `bits`-bit codes low-first along K, `scales` `[N * k_blocks]` (or `[N, k_blocks]`), optional
/// `zero_points` packed the same way (default `2^(bits-1)`): `W[k][n] = (code - zero_point) * scale` in f32.
/// Anything else (non-constant inputs, `g_idx`, other bit widths) is refused, never guessed.
fn matmul_nbits_weight(g: &Graph, node: &crate::ir::Node) -> Result<Tensor> {
    let refuse = |why: String| {
        Error::Validate(format!(
            "MatMulNBits '{}': {why}; refusing to validate",
            label(g, node)
        ))
    };
    let int = |name: &str| node.get_int(name).ok().flatten();
    let (Some(k), Some(n), Some(block)) = (int("K"), int("N"), int("block_size")) else {
        return Err(refuse("K, N or block_size is missing".into()));
    };
    let bits = int("bits").unwrap_or(4);
    if !matches!(bits, 4 | 8) || k <= 0 || n <= 0 || block <= 0 {
        return Err(refuse(format!(
            "bits {bits}, K {k}, N {n}, block_size {block}"
        )));
    }
    if node.input(4).is_some() || node.input(5).is_some() {
        return Err(refuse("g_idx and bias are not supported".into()));
    }
    let konst = |i: usize| node.input(i).and_then(|v| g.constant(v));
    let (Some(b), Some(s)) = (konst(1), konst(2)) else {
        return Err(refuse("B or scales is not a constant".into()));
    };
    if node.input(3).is_some() && konst(3).is_none() {
        return Err(refuse("zero_points is not a constant".into()));
    }
    let (k, n, block, bits) = (k as usize, n as usize, block as usize, bits as usize);
    let kb = k.div_ceil(block);
    let blob = block * bits / 8;
    let codes = b.to_i64_vec()?;
    let scales = s.to_f32_vec()?;
    if b.dtype() != DataType::UINT8 || codes.len() != n * kb * blob || scales.len() != n * kb {
        return Err(refuse(format!(
            "B {:?} ({}) / scales {:?} do not fit K {k}, N {n}, block_size {block}, bits {bits}",
            b.dims,
            b.dtype().name(),
            s.dims
        )));
    }
    // the i-th code of a byte stream of `bits`-bit codes, low bits first
    let code = |bytes: &[i64], i: usize| -> i64 {
        if bits == 8 {
            bytes[i]
        } else {
            (bytes[i / 2] >> (4 * (i % 2))) & 0xF
        }
    };
    let zps = konst(3).map(|z| z.to_i64_vec()).transpose()?;
    let zp_row = (kb * bits).div_ceil(8); // packed zero points per column
    if let Some(z) = &zps {
        if z.len() != n * zp_row {
            return Err(refuse(format!(
                "zero_points has {} values, want {}",
                z.len(),
                n * zp_row
            )));
        }
    }
    let mut w = vec![0f32; k * n];
    for col in 0..n {
        for blk in 0..kb {
            let scale = scales[col * kb + blk];
            let zp = match &zps {
                Some(z) => code(&z[col * zp_row..(col + 1) * zp_row], blk),
                None => 1 << (bits - 1),
            };
            let at = &codes[(col * kb + blk) * blob..(col * kb + blk + 1) * blob];
            for i in 0..block.min(k - blk * block) {
                w[(blk * block + i) * n + col] = (code(at, i) - zp) as f32 * scale;
            }
        }
    }
    Ok(Tensor::from_f32("", vec![k as i64, n as i64], &w))
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
        assert_eq!(x.to_i64_vec().unwrap(), vec![-8, 7, 1, -1]);
        let s = Tensor::from_f32("s", vec![2], &[0.5, 2.0]);
        let y = dequantize(&x, &s, None, 0, 2).unwrap();
        assert_eq!(y, vec![-4.0, 3.5, 2.0, -2.0]);
    }

    #[test]
    fn per_axis_and_blocked_with_zero_points() {
        // x [2, 4] int8, blocked on axis 1 with block 2: scale/zero point [2, 2]
        let x = Tensor::from_vec("x", vec![2, 4], vec![1i8, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let s = Tensor::from_f32("s", vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let z = Tensor::from_vec("z", vec![2, 2], vec![0i8, 1, 2, 3]).unwrap();
        // row 0: (1-0)*1 (2-0)*1 (3-1)*2 (4-1)*2; row 1: (5-2)*3 (6-2)*3 (7-3)*4 (8-3)*4
        assert_eq!(
            dequantize(&x, &s, Some(&z), 1, 2).unwrap(),
            [1.0, 2.0, 4.0, 6.0, 9.0, 12.0, 16.0, 20.0]
        );
        // per axis 0
        let s = Tensor::from_f32("s", vec![2], &[0.5, -1.0]);
        assert_eq!(
            dequantize(&x, &s, None, 0, 0).unwrap(),
            [0.5, 1.0, 1.5, 2.0, -5.0, -6.0, -7.0, -8.0]
        );
    }

    /// Weight-only int8 per output channel, written with the tensor API, folds back within half a step.
    #[test]
    fn per_channel_int8_round_trip_through_the_tensor_api() {
        use crate::ir::tensor::Reduction;
        let w: Vec<f32> = (0..12)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.37)
            .collect();
        let wt = Tensor::from_f32("w", vec![3, 4], &w);
        let amax = wt.reduce_axis(0, Reduction::AbsMax).unwrap();
        let scales: Vec<f32> = amax.iter().map(|a| (*a / 127.0) as f32).collect();
        let layout = ParamLayout::resolve(&wt.dims, &[3], 0, 0).unwrap();
        let per_elem = layout.broadcast(&scales, 12).unwrap();
        let q: Vec<f64> = w
            .iter()
            .zip(&per_elem)
            .map(|(x, s)| *x as f64 / *s as f64)
            .collect();
        let qt = Tensor::from_f64_as("w_quantized", DataType::INT8, vec![3, 4], &q).unwrap();
        let st = Tensor::from_f32("w_scale", vec![3], &scales);
        let y = dequantize(&qt, &st, None, 0, 0).unwrap();
        for ((y, x), s) in y.iter().zip(&w).zip(&per_elem) {
            // rounding to the int8 grid costs at most s/2; q * s in f32 adds at most eps32 * |y|
            let tol = s / 2.0 + f32::EPSILON * y.abs();
            assert!((y - x).abs() <= tol, "{y} vs {x} (step {s})");
        }
        // the largest magnitude of each channel lands on +-127
        let qv = qt.to_vec::<i8>().unwrap();
        for c in 0..3 {
            assert_eq!(
                qv[c * 4..c * 4 + 4].iter().map(|v| v.abs()).max(),
                Some(127)
            );
        }
    }

    #[test]
    fn mismatched_parameters_are_errors_not_panics() {
        let x = Tensor::from_vec("x", vec![4, 4], vec![1i8; 16]).unwrap();
        let cases: Vec<(Tensor, Option<Tensor>, i64, i64)> = vec![
            // issue 7: scale [1, 2] for x [4, 4], block size 2 (other dim not equal)
            (Tensor::from_f32("s", vec![1, 2], &[1.0, 2.0]), None, 1, 2),
            // blocked scale of the wrong rank
            (Tensor::from_f32("s", vec![2], &[1.0, 2.0]), None, 1, 2),
            // per-axis scale of the wrong length
            (Tensor::from_f32("s", vec![3], &[1.0; 3]), None, 1, 0),
            // per-axis scale of rank 2
            (Tensor::from_f32("s", vec![4, 1], &[1.0; 4]), None, 1, 0),
            // axis out of range
            (Tensor::from_f32("s", vec![4], &[1.0; 4]), None, 5, 0),
            // zero point shaped unlike the scale
            (
                Tensor::from_f32("s", vec![4], &[1.0; 4]),
                Some(Tensor::from_vec("z", vec![1], vec![0i8]).unwrap()),
                1,
                0,
            ),
            // zero point of another dtype
            (
                Tensor::from_f32("s", vec![4], &[1.0; 4]),
                Some(Tensor::from_vec("z", vec![4], vec![0u8; 4]).unwrap()),
                1,
                0,
            ),
        ];
        for (s, z, axis, block) in cases {
            let e = dequantize(&x, &s, z.as_ref(), axis, block).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{e}");
        }
    }
}
