//! Command-line front end: clap argument structs turned into library calls. No business logic lives here.

mod inspect;
mod lowrank;
mod prune;
mod quantize;
mod run;
mod validate;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, Exit, Result};
use crate::io::{self, ExternalMode, SaveOptions};
use crate::passes;

#[derive(Parser, Debug)]
#[command(
    name = "onnx-rewrite",
    version,
    about = "Make ONNX models smaller and cheaper, and prove they still compute the same thing"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Summary of a model: versions, inputs/outputs, op histogram, parameters and where they live.
    Inspect {
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Deterministic text dump of a model (for snapshot tests).
    Dump { model: PathBuf },
    /// Structural diff of two models: nodes and values added/removed/changed, then totals.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Re-save a model, optionally moving tensor data inline or to an external file.
    Convert {
        input: PathBuf,
        output: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Run passes (`-p` specs or a `--recipe` with per-pass budgets) on a model and save the result.
    Run(run::RunArgs),
    /// Prune weights: magnitude or N:M sparsity, or whole channels through their dependency groups (zero or
    /// remove); see the `prune` pass.
    Prune(prune::PruneArgs),
    /// Quantize a model: weights to int8 / uint8 (`--mode weight`) or calibrated QDQ (`--mode static`).
    Quantize(quantize::QuantizeArgs),
    /// Split MatMul / Gemm / 1x1 Conv layers with constant weights by truncated SVD (pass `lowrank`).
    Lowrank {
        input: PathBuf,
        output: PathBuf,
        #[command(flatten)]
        args: lowrank::LowRankArgs,
        /// Write the pass report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Validate the result against the input through tract; on failure exit 4 and write nothing.
        #[arg(long)]
        validate: bool,
        #[command(flatten)]
        inputs: validate::InputArgs,
        #[command(flatten)]
        tolerances: validate::ToleranceArgs,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List the available passes with their options (types, defaults, meaning).
    Passes {
        /// Print JSON instead of text.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print the Markdown table of docs/commands.md.
        #[arg(long)]
        markdown: bool,
    },
    /// Run two models on the same inputs through tract and report drift; exit 4 past the tolerances, 5 when
    /// tract cannot load, type or run a model.
    Validate {
        reference: PathBuf,
        candidate: PathBuf,
        #[command(flatten)]
        inputs: validate::InputArgs,
        #[command(flatten)]
        tolerances: validate::ToleranceArgs,
        /// Do not compare intermediate tensors the two models share.
        #[arg(long)]
        no_attribution: bool,
        /// Also time both models: warm-up, then the median of N runs.
        #[arg(long, value_name = "N")]
        latency: Option<usize>,
        /// Use tract's optimised kernels (faster; a few ulp of float drift).
        #[arg(long)]
        optimize: bool,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Size, parameters by dtype, MACs per op type, latency, and accuracy with --labels, for one model.
    Evaluate {
        model: PathBuf,
        #[command(flatten)]
        inputs: validate::InputArgs,
        /// Timed runs after warm-up (median reported).
        #[arg(long, value_name = "N", default_value_t = 10)]
        latency: usize,
        /// Run the accuracy samples with tract's optimised kernels (latency is always measured optimised).
        #[arg(long)]
        optimize: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Default)]
pub struct DataArgs {
    /// Write every tensor inline (fails past protobuf's 2 GiB limit).
    #[arg(long, conflicts_with = "external_threshold")]
    pub inline: bool,
    /// Move main-graph initializers of at least this many bytes to one external data file.
    #[arg(long, value_name = "BYTES")]
    pub external_threshold: Option<u64>,
    /// Name of the external data file (default: `<output stem>.data`).
    #[arg(long, value_name = "FILE", requires = "external_threshold")]
    pub external_name: Option<String>,
}

impl DataArgs {
    fn save_options(&self) -> SaveOptions {
        let external = if self.inline {
            ExternalMode::Inline
        } else if let Some(min_bytes) = self.external_threshold {
            ExternalMode::Threshold {
                min_bytes,
                location: self.external_name.clone(),
            }
        } else {
            ExternalMode::Keep
        };
        SaveOptions { external }
    }
}

/// Split each `-p` argument (`a,b{x=[1,2]},c`) at the commas outside braces, brackets and quotes.
fn split_specs(specs: &[String]) -> Vec<String> {
    specs.iter().flat_map(|s| passes::spec::split(s)).collect()
}

/// Tell where external data went when it could not keep its name (it would have overwritten an input file).
/// The folder `output` will be written in (scratch files go there, on the same file system).
fn folder_of(output: &Path) -> PathBuf {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn say_relocated(r: &io::SaveReport) {
    for (from, to) in &r.relocated {
        eprintln!(
            "external data '{from}' written as '{to}' (the input's data file is never rewritten)"
        );
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::Refused(e.to_string()))? + "\n";
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Print a report as JSON or as its text form.
fn show<T: serde::Serialize + std::fmt::Display>(value: &T, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("reports serialise")
        );
    } else {
        print!("{value}");
    }
}

/// Run a parsed command; returns the exit code.
pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Inspect { model, json } => {
            let m = io::load(&model)?;
            let info = inspect::inspect(&m, &model)?;
            show(&info, json);
        }
        Command::Dump { model } => print!("{}", crate::dump::render(&io::load(&model)?)),
        Command::Diff { a, b, json } => {
            let d = crate::dump::diff(&io::load(&a)?, &io::load(&b)?);
            show(&d, json);
        }
        Command::Convert {
            input,
            output,
            data,
        } => {
            let m = io::load(&input)?;
            let r = io::save(&m, &output, &data.save_options())?;
            eprintln!("wrote {} ({} bytes)", output.display(), r.model_bytes);
            say_relocated(&r);
            for (loc, n) in r.data_files {
                eprintln!("wrote {loc} ({n} bytes)");
            }
        }
        Command::Run(a) => return run::run(a),
        Command::Lowrank {
            input,
            output,
            args,
            report,
            validate: check,
            inputs,
            tolerances,
            data,
        } => return lowrank::run(input, output, args, report, check, inputs, tolerances, data),
        Command::Validate {
            reference,
            candidate,
            inputs,
            tolerances,
            no_attribution,
            latency,
            optimize,
            json,
            report,
        } => {
            let mut opts = inputs.options()?;
            opts.tolerances = tolerances.tolerances();
            opts.attribution = !no_attribution;
            opts.latency_runs = latency;
            opts.optimize = optimize;
            let r =
                crate::validate::compare(&io::load(&reference)?, &io::load(&candidate)?, &opts)?;
            show(&r, json);
            if let Some(path) = report {
                write_json(&path, &r)?;
            }
            if !r.passed() {
                eprintln!("validation failed: drift past the tolerances");
                return Ok(Exit::Drift);
            }
        }
        Command::Evaluate {
            model,
            inputs,
            latency,
            optimize,
            json,
        } => {
            let mut opts = inputs.options()?;
            opts.latency_runs = Some(latency);
            opts.optimize = optimize;
            let r = crate::validate::evaluate(&io::load(&model)?, Some(&model), &opts)?;
            show(&r, json);
        }
        Command::Prune(args) => return prune::run(args),
        Command::Quantize(a) => return quantize::run(a),
        Command::Passes { json, markdown } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&passes::registry::to_json())
                        .expect("pass docs serialise")
                );
            } else if markdown {
                print!("{}", passes::registry::markdown());
            } else {
                print!("{}", passes::registry::listing());
            }
        }
    }
    Ok(Exit::Ok)
}
