//! The model: header fields, opset imports, functions and the main graph.

use bytes::Bytes;

use crate::ir::attr::Attribute;
use crate::ir::graph::Graph;
use crate::ir::MetaEntry;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsetId {
    pub domain: Option<String>,
    pub version: Option<i64>,
}

impl OpsetId {
    pub fn domain(&self) -> &str {
        match self.domain.as_deref() {
            None | Some("ai.onnx") => "",
            Some(d) => d,
        }
    }
}

/// A model-local function (`FunctionProto`). Its body is a graph whose inputs and outputs carry names only.
#[derive(Clone, Debug)]
pub struct Function {
    pub name: Option<String>,
    pub domain: Option<String>,
    pub overload: Option<String>,
    pub attribute: Vec<String>,
    pub attribute_proto: Vec<Attribute>,
    pub body: Graph,
    pub opset_import: Vec<OpsetId>,
    pub doc_string: Option<String>,
    pub metadata_props: Vec<MetaEntry>,
}

#[derive(Clone, Debug)]
pub struct Model {
    pub ir_version: Option<i64>,
    pub opset_import: Vec<OpsetId>,
    pub producer_name: Option<String>,
    pub producer_version: Option<String>,
    pub domain: Option<String>,
    pub model_version: Option<i64>,
    pub doc_string: Option<String>,
    pub graph: Graph,
    pub metadata_props: Vec<MetaEntry>,
    /// `TrainingInfoProto`s, kept encoded and written back as they came: deployment rewrites do not touch them.
    pub training_info: Vec<Bytes>,
    pub functions: Vec<Function>,
    /// `DeviceConfigurationProto`s, kept encoded.
    pub configuration: Vec<Bytes>,
    /// The file this model was loaded from (never written; saving refuses to overwrite it).
    pub source: Option<std::path::PathBuf>,
}

impl Model {
    /// Opset version imported for a domain ("" is the default ONNX domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        self.opset_import
            .iter()
            .find(|o| o.domain() == domain)
            .and_then(|o| o.version)
    }

    /// Set (or add) the opset version for a domain. Only the number changes: operators whose signature differs
    /// at the new version are not converted (the `upgrade-opset` pass does that for ai.onnx).
    pub fn set_opset(&mut self, domain: &str, version: i64) {
        match self.opset_import.iter_mut().find(|o| o.domain() == domain) {
            Some(o) => o.version = Some(version),
            None => self.opset_import.push(OpsetId {
                domain: Some(domain.to_string()),
                version: Some(version),
            }),
        }
    }
}
