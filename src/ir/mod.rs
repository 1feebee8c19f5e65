//! The in-memory model. Knows nothing of protobuf or tract.

pub mod attr;
pub mod builder;
pub mod graph;
pub mod ids;
pub mod model;
pub mod names;
pub mod node;
pub mod ops;
pub mod order;
pub mod rewrite;
pub mod scope;
pub mod tensor;
pub mod value;
mod verify;
pub mod walk;
pub mod weight;

pub use attr::{AttrList, AttrType, Attribute};
pub use graph::{Graph, GraphIo, TensorAnnotation};
pub use ids::{NodeId, ValueId};
pub use model::{Function, Model, OpsetId};
pub use node::{Node, OpKey};
pub use rewrite::{Change, ChangeLog, IoSide, NewNode, Patch, SparseForm, ValRef};
pub use scope::ScopeChain;
pub use tensor::{DataType, SparseTensor, Tensor, TensorData};
pub use value::{
    Dim, DimValue, Shape, TypeInfo, TypeKind, Use, UseSlot, Value, ValueDef, ValueInfo,
};
pub use walk::{GraphPath, GraphRoot, PathStep, Site, SiteMut};
pub use weight::{ConstantForm, WeightRef, WeightStorage};

/// A `StringStringEntryProto` (metadata_props, external_data entries). Both fields keep their presence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaEntry {
    pub key: Option<String>,
    pub value: Option<String>,
}

impl MetaEntry {
    pub fn new(key: &str, value: &str) -> MetaEntry {
        MetaEntry {
            key: Some(key.to_string()),
            value: Some(value.to_string()),
        }
    }
}
