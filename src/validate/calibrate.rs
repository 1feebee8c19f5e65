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
/// `options.optimize` is not consulted: calibration always runs the optimised plan (see the module doc).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::quantize::calibrate::{StatsCollector, StatsOptions, TensorStats};
    use crate::validate::run::values_f32;
    use std::collections::BTreeMap;

    type Stats = BTreeMap<String, TensorStats>;

    /// Every node output of the main graph.
    fn node_outputs(m: &Model) -> Vec<String> {
        let g = &m.graph;
        g.nodes()
            .flat_map(|(_, n)| n.outputs.iter().flatten().copied().collect::<Vec<_>>())
            .map(|v| g.value_name(v).to_string())
            .collect()
    }

    /// Statistics the way calibration gathered them before streaming: every tensor a model output of the
    /// decluttered plan, all of a sample's kept to the end of its run, then copied to f32.
    fn exposed(m: &Model, names: &[String], opts: &ValidateOptions) -> Stats {
        let (_, samples) = prepare_samples(m, None, opts).unwrap();
        let mut c = StatsCollector::new(StatsOptions { histogram_bins: 64 });
        for s in &samples {
            let r = load(m, &sample_shapes(s))
                .unwrap()
                .runner(names, false)
                .unwrap();
            let outs = r.run(s).unwrap();
            for t in names {
                let i = r.outputs.iter().position(|n| n == t).unwrap();
                c.observe(t, &values_f32(&outs[i]).unwrap()).unwrap();
            }
        }
        c.stats
    }

    fn streamed(m: &Model, names: &[String], opts: &ValidateOptions, optimize: bool) -> Stats {
        let (_, samples) = prepare_samples(m, None, opts).unwrap();
        let mut c = StatsCollector::new(StatsOptions { histogram_bins: 64 });
        let mut buf = Vec::new();
        for s in &samples {
            let st = load(m, &sample_shapes(s))
                .unwrap()
                .streamer(names, optimize)
                .unwrap();
            assert_eq!(st.optimized, optimize);
            st.run(s, &mut |t, v| c.observe(t, f32_view(v, &mut buf).unwrap()))
                .unwrap();
        }
        c.stats
    }

    /// Streaming hands the observer the very values the old exposed-outputs path did: on the same (decluttered)
    /// plan the statistics are equal to the bit, histograms included. On the optimised plan tract may sum in
    /// another order, so values may move by float32 rounding: every count is equal and each range end within
    /// 1e-3 of the tensor's largest magnitude. Bound: these fixtures chain at most 3 sums of K <= 256 terms
    /// (Conv 3x3x8, Gemm over 64 features, the 16x16 average pool); reordering a sum moves it by at most
    /// K eps32 sum|terms| = 256 * 6e-8 = 1.5e-5 of its terms' magnitudes, which random-sign weights make at most
    /// ~10x the result's: 1.5e-4 per layer, 4.6e-4 over three, under 1e-3.
    #[test]
    fn streaming_matches_exposed_outputs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        for f in ["conv_bn_relu.onnx", "digits_resnet/digits_resnet.onnx"] {
            let m = crate::io::load(&root.join(f)).unwrap();
            let names = node_outputs(&m);
            let opts = ValidateOptions {
                samples: 3,
                ..Default::default()
            };
            let old = exposed(&m, &names, &opts);
            assert_eq!(old.len(), names.len(), "{f}");
            assert_eq!(streamed(&m, &names, &opts, false), old, "{f}");
            let fast = streamed(&m, &names, &opts, true);
            for (t, a) in &old {
                let b = &fast[t];
                assert_eq!(
                    (a.batches, a.minmax.count, a.minmax.nan_count),
                    (b.batches, b.minmax.count, b.minmax.nan_count),
                    "{f} {t}"
                );
                let tol = 1e-3 * f64::from(a.minmax.abs_max());
                let (alo, ahi) = a.minmax.range().unwrap();
                let (blo, bhi) = b.minmax.range().unwrap();
                assert!(
                    f64::from((alo - blo).abs()) <= tol && f64::from((ahi - bhi).abs()) <= tol,
                    "{f} {t}: {:?} vs {:?}",
                    a.minmax,
                    b.minmax
                );
            }
        }
    }
}
