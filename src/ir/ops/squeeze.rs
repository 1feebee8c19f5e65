//! `Squeeze` / `Unsqueeze` (opset 1-23): https://onnx.ai/onnx/operators/onnx__Squeeze.html. Until opset 12
//! `axes` is an attribute (optional for Squeeze: absent squeezes every size-1 axis; required for Unsqueeze);
//! from opset 13 it is the second input (int64 1-D), optional for Squeeze.

use crate::error::Result;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;
use crate::ir::ops::axes::IntsArg;

/// The opset that moved `axes` from attribute to input.
pub const SQUEEZE_AXES_INPUT_SINCE: i64 = 13;

#[derive(Clone, Debug, PartialEq)]
pub struct SqueezeView {
    /// True for Unsqueeze.
    pub unsqueeze: bool,
    pub x: ValueId,
    pub axes: IntsArg,
}

impl SqueezeView {
    pub fn of(node: &Node, opset: i64) -> Result<Option<SqueezeView>> {
        let unsqueeze = node.op.is("Unsqueeze");
        if !unsqueeze && !node.op.is("Squeeze") {
            return Ok(None);
        }
        let Some(x) = node.input(0) else {
            return Ok(None);
        };
        Ok(Some(SqueezeView {
            unsqueeze,
            x,
            axes: IntsArg::read(node, opset, SQUEEZE_AXES_INPUT_SINCE, "axes", 1)?,
        }))
    }
}
