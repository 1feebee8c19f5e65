//! Rewiring of `lowrank`: which nodes qualify (and their weight as a K x N matrix `M` with `y = x M`), and
//! how a node becomes two once `M ~ P Q` (P: K x r, Q: r x N).
//!
//! - MatMul `Y = X W` (W constant and 2-D, X of any rank >= 1): `T = MatMul(X, P)` is added and the node
//!   becomes `MatMul(T, Q)`, so its output keeps its name.
//! - Gemm `Y = alpha A' B' + beta C` (B constant; B' = B^T when transB): `T = Gemm(A, P')` with the node's
//!   transA and transB (`P' = P^T` when transB), alpha 1, no C; the node becomes `Gemm(T, Q')` with transA 0,
//!   its own transB, alpha, beta and C: `alpha (A' P) Q + beta C` equals the original at full rank.
//! - Conv with a 1x1 kernel (group 1, strides 1, no padding): W (M, C, 1...) is `y = W x` per pixel, so
//!   `M = W^T`; `T = Conv(X, P^T)` (r output channels, no bias) and the node reads `T` and `Q^T` (M, r, 1...)
//!   with its bias.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::ir::ops::{ConvView, GemmView, MatMulView};
use crate::ir::{AttrList, Attribute, DataType, Graph, NodeId, OpKey, Patch, Tensor};
use crate::passes::fold::weights::{self, OuterConstants};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    MatMul,
    /// Gemm with its transB.
    Gemm {
        trans_b: bool,
    },
    /// 1x1 Conv with this many spatial dims.
    Conv {
        spatial: usize,
    },
}

/// A node's weight as the K x N matrix `M` of `y = x M`.
pub struct Matrix {
    pub kind: Kind,
    pub k: usize,
    pub n: usize,
    /// Row-major K x N.
    pub data: Vec<f64>,
    pub dtype: DataType,
    /// The name of input X, when its rows (last axis) are the K-vectors the weight multiplies (MatMul, Gemm
    /// without transA): the data-aware mode collects their second moments.
    pub rows_input: Option<String>,
}

fn float_weight(
    g: &Graph,
    outer: &OuterConstants,
    node: NodeId,
    slot: usize,
) -> Result<std::result::Result<Tensor, String>> {
    let n = g.node(node).expect("live node");
    let Some(v) = n.input(slot) else {
        return Ok(Err("it has no weight input".into()));
    };
    let Some(t) = weights::read(g, outer, v) else {
        return Ok(Err(format!(
            "its weight '{}' is not a constant",
            g.value_name(v)
        )));
    };
    if !matches!(
        t.dtype(),
        DataType::FLOAT | DataType::DOUBLE | DataType::FLOAT16 | DataType::BFLOAT16
    ) {
        return Ok(Err(format!(
            "its weight '{}' is {} (float weights only)",
            g.value_name(v),
            t.dtype().name()
        )));
    }
    Ok(Ok(t))
}

macro_rules! try_rule {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        }
    };
}

/// The weight matrix of a candidate node; `Ok(Err(why))` when the node does not qualify, `Ok(Ok(None))`
/// when it is not a kind this pass looks at.
pub fn matrix_of(
    g: &Graph,
    outer: &OuterConstants,
    id: NodeId,
    ops: &[String],
) -> Result<std::result::Result<Option<Matrix>, String>> {
    let node = g.node(id).expect("live node");
    let wanted = |op: &str| ops.iter().any(|o| o == op) && node.op.is(op);
    if wanted("MatMul") {
        if MatMulView::of(node).is_none() {
            return Ok(Ok(None));
        }
        let t = try_rule!(float_weight(g, outer, id, 1));
        if t.dims.len() != 2 {
            return Ok(Err(format!(
                "its weight has rank {} (2-D weights only)",
                t.dims.len()
            )));
        }
        let (k, n) = (t.dims[0] as usize, t.dims[1] as usize);
        return Ok(Ok(Some(Matrix {
            kind: Kind::MatMul,
            k,
            n,
            dtype: t.dtype(),
            data: t.to_f64_vec()?,
            rows_input: Some(g.value_name(node.input(0).expect("view")).to_string()),
        })));
    }
    if wanted("Gemm") {
        let Some(view) = GemmView::of(node)? else {
            return Ok(Ok(None));
        };
        let t = try_rule!(float_weight(g, outer, id, 1));
        if t.dims.len() != 2 {
            return Ok(Err(format!("its weight has rank {}", t.dims.len())));
        }
        let (d0, d1) = (t.dims[0] as usize, t.dims[1] as usize);
        let raw = t.to_f64_vec()?;
        let (k, n, data) = if view.trans_b {
            (d1, d0, transpose(&raw, d0, d1))
        } else {
            (d0, d1, raw)
        };
        return Ok(Ok(Some(Matrix {
            kind: Kind::Gemm {
                trans_b: view.trans_b,
            },
            k,
            n,
            dtype: t.dtype(),
            data,
            rows_input: (!view.trans_a).then(|| g.value_name(view.a).to_string()),
        })));
    }
    if wanted("Conv") {
        let Some(view) = ConvView::of(node)? else {
            return Ok(Ok(None));
        };
        if view.group != 1 {
            return Ok(Err(format!("group is {} (group 1 only)", view.group)));
        }
        if view
            .strides
            .as_ref()
            .is_some_and(|s| s.iter().any(|&x| x != 1))
        {
            return Ok(Err("its strides are not 1".into()));
        }
        if view
            .pads
            .as_ref()
            .is_some_and(|s| s.iter().any(|&x| x != 0))
        {
            return Ok(Err("it pads its input".into()));
        }
        if !matches!(view.auto_pad.as_str(), "NOTSET" | "VALID" | "") {
            return Ok(Err(format!("auto_pad is {}", view.auto_pad)));
        }
        let t = try_rule!(float_weight(g, outer, id, 1));
        if t.dims.len() < 3 || t.dims[2..].iter().any(|&d| d != 1) {
            return Ok(Err(format!(
                "its kernel is not 1x1 (weight dims {:?})",
                t.dims
            )));
        }
        let (m, c) = (t.dims[0] as usize, t.dims[1] as usize);
        let raw = t.to_f64_vec()?;
        return Ok(Ok(Some(Matrix {
            kind: Kind::Conv {
                spatial: t.dims.len() - 2,
            },
            k: c,
            n: m,
            dtype: t.dtype(),
            data: transpose(&raw, m, c),
            rows_input: None,
        })));
    }
    Ok(Ok(None))
}

/// The transpose of a row-major r x c matrix.
pub fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; a.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = a[i * c + j];
        }
    }
    out
}

/// Queue the split of `id` into `p`, with `P` (K x r) and `Q` (r x N) row-major in f64.
#[allow(clippy::too_many_arguments)]
pub fn split(
    g: &Graph,
    p: &mut Patch,
    id: NodeId,
    m: &Matrix,
    r: usize,
    pf: &[f64],
    qf: &[f64],
    freed: &mut BTreeSet<String>,
) -> Result<()> {
    let node = g.node(id).expect("live node");
    let anchor = node.name().to_string();
    let x = node.input(0).expect("checked when collected");
    let w = node.input(1).expect("checked when collected");
    let base = g.value_name(w).to_string();
    let (k, n) = (m.k as i64, m.n as i64);
    let ri = r as i64;
    let store = |dims: Vec<i64>, v: &[f64]| Tensor::from_f64_as("", m.dtype, dims, v);
    let (first_w, second_w, op, attrs): (Tensor, Tensor, &str, Vec<Attribute>) = match m.kind {
        Kind::MatMul => (
            store(vec![k, ri], pf)?,
            store(vec![ri, n], qf)?,
            "MatMul",
            vec![],
        ),
        Kind::Gemm { trans_b } => {
            let trans_a = node.get_int("transA")?.unwrap_or(0);
            let (pw, qw) = if trans_b {
                (
                    store(vec![ri, k], &transpose(pf, m.k, r))?,
                    store(vec![n, ri], &transpose(qf, r, m.n))?,
                )
            } else {
                (store(vec![k, ri], pf)?, store(vec![ri, n], qf)?)
            };
            (
                pw,
                qw,
                "Gemm",
                vec![
                    Attribute::int("transA", trans_a),
                    Attribute::int("transB", trans_b as i64),
                ],
            )
        }
        Kind::Conv { spatial } => {
            let ones = vec![1i64; spatial];
            let mut pd = vec![ri, k];
            pd.extend(&ones);
            let mut qd = vec![n, ri];
            qd.extend(&ones);
            (
                store(pd, &transpose(pf, m.k, r))?,
                store(qd, &transpose(qf, r, m.n))?,
                "Conv",
                vec![Attribute::ints("kernel_shape", ones)],
            )
        }
    };
    let pv = p.add_named_initializer(g, &base, "_lowrank_u", first_w);
    let qv = p.add_named_initializer(g, &base, "_lowrank_v", second_w);
    let t = p.add_node(
        g,
        &anchor,
        OpKey::onnx(op),
        vec![Some(x.into()), Some(pv)],
        attrs,
        1,
    );
    p.set_input(id, 0, Some(t[0].clone()));
    p.set_input(id, 1, Some(qv));
    if matches!(m.kind, Kind::Gemm { .. }) && node.get_int("transA")?.unwrap_or(0) != 0 {
        p.set_attr(id, Attribute::int("transA", 0));
    }
    if matches!(m.kind, Kind::Conv { .. }) && node.get_ints("kernel_shape")?.is_some() {
        let spatial = match m.kind {
            Kind::Conv { spatial } => spatial,
            _ => unreachable!(),
        };
        p.set_attr(id, Attribute::ints("kernel_shape", vec![1; spatial]));
    }
    weights::drop_readers_of(g, p, id, &[w], freed);
    Ok(())
}
