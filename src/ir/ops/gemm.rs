//! `Gemm` (opset 1-13): https://onnx.ai/onnx/operators/onnx__Gemm.html. Y = alpha * A' * B' + beta * C with
//! A' = transpose(A) if transA, B' = transpose(B) if transB. Defaults: alpha 1.0, beta 1.0, transA 0, transB 0.
//! Opset < 7 also had `broadcast`; C became optional in opset 11.

use crate::error::Result;
use crate::ir::attr::AttrList;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;

#[derive(Clone, Debug, PartialEq)]
pub struct GemmView {
    pub a: ValueId,
    pub b: ValueId,
    pub c: Option<ValueId>,
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl GemmView {
    pub fn of(node: &Node) -> Result<Option<GemmView>> {
        if !node.op.is("Gemm") {
            return Ok(None);
        }
        let (Some(a), Some(b)) = (node.input(0), node.input(1)) else {
            return Ok(None);
        };
        Ok(Some(GemmView {
            a,
            b,
            c: node.input(2),
            alpha: node.get_float("alpha")?.unwrap_or(1.0),
            beta: node.get_float("beta")?.unwrap_or(1.0),
            trans_a: node.get_int("transA")?.unwrap_or(0) != 0,
            trans_b: node.get_int("transB")?.unwrap_or(0) != 0,
        }))
    }
}
