//! Nodes: an operator (kept generic: domain + op type), its inputs and outputs as value ids, its attributes.

use bytes::Bytes;

use crate::ir::attr::{AttrList, Attribute};
use crate::ir::ids::ValueId;
use crate::ir::MetaEntry;

/// The operator: domain (absent or "" or "ai.onnx" mean the default domain) and op type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpKey {
    pub domain: Option<String>,
    pub op_type: String,
}

impl OpKey {
    pub fn onnx(op_type: &str) -> OpKey {
        OpKey {
            domain: None,
            op_type: op_type.to_string(),
        }
    }

    pub fn is_default_domain(&self) -> bool {
        matches!(self.domain.as_deref(), None | Some("") | Some("ai.onnx"))
    }

    /// True for the standard-domain operator `op_type`.
    pub fn is(&self, op_type: &str) -> bool {
        self.op_type == op_type && self.is_default_domain()
    }

    /// `Conv`, or `com.microsoft::Attention` for other domains.
    pub fn display(&self) -> String {
        if self.is_default_domain() {
            self.op_type.clone()
        } else {
            format!("{}::{}", self.domain.as_deref().unwrap_or(""), self.op_type)
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: Option<String>,
    pub op: OpKey,
    /// `None` is an omitted optional input (an empty name in the file).
    pub inputs: Vec<Option<ValueId>>,
    /// `None` is an omitted optional output.
    pub outputs: Vec<Option<ValueId>>,
    pub attrs: Vec<Attribute>,
    pub doc_string: Option<String>,
    pub overload: Option<String>,
    pub metadata_props: Vec<MetaEntry>,
    /// `NodeDeviceConfigurationProto`s, kept encoded: nothing here reads them, and they are written back as-is.
    pub device_configurations: Vec<Bytes>,
}

impl Node {
    pub fn new(name: impl Into<String>, op: OpKey) -> Node {
        Node {
            name: Some(name.into()),
            op,
            inputs: Vec::new(),
            outputs: Vec::new(),
            attrs: Vec::new(),
            doc_string: None,
            overload: None,
            metadata_props: Vec::new(),
            device_configurations: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// Input `i` when present.
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn output(&self, i: usize) -> Option<ValueId> {
        self.outputs.get(i).copied().flatten()
    }

    pub fn has_subgraphs(&self) -> bool {
        self.attrs.iter().any(|a| a.subgraphs().next().is_some())
    }
}

impl AttrList for Node {
    fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attrs.iter().find(|a| a.name == name)
    }
}
