//! `inspect`: what a user wants to know about a model before rewriting it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::dump::stats::{stats, Stats};
use crate::error::Result;
use crate::ir::{Model, TensorData};
use crate::passes::quantize::runtime;

#[derive(Serialize)]
pub struct Inspect {
    pub file: String,
    pub file_bytes: u64,
    pub external_data_bytes: u64,
    pub ir_version: i64,
    pub producer: String,
    pub opsets: BTreeMap<String, i64>,
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
    #[serde(flatten)]
    pub stats: Stats,
    pub params: u64,
    pub functions: usize,
    /// What the model's Q/DQ form needs from ONNX Runtime to run at full speed (quantized models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_hint: Option<&'static str>,
}

pub fn inspect(m: &Model, path: &Path) -> Result<Inspect> {
    let file_bytes = std::fs::metadata(path).map(|md| md.len()).unwrap_or(0);
    let mut files = BTreeMap::new();
    m.graph.walk(&mut |g| {
        for (_, t) in g.initializers() {
            if let TensorData::External(e) = &t.data {
                files.insert(e.file.path.clone(), e.file.len);
            }
        }
    });
    let ty = |io: &crate::ir::GraphIo| crate::dump::render_type(&io.info.ty);
    let g = &m.graph;
    let stats = stats(m);
    Ok(Inspect {
        file: path.display().to_string(),
        file_bytes,
        external_data_bytes: files.values().sum(),
        ir_version: m.ir_version.unwrap_or(0),
        producer: format!(
            "{} {}",
            m.producer_name.as_deref().unwrap_or(""),
            m.producer_version.as_deref().unwrap_or("")
        )
        .trim()
        .to_string(),
        opsets: m
            .opset_import
            .iter()
            .map(|o| {
                (
                    if o.domain().is_empty() {
                        "ai.onnx".into()
                    } else {
                        o.domain().to_string()
                    },
                    o.version.unwrap_or(0),
                )
            })
            .collect(),
        inputs: g
            .runtime_inputs()
            .map(|io| (g.value_name(io.value).to_string(), ty(io)))
            .collect(),
        outputs: g
            .outputs()
            .iter()
            .map(|io| (g.value_name(io.value).to_string(), ty(io)))
            .collect(),
        params: stats.params(),
        stats,
        functions: m.functions.len(),
        runtime_hint: runtime::hint(runtime::form(m)),
    })
}

impl fmt::Display for Inspect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "file: {} ({} bytes, external data {} bytes)",
            self.file, self.file_bytes, self.external_data_bytes
        )?;
        writeln!(f, "ir_version: {}", self.ir_version)?;
        writeln!(
            f,
            "producer: {}",
            if self.producer.is_empty() {
                "-"
            } else {
                &self.producer
            }
        )?;
        let ops: Vec<String> = self
            .opsets
            .iter()
            .map(|(d, v)| format!("{d}={v}"))
            .collect();
        writeln!(f, "opsets: {}", ops.join(", "))?;
        writeln!(f, "inputs:")?;
        for (n, t) in &self.inputs {
            writeln!(f, "  {n}: {t}")?;
        }
        writeln!(f, "outputs:")?;
        for (n, t) in &self.outputs {
            writeln!(f, "  {n}: {t}")?;
        }
        let s = &self.stats;
        writeln!(
            f,
            "nodes: {} (subgraphs: {}, functions: {})",
            s.nodes, s.subgraphs, self.functions
        )?;
        let mut ops: Vec<(&String, &u64)> = s.ops.iter().collect();
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let ops: Vec<String> = ops.iter().map(|(o, n)| format!("{o} {n}")).collect();
        writeln!(f, "ops: {}", ops.join(", "))?;
        writeln!(f, "parameters: {} ({} bytes)", self.params, s.bytes())?;
        writeln!(
            f,
            "  initializers: {} in {} tensors ({} external)",
            s.initializer_params, s.initializers, s.external_params
        )?;
        writeln!(
            f,
            "  constant nodes: {} in {} nodes",
            s.constant_params, s.constant_nodes
        )?;
        for (dt, c) in &s.params_by_dtype {
            writeln!(f, "  {dt}: {} params, {} bytes", c.params, c.bytes)?;
        }
        if let Some(h) = self.runtime_hint {
            writeln!(f, "{h}")?;
        }
        Ok(())
    }
}
