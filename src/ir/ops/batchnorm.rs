//! `BatchNormalization` (opset 1-15): https://onnx.ai/onnx/operators/onnx__BatchNormalization.html.
//! Inputs X, scale (gamma), B (beta), input_mean, input_var; defaults epsilon 1e-5, momentum 0.9,
//! training_mode 0 (opset 14+). Before opset 14 training mode is told by the outputs: more than `Y` means
//! training. Opsets 7-8 have `spatial` (default 1; 0 normalises per element with (C, D1, ...) statistics), opset
//! < 7 `is_test`, opset < 6 `consumed_inputs`. Opset 14 dropped the saved_mean / saved_var outputs (4 and 5).

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
    /// False only for opset < 9 with `spatial = 0`.
    pub spatial: bool,
    pub momentum: f32,
}

impl BatchNormView {
    pub fn of(node: &Node, opset: i64) -> Result<Option<BatchNormView>> {
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
            training_mode: if opset >= 14 {
                node.get_int("training_mode")?.unwrap_or(0) != 0
            } else {
                node.outputs.iter().skip(1).any(|o| o.is_some())
            },
            spatial: opset >= 9 || node.get_int("spatial")?.unwrap_or(1) != 0,
            momentum: node.get_float("momentum")?.unwrap_or(0.9),
        }))
    }
}
