//! Build graphs and models in code: for unit tests, fixtures and the replacement subgraphs of passes that make
//! whole new graphs. Names are deterministic: nodes `<op>_<k>`, outputs `<node>_out<i>`.

use crate::ir::attr::Attribute;
use crate::ir::graph::{Graph, GraphIo};
use crate::ir::ids::ValueId;
use crate::ir::model::{Model, OpsetId};
use crate::ir::node::{Node, OpKey};
use crate::ir::tensor::{DataType, Tensor};
use crate::ir::value::{Dim, DimValue, Shape, TypeInfo, TypeKind, ValueDef, ValueInfo};

pub struct GraphBuilder {
    g: Graph,
    counter: usize,
}

impl GraphBuilder {
    pub fn new(name: &str) -> GraphBuilder {
        GraphBuilder {
            g: Graph::new(name),
            counter: 0,
        }
    }

    fn info(dtype: DataType, dims: &[&str]) -> ValueInfo {
        let dims = dims
            .iter()
            .map(|d| Dim {
                value: match d.parse::<i64>() {
                    Ok(v) => DimValue::Fixed(v),
                    Err(_) if *d == "?" => DimValue::Unknown,
                    Err(_) => DimValue::Param(d.to_string()),
                },
                denotation: None,
            })
            .collect();
        ValueInfo {
            ty: Some(TypeInfo {
                kind: TypeKind::Tensor {
                    elem_type: Some(dtype.0),
                    shape: Some(Shape(dims)),
                },
                denotation: None,
            }),
            ..Default::default()
        }
    }

    /// A graph input; dims are numbers, symbolic names ("N") or "?".
    pub fn input(&mut self, name: &str, dtype: DataType, dims: &[&str]) -> ValueId {
        let v = self.g.add_value(name);
        self.g.push_input(GraphIo {
            value: v,
            info: Self::info(dtype, dims),
        });
        v
    }

    pub fn initializer(&mut self, mut t: Tensor) -> ValueId {
        let name = t.name().to_string();
        t.name = Some(name.clone());
        let v = self.g.add_value(&name);
        self.g.push_initializer(v, t);
        v
    }

    /// Add a node with `n_out` outputs named `<node>_out<i>`.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[ValueId],
        attrs: Vec<Attribute>,
        n_out: usize,
    ) -> Vec<ValueId> {
        let name = format!("{}_{}", op_type.to_lowercase(), self.counter);
        self.counter += 1;
        let outs: Vec<String> = (0..n_out).map(|i| format!("{name}_out{i}")).collect();
        let outs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
        self.named_node(
            &name,
            OpKey::onnx(op_type),
            &inputs.iter().map(|v| Some(*v)).collect::<Vec<_>>(),
            &outs,
            attrs,
        )
    }

    /// Add a node with explicit names; `None` inputs are omitted optional inputs.
    pub fn named_node(
        &mut self,
        name: &str,
        op: OpKey,
        inputs: &[Option<ValueId>],
        outputs: &[&str],
        attrs: Vec<Attribute>,
    ) -> Vec<ValueId> {
        let outs: Vec<ValueId> = outputs.iter().map(|o| self.g.add_value(o)).collect();
        let mut node = Node::new(name, op);
        node.inputs = inputs.to_vec();
        node.outputs = outs.iter().map(|v| Some(*v)).collect();
        node.attrs = attrs;
        self.g.push_node(node);
        outs
    }

    pub fn output(&mut self, v: ValueId, dtype: DataType, dims: &[&str]) {
        self.g.push_output(GraphIo {
            value: v,
            info: Self::info(dtype, dims),
        });
    }

    /// Mark a value read from an enclosing graph (for subgraph bodies).
    pub fn outer(&mut self, name: &str) -> ValueId {
        let v = self.g.add_value(name);
        self.g.value_mut(v).def = ValueDef::Outer;
        v
    }

    pub fn graph(&self) -> &Graph {
        &self.g
    }

    pub fn build(self) -> Graph {
        self.g
    }
}

/// A model around a graph with the default-domain opset `opset` (IR version 8 unless changed).
pub fn model(graph: Graph, opset: i64) -> Model {
    Model {
        ir_version: Some(8),
        opset_import: vec![OpsetId {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("onnx-rewrite".into()),
        producer_version: None,
        domain: None,
        model_version: None,
        doc_string: None,
        graph,
        metadata_props: Vec::new(),
        training_info: Vec::new(),
        functions: Vec::new(),
        configuration: Vec::new(),
        source: None,
    }
}
