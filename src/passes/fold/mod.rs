//! Folding passes: `fold-batchnorm` (BatchNormalization into the Conv / ConvTranspose / Gemm / MatMul before
//! it) and `eliminate-identity` (Identity and inference-mode Dropout).

mod batchnorm;
mod identity;
pub(crate) mod weights;

pub use batchnorm::{FoldBatchNorm, FoldBatchNormOptions};
pub use identity::{EliminateIdentity, EliminateIdentityOptions};

use std::collections::BTreeSet;

use crate::error::Result;
use crate::ir::{Graph, Patch};
use crate::passes::PassReport;
use weights::OuterConstants;

/// A pass body run on one graph: the graph, the constants it sees from enclosing graphs, the path prefix for
/// remarks. It adds to `freed` the outer names it stopped reading.
type GraphFn<'a> = dyn FnMut(&mut Graph, &OuterConstants, &str, &mut PassReport, &mut BTreeSet<String>) -> Result<()>
    + 'a;

/// Run `f` on every subgraph of `g` (bodies before the graph that holds them), refresh the captures of the
/// nodes whose bodies changed, and drop the constants of `g` the bodies stopped reading. Outer names freed
/// further out than `g` are added to `freed`.
pub(crate) fn for_each_body(
    g: &mut Graph,
    outer: &OuterConstants,
    path: &str,
    pass: &str,
    report: &mut PassReport,
    freed: &mut BTreeSet<String>,
    f: &mut GraphFn<'_>,
) -> Result<()> {
    for id in g.node_ids().to_vec() {
        let Some(node) = g.node(id) else { continue };
        if !node.has_subgraphs() {
            continue;
        }
        let owner_name = node.name().to_string();
        let bodies: Vec<OuterConstants> = node
            .attrs
            .iter()
            .flat_map(|a| a.subgraphs())
            .map(|body| OuterConstants::for_body(g, outer, body))
            .collect();
        let before = report.changes.changes.len();
        let mut body_freed = BTreeSet::new();
        for (k, (sg, sub_outer)) in g
            .node_subgraphs_mut(id)
            .into_iter()
            .zip(&bodies)
            .enumerate()
        {
            let sub_path = format!(
                "{path}{owner_name}/{}/",
                sg.name.clone().unwrap_or_else(|| k.to_string())
            );
            f(sg, sub_outer, &sub_path, report, &mut body_freed)?;
        }
        if report.changes.changes.len() != before {
            let mut p = Patch::new(pass);
            p.refresh_captures(id);
            report.record(g.apply(p)?);
        }
        if !body_freed.is_empty() {
            let mut p = Patch::new(pass);
            weights::drop_freed(g, &mut p, &mut body_freed);
            if !p.is_empty() {
                report.record(g.apply(p)?);
            }
            freed.extend(body_freed);
        }
    }
    Ok(())
}
