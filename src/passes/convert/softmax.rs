//! Softmax / LogSoftmax / Hardmax at opset 13: before, the input was flattened to 2-D at `axis` and the whole
//! trailing block normalised; from 13, `axis` is the single normalised axis. When the input rank is known and
//! `axis` is the last axis both mean the same and only the attribute is restated. Otherwise the old meaning is
//! spelled out exactly: `Shape(x)`, `Flatten(x, axis)`, the op on the 2-D tensor at axis 1, and the original
//! node becomes the `Reshape` back to the input shape (so its name and output stay).

use crate::error::Result;
use crate::ir::ops::{SoftmaxView, SOFTMAX_ONE_AXIS_SINCE};
use crate::ir::{Attribute, Node, NodeId, OpKey};
use crate::passes::convert::facts::known_rank;
use crate::passes::convert::Cx;

pub(super) fn softmax(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(SOFTMAX_ONE_AXIS_SINCE) {
        return Ok(None);
    }
    let Some(v) = SoftmaxView::of(node, cx.from)? else {
        return Ok(None);
    };
    let op = node.op.op_type.clone();
    let rank = known_rank(cx.g, v.x);
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
