//! tract at the edge: load a `Model` into tract at concrete input shapes, expose intermediate tensors as extra
//! outputs, run samples. Every tract call is guarded: an error or a panic inside tract becomes
//! `Error::Validate` with tract's context (which names the node and op).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::ir::{DataType, Model, Tensor as IrTensor};
use crate::validate::fold::fold_unsupported;
use crate::validate::inputs::Sample;

/// Run a tract step, turning errors and panics into `Error::CannotValidate` ("<what>: <tract context chain>",
/// with the node and op tract names in its chain).
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(engine_error(format!("{what}: {e:#}"))),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(engine_error(format!("{what}: tract panicked: {msg}")))
        }
    }
}

/// `Error::CannotValidate` from tract's error text: the node is the innermost `#<id> "<name>" <Op>` tract's
/// context chain mentions (an `If` body's failing node rather than the `If`), the op as tract names it (the
/// caller may replace it with the ONNX op of the node of that name, see `compare::name_model`).
pub(crate) fn engine_error(msg: String) -> Error {
    let mut node = None;
    let mut op = None;
    let mut rest = msg.as_str();
    while let Some(i) = rest.find('#') {
        let after = &rest[i + 1..];
        let digits = after.bytes().take_while(|b| b.is_ascii_digit()).count();
        let tail = &after[digits..];
        if digits > 0 && tail.starts_with(" \"") {
            if let Some(end) = tail[2..].find('"') {
                node = Some(tail[2..2 + end].to_string());
                let o: String = tail[2 + end + 1..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '.')
                    .collect();
                let o = o.trim_end_matches([':', '.']);
                op = (!o.is_empty()).then(|| o.to_string());
                rest = &tail[2 + end + 1..];
                continue;
            }
        }
        rest = after;
    }
    Error::CannotValidate {
        model: None,
        node,
        op,
        msg,
        hint: None,
    }
}

pub(crate) fn datum_type(dt: DataType) -> Option<DatumType> {
    Some(match dt {
        DataType::FLOAT => DatumType::F32,
        DataType::DOUBLE => DatumType::F64,
        DataType::FLOAT16 => DatumType::F16,
        DataType::INT8 => DatumType::I8,
        DataType::UINT8 => DatumType::U8,
        DataType::INT16 => DatumType::I16,
        DataType::UINT16 => DatumType::U16,
        DataType::INT32 => DatumType::I32,
        DataType::UINT32 => DatumType::U32,
        DataType::INT64 => DatumType::I64,
        DataType::UINT64 => DatumType::U64,
        DataType::BOOL => DatumType::Bool,
        _ => return None,
    })
}

fn onnx_type(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::F32 => DataType::FLOAT,
        DatumType::F64 => DataType::DOUBLE,
        DatumType::F16 => DataType::FLOAT16,
        DatumType::I8 => DataType::INT8,
        DatumType::U8 => DataType::UINT8,
        DatumType::I16 => DataType::INT16,
        DatumType::U16 => DataType::UINT16,
        DatumType::I32 => DataType::INT32,
        DatumType::U32 => DataType::UINT32,
        DatumType::I64 => DataType::INT64,
        DatumType::U64 => DataType::UINT64,
        DatumType::Bool => DataType::BOOL,
        _ => return None,
    })
}

/// Little-endian elements of `N` bytes each -> values (the length is checked by the caller).
fn decode_le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

/// IR tensor -> tract tensor (numeric and bool types), through tract's safe, typed constructor: every element
/// is decoded into its Rust type first, so no byte pattern from a user file can become an invalid value (a
/// bool is `byte != 0`; the readers already refuse bool bytes other than 0 and 1).
pub(crate) fn to_tract(t: &IrTensor) -> Result<Tensor> {
    let bad = |msg: String| Error::Validate(format!("tensor '{}': {msg}", t.name()));
    datum_type(t.dtype())
        .ok_or_else(|| bad(format!("{} cannot be fed to tract", t.dtype().name())))?;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|d| usize::try_from(*d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(format!("negative dims {:?}", t.dims)))?;
    let raw = t.raw_bytes()?;
    let want = t.dtype().byte_len(t.numel()?);
    if want != Some(raw.len() as u64) {
        return Err(bad(format!(
            "{} bytes for {} x {:?}",
            raw.len(),
            t.dtype().name(),
            t.dims
        )));
    }
    let r = &raw[..];
    let built = match t.dtype() {
        DataType::FLOAT => Tensor::from_shape(&shape, &decode_le(r, f32::from_le_bytes)),
        DataType::DOUBLE => Tensor::from_shape(&shape, &decode_le(r, f64::from_le_bytes)),
        DataType::FLOAT16 => Tensor::from_shape(
            &shape,
            &decode_le(r, |b| f16::from_bits(u16::from_le_bytes(b))),
        ),
        DataType::INT8 => Tensor::from_shape(&shape, &decode_le(r, i8::from_le_bytes)),
        DataType::UINT8 => Tensor::from_shape(&shape, r),
        DataType::INT16 => Tensor::from_shape(&shape, &decode_le(r, i16::from_le_bytes)),
        DataType::UINT16 => Tensor::from_shape(&shape, &decode_le(r, u16::from_le_bytes)),
        DataType::INT32 => Tensor::from_shape(&shape, &decode_le(r, i32::from_le_bytes)),
        DataType::UINT32 => Tensor::from_shape(&shape, &decode_le(r, u32::from_le_bytes)),
        DataType::INT64 => Tensor::from_shape(&shape, &decode_le(r, i64::from_le_bytes)),
        DataType::UINT64 => Tensor::from_shape(&shape, &decode_le(r, u64::from_le_bytes)),
        DataType::BOOL => {
            Tensor::from_shape(&shape, &r.iter().map(|b| *b != 0).collect::<Vec<_>>())
        }
        other => return Err(bad(format!("{} cannot be fed to tract", other.name()))),
    };
    built.map_err(|e| bad(format!("{e:#}")))
}

/// tract tensor -> IR tensor.
pub(crate) fn from_tract(name: &str, t: &Tensor) -> Result<IrTensor> {
    let dt = onnx_type(t.datum_type()).ok_or_else(|| {
        Error::Validate(format!(
            "tensor '{name}': tract type {:?} has no ONNX equivalent here",
            t.datum_type()
        ))
    })?;
    let dims = t.shape().iter().map(|d| *d as i64).collect();
    Ok(IrTensor::from_raw(
        name,
        dt,
        dims,
        Bytes::copy_from_slice(t.as_bytes()),
    ))
}

/// A tensor's values widened to f32 (`None` for types that are not numbers, e.g. strings or TDim).
pub(crate) fn values_f32(t: &Tensor) -> Option<Vec<f32>> {
    if t.datum_type() == DatumType::F32 {
        return t
            .to_plain_array_view::<f32>()
            .ok()
            .map(|v| v.iter().copied().collect());
    }
    onnx_type(t.datum_type())?;
    let c = t.cast_to::<f32>().ok()?;
    c.to_plain_array_view::<f32>()
        .ok()
        .map(|v| v.iter().copied().collect())
}

/// A model loaded into tract with concrete input facts, not yet optimised.
pub(crate) struct Loaded {
    pub model: InferenceModel,
    /// tract's input order, by name.
    pub inputs: Vec<String>,
    /// Graph output names (the Model's, in order).
    pub outputs: Vec<String>,
    /// Forms folded for tract (int4/uint4/blocked DQ), one remark each.
    pub remarks: Vec<String>,
}

/// Load `model` into tract with the given concrete input shapes (dtype + dims per runtime input name).
pub(crate) fn load(model: &Model, shapes: &[(String, DataType, Vec<usize>)]) -> Result<Loaded> {
    let (model, remarks) = fold_unsupported(model)?;
    let bytes = crate::io::to_bytes(&model)?;
    let mut onnx = tract_onnx::onnx();
    let mut missing = std::collections::BTreeSet::new();
    // the first in graph order is named in the error's fields, every one in its message
    let mut first_missing = None;
    model.graph.walk(&mut |g| {
        for (_, n) in g.nodes() {
            if !onnx.op_register.0.contains_key(&n.op.op_type) {
                let name = if n.name().is_empty() {
                    n.output(0)
                        .map(|v| g.value_name(v))
                        .unwrap_or("?")
                        .to_string()
                } else {
                    n.name().to_string()
                };
                let entry = (n.op.display(), name);
                if first_missing.is_none() {
                    first_missing = Some(entry.clone());
                }
                missing.insert(entry);
            }
        }
    });
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(op, node)| format!("{op} (node '{node}')"))
            .collect();
        let (op, node) = first_missing.expect("not empty");
        return Err(Error::CannotValidate {
            model: None,
            node: Some(node),
            op: Some(op),
            msg: format!("tract 0.23.9 has no implementation of: {}", list.join(", ")),
            hint: None,
        });
    }
    // Passes may leave value_info stale; tract infers every shape itself.
    onnx.ignore_value_info = true;
    // Decode from our buffer without a copy (tract's `model_for_read` would read it into another one); raw
    // tensor data stays a slice of `bytes` until tract builds its own tensors.
    let proto = {
        use prost::Message;
        tract_onnx::pb::ModelProto::decode(Bytes::from(bytes))
            .map_err(|e| Error::Validate(format!("tract could not decode the model: {e}")))?
    };
    let mut im = guard("tract could not load the model", || {
        onnx.model_for_proto_model(&proto)
    })?;
    drop(proto);
    let mut inputs = Vec::new();
    for (i, outlet) in im.inputs.clone().iter().enumerate() {
        let name = im.node(outlet.node).name.clone();
        let (_, dt, dims) = shapes.iter().find(|s| s.0 == name).ok_or_else(|| {
            Error::Validate(format!(
                "tract sees an input '{name}' that the model does not declare (an unresolved name?)"
            ))
        })?;
        let tdt = datum_type(*dt).ok_or_else(|| {
            Error::Validate(format!(
                "input '{name}': {} is not supported by tract",
                dt.name()
            ))
        })?;
        let fact = InferenceFact::dt_shape(tdt, dims.clone());
        guard("setting an input fact", || im.set_input_fact(i, fact))?;
        inputs.push(name);
    }
    let outputs = model
        .graph
        .outputs()
        .iter()
        .map(|o| model.graph.value_name(o.value).to_string())
        .collect();
    Ok(Loaded {
        model: im,
        inputs,
        outputs,
        remarks,
    })
}

/// A runnable plan: graph outputs first, then the exposed intermediate tensors.
pub(crate) struct Runner {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<String>,
    /// Names of every plan output, in order.
    pub outputs: Vec<String>,
    pub graph_outputs: usize,
}

impl Loaded {
    /// Every labelled outlet of tract's graph by its label (the ONNX value name).
    fn outlets_by_label(&self) -> HashMap<&str, OutletId> {
        self.model
            .outlet_labels
            .iter()
            .map(|(o, l)| (l.as_str(), *o))
            .collect()
    }

    /// Outlets labelled with these names (ONNX value names), that exist in tract's graph, skipping those that
    /// are already outputs. Returns them in the order given.
    fn outlets_for(&self, names: &[String]) -> Vec<(String, OutletId)> {
        let by_label = self.outlets_by_label();
        let outs = self.model.outputs.clone();
        names
            .iter()
            .filter_map(|n| by_label.get(n.as_str()).map(|o| (n.clone(), *o)))
            .filter(|(_, o)| !outs.contains(o))
            .collect()
    }

    /// Type, declutter (and with `optimize`, optimise) and plan, exposing `expose` (names not found in tract's
    /// graph are dropped). Without `optimize` tract runs its reference kernels: slower, but that is the form
    /// that matches ONNX Runtime on the canary cases in `fixtures/canaries` (optimised kernels reorder float sums).
    pub fn runner(&self, expose: &[String], optimize: bool) -> Result<Runner> {
        let mut im = self.model.clone();
        let extra = self.outlets_for(expose);
        let mut outs = im.outputs.clone();
        let mut names = self.outputs.clone();
        for (n, o) in &extra {
            outs.push(*o);
            names.push(n.clone());
        }
        guard("selecting outputs", || im.select_output_outlets(&outs))?;
        let typed = guard("tract could not type or optimise the model", || {
            let t = im.into_typed()?.into_decluttered()?;
            if optimize {
                t.into_optimized()
            } else {
                Ok(t)
            }
        })?;
        let plan = guard("tract could not plan the model", || typed.into_runnable())?;
        Ok(Runner {
            plan,
            inputs: self.inputs.clone(),
            outputs: names,
            graph_outputs: self.outputs.len(),
        })
    }

    /// The decluttered typed model (for costs); no intermediate outputs.
    pub fn typed(&self) -> Result<TypedModel> {
        let im = self.model.clone();
        let t = guard("tract could not type the model", || im.into_typed())?;
        guard("tract could not declutter the model", || {
            t.into_decluttered()
        })
    }
}

/// One sample's inputs, in tract's order (`inputs`, by name).
fn feed_inputs(inputs: &[String], sample: &Sample) -> Result<TVec<TValue>> {
    let mut v = TVec::new();
    for name in inputs {
        let (_, t) = sample
            .tensors
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| {
                Error::Validate(format!("sample {} has no input '{name}'", sample.origin))
            })?;
        v.push(to_tract(t)?.into_tvalue());
    }
    Ok(v)
}

impl Runner {
    /// Inputs for one sample, in tract's order.
    pub fn feed(&self, sample: &Sample) -> Result<TVec<TValue>> {
        feed_inputs(&self.inputs, sample)
    }

    pub fn run_fed(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        let plan = self.plan.clone();
        guard("tract failed running the model", move || plan.run(inputs))
    }

    pub fn run(&self, sample: &Sample) -> Result<TVec<TValue>> {
        self.run_fed(self.feed(sample)?)
    }
}

/// A plan that hands chosen tensors to a callback the moment the node computing them has run, so tract frees
/// each one as soon as its last consumer is done: a sample's peak memory is its live activations, not every
/// watched tensor at once (which exposing them as model outputs would keep until the end of the run).
///
/// The watched tensors are made model outputs while tract types, declutters and optimises the model, so no
/// rewrite fuses them away (a `Conv -> Add` whose `Conv` output is watched keeps it), then the plan is built
/// with the graph outputs only. Watched tensors the graph outputs do not depend on (dead ends) and those tract
/// folded into constants stay plan outputs and are handed over after the run.
pub(crate) struct Streamer {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<String>,
    /// Per tract node id: (output slot, watched names there).
    watch: Vec<Vec<(usize, Vec<String>)>>,
    /// Plan outputs past the graph outputs that are watched: (plan output index, names).
    after: Vec<(usize, Vec<String>)>,
    /// Whether tract's optimiser ran (`false`: it failed on this model and the decluttered form runs).
    #[cfg_attr(not(test), allow(dead_code))]
    pub optimized: bool,
}

impl Loaded {
    /// A `Streamer` watching `names` (ONNX value names of the main graph: intermediate tensors or graph
    /// outputs). A name tract's graph does not carry is an error naming it. With `optimize` tract's optimiser
    /// runs (when it fails on the model, the decluttered form is kept and `optimized` says so).
    pub fn streamer(&self, names: &[String], optimize: bool) -> Result<Streamer> {
        let by_label = self.outlets_by_label();
        let graph_outs = self.model.outputs.clone();
        let n_graph = graph_outs.len();
        // every watched name as an index into the outputs selected for optimisation
        let mut outs = graph_outs.clone();
        let mut at: Vec<(String, usize)> = Vec::new();
        for n in names {
            let ix = if let Some(i) = self.outputs.iter().position(|o| o == n) {
                i
            } else {
                let o = *by_label.get(n.as_str()).ok_or_else(|| {
                    Error::Validate(format!("calibration: tract cannot expose tensor '{n}'"))
                })?;
                match outs.iter().position(|x| *x == o) {
                    Some(i) => i,
                    None => {
                        outs.push(o);
                        outs.len() - 1
                    }
                }
            };
            at.push((n.clone(), ix));
        }
        let mut im = self.model.clone();
        guard("selecting outputs", || im.select_output_outlets(&outs))?;
        let typed = guard("tract could not type or declutter the model", || {
            im.into_typed()?.into_decluttered()
        })?;
        let (mut typed, optimized) = if optimize {
            match guard("tract could not optimise the model", || {
                typed.clone().into_optimized()
            }) {
                Ok(t) => (t, true),
                Err(_) => (typed, false),
            }
        } else {
            (typed, false)
        };
        let outs = typed.outputs.clone();
        // nodes the graph outputs depend on: they run whatever the plan's outputs are
        let mut needed = vec![false; typed.nodes.len()];
        let mut stack: Vec<usize> = outs[..n_graph].iter().map(|o| o.node).collect();
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut needed[n], true) {
                stack.extend(typed.nodes[n].inputs.iter().map(|i| i.node));
            }
        }
        let is_const =
            |n: usize| typed.nodes[n].op_is::<tract_onnx::tract_core::ops::konst::Const>();
        let mut plan_outs: Vec<OutletId> = outs[..n_graph].to_vec();
        let mut watch: Vec<Vec<(usize, Vec<String>)>> = vec![Vec::new(); typed.nodes.len()];
        let mut after: Vec<(usize, Vec<String>)> = Vec::new();
        for (name, ix) in at {
            let o = outs[ix];
            if ix < n_graph || !needed[o.node] || is_const(o.node) {
                let p = match plan_outs.iter().position(|x| *x == o) {
                    Some(p) => p,
                    None => {
                        plan_outs.push(o);
                        plan_outs.len() - 1
                    }
                };
                match after.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, v)) => v.push(name),
                    None => after.push((p, vec![name])),
                }
            } else {
                let w = &mut watch[o.node];
                match w.iter_mut().find(|(s, _)| *s == o.slot) {
                    Some((_, v)) => v.push(name),
                    None => w.push((o.slot, vec![name])),
                }
            }
        }
        guard("selecting outputs", || {
            typed.select_output_outlets(&plan_outs)
        })?;
        // tract's kernels split their work over rayon's current pool (the caller's `ThreadPool::install`, else
        // the global one sized by RAYON_NUM_THREADS): matrix products by output tiles, element-wise ops by
        // chunks, reductions by rows, so each element is computed in one fixed order and the values are the
        // same whatever the thread count
        let options = RunOptions {
            executor: Some(
                tract_onnx::tract_core::tract_linalg::multithread::Executor::RayonGlobal,
            ),
            ..Default::default()
        };
        let plan = guard("tract could not plan the model", || {
            typed.into_runnable_with_options(&options)
        })?;
        Ok(Streamer {
            plan,
            inputs: self.inputs.clone(),
            watch,
            after,
            optimized,
        })
    }
}

impl Streamer {
    /// Run one sample, calling `seen(name, tensor)` for every watched tensor once (a tensor watched under
    /// several names once per name). An error from `seen` stops the run and is returned as is.
    pub fn run(
        &self,
        sample: &Sample,
        seen: &mut dyn FnMut(&str, &Tensor) -> Result<()>,
    ) -> Result<()> {
        let inputs = feed_inputs(&self.inputs, sample)?;
        let mut failed: Option<Error> = None;
        let plan = self.plan.clone();
        let watch = &self.watch;
        let ran = guard("tract failed running the model", || {
            let mut state = plan.spawn()?;
            state.run_plan_with_eval(inputs, |ctx, op_state, node, ins| -> TractResult<_> {
                let vs = tract_onnx::tract_core::plan::eval(ctx, op_state, node, ins)?;
                for (slot, names) in &watch[node.id] {
                    for n in names {
                        if let Err(e) = seen(n, &vs[*slot]) {
                            failed = Some(e);
                            anyhow::bail!("calibration observer failed on '{n}'");
                        }
                    }
                }
                Ok(vs)
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let outs = ran?;
        for (p, names) in &self.after {
            for n in names {
                seen(n, &outs[*p])?;
            }
        }
        Ok(())
    }
}

/// A tensor's values as an f32 slice without a copy when it holds f32, else widened into `buf` (`None` for
/// types that are not numbers). tract's shape values (TDim: a `Shape` output, in tract's type) count as int64
/// when every one is a number.
pub(crate) fn f32_view<'a>(t: &'a Tensor, buf: &'a mut Vec<f32>) -> Option<&'a [f32]> {
    match t.datum_type() {
        DatumType::F32 => {
            if let Ok(s) = t.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()) {
                return Some(s);
            }
        }
        DatumType::TDim => {
            let c = t.cast_to::<i64>().ok()?;
            *buf = c
                .to_plain_array_view::<i64>()
                .ok()?
                .iter()
                .map(|v| *v as f32)
                .collect();
            return Some(buf.as_slice());
        }
        _ => {}
    }
    *buf = values_f32(t)?;
    Some(buf.as_slice())
}
