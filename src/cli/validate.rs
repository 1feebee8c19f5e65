//! `validate A B` and `evaluate M`: flags -> `ValidateOptions` -> `validate::compare` / `validate::evaluate`.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::validate::{Tolerances, ValidateOptions};

/// Inputs and shapes, shared by `validate`, `evaluate` and `run --validate`.
#[derive(Args, Debug, Default, Clone)]
pub struct InputArgs {
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of random samples.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Value of a symbolic dim, e.g. `--dim batch=4`, or of an unnamed one as `INPUT[K]=VALUE` (repeatable).
    /// Unset dims are 1; when the model does not run so (random inputs), the non-batch ones take the first size
    /// of 16, 32, 64, ... 640 it runs at, and the report says which.
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Value of every unset dim, without trying other sizes.
    #[arg(long, value_name = "N")]
    pub default_dim: Option<i64>,
    /// Range of random float inputs, `LO:HI` (default -1:1).
    #[arg(long, value_name = "LO:HI")]
    pub float_range: Option<String>,
    /// Range of random integer inputs, `LO:HI` (token ids indexing a constant table are kept below its rows).
    #[arg(long, value_name = "LO:HI")]
    pub int_range: Option<String>,
    /// Input files (.npy or ONNX TensorProto .pb, one per graph input) or one folder of samples.
    #[arg(long = "input", value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// Integer labels (.npy), one per row of the classifier output, for top-1/top-5 accuracy.
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

/// Tolerances of `validate` (and `run --validate`).
#[derive(Args, Debug, Default, Clone)]
pub struct ToleranceArgs {
    /// Fail when max |ref - cand| of an output exceeds this.
    #[arg(long)]
    pub max_abs: Option<f64>,
    /// Fail when mean |ref - cand| exceeds this.
    #[arg(long)]
    pub mean_abs: Option<f64>,
    /// Fail when the raw cosine similarity is below this (no default).
    #[arg(long)]
    pub min_cosine: Option<f64>,
    /// Fail when the raw SQNR in dB (against the reference's power) is below this (default 20).
    #[arg(long)]
    pub min_sqnr: Option<f64>,
    /// Fail when the Pearson correlation is below this (default 0.99; skipped for a constant reference output).
    #[arg(long)]
    pub min_pearson: Option<f64>,
    /// Fail when the SQNR in dB against the reference's variance is below this (default 20; skipped for a
    /// constant reference output).
    #[arg(long)]
    pub min_sqnr_centered: Option<f64>,
    /// Fail when top-1 agreement of a classifier-like output is below this fraction.
    #[arg(long)]
    pub min_top1: Option<f64>,
    /// Fail when top-5 agreement is below this fraction.
    #[arg(long)]
    pub min_top5: Option<f64>,
    /// Start from no limits instead of the defaults (Pearson >= 0.99, centred SQNR >= 20 dB, SQNR >= 20 dB).
    #[arg(long)]
    pub no_default_tolerances: bool,
}

fn range<T: std::str::FromStr>(flag: &str, s: &str) -> Result<(T, T)> {
    let bad = || Error::Usage(format!("--{flag} '{s}': expected LO:HI"));
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

impl InputArgs {
    pub fn options(&self) -> Result<ValidateOptions> {
        let mut o = ValidateOptions {
            seed: self.seed,
            samples: self.samples,
            default_dim: self.default_dim.unwrap_or(1),
            auto_dims: self.default_dim.is_none(),
            ..Default::default()
        };
        for d in &self.dims {
            let (k, v) = d
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("--dim '{d}': expected NAME=VALUE")))?;
            let v: i64 = v
                .parse()
                .map_err(|_| Error::Usage(format!("--dim '{d}': value is not an integer")))?;
            o.dims.insert(k.to_string(), v);
        }
        if let Some(r) = &self.float_range {
            o.float_range = range("float-range", r)?;
        }
        if let Some(r) = &self.int_range {
            o.int_range = Some(range("int-range", r)?);
        }
        o.inputs = self.inputs.clone();
        o.labels = self.labels.clone();
        Ok(o)
    }
}

impl ToleranceArgs {
    pub fn tolerances(&self) -> Tolerances {
        let mut t = if self.no_default_tolerances {
            Tolerances::none()
        } else {
            Tolerances::default()
        };
        t.max_abs = self.max_abs.or(t.max_abs);
        t.mean_abs = self.mean_abs.or(t.mean_abs);
        t.min_cosine = self.min_cosine.or(t.min_cosine);
        t.min_sqnr_db = self.min_sqnr.or(t.min_sqnr_db);
        t.min_pearson = self.min_pearson.or(t.min_pearson);
        t.min_sqnr_centered_db = self.min_sqnr_centered.or(t.min_sqnr_centered_db);
        t.min_top1 = self.min_top1.or(t.min_top1);
        t.min_top5 = self.min_top5.or(t.min_top5);
        t
    }
}
