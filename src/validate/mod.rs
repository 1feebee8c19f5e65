//! Validation: run two models on the same inputs with tract, compare their outputs (and the intermediate
//! tensors they share), and report; evaluate one model (size, parameters, MACs, latency, accuracy); calibrate
//! activations for the quantize pass. tract is used here and nowhere else.
//!
//! # API (what the CLI calls)
//!
//! ```text
//! pub fn compare(reference: &Model, candidate: &Model, opts: &ValidateOptions) -> Result<ValidationReport>
//! pub struct ReferenceRun  // ReferenceRun::new(reference, like: Option<&Model>, opts): the reference run once
//! pub fn compare_with_reference(reference: &ReferenceRun, candidate: &Model, tolerances: &Tolerances)
//!     -> Result<ValidationReport>   // one reference run, any number of candidates (a pipeline's passes)
//! pub fn evaluate(model: &Model, path: Option<&Path>, opts: &ValidateOptions) -> Result<EvaluationReport>
//! pub fn prepare_samples(reference: &Model, candidate: Option<&Model>, opts: &ValidateOptions)
//!     -> Result<(Vec<InputSpec>, Vec<Sample>)>
//! pub fn run_model(model: &Model, sample: &Sample) -> Result<RunOutput>   // outputs as IR tensors
//! pub struct TractCalibrator  // impl passes::quantize::calibrate::Calibrator
//! pub struct TractDrift       // impl passes::DriftMeasure: the original's outputs computed once, then cached
//! ```
//!
//! - `ValidationReport`: serde `Serialize` (stable JSON: fields in declaration order, non-finite numbers as
//!   the strings "inf" / "-inf" / "nan"), `Display` (a text table), `passed()`. A comparison that ran but
//!   failed a tolerance returns `Ok(report)` with `passed() == false`; the CLI maps that, and only that, to
//!   exit code 4. A comparison that could not run returns an error with exit code 5: `Error::CannotValidate`
//!   when tract cannot load, type or run a model (a missing op, a failed shape analysis, a panic inside
//!   tract), naming the model, the node and its ONNX op, plus a hint listing the symbolic dims left at the
//!   default when typing failed or tract panicked; `Error::Validate` for the other reasons (an int4 activation, outputs that do
//!   not match). Input and labels files never give these: a malformed one is `Error::Invalid` naming the file
//!   (exit code 3), one that does not fit the model `Error::Usage` (exit 2).
//!
//! # Control flow
//! When a model's main graph holds `If` nodes, each sample specialises it for the run of `compare` and
//! `evaluate` (`specialize.rs`; `run_model` and the calibrator run the model as it is): a
//! condition computable from the sample (an input, a constant, or a cone of nodes tract runs, e.g. a shape
//! test) is computed, the taken branch is inlined in place of the `If`, and nested `If`s brought up by it are
//! handled the same way, so tract never types a dead branch. The report has one remark per `If` specialised
//! (`reference: If 'name' specialised: condition true, then_branch inlined`); an `If` that could not be is
//! left to tract with a remark saying why. The models given are never changed.
//! - `EvaluationReport`: serde + `Display`.
//!
//! # Options (`ValidateOptions`, serde with defaults; unknown fields are an error)
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `seed` | 0 | seed of the random inputs (splitmix64; same seed = same inputs everywhere) |
//! | `samples` | 1 | number of random samples |
//! | `dims` | {} | value of each symbolic dim (`--dim batch=4`), or of an unnamed one as `INPUT[K]` (`--dim 'x[2]=64'`) |
//! | `default_dim` | 1 | value of a symbolic or unknown dim not in `dims` |
//! | `auto_dims` | false (the CLI and Python: true unless a default dim is given) | random inputs: when the model does not run with the unset dims at `default_dim`, or has unset spatial dims (axes 2+ of a rank-4+ input) and `default_dim` is below 16, try a ladder of sizes for the non-batch ones and use the first that runs (`dims.rs`; said in the inputs' descriptions) |
//! | `float_range` | [-1, 1] | float inputs are uniform in [lo, hi) |
//! | `int_range` | none -> [0, 2) | integer inputs: [lo, hi); an input that indexes a constant Gather table stays below its row count whatever this says |
//! | `inputs` | [] | .npy / .pb files (one sample), or one folder (one sample, or one sample per sub-folder) |
//! | `tolerances` | see `Tolerances` | per-metric limits on every graph output |
//! | `attribution` | true | also compare intermediate tensors present in both models (same name), in topological order |
//! | `attribution_limit` | 2000 | at most this many intermediate tensors are exposed |
//! | `latency_runs` | none | timed runs: compare default 0 (no timing), evaluate default 10 |
//! | `warmup_runs` | 2 | untimed runs before the timed ones |
//! | `labels` | none | .npy of integer labels, one per row of the classifier output over all samples |
//! | `optimize` | false | compare with tract's optimised kernels (faster, but they reorder float sums: a few ulp of drift); off = tract's reference kernels, exact against ONNX Runtime on the canary cases (`fixtures/canaries`). Latency is always measured optimised |
//!
//! # What tract can and cannot check
//! tract folds constant DequantizeLinear into float weights and runs activation Q/DQ as element-wise fake
//! quantization: it checks a QDQ model's numbers, not integer kernels. int4 / uint4 / blocked DequantizeLinear
//! do not load in tract 0.23.9: when all their inputs are constant they are folded exactly into f32 weights for
//! the run and the report carries a remark saying so; any other int4 use is refused with an error.

mod calibrate;
mod compare;
mod dims;
mod drift;
mod evaluate;
mod fold;
mod inputs;
mod metrics;
pub mod npy;
mod report;
mod run;
mod specialize;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use calibrate::TractCalibrator;

/// The services every entry point (each command, recipes, Python) hands its passes: calibration and drift
/// against `original` on the samples `samples` describes, progress, and the folder large tensors may stream to.
/// One constructor, so no entry point runs a pass with fewer services than another.
pub fn pass_services(
    original: &crate::ir::Model,
    samples: ValidateOptions,
    progress: Box<dyn crate::passes::Progress>,
    scratch: Option<crate::io::external::Spill>,
) -> crate::passes::PassContext {
    crate::passes::PassContext {
        calibrator: Some(Box::new(TractCalibrator::new(samples.clone()))),
        drift: Some(Box::new(TractDrift::new(original, samples))),
        progress,
        scratch,
    }
}
pub use compare::{compare, compare_with_reference, run_model, ReferenceRun, RunOutput};
pub use drift::TractDrift;
pub use evaluate::{evaluate, Accuracy, EvaluationReport, FileSize, Latency, ParamCount};
pub use fold::fold_unsupported;
pub use inputs::{
    parse_tensor_pb, prepare_samples, read_labels, read_tensor_file, InputSpec, Labels, Sample,
};
pub use metrics::Metrics;
pub use report::{Check, OutputReport, TensorDrift, ValidationReport};

/// Limits checked on every graph output. `None` disables a check.
///
/// The defaults judge drift with the centred measures (Pearson >= 0.99, SQNR against the reference's variance
/// >= 20 dB), which an offset shared by both outputs cannot hide, plus the raw SQNR >= 20 dB. The raw SQNR is
/// implied by the centred one wherever the reference varies (sum a^2 >= sum (a - mean a)^2); it stays on by
/// default because it is the check that judges a constant reference output, where the centred measures are
/// undefined (and skipped, with a remark). Raw cosine has no default: SQNR >= 20 dB already bounds it
/// (|a - b| <= 0.1 |a| gives cosine >= sqrt(1 - 0.01) > 0.994).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tolerances {
    /// Fail when max |ref - cand| is above this.
    pub max_abs: Option<f64>,
    /// Fail when mean |ref - cand| is above this.
    pub mean_abs: Option<f64>,
    /// Fail when the (raw) cosine similarity is below this. No default.
    pub min_cosine: Option<f64>,
    /// Fail when the (raw) SQNR (dB, against the reference's power) is below this. Default 20 dB.
    pub min_sqnr_db: Option<f64>,
    /// Fail when the Pearson correlation is below this. Default 0.99. Skipped for a constant reference.
    pub min_pearson: Option<f64>,
    /// Fail when the SQNR against the reference's variance (dB) is below this. Default 20 dB (noise 1% of the
    /// reference's variance). Skipped for a constant reference.
    pub min_sqnr_centered_db: Option<f64>,
    /// Fail when the top-1 agreement (fraction of rows) of a classifier-like output is below this.
    pub min_top1: Option<f64>,
    /// Fail when the top-5 agreement of a classifier-like output is below this.
    pub min_top5: Option<f64>,
}

impl Tolerances {
    /// No limit at all (`--no-default-tolerances`).
    pub fn none() -> Self {
        Tolerances {
            max_abs: None,
            mean_abs: None,
            min_cosine: None,
            min_sqnr_db: None,
            min_pearson: None,
            min_sqnr_centered_db: None,
            min_top1: None,
            min_top5: None,
        }
    }
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            min_sqnr_db: Some(20.0),
            min_pearson: Some(0.99),
            min_sqnr_centered_db: Some(20.0),
            ..Tolerances::none()
        }
    }
}

/// Options of `compare`, `evaluate` and `TractCalibrator` (see the module docs for the table of defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidateOptions {
    pub seed: u64,
    pub samples: usize,
    pub dims: BTreeMap<String, i64>,
    pub default_dim: i64,
    pub auto_dims: bool,
    pub float_range: (f64, f64),
    pub int_range: Option<(i64, i64)>,
    pub inputs: Vec<PathBuf>,
    pub tolerances: Tolerances,
    pub attribution: bool,
    pub attribution_limit: usize,
    pub latency_runs: Option<usize>,
    pub warmup_runs: usize,
    pub labels: Option<PathBuf>,
    pub optimize: bool,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            seed: 0,
            samples: 1,
            dims: BTreeMap::new(),
            default_dim: 1,
            auto_dims: false,
            float_range: (-1.0, 1.0),
            int_range: None,
            inputs: Vec::new(),
            tolerances: Tolerances::default(),
            attribution: true,
            attribution_limit: 2000,
            latency_runs: None,
            warmup_runs: 2,
            labels: None,
            optimize: false,
        }
    }
}
