//! Integer-list attributes that became inputs: Squeeze/Unsqueeze `axes` (13), ReduceSum `axes` (13) and the
//! other Reduce* (18), Split `split` (13) and `num_outputs` (18), Slice `starts`/`ends`/`axes` (10), TopK `k` (10).

use crate::error::Result;
use crate::ir::ops::{
    reduce_axes_input_since, IntsArg, ReduceView, SplitView, SqueezeView, SPLIT_INPUT_SINCE,
    SPLIT_NUM_OUTPUTS_SINCE, SQUEEZE_AXES_INPUT_SINCE,
};
use crate::ir::{AttrList, Attribute, Node, NodeId};
use crate::passes::convert::Cx;

pub(super) fn squeeze(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(SQUEEZE_AXES_INPUT_SINCE) {
        return Ok(None);
    }
    let Some(v) = SqueezeView::of(node, cx.from)? else {
        return Ok(None);
    };
    match v.axes {
        IntsArg::Attr(axes) => {
            let c = cx.ints(node, &axes);
            cx.patch.remove_attr(id, "axes");
            cx.patch.set_input(id, 1, Some(c));
            Ok(Some(format!(
                "axes {axes:?}: attribute -> input (opset {SQUEEZE_AXES_INPUT_SINCE})"
            )))
        }
        IntsArg::Absent if v.unsqueeze => Err(cx.fail(node, "Unsqueeze without axes")),
        _ => Ok(None),
    }
}

pub(super) fn reduce(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    let since = reduce_axes_input_since(&node.op.op_type);
    if !cx.crosses(since) {
        return Ok(None);
    }
    let Some(v) = ReduceView::of(node, cx.from)? else {
        return Ok(None);
    };
    match v.axes {
        // an empty list reduced every axis, as an absent one did; `noop_with_empty_axes` defaults to 0, which
        // keeps that meaning for an absent input
        IntsArg::Attr(axes) if !axes.is_empty() => {
            let c = cx.ints(node, &axes);
            cx.patch.remove_attr(id, "axes");
            cx.patch.set_input(id, 1, Some(c));
            Ok(Some(format!(
                "axes {axes:?}: attribute -> input (opset {since})"
            )))
        }
        IntsArg::Attr(_) => {
            cx.patch.remove_attr(id, "axes");
            Ok(Some(format!(
                "empty axes attribute removed (reduce all, opset {since})"
            )))
        }
        _ => Ok(None),
    }
}

pub(super) fn split(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    let Some(v) = SplitView::of(node, cx.from)? else {
        return Ok(None);
    };
    let mut done = Vec::new();
    let mut has_split = matches!(v.split, IntsArg::Input(_));
    if cx.crosses(SPLIT_INPUT_SINCE) {
        if let IntsArg::Attr(sizes) = &v.split {
            if sizes.len() != node.outputs.len() {
                return Err(cx.fail(
                    node,
                    format!(
                        "split has {} sizes for {} outputs",
                        sizes.len(),
                        node.outputs.len()
                    ),
                ));
            }
            let c = cx.ints(node, sizes);
            cx.patch.remove_attr(id, "split");
            cx.patch.set_input(id, 1, Some(c));
            has_split = true;
            done.push(format!(
                "split {sizes:?}: attribute -> input (opset {SPLIT_INPUT_SINCE})"
            ));
        }
    }
    if cx.to >= SPLIT_NUM_OUTPUTS_SINCE && !has_split && v.num_outputs.is_none() {
        // opset 18 needs one of `split` / `num_outputs`; equal parts, one per output, as before
        let n = node.outputs.len() as i64;
        cx.patch.set_attr(id, Attribute::int("num_outputs", n));
        done.push(format!("num_outputs={n} (opset {SPLIT_NUM_OUTPUTS_SINCE})"));
    }
    Ok((!done.is_empty()).then(|| done.join("; ")))
}

pub(super) fn slice(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(10) {
        return Ok(None);
    }
    let (Some(starts), Some(ends)) = (node.get_ints("starts")?, node.get_ints("ends")?) else {
        return Err(cx.fail(node, "Slice-1 without starts/ends"));
    };
    let axes = node.get_ints("axes")?;
    let s = cx.ints(node, &starts);
    let e = cx.ints(node, &ends);
    cx.patch.set_input(id, 1, Some(s));
    cx.patch.set_input(id, 2, Some(e));
    if let Some(a) = &axes {
        let a = cx.ints(node, a);
        cx.patch.set_input(id, 3, Some(a));
    }
    for name in ["starts", "ends", "axes"] {
        cx.patch.remove_attr(id, name);
    }
    Ok(Some(
        "starts/ends/axes: attributes -> inputs (opset 10)".into(),
    ))
}

pub(super) fn topk(cx: &mut Cx, id: NodeId, node: &Node) -> Result<Option<String>> {
    if !cx.crosses(10) {
        return Ok(None);
    }
    let Some(k) = node.get_int("k")? else {
        return Err(cx.fail(node, "TopK-1 without k"));
    };
    let c = cx.ints(node, &[k]);
    cx.patch.remove_attr(id, "k");
    cx.patch.set_input(id, 1, Some(c));
    Ok(Some(format!("k={k}: attribute -> input (opset 10)")))
}
