//! `QuantizeLinear` / `DequantizeLinear` (opset 10-23): https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html.
//! Inputs x, y_scale / x_scale, optional zero point. `axis` (opset 13+, default 1) selects per-axis scales;
//! opsets 10-12 have no `axis` and only per-tensor (scalar) scales, so the view gives `axis: None` there;
//! `block_size` (opset 21+, default 0 = off) blocked quantization; `saturate` (opset 19+, float8 only, default 1);
//! `output_dtype` (opset 21+ on QuantizeLinear, 23+ on DequantizeLinear; default 0 = from the zero point, else uint8).

use crate::error::Result;
use crate::ir::attr::AttrList;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QdqKind {
    Quantize,
    Dequantize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QdqView {
    pub kind: QdqKind,
    pub x: ValueId,
    pub scale: ValueId,
    pub zero_point: Option<ValueId>,
    /// `None` before opset 13 (per-tensor only); from 13 the attribute or its default 1.
    pub axis: Option<i64>,
    pub block_size: i64,
    pub output_dtype: i64,
}

impl QdqView {
    pub fn of(node: &Node, opset: i64) -> Result<Option<QdqView>> {
        let kind = if node.op.is("QuantizeLinear") {
            QdqKind::Quantize
        } else if node.op.is("DequantizeLinear") {
            QdqKind::Dequantize
        } else {
            return Ok(None);
        };
        let (Some(x), Some(scale)) = (node.input(0), node.input(1)) else {
            return Ok(None);
        };
        Ok(Some(QdqView {
            kind,
            x,
            scale,
            zero_point: node.input(2),
            axis: if opset >= 13 {
                Some(node.get_int("axis")?.unwrap_or(1))
            } else {
                None
            },
            block_size: if opset >= 21 {
                node.get_int("block_size")?.unwrap_or(0)
            } else {
                0
            },
            output_dtype: if opset >= 21 {
                node.get_int("output_dtype")?.unwrap_or(0)
            } else {
                0
            },
        }))
    }
}
