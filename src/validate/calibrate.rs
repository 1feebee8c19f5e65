//! The tract implementation of the quantize pass's `Calibrator`: one run per sample with the requested tensors
//! exposed as extra outputs; each one is handed to the observer as soon as the sample has run and then dropped.

use crate::error::{Error, Result};
use crate::ir::{Model, ValueDef};
use crate::passes::quantize::calibrate::{Calibrator, Observer};
use crate::validate::compare::sample_shapes;
use crate::validate::inputs::prepare_samples;
use crate::validate::run::{load, values_f32};
use crate::validate::specialize::specialise;
use crate::validate::ValidateOptions;

/// Runs calibration samples through tract. The samples come from `options` exactly as for `compare`: files or
/// a folder (`inputs`), else `samples` seeded random samples at the shapes `dims` / `default_dim` give.
#[derive(Clone, Debug, Default)]
pub struct TractCalibrator {
    pub options: ValidateOptions,
}

impl TractCalibrator {
    pub fn new(options: ValidateOptions) -> TractCalibrator {
        TractCalibrator { options }
    }
}

impl Calibrator for TractCalibrator {
    fn calibrate(
        &mut self,
        model: &Model,
        tensors: &[String],
        observer: &mut dyn Observer,
    ) -> Result<usize> {
        let g = &model.graph;
        let mut exposed = Vec::new();
        let mut from_inputs = Vec::new();
        for t in tensors {
            let v = g.value_by_name(t).ok_or_else(|| {
                Error::Validate(format!("calibration: no tensor '{t}' in the main graph"))
            })?;
            match g.value(v).def {
                ValueDef::Input => from_inputs.push(t.clone()),
                ValueDef::Node(..) => exposed.push(t.clone()),
                _ => {
                    return Err(Error::Validate(format!(
                        "calibration: '{t}' is a constant, not an activation"
                    )))
                }
            }
        }
        let (_, samples) = prepare_samples(model, None, &self.options)?;
        // the runner is rebuilt when the input shapes or the branches the sample's `If`s take change
        let mut key = None;
        let mut runner = None;
        for s in &samples {
            let sh = sample_shapes(s);
            // an `If` whose condition follows from the sample is specialised (taken branch inlined) so tract
            // never types a dead branch; the main graph's tensors keep their names
            let spec = specialise(model, s)?;
            let taken = spec.as_ref().map(|sp| sp.taken.clone());
            let k = (sh.clone(), taken);
            if key.as_ref() != Some(&k) {
                let m = spec.as_ref().map(|sp| &sp.model).unwrap_or(model);
                let r = load(m, &sh)?.runner(&exposed, self.options.optimize)?;
                for t in &exposed {
                    if !r.outputs[r.graph_outputs..].contains(t) && !r.outputs.contains(t) {
                        return Err(Error::Validate(format!(
                            "calibration: tract cannot expose tensor '{t}'"
                        )));
                    }
                }
                runner = Some(r);
                key = Some(k);
            }
            let r = runner.as_ref().unwrap();
            for t in &from_inputs {
                let (_, x) = s.tensors.iter().find(|(n, _)| n == t).unwrap();
                let v = crate::validate::run::to_tract(x)?;
                let vals = values_f32(&v).ok_or_else(|| {
                    Error::Validate(format!("calibration: input '{t}' is not numeric"))
                })?;
                observer.observe_shaped(t, v.shape(), &vals)?;
            }
            let outs = r.run(s)?;
            for t in &exposed {
                let i = r.outputs.iter().position(|n| n == t).unwrap();
                let vals = values_f32(&outs[i]).ok_or_else(|| {
                    Error::Validate(format!(
                        "calibration: tensor '{t}' is {:?}, not numeric",
                        outs[i].datum_type()
                    ))
                })?;
                observer.observe_shaped(t, outs[i].shape(), &vals)?;
            }
            // `outs` (this sample's activations) is dropped here, before the next sample runs.
        }
        Ok(samples.len())
    }
}
