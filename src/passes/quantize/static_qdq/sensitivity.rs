//! The drift budget's sensitivity search (`drift_budget`): which quantisable nodes stay float so that the
//! model's worst output cosine against the original reaches the budget. Each trial is a plan of its own
//! (`plan::assemble` for a subset of the sites), bound and built on a copy of the model and measured by the
//! pipeline's drift measure; the search returns the nodes to keep float and why, and the plan stage records
//! them as `kept_float`.
//!
//! Rule: rank the sites by the output cosine of quantising each alone (most sensitive first, ties by node for
//! determinism), then keep them float one by one until the rest meets the budget. A model that meets it with
//! every site quantised keeps none.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::ir::{Model, NodeId};
use crate::passes::{Outcome, PassContext, PassReport};

use super::bind::{bind, PlanSource};
use super::build::build;
use super::decide::Choices;
use super::plan::{assemble, PlanHeader};
use super::select::QdqSite;
use super::PASS;

/// What a trial needs besides the sites it quantises.
pub(super) struct Trials<'a> {
    pub model: &'a Model,
    pub choices: &'a Choices,
    pub exclude: &'a [String],
    pub header: &'a PlanHeader,
}

impl Trials<'_> {
    /// The model with exactly `keep` quantised.
    fn variant(&self, keep: &[&QdqSite]) -> Result<Model> {
        let chosen: BTreeSet<NodeId> = keep.iter().map(|s| s.node).collect();
        let mut m = self.model.clone();
        let plan = assemble(&m.graph, self.choices, &chosen, self.exclude, self.header);
        let bound = bind(&m.graph, &plan, PlanSource::Computed)?;
        let (patch, _) = build(&m.graph, &bound)?;
        m.graph.apply(patch)?;
        Ok(m)
    }
}

/// The sites (of those not already float) to keep float until the worst output cosine is at least `budget`,
/// each with the reason said in its remark.
pub(super) fn search(
    t: &Trials,
    cx: &mut PassContext,
    budget: f64,
    report: &mut PassReport,
) -> Result<BTreeMap<NodeId, String>> {
    let sites = t.choices.candidates();
    let full = cx.measure_drift(PASS, &t.variant(&sites)?)?.min_cosine();
    report.remark(
        "<model>",
        Outcome::Applied,
        format!(
            "sensitivity: all {} nodes quantised give output cosine {full:.6} (budget {budget})",
            sites.len(),
        ),
    );
    if full >= budget {
        return Ok(BTreeMap::new());
    }
    cx.progress.start("sensitivity", Some(sites.len() as u64));
    let mut alone = Vec::new();
    for s in &sites {
        let c = cx.measure_drift(PASS, &t.variant(&[*s])?)?.min_cosine();
        alone.push((c, s.node, s.at.clone()));
        cx.progress.advance(1);
    }
    cx.progress.finish();
    // most sensitive (lowest cosine alone) first; ties by node id for determinism
    alone.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut kept = BTreeMap::new();
    for (c, id, name) in &alone {
        kept.insert(*id, String::new());
        let rest: Vec<&QdqSite> = sites
            .iter()
            .copied()
            .filter(|s| !kept.contains_key(&s.node))
            .collect();
        let now = cx.measure_drift(PASS, &t.variant(&rest)?)?.min_cosine();
        let why = format!("kept float by sensitivity: quantised alone it gives output cosine {c:.6}; without it the model reaches {now:.6}");
        report.remark(name.clone(), Outcome::Skipped, why.clone());
        kept.insert(*id, why);
        if now >= budget {
            break;
        }
    }
    Ok(kept)
}
