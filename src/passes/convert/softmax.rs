//! Softmax / LogSoftmax / Hardmax at opset 13: before, the input was flattened to 2-D at `axis` and the whole
//! trailing block normalised; from 13, `axis` is the single normalised axis. When the input rank is known and
//! `axis` is the last axis both mean the same and only the attribute is restated. Otherwise the old meaning is
//! spelled out exactly: `Shape(x)`, `Flatten(x, axis)`, the op on the 2-D tensor at axis 1, and the original
//! node becomes the `Reshape` back to the input shape (so its name and output stay).

use crate::error::Result;
use crate::ir::ops::{SoftmaxView, SOFTMAX_ONE_AXIS_SINCE};
use crate::ir::{AttrList, Attribute, Graph, Node, NodeId, OpKey, ValueId};
use crate::passes::convert::{declared_dims, Cx};

pub(super) fn softmax(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(SOFTMAX_ONE_AXIS_SINCE) {
        return Ok(None);
    }
    let Some(v) = SoftmaxView::of(node, cx.from)? else {
        return Ok(None);
    };
    let op = node.op.op_type.clone();
    let rank = known_rank(cx.g, v.x, 0);
    let axis = match rank {
        Some(r) if v.axis < 0 => v.axis + r,
        _ => v.axis,
    };
    if let Some(r) = rank {
        if axis < 0 || axis >= r.max(1) {
            return Err(cx.fail(node, format!("axis {} out of range for rank {r}", v.axis)));
        }
        if axis == r - 1 {
            cx.patch.set_attr(id, Attribute::int("axis", axis));
            return Ok(Some(format!(
                "axis {axis} is the last axis of the rank-{r} input: same meaning at opset 13"
            )));
        }
    }
    let anchor = cx.anchor(node);
    let x = v.x;
    let shape = cx.patch.add_node(
        cx.g,
        &anchor,
        OpKey::onnx("Shape"),
        vec![Some(x.into())],
        vec![],
        1,
    )[0];
    let flat = cx.patch.add_node(
        cx.g,
        &anchor,
        OpKey::onnx("Flatten"),
        vec![Some(x.into())],
        vec![Attribute::int("axis", v.axis)],
        1,
    )[0];
    let inner = cx.patch.add_node(
        cx.g,
        &anchor,
        node.op.clone(),
        vec![Some(flat)],
        vec![Attribute::int("axis", 1)],
        1,
    )[0];
    cx.patch.set_op(id, OpKey::onnx("Reshape"));
    for a in &node.attrs {
        cx.patch.remove_attr(id, &a.name);
    }
    cx.patch.set_input(id, 0, Some(inner));
    cx.patch.set_input(id, 1, Some(shape));
    Ok(Some(format!(
        "{op} over the block from axis {} ({}): Flatten, {op} at axis 1, Reshape back (opset 13)",
        v.axis,
        rank.map_or_else(|| "input rank unknown".to_string(), |r| format!("rank {r}"))
    )))
}

/// The rank of `v` when the graph says it: a declared shape, a constant, or a producer whose output rank
/// follows from its inputs' (element-wise ops, MatMul, Gemm, Flatten, Reshape to a constant shape, ...).
pub(crate) fn known_rank(g: &Graph, v: ValueId, depth: usize) -> Option<i64> {
    if let Some(d) = declared_dims(g, v) {
        return Some(d.len() as i64);
    }
    if depth > 64 {
        return None;
    }
    let (_, n) = g.producer(v)?;
    let op = n.op.op_type.as_str();
    if !n.op.is_default_domain() || n.output(0) != Some(v) {
        return None;
    }
    let input_rank = |i: usize| n.input(i).and_then(|x| known_rank(g, x, depth + 1));
    match op {
        "Relu"
        | "Sigmoid"
        | "Tanh"
        | "Exp"
        | "Log"
        | "Neg"
        | "Abs"
        | "Sqrt"
        | "Erf"
        | "Identity"
        | "Cast"
        | "Clip"
        | "Softmax"
        | "LogSoftmax"
        | "HardSigmoid"
        | "HardSwish"
        | "LeakyRelu"
        | "Elu"
        | "Selu"
        | "Softplus"
        | "Gelu"
        | "Dropout"
        | "BatchNormalization"
        | "LayerNormalization"
        | "Conv"
        | "ConvTranspose"
        | "MaxPool"
        | "AveragePool"
        | "GlobalAveragePool"
        | "GlobalMaxPool"
        | "Transpose"
        | "Floor"
        | "Ceil"
        | "Reciprocal"
        | "Not"
        | "PRelu"
        | "InstanceNormalization"
        | "Resize"
        | "Pad"
        | "Tile" => input_rank(0),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Where" | "Equal" | "Less" | "Greater" | "And"
        | "Or" | "Max" | "Min" | "Sum" | "Mean" => {
            let mut r = 0;
            for i in 0..n.inputs.len() {
                r = r.max(input_rank(i)?);
            }
            Some(r)
        }
        "MatMul" => {
            let (a, b) = (input_rank(0)?, input_rank(1)?);
            match (a, b) {
                (1, 1) => Some(0),
                (1, b) => Some(b - 1),
                (a, 1) => Some(a - 1),
                (a, b) => Some(a.max(b)),
            }
        }
        "Gemm" | "Flatten" => Some(2),
        "Concat" => input_rank(0),
        "Reshape" => {
            let s = g.constant(n.input(1)?)?;
            (s.dims.len() == 1).then(|| s.dims[0])
        }
        "Unsqueeze" | "Squeeze" => {
            let r = input_rank(0)?;
            let k = match n.get_ints("axes").ok()? {
                Some(a) => a.len() as i64,
                None => g.constant(n.input(1)?)?.numel().ok()? as i64,
            };
            Some(if op == "Unsqueeze" { r + k } else { r - k })
        }
        _ => None,
    }
}
