//! What the graph says about a value without running it: its rank and element type, from declarations
//! (graph inputs/outputs, value_info), constants, or a producer whose output follows from its inputs.

use crate::ir::{AttrList, DataType, Graph, ValueId};
use crate::passes::convert::{declared_dims, declared_dtype};

/// Ops whose first output has the rank and element type of their first input.
const SAME_AS_INPUT: [&str; 37] = [
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sqrt",
    "Erf",
    "Identity",
    "Clip",
    "Softmax",
    "LogSoftmax",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Softplus",
    "Gelu",
    "Dropout",
    "BatchNormalization",
    "LayerNormalization",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Transpose",
    "Floor",
    "Ceil",
    "Reciprocal",
    "PRelu",
    "InstanceNormalization",
    "Pad",
    "Tile",
];

/// Element-wise ops with numpy broadcasting: output rank is the largest input rank.
const BROADCAST: [&str; 9] = [
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
];
const COMPARE: [&str; 6] = [
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
];

pub(crate) fn known_dtype(g: &Graph, v: ValueId, depth: usize) -> Option<DataType> {
    if let Some(d) = declared_dtype(g, v) {
        return Some(d);
    }
    if depth > 64 {
        return None;
    }
    let (_, n) = g.producer(v)?;
    if !n.op.is_default_domain() || n.output(0) != Some(v) {
        return None;
    }
    let op = n.op.op_type.as_str();
    let input = |i: usize| n.input(i).and_then(|x| known_dtype(g, x, depth + 1));
    // element type of the first input, whatever happens to the shape
    const KEEP_TYPE: &[&str] = &[
        "MatMul",
        "Gemm",
        "Flatten",
        "Reshape",
        "Concat",
        "Squeeze",
        "Unsqueeze",
        "Resize",
        "Upsample",
        "Gather",
        "GatherElements",
        "GatherND",
        "Slice",
        "Split",
        "Expand",
    ];
    if SAME_AS_INPUT.contains(&op) || BROADCAST.contains(&op) || KEEP_TYPE.contains(&op) {
        return input(0);
    }
    match op {
        "Cast" => n.get_int("to").ok()?.map(|t| DataType(t as i32)),
        "Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" => Some(DataType::INT64),
        "Where" => input(1),
        _ if COMPARE.contains(&op) || op == "Or" || op == "Not" || op == "IsNaN" => {
            Some(DataType::BOOL)
        }
        _ => None,
    }
}

/// The rank of `v` when the graph says it: a declared shape, a constant, or a producer whose output rank
/// follows from its inputs' (element-wise ops, MatMul, Gemm, Flatten, Reshape to a constant shape, ...).
pub(crate) fn known_rank(g: &Graph, v: ValueId, depth: usize) -> Option<i64> {
    if let Some(d) = declared_dims(g, v) {
        return Some(d.len() as i64);
    }
    if depth > 64 {
        return None;
    }
    let (_, n) = g.producer(v)?;
    let op = n.op.op_type.as_str();
    if !n.op.is_default_domain() || n.output(0) != Some(v) {
        return None;
    }
    let input_rank = |i: usize| n.input(i).and_then(|x| known_rank(g, x, depth + 1));
    match op {
        "Relu"
        | "Sigmoid"
        | "Tanh"
        | "Exp"
        | "Log"
        | "Neg"
        | "Abs"
        | "Sqrt"
        | "Erf"
        | "Identity"
        | "Cast"
        | "Clip"
        | "Softmax"
        | "LogSoftmax"
        | "HardSigmoid"
        | "HardSwish"
        | "LeakyRelu"
        | "Elu"
        | "Selu"
        | "Softplus"
        | "Gelu"
        | "Dropout"
        | "BatchNormalization"
        | "LayerNormalization"
        | "Conv"
        | "ConvTranspose"
        | "MaxPool"
        | "AveragePool"
        | "GlobalAveragePool"
        | "GlobalMaxPool"
        | "Transpose"
        | "Floor"
        | "Ceil"
        | "Reciprocal"
        | "Not"
        | "PRelu"
        | "InstanceNormalization"
        | "Resize"
        | "Pad"
        | "Tile" => input_rank(0),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Where" | "Equal" | "Less" | "Greater" | "And"
        | "Or" | "Max" | "Min" | "Sum" | "Mean" => {
            let mut r = 0;
            for i in 0..n.inputs.len() {
                r = r.max(input_rank(i)?);
            }
            Some(r)
        }
        "MatMul" => {
            let (a, b) = (input_rank(0)?, input_rank(1)?);
            match (a, b) {
                (1, 1) => Some(0),
                (1, b) => Some(b - 1),
                (a, 1) => Some(a - 1),
                (a, b) => Some(a.max(b)),
            }
        }
        "Gemm" | "Flatten" => Some(2),
        "Concat" => input_rank(0),
        "Reshape" => {
            let s = g.constant(n.input(1)?)?;
            (s.dims.len() == 1).then(|| s.dims[0])
        }
        "Unsqueeze" | "Squeeze" => {
            let r = input_rank(0)?;
            let k = match n.get_ints("axes").ok()? {
                Some(a) => a.len() as i64,
                None => g.constant(n.input(1)?)?.numel().ok()? as i64,
            };
            Some(if op == "Unsqueeze" { r + k } else { r - k })
        }
        _ => None,
    }
}
