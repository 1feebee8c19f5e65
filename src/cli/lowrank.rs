//! `onnx-rewrite lowrank IN OUT`: flags -> `LowRankOptions` -> the `lowrank` pass, then the same report,
//! validation and save steps as `run`.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Exit, Result};
use crate::io;
use crate::passes::lowrank::{LowRank, LowRankOptions};
use crate::passes::{self, PipelineOptions};

use super::validate::{InputArgs, ToleranceArgs};
use super::DataArgs;

#[derive(Args, Debug)]
pub struct LowRankArgs {
    /// Rank of every split layer.
    #[arg(long)]
    rank: Option<u64>,
    /// Rank as a fraction of full rank min(K, N).
    #[arg(long)]
    ratio: Option<f64>,
    /// Keep this fraction of the sum of squared singular values.
    #[arg(long)]
    energy: Option<f64>,
    /// Largest relative Frobenius error per layer.
    #[arg(long)]
    max_error: Option<f64>,
    /// Whole model: keep at most this fraction of the considered layers' weight parameters, ranks allocated
    /// across layers by the smallest error per saved parameter.
    #[arg(long)]
    target_params: Option<f64>,
    /// Whole model: the smallest model whose worst output cosine against the original (on the input
    /// flags' samples) is at least this; exit 4 when no split meets it.
    #[arg(long, value_name = "COSINE")]
    drift_budget: Option<f64>,
    /// --drift-budget: largest number of bisection steps (models measured besides the two ends).
    #[arg(long, default_value_t = 6)]
    search_steps: u64,
    /// Round ranks up to a multiple of this.
    #[arg(long, default_value_t = 1)]
    multiple: u64,
    /// Split a layer only when it saves at least this fraction of its parameters.
    #[arg(long, default_value_t = 0.1)]
    min_saving: f64,
    /// Op types to consider (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "MatMul,Gemm,Conv")]
    ops: Vec<String>,
    /// Randomized SVD: auto, always or never.
    #[arg(long, default_value = "auto")]
    randomized: String,
    /// Minimise each layer's output error on the calibration samples (--input / seeded random inputs)
    /// instead of its weight error.
    #[arg(long)]
    data_aware: bool,
    /// Seed of the randomized SVD (`--seed` is the samples' seed).
    #[arg(long, default_value_t = 0)]
    svd_seed: u64,
}

impl LowRankArgs {
    fn options(&self) -> Result<LowRankOptions> {
        if self.rank.is_none()
            && self.ratio.is_none()
            && self.energy.is_none()
            && self.max_error.is_none()
            && self.target_params.is_none()
            && self.drift_budget.is_none()
        {
            return Err(Error::Usage(
                "lowrank: give one of --rank, --ratio, --energy, --max-error, --target-params, --drift-budget".into(),
            ));
        }
        Ok(LowRankOptions {
            rank: self.rank,
            ratio: self.ratio,
            energy: self.energy,
            max_error: self.max_error,
            target_params: self.target_params,
            drift_budget: self.drift_budget,
            search_steps: self.search_steps,
            multiple: self.multiple,
            min_saving: self.min_saving,
            ops: self.ops.clone(),
            randomized: self.randomized.clone(),
            seed: self.svd_seed,
            data_aware: self.data_aware,
            ..LowRankOptions::default()
        })
    }
}

/// Run the command; returns the exit code.
#[allow(clippy::too_many_arguments)]
pub fn run(
    input: PathBuf,
    output: PathBuf,
    args: LowRankArgs,
    report: Option<PathBuf>,
    check: bool,
    inputs: InputArgs,
    tolerances: ToleranceArgs,
    data: DataArgs,
) -> Result<Exit> {
    let pass = LowRank::new(args.options()?)?;
    let mut m = io::load(&input)?;
    let before = check.then(|| m.clone());
    let sample_opts = inputs.options()?;
    let mut cx = crate::validate::pass_services(
        &m,
        sample_opts,
        Box::new(passes::StderrProgress::new()),
        None,
    );
    let reports = match passes::run_passes(
        &mut m,
        vec![Box::new(pass)],
        &PipelineOptions::default(),
        &mut cx,
    ) {
        Ok(r) => r,
        Err(e) if crate::passes::lowrank::budget_unmet(&e) => {
            eprintln!("error: {e}\n{} not written", output.display());
            return Ok(Exit::Drift);
        }
        Err(e) => return Err(e),
    };
    drop(cx);
    for r in &reports {
        print!("{r}");
    }
    if let Some(b) = &before {
        let mut opts = inputs.options()?;
        opts.tolerances = tolerances.tolerances();
        let r = crate::validate::compare(b, &m, &opts)?;
        print!("{r}");
        if !r.passed() {
            eprintln!("validation failed: {} not written", output.display());
            return Ok(Exit::Drift);
        }
    }
    super::say_relocated(&io::save(&m, &output, &data.save_options())?);
    if let Some(path) = report {
        super::write_json(&path, &reports)?;
    }
    Ok(Exit::Ok)
}
