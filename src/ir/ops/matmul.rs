//! `MatMul` (opset 1-13): https://onnx.ai/onnx/operators/onnx__MatMul.html. numpy matmul semantics; no
//! attributes. With a constant 2-D B of shape (K, N) it is a dense layer.

use crate::ir::ids::ValueId;
use crate::ir::node::Node;

#[derive(Clone, Debug, PartialEq)]
pub struct MatMulView {
    pub a: ValueId,
    pub b: ValueId,
}

impl MatMulView {
    pub fn of(node: &Node) -> Option<MatMulView> {
        if !node.op.is("MatMul") {
            return None;
        }
        Some(MatMulView {
            a: node.input(0)?,
            b: node.input(1)?,
        })
    }
}
