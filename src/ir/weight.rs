//! Weights wherever they live: an initializer, a sparse initializer, or a `Constant` node in any of its value
//! forms, in the graph itself or in an enclosing graph of an If/Loop/Scan body. `Graph::weight` (local) and
//! `ScopeChain::weight` (through enclosing graphs) find a `WeightRef`; `Graph::read_weight` reads it and
//! `Patch::replace_weight` / `Patch::remove_weight` change it, applied with `Graph::apply_at(&w.path, patch)`
//! from the root the reference was found from.

use std::borrow::Cow;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ir::attr::{AttrList, AttrType, Attribute};
use crate::ir::graph::Graph;
use crate::ir::ids::{NodeId, ValueId};
use crate::ir::node::Node;
use crate::ir::tensor::{DataType, SparseTensor, Tensor, TensorData};
use crate::ir::value::ValueDef;
use crate::ir::walk::GraphPath;

/// Which attribute of a `Constant` node holds its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConstantForm {
    Value,
    SparseValue,
    ValueFloat,
    ValueFloats,
    ValueInt,
    ValueInts,
    ValueString,
    ValueStrings,
}

impl ConstantForm {
    pub fn attr_name(self) -> &'static str {
        match self {
            ConstantForm::Value => "value",
            ConstantForm::SparseValue => "sparse_value",
            ConstantForm::ValueFloat => "value_float",
            ConstantForm::ValueFloats => "value_floats",
            ConstantForm::ValueInt => "value_int",
            ConstantForm::ValueInts => "value_ints",
            ConstantForm::ValueString => "value_string",
            ConstantForm::ValueStrings => "value_strings",
        }
    }

    fn from_attr(name: &str) -> Option<ConstantForm> {
        Some(match name {
            "value" => ConstantForm::Value,
            "sparse_value" => ConstantForm::SparseValue,
            "value_float" => ConstantForm::ValueFloat,
            "value_floats" => ConstantForm::ValueFloats,
            "value_int" => ConstantForm::ValueInt,
            "value_ints" => ConstantForm::ValueInts,
            "value_string" => ConstantForm::ValueString,
            "value_strings" => ConstantForm::ValueStrings,
            _ => return None,
        })
    }

    /// The form of a standard `Constant` node with exactly one value attribute.
    pub fn of(node: &Node) -> Option<ConstantForm> {
        if !node.op.is("Constant") || node.attrs.len() != 1 {
            return None;
        }
        ConstantForm::from_attr(&node.attrs[0].name)
    }
}

/// How a weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightStorage {
    Initializer,
    SparseInitializer,
    Constant { node: NodeId, form: ConstantForm },
}

/// Where a weight lives: the graph (a path from the root it was found from), its value there and its storage.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightRef {
    pub path: GraphPath,
    pub value: ValueId,
    pub name: String,
    pub storage: WeightStorage,
}

impl Graph {
    /// The weight behind `v` when this graph defines it as a constant (an initializer that is not also a graph
    /// input, a sparse initializer, or a `Constant` node output). The path is empty (this graph).
    pub fn weight(&self, v: ValueId) -> Option<WeightRef> {
        let value = self.value(v);
        let storage = match value.def {
            ValueDef::Initializer if !self.inputs().iter().any(|io| io.value == v) => {
                WeightStorage::Initializer
            }
            ValueDef::SparseInitializer if !self.inputs().iter().any(|io| io.value == v) => {
                WeightStorage::SparseInitializer
            }
            ValueDef::Node(n, 0) => WeightStorage::Constant {
                node: n,
                form: ConstantForm::of(self.node(n)?)?,
            },
            _ => return None,
        };
        Some(WeightRef {
            path: GraphPath::default(),
            value: v,
            name: value.name.clone(),
            storage,
        })
    }

    /// Read a weight found from this graph (the root of `w.path`), whatever its storage; sparse forms are
    /// densified. An error names the weight when the reference is stale or the stored data is unreadable.
    pub fn read_weight(&self, w: &WeightRef) -> Result<Cow<'_, Tensor>> {
        let stale = |why: &str| Error::Pass {
            pass: "read-weight".into(),
            msg: format!("weight '{}': {why}", w.name),
        };
        let g = self
            .subgraph_at(&w.path)
            .ok_or_else(|| stale("its graph path does not exist"))?;
        if w.value.index() >= g.value_count() || g.value_name(w.value) != w.name {
            return Err(stale("no such value in its graph"));
        }
        match w.storage {
            WeightStorage::Initializer => g
                .value(w.value)
                .init
                .as_ref()
                .map(Cow::Borrowed)
                .ok_or_else(|| stale("is not an initializer")),
            WeightStorage::SparseInitializer => {
                let s = sparse_initializer(g, &w.name)
                    .ok_or_else(|| stale("is not a sparse initializer"))?;
                densify(s, &w.name).map(Cow::Owned)
            }
            WeightStorage::Constant { node, .. } => {
                let n = g
                    .node(node)
                    .ok_or_else(|| stale("its Constant node was erased"))?;
                constant_node_tensor(n, &w.name)?
                    .ok_or_else(|| stale("is not a Constant node value"))
            }
        }
    }
}

pub(crate) fn sparse_initializer<'a>(g: &'a Graph, name: &str) -> Option<&'a SparseTensor> {
    g.sparse_initializers
        .iter()
        .find(|s| s.values.as_ref().and_then(|v| v.name.as_deref()) == Some(name))
}

/// The tensor a `Constant` node produces (named `name`), from whichever value attribute it carries; `Ok(None)`
/// for a node that is not a standard single-attribute `Constant`.
pub(crate) fn constant_node_tensor<'a>(
    node: &'a Node,
    name: &str,
) -> Result<Option<Cow<'a, Tensor>>> {
    let Some(form) = ConstantForm::of(node) else {
        return Ok(None);
    };
    let named = |mut t: Tensor| {
        t.name = Some(name.to_string());
        Cow::Owned(t)
    };
    let missing = || {
        Error::invalid(
            format!("Constant node '{}'", node.name()),
            format!("attribute '{}' has no value", form.attr_name()),
        )
    };
    let a = form.attr_name();
    Ok(Some(match form {
        ConstantForm::Value => Cow::Borrowed(node.get_tensor(a)?.ok_or_else(missing)?),
        ConstantForm::SparseValue => {
            let attr = node.attr(a).ok_or_else(missing)?;
            if attr.kind() != Some(AttrType::SparseTensor) {
                return Err(Error::invalid(
                    format!("Constant node '{}'", node.name()),
                    "attribute 'sparse_value' is not a sparse tensor",
                ));
            }
            let s = attr.sparse_tensor.as_ref().ok_or_else(missing)?;
            named(densify(s, name)?)
        }
        ConstantForm::ValueFloat => named(Tensor::from_f32(
            "",
            vec![],
            &[node.get_float(a)?.ok_or_else(missing)?],
        )),
        ConstantForm::ValueFloats => {
            let v = node.get_floats(a)?.ok_or_else(missing)?;
            named(Tensor::from_f32("", vec![v.len() as i64], &v))
        }
        ConstantForm::ValueInt => named(Tensor::from_i64(
            "",
            vec![],
            &[node.get_int(a)?.ok_or_else(missing)?],
        )),
        ConstantForm::ValueInts => {
            let v = node.get_ints(a)?.ok_or_else(missing)?;
            named(Tensor::from_i64("", vec![v.len() as i64], &v))
        }
        ConstantForm::ValueString => {
            let attr = node.attr(a).ok_or_else(missing)?;
            let s = attr.s.clone().ok_or_else(missing)?;
            named(string_tensor(vec![], vec![s]))
        }
        ConstantForm::ValueStrings => {
            let attr = node.attr(a).ok_or_else(missing)?;
            let v = attr.strings.clone();
            named(string_tensor(vec![v.len() as i64], v))
        }
    }))
}

fn string_tensor(dims: Vec<i64>, v: Vec<Bytes>) -> Tensor {
    Tensor {
        data: TensorData::String(v),
        ..Tensor::from_raw("", DataType::STRING, dims, Bytes::new())
    }
}

/// The new value attribute of a `Constant` node that held `form` and now holds `t`: the same form when `t` fits
/// it (a float32 scalar for `value_float`, a 1-D int64 for `value_ints`, ...), else `value`.
pub(crate) fn constant_attr(form: ConstantForm, mut t: Tensor) -> Result<Attribute> {
    let dt = t.dtype();
    let rank = t.dims.len();
    let a = form.attr_name();
    let scalar = |v: Vec<f32>| {
        v.first()
            .copied()
            .ok_or_else(|| Error::invalid("Constant value", "scalar tensor without data"))
    };
    let scalar_i = |v: Vec<i64>| {
        v.first()
            .copied()
            .ok_or_else(|| Error::invalid("Constant value", "scalar tensor without data"))
    };
    Ok(match form {
        ConstantForm::ValueFloat if dt == DataType::FLOAT && rank == 0 => {
            Attribute::float(a, scalar(t.to_f32_vec()?)?)
        }
        ConstantForm::ValueFloats if dt == DataType::FLOAT && rank == 1 => {
            Attribute::floats(a, t.to_f32_vec()?)
        }
        ConstantForm::ValueInt if dt == DataType::INT64 && rank == 0 => {
            Attribute::int(a, scalar_i(t.to_i64_vec()?)?)
        }
        ConstantForm::ValueInts if dt == DataType::INT64 && rank == 1 => {
            Attribute::ints(a, t.to_i64_vec()?)
        }
        ConstantForm::ValueString | ConstantForm::ValueStrings
            if dt == DataType::STRING
                && rank == usize::from(form == ConstantForm::ValueStrings) =>
        {
            let TensorData::String(v) = &t.data else {
                return Err(Error::invalid(
                    "Constant value",
                    "string tensor without string data",
                ));
            };
            if form == ConstantForm::ValueString {
                Attribute {
                    s: v.first().cloned(),
                    ..Attribute::string(a, "")
                }
            } else {
                Attribute {
                    name: a.to_string(),
                    r#type: Some(AttrType::Strings as i32),
                    strings: v.clone(),
                    ..Default::default()
                }
            }
        }
        _ => {
            t.name = None;
            Attribute::tensor("value", t)
        }
    })
}

/// The dense tensor of a sparse one (zeros where no value is given). Indices are either `[NNZ]` linear indices
/// or `[NNZ, rank]` coordinates; every index is bounds-checked.
pub fn densify(s: &SparseTensor, name: &str) -> Result<Tensor> {
    let bad = |why: String| Error::invalid(format!("sparse tensor '{name}'"), why);
    let values = s
        .values
        .as_ref()
        .ok_or_else(|| bad("has no values".into()))?;
    let dt = values.dtype();
    let elem = match dt.bits() {
        Some(b) if b % 8 == 0 && dt != DataType::STRING => (b / 8) as usize,
        _ => return Err(bad(format!("{} values cannot be densified", dt.name()))),
    };
    let numel = crate::ir::tensor::numel(&s.dims)
        .filter(|n| {
            n.checked_mul(elem as u64)
                .is_some_and(|b| b <= isize::MAX as u64)
        })
        .ok_or_else(|| bad(format!("bad dense shape {:?}", s.dims)))? as usize;
    let raw = values.raw_bytes()?;
    let nnz = raw.len() / elem;
    if raw.len() != nnz * elem || values.numel()? as usize != nnz {
        return Err(bad("values length does not match their shape".into()));
    }
    let idx = match &s.indices {
        Some(i) => i.to_i64_vec()?,
        None if nnz == 0 => Vec::new(),
        None => return Err(bad("has values but no indices".into())),
    };
    let rank = s.dims.len();
    let linear: Vec<i64> = if idx.len() == nnz {
        idx
    } else if rank > 0 && idx.len() == nnz * rank {
        let mut out = Vec::with_capacity(nnz);
        for c in idx.chunks(rank) {
            let mut l: i64 = 0;
            for (k, (x, d)) in c.iter().zip(&s.dims).enumerate() {
                if *x < 0 || x >= d {
                    return Err(bad(format!("coordinate {x} out of range on axis {k}")));
                }
                l = l * d + x;
            }
            out.push(l);
        }
        out
    } else {
        return Err(bad(format!("{} indices for {nnz} values", idx.len())));
    };
    let mut dense = vec![0u8; numel * elem];
    for (k, l) in linear.iter().enumerate() {
        if *l < 0 || *l as usize >= numel {
            return Err(bad(format!("index {l} out of range ({numel} elements)")));
        }
        let at = *l as usize * elem;
        dense[at..at + elem].copy_from_slice(&raw[k * elem..(k + 1) * elem]);
    }
    Ok(Tensor::from_raw(
        name,
        dt,
        s.dims.clone(),
        Bytes::from(dense),
    ))
}

/// The sparse form of a dense tensor, as ONNX Runtime loads it: `values` of the same dtype and `[NNZ]`, and
/// `indices` int64 `[NNZ]` linear indices (the ONNX spec's format (b); format (a), `[NNZ, rank]`
/// coordinates, takes `rank` times the bytes), ascending and unique. An element is left out when its value is
/// zero (`-0.0` too: the sparse default densifies to `+0.0`, which no product or sum tells apart except by the
/// sign of an exact zero). `values` is named `name` (ONNX names a sparse initializer by its `values`); `indices` is unnamed.
/// Only float and integer dtypes of whole bytes are accepted.
pub fn sparsify(t: &Tensor, name: &str) -> Result<SparseTensor> {
    let dt = t.dtype();
    let bad = |why: String| Error::invalid(format!("tensor '{name}'"), why);
    let elem = match dt.bits() {
        Some(b) if b % 8 == 0 && dt != DataType::STRING && dt != DataType::BOOL => (b / 8) as usize,
        _ => {
            return Err(bad(format!(
                "{} tensors cannot be stored sparse",
                dt.name()
            )))
        }
    };
    let raw = t.raw_bytes()?;
    let numel = t.numel()? as usize;
    if raw.len() != numel * elem {
        return Err(bad("data length does not match the shape".into()));
    }
    let zero: Vec<bool> = if dt.is_float() {
        t.to_f64_vec()?.iter().map(|v| *v == 0.0).collect()
    } else {
        raw.chunks(elem)
            .map(|c| c.iter().all(|b| *b == 0))
            .collect()
    };
    let mut values = Vec::new();
    let mut indices: Vec<u8> = Vec::new();
    let mut nnz = 0i64;
    for (k, z) in zero.iter().enumerate() {
        if !z {
            values.extend_from_slice(&raw[k * elem..(k + 1) * elem]);
            indices.extend_from_slice(&(k as i64).to_le_bytes());
            nnz += 1;
        }
    }
    Ok(SparseTensor {
        values: Some(Tensor::from_raw(name, dt, vec![nnz], Bytes::from(values))),
        indices: Some(Tensor {
            name: None,
            ..Tensor::from_raw("", DataType::INT64, vec![nnz], Bytes::from(indices))
        }),
        dims: t.dims.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::GraphBuilder;
    use crate::ir::{Change, OpKey, Patch, ScopeChain};

    /// main: y = Identity(Constant{attr}); returns the graph and the constant's value.
    fn constant_graph(attr: Attribute) -> (Graph, ValueId) {
        let mut b = GraphBuilder::new("g");
        let c = b.named_node("c", OpKey::onnx("Constant"), &[], &["k"], vec![attr])[0];
        let y = b.node("Identity", &[c], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["?"]);
        (b.build(), c)
    }

    fn sparse(dims: Vec<i64>, idx: Vec<i64>, idx_dims: Vec<i64>, vals: &[f32]) -> SparseTensor {
        SparseTensor {
            values: Some(Tensor::from_f32("sp", vec![vals.len() as i64], vals)),
            indices: Some(Tensor::from_i64("", idx_dims, &idx)),
            dims,
        }
    }

    fn strings(name: &str, v: &[&str]) -> Attribute {
        Attribute {
            name: name.into(),
            r#type: Some(AttrType::Strings as i32),
            strings: v
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect(),
            ..Default::default()
        }
    }

    /// Every value form: read, replace with a tensor of the same kind (form kept), replace with one that does
    /// not fit it (becomes `value`).
    #[test]
    fn constant_weight_in_every_value_form() {
        let sparse_attr = Attribute {
            name: "sparse_value".into(),
            r#type: Some(AttrType::SparseTensor as i32),
            sparse_tensor: Some(sparse(vec![2, 3], vec![1, 5], vec![2], &[7.0, -1.0])),
            ..Default::default()
        };
        let cases: Vec<(Attribute, Tensor, Tensor, &str)> = vec![
            (
                Attribute::tensor("value", Tensor::from_f32("", vec![2], &[1.0, 2.0])),
                Tensor::from_f32("", vec![2], &[1.0, 2.0]),
                Tensor::from_f32("", vec![3], &[4.0, 5.0, 6.0]),
                "value",
            ),
            (
                Attribute::float("value_float", 2.5),
                Tensor::from_f32("", vec![], &[2.5]),
                Tensor::from_f32("", vec![], &[-3.0]),
                "value_float",
            ),
            (
                Attribute::floats("value_floats", vec![1.0, -1.0]),
                Tensor::from_f32("", vec![2], &[1.0, -1.0]),
                Tensor::from_f32("", vec![3], &[0.5, 0.25, 0.125]),
                "value_floats",
            ),
            (
                Attribute::int("value_int", 7),
                Tensor::from_i64("", vec![], &[7]),
                Tensor::from_i64("", vec![], &[-9]),
                "value_int",
            ),
            (
                Attribute::ints("value_ints", vec![3, 4]),
                Tensor::from_i64("", vec![2], &[3, 4]),
                Tensor::from_i64("", vec![1], &[11]),
                "value_ints",
            ),
            (
                sparse_attr,
                Tensor::from_f32("", vec![2, 3], &[0.0, 7.0, 0.0, 0.0, 0.0, -1.0]),
                Tensor::from_f32("", vec![2], &[1.0, 1.0]),
                "value", // a dense replacement cannot stay sparse
            ),
        ];
        for (attr, want, new, new_form) in cases {
            let form = attr.name.clone();
            let (mut g, k) = constant_graph(attr);
            let w = g.weight(k).unwrap_or_else(|| panic!("{form}: a weight"));
            assert!(
                matches!(w.storage, WeightStorage::Constant { .. }),
                "{form}"
            );
            let got = g.read_weight(&w).unwrap();
            assert_eq!(got.dtype(), want.dtype(), "{form}");
            assert_eq!(got.dims, want.dims, "{form}");
            assert!(got.same_content(&want), "{form}: {:?}", got.raw_bytes());
            if form != "value" {
                assert_eq!(
                    got.name(),
                    "k",
                    "{form}: a built tensor is named after the value"
                );
            }
            assert!(g.constant(k).unwrap().same_content(&want), "{form}");

            let mut p = Patch::new("t");
            p.replace_weight(&w, new.clone());
            let log = g.apply(p).unwrap();
            g.verify().unwrap();
            assert!(log.changes.contains(&Change::AttrSet {
                node: "c".into(),
                attr: new_form.into()
            }));
            let (_, node) = g.producer(k).unwrap();
            assert_eq!(node.attrs.len(), 1, "{form}");
            assert_eq!(node.attrs[0].name, new_form, "{form}");
            let w2 = g.weight(k).unwrap();
            assert!(g.read_weight(&w2).unwrap().same_content(&new), "{form}");
            // a replacement that does not fit a scalar / 1-D form becomes `value`
            let odd = Tensor::from_f32("", vec![1, 2], &[8.0, 9.0]);
            let mut p = Patch::new("t");
            p.replace_weight(&w2, odd.clone());
            g.apply(p).unwrap();
            let (_, node) = g.producer(k).unwrap();
            assert_eq!(node.attrs[0].name, "value", "{form}");
            assert!(g.constant(k).unwrap().same_content(&odd), "{form}");
            // the old reference is stale now (the form changed) unless it already was `value`
            if form != "value" {
                let mut p = Patch::new("t");
                p.replace_weight(&w, new.clone());
                let e = g.apply(p).unwrap_err().to_string();
                assert!(e.contains("stale reference"), "{form}: {e}");
            }
        }
    }

    #[test]
    fn string_forms_read_and_keep_their_form() {
        let (mut g, k) = constant_graph(strings("value_strings", &["a", "bc"]));
        let w = g.weight(k).unwrap();
        let t = g.read_weight(&w).unwrap().into_owned();
        assert_eq!(t.dims, vec![2]);
        let TensorData::String(v) = &t.data else {
            panic!("string data")
        };
        assert_eq!(v[1].as_ref(), b"bc");
        let new = string_tensor(vec![1], vec![Bytes::from_static(b"z")]);
        let mut p = Patch::new("t");
        p.replace_weight(&w, new);
        g.apply(p).unwrap();
        let (_, node) = g.producer(k).unwrap();
        assert_eq!(node.attrs[0].name, "value_strings");
        assert_eq!(node.attrs[0].strings, vec![Bytes::from_static(b"z")]);
    }

    #[test]
    fn sparse_coordinates_are_bounds_checked() {
        let ok = sparse(vec![2, 3], vec![0, 1, 1, 2], vec![2, 2], &[1.0, 2.0]);
        let d = densify(&ok, "s").unwrap();
        assert_eq!(d.to_f32_vec().unwrap(), [0.0, 1.0, 0.0, 0.0, 0.0, 2.0]);
        let bad = sparse(vec![2, 3], vec![0, 1, 2, 0], vec![2, 2], &[1.0, 2.0]);
        let e = densify(&bad, "s").unwrap_err().to_string();
        assert!(e.contains("out of range on axis 0"), "{e}");
        let bad = sparse(vec![2, 3], vec![0, 6], vec![2], &[1.0, 2.0]);
        assert!(densify(&bad, "s")
            .unwrap_err()
            .to_string()
            .contains("index 6 out of range"));
        let bad = sparse(vec![2, 3], vec![0, 1, 2], vec![3], &[1.0, 2.0]);
        assert!(densify(&bad, "s").is_err());
    }

    /// A Constant weight whose only reader moves to a new initializer is removed in the same patch; removing a
    /// weight that is still read names the reader.
    #[test]
    fn remove_weight_when_its_last_use_goes_away() {
        let (mut g, k) = constant_graph(Attribute::floats("value_floats", vec![1.0, 2.0]));
        let w = g.weight(k).unwrap();
        let mut p = Patch::new("t");
        p.remove_weight(&w);
        let e = g.clone().apply(p).unwrap_err().to_string();
        assert!(e.contains("still used by node 'identity_0'"), "{e}");

        let mut p = Patch::new("t");
        let t = g.read_weight(&w).unwrap().into_owned();
        let new = p.add_named_initializer(&g, "k", "_moved", t);
        p.replace_all_uses(k, new);
        p.remove_weight(&w);
        let log = g.apply(p).unwrap();
        g.verify().unwrap();
        assert!(log
            .changes
            .iter()
            .any(|c| matches!(c, Change::NodeErased { node, .. } if node == "c")));
        let names: Vec<&str> = g.initializers().map(|(v, _)| g.value_name(v)).collect();
        assert_eq!(names, ["k_moved"]);
        assert!(g.value_by_name("k").is_none());
    }

    /// A weight of the main graph read inside a branch is found through the scope chain, with an empty path (it
    /// lives in the chain's root); a Constant inside the branch is found with the branch's path.
    #[test]
    fn weights_resolve_through_the_scope_chain() {
        let mut t = GraphBuilder::new("then_branch");
        let w_out = t.outer("w");
        let kc = t.named_node(
            "kc",
            OpKey::onnx("Constant"),
            &[],
            &["kb"],
            vec![Attribute::float("value_float", 3.0)],
        )[0];
        let ty = t.node("Mul", &[w_out, kc], vec![], 1)[0];
        t.output(ty, DataType::FLOAT, &["2"]);
        let mut e = GraphBuilder::new("else_branch");
        let ew = e.outer("w");
        let ey = e.node("Identity", &[ew], vec![], 1)[0];
        e.output(ey, DataType::FLOAT, &["2"]);
        let mut b = GraphBuilder::new("main");
        let c = b.input("c", DataType::BOOL, &[]);
        b.initializer(Tensor::from_f32("w", vec![2], &[1.0, 2.0]));
        let y = b.named_node(
            "if_0",
            OpKey::onnx("If"),
            &[Some(c)],
            &["y"],
            vec![
                Attribute::graph("then_branch", t.build()),
                Attribute::graph("else_branch", e.build()),
            ],
        )[0];
        b.output(y, DataType::FLOAT, &["2"]);
        let mut g = b.build();
        g.verify().unwrap();

        let (if_id, then) = g.subgraphs().next().unwrap();
        let chain = ScopeChain::new(&g).enter(then);
        let w = chain.weight(then.value_by_name("w").unwrap()).unwrap();
        assert_eq!(
            (w.path.is_root(), w.storage),
            (true, WeightStorage::Initializer)
        );
        assert_eq!(g.read_weight(&w).unwrap().to_f32_vec().unwrap(), [1.0, 2.0]);
        let kw = chain.weight(then.value_by_name("kb").unwrap()).unwrap();
        assert_eq!(
            kw.path.0,
            [crate::ir::PathStep {
                node: if_id,
                sub: 0
            }]
        );
        assert_eq!(g.read_weight(&kw).unwrap().to_f32_vec().unwrap(), [3.0]);
        // a graph input is not a weight
        assert!(g.weight(c).is_none());

        // replace the branch constant from the root
        let mut p = Patch::new("t");
        p.replace_weight(&kw, Tensor::from_f32("", vec![], &[4.0]));
        g.apply_at(&kw.path, p).unwrap();
        g.verify().unwrap();
        assert_eq!(g.read_weight(&kw).unwrap().to_f32_vec().unwrap(), [4.0]);
    }

    #[test]
    fn sparse_initializer_is_read_dense_and_replaced_by_a_dense_initializer() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2", "3"]);
        let mut g = b.build();
        let sp = sparse(vec![2, 3], vec![2, 3], vec![2], &[5.0, 6.0]);
        let mut values = sp.values.clone().unwrap();
        values.name = Some("s".into());
        g.sparse_initializers.push(SparseTensor {
            values: Some(values),
            ..sp
        });
        let s = g.add_value("s");
        g.value_mut(s).def = ValueDef::SparseInitializer;
        let y = g.add_value("y");
        let mut add = Node::new("add", OpKey::onnx("Add"));
        add.inputs = vec![Some(x), Some(s)];
        add.outputs = vec![Some(y)];
        g.push_node(add);
        g.push_output(crate::ir::GraphIo {
            value: y,
            info: Default::default(),
        });
        g.verify().unwrap();
        let w = g.weight(s).unwrap();
        assert_eq!(w.storage, WeightStorage::SparseInitializer);
        assert_eq!(
            g.read_weight(&w).unwrap().to_f32_vec().unwrap(),
            [0.0, 0.0, 5.0, 6.0, 0.0, 0.0]
        );
        let mut p = Patch::new("t");
        p.replace_weight(&w, Tensor::from_f32("", vec![2, 3], &[1.0; 6]));
        g.apply(p).unwrap();
        g.verify().unwrap();
        assert!(g.sparse_initializers.is_empty());
        let w = g.weight(s).unwrap();
        assert_eq!(w.storage, WeightStorage::Initializer);
        assert_eq!(g.read_weight(&w).unwrap().name(), "s");
        // a reference into a graph path that does not exist is an error, not a panic
        let mut bad = w.clone();
        bad.path = GraphPath::default().child(NodeId(0), 3);
        let e = g.read_weight(&bad).unwrap_err().to_string();
        assert!(e.contains("graph path does not exist"), "{e}");
    }
}
