//! `format=matmulnbits`: a MatMul whose B is a constant 2-D float weight becomes ONNX Runtime's
//! `com.microsoft::MatMulNBits`, the weight-only kernel ORT runs on CPU without dequantizing B on every call
//! (a DequantizeLinear -> MatMul pair is not folded by ORT: see `runtime.rs`).
//!
//! Layout (ORT's contrib-op spec): B `[K, N]` is stored transposed and cut along K into blocks of
//! `block_size`: `B_q` uint8 `[N, k_blocks, block_size * bits / 8]`, `scales` f32 `[N * k_blocks]`,
//! `zero_points` uint8 `[N * k_blocks]` (8 bits: one per byte), attributes `K`, `N`, `bits`, `block_size`.
//! Each block is quantized asymmetrically over its own min / max widened to include 0 (so 0 is exact), round
//! to nearest; the codes past K in the last block hold the zero point (dequantized 0). Only 8 bits here; the
//! 4-bit form shares this layout with two codes per byte (the low-bit issue).
//!
//! What is not converted stays for the ordinary DequantizeLinear path, with a remark saying why: B not a
//! constant 2-D float32 of the main graph, a node inside a body.

use crate::error::Result;
use crate::ir::{Attribute, DataType, Graph, Model, NodeId, OpKey, Patch, Tensor, ValueDef};
use crate::passes::{Outcome, PassReport};

pub const DOMAIN: &str = "com.microsoft";

/// Quantize `w` (`[K, N]`, row-major) into MatMulNBits' 8-bit blocks along K: (codes `[N, k_blocks, block]`,
/// scales `[N * k_blocks]`, zero points `[N * k_blocks]`).
pub fn block_quantize_u8(
    w: &[f32],
    k: usize,
    n: usize,
    block: usize,
) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let kb = k.div_ceil(block);
    let mut codes = vec![0u8; n * kb * block];
    let mut scales = vec![0f32; n * kb];
    let mut zps = vec![0u8; n * kb];
    for col in 0..n {
        for b in 0..kb {
            let rows = b * block..((b + 1) * block).min(k);
            let (lo, hi) = rows.clone().fold((0f32, 0f32), |(lo, hi), r| {
                let v = w[r * n + col];
                (lo.min(v), hi.max(v))
            });
            // an all-zero block: scale 1 keeps the dequantized values exactly 0
            let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            let zp = (-lo / scale).round().clamp(0.0, 255.0);
            let at = (col * kb + b) * block;
            for (i, r) in rows.clone().enumerate() {
                let q = (w[r * n + col] / scale).round() + zp;
                codes[at + i] = q.clamp(0.0, 255.0) as u8;
            }
            for c in &mut codes[at + rows.len()..at + block] {
                *c = zp as u8;
            }
            scales[col * kb + b] = scale;
            zps[col * kb + b] = zp as u8;
        }
    }
    (codes, scales, zps)
}

/// Replace every convertible MatMul of the main graph by MatMulNBits (8 bits, `block` along K); returns how
/// many. Others get a remark and are left to the DequantizeLinear path.
pub fn convert(
    model: &mut Model,
    cfg: &super::WeightConfig,
    block: usize,
    report: &mut PassReport,
) -> Result<usize> {
    if !cfg.ops.contains("MatMul") {
        return Ok(0);
    }
    let g = &model.graph;
    let mut p = Patch::new(&report.pass);
    let mut done = 0;
    for (id, node) in g.nodes() {
        if !node.op.is("MatMul") {
            continue;
        }
        // the weight-only filters, by node or weight name; a filtered MatMul gets its remark from that path
        let weight = node.input(1).map(|b| g.value_name(b)).unwrap_or("");
        let named = |pats: &[String]| {
            pats.iter()
                .any(|p| super::glob_match(p, node.name()) || super::glob_match(p, weight))
        };
        if named(&cfg.exclude) || (!cfg.include.is_empty() && !named(&cfg.include)) {
            continue;
        }
        match one(g, id, block, &mut p)? {
            Ok(what) => {
                done += 1;
                report.remark(node.name(), Outcome::Applied, what);
            }
            Err(why) => report.remark(
                node.name(),
                Outcome::Skipped,
                format!("not MatMulNBits: {why}; its weight takes the DequantizeLinear form if it qualifies"),
            ),
        }
    }
    if done > 0 {
        report.record(model.graph.apply(p)?);
        if model.opset(DOMAIN).is_none() {
            model.set_opset(DOMAIN, 1);
        }
        report.stat("matmulnbits", done as u64);
    }
    Ok(done)
}

/// Queue one MatMul's conversion, or say why not.
fn one(
    g: &Graph,
    id: NodeId,
    block: usize,
    p: &mut Patch,
) -> Result<std::result::Result<String, String>> {
    let node = g.node(id).expect("live node");
    let (Some(_), Some(b), Some(_)) = (node.input(0), node.input(1), node.output(0)) else {
        return Ok(Err("an input or the output is missing".into()));
    };
    let Some(w) = g.constant(b) else {
        return Ok(Err("B is not a constant".into()));
    };
    if w.dtype() != DataType::FLOAT || w.dims.len() != 2 {
        return Ok(Err(format!(
            "B is {}{:?}, not a 2-D float32 weight",
            w.dtype().name(),
            w.dims
        )));
    }
    // MatMul takes A and B of one type, so A is float32 too
    let (k, n) = (w.dims[0] as usize, w.dims[1] as usize);
    if k == 0 || n == 0 {
        return Ok(Err("B is empty".into()));
    }
    let values = w.to_f32_vec()?;
    let (codes, scales, zps) = block_quantize_u8(&values, k, n, block);
    let kb = k.div_ceil(block);
    let base = match g.value(b).def {
        ValueDef::Initializer | ValueDef::Node(..) => g.value_name(b).to_string(),
        _ => node.name().to_string(),
    };
    let bytes_before = values.len() * 4;
    let bytes_after = codes.len() + scales.len() * 4 + zps.len();
    let q = p.add_named_initializer(
        g,
        &base,
        "_nbits",
        Tensor::from_vec("", vec![n as i64, kb as i64, block as i64], codes)?,
    );
    let s = p.add_named_initializer(
        g,
        &base,
        "_nbits_scales",
        Tensor::from_vec("", vec![(n * kb) as i64], scales)?,
    );
    let z = p.add_named_initializer(
        g,
        &base,
        "_nbits_zero_points",
        Tensor::from_vec("", vec![(n * kb) as i64], zps)?,
    );
    // in place: the node keeps its name and its output (a graph output keeps its name, readers stay)
    p.set_op(
        id,
        OpKey {
            domain: Some(DOMAIN.into()),
            op_type: "MatMulNBits".into(),
        },
    );
    p.set_input(id, 1, Some(q));
    p.set_input(id, 2, Some(s));
    p.set_input(id, 3, Some(z));
    for (k, v) in [("K", k), ("N", n), ("bits", 8), ("block_size", block)] {
        p.set_attr(id, Attribute::int(k, v as i64));
    }
    // the float weight goes when nothing else reads it
    if g.uses(b).iter().all(|u| u.node == id) && !g.is_output(b) && node.inputs.len() == 2 {
        match g.value(b).def {
            ValueDef::Initializer => p.remove_initializer(b),
            ValueDef::Node(c, 0) if g.node(c).is_some_and(|c| c.op.is("Constant")) => {
                p.erase_node(c)
            }
            _ => {}
        }
    }
    Ok(Ok(format!(
        "MatMulNBits 8-bit, block {block} along K: weight '{}' {k}x{n} ({bytes_before} -> {bytes_after} bytes)",
        g.value_name(b)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each dequantized value is within half a step of its block of the original, 0 stays 0 exactly, and the
    /// padding past K holds the zero point.
    #[test]
    fn blocks_round_to_nearest_and_pad_with_the_zero_point() {
        let (k, n, block) = (5, 2, 4);
        let w: Vec<f32> = (0..k * n).map(|i| (i as f32 - 3.0) * 0.37).collect();
        let mut w = w;
        w[2 * n + 1] = 0.0;
        let (codes, scales, zps) = block_quantize_u8(&w, k, n, block);
        let kb = 2;
        assert_eq!(
            (codes.len(), scales.len(), zps.len()),
            (n * kb * block, n * kb, n * kb)
        );
        for col in 0..n {
            for r in 0..k {
                let (b, i) = (r / block, r % block);
                let s = scales[col * kb + b];
                let deq = (codes[(col * kb + b) * block + i] as f32 - zps[col * kb + b] as f32) * s;
                assert!((deq - w[r * n + col]).abs() <= s / 2.0 + 1e-6, "{r},{col}");
                if w[r * n + col] == 0.0 {
                    assert_eq!(deq, 0.0);
                }
            }
            // K = 5, block 4: rows 5..8 of the second block are padding
            for i in 1..block {
                assert_eq!(codes[(col * kb + 1) * block + i], zps[col * kb + 1]);
            }
        }
    }
}
