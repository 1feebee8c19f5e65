//! The tract implementation of the quantize pass's `Calibrator`: one run per sample through a `Streamer`, which
//! hands each requested tensor to the observer the moment its node has run (an f32 tensor in place, without a
//! copy); tract frees it after its last consumer, so memory holds one sample's live activations.
//!
//! Calibration runs tract's optimised plan (falling back to the decluttered one when tract's optimiser fails on
//! a model). `compare` defaults to the decluttered form because it is held to ONNX Runtime within float32
//! noise; calibration only needs ranges that are the same run after run on one machine, which the optimised
//! plan gives (tract runs it on one thread, each output element summed in one fixed order). The decluttered
//! form is no more CPU-independent anyway: its Conv evaluates through the same CPU-specific matrix kernels.

use crate::error::{Error, Result};
use crate::ir::{Model, ValueDef};
use crate::passes::quantize::calibrate::{Calibrator, Observer};
use crate::validate::compare::sample_shapes;
use crate::validate::inputs::prepare_samples;
use crate::validate::run::{f32_view, load};
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
        // the plan is rebuilt when the input shapes or the branches the sample's `If`s take change
        let mut key = None;
        let mut streamer = None;
        let mut buf = Vec::new();
        for s in &samples {
            let sh = sample_shapes(s);
            // an `If` whose condition follows from the sample is specialised (taken branch inlined) so tract
            // never types a dead branch; the main graph's tensors keep their names
            let spec = specialise(model, s)?;
            let taken = spec.as_ref().map(|sp| sp.taken.clone());
            let k = (sh.clone(), taken);
            if key.as_ref() != Some(&k) {
                let m = spec.as_ref().map(|sp| &sp.model).unwrap_or(model);
                streamer = Some(load(m, &sh)?.streamer(&exposed, true)?);
                key = Some(k);
            }
            let st = streamer.as_ref().unwrap();
            for t in &from_inputs {
                let (_, x) = s.tensors.iter().find(|(n, _)| n == t).unwrap();
                let v = crate::validate::run::to_tract(x)?;
                let vals = f32_view(&v, &mut buf).ok_or_else(|| {
                    Error::Validate(format!("calibration: input '{t}' is not numeric"))
                })?;
                observer.observe_shaped(t, v.shape(), vals)?;
            }
            // each watched tensor is observed the moment its node has run; tract then frees it after its last
            // consumer, so only this sample's live activations are ever held
            st.run(s, &mut |t, v| {
                let vals = f32_view(v, &mut buf).ok_or_else(|| {
                    Error::Validate(format!(
                        "calibration: tensor '{t}' is {:?}, not numeric",
                        v.datum_type()
                    ))
                })?;
                observer.observe_shaped(t, v.shape(), vals)
            })?;
        }
        Ok(samples.len())
    }
}
