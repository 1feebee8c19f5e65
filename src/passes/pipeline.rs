//! Run passes in order, verifying the graph after each; stop after a named pass to bisect a problem.

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::passes::{registry, PassContext, PassReport};

#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Stop after the first pass with this name (its report is included).
    pub stop_after: Option<String>,
}

/// Run the pass specs (`name` or `name{k=v}`) in order. The model (main graph, every subgraph and every
/// function body) is verified after every pass; a pass that leaves it broken is an error naming the pass.
pub fn run_pipeline(
    model: &mut Model,
    specs: &[&str],
    opts: &PipelineOptions,
) -> Result<Vec<PassReport>> {
    let passes = specs
        .iter()
        .map(|s| registry::build(s))
        .collect::<Result<Vec<_>>>()?;
    if let Some(stop) = &opts.stop_after {
        registry::lookup(stop)?;
    }
    let mut cx = PassContext::default();
    let mut reports = Vec::new();
    for pass in passes {
        let report = pass.run(model, &mut cx)?;
        model.verify().map_err(|e| Error::Pass {
            pass: pass.name().into(),
            msg: format!("left an invalid graph: {e}"),
        })?;
        reports.push(report);
        if opts.stop_after.as_deref() == Some(pass.name()) {
            break;
        }
    }
    Ok(reports)
}
