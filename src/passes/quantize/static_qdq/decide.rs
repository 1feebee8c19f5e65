//! Deciding, the first half of the plan stage: from the selection and what calibration observed to the
//! `Choices` every plan is assembled from, keyed by value and node ids: the parameters of each calibrated
//! activation (min / max, percentile or entropy range, widened to hold 0), of each constant operand (its own
//! min / max) and of gathered embedding rows (their table's), the int8 scales of each weight, bias
//! correction's mean output shift per biased node, and the sites calibration leaves float (an Add whose
//! operands' ranges differ too much). Tensors and nodes that stay float are said in the report here, in
//! value order then node order, as a calibrating run always said them.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ir::{Graph, NodeId, ValueId};
use crate::passes::{Outcome, PassReport};

use super::observe::Observed;
use super::plan::{ActParams, QdqDecision};
use super::ranges::{
    activation_params, clip_range, fake_quant_sqnr_db, mean_shift, quantize_symmetric,
    table_params, too_few_for_histogram, weight_error, weight_scales, RangeMethod,
    CATASTROPHIC_SQNR_DB,
};
use super::select::{QdqSite, Selection};

/// A weight and the axis of its per-channel scales (None: per tensor).
pub(super) type WeightKey = (ValueId, Option<usize>);

/// What selection and calibration decided, by id.
pub(super) struct Choices {
    /// Every candidate, in topological order.
    pub selection: Vec<Selection>,
    /// Parameters of the calibrated tensors (and of gathered embedding rows).
    pub params: BTreeMap<ValueId, ActParams>,
    /// Why a calibrated tensor stays float, or how its range was chosen.
    pub tensor_reasons: BTreeMap<ValueId, String>,
    /// Symmetric int8 scales per (weight, axis).
    pub weights: BTreeMap<WeightKey, Vec<f32>>,
    /// Parameters of the constant operands.
    pub constants: BTreeMap<ValueId, ActParams>,
    /// Bias correction's mean output shift per node (with `bias_correction`, where available).
    pub shifts: BTreeMap<NodeId, Vec<f64>>,
    /// Sites left float after calibration, with the decision and why.
    pub float: BTreeMap<NodeId, (QdqDecision, String)>,
    pub bias_correction: bool,
}

impl Choices {
    pub fn sites(&self) -> impl Iterator<Item = &QdqSite> {
        self.selection.iter().filter_map(Selection::site)
    }

    /// The sites not left float (yet).
    pub fn candidates(&self) -> Vec<&QdqSite> {
        self.sites()
            .filter(|s| !self.float.contains_key(&s.node))
            .collect()
    }
}

/// How the activations are calibrated and typed.
#[derive(Clone, Copy)]
pub(super) struct Calibration {
    pub method: RangeMethod,
    pub signed: bool,
    pub bias_correction: bool,
}

/// Turn the selection and the observations into choices; tensors and nodes that stay float are remarked in
/// `report` (in value order, then node order).
pub(super) fn decide(
    g: &Graph,
    selection: Vec<Selection>,
    set: &BTreeMap<ValueId, Option<ValueId>>,
    observed: &Observed,
    cal: Calibration,
    report: &mut PassReport,
) -> Result<Choices> {
    let mut c = Choices {
        selection,
        params: BTreeMap::new(),
        tensor_reasons: BTreeMap::new(),
        weights: BTreeMap::new(),
        constants: BTreeMap::new(),
        shifts: BTreeMap::new(),
        float: BTreeMap::new(),
        bias_correction: cal.bias_correction,
    };
    ranges_of(g, set, observed, cal, &mut c, report);
    constants_of(g, cal.signed, &mut c)?;
    unbalanced_adds(g, set, observed, &mut c, report);
    weights_of(g, observed, &mut c)?;
    Ok(c)
}

/// Activation parameters from each calibrated tensor's range; NaN or infinite values keep it float, and so
/// does a catastrophic SQNR of the tensor quantised at those parameters (measured on its calibration subsample).
fn ranges_of(
    g: &Graph,
    set: &BTreeMap<ValueId, Option<ValueId>>,
    observed: &Observed,
    cal: Calibration,
    c: &mut Choices,
    report: &mut PassReport,
) {
    for (v, src) in set {
        if src.is_some() {
            continue;
        }
        let name = g.value_name(*v);
        let Some(st) = observed.stats.get(name) else {
            continue;
        };
        if st.minmax.nan_count > 0 {
            let why = "NaN seen in calibration: tensor kept float";
            report.remark(name.to_string(), Outcome::Skipped, why);
            c.tensor_reasons.insert(*v, why.into());
            continue;
        }
        if cal.method != RangeMethod::MinMax && too_few_for_histogram(st) {
            let why = format!(
                "{} values seen, fewer than the histogram's bins: min/max range",
                st.minmax.count
            );
            report.remark(name.to_string(), Outcome::Applied, why.clone());
            c.tensor_reasons.insert(*v, why);
        }
        let Some((lo, hi)) = clip_range(st, cal.method) else {
            c.tensor_reasons
                .insert(*v, "no value seen in calibration".into());
            continue;
        };
        if !(lo.is_finite() && hi.is_finite()) {
            let why = "infinite value seen in calibration: tensor kept float";
            report.remark(name.to_string(), Outcome::Skipped, why);
            c.tensor_reasons.insert(*v, why.into());
            continue;
        }
        let (scale, zero_point) = activation_params(lo, hi, cal.signed);
        let sqnr = observed
            .samples
            .get(name)
            .and_then(|x| fake_quant_sqnr_db(x, scale, zero_point, cal.signed));
        if let Some(db) = sqnr.filter(|db| *db < CATASTROPHIC_SQNR_DB) {
            let why = format!(
                "8 bits would cost it everything: SQNR {db:.1} dB on the calibration samples (range \
                 [{lo:.3e}, {hi:.3e}]), below {CATASTROPHIC_SQNR_DB} dB; tensor kept float"
            );
            report.remark(name.to_string(), Outcome::Skipped, why.clone());
            c.tensor_reasons.insert(*v, why);
            continue;
        }
        c.params.insert(
            *v,
            ActParams {
                scale,
                zero_point,
                signed: cal.signed,
            },
        );
    }
}

/// Parameters of the constant operands (their own min / max in the activation type); gathered embedding rows
/// take their table's parameters, so requantising a dequantised row with them is exact.
fn constants_of(g: &Graph, signed: bool, c: &mut Choices) -> Result<()> {
    let mut found = BTreeMap::new();
    let mut rows = Vec::new();
    for s in c.sites() {
        for &(_, k) in &s.consts {
            if found.contains_key(&k) {
                continue;
            }
            let wr = g.weight(k).expect("checked in select");
            let v = g.read_weight(&wr)?.to_f64_vec()?;
            let (scale, zero_point) = table_params(&v, signed);
            found.insert(
                k,
                ActParams {
                    scale,
                    zero_point,
                    signed,
                },
            );
        }
        let gather = g.node(s.node).is_some_and(|n| n.op.is("Gather"));
        if let (true, Some(&(_, t)), Some(&y)) = (gather, s.consts.first(), s.outs.first()) {
            rows.push((y, t));
        }
    }
    for (y, t) in rows {
        c.params.insert(y, found[&t]);
    }
    c.constants = found;
    Ok(())
}

/// An Add whose operands' ranges differ by more than 2^8 would lose the smaller one below one 8-bit step of
/// the sum (an attention mask of -1e4 added to scores of order 1): it stays float.
fn unbalanced_adds(
    g: &Graph,
    set: &BTreeMap<ValueId, Option<ValueId>>,
    observed: &Observed,
    c: &mut Choices,
    report: &mut PassReport,
) {
    let absmax = |v: ValueId| -> Option<f32> {
        let k = set.get(&v)?.unwrap_or(v);
        observed
            .stats
            .get(g.value_name(k))
            .map(|s| s.minmax.abs_max())
    };
    let mut float = Vec::new();
    for s in c.sites() {
        let is_add = g.node(s.node).is_some_and(|n| n.op.is("Add"));
        if !is_add || s.acts.len() != 2 {
            continue;
        }
        if let (Some(a), Some(b)) = (absmax(s.acts[0]), absmax(s.acts[1])) {
            let (lo, hi) = (a.min(b), a.max(b));
            if hi > 256.0 * lo.max(f32::MIN_POSITIVE) {
                let why = format!("operand ranges {lo:.3e} and {hi:.3e} differ by more than 256x: the smaller would fall below one 8-bit step of the sum; kept float");
                report.remark(s.at.clone(), Outcome::Skipped, why.clone());
                float.push((s.node, why));
            }
        }
    }
    for (n, why) in float {
        c.float.insert(n, (QdqDecision::Float, why));
    }
}

/// Weight scales per (weight, axis), and with bias correction each biased site's mean output shift (from the
/// weight's quantization error at those scales and the per-channel means of the site's input).
fn weights_of(g: &Graph, observed: &Observed, c: &mut Choices) -> Result<()> {
    let mut scales: BTreeMap<WeightKey, Vec<f32>> = BTreeMap::new();
    // (dims, W_q - W) per (weight, axis), computed only where a shift needs it
    let mut errors: BTreeMap<WeightKey, (Vec<i64>, Vec<f64>)> = BTreeMap::new();
    let mut shifts = BTreeMap::new();
    for s in c.sites() {
        let Some((_, w, axis)) = s.weight else {
            continue;
        };
        let key = (w, axis);
        let mean = if c.bias_correction && s.bias.is_some() {
            observed.means.get(&s.acts[0])
        } else {
            None
        };
        let need_error = mean.is_some() && !errors.contains_key(&key);
        if !scales.contains_key(&key) || need_error {
            let wr = g.weight(w).expect("checked in select");
            let t = g.read_weight(&wr)?;
            let values = t.to_f64_vec()?;
            let sc = scales
                .entry(key)
                .or_insert_with(|| weight_scales(&values, &t.dims, axis));
            if need_error {
                let q = quantize_symmetric(&values, &t.dims, axis, sc);
                let err = weight_error(&values, &t.dims, axis, &q, sc);
                errors.insert(key, (t.dims.clone(), err));
            }
        }
        if let (Some(m), Some((dims, err))) = (mean, errors.get(&key)) {
            if let Some(shift) = mean_shift(s.layout, dims, err, m) {
                shifts.insert(s.node, shift);
            }
        }
    }
    c.weights = scales;
    c.shifts = shifts;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::synthetic_plan;
    use super::super::StaticQdqOptions;
    use super::*;

    /// An Add whose operands' ranges differ by more than 256x stays float (the smaller operand would fall
    /// below one 8-bit step of the sum), with the reason in the plan; at 200x it is quantised.
    #[test]
    fn an_unbalanced_add_stays_float() {
        let mut b = crate::ir::builder::GraphBuilder::new("g");
        let x = b.input("x", crate::ir::DataType::FLOAT, &["1", "4"]);
        let mask = b.input("mask", crate::ir::DataType::FLOAT, &["1", "4"]);
        let w = b.initializer(crate::ir::Tensor::from_f32("w", vec![4, 4], &[0.5; 16]));
        let a = b.node("MatMul", &[x, w], vec![], 1)[0];
        let y = b.node("Add", &[a, mask], vec![], 1)[0];
        b.output(y, crate::ir::DataType::FLOAT, &["1", "4"]);
        let m = crate::ir::builder::model(b.build(), 13);
        let add = |ratio: f32| {
            let plan = synthetic_plan(&m, &StaticQdqOptions::default(), |n| {
                if n == "mask" {
                    (-ratio, 0.0)
                } else {
                    (-1.0, 1.0)
                }
            });
            plan.nodes.into_iter().find(|n| n.op == "Add").unwrap()
        };
        let far = add(1e4);
        assert_eq!(far.decision, QdqDecision::Float);
        assert!(far.reason.unwrap().contains("differ by more than 256x"));
        assert_eq!(add(200.0).decision, QdqDecision::Quantize);
    }
}
