//! Scalar attributes that became inputs: Clip `min`/`max` (11), Pad `pads`/`value` (11), Dropout `ratio` (12).
//! A scalar input has the data's element type (Clip, Pad): taken from the declared type; when it is not
//! declared, a `CastLike` to the data makes the constant's type right at opset 15+, else the node is refused.

use bytes::Bytes;

use crate::error::Result;
use crate::ir::{AttrList, DataType, Node, NodeId, OpKey, Tensor, ValRef, ValueId};
use crate::passes::convert::Cx;

/// A scalar `value` of the element type of `like` (a float type, as Clip and float Pad data are).
fn typed_scalar(cx: &mut Cx, node: &Node, like: ValueId, value: f32) -> Result<ValRef> {
    let t = match cx.dtype(like) {
        Some(DataType::FLOAT) => Tensor::from_f32("", vec![], &[value]),
        Some(DataType::DOUBLE) => Tensor::from_raw(
            "",
            DataType::DOUBLE,
            vec![],
            Bytes::copy_from_slice(&(value as f64).to_le_bytes()),
        ),
        Some(dt) if !dt.is_float() && value.fract() == 0.0 && value.abs() < 2f32.powi(24) => {
            match dt {
                DataType::INT64 => Tensor::from_i64("", vec![], &[value as i64]),
                DataType::INT32 => Tensor::from_raw(
                    "",
                    dt,
                    vec![],
                    Bytes::copy_from_slice(&(value as i32).to_le_bytes()),
                ),
                _ => return cast_like(cx, node, like, value),
            }
        }
        _ => return cast_like(cx, node, like, value),
    };
    Ok(cx.constant(node, t))
}

fn cast_like(cx: &mut Cx, node: &Node, like: ValueId, value: f32) -> Result<ValRef> {
    if cx.to < 15 {
        return Err(cx.fail(
            node,
            format!(
                "the element type of '{}' is not declared, so the scalar {value} cannot be typed (CastLike needs opset 15)",
                cx.g.value_name(like)
            ),
        ));
    }
    let c = cx.constant(node, Tensor::from_f32("", vec![], &[value]));
    let anchor = cx.anchor(node);
    Ok(cx.patch.add_node(
        cx.g,
        &anchor,
        OpKey::onnx("CastLike"),
        vec![Some(c), Some(like.into())],
        vec![],
        1,
    )[0])
}

pub(super) fn clip(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(11) {
        return Ok(None);
    }
    let Some(x) = node.input(0) else {
        return Ok(None);
    };
    let (min, max) = (node.get_float("min")?, node.get_float("max")?);
    let min_in = min.map(|v| typed_scalar(cx, node, x, v)).transpose()?;
    let max_in = max.map(|v| typed_scalar(cx, node, x, v)).transpose()?;
    if min_in.is_some() || max_in.is_some() {
        cx.patch.set_input(id, 1, min_in);
    }
    if max_in.is_some() {
        cx.patch.set_input(id, 2, max_in);
    }
    cx.patch.remove_attr(id, "min");
    cx.patch.remove_attr(id, "max");
    Ok(Some(format!(
        "min {min:?} / max {max:?}: attributes -> inputs (opset 11)"
    )))
}

pub(super) fn pad(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(11) {
        return Ok(None);
    }
    let Some(x) = node.input(0) else {
        return Ok(None);
    };
    let pads = match node.get_ints("pads")? {
        Some(p) => p,
        None => node
            .get_ints("paddings")?
            .ok_or_else(|| cx.fail(node, "Pad-2 without pads"))?,
    };
    let value = node.get_float("value")?.unwrap_or(0.0);
    let mode = node
        .get_string("mode")?
        .unwrap_or_else(|| "constant".into());
    let p = cx.ints(node, &pads);
    cx.patch.set_input(id, 1, Some(p));
    // the constant_value input defaults to 0 of the data type; only a non-zero value needs it
    if value != 0.0 && mode == "constant" {
        let v = typed_scalar(cx, node, x, value)?;
        cx.patch.set_input(id, 2, Some(v));
    }
    for name in ["pads", "paddings", "value"] {
        cx.patch.remove_attr(id, name);
    }
    Ok(Some(format!(
        "pads {pads:?}, value {value}: attributes -> inputs (opset 11)"
    )))
}

pub(super) fn dropout(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    let mut done = Vec::new();
    if cx.crosses(10) {
        // the mask became bool at opset 10: only an unread mask converts
        if let Some(mask) = node.output(1) {
            if !cx.g.uses(mask).is_empty() || cx.g.is_output(mask) {
                return Err(cx.fail(
                    node,
                    "its mask output is read, and the mask type changed from T to bool at opset 10",
                ));
            }
        }
    }
    if cx.crosses(12) {
        // stated even when it is the default 0.5, as onnx.version_converter does; ratio is T1 (any float
        // type, independent of the data): f32 holds an f32 attribute exactly
        let ratio = node.get_float("ratio")?.unwrap_or(0.5);
        let c = cx.constant(node, Tensor::from_f32("", vec![], &[ratio]));
        cx.patch.set_input(id, 1, Some(c));
        cx.patch.remove_attr(id, "ratio");
        done.push(format!("ratio {ratio}: attribute -> input (opset 12)"));
    }
    Ok((!done.is_empty()).then(|| done.join("; ")))
}
