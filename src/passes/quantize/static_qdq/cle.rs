//! Cross-layer equalisation: for a chain `P1 -> act -> P2` (P = Conv or Gemm with constant float32 weights,
//! act = Relu, LeakyRelu or PRelu, each link read only by the next), scale output channel c of P1 (weight row
//! and bias) by 1/s_c and input channel c of P2 by s_c, with s_c = sqrt(r1_c / r2_c) and r the largest
//! magnitude of the channel's weights. The activations are positively homogeneous (f(x / s) = f(x) / s for
//! s > 0), so the model computes the same function (up to float32 rounding) while both layers' per-channel
//! ranges become sqrt(r1_c r2_c): the weight ranges per channel even out and per-tensor or per-channel int8
//! loses less.

use crate::error::Result;
use crate::ir::ops::{ConvView, GemmView};
use crate::ir::{DataType, Graph, NodeId, Patch, Tensor, ValueId};
use crate::passes::{Outcome, PassReport};

use super::PASS;

/// Where channel c lives in a weight: `(axis)` of a layer's weight for its output (producer) or input
/// (consumer) channels; depthwise Conv consumers use axis 0.
struct CleLayer {
    node: NodeId,
    w: ValueId,
    b: Option<ValueId>,
    out_axis: usize,
    in_axis: usize,
}

fn layer(g: &Graph, n: NodeId) -> Result<Option<CleLayer>> {
    let node = g.node(n).expect("live");
    if let Some(v) = ConvView::of(node)? {
        let Some(t) = g.constant(v.w) else {
            return Ok(None);
        };
        let depthwise = v.group > 1 && t.dims.len() >= 2 && t.dims[1] == 1 && v.group == t.dims[0];
        if v.group != 1 && !depthwise {
            return Ok(None);
        }
        return Ok(Some(CleLayer {
            node: n,
            w: v.w,
            b: v.b,
            out_axis: 0,
            in_axis: if depthwise { 0 } else { 1 },
        }));
    }
    if let Some(v) = GemmView::of(node)? {
        if v.trans_a || g.constant(v.b).is_none_or(|t| t.dims.len() != 2) {
            return Ok(None);
        }
        let c_ok =
            v.c.is_none_or(|c| g.constant(c).is_some_and(|t| t.dims.len() == 1));
        if !c_ok {
            return Ok(None);
        }
        let (out_axis, in_axis) = if v.trans_b { (0, 1) } else { (1, 0) };
        return Ok(Some(CleLayer {
            node: n,
            w: v.b,
            b: v.c,
            out_axis,
            in_axis,
        }));
    }
    Ok(None)
}

fn only_reader(g: &Graph, v: ValueId) -> Option<NodeId> {
    if g.is_output(v) {
        return None;
    }
    let u = g.uses(v);
    (u.len() == 1 && matches!(u[0].slot, crate::ir::value::UseSlot::Input(0))).then(|| u[0].node)
}

fn per_channel_absmax(w: &[f64], dims: &[i64], axis: usize) -> Vec<f64> {
    let ch = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().map(|d| *d as usize).product();
    let mut m = vec![0f64; ch];
    for (i, x) in w.iter().enumerate() {
        let c = (i / inner) % ch;
        m[c] = m[c].max(x.abs());
    }
    m
}

fn scale_channels(w: &mut [f64], dims: &[i64], axis: usize, f: &[f64]) {
    let ch = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().map(|d| *d as usize).product();
    for (i, x) in w.iter_mut().enumerate() {
        *x *= f[(i / inner) % ch];
    }
}

/// Equalise every qualifying chain of the main graph (two sweeps, so longer chains settle).
pub fn equalize(g: &mut Graph, report: &mut PassReport) -> Result<()> {
    for sweep in 0..2 {
        let order = crate::ir::order::stable_topo(g, g.node_ids(), &|n| n.index() as u64).0;
        for n1 in order {
            let Some(l1) = layer(g, n1)? else { continue };
            let node1 = g.node(n1).expect("live");
            let Some(y1) = node1.output(0) else { continue };
            let Some(a) = only_reader(g, y1) else {
                continue;
            };
            let act = g.node(a).expect("live");
            if !(act.op.is("Relu") || act.op.is("LeakyRelu") || act.op.is("PRelu")) {
                continue;
            }
            if act.op.is("PRelu") && act.input(1).is_none_or(|s| g.constant(s).is_none()) {
                continue;
            }
            let Some(y2) = act.output(0) else { continue };
            let Some(n2) = only_reader(g, y2) else {
                continue;
            };
            let Some(l2) = layer(g, n2)? else { continue };
            // the weights change in place: they must be read by these layers only
            let exclusive =
                |v: ValueId| g.uses(v).len() == 1 && !g.is_output(v) && g.weight(v).is_some();
            if !exclusive(l1.w)
                || !exclusive(l2.w)
                || l1.b.is_some_and(|b| !exclusive(b))
                || l2.w == l1.w
            {
                continue;
            }
            let (w1r, w2r) = (g.weight(l1.w).unwrap(), g.weight(l2.w).unwrap());
            let (t1, t2) = (
                g.read_weight(&w1r)?.into_owned(),
                g.read_weight(&w2r)?.into_owned(),
            );
            if t1.dtype() != DataType::FLOAT || t2.dtype() != DataType::FLOAT {
                continue;
            }
            let ch = t1.dims[l1.out_axis];
            if t2.dims.get(l2.in_axis) != Some(&ch) {
                continue;
            }
            let (mut w1, mut w2) = (t1.to_f64_vec()?, t2.to_f64_vec()?);
            let r1 = per_channel_absmax(&w1, &t1.dims, l1.out_axis);
            let r2 = per_channel_absmax(&w2, &t2.dims, l2.in_axis);
            let s: Vec<f64> = r1
                .iter()
                .zip(&r2)
                .map(|(a, b)| {
                    if *a > 0.0 && *b > 0.0 {
                        (a / b).sqrt()
                    } else {
                        1.0
                    }
                })
                .collect();
            if s.iter().all(|x| (x - 1.0).abs() < 1e-6) {
                continue;
            }
            let inv: Vec<f64> = s.iter().map(|x| 1.0 / x).collect();
            scale_channels(&mut w1, &t1.dims, l1.out_axis, &inv);
            scale_channels(&mut w2, &t2.dims, l2.in_axis, &s);
            let mut p = Patch::new(PASS);
            p.replace_weight(
                &w1r,
                Tensor::from_f64_as("", DataType::FLOAT, t1.dims.clone(), &w1)?,
            );
            p.replace_weight(
                &w2r,
                Tensor::from_f64_as("", DataType::FLOAT, t2.dims.clone(), &w2)?,
            );
            if let Some(b) = l1.b {
                let br = g.weight(b).unwrap();
                let bt = g.read_weight(&br)?.into_owned();
                if bt.dtype() != DataType::FLOAT || bt.dims != vec![ch] {
                    continue;
                }
                let bv: Vec<f64> = bt
                    .to_f64_vec()?
                    .iter()
                    .zip(&inv)
                    .map(|(x, f)| x * f)
                    .collect();
                p.replace_weight(
                    &br,
                    Tensor::from_f64_as("", DataType::FLOAT, bt.dims.clone(), &bv)?,
                );
            }
            let (n1name, n2name) = (
                node1.name().to_string(),
                g.node(l2.node).unwrap().name().to_string(),
            );
            let op = act.op.op_type.clone();
            report.record(g.apply(p)?);
            if sweep == 0 {
                report.remark(
                    n1name,
                    Outcome::Applied,
                    format!("equalised with '{n2name}' through {op}: {ch} channel scales"),
                );
            }
        }
    }
    Ok(())
}
