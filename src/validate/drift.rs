//! The tract implementation of the passes' `DriftMeasure`: the original model's outputs are computed once, on
//! the first measure, for samples chosen as `compare` chooses them; every measure then runs only the candidate
//! and compares its graph outputs (matched by name) with the cached ones, with the metrics of `compare`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::passes::{DriftMeasure, DriftSummary, OutputDrift};
use crate::validate::metrics::{classifier_classes, Acc};
use crate::validate::{prepare_samples, run_model, Sample, ValidateOptions};

/// One graph output of the original on one sample.
struct RefOutput {
    name: String,
    shape: Vec<i64>,
    is_float: bool,
    values: Vec<f32>,
}

/// Drift against a fixed original model. Holds the original (a clone: tensor data is shared, not copied) until
/// the first measure, then the samples and the original's outputs.
pub struct TractDrift {
    original: Model,
    options: ValidateOptions,
    reference: Option<(Vec<Sample>, Vec<Vec<RefOutput>>)>,
    reference_runs: Arc<AtomicUsize>,
}

impl TractDrift {
    /// Measure drift against `original` on the samples `options` describes (files, or seeded random inputs).
    pub fn new(original: &Model, options: ValidateOptions) -> TractDrift {
        TractDrift {
            original: original.clone(),
            options,
            reference: None,
            reference_runs: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A counter of the original's runs (one per sample, all on the first measure), readable after the
    /// measure is handed to a `PassContext`.
    pub fn reference_runs(&self) -> Arc<AtomicUsize> {
        self.reference_runs.clone()
    }

    fn reference(&mut self) -> Result<&(Vec<Sample>, Vec<Vec<RefOutput>>)> {
        if self.reference.is_none() {
            let (_, samples) = prepare_samples(&self.original, None, &self.options)?;
            let mut outs = Vec::with_capacity(samples.len());
            for s in &samples {
                let run = run_model(&self.original, s).map_err(|e| match e {
                    Error::Validate(m) => Error::Validate(format!("original model: {m}")),
                    e => e,
                })?;
                self.reference_runs.fetch_add(1, Ordering::Relaxed);
                let mut per = Vec::with_capacity(run.outputs.len());
                for (name, t) in run.outputs {
                    let values = t
                        .to_f32_vec()
                        .map_err(|e| Error::Validate(format!("original output '{name}': {e}")))?;
                    per.push(RefOutput {
                        name,
                        shape: t.dims.clone(),
                        is_float: t.dtype().is_float(),
                        values,
                    });
                }
                outs.push(per);
            }
            self.reference = Some((samples, outs));
        }
        Ok(self.reference.as_ref().expect("computed above"))
    }
}

impl DriftMeasure for TractDrift {
    fn measure(&mut self, candidate: &Model) -> Result<DriftSummary> {
        let (samples, reference) = self.reference()?;
        let n_out = reference.first().map_or(0, Vec::len);
        let mut accs = vec![Acc::default(); n_out];
        let mut broken = vec![0u64; n_out];
        for (s, refs) in samples.iter().zip(reference) {
            let run = run_model(candidate, s).map_err(|e| match e {
                Error::Validate(m) => Error::Validate(format!("candidate model: {m}")),
                e => e,
            })?;
            for (k, r) in refs.iter().enumerate() {
                let (_, t) = run
                    .outputs
                    .iter()
                    .find(|(n, _)| *n == r.name)
                    .ok_or_else(|| {
                        Error::Validate(format!(
                            "the candidate has no output '{}' (the original's outputs: {})",
                            r.name,
                            refs.iter()
                                .map(|r| r.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                if t.dims != r.shape {
                    return Err(Error::Validate(format!(
                        "output '{}' is {:?} in the original but {:?} in the candidate (sample {})",
                        r.name, r.shape, t.dims, s.origin
                    )));
                }
                let values = t
                    .to_f32_vec()
                    .map_err(|e| Error::Validate(format!("candidate output '{}': {e}", r.name)))?;
                let shape: Vec<usize> = r.shape.iter().map(|d| *d as usize).collect();
                accs[k].add(&r.values, &values, classifier_classes(&shape, r.is_float));
                broken[k] += r
                    .values
                    .iter()
                    .zip(&values)
                    .filter(|(a, b)| a.is_finite() && !b.is_finite())
                    .count() as u64;
            }
        }
        let names = reference.first().map(|v| v.iter().map(|r| r.name.clone()));
        let outputs = names
            .into_iter()
            .flatten()
            .zip(accs.iter().zip(&broken))
            .map(|(name, (acc, broken))| {
                let m = acc.finish();
                OutputDrift {
                    name,
                    elements: m.elements,
                    max_abs: m.max_abs,
                    mean_abs: m.mean_abs,
                    cosine: m.cosine,
                    sqnr_db: m.sqnr_db,
                    top1: m.top1,
                    nonfinite_mismatches: m.nonfinite_mismatches,
                    broken: *broken,
                }
            })
            .collect();
        Ok(DriftSummary {
            samples: samples.len(),
            outputs,
        })
    }
}
