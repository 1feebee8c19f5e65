//! Writing one quantized weight into its graph: one `Patch` on the graph that held the weight, by the job's
//! `Layout` (module docs of `weight`). It adds `<w>_quantized`, `<w>_scale` and `<w>_zero_point` (the names
//! ONNX Runtime's tools use), the nodes that give the readers float values back, rewires the readers and
//! removes the float weight; then it records the stats and one Applied remark per reader.

use std::collections::BTreeSet;

use super::{dims_text, storage_text, Job, Layout};
use crate::error::{Error, Result};
use crate::ir::{Attribute, Model, NewNode, OpKey, Patch, Tensor, ValRef};
use crate::passes::quantize::params::Quantized;
use crate::passes::{Outcome, PassReport};

pub(super) fn apply(
    model: &mut Model,
    job: &Job,
    q: Quantized,
    outer_names: Option<&BTreeSet<String>>,
    report: &mut PassReport,
) -> Result<()> {
    let g = model
        .graph
        .subgraph_at(&job.w.path)
        .ok_or_else(|| Error::Pass {
            pass: report.pass.clone(),
            msg: format!("weight '{}': its graph disappeared", job.w.name),
        })?;
    let mut p = Patch::new(&report.pass);
    if let Some(names) = outer_names {
        p.avoid_names(names.clone());
    }
    let base = job.w.name.as_str();
    let bytes_before = job.tensor.byte_size();
    let mut bytes_after = q.q.byte_size() + q.scale.byte_size();
    let how = match job.layout {
        Layout::Dequantize | Layout::Flat => {
            bytes_after += q.zero_point.byte_size();
            let (out, node_name) = super::super::add_dequantize(
                &mut p,
                g,
                base,
                q.q,
                q.scale,
                q.zero_point,
                job.spec.axis,
            );
            if job.layout == Layout::Flat {
                let shape =
                    Tensor::from_vec("shape", vec![job.dims.len() as i64], job.dims.clone())?;
                bytes_after += shape.byte_size();
                let sv = p.add_named_initializer(g, base, "_shape", shape);
                let y = p.new_named_value(g, base, "_Reshape_Output");
                let reshape = p.fresh_suffixed(g, base, "_Reshape");
                p.add_node_spec(NewNode {
                    name: Some(reshape.clone()),
                    op: OpKey::onnx("Reshape"),
                    inputs: vec![Some(out), Some(sv)],
                    outputs: vec![y],
                    attrs: vec![],
                });
                p.replace_all_uses(job.w.value, y);
                format!(
                    "one scale per gate row of each direction: stored {} through '{node_name}' and '{reshape}'",
                    dims_text(&job.tensor.dims)
                )
            } else {
                p.replace_all_uses(job.w.value, out);
                format!("through '{node_name}'")
            }
        }
        Layout::Rows { per_row } => {
            let rank = job.dims.len();
            let qv = p.add_named_initializer(g, base, "_quantized", q.q);
            let mut scale = q.scale;
            let mut zero_point = q.zero_point;
            // per row: [rows, 1, ..., 1], so the gathered parameters broadcast over each gathered row
            if per_row {
                let rows = job.dims[0];
                let mut pd = vec![1i64; rank];
                pd[0] = rows;
                scale.dims = pd.clone();
                zero_point.dims = pd;
            }
            // symmetric int8: every zero point is 0, so the per-row form needs none
            let zp_needed = !per_row || q.params.iter().any(|x| x.zero_point != 0);
            if zp_needed {
                bytes_after += zero_point.byte_size();
            }
            let sv = p.add_named_initializer(g, base, "_scale", scale);
            let zv = zp_needed.then(|| p.add_named_initializer(g, base, "_zero_point", zero_point));
            let float_to = job.tensor.dtype().0 as i64;
            let mut nodes = Vec::new();
            for r in &job.readers {
                let Some(id) = r.id else { continue };
                let Some(node) = g.node(id) else { continue };
                let (Some(rows), Some(idx)) = (node.output(0), node.input(1)) else {
                    continue;
                };
                let axis = node.attrs.iter().find(|a| a.name == "axis").cloned();
                let yb = g.value_name(rows).to_string();
                p.set_input(id, 0, Some(qv));
                // the gathered rows are integers now: their declared float type would be wrong
                p.set_value_info(rows, None);
                let out = if per_row {
                    let node = |p: &mut Patch, op: &str, suffix: &str, ins: Vec<ValRef>, attrs| {
                        let y = p.new_named_value(g, &yb, &format!("{suffix}_Output"));
                        let name = p.fresh_suffixed(g, &yb, suffix);
                        p.add_node_spec(NewNode {
                            name: Some(name.clone()),
                            op: OpKey::onnx(op),
                            inputs: ins.into_iter().map(Some).collect(),
                            outputs: vec![y],
                            attrs,
                        });
                        (y, name)
                    };
                    let cast = |to| vec![Attribute::int("to", to)];
                    let (s, n) = node(
                        &mut p,
                        "Gather",
                        "_scale_Gather",
                        vec![sv, idx.into()],
                        axis.iter().cloned().collect(),
                    );
                    nodes.push(n);
                    let (x, n) = node(&mut p, "Cast", "_Cast", vec![rows.into()], cast(float_to));
                    nodes.push(n);
                    let x = match zv {
                        Some(zv) => {
                            let (z, n) = node(
                                &mut p,
                                "Gather",
                                "_zero_point_Gather",
                                vec![zv, idx.into()],
                                axis.iter().cloned().collect(),
                            );
                            nodes.push(n);
                            let (zf, n) =
                                node(&mut p, "Cast", "_zero_point_Cast", vec![z], cast(float_to));
                            nodes.push(n);
                            let (d, n) = node(&mut p, "Sub", "_Sub", vec![x, zf], vec![]);
                            nodes.push(n);
                            d
                        }
                        None => x,
                    };
                    let (y, n) = node(&mut p, "Mul", "_Mul", vec![x, s], vec![]);
                    nodes.push(n);
                    y
                } else {
                    let y = p.new_named_value(g, &yb, "_DequantizeLinear_Output");
                    let name = p.fresh_suffixed(g, &yb, "_DequantizeLinear");
                    p.add_node_spec(NewNode {
                        name: Some(name.clone()),
                        op: OpKey::onnx("DequantizeLinear"),
                        inputs: vec![Some(rows.into()), Some(sv), zv],
                        outputs: vec![y],
                        attrs: vec![],
                    });
                    nodes.push(name);
                    y
                };
                p.replace_all_uses(rows, out);
            }
            if per_row {
                format!(
                    "gathered as {} rows, dequantized after the Gather as (Cast(q) - zero point) * scale with the row's parameters gathered too ('{}')",
                    job.spec.qtype,
                    nodes.join("', '")
                )
            } else {
                format!(
                    "gathered as {} rows, dequantized after the Gather by '{}'",
                    job.spec.qtype,
                    nodes.join("', '")
                )
            }
        }
    };
    p.remove_weight(&job.w);
    let log = model.graph.apply_at(&job.w.path, p)?;
    report.record(log);
    report.stat("weights_quantized", 1);
    report.stat("bytes_before", bytes_before);
    report.stat("bytes_after", bytes_after);
    let gran = match (job.spec.axis, &job.layout) {
        (Some(_), Layout::Flat) => "per-channel".to_string(),
        (Some(_), Layout::Rows { .. }) => "per-row".to_string(),
        (Some(a), _) => format!("per-channel axis {a}"),
        (None, _) => "per-tensor".to_string(),
    };
    let mut why = format!(
        "weight '{}' ({}, {} {}) -> {} {}{} {how} ({} -> {} bytes)",
        job.w.name,
        storage_text(&job.w.storage),
        dims_text(&job.dims),
        job.tensor.dtype().name(),
        job.spec.qtype,
        if job.spec.symmetric { "symmetric " } else { "" },
        gran,
        bytes_before,
        bytes_after
    );
    if let Some(f) = &job.fallback {
        why.push_str(&format!(" ({f})"));
    }
    // once per reading node (the three Slices of one weight feeding one LSTM are one remark)
    let mut said = BTreeSet::new();
    for r in &job.readers {
        if said.insert(r.at.as_str()) {
            report.remark(r.at.clone(), Outcome::Applied, why.clone());
        }
    }
    Ok(())
}
