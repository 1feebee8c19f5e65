//! Recipes: an ordered list of passes with their options, node filters and per-pass validation budgets, run as
//! one pipeline with one report.
//!
//! ```toml
//! # node filters for every pass that supports them (a pass supports `include` / `exclude` / `ops` when its
//! # options struct has a field of that name)
//! [filter]
//! exclude = ["fc2"]
//!
//! [[pass]]
//! name = "fold-batchnorm"
//! budget = "cosine >= 0.99999"            # one expression, or a list of them
//!
//! [[pass]]
//! name = "upgrade-opset"
//! options = { to = 13 }                    # the pass's options struct (`onnx-rewrite passes`)
//! filter = { exclude = ["fc2"] }           # only for passes that support node filters
//! budget = ["sqnr_centered_db >= 25", "accuracy_drop <= 0.5"]
//! ```
//!
//! [`run_recipe`] measures the drift of the model after every pass against the *original* (one reference run of
//! the original, reused), checks that pass's budget, and stops at the first pass that breaks it. The
//! [`PipelineReport`] says what each pass changed, its remarks, its time and its drift, then the evaluation
//! before -> after and an energy estimate (see [`energy`]).

pub mod energy;
pub mod parse;
pub mod report;

use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ir::{MetaEntry, Model};
use crate::passes::{registry, NoProgress, PassContext, Progress, StderrProgress};
use crate::validate::{self, ReferenceRun, Tolerances, ValidateOptions};

pub use parse::parse;
pub use report::{BudgetCheck, DriftRow, PassEntry, PipelineReport, Status};

/// A checked recipe: every pass exists and its options parse, every budget is well formed.
#[derive(Clone, Debug, Serialize)]
pub struct Recipe {
    /// Where it came from (a file name, or `-p` for pass specs).
    pub source: String,
    /// sha256 of the recipe text.
    pub sha256: String,
    pub steps: Vec<Step>,
}

/// One pass of a recipe.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub name: String,
    /// The options table handed to the registry's `make` (filters included).
    pub options: serde_json::Value,
    pub budget: Vec<Budget>,
    /// Line of the `[[pass]]` table in the recipe (0 for a `-p` spec).
    pub line: usize,
    /// Notes from reading the recipe (a global filter applied to this pass).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remarks: Vec<String>,
}

/// A drift metric a budget bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Raw cosine similarity (lowest over the graph outputs).
    Cosine,
    /// SQNR in dB against the reference's power.
    SqnrDb,
    /// SQNR in dB against the reference's variance (an offset cannot hide drift).
    SqnrCenteredDb,
    /// Pearson correlation.
    Pearson,
    /// Largest |reference - candidate|.
    MaxAbs,
    /// Mean |reference - candidate|.
    MeanAbs,
    /// Top-1 agreement with the original of a classifier-like output (fraction).
    Top1,
    /// Top-5 agreement (fraction).
    Top5,
    /// Top-1 accuracy against the labels (fraction; needs labels).
    Accuracy,
    /// Accuracy lost against the original, in percentage points (needs labels).
    AccuracyDrop,
}

impl Metric {
    pub const ALL: &'static [Metric] = &[
        Metric::Cosine,
        Metric::SqnrDb,
        Metric::SqnrCenteredDb,
        Metric::Pearson,
        Metric::MaxAbs,
        Metric::MeanAbs,
        Metric::Top1,
        Metric::Top5,
        Metric::Accuracy,
        Metric::AccuracyDrop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::SqnrDb => "sqnr_db",
            Metric::SqnrCenteredDb => "sqnr_centered_db",
            Metric::Pearson => "pearson",
            Metric::MaxAbs => "max_abs",
            Metric::MeanAbs => "mean_abs",
            Metric::Top1 => "top1",
            Metric::Top5 => "top5",
            Metric::Accuracy => "accuracy",
            Metric::AccuracyDrop => "accuracy_drop",
        }
    }

    pub fn from_name(s: &str) -> Option<Metric> {
        let s = match s {
            "sqnr" => "sqnr_db",
            "sqnr_centered" => "sqnr_centered_db",
            s => s,
        };
        Metric::ALL.iter().copied().find(|m| m.name() == s)
    }

    /// Which way a budget bounds it: `>=` for measures of agreement, `<=` for errors and losses.
    pub fn direction(self) -> Cmp {
        match self {
            Metric::MaxAbs | Metric::MeanAbs | Metric::AccuracyDrop => Cmp::Le,
            _ => Cmp::Ge,
        }
    }

    pub fn needs_labels(self) -> bool {
        matches!(self, Metric::Accuracy | Metric::AccuracyDrop)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cmp {
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<=")]
    Le,
}

/// `metric >= limit` or `metric <= limit`.
#[derive(Clone, Debug, Serialize)]
pub struct Budget {
    pub text: String,
    pub metric: Metric,
    pub cmp: Cmp,
    pub limit: f64,
    pub line: usize,
}

/// How to run a recipe.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Samples (inputs, seed, dims, labels...) for the drift after each pass and the evaluation; `None` skips
    /// both (then a recipe with budgets is refused).
    pub validate: Option<ValidateOptions>,
    /// Stop after the first pass with this name (bisection).
    pub stop_after: Option<String>,
    /// Timed runs of the evaluation (0: no latency).
    pub latency_runs: usize,
    /// Progress bars on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
    /// sha256 of the input model file, recorded in the report and the output's metadata.
    pub input_sha256: Option<String>,
    /// Where passes may stream large tensors (the output's folder; see `PassContext::scratch`).
    pub scratch: Option<crate::io::external::Spill>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A recipe of pass specs (`-p a,b{k=v}`): no budgets.
pub fn from_specs(specs: &[String]) -> Result<Recipe> {
    let mut steps = Vec::new();
    for s in specs {
        let p = crate::passes::spec::parse(s)?;
        let options = serde_json::Value::Object(p.options);
        registry::make(&p.name, options.clone())?;
        steps.push(Step {
            name: p.name,
            options,
            budget: Vec::new(),
            line: 0,
            remarks: Vec::new(),
        });
    }
    Ok(Recipe {
        source: "-p".into(),
        sha256: sha256_hex(specs.join("\n").as_bytes()),
        steps,
    })
}

/// The recipe `run IN OUT` uses when given neither `--recipe` nor `-p`: drift budgets only (no labels needed)
/// and passes that apply to any model. Its text is `examples/general.toml`, built into the binary.
pub fn general() -> Recipe {
    parse(
        include_str!("../../examples/general.toml"),
        "built-in general recipe (examples/general.toml)",
    )
    .expect("the built-in recipe parses (a unit test checks it)")
}

/// Read and check a recipe file.
pub fn load(path: &std::path::Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read recipe {}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

/// A recipe given as data with the TOML file's schema (`pass` list, `filter` table), e.g. a Python dict: written
/// out as TOML and read by [`parse`], so it is checked, and its errors worded, exactly like a file's (`source`
/// names it; lines are those of the TOML text).
pub fn from_value(value: &serde_json::Value, source: &str) -> Result<Recipe> {
    if !value.is_object() {
        return Err(Error::Usage(format!(
            "recipe {source}: expected a table (`{{\"pass\": [{{\"name\": ...}}]}}`), got {}",
            match value {
                serde_json::Value::Array(_) => "a list",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Null => "null",
                _ => "a scalar",
            }
        )));
    }
    let bad = |e: &dyn std::fmt::Display| Error::Usage(format!("recipe {source}: {e}"));
    let table = toml::Value::try_from(value).map_err(|e| bad(&e))?;
    let text = toml::to_string(&table).map_err(|e| bad(&e))?;
    parse(&text, source)
}

/// The keys written to the output's `metadata_props`.
pub const META_INPUT: &str = "onnx_rewrite.input_sha256";
pub const META_RECIPE: &str = "onnx_rewrite.recipe_sha256";
pub const META_PASSES: &str = "onnx_rewrite.passes";

/// Run `recipe` on `model`. Returns the rewritten model and the report; a broken budget is not an error: the
/// report's status is [`Status::BudgetFailed`] and the model is the one after the failing pass (the caller
/// decides not to write it). Errors: a pass failing (exit 1), samples that cannot be prepared, a model tract
/// cannot run (exit 5), budgets with no samples or accuracy budgets with no labels (usage, exit 2).
pub fn run_recipe(
    model: Model,
    recipe: &Recipe,
    opts: &RunOptions,
) -> Result<(Model, PipelineReport)> {
    // every budget checked against what the run can measure, before any work
    for s in &recipe.steps {
        for b in &s.budget {
            let v = opts.validate.as_ref();
            if v.is_none() {
                return Err(Error::Usage(format!(
                    "recipe {} line {}: budget '{}' needs validation, which is off",
                    recipe.source, b.line, b.text
                )));
            }
            if b.metric.needs_labels() && v.and_then(|v| v.labels.as_ref()).is_none() {
                return Err(Error::Usage(format!(
                    "recipe {} line {}: budget '{}' needs --labels",
                    recipe.source, b.line, b.text
                )));
            }
        }
    }
    if let Some(stop) = &opts.stop_after {
        if !recipe.steps.iter().any(|s| &s.name == stop) {
            registry::lookup(stop)?;
            return Err(Error::Usage(format!(
                "--stop-after {stop}: the recipe has no pass '{stop}'"
            )));
        }
    }
    let original = model;
    let mut model = original.clone();
    let mut progress: Box<dyn Progress> = if opts.progress {
        Box::new(StderrProgress::new())
    } else {
        Box::new(NoProgress)
    };
    let mut report = PipelineReport::new(recipe, opts.input_sha256.clone());

    // one reference run of the original, reused after every pass (outputs only: attribution is for `validate`)
    let reference = match &opts.validate {
        Some(v) => {
            progress.start("reference run", None);
            let mut vo = v.clone();
            vo.attribution = false;
            vo.latency_runs = None;
            let r = ReferenceRun::new(&original, None, &vo);
            progress.finish();
            Some(r?)
        }
        None => None,
    };
    let scratch = opts.scratch.clone();
    let mut cx = match &opts.validate {
        Some(v) => validate::pass_services(&original, v.clone(), progress, scratch),
        None => PassContext {
            progress,
            scratch,
            ..PassContext::default()
        },
    };
    for (k, step) in recipe.steps.iter().enumerate() {
        let pass = registry::make(&step.name, step.options.clone())?;
        let t0 = Instant::now();
        cx.progress.start(&step.name, None);
        let r = pass.run(&mut model, &mut cx);
        cx.progress.finish();
        let pr = r?;
        crate::passes::verify_after(&model, &step.name)?;
        let time_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut entry = PassEntry::new(k, step, pr, time_ms);
        if let Some(reference) = &reference {
            cx.progress.start(&format!("{}: drift", step.name), None);
            let v = validate::compare_with_reference(reference, &model, &Tolerances::none());
            cx.progress.finish();
            entry.measure(&v?, &step.budget);
        }
        let failed = !entry.passed;
        report.passes.push(entry);
        if failed {
            report.status = Status::BudgetFailed;
            report.failed_pass = Some(format!(
                "{} (pass {}, line {})",
                step.name,
                k + 1,
                step.line
            ));
            break;
        }
        if opts.stop_after.as_deref() == Some(step.name.as_str()) {
            report.status = Status::StoppedAfter;
            break;
        }
    }
    drop(cx);

    let ran: Vec<String> = report.passes.iter().map(|p| p.pass.clone()).collect();
    stamp(&mut model, recipe, &ran, opts);
    if let Some(v) = &opts.validate {
        if report.status != Status::BudgetFailed {
            let mut vo = v.clone();
            vo.latency_runs = Some(opts.latency_runs);
            // both sizes as serialized with every tensor inline: like for like, whatever the input's layout
            let mut inline = original.clone();
            inline.source = None;
            let before = validate::evaluate(&inline, None, &vo)?;
            drop(inline);
            let mut after_model = model.clone();
            after_model.source = None;
            let mut after = validate::evaluate(&after_model, None, &vo)?;
            let mut qdq = false;
            model.visit_graphs(&mut |site| {
                qdq |= site
                    .graph()
                    .nodes()
                    .any(|(_, n)| n.op.op_type == "QuantizeLinear");
                Ok(())
            })?;
            if qdq && after.latency.is_some() {
                after.remarks.push(QDQ_LATENCY_REMARK.to_string());
            }
            report.energy_before = Some(energy::estimate(&original, &before));
            report.energy_after = Some(energy::estimate(&model, &after));
            report.before = Some(before);
            report.after = Some(after);
        }
    }
    Ok((model, report))
}

/// Said under the latency of a model with activation QDQ: tract's figure is not what an integer runtime sees.
pub const QDQ_LATENCY_REMARK: &str =
    "latency: tract runs QuantizeLinear / DequantizeLinear as separate float \
ops; ONNX Runtime fuses this QDQ layout into integer kernels, so measure deployment latency there";

/// Record the input and recipe digests and the passes run in the model's `metadata_props` (replacing earlier
/// entries of ours, so that a re-run does not pile them up).
fn stamp(model: &mut Model, recipe: &Recipe, ran: &[String], opts: &RunOptions) {
    let keys = [META_INPUT, META_RECIPE, META_PASSES];
    model
        .metadata_props
        .retain(|e| !keys.contains(&e.key.as_deref().unwrap_or("")));
    let mut put = |k: &str, v: String| {
        model.metadata_props.push(MetaEntry {
            key: Some(k.to_string()),
            value: Some(v),
        })
    };
    if let Some(d) = &opts.input_sha256 {
        put(META_INPUT, d.clone());
    }
    put(META_RECIPE, recipe.sha256.clone());
    put(META_PASSES, ran.join(","));
}
