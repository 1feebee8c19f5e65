//! Validation: run two models on the same inputs with tract, compare their outputs (and the intermediate
//! tensors they share), and report; evaluate one model (size, parameters, MACs, latency, accuracy); calibrate
//! activations for the quantize pass. tract is used here and nowhere else.
//!
//! # API (what the CLI calls)
//!
//! ```text
//! pub fn compare(reference: &Model, candidate: &Model, opts: &ValidateOptions) -> Result<ValidationReport>
//! pub fn evaluate(model: &Model, path: Option<&Path>, opts: &ValidateOptions) -> Result<EvaluationReport>
//! pub fn prepare_samples(reference: &Model, candidate: Option<&Model>, opts: &ValidateOptions)
//!     -> Result<(Vec<InputSpec>, Vec<Sample>)>
//! pub fn run_model(model: &Model, sample: &Sample) -> Result<RunOutput>   // outputs as IR tensors
//! pub struct TractCalibrator  // impl passes::quantize::calibrate::Calibrator
//! ```
//!
//! - `ValidationReport`: serde `Serialize` (stable JSON: fields in declaration order, non-finite numbers as
//!   the strings "inf" / "-inf" / "nan"), `Display` (a text table), `passed()`. A comparison that ran but
//!   failed a tolerance returns `Ok(report)` with `passed() == false`; the CLI maps that to exit code 4. A
//!   comparison that could not run (tract refuses a model, an int4 activation) returns `Err(Error::Validate)`,
//!   naming the node / op tract refused. Input and labels files never give `Error::Validate`: a malformed one is
//!   `Error::Invalid` naming the file (exit code 3), one that does not fit the model `Error::Usage` (exit 2).
//! - `EvaluationReport`: serde + `Display`.
//!
//! # Options (`ValidateOptions`, serde with defaults; unknown fields are an error)
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `seed` | 0 | seed of the random inputs (splitmix64; same seed = same inputs everywhere) |
//! | `samples` | 1 | number of random samples |
//! | `dims` | {} | value of each symbolic dim (`--dim batch=4`) |
//! | `default_dim` | 1 | value of a symbolic or unknown dim not in `dims` |
//! | `float_range` | [-1, 1] | float inputs are uniform in [lo, hi) |
//! | `int_range` | none -> [0, 2) | integer inputs: [lo, hi); an input that indexes a constant Gather table stays below its row count whatever this says |
//! | `inputs` | [] | .npy / .pb files (one sample), or one folder (one sample, or one sample per sub-folder) |
//! | `tolerances` | see `Tolerances` | per-metric limits on every graph output |
//! | `attribution` | true | also compare intermediate tensors present in both models (same name), in topological order |
//! | `attribution_limit` | 2000 | at most this many intermediate tensors are exposed |
//! | `latency_runs` | none | timed runs: compare default 0 (no timing), evaluate default 10 |
//! | `warmup_runs` | 2 | untimed runs before the timed ones |
//! | `labels` | none | .npy of integer labels, one per row of the classifier output over all samples |
//! | `optimize` | false | compare with tract's optimised kernels (faster, but they reorder float sums: a few ulp of drift); off = tract's reference kernels, exact against ONNX Runtime on the probe cases. Latency is always measured optimised |
//!
//! # What tract can and cannot check
//! tract folds constant DequantizeLinear into float weights and runs activation Q/DQ as element-wise fake
//! quantization: it checks a QDQ model's numbers, not integer kernels. int4 / uint4 / blocked DequantizeLinear
//! do not load in tract 0.23.9: when all their inputs are constant they are folded exactly into f32 weights for
//! the run and the report carries a remark saying so; any other int4 use is refused with an error.

mod calibrate;
mod compare;
mod evaluate;
mod fold;
mod inputs;
mod metrics;
pub mod npy;
mod report;
mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use calibrate::TractCalibrator;
pub use compare::{compare, run_model, RunOutput};
pub use evaluate::{evaluate, Accuracy, EvaluationReport, FileSize, Latency, ParamCount};
pub use inputs::{
    parse_tensor_pb, prepare_samples, read_labels, read_tensor_file, InputSpec, Labels, Sample,
};
pub use metrics::Metrics;
pub use report::{Check, OutputReport, TensorDrift, ValidationReport};

/// Limits checked on every graph output. `None` disables a check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tolerances {
    /// Fail when max |ref - cand| is above this.
    pub max_abs: Option<f64>,
    /// Fail when mean |ref - cand| is above this.
    pub mean_abs: Option<f64>,
    /// Fail when the cosine similarity is below this. Default 0.99.
    pub min_cosine: Option<f64>,
    /// Fail when the SQNR (dB) is below this. Default 20 dB (noise 1% of the signal power).
    pub min_sqnr_db: Option<f64>,
    /// Fail when the top-1 agreement (fraction of rows) of a classifier-like output is below this.
    pub min_top1: Option<f64>,
    /// Fail when the top-5 agreement of a classifier-like output is below this.
    pub min_top5: Option<f64>,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            max_abs: None,
            mean_abs: None,
            min_cosine: Some(0.99),
            min_sqnr_db: Some(20.0),
            min_top1: None,
            min_top5: None,
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
