//! What the graph says about a value without running it: its rank and element type, from declarations
//! (graph inputs/outputs, value_info), constants, or a producer whose output follows from its inputs. Each
//! query memoises per value, so a deep network with residual branches is walked once, not once per path.

use std::collections::HashMap;

use crate::ir::{AttrList, DataType, Graph, Node, ValueId};
use crate::passes::convert::{declared_dims, declared_dtype};

/// Ops whose first output has the rank and the element type of their first input.
const SAME_AS_INPUT: &[&str] = &[
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
    "Hardmax",
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
    "Resize",
    "Upsample",
];

/// Ops whose first output has the element type (not the rank) of their first input.
const SAME_TYPE: &[&str] = &[
    "MatMul",
    "Gemm",
    "Flatten",
    "Reshape",
    "Concat",
    "Squeeze",
    "Unsqueeze",
    "Gather",
    "GatherElements",
    "GatherND",
    "Slice",
    "Split",
    "Expand",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceSum",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "GlobalLpPool",
    "LpPool",
    "LRN",
    "GroupNormalization",
    "MeanVarianceNormalization",
    "LpNormalization",
    "DepthToSpace",
    "SpaceToDepth",
    "Einsum",
    "TopK",
    "Compress",
    "CumSum",
    "Trilu",
    "ScatterND",
    "ScatterElements",
    "GridSample",
    "RoiAlign",
    "Sin",
    "Cos",
    "Round",
    "Sign",
    "Softsign",
    "Mish",
    "Celu",
    "ThresholdedRelu",
    "Shrink",
    "LSTM",
    "GRU",
    "RNN",
];

/// Element-wise ops with numpy broadcasting: the output rank is the largest input rank.
const BROADCAST: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
];
const COMPARE: &[&str] = &[
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
];

/// Deepest producer chain followed (the stack stays small; past it the answer is "unknown").
const MAX_DEPTH: usize = 512;

/// The standard-domain producer of `v` when `v` is its first output.
fn first_output_producer(g: &Graph, v: ValueId) -> Option<&Node> {
    let (_, n) = g.producer(v)?;
    (n.op.is_default_domain() && n.output(0) == Some(v)).then_some(n)
}

pub(crate) fn known_dtype(g: &Graph, v: ValueId) -> Option<DataType> {
    dtype_memo(g, v, 0, &mut HashMap::new())
}

fn dtype_memo(
    g: &Graph,
    v: ValueId,
    depth: usize,
    memo: &mut HashMap<ValueId, Option<DataType>>,
) -> Option<DataType> {
    if let Some(d) = memo.get(&v) {
        return *d;
    }
    let d = declared_dtype(g, v).or_else(|| {
        let n = first_output_producer(g, v)?;
        if depth > MAX_DEPTH {
            return None;
        }
        let op = n.op.op_type.as_str();
        let mut input = |i: usize| n.input(i).and_then(|x| dtype_memo(g, x, depth + 1, memo));
        if SAME_AS_INPUT.contains(&op) || SAME_TYPE.contains(&op) || BROADCAST.contains(&op) {
            return input(0);
        }
        match op {
            "Cast" => n.get_int("to").ok()?.map(|t| DataType(t as i32)),
            // the scale's type (float32 unless a float16 / bfloat16 scale says otherwise)
            "DequantizeLinear" => input(1),
            "Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" => Some(DataType::INT64),
            "Where" => input(1),
            "Not" | "IsNaN" | "IsInf" => Some(DataType::BOOL),
            _ if COMPARE.contains(&op) => Some(DataType::BOOL),
            _ => None,
        }
    });
    memo.insert(v, d);
    d
}

/// The rank of `v` when the graph says it: a declared shape, a constant, or a producer whose output rank
/// follows from its inputs' (element-wise ops, MatMul, Gemm, Flatten, Reshape to a constant shape, ...).
pub(crate) fn known_rank(g: &Graph, v: ValueId) -> Option<i64> {
    rank_memo(g, v, 0, &mut HashMap::new())
}

fn rank_memo(
    g: &Graph,
    v: ValueId,
    depth: usize,
    memo: &mut HashMap<ValueId, Option<i64>>,
) -> Option<i64> {
    if let Some(r) = memo.get(&v) {
        return *r;
    }
    let r = declared_dims(g, v).map(|d| d.len() as i64).or_else(|| {
        let n = first_output_producer(g, v)?;
        if depth > MAX_DEPTH {
            return None;
        }
        let op = n.op.op_type.as_str();
        let mut input = |i: usize| n.input(i).and_then(|x| rank_memo(g, x, depth + 1, memo));
        if SAME_AS_INPUT.contains(&op) || op == "Cast" || op == "Not" {
            return input(0);
        }
        if BROADCAST.contains(&op) || COMPARE.contains(&op) || op == "Where" {
            let mut r = 0;
            for i in 0..n.inputs.len() {
                r = r.max(input(i)?);
            }
            return Some(r);
        }
        match op {
            "MatMul" => match (input(0)?, input(1)?) {
                (1, 1) => Some(0),
                (1, b) => Some(b - 1),
                (a, 1) => Some(a - 1),
                (a, b) => Some(a.max(b)),
            },
            "Gemm" | "Flatten" => Some(2),
            "Concat" => input(0),
            "Reshape" => {
                let s = g.constant(n.input(1)?)?;
                (s.dims.len() == 1).then(|| s.dims[0])
            }
            "Unsqueeze" | "Squeeze" => {
                let r = input(0)?;
                let k = match n.get_ints("axes").ok()? {
                    Some(a) => a.len() as i64,
                    None => g.constant(n.input(1)?)?.numel().ok()? as i64,
                };
                Some(if op == "Unsqueeze" { r + k } else { r - k })
            }
            _ => None,
        }
    });
    memo.insert(v, r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::GraphBuilder;

    /// 200 residual blocks: every Add reads the previous block twice over. Without memoisation this is 2^200
    /// walks; with it, one.
    #[test]
    fn residual_chains_are_walked_once() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["1", "8"]);
        let mut h = b.node("Relu", &[x], vec![], 1)[0];
        for _ in 0..200 {
            let r = b.node("Relu", &[h], vec![], 1)[0];
            h = b.node("Add", &[h, r], vec![], 1)[0];
        }
        let g = b.build();
        assert_eq!(known_rank(&g, h), Some(2));
        assert_eq!(known_dtype(&g, h), Some(DataType::FLOAT));
    }
}
