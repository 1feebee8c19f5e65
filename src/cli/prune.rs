//! `prune IN OUT --method magnitude|nm|channel ...`: flags -> `PruneOptions` -> `Prune::prune`; prints the pass
//! report (per layer or per group), optionally the plan (`--dry-run`), writes `--report` JSON and validates.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Exit, Result};
use crate::io;
use crate::passes::prune::{Prune, PruneOptions};

#[derive(Args, Debug)]
pub struct PruneArgs {
    pub input: PathBuf,
    /// Output model (not written with --dry-run).
    pub output: Option<PathBuf>,
    /// magnitude | nm | channel.
    #[arg(long, default_value = "magnitude")]
    pub method: String,
    /// magnitude: fraction of weights to zero.
    #[arg(long, default_value_t = 0.5)]
    pub sparsity: f64,
    /// magnitude: layer | global threshold.
    #[arg(long, default_value = "layer")]
    pub scope: String,
    /// magnitude: zero |w| below this instead of a sparsity.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// nm: weights kept per block.
    #[arg(long, default_value_t = 2)]
    pub n: u32,
    /// nm: block length along the reduction dimension.
    #[arg(long, default_value_t = 4)]
    pub m: u32,
    /// magnitude / nm: store pruned weights of density <= --sparse-density as ONNX sparse initializers.
    #[arg(long)]
    pub sparse_storage: bool,
    /// magnitude / nm: the density (non-zeros / elements) at or below which --sparse-storage stores a weight sparse.
    #[arg(long, default_value_t = 0.3)]
    pub sparse_density: f64,
    /// channel: fraction of channels to drop per group (of all with --global).
    #[arg(long, default_value_t = 0.3)]
    pub ratio: f64,
    /// channel: one global ranking instead of a ratio per group.
    #[arg(long)]
    pub global: bool,
    /// channel: l1 | l2 | bn.
    #[arg(long, default_value = "l1")]
    pub importance: String,
    /// channel: zero | remove.
    #[arg(long, default_value = "zero")]
    pub mode: String,
    /// channel: keep a multiple of this many channels.
    #[arg(long, default_value_t = 1)]
    pub round_to: u32,
    /// channel: save the plan (JSON) here.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// channel: apply this plan instead of computing one.
    #[arg(long)]
    pub load_plan: Option<PathBuf>,
    /// channel: print the plan and stop (no output written).
    #[arg(long)]
    pub dry_run: bool,
    /// Write the outcome (per-layer sparsity or per-group parameters / MACs, and the plan) as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Validate the result against the input through tract; on failure exit 4 and write nothing.
    #[arg(long)]
    pub validate: bool,
    #[command(flatten)]
    pub inputs: super::validate::InputArgs,
    #[command(flatten)]
    pub tolerances: super::validate::ToleranceArgs,
    #[command(flatten)]
    pub data: super::DataArgs,
}

pub fn run(a: PruneArgs) -> Result<Exit> {
    let opts = PruneOptions {
        method: a.method,
        sparsity: a.sparsity,
        scope: a.scope,
        threshold: a.threshold,
        n: a.n,
        m: a.m,
        sparse_storage: a.sparse_storage,
        sparse_density: a.sparse_density,
        ratio: a.ratio,
        global: a.global,
        importance: a.importance,
        mode: a.mode,
        round_to: a.round_to,
        plan: a.plan,
        load_plan: a.load_plan,
        dry_run: a.dry_run,
        ..Default::default()
    };
    let p = Prune::new(opts)?;
    let mut m = io::load(&a.input)?;
    let before = a.validate.then(|| m.clone());
    let (report, outcome) = p.prune(&mut m)?;
    print!("{report}");
    if let Some(c) = &outcome.channel {
        println!(
            "parameters {} -> {}{}",
            c.params_total_before,
            c.params_total_after,
            match (c.macs_before, c.macs_after) {
                (Some(b), Some(x)) => format!(", MACs of the pruned layers {b} -> {x}"),
                _ => String::new(),
            }
        );
        if a.dry_run {
            let text =
                serde_json::to_string_pretty(&c.plan).map_err(|e| Error::Refused(e.to_string()))?;
            println!("{text}");
        }
    }
    if let Some(path) = &a.report {
        super::write_json(path, &(&report, &outcome))?;
    }
    if a.dry_run {
        return Ok(Exit::Ok);
    }
    let Some(output) = a.output else {
        return Err(Error::Usage(
            "prune: OUT is required unless --dry-run".into(),
        ));
    };
    if let Some(b) = &before {
        let mut opts = a.inputs.options()?;
        opts.tolerances = a.tolerances.tolerances();
        let r = crate::validate::compare(b, &m, &opts)?;
        print!("{r}");
        if !r.passed() {
            eprintln!("validation failed: {} not written", output.display());
            return Ok(Exit::Drift);
        }
    }
    super::say_relocated(&io::save(&m, &output, &a.data.save_options())?);
    Ok(Exit::Ok)
}
