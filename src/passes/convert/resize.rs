//! Resize and Upsample. Upsample-7's `scales` attribute became an input at 9; Upsample (deprecated at 10)
//! becomes Resize; Resize-10 `(X, scales)` gains the `roi` input at 11, where the coordinate and rounding
//! defaults changed, so the old sampling is spelled out: `asymmetric` coordinates, and for `nearest` the
//! rounding ONNX Runtime applies to Upsample / Resize-10 (and the version converter's `floor` for
//! upsampling): `floor` along an upsampled axis, `ceil` along a downsampled one. Nearest sampling is separable,
//! so scales that go up on some axes and down on others become two Resize nodes, one per rounding, with the
//! same result. `tf_half_pixel_for_nn` was removed at 13.

use crate::error::Result;
use crate::ir::{AttrList, Attribute, Node, NodeId, OpKey, Tensor, ValRef};
use crate::passes::convert::Cx;

/// Where the scales come from: constant values (attribute or constant input) or a runtime input.
struct Scales {
    value: ValRef,
    known: Option<Vec<f32>>,
}

fn input_scales(cx: &Cx, node: &Node, slot: usize) -> Result<Scales> {
    let v = node
        .input(slot)
        .ok_or_else(|| cx.fail(node, "no scales input"))?;
    let known = cx.g.constant(v).and_then(|t| t.to_f32_vec().ok());
    Ok(Scales {
        value: v.into(),
        known,
    })
}

fn attr_scales(cx: &mut Cx, node: &Node) -> Result<Scales> {
    let s = node
        .get_floats("scales")?
        .ok_or_else(|| cx.fail(node, "Upsample-7 without scales"))?;
    let value = cx.constant(node, Tensor::from_f32("", vec![s.len() as i64], &s));
    Ok(Scales {
        value,
        known: Some(s),
    })
}

/// Make node `id` a Resize-11+ reproducing Resize-10 / Upsample sampling.
fn to_resize11(cx: &mut Cx, id: NodeId, node: &Node, scales: Scales) -> Result<()> {
    let mode = node.get_string("mode")?.unwrap_or_else(|| "nearest".into());
    let roi = |cx: &mut Cx| {
        // roi is a required input at 11-12 (an empty tensor when unused), optional from 13
        (cx.to < 13).then(|| cx.constant(node, Tensor::from_f32("", vec![0], &[])))
    };
    let asym = Attribute::string("coordinate_transformation_mode", "asymmetric");
    let mut x: ValRef = node
        .input(0)
        .ok_or_else(|| cx.fail(node, "no input"))?
        .into();
    let mut own_scales = scales.value;
    let mut rounding = None;
    if mode == "nearest" {
        let s = scales.known.ok_or_else(|| {
            cx.fail(
                node,
                "nearest rounding depends on whether each scale is above or below 1, and the scales are not constant",
            )
        })?;
        let (up, down) = (s.iter().any(|v| *v > 1.0), s.iter().any(|v| *v < 1.0));
        if up && down {
            // upsampled axes first (floor), then the original node downsamples the others (ceil)
            let ups: Vec<f32> = s.iter().map(|v| v.max(1.0)).collect();
            let downs: Vec<f32> = s.iter().map(|v| v.min(1.0)).collect();
            let up_scales = cx.constant(node, Tensor::from_f32("", vec![ups.len() as i64], &ups));
            let r = roi(cx);
            let anchor = cx.anchor(node);
            x = cx.patch.add_node(
                cx.g,
                &anchor,
                OpKey::onnx("Resize"),
                vec![Some(x), r, Some(up_scales)],
                vec![
                    Attribute::string("mode", "nearest"),
                    asym.clone(),
                    Attribute::string("nearest_mode", "floor"),
                ],
                1,
            )[0];
            own_scales = cx.constant(node, Tensor::from_f32("", vec![downs.len() as i64], &downs));
            rounding = Some("ceil");
        } else {
            rounding = Some(if down { "ceil" } else { "floor" });
        }
    }
    let r = roi(cx);
    cx.patch.set_input(id, 0, Some(x));
    cx.patch.set_input(id, 1, r);
    cx.patch.set_input(id, 2, Some(own_scales));
    cx.patch.set_attr(id, Attribute::string("mode", &mode));
    cx.patch.set_attr(id, asym);
    if let Some(r) = rounding {
        cx.patch.set_attr(id, Attribute::string("nearest_mode", r));
    }
    Ok(())
}

pub(super) fn upsample(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    // Upsample is deprecated from opset 10 (a model at 10+ that still uses it is converted too)
    if cx.to < 10 && !cx.crosses(9) {
        return Ok(None);
    }
    let mode = node.get_string("mode")?.unwrap_or_else(|| "nearest".into());
    if mode != "nearest" && mode != "linear" {
        return Err(cx.fail(node, format!("unknown mode '{mode}'")));
    }
    let scales = if cx.from < 9 {
        cx.patch.remove_attr(id, "scales");
        attr_scales(cx, node)?
    } else {
        input_scales(cx, node, 1)?
    };
    if cx.to < 10 {
        cx.patch.set_input(id, 1, Some(scales.value));
        return Ok(Some("scales: attribute -> input (opset 9)".into()));
    }
    cx.patch.set_op(id, OpKey::onnx("Resize"));
    cx.patch.set_attr(id, Attribute::string("mode", &mode));
    if cx.to >= 11 {
        to_resize11(cx, id, node, scales)?;
    } else {
        cx.patch.set_input(id, 1, Some(scales.value));
    }
    Ok(Some(format!(
        "Upsample ({mode}) -> Resize (Upsample is deprecated at opset 10)"
    )))
}

pub(super) fn resize(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if cx.crosses(11) {
        let scales = input_scales(cx, node, 1)?;
        to_resize11(cx, id, node, scales)?;
        return Ok(Some(
            "Resize-10 -> 11: roi input, asymmetric coordinates, Resize-10 rounding".into(),
        ));
    }
    if cx.crosses(13)
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
    Ok(None)
}
