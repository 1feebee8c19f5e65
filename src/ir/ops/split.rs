//! `Split` (opset 1-23): https://onnx.ai/onnx/operators/onnx__Split.html. `axis` defaults to 0. The part sizes
//! are the `split` attribute until opset 12, the optional second input from opset 13; absent, the input is
//! split into equal parts, one per output. Opset 18 adds `num_outputs` (required when `split` is absent; the
//! last part may then be smaller).

use crate::error::Result;
use crate::ir::attr::AttrList;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;
use crate::ir::ops::axes::IntsArg;

pub const SPLIT_INPUT_SINCE: i64 = 13;
pub const SPLIT_NUM_OUTPUTS_SINCE: i64 = 18;

#[derive(Clone, Debug, PartialEq)]
pub struct SplitView {
    pub x: ValueId,
    pub axis: i64,
    pub split: IntsArg,
    /// `num_outputs` when the opset has it and the node sets it.
    pub num_outputs: Option<i64>,
}

impl SplitView {
    pub fn of(node: &Node, opset: i64) -> Result<Option<SplitView>> {
        if !node.op.is("Split") {
            return Ok(None);
        }
        let Some(x) = node.input(0) else {
            return Ok(None);
        };
        Ok(Some(SplitView {
            x,
            axis: node.get_int("axis")?.unwrap_or(0),
            split: IntsArg::read(node, opset, SPLIT_INPUT_SINCE, "split", 1)?,
            num_outputs: if opset >= SPLIT_NUM_OUTPUTS_SINCE {
                node.get_int("num_outputs")?
            } else {
                None
            },
        }))
    }
}
