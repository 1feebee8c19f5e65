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

/// Ops whose output is float whenever their first input is.
const FLOAT_PRESERVING: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Slice",
    "Split",
    "Pad",
    "Resize",
    "Gather",
    "Neg",
    "Abs",
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

/// Whether `v` is a float32 tensor: declared, constant, or inferred from its producer.
pub(super) fn is_f32(g: &Graph, v: ValueId, depth: usize) -> bool {
    if let Some(dt) = crate::passes::convert::declared_dtype(g, v) {
        return dt == DataType::FLOAT;
    }
    if depth > 64 {
        return false;
    }
    match g.producer(v) {
        Some((_, n)) if n.op.is_default_domain() => {
            let op = n.op.op_type.as_str();
            if FLOAT_OUT.contains(&op) {
                true
            } else if FLOAT_PRESERVING.contains(&op) {
                n.input(0).is_some_and(|x| is_f32(g, x, depth + 1))
            } else {
                false
            }
        }
        _ => false,
    }
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
