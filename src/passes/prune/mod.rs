//! `prune`: unstructured magnitude pruning, N:M semi-structured pruning and structured channel pruning
//! (analysis -> plan -> apply) of the constant weights of Conv / ConvTranspose / Gemm / MatMul.
//!
//! - `method=magnitude`: the smallest-magnitude weights become zero, per layer (`scope=layer`), with one
//!   threshold over every layer (`scope=global`) or below an absolute `threshold`.
//! - `method=nm`: in every block of `m` consecutive weights along the reduction dimension (input channels x
//!   kernel for Conv, K for MatMul/Gemm as the op reads it, `transB` honoured) at most `n` stay non-zero.
//! - `sparse_storage` (magnitude / nm): a pruned weight of the main graph whose density is at most
//!   `sparse_density` and whose sparse form is smaller is written sparse: a `Constant` node with `sparse_value`
//!   (an initializer becomes one), which ONNX Runtime densifies at load. Not a `GraphProto.sparse_initializer`:
//!   ONNX Runtime loads those too, but onnx.checker's full_check types them as `sparse_tensor(T)` and every
//!   Conv / MatMul reading one fails its shape inference. Indices are int64 linear `[NNZ]` (the `[NNZ, rank]`
//!   form costs `rank` times more), values keep the weight's dtype, so a float32 weight costs 12 bytes per
//!   non-zero against 4 per element dense: the file shrinks for densities below 1/3 (float16: 1/5).
//! - `method=channel`: channel dependency groups (`channel::analysis`), a plan of plain data
//!   (`channel::plan`), then `mode=zero` (shapes kept, pruned channels exactly zero) or `mode=remove`
//!   (weights, biases, norm parameters, consumers' input channels and shape arguments sliced).

pub mod channel;
mod magnitude;

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::passes::{Pass, PassContext, PassReport};

pub use channel::plan::{GroupPlan, Plan};
pub use channel::{ChannelSummary, GroupFigures};
pub use magnitude::{satisfies_nm, LayerSparsity};

pub const PASS: &str = "prune";

crate::pass_options! {
    /// Options of `prune`.
    pub struct PruneOptions {
        /// magnitude | nm | channel.
        method: String = "magnitude".to_string(),
        /// magnitude: fraction of the weights to zero (0..1).
        sparsity: f64 = 0.5,
        /// magnitude: `layer` (each weight its own threshold) or `global` (one threshold over all).
        scope: String = "layer".to_string(),
        /// magnitude: zero every weight with |w| below this (replaces `sparsity`).
        threshold: Option<f64> = None,
        /// nm: weights kept in each block.
        n: u32 = 2,
        /// nm: block length along the reduction dimension.
        m: u32 = 4,
        /// magnitude / nm: op types whose constant weights are pruned.
        ops: Vec<String> = vec!["Conv".into(), "ConvTranspose".into(), "Gemm".into(), "MatMul".into()],
        /// magnitude / nm: store pruned main-graph weights sparse (`Constant` nodes with `sparse_value`).
        sparse_storage: bool = false,
        /// magnitude / nm: with `sparse_storage`, only weights whose density (non-zeros / elements) is at most this.
        sparse_density: f64 = 0.3,
        /// channel: fraction of the channels of each group to drop (with `global`, of all prunable channels).
        ratio: f64 = 0.3,
        /// channel: rank channels of all groups together (importance normalised by each group's mean).
        global: bool = false,
        /// channel: importance l1 | l2 | bn (BatchNormalization |gamma|, l1 where a group has none).
        importance: String = "l1".to_string(),
        /// channel: zero (shapes kept) | remove (channels sliced away).
        mode: String = "zero".to_string(),
        /// channel: keep a multiple of this many channels in each group (or range of a split group).
        round_to: u32 = 1,
        /// channel: save the plan (JSON) here.
        plan: Option<PathBuf> = None,
        /// channel: apply this plan (JSON, as saved with `plan`, possibly edited) instead of computing one.
        load_plan: Option<PathBuf> = None,
        /// channel: analyse and plan only; the model is not changed.
        dry_run: bool = false,
    }
}

/// Pruning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Magnitude,
    Nm,
    Channel,
}

/// What structured pruning does to the pruned channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelMode {
    Zero,
    Remove,
}

/// Channel importance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    L1,
    L2,
    BnGamma,
}

/// The checked options.
#[derive(Clone, Debug)]
pub struct Prune {
    pub method: Method,
    pub sparsity: f64,
    pub global: bool,
    pub threshold: Option<f64>,
    pub n: usize,
    pub m: usize,
    pub ops: Vec<String>,
    pub sparse_storage: bool,
    pub sparse_density: f64,
    pub ratio: f64,
    pub importance: Importance,
    pub mode: ChannelMode,
    pub round_to: usize,
    pub plan_out: Option<PathBuf>,
    pub plan_in: Option<PathBuf>,
    pub dry_run: bool,
}

fn usage(msg: String) -> Error {
    Error::Usage(format!("pass '{PASS}': {msg}"))
}

impl Prune {
    pub fn new(o: PruneOptions) -> Result<Prune> {
        let method = match o.method.as_str() {
            "magnitude" => Method::Magnitude,
            "nm" => Method::Nm,
            "channel" => Method::Channel,
            m => {
                return Err(usage(format!(
                    "method={m}: expected magnitude, nm or channel"
                )))
            }
        };
        if !(0.0..1.0).contains(&o.sparsity) || o.sparsity.is_nan() {
            return Err(usage(format!("sparsity={} is outside [0, 1)", o.sparsity)));
        }
        let global = match o.scope.as_str() {
            "layer" => false,
            "global" => true,
            s => return Err(usage(format!("scope={s}: expected layer or global"))),
        };
        if let Some(t) = o.threshold {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(usage(format!("threshold={t} must be a finite number >= 0")));
            }
        }
        if o.m == 0 || o.n == 0 || o.n > o.m {
            return Err(usage(format!("n={} m={}: need 1 <= n <= m", o.n, o.m)));
        }
        if !(0.0..=1.0).contains(&o.sparse_density) || o.sparse_density.is_nan() {
            return Err(usage(format!(
                "sparse_density={} is outside [0, 1]",
                o.sparse_density
            )));
        }
        if o.sparse_storage && method == Method::Channel {
            return Err(usage(
                "sparse_storage applies to method=magnitude or nm (channel pruning removes channels instead)"
                    .into(),
            ));
        }
        if !(0.0..1.0).contains(&o.ratio) || o.ratio.is_nan() {
            return Err(usage(format!("ratio={} is outside [0, 1)", o.ratio)));
        }
        let importance = match o.importance.as_str() {
            "l1" => Importance::L1,
            "l2" => Importance::L2,
            "bn" => Importance::BnGamma,
            s => return Err(usage(format!("importance={s}: expected l1, l2 or bn"))),
        };
        let mode = match o.mode.as_str() {
            "zero" => ChannelMode::Zero,
            "remove" => ChannelMode::Remove,
            s => return Err(usage(format!("mode={s}: expected zero or remove"))),
        };
        if o.round_to == 0 {
            return Err(usage("round_to must be at least 1".into()));
        }
        for op in &o.ops {
            if !["Conv", "ConvTranspose", "Gemm", "MatMul"].contains(&op.as_str()) {
                return Err(usage(format!(
                    "ops: '{op}' is not one of Conv, ConvTranspose, Gemm, MatMul"
                )));
            }
        }
        Ok(Prune {
            method,
            sparsity: o.sparsity,
            global,
            threshold: o.threshold,
            n: o.n as usize,
            m: o.m as usize,
            ops: o.ops,
            sparse_storage: o.sparse_storage,
            sparse_density: o.sparse_density,
            ratio: o.ratio,
            importance,
            mode,
            round_to: o.round_to as usize,
            plan_out: o.plan,
            plan_in: o.load_plan,
            dry_run: o.dry_run,
        })
    }
}

/// Everything a prune run found and did, beyond the pass report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneOutcome {
    /// magnitude / nm: sparsity of each pruned weight.
    pub layers: Vec<LayerSparsity>,
    /// channel: the groups, the plan and the parameter / MAC figures.
    pub channel: Option<ChannelSummary>,
}

impl Prune {
    /// Prune `model`; the pass report (remarks per layer / group) and the detailed outcome.
    pub fn prune(&self, model: &mut Model) -> Result<(PassReport, PruneOutcome)> {
        let mut report = PassReport::new(PASS);
        let mut outcome = PruneOutcome::default();
        match self.method {
            Method::Magnitude | Method::Nm => {
                outcome.layers = magnitude::run(self, model, &mut report)?;
            }
            Method::Channel => {
                outcome.channel = Some(channel::run(self, model, &mut report)?);
            }
        }
        Ok((report, outcome))
    }
}

impl Pass for Prune {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<PassReport> {
        Ok(self.prune(model)?.0)
    }
}
