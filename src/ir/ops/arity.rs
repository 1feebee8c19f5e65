//! Input/output counts of common standard ops (from the operator specs), checked by `verify`.

use crate::ir::node::Node;

/// (min inputs, max inputs, min outputs, max outputs); `usize::MAX` means variadic.
fn arity(op: &str) -> Option<(usize, usize, usize, usize)> {
    const V: usize = usize::MAX;
    Some(match op {
        "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Neg" | "Abs" | "Sqrt" | "Erf"
        | "Identity" | "Not" | "Flatten" | "GlobalAveragePool" | "GlobalMaxPool" | "Softmax"
        | "LogSoftmax" | "Transpose" | "Shape" | "Floor" | "Ceil" | "Reciprocal"
        | "HardSigmoid" | "LeakyRelu" | "Elu" | "Selu" | "Softplus" | "HardSwish" | "Gelu" => {
            (1, 1, 1, 1)
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "MatMul" | "Equal" | "Less" | "Greater" | "And"
        | "Or" | "PRelu" | "Reshape" | "Expand" | "Gather" => (2, 2, 1, 1),
        "Conv" => (2, 3, 1, 1),
        "ConvTranspose" => (2, 3, 1, 1),
        "Gemm" => (2, 3, 1, 1),
        "BatchNormalization" => (5, 5, 1, 3),
        "QuantizeLinear" | "DequantizeLinear" => (2, 3, 1, 1),
        "Concat" | "Sum" | "Max" | "Min" | "Mean" => (1, V, 1, 1),
        "Split" => (1, 2, 1, V),
        "Constant" => (0, 0, 1, 1),
        "If" => (1, 1, 1, V),
        "Where" => (3, 3, 1, 1),
        "MaxPool" => (1, 1, 1, 2),
        "AveragePool" => (1, 1, 1, 1),
        "Cast" => (1, 1, 1, 1),
        "Clip" => (1, 3, 1, 1),
        "Slice" => (1, 5, 1, 1),
        "Squeeze" | "Unsqueeze" => (1, 2, 1, 1),
        "Resize" => (1, 4, 1, 1),
        "LayerNormalization" => (2, 3, 1, 3),
        _ => return None,
    })
}

/// `Some(message)` when a standard op has an illegal number of inputs or outputs (trailing omitted optional
/// inputs count as absent).
pub fn check_arity(node: &Node) -> Option<String> {
    if !node.op.is_default_domain() {
        return None;
    }
    let (imin, imax, omin, omax) = arity(&node.op.op_type)?;
    let n_in = node.inputs.len();
    let n_out = node.outputs.len();
    let present_in = node
        .inputs
        .iter()
        .rposition(|v| v.is_some())
        .map_or(0, |p| p + 1);
    if n_in < imin || present_in > imax {
        return Some(format!(
            "has {n_in} inputs, the spec allows {imin}..={}",
            fmt_max(imax)
        ));
    }
    if n_out < omin || n_out > omax {
        return Some(format!(
            "has {n_out} outputs, the spec allows {omin}..={}",
            fmt_max(omax)
        ));
    }
    None
}

fn fmt_max(m: usize) -> String {
    if m == usize::MAX {
        "N".into()
    } else {
        m.to_string()
    }
}
