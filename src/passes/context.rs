//! What a pass may ask of its surroundings: a calibrator, a drift measure against the original model, and
//! progress reporting. The executors behind the first two live in `crate::validate` (tract); passes only see
//! the traits, so they never depend on how a model is run.

use std::fmt;
use std::io::IsTerminal;

use serde::Serialize;

use crate::json::ser_f64;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::passes::quantize::calibrate::Calibrator;

/// Measures how far a candidate model's outputs are from the original model's, on samples fixed when the
/// measure was made. The original's outputs are computed once, on the first call, and reused.
pub trait DriftMeasure {
    fn measure(&mut self, candidate: &Model) -> Result<DriftSummary>;
}

/// The drift of one graph output over all samples (the metric definitions are those of `validate`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputDrift {
    pub name: String,
    pub elements: u64,
    #[serde(serialize_with = "ser_f64")]
    pub max_abs: f64,
    #[serde(serialize_with = "ser_f64")]
    pub mean_abs: f64,
    #[serde(serialize_with = "ser_f64")]
    pub cosine: f64,
    /// +inf when the outputs are identical.
    #[serde(serialize_with = "ser_f64")]
    pub sqnr_db: f64,
    /// Fraction of rows whose argmax agrees, for classifier-like outputs.
    pub top1: Option<f64>,
    /// Positions where exactly one side is non-finite or they are different non-finite values.
    pub nonfinite_mismatches: u64,
    /// Positions where the candidate is non-finite and the original finite: a broken candidate.
    #[serde(skip_serializing_if = "is_zero")]
    pub broken: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The drift of every graph output of a candidate against the original.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DriftSummary {
    pub samples: usize,
    pub outputs: Vec<OutputDrift>,
}

impl DriftSummary {
    /// The worst (lowest) cosine similarity over the outputs (1 with no output).
    pub fn min_cosine(&self) -> f64 {
        self.outputs.iter().map(|o| o.cosine).fold(1.0, f64::min)
    }

    /// The worst (lowest) SQNR over the outputs (+inf with no output or no difference).
    pub fn min_sqnr_db(&self) -> f64 {
        self.outputs
            .iter()
            .map(|o| o.sqnr_db)
            .fold(f64::INFINITY, f64::min)
    }

    /// The largest absolute difference over the outputs.
    pub fn max_abs(&self) -> f64 {
        self.outputs.iter().map(|o| o.max_abs).fold(0.0, f64::max)
    }

    /// The first output the candidate computes as non-finite where the original's is finite, if any.
    pub fn first_broken(&self) -> Option<&OutputDrift> {
        self.outputs.iter().find(|o| o.broken > 0)
    }

    /// No difference at all (every element equal, non-finite values matching).
    pub fn is_exact(&self) -> bool {
        self.outputs
            .iter()
            .all(|o| o.max_abs == 0.0 && o.nonfinite_mismatches == 0)
    }
}

impl fmt::Display for DriftSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.outputs {
            writeln!(
                f,
                "{}: max_abs {:.3e}, mean_abs {:.3e}, cosine {:.6}, sqnr {:.1} dB",
                o.name, o.max_abs, o.mean_abs, o.cosine, o.sqnr_db
            )?;
        }
        Ok(())
    }
}

/// Progress of a long step. `start` begins a step (ending any running one), `advance` moves it on,
/// `finish` ends it.
pub trait Progress {
    fn start(&mut self, label: &str, total: Option<u64>);
    fn advance(&mut self, n: u64);
    fn finish(&mut self);
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// A progress bar (or a spinner when the total is unknown) on stderr; draws nothing when stderr is not a
/// terminal, so logs and pipes stay clean.
pub struct StderrProgress {
    enabled: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl StderrProgress {
    /// On when stderr is a terminal.
    pub fn new() -> StderrProgress {
        StderrProgress::with_enabled(std::io::stderr().is_terminal())
    }

    pub fn with_enabled(enabled: bool) -> StderrProgress {
        StderrProgress { enabled, bar: None }
    }

    /// Whether anything is drawn.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

impl Default for StderrProgress {
    fn default() -> Self {
        StderrProgress::new()
    }
}

impl Progress for StderrProgress {
    fn start(&mut self, label: &str, total: Option<u64>) {
        self.finish();
        if !self.enabled {
            return;
        }
        let bar = match total {
            Some(n) => {
                let b = indicatif::ProgressBar::new(n);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg:<24} [{bar:30}] {pos}/{len} {elapsed}",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b
            }
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_message(label.to_string());
        if total.is_none() {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        self.bar = Some(bar);
    }

    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for StderrProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The services a pipeline hands each pass. All optional: a pass that needs one it was not given fails with
/// an error saying what to provide.
pub struct PassContext {
    /// Runs the model on sample inputs with chosen tensors exposed (static quantization).
    pub calibrator: Option<Box<dyn Calibrator>>,
    /// Drift against the model the pipeline started from (budgets, rank searches).
    pub drift: Option<Box<dyn DriftMeasure>>,
    pub progress: Box<dyn Progress>,
    /// Where a pass may stream large computed tensors instead of holding them in memory (weight-only
    /// quantization of external-data weights): the output's folder. `None`: in memory.
    pub scratch: Option<crate::io::external::Spill>,
}

impl Default for PassContext {
    fn default() -> Self {
        PassContext {
            calibrator: None,
            drift: None,
            progress: Box::new(NoProgress),
            scratch: None,
        }
    }
}

impl fmt::Debug for PassContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassContext")
            .field("calibrator", &self.calibrator.is_some())
            .field("drift", &self.drift.is_some())
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

impl PassContext {
    /// The calibrator, or an error naming `pass` when the pipeline was given none.
    pub fn calibrator(&mut self, pass: &str) -> Result<&mut dyn Calibrator> {
        match &mut self.calibrator {
            Some(c) => Ok(c.as_mut()),
            None => Err(Error::Pass {
                pass: pass.to_string(),
                msg: "needs a calibrator (sample inputs to run the model on), and none was given"
                    .into(),
            }),
        }
    }

    /// Drift of `candidate` against the original, or an error naming `pass` when there is no drift measure.
    pub fn measure_drift(&mut self, pass: &str, candidate: &Model) -> Result<DriftSummary> {
        match &mut self.drift {
            Some(d) => d.measure(candidate),
            None => Err(Error::Pass {
                pass: pass.to_string(),
                msg: "needs to measure drift against the original model, and no drift measure was given"
                    .into(),
            }),
        }
    }
}
