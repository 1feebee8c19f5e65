//! Resize and Upsample. Upsample (deprecated at 10) becomes Resize; Resize-10 `(X, scales)` gains the `roi`
//! input at 11, where the coordinate and rounding defaults changed, so the old behaviour is spelled out:
//! `asymmetric` coordinates and, for `nearest`, `floor` rounding. `tf_half_pixel_for_nn` was removed at 13.

use crate::error::Result;
use crate::ir::{AttrList, Attribute, Node, NodeId, OpKey, Tensor, ValRef};
use crate::passes::convert::Cx;

/// Set the opset-11 inputs and attributes that reproduce Resize-10 / Upsample behaviour.
fn resize10_to_11(cx: &mut Cx, id: NodeId, node: &Node, scales: ValRef) -> Result<()> {
    let mode = node.get_string("mode")?.unwrap_or_else(|| "nearest".into());
    // roi is a required input at 11-12 (an empty tensor when unused), optional from 13
    let roi = if cx.to >= 13 {
        None
    } else {
        Some(cx.constant(node, Tensor::from_f32("", vec![0], &[])))
    };
    cx.patch.set_input(id, 1, roi);
    cx.patch.set_input(id, 2, Some(scales));
    cx.patch.set_attr(
        id,
        Attribute::string("coordinate_transformation_mode", "asymmetric"),
    );
    if mode == "nearest" {
        cx.patch
            .set_attr(id, Attribute::string("nearest_mode", "floor"));
    }
    Ok(())
}

pub(super) fn upsample(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(10) {
        return Ok(None);
    }
    let scales: ValRef = if cx.from < 9 {
        let s = node
            .get_floats("scales")?
            .ok_or_else(|| cx.fail(node, "Upsample-7 without scales"))?;
        cx.constant(node, Tensor::from_f32("", vec![s.len() as i64], &s))
    } else {
        node.input(1)
            .ok_or_else(|| cx.fail(node, "Upsample-9 without scales input"))?
            .into()
    };
    let mode = node.get_string("mode")?.unwrap_or_else(|| "nearest".into());
    if mode != "nearest" && mode != "linear" {
        return Err(cx.fail(node, format!("unknown mode '{mode}'")));
    }
    cx.patch.set_op(id, OpKey::onnx("Resize"));
    cx.patch.remove_attr(id, "scales");
    cx.patch.set_attr(id, Attribute::string("mode", &mode));
    if cx.to >= 11 {
        resize10_to_11(cx, id, node, scales)?;
    } else {
        cx.patch.set_input(id, 1, Some(scales));
    }
    Ok(Some(format!(
        "Upsample ({mode}) -> Resize (Upsample is deprecated at opset 10)"
    )))
}

pub(super) fn resize(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    let mut done = Vec::new();
    if cx.crosses(11) {
        let scales = node
            .input(1)
            .ok_or_else(|| cx.fail(node, "Resize-10 without scales"))?;
        resize10_to_11(cx, id, node, scales.into())?;
        done.push("Resize-10 -> 11: roi input, asymmetric coordinates".to_string());
    } else if cx.crosses(13)
        && node
            .get_string("coordinate_transformation_mode")?
            .as_deref()
            == Some("tf_half_pixel_for_nn")
    {
        return Err(cx.fail(
            node,
            "coordinate_transformation_mode tf_half_pixel_for_nn was removed at opset 13",
        ));
    }
    Ok((!done.is_empty()).then(|| done.join("; ")))
}
