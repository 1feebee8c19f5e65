//! Quantization: the parameter arithmetic (`params`), the calibration interface (`calibrate`) and the
//! `quantize` pass: `quantize{mode=weight}` (weight-only int8 / uint8, `weight`) and `mode=static`
//! (calibrated QDQ on activations, weights and biases, `static_qdq`).

pub mod calibrate;
pub mod params;
pub mod runtime;
pub mod static_qdq;
pub mod weight;

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::passes::{Pass, PassContext, PassReport};
use params::QType;
use weight::WeightConfig;

pub const PASS: &str = "quantize";

crate::pass_options! {
    /// Options of `quantize`.
    pub struct QuantizeOptions {
        /// What to quantize: `weight` (constant weights only, int8 storage read through DequantizeLinear) or `static` (calibrated QDQ on activations too).
        mode: String = "weight".to_string(),
        /// Integer type of the quantized weights: int8 or uint8.
        dtype: String = "int8".to_string(),
        /// Symmetric ranges (zero point 0 for int8, 128 for uint8; what integer kernels fuse) instead of each channel's min / max with a zero point. Unset: asymmetric for mode=weight (more accurate), symmetric for mode=static (the only form it takes).
        symmetric: Option<bool> = None,
        /// One scale per output channel (Conv 0, ConvTranspose 1, Gemm 0 with transB else 1, MatMul last, LSTM/GRU/RNN each gate row of each direction, Gather each table row); needs ai.onnx 13, raised with upgrade-opset when lower.
        per_channel: bool = true,
        /// 7-bit ranges (int8 [-64, 64], uint8 [0, 127]) for CPUs whose u8 x s8 dot products can overflow.
        reduce_range: bool = false,
        /// Weights with fewer elements stay float.
        min_elements: u64 = weight::DEFAULT_MIN_ELEMENTS,
        /// Op types whose weights are quantized: Conv, ConvTranspose, Gemm, MatMul, Gather (embedding tables, gathered as 8-bit rows), LSTM / GRU / RNN (W and R; biases stay float). mode=static takes Conv / ConvTranspose / Gemm / MatMul from this list (Gather through activation_ops), and quantizes LSTM / GRU / RNN weights weight-only.
        ops: Vec<String> = weight::KNOWN_OPS.iter().map(|s| s.to_string()).collect(),
        /// mode=weight: the form of MatMul weights: `qdq` (int8 read through DequantizeLinear) or `matmulnbits` (ONNX Runtime's `com.microsoft::MatMulNBits`, 8-bit blocks along K, the weight-only kernel ORT runs without dequantizing B each call; other weights keep the DequantizeLinear form).
        format: String = "qdq".to_string(),
        /// format=matmulnbits: block length along K, a power of two from 16 to 256.
        block_size: u64 = 32,
        /// Node-name or weight-name patterns (`*`, `?`): when given, only weights read by a matching node.
        include: Vec<String> = vec![],
        /// Node-name or weight-name patterns (`*`, `?`): weights read by a matching node stay float.
        exclude: Vec<String> = vec![],
        /// mode=static: activation range method: minmax, percentile or entropy.
        method: String = "minmax".to_string(),
        /// mode=static, method=percentile: percentile of magnitudes kept.
        percentile: f64 = 99.999,
        /// mode=static: activation type, uint8 or int8.
        activation_type: String = "uint8".to_string(),
        /// mode=static: further ops: activations only (Add, Mul, pools), or an embedding table (Gather: the table and its gathered rows 8-bit in the activation type).
        activation_ops: Vec<String> = vec!["Add".into(), "Mul".into(), "GlobalAveragePool".into(), "AveragePool".into(), "Gather".into()],
        /// mode=static: cross-layer equalisation of Conv/Gemm -> Relu/LeakyRelu/PRelu -> Conv/Gemm chains first.
        equalize: bool = false,
        /// mode=static: correct biases for the mean shift of the weight quantization error (per-channel input means from calibration).
        bias_correction: bool = false,
        /// mode=static: keep the most sensitive layers float until the worst output cosine is at least this (0 = off).
        drift_budget: f64 = 0.0,
        /// mode=static: write the plan (JSON: per tensor its scale / zero point / type, per node the decision and why, per weight its scales) here.
        plan: Option<PathBuf> = None,
        /// mode=static: build from this plan (as written with `plan`, possibly edited) instead of calibrating.
        load_plan: Option<PathBuf> = None,
        /// mode=static: calibrate and plan only; the model is not changed.
        dry_run: bool = false,
    }
}

/// The quantize mode, parsed from `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Weight,
    Static,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "weight" => Ok(Mode::Weight),
            "static" => Ok(Mode::Static),
            _ => Err(Error::Usage(format!(
                "unknown mode '{s}' (expected weight or static)"
            ))),
        }
    }
}

pub struct Quantize {
    pub mode: Mode,
    /// `format=matmulnbits`: MatMul weights become MatMulNBits with this block length.
    pub nbits_block: Option<usize>,
    pub weight: WeightConfig,
    pub static_qdq: static_qdq::StaticQdqOptions,
}

impl Quantize {
    pub fn new(o: QuantizeOptions) -> Result<Quantize> {
        let mode: Mode = o.mode.parse()?;
        if mode == Mode::Weight && (o.plan.is_some() || o.load_plan.is_some() || o.dry_run) {
            return Err(Error::Usage(
                "plan / load_plan / dry_run apply to mode=static".into(),
            ));
        }
        let nbits_block = match o.format.as_str() {
            "qdq" => None,
            "matmulnbits" if mode == Mode::Static => {
                return Err(Error::Usage(
                    "format=matmulnbits is a weight-only form: use it with mode=weight".into(),
                ))
            }
            "matmulnbits" => {
                let b = o.block_size;
                if !(16..=256).contains(&b) || !b.is_power_of_two() {
                    return Err(Error::Usage(format!(
                        "block_size {b}: a power of two from 16 to 256"
                    )));
                }
                Some(b as usize)
            }
            f => {
                return Err(Error::Usage(format!(
                    "unknown format '{f}' (expected qdq or matmulnbits)"
                )))
            }
        };
        if mode == Mode::Static
            && (o.dtype != "int8" || o.symmetric == Some(false) || o.reduce_range)
        {
            return Err(Error::Usage(
                "mode=static quantizes weights to symmetric int8 (the form ONNX Runtime's integer kernels take): drop dtype / symmetric / reduce_range"
                    .into(),
            ));
        }
        let static_qdq = static_qdq::StaticQdqOptions {
            method: o.method.clone(),
            percentile: o.percentile,
            activation_type: o.activation_type.clone(),
            per_channel: o.per_channel,
            // the weight-only ops static QDQ has no rule of its own for stay out: the recurrent ones (weight-only
            // defaults would otherwise reach their weights inside bodies too) and Gather, which static mode
            // takes from activation_ops (it quantizes the gathered rows as activations)
            ops: o
                .ops
                .iter()
                .filter(|op| !matches!(op.as_str(), "Gather" | "LSTM" | "GRU" | "RNN"))
                .chain(&o.activation_ops)
                .cloned()
                .collect(),
            weight_only_ops: o
                .ops
                .iter()
                .filter(|op| matches!(op.as_str(), "LSTM" | "GRU" | "RNN"))
                .cloned()
                .collect(),
            include: o.include.clone(),
            exclude: o.exclude.clone(),
            equalize: o.equalize,
            bias_correction: o.bias_correction,
            drift_budget: o.drift_budget,
            plan: o.plan.clone(),
            load_plan: o.load_plan.clone(),
            dry_run: o.dry_run,
            ..Default::default()
        };
        static_qdq.check()?;
        let qtype: QType = o.dtype.parse()?;
        let mut ops = BTreeSet::new();
        for op in &o.ops {
            if !weight::KNOWN_OPS.contains(&op.as_str()) {
                return Err(Error::Usage(format!(
                    "op '{op}' has no known weight slot; choose from {}",
                    weight::KNOWN_OPS.join(", ")
                )));
            }
            ops.insert(op.clone());
        }
        Ok(Quantize {
            mode,
            nbits_block,
            static_qdq,
            weight: WeightConfig {
                qtype,
                symmetric: o.symmetric.unwrap_or(false),
                per_channel: o.per_channel,
                reduce_range: o.reduce_range,
                min_elements: o.min_elements,
                ops,
                include: o.include,
                exclude: o.exclude,
                bodies_only: false,
                spill: None,
            },
        })
    }
}

impl Quantize {
    /// Quantize `model`; the pass report and, in static mode, the plan the model was (or with `dry_run`
    /// would be) built from.
    pub fn quantize(
        &self,
        model: &mut Model,
        cx: &mut PassContext,
    ) -> Result<(PassReport, Option<static_qdq::QdqPlan>)> {
        match self.mode {
            Mode::Weight => {
                let mut report = PassReport::new(PASS);
                if let Some(block) = self.nbits_block {
                    weight::nbits::convert(model, &self.weight, block, &mut report)?;
                }
                if self.weight.spill.is_none() && cx.scratch.is_some() {
                    let cfg = WeightConfig {
                        spill: cx.scratch.clone(),
                        ..self.weight.clone()
                    };
                    weight::run(model, &cfg, cx, &mut report)?;
                } else {
                    weight::run(model, &self.weight, cx, &mut report)?;
                }
                Ok((report, None))
            }
            Mode::Static => {
                let (report, plan) = static_qdq::run(model, cx, &self.static_qdq)?;
                Ok((report, Some(plan)))
            }
        }
    }
}

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<PassReport> {
        Ok(self.quantize(model, cx)?.0)
    }
}

/// Queue `<base>_quantized`, `<base>_scale`, `<base>_zero_point` and one `<base>_DequantizeLinear` (output
/// `<base>_DequantizeLinear_Output`, the names ONNX Runtime's tools use) in `g`; returns the output and the
/// node's name. Fresh names are taken in that order, so outputs stay byte-identical run to run.
pub(crate) fn add_dequantize(
    p: &mut crate::ir::Patch,
    g: &crate::ir::Graph,
    base: &str,
    q: crate::ir::Tensor,
    scale: crate::ir::Tensor,
    zero_point: crate::ir::Tensor,
    axis: Option<i64>,
) -> (crate::ir::ValRef, String) {
    let qv = p.add_named_initializer(g, base, "_quantized", q);
    let sv = p.add_named_initializer(g, base, "_scale", scale);
    let zv = p.add_named_initializer(g, base, "_zero_point", zero_point);
    let out = p.new_named_value(g, base, "_DequantizeLinear_Output");
    let name = p.fresh_suffixed(g, base, "_DequantizeLinear");
    p.add_node_spec(crate::ir::NewNode {
        name: Some(name.clone()),
        op: crate::ir::OpKey::onnx("DequantizeLinear"),
        inputs: vec![Some(qv), Some(sv), Some(zv)],
        outputs: vec![out],
        attrs: axis
            .map(|a| crate::ir::Attribute::int("axis", a))
            .into_iter()
            .collect(),
    });
    (out, name)
}
