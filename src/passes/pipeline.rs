//! Run passes in order, verifying the graph after each; stop after a named pass to bisect a problem.

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::passes::{registry, Pass, PassContext, PassReport};

#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Stop after the first pass with this name (its report is included).
    pub stop_after: Option<String>,
}

/// Run the pass specs (`name` or `name{k=v}`) in order with no services (no calibrator, no drift measure, no
/// progress). The model (main graph, every subgraph and every function body) is verified after every pass; a
/// pass that leaves it broken is an error naming the pass.
pub fn run_pipeline(
    model: &mut Model,
    specs: &[&str],
    opts: &PipelineOptions,
) -> Result<Vec<PassReport>> {
    run_pipeline_with(model, specs, opts, &mut PassContext::default())
}

/// `run_pipeline` with the services in `cx` handed to every pass. Every spec is parsed and checked before the
/// first pass runs.
pub fn run_pipeline_with(
    model: &mut Model,
    specs: &[&str],
    opts: &PipelineOptions,
    cx: &mut PassContext,
) -> Result<Vec<PassReport>> {
    let passes = specs
        .iter()
        .map(|s| registry::build(s))
        .collect::<Result<Vec<_>>>()?;
    run_passes(model, passes, opts, cx)
}

/// Run passes already built (from specs, a recipe, or passes of the caller's own) in order, with the services
/// in `cx`.
pub fn run_passes(
    model: &mut Model,
    passes: Vec<Box<dyn Pass>>,
    opts: &PipelineOptions,
    cx: &mut PassContext,
) -> Result<Vec<PassReport>> {
    if let Some(stop) = &opts.stop_after {
        if !passes.iter().any(|p| p.name() == stop) {
            registry::lookup(stop)?;
        }
    }
    let mut reports = Vec::new();
    for pass in passes {
        cx.progress.start(pass.name(), None);
        let report = pass.run(model, cx);
        cx.progress.finish();
        let report = report?;
        verify_after(model, pass.name())?;
        reports.push(report);
        if opts.stop_after.as_deref() == Some(pass.name()) {
            break;
        }
    }
    Ok(reports)
}

/// The check every entry point makes after each pass: the model (every graph and function body) verifies, or
/// the error names the pass.
pub fn verify_after(model: &Model, pass: &str) -> Result<()> {
    model.verify().map_err(|e| Error::Pass {
        pass: pass.into(),
        msg: format!("left an invalid graph: {e}"),
    })
}
