//! The comparison report: serde (stable JSON) and a text table.

use std::fmt;

use serde::Serialize;

use crate::validate::evaluate::{Accuracy, Latency};
use crate::validate::inputs::InputSpec;
use crate::validate::metrics::{ser_f64, ser_opt_f64, Metrics};
use crate::validate::Tolerances;

/// One tolerance check on one output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// `max_abs`, `mean_abs`, `cosine`, `sqnr_db`, `pearson`, `sqnr_centered_db`, `top1`, `top5`, `nonfinite`,
    /// `shape`.
    pub metric: String,
    #[serde(serialize_with = "ser_f64")]
    pub value: f64,
    #[serde(serialize_with = "ser_f64")]
    pub limit: f64,
    pub passed: bool,
}

/// A graph output compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputReport {
    pub name: String,
    /// The candidate's output name when it differs (outputs matched by position).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_name: Option<String>,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// `None` when the outputs could not be compared (shape or type mismatch: see `checks`).
    pub metrics: Option<Metrics>,
    pub checks: Vec<Check>,
    pub passed: bool,
}

/// An intermediate tensor present in both models (same name), compared for attribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorDrift {
    pub name: String,
    /// Op of the reference node producing it.
    pub op: String,
    pub shape: Vec<usize>,
    #[serde(serialize_with = "ser_f64")]
    pub sqnr_db: f64,
    /// SQNR against the reference's variance; `None` when the reference tensor is constant.
    #[serde(serialize_with = "ser_opt_f64")]
    pub sqnr_centered_db: Option<f64>,
    #[serde(serialize_with = "ser_f64")]
    pub max_abs: f64,
    #[serde(serialize_with = "ser_f64")]
    pub cosine: f64,
}

/// The result of `compare`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationReport {
    pub passed: bool,
    pub samples: usize,
    pub inputs: Vec<InputSpec>,
    pub tolerances: Tolerances,
    pub outputs: Vec<OutputReport>,
    /// Intermediate tensors in the reference's topological order (empty when attribution is off).
    pub tensors: Vec<TensorDrift>,
    /// The first shared intermediate tensor whose centred SQNR (raw SQNR for a constant tensor) is below the
    /// centred SQNR tolerance (else the raw one, else 20 dB): where drift begins.
    pub first_drift: Option<String>,
    /// Things the user must know to trust the result (folded int4 weights, skipped tensors...).
    pub remarks: Vec<String>,
    pub latency: Option<LatencyPair>,
    pub accuracy: Option<AccuracyPair>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyPair {
    pub reference: Latency,
    pub candidate: Latency,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccuracyPair {
    pub reference: Accuracy,
    pub candidate: Accuracy,
}

impl ValidationReport {
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// The report as pretty JSON (stable: same inputs give the same bytes).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

pub(crate) fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_num).unwrap_or_else(|| "-".into())
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "validation: {} ({} sample{})",
            if self.passed { "PASSED" } else { "FAILED" },
            self.samples,
            if self.samples == 1 { "" } else { "s" }
        )?;
        for i in &self.inputs {
            writeln!(
                f,
                "  input {}: {}{:?} {}",
                i.name, i.dtype, i.shape, i.source
            )?;
        }
        writeln!(
            f,
            "{:<28} {:>10} {:>10} {:>10} {:>9} {:>10} {:>9} {:>6} {:>6}  result",
            "output",
            "max_abs",
            "mean_abs",
            "cosine",
            "sqnr_dB",
            "pearson",
            "sqnrc_dB",
            "top1",
            "top5"
        )?;
        for o in &self.outputs {
            let failed: Vec<String> = o
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{} {} vs {}", c.metric, fmt_num(c.value), fmt_num(c.limit)))
                .collect();
            let res = if o.passed {
                "ok".to_string()
            } else {
                format!("FAIL ({})", failed.join(", "))
            };
            match &o.metrics {
                Some(m) => writeln!(
                    f,
                    "{:<28} {:>10} {:>10} {:>10} {:>9} {:>10} {:>9} {:>6} {:>6}  {res}",
                    o.name,
                    fmt_num(m.max_abs),
                    fmt_num(m.mean_abs),
                    fmt_num(m.cosine),
                    fmt_num(m.sqnr_db),
                    opt(m.pearson),
                    opt(m.sqnr_centered_db),
                    opt(m.top1),
                    opt(m.top5)
                )?,
                None => writeln!(f, "{:<28} {res}", o.name)?,
            }
        }
        if !self.tensors.is_empty() {
            writeln!(
                f,
                "intermediate tensors (topological order, {}):",
                self.tensors.len()
            )?;
            writeln!(
                f,
                "  {:<40} {:<18} {:>9} {:>9} {:>10} {:>10}",
                "tensor", "op", "sqnr_dB", "sqnrc_dB", "max_abs", "cosine"
            )?;
            for t in &self.tensors {
                writeln!(
                    f,
                    "  {:<40} {:<18} {:>9} {:>9} {:>10} {:>10}",
                    t.name,
                    t.op,
                    fmt_num(t.sqnr_db),
                    opt(t.sqnr_centered_db),
                    fmt_num(t.max_abs),
                    fmt_num(t.cosine)
                )?;
            }
        }
        if let Some(d) = &self.first_drift {
            writeln!(f, "drift begins at: {d}")?;
        }
        if let Some(a) = &self.accuracy {
            writeln!(
                f,
                "accuracy top1 {} -> {}, top5 {} -> {} ({} labelled rows)",
                fmt_num(a.reference.top1),
                fmt_num(a.candidate.top1),
                opt(a.reference.top5),
                opt(a.candidate.top5),
                a.reference.rows
            )?;
        }
        if let Some(l) = &self.latency {
            writeln!(
                f,
                "latency median {} ms -> {} ms ({} runs)",
                fmt_num(l.reference.median_ms),
                fmt_num(l.candidate.median_ms),
                l.reference.runs
            )?;
        }
        for r in &self.remarks {
            writeln!(f, "remark: {r}")?;
        }
        Ok(())
    }
}
