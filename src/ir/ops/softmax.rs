//! `Softmax` / `LogSoftmax` / `Hardmax` (opset 1-23): https://onnx.ai/onnx/operators/onnx__Softmax.html.
//! Until opset 12 the input is coerced to 2-D at `axis` (default 1: dims before it flatten to rows, the rest to
//! one row that is normalised); from opset 13 `axis` (default -1) names the one normalised axis.

use crate::error::Result;
use crate::ir::attr::AttrList;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;

pub const SOFTMAX_ONE_AXIS_SINCE: i64 = 13;

#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxView {
    pub x: ValueId,
    pub axis: i64,
    /// True before opset 13: `axis` is where the input is flattened to 2-D, and the trailing block is normalised.
    pub flattens: bool,
}

impl SoftmaxView {
    pub fn of(node: &Node, opset: i64) -> Result<Option<SoftmaxView>> {
        if !["Softmax", "LogSoftmax", "Hardmax"]
            .iter()
            .any(|o| node.op.is(o))
        {
            return Ok(None);
        }
        let Some(x) = node.input(0) else {
            return Ok(None);
        };
        let flattens = opset < SOFTMAX_ONE_AXIS_SINCE;
        let default = if flattens { 1 } else { -1 };
        Ok(Some(SoftmaxView {
            x,
            axis: node.get_int("axis")?.unwrap_or(default),
            flattens,
        }))
    }
}
