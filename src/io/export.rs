//! `Model` -> `ModelProto`, field for field, in the IR's order. Tensor data goes where the `DataPlan` says:
//! as it was, inline, or into an external file.

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::io::save::DataPlan;
use crate::ir::value::{DimValue, Shape, TypeInfo, TypeKind, ValueInfo};
use crate::ir::{
    Attribute, Function, Graph, GraphIo, MetaEntry, Model, Node, OpsetId, SparseTensor, Tensor,
    TensorData,
};
use crate::pb;

pub(crate) fn meta(v: &[MetaEntry]) -> Vec<pb::StringStringEntryProto> {
    v.iter()
        .map(|e| pb::StringStringEntryProto {
            key: e.key.clone(),
            value: e.value.clone(),
        })
        .collect()
}

fn opsets(v: &[OpsetId]) -> Vec<pb::OperatorSetIdProto> {
    v.iter()
        .map(|o| pb::OperatorSetIdProto {
            domain: o.domain.clone(),
            version: o.version,
        })
        .collect()
}

fn decode<M: Message + Default>(b: &Bytes, what: &str) -> Result<M> {
    M::decode(b.clone())
        .map_err(|e| Error::invalid(what, format!("kept {what} no longer decodes: {e}")))
}

pub(crate) struct Exporter<'p> {
    pub plan: &'p mut DataPlan,
}

impl Exporter<'_> {
    pub fn model(&mut self, m: &Model) -> Result<pb::ModelProto> {
        Ok(pb::ModelProto {
            ir_version: m.ir_version,
            opset_import: opsets(&m.opset_import),
            producer_name: m.producer_name.clone(),
            producer_version: m.producer_version.clone(),
            domain: m.domain.clone(),
            model_version: m.model_version,
            doc_string: m.doc_string.clone(),
            graph: Some(self.graph(&m.graph, true)?),
            metadata_props: meta(&m.metadata_props),
            training_info: m
                .training_info
                .iter()
                .map(|b| decode(b, "training_info"))
                .collect::<Result<_>>()?,
            functions: m
                .functions
                .iter()
                .map(|f| self.function(f))
                .collect::<Result<_>>()?,
            configuration: m
                .configuration
                .iter()
                .map(|b| decode(b, "configuration"))
                .collect::<Result<_>>()?,
        })
    }

    fn function(&mut self, f: &Function) -> Result<pb::FunctionProto> {
        let body = &f.body;
        Ok(pb::FunctionProto {
            name: f.name.clone(),
            input: body
                .inputs()
                .iter()
                .map(|io| body.value_name(io.value).to_string())
                .collect(),
            output: body
                .outputs()
                .iter()
                .map(|io| body.value_name(io.value).to_string())
                .collect(),
            attribute: f.attribute.clone(),
            attribute_proto: f
                .attribute_proto
                .iter()
                .map(|a| self.attribute(a))
                .collect::<Result<_>>()?,
            node: body
                .nodes()
                .map(|(_, n)| self.node(body, n))
                .collect::<Result<_>>()?,
            doc_string: f.doc_string.clone(),
            opset_import: opsets(&f.opset_import),
            domain: f.domain.clone(),
            overload: f.overload.clone(),
            value_info: body
                .value_info()
                .iter()
                .map(|io| value_info(body, io))
                .collect(),
            metadata_props: meta(&f.metadata_props),
        })
    }

    fn graph(&mut self, g: &Graph, main: bool) -> Result<pb::GraphProto> {
        Ok(pb::GraphProto {
            node: g
                .nodes()
                .map(|(_, n)| self.node(g, n))
                .collect::<Result<_>>()?,
            name: g.name.clone(),
            initializer: g
                .initializers()
                .map(|(_, t)| self.tensor(t, main))
                .collect::<Result<_>>()?,
            sparse_initializer: g
                .sparse_initializers
                .iter()
                .map(|s| self.sparse(s))
                .collect::<Result<_>>()?,
            doc_string: g.doc_string.clone(),
            input: g.inputs().iter().map(|io| value_info(g, io)).collect(),
            output: g.outputs().iter().map(|io| value_info(g, io)).collect(),
            value_info: g.value_info().iter().map(|io| value_info(g, io)).collect(),
            quantization_annotation: g
                .quantization_annotation
                .iter()
                .map(|a| pb::TensorAnnotation {
                    tensor_name: a.tensor_name.clone(),
                    quant_parameter_tensor_names: meta(&a.quant_parameter_tensor_names),
                })
                .collect(),
            metadata_props: meta(&g.metadata_props),
        })
    }

    fn node(&mut self, g: &Graph, n: &Node) -> Result<pb::NodeProto> {
        let name = |v: &Option<crate::ir::ValueId>| {
            v.map(|v| g.value_name(v).to_string()).unwrap_or_default()
        };
        Ok(pb::NodeProto {
            input: n.inputs.iter().map(name).collect(),
            output: n.outputs.iter().map(name).collect(),
            name: n.name.clone(),
            op_type: Some(n.op.op_type.clone()),
            domain: n.op.domain.clone(),
            overload: n.overload.clone(),
            attribute: n
                .attrs
                .iter()
                .map(|a| self.attribute(a))
                .collect::<Result<_>>()?,
            doc_string: n.doc_string.clone(),
            metadata_props: meta(&n.metadata_props),
            device_configurations: n
                .device_configurations
                .iter()
                .map(|b| decode(b, "device_configurations"))
                .collect::<Result<_>>()?,
        })
    }

    fn attribute(&mut self, a: &Attribute) -> Result<pb::AttributeProto> {
        Ok(pb::AttributeProto {
            name: Some(a.name.clone()),
            ref_attr_name: a.ref_attr_name.clone(),
            doc_string: a.doc_string.clone(),
            r#type: a.r#type,
            f: a.f,
            i: a.i,
            s: a.s.clone(),
            t: a.t.as_ref().map(|t| self.tensor(t, false)).transpose()?,
            g: a.g.as_ref().map(|g| self.graph(g, false)).transpose()?,
            sparse_tensor: a
                .sparse_tensor
                .as_ref()
                .map(|s| self.sparse(s))
                .transpose()?,
            tp: a.tp.as_ref().map(type_proto),
            floats: a.floats.clone(),
            ints: a.ints.clone(),
            strings: a.strings.clone(),
            tensors: a
                .tensors
                .iter()
                .map(|t| self.tensor(t, false))
                .collect::<Result<_>>()?,
            graphs: a
                .graphs
                .iter()
                .map(|g| self.graph(g, false))
                .collect::<Result<_>>()?,
            sparse_tensors: a
                .sparse_tensors
                .iter()
                .map(|s| self.sparse(s))
                .collect::<Result<_>>()?,
            type_protos: a.type_protos.iter().map(type_proto).collect(),
        })
    }

    fn sparse(&mut self, s: &SparseTensor) -> Result<pb::SparseTensorProto> {
        Ok(pb::SparseTensorProto {
            values: s
                .values
                .as_ref()
                .map(|t| self.tensor(t, false))
                .transpose()?,
            indices: s
                .indices
                .as_ref()
                .map(|t| self.tensor(t, false))
                .transpose()?,
            dims: s.dims.clone(),
        })
    }

    /// `main_initializer`: an initializer of the main graph (the only tensors a threshold moves out).
    fn tensor(&mut self, t: &Tensor, main_initializer: bool) -> Result<pb::TensorProto> {
        let mut p = pb::TensorProto {
            dims: t.dims.clone(),
            data_type: t.data_type,
            segment: t
                .segment
                .map(|(begin, end)| pb::tensor_proto::Segment { begin, end }),
            name: t.name.clone(),
            doc_string: t.doc_string.clone(),
            data_location: t.data_location,
            metadata_props: meta(&t.metadata_props),
            ..Default::default()
        };
        match self.plan.place(t, main_initializer)? {
            Placed::AsIs => match &t.data {
                TensorData::Raw(b) => p.raw_data = Some(b.clone()),
                TensorData::Float(v) => p.float_data = v.clone(),
                TensorData::Int32(v) => p.int32_data = v.clone(),
                TensorData::Int64(v) => p.int64_data = v.clone(),
                TensorData::Double(v) => p.double_data = v.clone(),
                TensorData::Uint64(v) => p.uint64_data = v.clone(),
                TensorData::String(v) => p.string_data = v.clone(),
                TensorData::Empty => {}
                TensorData::External(e) => p.external_data = meta(&e.entries),
            },
            Placed::Inline(raw) => {
                p.raw_data = Some(raw);
                p.data_location = None;
            }
            Placed::External(entries) => {
                p.external_data = entries;
                p.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
            }
        }
        Ok(p)
    }
}

/// Where the plan put a tensor's data.
pub(crate) enum Placed {
    AsIs,
    Inline(Bytes),
    External(Vec<pb::StringStringEntryProto>),
}

fn value_info(g: &Graph, io: &GraphIo) -> pb::ValueInfoProto {
    let ValueInfo {
        ty,
        doc_string,
        metadata_props,
    } = &io.info;
    pb::ValueInfoProto {
        name: Some(g.value_name(io.value).to_string()),
        r#type: ty.as_ref().map(type_proto),
        doc_string: doc_string.clone(),
        metadata_props: meta(metadata_props),
    }
}

fn shape(s: &Shape) -> pb::TensorShapeProto {
    use pb::tensor_shape_proto::dimension::Value as D;
    pb::TensorShapeProto {
        dim: s
            .0
            .iter()
            .map(|d| pb::tensor_shape_proto::Dimension {
                denotation: d.denotation.clone(),
                value: match &d.value {
                    DimValue::Fixed(v) => Some(D::DimValue(*v)),
                    DimValue::Param(p) => Some(D::DimParam(p.clone())),
                    DimValue::Unknown => None,
                },
            })
            .collect(),
    }
}

pub(crate) fn type_proto(t: &TypeInfo) -> pb::TypeProto {
    use pb::type_proto as tp;
    let boxed = |t: &Option<Box<TypeInfo>>| t.as_ref().map(|t| Box::new(type_proto(t)));
    let value = match &t.kind {
        TypeKind::Tensor {
            elem_type,
            shape: s,
        } => Some(tp::Value::TensorType(tp::Tensor {
            elem_type: *elem_type,
            shape: s.as_ref().map(shape),
        })),
        TypeKind::SparseTensor {
            elem_type,
            shape: s,
        } => Some(tp::Value::SparseTensorType(tp::SparseTensor {
            elem_type: *elem_type,
            shape: s.as_ref().map(shape),
        })),
        TypeKind::Sequence(e) => Some(tp::Value::SequenceType(Box::new(tp::Sequence {
            elem_type: boxed(e),
        }))),
        TypeKind::Map {
            key_type,
            value_type,
        } => Some(tp::Value::MapType(Box::new(tp::Map {
            key_type: *key_type,
            value_type: boxed(value_type),
        }))),
        TypeKind::Optional(e) => Some(tp::Value::OptionalType(Box::new(tp::Optional {
            elem_type: boxed(e),
        }))),
        TypeKind::Opaque { domain, name } => Some(tp::Value::OpaqueType(tp::Opaque {
            domain: domain.clone(),
            name: name.clone(),
        })),
        TypeKind::None => None,
    };
    pb::TypeProto {
        denotation: t.denotation.clone(),
        value,
    }
}
