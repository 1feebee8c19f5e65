//! Building, the last stage: a bound plan becomes one `Patch` against the graph, and nothing else is decided
//! here beyond what the graph forces (a bias that is not a 1-D float32 constant, or does not fit int32, stays
//! float with a remark). In order, so fresh names come out the same run to run:
//!
//! 1. activations: one QuantizeLinear -> DequantizeLinear pair per tensor with parameters (its own or those of
//!    the tensor it follows); every reader of a tensor a quantised op produces reads the pair (ONNX Runtime
//!    fuses the producer only when its output feeds QuantizeLinear alone), while ops left float keep reading a
//!    float producer's tensor;
//! 2. weights: int8 at the plan's scales behind one DequantizeLinear per (weight, axis); biases: int32 at
//!    input scale x weight scale, zero point 0, after bias correction's shift;
//! 3. constant operands: in the activation type at the plan's parameters;
//! 4. float weights nothing reads any more are removed.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::ir::{
    DataType, Graph, NewNode, NodeId, OpKey, Patch, Tensor, UseSlot, ValRef, ValueDef, ValueId,
};
use crate::passes::quantize::add_dequantize;
use crate::passes::Outcome;

use super::bind::{BoundNode, BoundPlan};
use super::decide::WeightKey;
use super::ranges::quantize_symmetric;
use super::PASS;

/// What `build` did.
#[derive(Default)]
pub(super) struct Built {
    pub tensors: u64,
    pub weights: u64,
    pub biases: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// (at, outcome, reason), in the order they happened.
    pub remarks: Vec<(String, Outcome, String)>,
}

/// A zero point in the activation type.
fn zero_point(zp: i32, signed: bool) -> Result<Tensor> {
    if signed {
        Tensor::from_vec::<i8>("", vec![], vec![zp as i8])
    } else {
        Tensor::from_vec::<u8>("", vec![], vec![zp as u8])
    }
}

/// The patch inserting the Q/DQ pairs and quantised weights of `plan` into `g`.
pub(super) fn build(g: &Graph, plan: &BoundPlan) -> Result<(Patch, Built)> {
    let mut p = Patch::new(PASS);
    let mut built = Built::default();
    activations(g, plan, &mut p, &mut built)?;
    // how many readers of each float constant were moved to its quantised form
    let mut rewired: BTreeMap<ValueId, usize> = BTreeMap::new();
    weights(g, plan, &mut p, &mut built, &mut rewired)?;
    constants(g, plan, &mut p, &mut built, &mut rewired)?;
    // float weights nothing reads any more leave the file
    for (v, n) in rewired {
        if g.is_output(v) || g.uses(v).len() != n {
            continue;
        }
        if let Some(wr) = g.weight(v) {
            p.remove_weight(&wr);
        }
    }
    Ok((p, built))
}

/// One pair per activation tensor with parameters.
fn activations(g: &Graph, plan: &BoundPlan, p: &mut Patch, built: &mut Built) -> Result<()> {
    // Tensors a quantised op produces: every reader goes through the pair, or ONNX Runtime cannot fuse the
    // producer (its output must feed QuantizeLinear only).
    let produced: BTreeSet<ValueId> = plan
        .nodes
        .iter()
        .flat_map(|s| s.outs.iter().copied())
        .collect();
    // Who reads the DequantizeLinear of an activation: the quantised ops that list it, and data-movement ops
    // whose output reuses its parameters.
    let mut readers: BTreeMap<ValueId, BTreeSet<NodeId>> = BTreeMap::new();
    for s in &plan.nodes {
        for v in &s.acts {
            readers.entry(*v).or_default().insert(s.node);
        }
    }
    for (&y, t) in &plan.tensors {
        let (Some(_), ValueDef::Node(n, _)) = (t.follows, g.value(y).def) else {
            continue;
        };
        if let Some(x) = g.node(n).and_then(|n| n.input(0)) {
            readers.entry(x).or_default().insert(n);
        }
    }
    for (&v, t) in &plan.tensors {
        let Some(ap) = plan.params_of(v) else {
            continue;
        };
        let base = g.value_name(v).to_string();
        let s = p.add_named_initializer(
            g,
            &base,
            "_scale",
            Tensor::from_f32("", vec![], &[ap.scale]),
        );
        let zp = p.add_named_initializer(
            g,
            &base,
            "_zero_point",
            zero_point(ap.zero_point, ap.signed)?,
        );
        let q = p.new_named_value(g, &base, "_QuantizeLinear_Output");
        let dq = p.new_named_value(g, &base, "_DequantizeLinear_Output");
        let qn = p.fresh_suffixed(g, &base, "_QuantizeLinear");
        let dqn = p.fresh_suffixed(g, &base, "_DequantizeLinear");
        p.add_node_spec(NewNode {
            name: Some(qn),
            op: OpKey::onnx("QuantizeLinear"),
            inputs: vec![Some(ValRef::Old(v)), Some(s), Some(zp)],
            outputs: vec![q],
            attrs: vec![],
        });
        p.add_node_spec(NewNode {
            name: Some(dqn),
            op: OpKey::onnx("DequantizeLinear"),
            inputs: vec![Some(q), Some(s), Some(zp)],
            outputs: vec![dq],
            attrs: vec![],
        });
        if produced.contains(&v) || t.follows.is_some() {
            p.replace_all_uses(v, dq);
        } else {
            // A float producer (LayerNormalization, Softmax, a graph input...): ops left float keep reading the
            // float tensor, so they do not inherit an 8-bit error they do not need (a residual Add beside the
            // MatMuls that read a LayerNormalization, say). The producer is not fused, so nothing is lost.
            let quantised = readers.get(&v);
            for u in g.uses(v).to_vec() {
                if let UseSlot::Input(slot) = u.slot {
                    if quantised.is_some_and(|r| r.contains(&u.node)) {
                        p.set_input(u.node, slot as usize, Some(dq));
                    }
                }
            }
        }
        built.tensors += 1;
    }
    Ok(())
}

/// Weights (int8, one DequantizeLinear per (weight, axis) whoever reads it) and their nodes' biases.
fn weights(
    g: &Graph,
    plan: &BoundPlan,
    p: &mut Patch,
    built: &mut Built,
    rewired: &mut BTreeMap<ValueId, usize>,
) -> Result<()> {
    let mut done: BTreeMap<WeightKey, ValRef> = BTreeMap::new();
    for s in &plan.nodes {
        let Some((slot, w, axis)) = s.weight else {
            continue;
        };
        let scales = &plan.weights[&(w, axis)];
        let dq = match done.get(&(w, axis)) {
            Some(x) => *x,
            None => {
                let wr = g.weight(w).expect("checked in bind");
                let t = g.read_weight(&wr)?.into_owned();
                let q = quantize_symmetric(&t.to_f64_vec()?, &t.dims, axis, scales);
                built.bytes_before += t.byte_size();
                built.bytes_after += q.len() as u64 + 4 * scales.len() as u64;
                let sdims = if axis.is_some() {
                    vec![scales.len() as i64]
                } else {
                    vec![]
                };
                let (out, _) = add_dequantize(
                    p,
                    g,
                    &wr.name,
                    Tensor::from_vec::<i8>("", t.dims.clone(), q)?,
                    Tensor::from_f32("", sdims.clone(), scales),
                    Tensor::from_vec::<i8>("", sdims, vec![0; scales.len()])?,
                    axis.map(|a| a as i64),
                );
                built.weights += 1;
                done.insert((w, axis), out);
                out
            }
        };
        p.set_input(s.node, slot, Some(dq));
        // counted per reader: the float weight leaves the file only when every reader moved (step 4)
        *rewired.entry(w).or_default() += 1;
        if let Some(b) = bias(g, plan, s, scales, p, built)? {
            *rewired.entry(b).or_default() += 1;
            built.biases += 1;
        }
    }
    Ok(())
}

/// A node's bias as int32 with scale = input scale x weight scale (zero point 0); returns the float bias when
/// its reader was moved to the quantised form.
fn bias(
    g: &Graph,
    plan: &BoundPlan,
    s: &BoundNode,
    wscales: &[f32],
    p: &mut Patch,
    built: &mut Built,
) -> Result<Option<ValueId>> {
    let Some((bslot, b)) = s.bias else {
        return Ok(None);
    };
    // an input kept float (NaN in calibration, say) has no scale to derive the bias scale from: the bias stays
    // float, as the node's other float parts do
    let Some(xp) = plan.params_of(s.acts[0]) else {
        return Ok(None);
    };
    let skip = |built: &mut Built, why: &str| {
        built
            .remarks
            .push((s.at.clone(), Outcome::Skipped, why.to_string()));
        Ok(None)
    };
    let Some(bw) = g.weight(b) else {
        return skip(built, "bias is not a constant: kept float");
    };
    let bt = g.read_weight(&bw)?.into_owned();
    if bt.dtype() != DataType::FLOAT || bt.dims.len() != 1 {
        return skip(built, "bias is not a 1-D float32 constant: kept float");
    }
    let mut bv = bt.to_f64_vec()?;
    if plan.bias_correction {
        match &s.shift {
            Some(shift) if shift.len() == bv.len() => {
                let worst = shift.iter().fold(0f64, |a, b| a.max(b.abs()));
                for (b, d) in bv.iter_mut().zip(shift) {
                    *b -= d;
                }
                built.remarks.push((
                    s.at.clone(),
                    Outcome::Applied,
                    format!(
                        "bias corrected for the weight quantization's mean shift (largest {worst:.3e})"
                    ),
                ));
            }
            _ => built.remarks.push((
                s.at.clone(),
                Outcome::Skipped,
                "bias correction: layout or input statistics not available".into(),
            )),
        }
    }
    if wscales.len() != 1 && wscales.len() != bv.len() {
        return skip(
            built,
            "bias length differs from the weight's channels: kept float",
        );
    }
    // the integer kernel accumulates x_q * w_q in int32 at scale x_scale * w_scale: a bias at that scale adds
    // to the accumulator as it is, with zero point 0
    let bscales: Vec<f32> = (0..if wscales.len() == 1 { 1 } else { bv.len() })
        .map(|c| xp.scale * wscales[c])
        .collect();
    let mut q = Vec::with_capacity(bv.len());
    for (i, v) in bv.iter().enumerate() {
        let s = f64::from(bscales[if bscales.len() == 1 { 0 } else { i }]);
        let r = (v / s).round();
        if r.is_nan() || r.abs() > f64::from(i32::MAX) {
            return skip(
                built,
                "bias does not fit int32 at input x weight scale: kept float",
            );
        }
        q.push(r as i32);
    }
    let sdims = if bscales.len() == 1 {
        vec![]
    } else {
        vec![bscales.len() as i64]
    };
    built.bytes_before += bt.byte_size();
    built.bytes_after += 4 * q.len() as u64 + 4 * bscales.len() as u64;
    let (out, _) = add_dequantize(
        p,
        g,
        &bw.name,
        Tensor::from_vec::<i32>("", bt.dims.clone(), q)?,
        Tensor::from_f32("", sdims.clone(), &bscales),
        Tensor::from_vec::<i32>("", sdims, vec![0; bscales.len()])?,
        (bscales.len() > 1).then_some(0),
    );
    p.set_input(s.node, bslot, Some(out));
    Ok(Some(b))
}

/// Constant operands of Add / Mul and embedding tables: asymmetric per tensor in the activation type.
fn constants(
    g: &Graph,
    plan: &BoundPlan,
    p: &mut Patch,
    built: &mut Built,
    rewired: &mut BTreeMap<ValueId, usize>,
) -> Result<()> {
    let mut done: BTreeMap<ValueId, ValRef> = BTreeMap::new();
    for s in &plan.nodes {
        for &(slot, c) in &s.consts {
            let dq = match done.get(&c) {
                Some(x) => *x,
                None => {
                    let cp = plan.constants[&c];
                    let wr = g.weight(c).expect("checked in bind");
                    let t = g.read_weight(&wr)?.into_owned();
                    let (qmin, qmax) = if cp.signed {
                        (-128.0, 127.0)
                    } else {
                        (0.0, 255.0)
                    };
                    let (scale, zp) = (f64::from(cp.scale), f64::from(cp.zero_point));
                    let q: Vec<f64> = t
                        .to_f64_vec()?
                        .iter()
                        .map(|x| ((x / scale).round() + zp).clamp(qmin, qmax))
                        .collect();
                    let qdt = if cp.signed {
                        DataType::INT8
                    } else {
                        DataType::UINT8
                    };
                    built.bytes_before += t.byte_size();
                    built.bytes_after += q.len() as u64 + 5;
                    let (out, _) = add_dequantize(
                        p,
                        g,
                        &wr.name,
                        Tensor::from_f64_as("", qdt, t.dims.clone(), &q)?,
                        Tensor::from_f32("", vec![], &[cp.scale]),
                        zero_point(cp.zero_point, cp.signed)?,
                        None,
                    );
                    done.insert(c, out);
                    out
                }
            };
            p.set_input(s.node, slot, Some(dq));
            *rewired.entry(c).or_default() += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::bind::{bind, PlanSource};
    use super::super::plan::QdqPlan;
    use super::super::testing::{chain, synthetic_plan};
    use super::super::StaticQdqOptions;
    use super::*;
    use crate::ir::Model;

    fn built(m: &Model, plan: &QdqPlan, src: PlanSource) -> Model {
        let mut m = m.clone();
        let bound = bind(&m.graph, plan, src).unwrap();
        let (patch, _) = build(&m.graph, &bound).unwrap();
        m.graph.apply(patch).unwrap();
        m.graph.verify().unwrap();
        m
    }

    /// The plan read back from its file builds the same bytes as the plan in memory.
    #[test]
    fn a_read_plan_builds_the_same_bytes() {
        let m = chain();
        let o = StaticQdqOptions {
            bias_correction: true,
            ..Default::default()
        };
        let plan = synthetic_plan(&m, &o, |_| (-0.5, 1.5));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        plan.write(&path).unwrap();
        let read = QdqPlan::read(&path).unwrap();
        let a = crate::io::to_bytes(&built(&m, &plan, PlanSource::Computed)).unwrap();
        let b = crate::io::to_bytes(&built(&m, &read, PlanSource::File(&path))).unwrap();
        assert!(a == b, "bytes differ");
        // and the plan changes the model: the bias is corrected, so another shift builds other bytes
        let mut other = read.clone();
        let bias = other
            .nodes
            .iter_mut()
            .find_map(|n| n.bias.as_mut())
            .unwrap();
        bias.shift.as_mut().unwrap()[0] += 1.0;
        let c = crate::io::to_bytes(&built(&m, &other, PlanSource::Computed)).unwrap();
        assert!(a != c, "a bias shift changed nothing");
    }

    /// The graph input read by the quantised Conv and by a Sigmoid left float: the Conv reads the pair, the
    /// Sigmoid keeps the float tensor (no 8-bit error it does not need). The Relu output a quantised op
    /// produces is read through the pair by everyone (the Reshape), so ONNX Runtime can fuse the producer.
    #[test]
    fn float_readers_of_a_float_producer_keep_the_float_tensor() {
        let m = chain();
        let plan = synthetic_plan(&m, &StaticQdqOptions::default(), |_| (-0.5, 1.5));
        let q = built(&m, &plan, PlanSource::Computed);
        let g = &q.graph;
        let reader = |op: &str| {
            let (_, n) = g.nodes().find(|(_, n)| n.op.is(op)).unwrap();
            g.producer(n.input(0).unwrap())
                .map(|(_, p)| p.op.op_type.clone())
        };
        assert_eq!(reader("Conv").as_deref(), Some("DequantizeLinear"));
        assert_eq!(reader("Sigmoid"), None, "the Sigmoid reads the graph input");
        assert_eq!(reader("Reshape").as_deref(), Some("DequantizeLinear"));
        assert_eq!(reader("MatMul").as_deref(), Some("DequantizeLinear"));
        // the float weights are gone, the int8 ones are read
        assert!(g.value_by_name("w").is_none_or(|v| g.uses(v).is_empty()));
    }
}
