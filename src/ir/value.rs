//! Values (edges of the graph) and their declared types.

use crate::ir::ids::NodeId;
use crate::ir::tensor::{DataType, Tensor};
use crate::ir::MetaEntry;

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Dim {
    pub value: DimValue,
    pub denotation: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DimValue {
    Fixed(i64),
    Param(String),
    Unknown,
}

/// A declared shape: `None` dims list means rank unknown (the `shape` field is absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Shape(pub Vec<Dim>);

/// The ONNX `TypeProto`, every variant.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeInfo {
    pub kind: TypeKind,
    pub denotation: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    Tensor {
        elem_type: Option<i32>,
        shape: Option<Shape>,
    },
    SparseTensor {
        elem_type: Option<i32>,
        shape: Option<Shape>,
    },
    Sequence(Option<Box<TypeInfo>>),
    Map {
        key_type: Option<i32>,
        value_type: Option<Box<TypeInfo>>,
    },
    Optional(Option<Box<TypeInfo>>),
    Opaque {
        domain: Option<String>,
        name: Option<String>,
    },
    /// The `value` oneof was not set.
    None,
}

impl TypeInfo {
    pub fn tensor(dtype: DataType, dims: &[i64]) -> TypeInfo {
        TypeInfo {
            kind: TypeKind::Tensor {
                elem_type: Some(dtype.0),
                shape: Some(Shape(
                    dims.iter()
                        .map(|d| Dim {
                            value: DimValue::Fixed(*d),
                            denotation: None,
                        })
                        .collect(),
                )),
            },
            denotation: None,
        }
    }

    /// Element type and shape when this is a (dense) tensor type.
    pub fn as_tensor(&self) -> Option<(DataType, Option<&Shape>)> {
        match &self.kind {
            TypeKind::Tensor { elem_type, shape } => {
                Some((DataType(elem_type.unwrap_or(0)), shape.as_ref()))
            }
            _ => None,
        }
    }

    /// Stable short text: `f32[N,3,224,224]`, `seq(f32[?])`.
    pub fn render(&self) -> String {
        fn shape(s: &Option<Shape>) -> String {
            match s {
                None => "[*]".into(),
                Some(Shape(d)) => {
                    let parts: Vec<String> = d
                        .iter()
                        .map(|d| match &d.value {
                            DimValue::Fixed(v) => v.to_string(),
                            DimValue::Param(p) => p.clone(),
                            DimValue::Unknown => "?".into(),
                        })
                        .collect();
                    format!("[{}]", parts.join(","))
                }
            }
        }
        let inner = |t: &Option<Box<TypeInfo>>| {
            t.as_ref().map(|t| t.render()).unwrap_or_else(|| "?".into())
        };
        match &self.kind {
            TypeKind::Tensor {
                elem_type,
                shape: s,
            } => format!("{}{}", DataType(elem_type.unwrap_or(0)).name(), shape(s)),
            TypeKind::SparseTensor {
                elem_type,
                shape: s,
            } => {
                format!(
                    "sparse {}{}",
                    DataType(elem_type.unwrap_or(0)).name(),
                    shape(s)
                )
            }
            TypeKind::Sequence(t) => format!("seq({})", inner(t)),
            TypeKind::Map {
                key_type,
                value_type,
            } => {
                format!(
                    "map({}, {})",
                    DataType(key_type.unwrap_or(0)).name(),
                    inner(value_type)
                )
            }
            TypeKind::Optional(t) => format!("optional({})", inner(t)),
            TypeKind::Opaque { domain, name } => {
                format!(
                    "opaque({}.{})",
                    domain.as_deref().unwrap_or(""),
                    name.as_deref().unwrap_or("")
                )
            }
            TypeKind::None => "?".into(),
        }
    }
}

/// A `ValueInfoProto` as written for a graph input, output or value_info entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValueInfo {
    pub ty: Option<TypeInfo>,
    pub doc_string: Option<String>,
    pub metadata_props: Vec<MetaEntry>,
}

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// A graph input (that is not also an initializer).
    Input,
    /// A constant initializer of this graph (possibly also listed as a graph input, as old exporters do).
    Initializer,
    /// A sparse initializer of this graph (`Graph::sparse_initializers`).
    SparseInitializer,
    /// Output `slot` of a node.
    Node(NodeId, u32),
    /// Defined in an enclosing graph (this graph is an If/Loop/Scan body).
    Outer,
    /// Not defined (yet): a value created by a patch before it is wired, or erased.
    None,
}

/// A use of a value: input `slot` of `node`, or a capture by one of `node`'s subgraphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Use {
    pub node: NodeId,
    pub slot: UseSlot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UseSlot {
    Input(u32),
    /// A subgraph of the node reads the value from the outer scope.
    Capture,
}

/// A named edge. Knows its definition and its uses (kept sorted).
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub def: ValueDef,
    pub uses: Vec<Use>,
    /// The initializer tensor when `def == Initializer`.
    pub init: Option<Tensor>,
}
