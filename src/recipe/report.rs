//! The pipeline report: per pass what changed, remarks, time and drift against the original; then the
//! evaluation before -> after and the energy estimate. Serde (stable JSON) and a text table.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::passes::{Outcome, PassReport, Remark};
use crate::recipe::energy::{Energy, COST_MODEL};
use crate::recipe::{Budget, Cmp, Metric, Recipe, Step};
use crate::validate::{EvaluationReport, ValidationReport};

fn ser_f64<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        v if v.is_finite() => s.serialize_f64(*v),
        v if v.is_nan() => s.serialize_str("nan"),
        v if *v > 0.0 => s.serialize_str("inf"),
        _ => s.serialize_str("-inf"),
    }
}

fn ser_opt_f64<S: serde::Serializer>(
    v: &Option<f64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser_f64(v, s),
        None => s.serialize_none(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every pass ran and met its budget.
    Ok,
    /// `--stop-after` ended the run.
    StoppedAfter,
    /// A pass broke its budget: the run stopped there (exit 4).
    BudgetFailed,
}

/// The drift of one graph output after a pass, against the original.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftRow {
    pub output: String,
    #[serde(serialize_with = "ser_f64")]
    pub cosine: f64,
    #[serde(serialize_with = "ser_f64")]
    pub sqnr_db: f64,
    #[serde(serialize_with = "ser_opt_f64")]
    pub sqnr_centered_db: Option<f64>,
    #[serde(serialize_with = "ser_opt_f64")]
    pub pearson: Option<f64>,
    #[serde(serialize_with = "ser_f64")]
    pub max_abs: f64,
    #[serde(serialize_with = "ser_f64")]
    pub mean_abs: f64,
    #[serde(serialize_with = "ser_opt_f64")]
    pub top1: Option<f64>,
    #[serde(serialize_with = "ser_opt_f64")]
    pub top5: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetCheck {
    pub budget: String,
    pub line: usize,
    /// The measured value (worst over the graph outputs); `None` when the measure is undefined here.
    #[serde(serialize_with = "ser_opt_f64")]
    pub value: Option<f64>,
    pub passed: bool,
    /// Set when the value is a stand-in: a centred measure undefined on every output (each reference output is
    /// constant) is judged by its raw counterpart, as the validator does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judged_by: Option<&'static str>,
}

/// One pass of the run.
#[derive(Clone, Debug, Serialize)]
pub struct PassEntry {
    /// 1-based position in the recipe.
    pub index: usize,
    pub pass: String,
    pub line: usize,
    pub options: serde_json::Value,
    pub changed: bool,
    pub stats: BTreeMap<String, u64>,
    /// Counts of what the change log records (nodes added / removed..., from `ChangeLog`).
    pub changes: serde_json::Value,
    /// How many changes of each kind the change log holds.
    pub change_counts: BTreeMap<String, u64>,
    pub remarks: Vec<Remark>,
    /// Wall time of the pass (not deterministic; drift measurement excluded).
    pub time_ms: f64,
    /// Drift of every graph output against the original, after this pass.
    pub drift: Vec<DriftRow>,
    /// Top-1 accuracy against the labels after this pass, and the original's.
    #[serde(serialize_with = "ser_opt_f64")]
    pub accuracy: Option<f64>,
    #[serde(serialize_with = "ser_opt_f64")]
    pub accuracy_original: Option<f64>,
    pub budget: Vec<BudgetCheck>,
    pub passed: bool,
}

impl PassEntry {
    pub fn new(k: usize, step: &Step, r: PassReport, time_ms: f64) -> PassEntry {
        let mut remarks = r.remarks;
        for m in &step.remarks {
            remarks.insert(
                0,
                Remark {
                    at: "recipe".into(),
                    outcome: Outcome::Applied,
                    reason: m.clone(),
                },
            );
        }
        let changes = serde_json::to_value(&r.changes).unwrap_or_default();
        let mut change_counts: BTreeMap<String, u64> = BTreeMap::new();
        if let Some(list) = changes.get("changes").and_then(|c| c.as_array()) {
            for c in list {
                if let Some(kind) = c.get("kind").and_then(|k| k.as_str()) {
                    *change_counts.entry(kind.to_string()).or_default() += 1;
                }
            }
        }
        PassEntry {
            index: k + 1,
            pass: step.name.clone(),
            line: step.line,
            options: step.options.clone(),
            changed: r.changed,
            stats: r.stats,
            changes,
            change_counts,
            remarks,
            time_ms,
            drift: Vec::new(),
            accuracy: None,
            accuracy_original: None,
            budget: Vec::new(),
            passed: true,
        }
    }

    /// Fill the drift from a comparison against the original and check the budget.
    pub fn measure(&mut self, v: &ValidationReport, budget: &[Budget]) {
        for o in &v.outputs {
            if let Some(m) = &o.metrics {
                self.drift.push(DriftRow {
                    output: o.name.clone(),
                    cosine: m.cosine,
                    sqnr_db: m.sqnr_db,
                    sqnr_centered_db: m.sqnr_centered_db,
                    pearson: m.pearson,
                    max_abs: m.max_abs,
                    mean_abs: m.mean_abs,
                    top1: m.top1,
                    top5: m.top5,
                });
            }
        }
        if let Some(a) = &v.accuracy {
            self.accuracy = Some(a.candidate.top1);
            self.accuracy_original = Some(a.reference.top1);
        }
        // an output that could not be compared (shape / type mismatch) fails every budget
        let incomparable = v.outputs.iter().any(|o| o.metrics.is_none());
        for b in budget {
            let mut judged_by = None;
            let value = if incomparable {
                None
            } else {
                self.value(b.metric).or_else(|| {
                    // every reference output is constant (a detector's score map on noise): the centred
                    // measures are undefined, so the raw one with the same scale judges, as in `validate`
                    let raw = match b.metric {
                        Metric::SqnrCenteredDb => Metric::SqnrDb,
                        Metric::Pearson => Metric::Cosine,
                        _ => return None,
                    };
                    judged_by = Some(raw.name());
                    self.value(raw)
                })
            };
            let passed = match value {
                // NaN compares false: a NaN drift fails
                Some(x) => match b.cmp {
                    Cmp::Ge => x >= b.limit,
                    Cmp::Le => x <= b.limit,
                },
                None => false,
            };
            self.passed &= passed;
            self.budget.push(BudgetCheck {
                budget: b.text.clone(),
                line: b.line,
                value,
                passed,
                judged_by: judged_by.filter(|_| value.is_some()),
            });
        }
    }

    /// The worst value of a metric over the graph outputs (`None` when no output defines it).
    fn value(&self, m: Metric) -> Option<f64> {
        let worst = |vals: Vec<Option<f64>>, lower_is_worse: bool| -> Option<f64> {
            let vals: Vec<f64> = vals.into_iter().flatten().collect();
            if vals.is_empty() {
                return None;
            }
            Some(vals.into_iter().fold(
                if lower_is_worse {
                    f64::INFINITY
                } else {
                    f64::NEG_INFINITY
                },
                |a, b| {
                    if a.is_nan() || b.is_nan() {
                        f64::NAN
                    } else if lower_is_worse {
                        a.min(b)
                    } else {
                        a.max(b)
                    }
                },
            ))
        };
        let d = &self.drift;
        match m {
            Metric::Cosine => worst(d.iter().map(|r| Some(r.cosine)).collect(), true),
            Metric::SqnrDb => worst(d.iter().map(|r| Some(r.sqnr_db)).collect(), true),
            Metric::SqnrCenteredDb => worst(d.iter().map(|r| r.sqnr_centered_db).collect(), true),
            Metric::Pearson => worst(d.iter().map(|r| r.pearson).collect(), true),
            Metric::MaxAbs => worst(d.iter().map(|r| Some(r.max_abs)).collect(), false),
            Metric::MeanAbs => worst(d.iter().map(|r| Some(r.mean_abs)).collect(), false),
            Metric::Top1 => worst(d.iter().map(|r| r.top1).collect(), true),
            Metric::Top5 => worst(d.iter().map(|r| r.top5).collect(), true),
            Metric::Accuracy => self.accuracy,
            Metric::AccuracyDrop => match (self.accuracy_original, self.accuracy) {
                (Some(a), Some(b)) => Some((a - b) * 100.0),
                _ => None,
            },
        }
    }
}

/// Everything one run did.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub tool: String,
    pub recipe: String,
    pub recipe_sha256: String,
    pub input_sha256: Option<String>,
    /// Filled by the caller once the output is written.
    pub output_sha256: Option<String>,
    pub status: Status,
    /// The pass that broke its budget.
    pub failed_pass: Option<String>,
    pub passes: Vec<PassEntry>,
    pub before: Option<EvaluationReport>,
    pub after: Option<EvaluationReport>,
    pub energy_before: Option<Energy>,
    pub energy_after: Option<Energy>,
    /// The figures the energy estimate assumes, with their source.
    pub cost_model: &'static crate::recipe::energy::CostModel,
    /// The text form prints every remark (`run -v`) instead of one line per kind; the JSON has them all.
    #[serde(skip)]
    pub every_remark: bool,
}

impl PipelineReport {
    pub fn new(recipe: &Recipe, input_sha256: Option<String>) -> PipelineReport {
        PipelineReport {
            tool: format!("onnx-rewrite {}", env!("CARGO_PKG_VERSION")),
            recipe: recipe.source.clone(),
            recipe_sha256: recipe.sha256.clone(),
            input_sha256,
            output_sha256: None,
            status: Status::Ok,
            failed_pass: None,
            passes: Vec::new(),
            before: None,
            after: None,
            energy_before: None,
            energy_after: None,
            cost_model: &COST_MODEL,
            every_remark: false,
        }
    }

    pub fn passed(&self) -> bool {
        self.status != Status::BudgetFailed
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        Some(v) => format!("{v}"),
        None => "-".into(),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 {
        format!("{:.3}x", b / a)
    } else {
        "-".into()
    }
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "recipe {} (sha256 {})", self.recipe, &self.recipe_sha256)?;
        writeln!(
            f,
            "{:>2}  {:<20} {:>8} {:>9} {:>10} {:>11} {:>9} {:>8}  budget",
            "#", "pass", "changed", "time ms", "cosine", "sqnr_c dB", "top1 agr", "acc"
        )?;
        for p in &self.passes {
            let worst = |g: &dyn Fn(&DriftRow) -> Option<f64>| {
                p.drift
                    .iter()
                    .filter_map(g)
                    .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.min(b))))
            };
            let budget: Vec<String> = p
                .budget
                .iter()
                .map(|b| {
                    format!(
                        "{} [{}{}] {}",
                        b.budget,
                        num(b.value, 4),
                        b.judged_by
                            .map(|m| format!(" as {m}: reference constant"))
                            .unwrap_or_default(),
                        if b.passed { "ok" } else { "BROKEN" }
                    )
                })
                .collect();
            writeln!(
                f,
                "{:>2}  {:<20} {:>8} {:>9.1} {:>10} {:>11} {:>9} {:>8}  {}",
                p.index,
                p.pass,
                if p.changed { "yes" } else { "no" },
                p.time_ms,
                num(worst(&|r| Some(r.cosine)), 6),
                num(worst(&|r| r.sqnr_centered_db), 1),
                num(worst(&|r| r.top1), 4),
                num(p.accuracy, 4),
                budget.join("; ")
            )?;
            for (k, v) in &p.stats {
                writeln!(f, "      {k} = {v}")?;
            }
            if !p.change_counts.is_empty() {
                let c: Vec<String> = p
                    .change_counts
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                writeln!(f, "      changes: {}", c.join(", "))?;
            }
            if !self.every_remark {
                crate::passes::remarks::write_groups(f, &p.remarks, "      ")?;
                continue;
            }
            for r in &p.remarks {
                let o = match r.outcome {
                    Outcome::Applied => "applied",
                    Outcome::Skipped => "skipped",
                };
                writeln!(f, "      {o} {}: {}", r.at, r.reason)?;
            }
        }
        match self.status {
            Status::BudgetFailed => writeln!(
                f,
                "STOPPED: {} broke its budget (drift measured against the original)",
                self.failed_pass.as_deref().unwrap_or("?")
            )?,
            Status::StoppedAfter => writeln!(f, "stopped after the requested pass")?,
            Status::Ok => {}
        }
        if let (Some(b), Some(a)) = (&self.before, &self.after) {
            writeln!(
                f,
                "\n{:<24} {:>14} {:>14} {:>8}",
                "", "before", "after", "ratio"
            )?;
            let row = |f: &mut fmt::Formatter<'_>, name: &str, x: f64, y: f64, d: usize| {
                writeln!(
                    f,
                    "{name:<24} {:>14} {:>14} {:>8}",
                    format!("{x:.d$}"),
                    format!("{y:.d$}"),
                    ratio(x, y)
                )
            };
            row(
                f,
                "file bytes (inline)",
                b.file.total_bytes as f64,
                a.file.total_bytes as f64,
                0,
            )?;
            row(
                f,
                "parameters",
                b.params_total as f64,
                a.params_total as f64,
                0,
            )?;
            let pb: u64 = b.params.values().map(|p| p.bytes).sum();
            let pa: u64 = a.params.values().map(|p| p.bytes).sum();
            row(f, "parameter bytes", pb as f64, pa as f64, 0)?;
            row(f, "MACs", b.macs_total as f64, a.macs_total as f64, 0)?;
            if let (Some(lb), Some(la)) = (&b.latency, &a.latency) {
                row(f, "latency ms (median)", lb.median_ms, la.median_ms, 3)?;
                if a.remarks
                    .iter()
                    .any(|r| r == crate::recipe::QDQ_LATENCY_REMARK)
                {
                    writeln!(f, "{}", crate::recipe::QDQ_LATENCY_REMARK)?;
                }
            }
            if let (Some(x), Some(y)) = (&b.accuracy, &a.accuracy) {
                writeln!(
                    f,
                    "{:<24} {:>14} {:>14} {:>8}",
                    "accuracy (top-1)",
                    format!("{:.4}", x.top1),
                    format!("{:.4}", y.top1),
                    format!("{:+.2} pt", (y.top1 - x.top1) * 100.0)
                )?;
            }
            if let (Some(eb), Some(ea)) = (&self.energy_before, &self.energy_after) {
                row(f, "energy uJ/run (estimate)", eb.total_uj, ea.total_uj, 3)?;
                row(
                    f,
                    &format!("energy uJ/sample (N={})", ea.batch),
                    eb.per_sample_uj,
                    ea.per_sample_uj,
                    3,
                )?;
            }
            writeln!(f, "energy: an estimate from {}", self.cost_model.source)?;
        }
        if let Some(d) = &self.input_sha256 {
            writeln!(f, "input sha256  {d}")?;
        }
        if let Some(d) = &self.output_sha256 {
            writeln!(f, "output sha256 {d}")?;
        }
        Ok(())
    }
}
