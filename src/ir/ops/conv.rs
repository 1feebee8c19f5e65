//! `Conv` (opset 1-22): https://onnx.ai/onnx/operators/onnx__Conv.html. Defaults: group 1, strides and
//! dilations 1 per spatial axis, pads 0, auto_pad NOTSET. Weight is (M, C/group, k...), bias (M).

use crate::error::Result;
use crate::ir::attr::AttrList;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;

#[derive(Clone, Debug, PartialEq)]
pub struct ConvView {
    pub x: ValueId,
    pub w: ValueId,
    pub b: Option<ValueId>,
    pub group: i64,
    pub strides: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub kernel_shape: Option<Vec<i64>>,
    pub auto_pad: String,
}

impl ConvView {
    /// `None` when the node is not a standard-domain Conv with its two required inputs.
    pub fn of(node: &Node) -> Result<Option<ConvView>> {
        if !node.op.is("Conv") {
            return Ok(None);
        }
        let (Some(x), Some(w)) = (node.input(0), node.input(1)) else {
            return Ok(None);
        };
        Ok(Some(ConvView {
            x,
            w,
            b: node.input(2),
            group: node.get_int("group")?.unwrap_or(1),
            strides: node.get_ints("strides")?,
            dilations: node.get_ints("dilations")?,
            pads: node.get_ints("pads")?,
            kernel_shape: node.get_ints("kernel_shape")?,
            auto_pad: node
                .get_string("auto_pad")?
                .unwrap_or_else(|| "NOTSET".into()),
        }))
    }
}
