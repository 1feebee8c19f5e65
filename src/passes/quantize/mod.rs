//! Quantization: the parameter arithmetic (`params`), the calibration interface (`calibrate`) and the
//! `quantize` pass. `quantize{mode=weight}` (weight-only int8 / uint8, `weight`) is built; `mode=static`
//! (calibrated QDQ) is a usage error until it lands.

pub mod calibrate;
pub mod params;
pub mod weight;

use std::collections::BTreeSet;

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
        /// Symmetric ranges (zero point 0 for int8, 128 for uint8; what integer kernels fuse) instead of each channel's min / max with a zero point (more accurate for weight-only).
        symmetric: bool = false,
        /// One scale per output channel (Conv 0, ConvTranspose 1, Gemm 0 with transB else 1, MatMul last, Gather 0); needs ai.onnx 13, raised with upgrade-opset when lower.
        per_channel: bool = true,
        /// 7-bit ranges (int8 [-64, 64], uint8 [0, 127]) for CPUs whose u8 x s8 dot products can overflow.
        reduce_range: bool = false,
        /// Weights with fewer elements stay float.
        min_elements: u64 = 256,
        /// Op types whose weights are quantized (Conv, ConvTranspose, Gemm, MatMul; Gather for embeddings).
        ops: Vec<String> = vec!["Conv".into(), "ConvTranspose".into(), "Gemm".into(), "MatMul".into()],
        /// Node-name or weight-name patterns (`*`, `?`): when given, only weights read by a matching node.
        include: Vec<String> = vec![],
        /// Node-name or weight-name patterns (`*`, `?`): weights read by a matching node stay float.
        exclude: Vec<String> = vec![],
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
    pub weight: WeightConfig,
}

impl Quantize {
    pub fn new(o: QuantizeOptions) -> Result<Quantize> {
        let mode: Mode = o.mode.parse()?;
        if mode == Mode::Static {
            return Err(Error::Usage(
                "mode=static (calibrated QDQ) is not available in this build yet; use mode=weight"
                    .into(),
            ));
        }
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
            weight: WeightConfig {
                qtype,
                symmetric: o.symmetric,
                per_channel: o.per_channel,
                reduce_range: o.reduce_range,
                min_elements: o.min_elements,
                ops,
                include: o.include,
                exclude: o.exclude,
            },
        })
    }
}

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(PASS);
        match self.mode {
            Mode::Weight => weight::run(model, &self.weight, cx, &mut report)?,
            Mode::Static => {
                return Err(Error::Usage(
                    "mode=static (calibrated QDQ) is not available in this build yet".into(),
                ))
            }
        }
        Ok(report)
    }
}
