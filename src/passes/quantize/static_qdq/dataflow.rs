//! Graph facts the selection asks about one tensor or node: is it a float32 activation, a constant (or computed
//! from constants only), fed by a quantisable compute op, the output of an activation the producer can absorb,
//! on the way to a normalisation. Pure reads of the graph; `select` combines them into decisions and reasons.

use crate::ir::{AttrList, DataType, Graph, NodeId, ValueId};

/// Ops that only move values: their output takes their input's quantization parameters.
pub(super) const DATA_MOVEMENT: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
    "Identity",
];

/// Ops whose output is always float (for float models).
pub(super) const FLOAT_OUT: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "HardSigmoid",
    "Softmax",
    "BatchNormalization",
    "GlobalAveragePool",
    "AveragePool",
    "LayerNormalization",
    "Erf",
    "Sqrt",
    "Exp",
    "DequantizeLinear",
    "ReduceMean",
    "Pow",
];

/// Whether `v` is a float32 tensor: declared (graph input / output, value_info, constant) or following from
/// its producer by ONNX's type rules (element-wise ops keep their input's type, Cast sets it, Shape gives int64,
/// ...: `convert::facts::known_dtype`), so a model exported without value_info hides no activation.
pub(super) fn is_f32(g: &Graph, v: ValueId) -> bool {
    crate::passes::convert::facts::known_dtype(g, v) == Some(DataType::FLOAT)
}

/// A constant: an initializer or a `Constant` node's output (of this graph or an enclosing one).
pub(super) fn is_constant(g: &Graph, v: ValueId) -> bool {
    g.constant(v).is_some()
}

/// Computed from constants only (e.g. int8 storage -> Cast -> Mul): a weight already stored quantised.
pub(super) fn is_constant_cone(g: &Graph, v: ValueId, depth: usize) -> bool {
    if is_constant(g, v) {
        return true;
    }
    if depth > 16 {
        return false;
    }
    match g.producer(v) {
        Some((_, n)) if !n.has_subgraphs() && !n.inputs.is_empty() => n
            .inputs
            .iter()
            .flatten()
            .all(|x| is_constant_cone(g, *x, depth + 1)),
        _ => false,
    }
}

/// Produced by a Conv / ConvTranspose / Gemm / MatMul / Add, possibly through Relu, Clip and data-movement ops:
/// an element-wise op there joins a quantised path (a residual Add, a HardSwish Mul). Element-wise ops
/// elsewhere (a LayerNorm spelled out as Sub / Div / Mul) stay float: their operands' ranges are not those an
/// integer kernel keeps.
pub(super) fn fed_by_compute(g: &Graph, v: ValueId, depth: usize) -> bool {
    if depth > 8 {
        return false;
    }
    match g.producer(v) {
        Some((_, n)) if n.op.is_default_domain() => {
            let op = n.op.op_type.as_str();
            if ["Conv", "ConvTranspose", "Gemm", "MatMul", "Add"].contains(&op) {
                true
            } else if op == "Relu" || op == "Clip" || DATA_MOVEMENT.contains(&op) {
                n.input(0).is_some_and(|x| fed_by_compute(g, x, depth + 1))
            } else {
                false
            }
        }
        _ => false,
    }
}

pub(super) fn produced_by(g: &Graph, v: ValueId, op: &str) -> bool {
    g.producer(v).is_some_and(|(_, n)| n.op.is(op))
}

/// Relu, or Clip whose bounds are constants: exact to fold into the output's range.
fn absorbable(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n).expect("live");
    if node.op.is("Relu") {
        return true;
    }
    node.op.is("Clip")
        && node
            .inputs
            .iter()
            .skip(1)
            .flatten()
            .all(|v| is_constant(g, *v))
}

/// The output tensor to quantise for a node output: the output of a following Relu/Clip when it is the only
/// reader (the activation is then absorbed).
pub(super) fn output_tensor(g: &Graph, y: ValueId, notes: &mut Vec<String>) -> ValueId {
    if g.is_output(y) {
        return y;
    }
    let uses = g.uses(y);
    if uses.len() == 1 {
        let n = uses[0].node;
        if absorbable(g, n) {
            let node = g.node(n).expect("live");
            if let Some(z) = node.output(0) {
                notes.push(format!("{} '{}' absorbed", node.op.op_type, node.name()));
                return z;
            }
        }
    }
    y
}

/// A normalisation over the last axis: LayerNormalization, or a ReduceMean over axis -1 (a decomposed one).
fn is_norm(g: &Graph, n: &crate::ir::Node) -> bool {
    if n.op.is("LayerNormalization") || n.op.is("SimplifiedLayerNormalization") {
        return true;
    }
    if !n.op.is("ReduceMean") {
        return false;
    }
    let axes = match n.get_ints("axes") {
        Ok(Some(a)) => Some(a),
        _ => n
            .input(1)
            .and_then(|a| g.constant(a))
            .and_then(|t| t.to_i64_vec().ok()),
    };
    axes.as_deref() == Some(&[-1])
}

/// The normalisation `v` reaches, directly or through at most `adds` further Adds (a residual stream): such a
/// tensor carries the outlier channels of a transformer's residual stream, which one per-tensor 8-bit range
/// crushes, and the normalisation then scales the crushed channels back up.
pub(super) fn reaches_norm(g: &Graph, v: ValueId, adds: usize) -> Option<String> {
    for c in g.consumers(v) {
        let Some(node) = g.node(c) else { continue };
        if !node.op.is_default_domain() {
            continue;
        }
        if is_norm(g, node) {
            return Some(node.name().to_string());
        }
        if adds > 0 && node.op.is("Add") {
            if let Some(found) = node.output(0).and_then(|y| reaches_norm(g, y, adds - 1)) {
                return Some(found);
            }
        }
    }
    None
}

/// Ops that carry an error of their input on to their output (element-wise, linear, clipping or moving
/// values): an 8-bit zero in their input is still a zero, or a sum of zeros, after them. A power spectrum
/// quantised before a mel MatMul or the audio before the STFT Conv loses its quiet bins as surely as the Log
/// input itself. The data-movement ops (`DATA_MOVEMENT`) carry it too: see [`passes_error_on`].
const PASS_THROUGH: &[&str] = &[
    "Relu",
    "Clip",
    "Max",
    "Min",
    "Abs",
    "Neg",
    "Add",
    "Sub",
    "Mul",
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "AveragePool",
    "GlobalAveragePool",
    "Slice",
    "Concat",
    "Pad",
];

/// Does `op` carry an error of its input on to its output (`PASS_THROUGH` or a data-movement op)?
pub(super) fn passes_error_on(op: &str) -> bool {
    PASS_THROUGH.contains(&op) || DATA_MOVEMENT.contains(&op)
}

/// Why reading `v` at input `slot` of `node` breaks on 8-bit values, if it does, and whether it breaks on
/// values that come through other ops too. Log, Sqrt, Reciprocal, a Div denominator and a root or negative
/// power are singular at 0, and 8 bits round every value below half a step to exactly 0 (a power spectrum
/// spanning ten orders of magnitude keeps only its loudest bins: Log then gives -inf, and every later value is
/// NaN), through any number of sums and products. Exp turns an absolute error into a relative one (e^(x+d) =
/// e^x e^d): large on a wide range, but bounded, so only the tensor Exp reads itself is kept float for it.
fn amplifies(g: &Graph, node: &crate::ir::Node, slot: usize) -> Option<(&'static str, bool)> {
    match node.op.op_type.as_str() {
        "Log" => Some(("Log (an 8-bit zero becomes -inf)", true)),
        "Sqrt" => Some(("Sqrt (unbounded slope at 0)", true)),
        "Reciprocal" => Some(("Reciprocal (an 8-bit zero becomes inf)", true)),
        "Exp" => Some((
            "Exp (an absolute 8-bit error becomes a relative one)",
            false,
        )),
        "Div" if slot == 1 => Some(("a Div denominator (an 8-bit zero becomes inf)", true)),
        "Pow" => {
            // an integer power >= 1 is a polynomial: its relative error is the exponent times its input's;
            // a root, a negative or a computed exponent is singular at 0
            let e = node
                .input(1)
                .and_then(|e| g.constant(e))
                .and_then(|t| t.to_f64_vec().ok());
            match e.as_deref() {
                Some([e]) if slot == 0 && *e >= 1.0 && e.fract() == 0.0 => None,
                _ => Some(("Pow (a root, negative or computed exponent)", true)),
            }
        }
        _ => None,
    }
}

/// The op that would break on an 8-bit error of `v`: read directly, or (a singular one) through at most
/// `depth` ops that pass the error on (`passes_error_on`); said as "<why> '<node>'".
pub(super) fn feeds_amplifier(g: &Graph, v: ValueId, depth: usize) -> Option<String> {
    amplifier_from(g, v, depth, true)
}

fn amplifier_from(g: &Graph, v: ValueId, depth: usize, direct: bool) -> Option<String> {
    for u in g.uses(v) {
        let crate::ir::UseSlot::Input(slot) = u.slot else {
            continue;
        };
        let Some(node) = g.node(u.node) else { continue };
        if !node.op.is_default_domain() {
            continue;
        }
        if let Some((why, singular)) = amplifies(g, node, slot as usize) {
            if direct || singular {
                return Some(format!("{why} '{}'", node.name()));
            }
        }
        if depth > 0 && passes_error_on(&node.op.op_type) {
            for y in node.outputs.iter().flatten() {
                if let Some(found) = amplifier_from(g, *y, depth - 1, false) {
                    return Some(found);
                }
            }
        }
    }
    None
}
