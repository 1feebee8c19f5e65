//! Node attributes. The struct mirrors every field of `AttributeProto` so attributes write back exactly; the
//! typed getters here are the one place attributes are read by key.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ir::graph::Graph;
use crate::ir::tensor::{SparseTensor, Tensor};
use crate::ir::value::TypeInfo;

/// `AttributeProto.AttributeType` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    Float = 1,
    Int = 2,
    String = 3,
    Tensor = 4,
    Graph = 5,
    SparseTensor = 11,
    TypeProto = 13,
    Floats = 6,
    Ints = 7,
    Strings = 8,
    Tensors = 9,
    Graphs = 10,
    SparseTensors = 12,
    TypeProtos = 14,
}

#[derive(Clone, Debug, Default)]
pub struct Attribute {
    pub name: String,
    pub ref_attr_name: Option<String>,
    pub doc_string: Option<String>,
    pub r#type: Option<i32>,
    pub f: Option<f32>,
    pub i: Option<i64>,
    pub s: Option<Bytes>,
    pub t: Option<Tensor>,
    pub g: Option<Box<Graph>>,
    pub sparse_tensor: Option<SparseTensor>,
    pub tp: Option<TypeInfo>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
    pub strings: Vec<Bytes>,
    pub tensors: Vec<Tensor>,
    pub graphs: Vec<Graph>,
    pub sparse_tensors: Vec<SparseTensor>,
    pub type_protos: Vec<TypeInfo>,
}

impl Attribute {
    fn typed(name: &str, ty: AttrType) -> Attribute {
        Attribute {
            name: name.to_string(),
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }
    pub fn int(name: &str, v: i64) -> Attribute {
        Attribute {
            i: Some(v),
            ..Self::typed(name, AttrType::Int)
        }
    }
    pub fn float(name: &str, v: f32) -> Attribute {
        Attribute {
            f: Some(v),
            ..Self::typed(name, AttrType::Float)
        }
    }
    pub fn string(name: &str, v: &str) -> Attribute {
        Attribute {
            s: Some(Bytes::copy_from_slice(v.as_bytes())),
            ..Self::typed(name, AttrType::String)
        }
    }
    pub fn ints(name: &str, v: Vec<i64>) -> Attribute {
        Attribute {
            ints: v,
            ..Self::typed(name, AttrType::Ints)
        }
    }
    pub fn floats(name: &str, v: Vec<f32>) -> Attribute {
        Attribute {
            floats: v,
            ..Self::typed(name, AttrType::Floats)
        }
    }
    pub fn tensor(name: &str, t: Tensor) -> Attribute {
        Attribute {
            t: Some(t),
            ..Self::typed(name, AttrType::Tensor)
        }
    }
    pub fn sparse_tensor(name: &str, s: SparseTensor) -> Attribute {
        Attribute {
            sparse_tensor: Some(s),
            ..Self::typed(name, AttrType::SparseTensor)
        }
    }
    pub fn graph(name: &str, g: Graph) -> Attribute {
        Attribute {
            g: Some(Box::new(g)),
            ..Self::typed(name, AttrType::Graph)
        }
    }

    /// The declared type, or the one implied by the single field that is set (old files omit `type`).
    pub fn kind(&self) -> Option<AttrType> {
        use AttrType::*;
        if let Some(t) = self.r#type {
            return [
                Float,
                Int,
                String,
                Tensor,
                Graph,
                SparseTensor,
                TypeProto,
                Floats,
                Ints,
                Strings,
                Tensors,
                Graphs,
                SparseTensors,
                TypeProtos,
            ]
            .into_iter()
            .find(|k| *k as i32 == t);
        }
        Some(if self.f.is_some() {
            Float
        } else if self.i.is_some() {
            Int
        } else if self.s.is_some() {
            String
        } else if self.t.is_some() {
            Tensor
        } else if self.g.is_some() {
            Graph
        } else if !self.floats.is_empty() {
            Floats
        } else if !self.ints.is_empty() {
            Ints
        } else if !self.strings.is_empty() {
            Strings
        } else if !self.tensors.is_empty() {
            Tensors
        } else if !self.graphs.is_empty() {
            Graphs
        } else {
            return None;
        })
    }

    /// Check the declared type against the field that carries the value (load-time check).
    pub fn check(&self) -> Result<()> {
        use AttrType::*;
        let Some(kind) = self.kind() else {
            if self.r#type.is_some() {
                return Err(Error::invalid(
                    "",
                    format!("unknown attribute type {}", self.r#type.unwrap()),
                ));
            }
            return Ok(());
        };
        if self.ref_attr_name.is_some() {
            return Ok(()); // a reference inside a function body carries no value
        }
        let present = match kind {
            Float => self.f.is_some(),
            Int => self.i.is_some(),
            String => self.s.is_some(),
            Tensor => self.t.is_some(),
            Graph => self.g.is_some(),
            SparseTensor => self.sparse_tensor.is_some(),
            TypeProto => self.tp.is_some(),
            // empty lists are legal
            _ => true,
        };
        if !present {
            return Err(Error::invalid(
                "",
                format!("declared {kind:?} but carries no {kind:?} value"),
            ));
        }
        Ok(())
    }

    /// Every subgraph held by this attribute.
    pub fn subgraphs(&self) -> impl Iterator<Item = &Graph> {
        self.g.as_deref().into_iter().chain(self.graphs.iter())
    }

    pub fn subgraphs_mut(&mut self) -> impl Iterator<Item = &mut Graph> {
        self.g
            .as_deref_mut()
            .into_iter()
            .chain(self.graphs.iter_mut())
    }
}

/// Typed lookups on a node's attribute list. A present attribute of the wrong type is an error naming it.
pub trait AttrList {
    fn attr(&self, name: &str) -> Option<&Attribute>;

    fn get_int(&self, name: &str) -> Result<Option<i64>> {
        self.attr(name)
            .map(|a| want(a, AttrType::Int, a.i))
            .transpose()
    }
    fn get_float(&self, name: &str) -> Result<Option<f32>> {
        self.attr(name)
            .map(|a| want(a, AttrType::Float, a.f))
            .transpose()
    }
    fn get_string(&self, name: &str) -> Result<Option<String>> {
        self.attr(name)
            .map(|a| {
                want(
                    a,
                    AttrType::String,
                    a.s.as_ref()
                        .map(|s| String::from_utf8_lossy(s).into_owned()),
                )
            })
            .transpose()
    }
    fn get_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        self.attr(name)
            .map(|a| want(a, AttrType::Ints, Some(a.ints.clone())))
            .transpose()
    }
    fn get_floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        self.attr(name)
            .map(|a| want(a, AttrType::Floats, Some(a.floats.clone())))
            .transpose()
    }
    fn get_tensor(&self, name: &str) -> Result<Option<&Tensor>> {
        self.attr(name)
            .map(|a| want(a, AttrType::Tensor, a.t.as_ref()))
            .transpose()
    }
}

fn want<T>(a: &Attribute, ty: AttrType, v: Option<T>) -> Result<T> {
    if a.kind() != Some(ty) {
        return Err(Error::invalid(
            format!("attribute '{}'", a.name),
            format!("expected {ty:?}, found {:?}", a.kind()),
        ));
    }
    v.ok_or_else(|| {
        Error::invalid(
            format!("attribute '{}'", a.name),
            format!("{ty:?} value missing"),
        )
    })
}

impl AttrList for [Attribute] {
    fn attr(&self, name: &str) -> Option<&Attribute> {
        self.iter().find(|a| a.name == name)
    }
}

impl AttrList for Vec<Attribute> {
    fn attr(&self, name: &str) -> Option<&Attribute> {
        self.iter().find(|a| a.name == name)
    }
}
