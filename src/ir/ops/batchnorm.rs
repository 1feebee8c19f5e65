//! `BatchNormalization` (opset 1-15): https://onnx.ai/onnx/operators/onnx__BatchNormalization.html.
//! Inputs X, scale (gamma), B (beta), input_mean, input_var; defaults epsilon 1e-5, momentum 0.9,
//! training_mode 0 (opset 14+). Opset < 7 had `spatial` and `is_test`; opset < 6 `consumed_inputs`.

use crate::error::Result;
use crate::ir::attr::AttrList;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;

#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormView {
    pub x: ValueId,
    pub scale: ValueId,
    pub bias: ValueId,
    pub mean: ValueId,
    pub var: ValueId,
    pub epsilon: f32,
    pub training_mode: bool,
}

impl BatchNormView {
    pub fn of(node: &Node) -> Result<Option<BatchNormView>> {
        if !node.op.is("BatchNormalization") {
            return Ok(None);
        }
        let inputs: Option<Vec<ValueId>> = (0..5).map(|i| node.input(i)).collect();
        let Some(i) = inputs else { return Ok(None) };
        Ok(Some(BatchNormView {
            x: i[0],
            scale: i[1],
            bias: i[2],
            mean: i[3],
            var: i[4],
            epsilon: node.get_float("epsilon")?.unwrap_or(1e-5),
            training_mode: node.get_int("training_mode")?.unwrap_or(0) != 0,
        }))
    }
}
