//! The only code that touches protobuf types: load a file (or bytes) into a `Model`, save a `Model` back.

pub(crate) mod export;
pub mod external;
pub(crate) mod import;
pub mod save;
pub mod source;

use std::path::Path;

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::ir::Model;

pub use save::{save, to_bytes, ExternalMode, SaveOptions, SaveReport};

/// Load a model file (memory-mapped; external data resolved against its folder and read lazily).
pub fn load(path: &Path) -> Result<Model> {
    let bytes = source::map_file(path)?;
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    let mut model = decode(bytes, base).map_err(|e| e.in_file(path))?;
    model.source = Some(path.to_path_buf());
    Ok(model)
}

/// Load a model from bytes. `base` is the folder external data is resolved against (`None`: refuse it).
pub fn load_bytes(bytes: Bytes, base: Option<&Path>) -> Result<Model> {
    decode(bytes, base)
}

/// Decode one serialized ONNX `TensorProto` (a test-data `.pb` file) with the loader's checks: dtype known,
/// dims non-negative, data exactly as long as dtype x dims say. External data is refused (no file access).
/// Errors are `Error::Invalid` without a file; the caller adds it.
pub fn load_tensor_bytes(bytes: Bytes) -> Result<crate::ir::Tensor> {
    if bytes.is_empty() {
        return Err(Error::invalid("", "the file is empty"));
    }
    let proto = crate::pb::TensorProto::decode(bytes)
        .map_err(|e| Error::invalid("TensorProto", e.to_string()))?;
    if proto.data_location == Some(crate::pb::tensor_proto::DataLocation::External as i32) {
        return Err(Error::invalid(
            format!("tensor '{}'", proto.name.as_deref().unwrap_or("")),
            "external data is not read from a tensor file (store the values inline)",
        ));
    }
    let mut resolver = external::Resolver::new(None);
    import::Importer {
        resolver: &mut resolver,
    }
    .tensor(proto)
}

fn decode(bytes: Bytes, base: Option<&Path>) -> Result<Model> {
    if bytes.is_empty() {
        return Err(Error::invalid("", "the file is empty"));
    }
    let proto = crate::pb::ModelProto::decode(bytes)
        .map_err(|e| Error::invalid("protobuf", e.to_string()))?;
    let mut resolver = external::Resolver::new(base);
    let model = import::Importer {
        resolver: &mut resolver,
    }
    .model(proto)?;
    resolver.finish();
    check_acyclic(&model.graph)?;
    Ok(model)
}

/// A graph whose nodes feed each other cannot be a model: refuse it at load, naming the nodes.
fn check_acyclic(g: &crate::ir::Graph) -> Result<()> {
    let (_, cyclic) = crate::ir::order::stable_topo(g, g.node_ids(), &|id| id.0 as u64);
    if !cyclic.is_empty() {
        let names: Vec<String> = cyclic
            .iter()
            .filter_map(|id| g.node(*id))
            .map(|n| format!("'{}'", n.name()))
            .collect();
        return Err(Error::invalid(
            format!("graph '{}'", g.name()),
            format!("nodes form a cycle: {}", names.join(", ")),
        ));
    }
    for (_, sg) in g.subgraphs() {
        check_acyclic(sg)?;
    }
    Ok(())
}
