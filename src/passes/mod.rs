//! Passes: the `Pass` trait, reports with per-node remarks, the registry and the pipeline; the services a pass
//! may use (`PassContext`: calibrator, drift measure, progress), options structs and pass specs.
//!
//! A pass reads the model, builds `Patch`es and applies them; whether it changed anything comes from the
//! `ChangeLog`s those patches returned, never from counting nodes.

pub mod cleanup;
pub mod context;
pub mod convert;
pub mod fold;
pub mod lowrank;
pub mod options;
pub mod pipeline;
pub mod prune;
pub mod quantize;
pub mod registry;
pub mod remarks;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::error::Result;
use crate::ir::{ChangeLog, Model};

pub use context::{
    DriftMeasure, DriftSummary, NoProgress, OutputDrift, PassContext, Progress, StderrProgress,
};
pub use options::{OptionDoc, OptionInfo, OptionType, PassOptions};
pub use pipeline::{run_passes, run_pipeline, run_pipeline_with, verify_after, PipelineOptions};
pub use registry::{lookup, PassInfo, PASSES};

/// What happened at one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Remark {
    /// Node (or value) name, with the subgraph path for nested graphs (`if_0/then_branch/conv`).
    pub at: String,
    pub outcome: Outcome,
    pub reason: String,
}

/// What a pass did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub pass: String,
    pub changed: bool,
    pub stats: BTreeMap<String, u64>,
    pub remarks: Vec<Remark>,
    pub changes: ChangeLog,
}

impl PassReport {
    pub fn new(pass: &str) -> PassReport {
        PassReport {
            pass: pass.to_string(),
            ..Default::default()
        }
    }

    /// Fold a patch's change log into the report (`changed` follows from it).
    pub fn record(&mut self, log: ChangeLog) {
        self.changed |= !log.is_empty();
        self.changes.extend(log);
    }

    pub fn stat(&mut self, key: &str, n: u64) {
        *self.stats.entry(key.to_string()).or_default() += n;
    }

    pub fn remark(&mut self, at: impl Into<String>, outcome: Outcome, reason: impl Into<String>) {
        self.remarks.push(Remark {
            at: at.into(),
            outcome,
            reason: reason.into(),
        });
    }
}

impl PassReport {
    /// The first line of both renderings: the pass, whether it changed the model, its stats.
    fn write_header(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pass {}: {}",
            self.pass,
            if self.changed { "changed" } else { "no change" }
        )?;
        for (k, v) in &self.stats {
            write!(f, ", {k}={v}")?;
        }
        writeln!(f)
    }

    /// The report with its remarks grouped by kind (one line per kind, with a count), for a person; `Display`
    /// prints every remark.
    pub fn summary(&self) -> remarks::Summary<'_> {
        remarks::Summary(self)
    }
}

/// Every remark, one line per node (what `-v` prints).
impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_header(f)?;
        for r in &self.remarks {
            let o = match r.outcome {
                Outcome::Applied => "applied",
                Outcome::Skipped => "skipped",
            };
            writeln!(f, "  {o} {}: {}", r.at, r.reason)?;
        }
        Ok(())
    }
}

pub trait Pass {
    /// Stable kebab-case name (CLI, recipes, reports, snapshots).
    fn name(&self) -> &'static str;
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<PassReport>;
}
