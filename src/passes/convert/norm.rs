//! Normalisations: BatchNormalization (`spatial` removed at 9, outputs reshaped at 14) and GroupNormalization
//! (scale and bias per group at 18, per channel at 21).

use crate::error::Result;
use crate::ir::ops::BatchNormView;
use crate::ir::{Node, NodeId, Tensor};
use crate::passes::convert::Cx;

pub(super) fn batchnorm(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    let Some(v) = BatchNormView::of(node, cx.from)? else {
        return Ok(None);
    };
    let mut done = Vec::new();
    if cx.crosses(9) {
        if !v.spatial {
            return Err(cx.fail(
                node,
                "spatial=0 (per-element statistics) has no equivalent from opset 9",
            ));
        }
        if node.attrs.iter().any(|a| a.name == "spatial") {
            cx.patch.remove_attr(id, "spatial");
            done.push("spatial attribute removed (opset 9)".to_string());
        }
    }
    if cx.crosses(14) && v.training_mode {
        // opset 14 changed the training outputs (running stats, no saved mean/var) and needs training_mode=1
        return Err(cx.fail(
            node,
            "training-mode BatchNormalization (more outputs than Y): its outputs changed at opset 14",
        ));
    }
    Ok((!done.is_empty()).then(|| done.join("; ")))
}

pub(super) fn groupnorm(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(21) {
        return Ok(None);
    }
    let (Some(x), Some(scale), Some(bias)) = (node.input(0), node.input(1), node.input(2)) else {
        return Ok(None);
    };
    let channels = cx
        .declared_dims(x)
        .and_then(|d| d.get(1).copied().flatten())
        .ok_or_else(|| {
            cx.fail(
                node,
                "scale/bias go from per-group to per-channel at opset 21 and the channel count of the input is not declared",
            )
        })?;
    let mut per_channel = |v| -> Result<crate::ir::ValRef> {
        let t = cx.g.constant(v).ok_or_else(|| {
            cx.fail(
                node,
                format!(
                    "'{}' is not a constant: per-group -> per-channel needs its values",
                    cx.g.value_name(v)
                ),
            )
        })?;
        let vals = t.to_f32_vec().map_err(|e| cx.fail(node, e.to_string()))?;
        let groups = vals.len() as i64;
        if t.dtype() != crate::ir::DataType::FLOAT || groups == 0 || channels % groups != 0 {
            return Err(cx.fail(
                node,
                format!(
                    "per-group {} of {groups} values cannot spread over {channels} channels",
                    t.dtype().name()
                ),
            ));
        }
        let per = (channels / groups) as usize;
        let spread: Vec<f32> = vals
            .iter()
            .flat_map(|v| std::iter::repeat_n(*v, per))
            .collect();
        Ok(cx.constant(node, Tensor::from_f32("", vec![channels], &spread)))
    };
    let s = per_channel(scale)?;
    let b = per_channel(bias)?;
    cx.patch.set_input(id, 1, Some(s));
    cx.patch.set_input(id, 2, Some(b));
    Ok(Some(format!(
        "scale/bias per group -> per channel ({channels} channels, opset 21)"
    )))
}
