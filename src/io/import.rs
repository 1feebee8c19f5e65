//! `ModelProto` -> `Model`. Every field the schema holds is carried over so that export writes it back; every
//! malformed field becomes an `Error` naming where it was found.

use std::collections::HashSet;

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::io::external::Resolver;
use crate::ir::value::{Dim, DimValue, Shape, TypeInfo, TypeKind, UseSlot, ValueDef, ValueInfo};
use crate::ir::{
    Attribute, Function, Graph, GraphIo, MetaEntry, Model, Node, OpKey, OpsetId, SparseTensor,
    Tensor, TensorAnnotation, TensorData, Use,
};
use crate::pb;

/// Names visible from enclosing graphs while a subgraph is imported.
struct Scope<'a> {
    names: &'a HashSet<String>,
    parent: Option<&'a Scope<'a>>,
}

impl Scope<'_> {
    fn has(&self, name: &str) -> bool {
        self.names.contains(name) || self.parent.is_some_and(|p| p.has(name))
    }
}

pub(crate) struct Importer<'r> {
    pub resolver: &'r mut Resolver,
}

fn ctx(e: Error, at: &str) -> Error {
    match e {
        Error::Invalid {
            file,
            at: inner,
            msg,
        } => {
            let at = if inner.is_empty() {
                at.to_string()
            } else {
                format!("{at} > {inner}")
            };
            Error::Invalid { file, at, msg }
        }
        other => other,
    }
}

pub(crate) fn meta(v: Vec<pb::StringStringEntryProto>) -> Vec<MetaEntry> {
    v.into_iter()
        .map(|e| MetaEntry {
            key: e.key,
            value: e.value,
        })
        .collect()
}

fn opsets(v: Vec<pb::OperatorSetIdProto>) -> Vec<OpsetId> {
    v.into_iter()
        .map(|o| OpsetId {
            domain: o.domain,
            version: o.version,
        })
        .collect()
}

impl Importer<'_> {
    pub fn model(&mut self, m: pb::ModelProto) -> Result<Model> {
        let graph = m
            .graph
            .ok_or_else(|| Error::invalid("model", "has no graph"))?;
        let functions = m
            .functions
            .into_iter()
            .map(|f| {
                let at = format!("function '{}'", f.name.as_deref().unwrap_or(""));
                self.function(f).map_err(|e| ctx(e, &at))
            })
            .collect::<Result<Vec<_>>>()?;
        let graph = self.graph(graph, None)?;
        Ok(Model {
            ir_version: m.ir_version,
            opset_import: opsets(m.opset_import),
            producer_name: m.producer_name,
            producer_version: m.producer_version,
            domain: m.domain,
            model_version: m.model_version,
            doc_string: m.doc_string,
            graph,
            metadata_props: meta(m.metadata_props),
            training_info: m
                .training_info
                .iter()
                .map(|t| Bytes::from(t.encode_to_vec()))
                .collect(),
            functions,
            configuration: m
                .configuration
                .iter()
                .map(|c| Bytes::from(c.encode_to_vec()))
                .collect(),
            source: None,
        })
    }

    fn function(&mut self, f: pb::FunctionProto) -> Result<Function> {
        let gp = pb::GraphProto {
            node: f.node,
            input: f
                .input
                .into_iter()
                .map(|n| pb::ValueInfoProto {
                    name: Some(n),
                    ..Default::default()
                })
                .collect(),
            output: f
                .output
                .into_iter()
                .map(|n| pb::ValueInfoProto {
                    name: Some(n),
                    ..Default::default()
                })
                .collect(),
            value_info: f.value_info,
            ..Default::default()
        };
        let body = self.graph(gp, None)?;
        Ok(Function {
            name: f.name,
            domain: f.domain,
            overload: f.overload,
            attribute: f.attribute,
            attribute_proto: f
                .attribute_proto
                .into_iter()
                .map(|a| self.attribute(a, None))
                .collect::<Result<_>>()?,
            body,
            opset_import: opsets(f.opset_import),
            doc_string: f.doc_string,
            metadata_props: meta(f.metadata_props),
        })
    }

    fn graph(&mut self, gp: pb::GraphProto, outer: Option<&Scope>) -> Result<Graph> {
        let gname = gp.name.clone().unwrap_or_default();
        let at = format!("graph '{gname}'");
        self.graph_inner(gp, outer).map_err(|e| ctx(e, &at))
    }

    fn graph_inner(&mut self, gp: pb::GraphProto, outer: Option<&Scope>) -> Result<Graph> {
        let mut g = Graph {
            name: gp.name,
            doc_string: gp.doc_string,
            metadata_props: meta(gp.metadata_props),
            quantization_annotation: gp
                .quantization_annotation
                .into_iter()
                .map(|a| TensorAnnotation {
                    tensor_name: a.tensor_name,
                    quant_parameter_tensor_names: meta(a.quant_parameter_tensor_names),
                })
                .collect(),
            ..Default::default()
        };
        g.sparse_initializers = gp
            .sparse_initializer
            .into_iter()
            .map(|s| self.sparse(s))
            .collect::<Result<Vec<_>>>()?;

        // phase 1: every name this graph defines, checked for duplicates
        let mut names: HashSet<String> = HashSet::new();
        for t in gp.initializer {
            let tensor = self.tensor(t)?;
            let name = tensor.name().to_string();
            if name.is_empty() {
                return Err(Error::invalid("initializer", "has no name"));
            }
            if !names.insert(name.clone()) {
                return Err(Error::invalid(
                    format!("initializer '{name}'"),
                    "is defined twice",
                ));
            }
            let v = g.add_value(&name);
            g.push_initializer(v, tensor);
        }
        let sparse_names: Vec<String> = g
            .sparse_initializers
            .iter()
            .filter_map(|s| s.values.as_ref().and_then(|v| v.name.clone()))
            .collect();
        for name in sparse_names {
            if !names.insert(name.clone()) {
                return Err(Error::invalid(
                    format!("sparse initializer '{name}'"),
                    "is defined twice",
                ));
            }
            let v = g.add_value(&name);
            g.value_mut(v).def = ValueDef::SparseInitializer;
        }
        let mut input_names = HashSet::new();
        for vi in gp.input {
            let (name, info) = self.value_info(vi)?;
            if name.is_empty() {
                return Err(Error::invalid("graph input", "has an empty name"));
            }
            if !input_names.insert(name.clone()) {
                return Err(Error::invalid(
                    format!("graph input '{name}'"),
                    "is listed twice",
                ));
            }
            let v = match g.value_by_name(&name) {
                Some(v) => v, // an initializer that is also an input (a default value)
                None => {
                    names.insert(name.clone());
                    g.add_value(&name)
                }
            };
            g.push_input(GraphIo { value: v, info });
        }
        let mut producer: std::collections::HashMap<String, String> = Default::default();
        for n in &gp.node {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                let node_name = n.name.clone().unwrap_or_default();
                if !names.insert(o.clone()) {
                    let first = producer
                        .get(o)
                        .map(|p| format!(" (first by node '{p}')"))
                        .unwrap_or_default();
                    return Err(Error::invalid(
                        format!("node '{node_name}'"),
                        format!("output '{o}' is already defined in this graph{first}"),
                    ));
                }
                producer.insert(o.clone(), node_name);
                g.add_value(o);
            }
        }
        let scope = Scope {
            names: &names,
            parent: outer,
        };

        // phase 2: nodes, resolving inputs in this graph or the enclosing scopes
        for np in gp.node {
            let at = format!("node '{}'", np.name.as_deref().unwrap_or(""));
            self.node(&mut g, np, &scope).map_err(|e| ctx(e, &at))?;
        }

        for vi in gp.output {
            let (name, info) = self.value_info(vi)?;
            let v = match g.value_by_name(&name) {
                Some(v) => v,
                None if outer.is_some_and(|o| o.has(&name)) => outer_value(&mut g, &name),
                None => {
                    return Err(Error::invalid(
                        format!("graph output '{name}'"),
                        "is not produced by any node, input or initializer",
                    ))
                }
            };
            g.push_output(GraphIo { value: v, info });
        }
        for vi in gp.value_info {
            let (name, info) = self.value_info(vi)?;
            let v = match g.value_by_name(&name) {
                Some(v) => v,
                None if outer.is_some_and(|o| o.has(&name)) => outer_value(&mut g, &name),
                // a stale annotation for a name nothing defines: kept (and written back) but never wired
                None => g.add_value(&name),
            };
            g.push_value_info(GraphIo { value: v, info });
        }
        Ok(g)
    }

    fn node(&mut self, g: &mut Graph, np: pb::NodeProto, scope: &Scope) -> Result<()> {
        let op_type = np.op_type.unwrap_or_default();
        if op_type.is_empty() {
            return Err(Error::invalid("", "has no op_type"));
        }
        let mut inputs = Vec::with_capacity(np.input.len());
        for name in &np.input {
            if name.is_empty() {
                inputs.push(None);
                continue;
            }
            let v = match g.value_by_name(name) {
                Some(v) => v,
                None if scope.parent.is_some_and(|p| p.has(name)) => outer_value(g, name),
                None => {
                    return Err(Error::invalid(
                        "",
                        format!(
                        "input '{name}' is not produced by any node, graph input or initializer"
                    ),
                    ))
                }
            };
            inputs.push(Some(v));
        }
        let outputs = np
            .output
            .iter()
            .map(|o| {
                if o.is_empty() {
                    None
                } else {
                    g.value_by_name(o)
                }
            })
            .collect::<Vec<_>>();
        let mut attrs = Vec::with_capacity(np.attribute.len());
        let mut captured: Vec<String> = Vec::new();
        for a in np.attribute {
            let at = format!("attribute '{}'", a.name.as_deref().unwrap_or(""));
            let attr = self.attribute(a, Some(scope)).map_err(|e| ctx(e, &at))?;
            for sg in attr.subgraphs() {
                captured.extend(sg.free_variables());
            }
            attrs.push(attr);
        }
        if op_type == "If" && np.domain.as_deref().unwrap_or("").is_empty() {
            for branch in ["then_branch", "else_branch"] {
                if !attrs.iter().any(|a| a.name == branch && a.g.is_some()) {
                    return Err(Error::invalid(
                        "",
                        format!("If node has no '{branch}' graph"),
                    ));
                }
            }
        }
        let mut node = Node::new(
            "",
            OpKey {
                domain: np.domain,
                op_type,
            },
        );
        node.name = np.name;
        node.inputs = inputs;
        node.outputs = outputs;
        node.attrs = attrs;
        node.doc_string = np.doc_string;
        node.overload = np.overload;
        node.metadata_props = meta(np.metadata_props);
        node.device_configurations = np
            .device_configurations
            .iter()
            .map(|d| Bytes::from(d.encode_to_vec()))
            .collect();
        let id = g.push_node(node);
        captured.sort();
        captured.dedup();
        for name in captured {
            let v = match g.value_by_name(&name) {
                Some(v) => v,
                None => outer_value(g, &name),
            };
            g.add_use(
                v,
                Use {
                    node: id,
                    slot: UseSlot::Capture,
                },
            );
        }
        Ok(())
    }

    fn attribute(&mut self, a: pb::AttributeProto, scope: Option<&Scope>) -> Result<Attribute> {
        let name = a.name.unwrap_or_default();
        let sub = |imp: &mut Self, g: pb::GraphProto| -> Result<Graph> {
            match scope {
                Some(s) => imp.graph(g, Some(s)),
                None => imp.graph(g, None),
            }
        };
        let g = match a.g {
            Some(g) => Some(Box::new(sub(self, g)?)),
            None => None,
        };
        let graphs = a
            .graphs
            .into_iter()
            .map(|g| sub(self, g))
            .collect::<Result<Vec<_>>>()?;
        let attr = Attribute {
            name,
            ref_attr_name: a.ref_attr_name,
            doc_string: a.doc_string,
            r#type: a.r#type,
            f: a.f,
            i: a.i,
            s: a.s,
            t: a.t.map(|t| self.tensor(t)).transpose()?,
            g,
            sparse_tensor: a.sparse_tensor.map(|s| self.sparse(s)).transpose()?,
            tp: a.tp.map(type_info),
            floats: a.floats,
            ints: a.ints,
            strings: a.strings,
            tensors: a
                .tensors
                .into_iter()
                .map(|t| self.tensor(t))
                .collect::<Result<_>>()?,
            graphs,
            sparse_tensors: a
                .sparse_tensors
                .into_iter()
                .map(|s| self.sparse(s))
                .collect::<Result<_>>()?,
            type_protos: a.type_protos.into_iter().map(type_info).collect(),
        };
        attr.check()?;
        Ok(attr)
    }

    fn sparse(&mut self, s: pb::SparseTensorProto) -> Result<SparseTensor> {
        Ok(SparseTensor {
            values: s.values.map(|t| self.tensor(t)).transpose()?,
            indices: s.indices.map(|t| self.tensor(t)).transpose()?,
            dims: s.dims,
        })
    }

    pub fn tensor(&mut self, t: pb::TensorProto) -> Result<Tensor> {
        let at = format!("tensor '{}'", t.name.as_deref().unwrap_or(""));
        let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
        let mut fields = 0;
        let mut data = TensorData::Empty;
        let mut set = |d: TensorData, present: bool| {
            if present {
                fields += 1;
                data = d;
            }
        };
        let (r, f, i32d, i64d, dd, u64d, sd) = (
            t.raw_data,
            t.float_data,
            t.int32_data,
            t.int64_data,
            t.double_data,
            t.uint64_data,
            t.string_data,
        );
        let present = [
            r.is_some(),
            !f.is_empty(),
            !i32d.is_empty(),
            !i64d.is_empty(),
            !dd.is_empty(),
            !u64d.is_empty(),
            !sd.is_empty(),
        ];
        set(TensorData::Raw(r.unwrap_or_default()), present[0]);
        set(TensorData::Float(f), present[1]);
        set(TensorData::Int32(i32d), present[2]);
        set(TensorData::Int64(i64d), present[3]);
        set(TensorData::Double(dd), present[4]);
        set(TensorData::Uint64(u64d), present[5]);
        set(TensorData::String(sd), present[6]);
        if fields > 1 {
            return Err(Error::invalid(at, "more than one data field is set"));
        }
        if external {
            if fields > 0 {
                return Err(Error::invalid(
                    at,
                    "data_location is EXTERNAL but the tensor also holds data inline",
                ));
            }
            data = TensorData::External(
                self.external(&t.external_data)
                    .map_err(|m| Error::invalid(at.clone(), m))?,
            );
        } else if !t.external_data.is_empty() {
            return Err(Error::invalid(
                at,
                "external_data entries given but data_location is not EXTERNAL",
            ));
        }
        let tensor = Tensor {
            name: t.name,
            data_type: t.data_type,
            dims: t.dims,
            data,
            segment: t.segment.map(|s| (s.begin, s.end)),
            doc_string: t.doc_string,
            data_location: t.data_location,
            metadata_props: meta(t.metadata_props),
        };
        tensor.check()?;
        if let TensorData::External(e) = &tensor.data {
            if e.offset
                .checked_add(e.length)
                .is_none_or(|end| end > e.file.len)
            {
                return Err(Error::invalid(
                    format!("tensor '{}'", tensor.name()),
                    format!(
                        "external data '{}' range {}+{} is past the end of the file ({} bytes)",
                        e.location, e.offset, e.length, e.file.len
                    ),
                ));
            }
        }
        Ok(tensor)
    }

    fn external(
        &mut self,
        entries: &[pb::StringStringEntryProto],
    ) -> std::result::Result<crate::ir::tensor::ExternalRef, String> {
        let get = |k: &str| {
            entries
                .iter()
                .find(|e| e.key.as_deref() == Some(k))
                .and_then(|e| e.value.clone())
        };
        let location = get("location").ok_or("external data has no 'location'")?;
        let num = |k: &str| -> std::result::Result<Option<u64>, String> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("external data {k} '{v}' is not a number"))
                })
                .transpose()
        };
        let offset = num("offset")?.unwrap_or(0);
        let file = self.resolver.open(&location)?;
        let length = match num("length")? {
            Some(l) => l,
            None => file.len.checked_sub(offset).ok_or_else(|| {
                format!("external data '{location}' offset {offset} is past the end of the file ({} bytes)", file.len)
            })?,
        };
        self.resolver.note(&location, offset, length);
        Ok(crate::ir::tensor::ExternalRef {
            entries: meta(entries.to_vec()),
            location,
            offset,
            length,
            file,
        })
    }

    fn value_info(&mut self, vi: pb::ValueInfoProto) -> Result<(String, ValueInfo)> {
        Ok((
            vi.name.unwrap_or_default(),
            ValueInfo {
                ty: vi.r#type.map(type_info),
                doc_string: vi.doc_string,
                metadata_props: meta(vi.metadata_props),
            },
        ))
    }
}

fn outer_value(g: &mut Graph, name: &str) -> crate::ir::ValueId {
    let v = g.add_value(name);
    g.value_mut(v).def = ValueDef::Outer;
    v
}

fn shape(s: pb::TensorShapeProto) -> Shape {
    use pb::tensor_shape_proto::dimension::Value as D;
    Shape(
        s.dim
            .into_iter()
            .map(|d| Dim {
                value: match d.value {
                    Some(D::DimValue(v)) => DimValue::Fixed(v),
                    Some(D::DimParam(p)) => DimValue::Param(p),
                    None => DimValue::Unknown,
                },
                denotation: d.denotation,
            })
            .collect(),
    )
}

pub(crate) fn type_info(t: pb::TypeProto) -> TypeInfo {
    use pb::type_proto::Value as V;
    let boxed = |t: Option<Box<pb::TypeProto>>| t.map(|t| Box::new(type_info(*t)));
    let kind = match t.value {
        Some(V::TensorType(t)) => TypeKind::Tensor {
            elem_type: t.elem_type,
            shape: t.shape.map(shape),
        },
        Some(V::SparseTensorType(t)) => TypeKind::SparseTensor {
            elem_type: t.elem_type,
            shape: t.shape.map(shape),
        },
        Some(V::SequenceType(s)) => TypeKind::Sequence(boxed(s.elem_type)),
        Some(V::MapType(m)) => TypeKind::Map {
            key_type: m.key_type,
            value_type: boxed(m.value_type),
        },
        Some(V::OptionalType(o)) => TypeKind::Optional(boxed(o.elem_type)),
        Some(V::OpaqueType(o)) => TypeKind::Opaque {
            domain: o.domain,
            name: o.name,
        },
        None => TypeKind::None,
    };
    TypeInfo {
        kind,
        denotation: t.denotation,
    }
}
