//! `quantize IN OUT --mode weight ...`: flags -> `QuantizeOptions` -> the `quantize` pass -> optional
//! validation -> save. In static mode `--plan` also writes the plan, `--load-plan` builds from one without
//! calibrating, and `--dry-run` prints the plan and writes no model (OUT may then be left out).

use std::path::PathBuf;

use clap::Args;

use super::validate::{InputArgs, ToleranceArgs};
use super::DataArgs;
use crate::error::{Error, Exit, Result};
use crate::io;
use crate::passes;
use crate::passes::quantize::{Quantize, QuantizeOptions};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    pub input: PathBuf,
    /// Output model (not written with --dry-run).
    pub output: Option<PathBuf>,
    /// `weight`: constant weights only (int8 storage read through DequantizeLinear); `static`: calibrated QDQ
    /// on activations too (calibration samples from the input flags: `--input` or `--samples N --dim ...`).
    #[arg(long, default_value = "weight")]
    pub mode: String,
    /// Integer type of the quantized weights: int8 or uint8.
    #[arg(long, default_value = "int8")]
    pub dtype: String,
    /// One scale per output channel (the default; raises opsets below 13 with upgrade-opset).
    #[arg(long, conflicts_with = "per_tensor")]
    pub per_channel: bool,
    /// One scale per weight tensor.
    #[arg(long)]
    pub per_tensor: bool,
    /// Symmetric ranges (zero point 0 for int8; what integer kernels fuse).
    #[arg(long, conflicts_with = "asymmetric")]
    pub symmetric: bool,
    /// Each channel's min / max range with a zero point (the default: more accurate for weight-only).
    #[arg(long)]
    pub asymmetric: bool,
    /// 7-bit ranges (int8 [-64, 64], uint8 [0, 127]).
    #[arg(long)]
    pub reduce_range: bool,
    /// --mode weight: MatMul weights as `qdq` (DequantizeLinear) or `matmulnbits` (ONNX Runtime's MatMulNBits,
    /// 8-bit blocks along K).
    #[arg(long, default_value = "qdq")]
    pub format: String,
    /// --format matmulnbits: block length along K (a power of two, 16 to 256).
    #[arg(long, default_value_t = 32)]
    pub block_size: u64,
    /// Weights with fewer elements stay float.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub min_elements: u64,
    /// Op types whose weights are quantized (repeatable; default Conv, ConvTranspose, Gemm, MatMul).
    #[arg(long = "op", value_name = "OP")]
    pub ops: Vec<String>,
    /// Only weights read by nodes whose name matches (`*`, `?` wildcards; repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Weights read by nodes whose name matches stay float (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// --mode static: activation range method (minmax, percentile, entropy).
    #[arg(long, default_value = "minmax")]
    pub method: String,
    /// --mode static, --method percentile: percentile of magnitudes kept.
    #[arg(long, default_value_t = 99.999)]
    pub percentile: f64,
    /// --mode static: activation type (uint8 or int8).
    #[arg(long, default_value = "uint8")]
    pub activation_type: String,
    /// --mode static: cross-layer equalisation before quantising.
    #[arg(long)]
    pub equalize: bool,
    /// --mode static: correct biases for the mean shift of the weight quantization error.
    #[arg(long)]
    pub bias_correction: bool,
    /// --mode static: keep the most sensitive layers float until the worst output cosine reaches this.
    #[arg(long, value_name = "COSINE", default_value_t = 0.0)]
    pub drift_budget: f64,
    /// Print every per-node remark (by default they are grouped: one line per kind, with a count).
    #[arg(short, long)]
    pub verbose: bool,
    /// --mode static: write the plan (JSON: per tensor its parameters, per node the decision and why, per
    /// weight its scales) here.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// --mode static: build from this plan (as written with --plan, possibly edited) without calibrating.
    #[arg(long, value_name = "FILE")]
    pub load_plan: Option<PathBuf>,
    /// --mode static: calibrate and plan, print the plan and write no model.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the pass report (remarks per node, stats) as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Validate the result against the input through tract; on failure exit 4 and write nothing.
    #[arg(long)]
    pub validate: bool,
    #[command(flatten)]
    pub inputs: InputArgs,
    #[command(flatten)]
    pub tolerances: ToleranceArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

impl QuantizeArgs {
    fn options(&self) -> QuantizeOptions {
        let d = QuantizeOptions::default();
        QuantizeOptions {
            mode: self.mode.clone(),
            dtype: self.dtype.clone(),
            symmetric: match (self.symmetric, self.asymmetric) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            per_channel: !self.per_tensor,
            reduce_range: self.reduce_range,
            min_elements: self.min_elements,
            ops: if self.ops.is_empty() {
                d.ops
            } else {
                self.ops.clone()
            },
            format: self.format.clone(),
            block_size: self.block_size,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            method: self.method.clone(),
            percentile: self.percentile,
            activation_type: self.activation_type.clone(),
            equalize: self.equalize,
            bias_correction: self.bias_correction,
            drift_budget: self.drift_budget,
            plan: self.plan.clone(),
            load_plan: self.load_plan.clone(),
            dry_run: self.dry_run,
            ..d
        }
    }
}

pub fn run(a: QuantizeArgs) -> Result<Exit> {
    let pass = Quantize::new(a.options())?;
    let output = match (&a.output, a.dry_run) {
        (Some(o), _) => o.clone(),
        (None, true) => PathBuf::new(),
        (None, false) => {
            return Err(Error::Usage(
                "quantize: OUT is required unless --dry-run".into(),
            ))
        }
    };
    // weights held in external data are quantized straight to scratch files beside the output (streaming)
    let out_dir = super::folder_of(&output);
    let mut m = io::load(&a.input)?;
    let input_size = crate::validate::FileSize::of(&m, &a.input)?;
    let before = a.validate.then(|| m.clone());
    // calibration (mode static) and drift (sensitivity) run on the samples the input flags describe
    let sample_opts = a.inputs.options()?;
    let mut cx = crate::validate::pass_services(
        &m,
        sample_opts,
        Box::new(passes::StderrProgress::new()),
        Some(io::external::Spill::new(out_dir)),
    );
    let (report, plan) = pass.quantize(&mut m, &mut cx)?;
    drop(cx);
    // verified as the pipeline verifies after every pass
    passes::verify_after(&m, crate::passes::quantize::PASS)?;
    if a.verbose {
        print!("{report}");
    } else {
        print!("{}", report.summary());
    }
    if a.dry_run {
        if let Some(plan) = &plan {
            print!("{}", plan.to_json());
        }
        if let Some(path) = &a.report {
            super::write_json(path, &[&report])?;
        }
        return Ok(Exit::Ok);
    }
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
    let saved = io::save(&m, &output, &a.data.save_options())?;
    super::say_relocated(&saved);
    let written = saved.model_bytes + saved.data_files.iter().map(|f| f.1).sum::<u64>();
    println!(
        "wrote {}: {written} bytes, {:.3}x the input's {}{}",
        output.display(),
        written as f64 / input_size.total_bytes.max(1) as f64,
        input_size.total_bytes,
        if a.verbose || report.remarks.is_empty() {
            String::new()
        } else {
            format!(
                " ({} per-node remarks: -v, or --report FILE.json)",
                report.remarks.len()
            )
        }
    );
    let form = crate::passes::quantize::runtime::form(&m);
    if let Some(hint) = crate::passes::quantize::runtime::hint(form) {
        println!("{hint}");
    }
    if let Some(path) = &a.report {
        super::write_json(path, &[&report])?;
    }
    Ok(Exit::Ok)
}
