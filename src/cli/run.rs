//! `run IN OUT (--recipe FILE | -p SPECS)`: flags -> `recipe::RunOptions` -> `recipe::run_recipe` (recipes), or
//! the plain pipeline for `-p` specs.

use std::path::PathBuf;

use clap::Args;

use super::{say_relocated, split_specs, validate, write_json, DataArgs};
use crate::error::{Error, Exit, Result};
use crate::io;
use crate::passes::{self, PipelineOptions};
use crate::recipe::{self, RunOptions};

#[derive(Args, Debug)]
pub struct RunArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Passes to run, in order: `name` or `name{key=value,...}`; repeat or separate with commas.
    /// With neither `-p` nor `--recipe`, the built-in general recipe runs (`examples/general.toml`).
    #[arg(short, long = "pass", conflicts_with = "recipe")]
    pub passes: Vec<String>,
    /// A recipe (TOML): passes with options, node filters and per-pass validation budgets; drift against the
    /// input is measured after every pass and the run stops (exit 4) at the first pass past its budget.
    #[arg(long, value_name = "FILE.toml")]
    pub recipe: Option<PathBuf>,
    /// Stop after this pass (bisecting a problem).
    #[arg(long)]
    pub stop_after: Option<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the structural diff of input and output.
    #[arg(long)]
    pub diff: bool,
    /// (`-p`) Validate the result against the input through tract; on failure exit 4 and write nothing.
    #[arg(long)]
    pub validate: bool,
    /// Run every pass and print the report without writing the model.
    #[arg(long)]
    pub dry_run: bool,
    /// (`--recipe`) Timed runs of the before/after evaluation (0: no latency).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub latency: usize,
    /// (`--recipe`) Do not run the models through tract: no drift after each pass, no evaluation (a recipe
    /// with budgets is then refused). For models tract cannot run.
    #[arg(long)]
    pub no_validate: bool,
    /// Print nothing but errors (and the final status line).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print every per-node remark (grouped by kind by default), each pass's change log and the
    /// structural diff.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub inputs: validate::InputArgs,
    #[command(flatten)]
    pub tolerances: validate::ToleranceArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(a: RunArgs) -> Result<Exit> {
    match &a.recipe {
        Some(path) => run_recipe(&a, recipe::load(path)?),
        None if a.passes.is_empty() => run_recipe(&a, recipe::general()),
        None => run_specs(a),
    }
}

fn run_recipe(a: &RunArgs, recipe: recipe::Recipe) -> Result<Exit> {
    let t = &a.tolerances;
    let tolerance_flag = t.max_abs.is_some()
        || t.mean_abs.is_some()
        || t.min_cosine.is_some()
        || t.min_sqnr.is_some()
        || t.min_pearson.is_some()
        || t.min_sqnr_centered.is_some()
        || t.min_top1.is_some()
        || t.min_top5.is_some()
        || t.no_default_tolerances;
    if a.validate || tolerance_flag {
        return Err(Error::Usage(
            "--validate and the tolerance flags are for -p; a recipe validates after every pass: write the \
             limits as budgets (`budget = \"cosine >= 0.999\"`)"
                .into(),
        ));
    }
    let bytes = std::fs::read(&a.input).map_err(|source| Error::Read {
        path: a.input.clone(),
        source,
    })?;
    let model = io::load(&a.input)?;
    let opts = RunOptions {
        validate: if a.no_validate {
            None
        } else {
            Some(a.inputs.options()?)
        },
        stop_after: a.stop_after.clone(),
        latency_runs: a.latency,
        progress: !a.quiet,
        input_sha256: Some(recipe::sha256_hex(&bytes)),
        scratch: Some(crate::io::external::Spill::new(super::folder_of(&a.output))),
    };
    let before = (a.diff || a.verbose).then(|| model.clone());
    let (out, mut report) = recipe::run_recipe(model, &recipe, &opts)?;
    let failed = !report.passed();
    if !failed && !a.dry_run {
        say_relocated(&io::save(&out, &a.output, &a.data.save_options())?);
        let written = std::fs::read(&a.output).map_err(|source| Error::Read {
            path: a.output.clone(),
            source,
        })?;
        report.output_sha256 = Some(recipe::sha256_hex(&written));
    }
    report.every_remark = a.verbose;
    if !a.quiet {
        if a.verbose {
            for p in &report.passes {
                println!(
                    "pass {} changes: {}",
                    p.pass,
                    serde_json::to_string(&p.changes).unwrap_or_default()
                );
            }
        }
        print!("{report}");
        if let Some(b) = &before {
            print!("{}", crate::dump::diff(b, &out));
        }
    }
    if let Some(path) = &a.report {
        write_json(path, &report)?;
    }
    if failed {
        eprintln!(
            "budget broken by {}: {} not written",
            report.failed_pass.as_deref().unwrap_or("?"),
            a.output.display()
        );
        return Ok(Exit::Drift);
    }
    if a.dry_run {
        eprintln!("dry run: {} not written", a.output.display());
    } else if !a.quiet {
        eprintln!("wrote {}", a.output.display());
    }
    Ok(Exit::Ok)
}

fn run_specs(a: RunArgs) -> Result<Exit> {
    let mut m = io::load(&a.input)?;
    let before = if a.diff || a.validate {
        Some(m.clone())
    } else {
        None
    };
    let specs = split_specs(&a.passes);
    let specs: Vec<&str> = specs.iter().map(|s| s.as_str()).collect();
    // the services a pass may ask for: calibration and drift on the samples the input flags describe
    let sample_opts = a.inputs.options()?;
    let progress: Box<dyn passes::Progress> = if a.quiet {
        Box::new(passes::NoProgress)
    } else {
        Box::new(passes::StderrProgress::new())
    };
    let mut cx = crate::validate::pass_services(
        &m,
        sample_opts,
        progress,
        Some(crate::io::external::Spill::new(super::folder_of(&a.output))),
    );
    let reports = passes::run_pipeline_with(
        &mut m,
        &specs,
        &PipelineOptions {
            stop_after: a.stop_after.clone(),
        },
        &mut cx,
    )?;
    drop(cx);
    if !a.quiet {
        for r in &reports {
            if a.verbose {
                print!("{r}");
            } else {
                print!("{}", r.summary());
            }
        }
    }
    if let (true, Some(b)) = (a.diff, &before) {
        print!("{}", crate::dump::diff(b, &m));
    }
    if let (true, Some(b)) = (a.validate, &before) {
        let mut opts = a.inputs.options()?;
        opts.tolerances = a.tolerances.tolerances();
        let r = crate::validate::compare(b, &m, &opts)?;
        print!("{r}");
        if !r.passed() {
            eprintln!(
                "validation failed: {} not written{}",
                a.output.display(),
                a.report
                    .as_ref()
                    .map(|r| format!(", nor {}", r.display()))
                    .unwrap_or_default()
            );
            return Ok(Exit::Drift);
        }
    }
    if a.dry_run {
        eprintln!("dry run: {} not written", a.output.display());
    } else {
        // Written only once validation (if asked) passed: a failed run leaves no file behind.
        say_relocated(&io::save(&m, &a.output, &a.data.save_options())?);
    }
    if let Some(path) = &a.report {
        write_json(path, &reports)?;
    }
    Ok(Exit::Ok)
}
