//! `Reduce*` (ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
//! ReduceLogSumExp, ReduceSumSquare): https://onnx.ai/onnx/operators/onnx__ReduceSum.html. `axes` is an
//! attribute until opset 12 for ReduceSum and 17 for the others, then an optional int64 input together with
//! `noop_with_empty_axes` (default 0: no axes reduces all). `keepdims` defaults to 1 at every opset.

use crate::error::Result;
use crate::ir::attr::AttrList;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;
use crate::ir::ops::axes::IntsArg;

pub const REDUCE_OPS: [&str; 10] = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

/// The opset from which `op` (one of `REDUCE_OPS`) takes `axes` as an input.
pub fn reduce_axes_input_since(op: &str) -> i64 {
    if op == "ReduceSum" {
        13
    } else {
        18
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReduceView {
    pub x: ValueId,
    pub axes: IntsArg,
    pub keepdims: bool,
    /// Only meaningful once `axes` is an input; 0 (reduce all) before.
    pub noop_with_empty_axes: bool,
}

impl ReduceView {
    pub fn of(node: &Node, opset: i64) -> Result<Option<ReduceView>> {
        let Some(op) = REDUCE_OPS.iter().find(|o| node.op.is(o)) else {
            return Ok(None);
        };
        let Some(x) = node.input(0) else {
            return Ok(None);
        };
        let since = reduce_axes_input_since(op);
        Ok(Some(ReduceView {
            x,
            axes: IntsArg::read(node, opset, since, "axes", 1)?,
            keepdims: node.get_int("keepdims")?.unwrap_or(1) != 0,
            noop_with_empty_axes: opset >= since
                && node.get_int("noop_with_empty_axes")?.unwrap_or(0) != 0,
        }))
    }
}
