//! Quantization arithmetic shared by every quantize mode: scale / zero-point from a real range, and the
//! quantization of a tensor with those parameters, per tensor or per channel along an axis.
//!
//! The formulas are the affine ones of ONNX `QuantizeLinear` / `DequantizeLinear` and the parameter choice of
//! ONNX Runtime's quantizer, so a model we write quantizes exactly as a QuantizeLinear node would compute it:
//! - the real range is widened to contain 0 (`rmin = min(rmin, 0)`, `rmax = max(rmax, 0)`) so that 0 is
//!   exactly representable (zero padding, ReLU outputs);
//! - symmetric: `rmax = max(|rmin|, |rmax|)`, `rmin = -rmax`, the integer range is made symmetric too
//!   (int8 `[-127, 127]`, so the zero point is 0; uint8 `[0, 255]` with zero point 128);
//! - `scale = (rmax - rmin) / (qmax - qmin)`, computed in f64 and rounded once to the scale's dtype;
//!   `zero_point = round(qmin - rmin / scale)` saturated to `[qmin, qmax]`;
//! - a range of width 0 (all-zero tensor) or a scale that underflows gives scale 1 and zero point 0 (the
//!   quantized values are then all the zero point, which dequantizes to exactly 0);
//! - `q = saturate(round_half_to_even(x / scale) + zero_point)`, with the division in f32 as ONNX Runtime's
//!   QuantizeLinear kernel does it; weights saturate to the chosen integer range, `quantize_value` (what a
//!   QuantizeLinear node computes at run time) to the full range of the type;
//! - reduced range (7 bits, for CPUs whose int8 dot products can overflow on u8 x s8): int8 `[-64, 64]`,
//!   uint8 `[0, 127]`.
//!
//! Non-finite values (NaN, +-inf) have no quantized form: `quantize_tensor` refuses them with an error naming
//! the tensor, and the pass turns that into a skip remark.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::tensor::{
    axis::normalize_axis, AxisSplit, DataType, ParamLayout, Reduction, Tensor,
};

/// The integer type of quantized values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    Int8,
    Uint8,
}

impl QType {
    pub fn dtype(self) -> DataType {
        match self {
            QType::Int8 => DataType::INT8,
            QType::Uint8 => DataType::UINT8,
        }
    }

    /// The full range of the type (what QuantizeLinear saturates to).
    pub fn type_range(self) -> (i32, i32) {
        match self {
            QType::Int8 => (-128, 127),
            QType::Uint8 => (0, 255),
        }
    }

    /// The integer range parameters are chosen for (module docs: symmetric and reduced ranges).
    pub fn range(self, symmetric: bool, reduce_range: bool) -> (i32, i32) {
        match (self, symmetric, reduce_range) {
            (QType::Int8, _, true) => (-64, 64),
            (QType::Int8, true, false) => (-127, 127),
            (QType::Int8, false, false) => (-128, 127),
            (QType::Uint8, _, true) => (0, 127),
            (QType::Uint8, _, false) => (0, 255),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QType::Int8 => "int8",
            QType::Uint8 => "uint8",
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QType {
    type Err = Error;
    fn from_str(s: &str) -> Result<QType> {
        match s.to_ascii_lowercase().as_str() {
            "int8" | "i8" | "s8" => Ok(QType::Int8),
            "uint8" | "u8" => Ok(QType::Uint8),
            _ => Err(Error::Usage(format!(
                "unknown quantized type '{s}' (expected int8 or uint8)"
            ))),
        }
    }
}

/// How one tensor is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpec {
    pub qtype: QType,
    pub symmetric: bool,
    /// `None`: one scale for the tensor; `Some(axis)`: one scale per index of that axis (negative counts from
    /// the end).
    pub axis: Option<i64>,
    /// 7-bit range (module docs).
    pub reduce_range: bool,
    /// dtype of the scale tensor, which is also the dtype DequantizeLinear produces: FLOAT, or FLOAT16 /
    /// BFLOAT16 (DequantizeLinear opset 19 and later).
    pub scale_dtype: DataType,
}

impl QuantSpec {
    /// Per tensor, f32 scale, full range.
    pub fn per_tensor(qtype: QType, symmetric: bool) -> QuantSpec {
        QuantSpec {
            qtype,
            symmetric,
            axis: None,
            reduce_range: false,
            scale_dtype: DataType::FLOAT,
        }
    }

    /// Per channel along `axis`, f32 scale, full range.
    pub fn per_axis(qtype: QType, symmetric: bool, axis: i64) -> QuantSpec {
        QuantSpec {
            axis: Some(axis),
            ..QuantSpec::per_tensor(qtype, symmetric)
        }
    }

    /// The integer range parameters are chosen for.
    pub fn range(&self) -> (i32, i32) {
        self.qtype.range(self.symmetric, self.reduce_range)
    }
}

/// One (scale, zero point) pair. `scale` is the value stored in the model (already rounded to the scale
/// dtype), positive and finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

/// Round a positive f64 scale to the scale dtype; `None` when it is not a normal positive number there.
fn round_scale(s: f64, dtype: DataType) -> Option<f32> {
    let r = match dtype {
        DataType::FLOAT => s as f32,
        DataType::FLOAT16 => half::f16::from_f64(s).to_f32(),
        DataType::BFLOAT16 => half::bf16::from_f64(s).to_f32(),
        _ => return None,
    };
    let min_normal = match dtype {
        DataType::FLOAT16 => half::f16::MIN_POSITIVE.to_f32(),
        DataType::BFLOAT16 => half::bf16::MIN_POSITIVE.to_f32(),
        _ => f32::MIN_POSITIVE,
    };
    (r.is_finite() && r >= min_normal).then_some(r)
}

fn check_scale_dtype(dtype: DataType) -> Result<()> {
    match dtype {
        DataType::FLOAT | DataType::FLOAT16 | DataType::BFLOAT16 => Ok(()),
        other => Err(Error::Usage(format!(
            "scale dtype {} is not one DequantizeLinear accepts (f32, f16, bf16)",
            other.name()
        ))),
    }
}

/// Scale and zero point for values in `[rmin, rmax]` (module docs). Errors on a non-finite or inverted range
/// or an unsupported scale dtype.
pub fn params_for_range(rmin: f64, rmax: f64, spec: &QuantSpec) -> Result<QParams> {
    check_scale_dtype(spec.scale_dtype)?;
    if !rmin.is_finite() || !rmax.is_finite() {
        return Err(Error::invalid(
            "",
            format!("range [{rmin}, {rmax}] is not finite: no scale can represent it"),
        ));
    }
    if rmin > rmax {
        return Err(Error::invalid(
            "",
            format!("range [{rmin}, {rmax}] has min above max"),
        ));
    }
    let (qmin, qmax) = spec.range();
    let (mut lo, mut hi) = (rmin.min(0.0), rmax.max(0.0));
    if spec.symmetric {
        let m = lo.abs().max(hi.abs());
        lo = -m;
        hi = m;
    }
    let raw = (hi - lo) / f64::from(qmax - qmin);
    let scale = match round_scale(raw, spec.scale_dtype) {
        Some(s) if hi > lo => s,
        _ => {
            return Ok(QParams {
                scale: 1.0,
                zero_point: 0.clamp(qmin, qmax),
            })
        }
    };
    let zero_point = if spec.symmetric {
        // (qmin + qmax) / 2: 0 for int8, 128 for uint8 (127.5 rounds half to even), 64 for reduced uint8
        (f64::from(qmin + qmax) / 2.0).round_ties_even() as i32
    } else {
        (f64::from(qmin) - lo / f64::from(scale))
            .round_ties_even()
            .clamp(f64::from(qmin), f64::from(qmax)) as i32
    };
    Ok(QParams { scale, zero_point })
}

/// One value as `QuantizeLinear` computes it: `saturate(round_half_even(x / scale) + zero_point)` to
/// `[lo, hi]`, the division in f32. NaN gives the zero point (as ONNX Runtime's kernel, whose float-to-int
/// conversion of NaN is unspecified; we pin it).
pub fn quantize_value(x: f32, p: QParams, (lo, hi): (i32, i32)) -> i32 {
    let v = x / p.scale;
    if v.is_nan() {
        return p.zero_point.clamp(lo, hi);
    }
    let r = f64::from(v).round_ties_even() + f64::from(p.zero_point);
    r.clamp(f64::from(lo), f64::from(hi)) as i32
}

/// One value as `DequantizeLinear` computes it: `(q - zero_point) * scale` in f32.
pub fn dequantize_value(q: i32, p: QParams) -> f32 {
    (q - p.zero_point) as f32 * p.scale
}

fn tensor_err(t: &Tensor, msg: impl Into<String>) -> Error {
    Error::invalid(format!("tensor '{}'", t.name()), msg)
}

/// The per-tensor or per-axis parameters of `w` under `spec` (one `QParams`, or one per index of the axis).
/// Errors when `w` is not a float tensor, holds non-finite values, or the axis is out of range.
pub fn params_for_tensor(w: &Tensor, spec: &QuantSpec) -> Result<Vec<QParams>> {
    if !matches!(
        w.dtype(),
        DataType::FLOAT | DataType::FLOAT16 | DataType::BFLOAT16 | DataType::DOUBLE
    ) {
        return Err(tensor_err(
            w,
            format!("is {}, not a float tensor", w.dtype().name()),
        ));
    }
    let values = w.to_f64_vec()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(tensor_err(
            w,
            format!(
                "element {i} is {}: non-finite values cannot be quantized",
                values[i]
            ),
        ));
    }
    let with_name = |e: Error| match e {
        Error::Invalid { msg, .. } => tensor_err(w, msg),
        other => other,
    };
    match spec.axis {
        None => {
            let lo = values.iter().copied().fold(0.0f64, f64::min);
            let hi = values.iter().copied().fold(0.0f64, f64::max);
            Ok(vec![params_for_range(lo, hi, spec).map_err(with_name)?])
        }
        Some(axis) => {
            let split = AxisSplit::new(&w.dims, axis).map_err(with_name)?;
            let mins = split.reduce(&values, Reduction::Min).map_err(with_name)?;
            let maxs = split.reduce(&values, Reduction::Max).map_err(with_name)?;
            mins.iter()
                .zip(&maxs)
                // an empty channel (zero-sized other dim) reduces to NaN: give it the all-zero range
                .map(|(lo, hi)| {
                    let (lo, hi) = if lo.is_nan() { (0.0, 0.0) } else { (*lo, *hi) };
                    params_for_range(lo, hi, spec).map_err(with_name)
                })
                .collect()
        }
    }
}

/// Quantize `x` with given parameters: one per tensor or one per index of `axis`, saturating to `clamp`, into
/// an integer tensor of dtype `out` (INT8, UINT8, INT32, ...) named `name` with `x`'s dims. This is also the
/// entry for biases (int32, scale = input scale x weight scale, zero point 0).
pub fn quantize_with(
    name: &str,
    x: &Tensor,
    params: &[QParams],
    axis: Option<i64>,
    out: DataType,
    clamp: (i32, i32),
) -> Result<Tensor> {
    let values = x.to_f32_vec()?;
    let layout = match axis {
        None if params.len() == 1 => ParamLayout::PerTensor,
        None => {
            return Err(tensor_err(
                x,
                format!("{} parameters for a per-tensor quantization", params.len()),
            ))
        }
        Some(a) => {
            let split = AxisSplit::new(&x.dims, a).map_err(|e| tensor_err(x, e.to_string()))?;
            if split.len != params.len() {
                return Err(tensor_err(
                    x,
                    format!(
                        "{} parameters for an axis of length {}",
                        params.len(),
                        split.len
                    ),
                ));
            }
            ParamLayout::PerAxis(split)
        }
    };
    let q: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(i, v)| f64::from(quantize_value(*v, params[layout.param_index(i)], clamp)))
        .collect();
    Tensor::from_f64_as(name, out, x.dims.clone(), &q)
}

/// The three tensors a weight becomes.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// Integer values, `w`'s dims, named `<w>_quantized`.
    pub q: Tensor,
    /// Scale: a scalar per tensor, 1-D of the axis length per channel; dtype `spec.scale_dtype`; named
    /// `<w>_scale`.
    pub scale: Tensor,
    /// Zero point, same dims as the scale, dtype of `q`; named `<w>_zero_point`.
    pub zero_point: Tensor,
    pub params: Vec<QParams>,
}

/// Quantize a float tensor under `spec` (module docs). Returns `(q, scale, zero_point)` named after `w` as
/// ONNX Runtime's tools name them (`<w>_quantized`, `<w>_scale`, `<w>_zero_point`); callers rename freely.
pub fn quantize_tensor(w: &Tensor, spec: &QuantSpec) -> Result<(Tensor, Tensor, Tensor)> {
    let r = quantize_tensor_full(w, spec)?;
    Ok((r.q, r.scale, r.zero_point))
}

/// Elements per parallel work item of the f32 kernels (1 Mi elements: 4 MiB read, 1 MiB written).
const CHUNK: usize = 1 << 20;

/// `1.5 * 2^23`: adding it to an f32 `c` with `|c| <= 2^22` rounds `c` to an integer, half to even (the
/// sum lies in `[2^23, 2^24)`, where f32 steps are exactly 1, and the constant is even), and that integer
/// is the difference of the bit patterns.
const MAGIC: f32 = 12_582_912.0;
const MAGIC_BITS: i32 = 0x4B40_0000;

/// `quantize_value` for a finite `x` (the only values the f32 kernels see), as the byte stored (two's
/// complement for int8): the same f32 division, then the quotient clamped to `[-1024, 1024]` (which changes
/// no result, since `|zero_point| <= 255` and the range lies in `[-128, 255]`: anything past 1024 saturates
/// either way), rounded half to even in f32 (exact: `MAGIC`), shifted and saturated in integers. Written
/// without branches so the loops vectorize.
#[inline(always)]
fn q_byte(x: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> u8 {
    let c = (x / scale).clamp(-1024.0, 1024.0);
    let r = ((c + MAGIC).to_bits() as i32 - MAGIC_BITS) + zp;
    r.clamp(lo, hi) as u8
}

#[inline(always)]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline(always)]
fn non_finite(x: f32) -> bool {
    x.to_bits() & 0x7F80_0000 == 0x7F80_0000
}

/// Fold the f32 values (little-endian bytes) of one channel into `[lo, hi]`; true when one is not finite.
fn minmax_run(src: &[u8], lo: &mut f32, hi: &mut f32) -> bool {
    // eight independent lanes so the compiler can keep them in vector registers
    let mut l = [*lo; 8];
    let mut h = [*hi; 8];
    let mut bad = false;
    let mut blocks = src.chunks_exact(32);
    for b in &mut blocks {
        for k in 0..8 {
            let x = f32_at(&b[4 * k..]);
            bad |= non_finite(x);
            l[k] = if x < l[k] { x } else { l[k] };
            h[k] = if x > h[k] { x } else { h[k] };
        }
    }
    for c in blocks.remainder().chunks_exact(4) {
        let x = f32_at(c);
        bad |= non_finite(x);
        l[0] = if x < l[0] { x } else { l[0] };
        h[0] = if x > h[0] { x } else { h[0] };
    }
    *lo = l.iter().fold(*lo, |a, b| a.min(*b));
    *hi = h.iter().fold(*hi, |a, b| a.max(*b));
    bad
}

/// Fold elements `[start, end)` of an f32 tensor (little-endian bytes `raw`, shape `split`) into the
/// per-channel ranges `lo` / `hi` (length `split.len`); true when one of them is not finite.
fn minmax_range(
    raw: &[u8],
    split: AxisSplit,
    start: usize,
    end: usize,
    lo: &mut [f32],
    hi: &mut [f32],
) -> bool {
    let mut bad = false;
    let mut i = start;
    while i < end {
        if split.inner == 1 {
            // consecutive elements walk the channels: one run to the end of the row
            let a = i % split.len;
            let n = (split.len - a).min(end - i);
            let src = &raw[4 * i..4 * (i + n)];
            for ((c, l), h) in src
                .chunks_exact(4)
                .zip(&mut lo[a..a + n])
                .zip(&mut hi[a..a + n])
            {
                let x = f32_at(c);
                bad |= non_finite(x);
                *l = if x < *l { x } else { *l };
                *h = if x > *h { x } else { *h };
            }
            i += n;
        } else {
            // a run of `inner` elements shares one channel
            let a = (i / split.inner) % split.len;
            let n = (split.inner - i % split.inner).min(end - i);
            bad |= minmax_run(&raw[4 * i..4 * (i + n)], &mut lo[a], &mut hi[a]);
            i += n;
        }
    }
    bad
}

/// Quantize elements `[start, start + dst.len())` of an f32 tensor (little-endian bytes `raw`, shape
/// `split`) with per-channel `scales` / `zps` into `dst`, saturating to `[lo, hi]`.
fn quantize_range(
    raw: &[u8],
    split: AxisSplit,
    scales: &[f32],
    zps: &[i32],
    (lo, hi): (i32, i32),
    start: usize,
    dst: &mut [u8],
) {
    let end = start + dst.len();
    let mut i = start;
    while i < end {
        let o = i - start;
        if split.inner == 1 {
            let a = i % split.len;
            let n = (split.len - a).min(end - i);
            let src = &raw[4 * i..4 * (i + n)];
            for (((d, c), s), z) in dst[o..o + n]
                .iter_mut()
                .zip(src.chunks_exact(4))
                .zip(&scales[a..a + n])
                .zip(&zps[a..a + n])
            {
                *d = q_byte(f32_at(c), *s, *z, lo, hi);
            }
            i += n;
        } else {
            let a = (i / split.inner) % split.len;
            let n = (split.inner - i % split.inner).min(end - i);
            let (s, z) = (scales[a], zps[a]);
            for (d, c) in dst[o..o + n]
                .iter_mut()
                .zip(raw[4 * i..4 * (i + n)].chunks_exact(4))
            {
                *d = q_byte(f32_at(c), s, z, lo, hi);
            }
            i += n;
        }
    }
}

/// An f32 tensor prepared for the quantization kernels: its little-endian bytes (zero-copy for raw and
/// external data: an external tensor stays in its mapped file), its shape around the quantization axis and
/// its parameters.
pub struct F32Quantizer {
    raw: bytes::Bytes,
    split: AxisSplit,
    scales: Vec<f32>,
    zps: Vec<i32>,
    range: (i32, i32),
    pub params: Vec<QParams>,
}

impl F32Quantizer {
    /// Read the ranges of `w` (an f32 tensor) in one parallel pass and choose its parameters under `spec`
    /// (the arithmetic of `params_for_tensor`). Errors on non-finite values, naming the first one.
    pub fn new(w: &Tensor, spec: &QuantSpec) -> Result<F32Quantizer> {
        use rayon::prelude::*;
        check_scale_dtype(spec.scale_dtype)?;
        if w.dtype() != DataType::FLOAT {
            return Err(tensor_err(w, format!("is {}, not f32", w.dtype().name())));
        }
        let with_name = |e: Error| match e {
            Error::Invalid { msg, .. } => tensor_err(w, msg),
            other => other,
        };
        w.check()?;
        let n = usize::try_from(w.numel()?).map_err(|_| tensor_err(w, "too many elements"))?;
        let raw = w.raw_bytes()?;
        if raw.len() as u64 != n as u64 * 4 {
            return Err(tensor_err(
                w,
                format!(
                    "data is {} bytes but f32 x {:?} needs {}",
                    raw.len(),
                    w.dims,
                    n as u64 * 4
                ),
            ));
        }
        let split = match spec.axis {
            None => AxisSplit {
                outer: 1,
                len: 1,
                inner: n,
            },
            Some(a) => AxisSplit::new(&w.dims, a).map_err(with_name)?,
        };
        let len = split.len;
        // parts of the data reduced in parallel, each into its own per-channel ranges (min and max are
        // exact, so the result does not depend on the split); their number is bounded so the partial
        // ranges stay under 32 MiB
        let parts = (2 * rayon::current_num_threads())
            .min(n.div_ceil(CHUNK))
            .min((32 << 20) / (8 * len.max(1)))
            .max(1);
        let step = n.div_ceil(parts).max(1);
        let partial: Vec<(Vec<f32>, Vec<f32>, bool)> = (0..parts)
            .into_par_iter()
            .map(|k| {
                let (mut lo, mut hi) = (vec![0f32; len], vec![0f32; len]);
                let (s, e) = ((k * step).min(n), ((k + 1) * step).min(n));
                let bad = minmax_range(&raw, split, s, e, &mut lo, &mut hi);
                (lo, hi, bad)
            })
            .collect();
        if partial.iter().any(|p| p.2) {
            let i = raw
                .chunks_exact(4)
                .position(|c| non_finite(f32_at(c)))
                .unwrap_or(0);
            let v = raw.get(4 * i..4 * i + 4).map(f32_at).unwrap_or(f32::NAN);
            return Err(tensor_err(
                w,
                format!("element {i} is {v}: non-finite values cannot be quantized"),
            ));
        }
        let (mut lo, mut hi) = (vec![0f32; len], vec![0f32; len]);
        for (pl, ph, _) in &partial {
            for (l, x) in lo.iter_mut().zip(pl) {
                *l = l.min(*x);
            }
            for (h, x) in hi.iter_mut().zip(ph) {
                *h = h.max(*x);
            }
        }
        let params: Vec<QParams> = lo
            .iter()
            .zip(&hi)
            .map(|(l, h)| params_for_range(f64::from(*l), f64::from(*h), spec).map_err(with_name))
            .collect::<Result<_>>()?;
        Ok(F32Quantizer {
            raw,
            split,
            scales: params.iter().map(|p| p.scale).collect(),
            zps: params.iter().map(|p| p.zero_point).collect(),
            range: spec.range(),
            params,
        })
    }

    /// Number of elements (= bytes of the quantized tensor).
    pub fn len(&self) -> usize {
        self.raw.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The quantized bytes of elements `[start, start + dst.len())` into `dst`, in parallel.
    pub fn quantize_into(&self, start: usize, dst: &mut [u8]) {
        use rayon::prelude::*;
        dst.par_chunks_mut(CHUNK).enumerate().for_each(|(k, d)| {
            quantize_range(
                &self.raw,
                self.split,
                &self.scales,
                &self.zps,
                self.range,
                start + k * CHUNK,
                d,
            )
        });
    }

    /// Every quantized byte.
    pub fn quantize_all(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        self.quantize_into(0, &mut out);
        out
    }
}

/// The f32 fast path of `quantize_tensor_full`: the data read in place (no f32 copy), per-channel ranges in
/// one parallel pass, the integer values written straight into the tensor's bytes (the same arithmetic as
/// the general path: ranges widened in f64 from exact f32 values, `quantize_value` per element).
fn quantize_f32(w: &Tensor, spec: &QuantSpec) -> Result<(Vec<QParams>, Tensor)> {
    let fq = F32Quantizer::new(w, spec)?;
    let t = Tensor::from_raw(
        format!("{}_quantized", w.name()),
        spec.qtype.dtype(),
        w.dims.clone(),
        bytes::Bytes::from(fq.quantize_all()),
    );
    Ok((fq.params, t))
}

/// `quantize_tensor` with the parameters kept beside the tensors.
pub fn quantize_tensor_full(w: &Tensor, spec: &QuantSpec) -> Result<Quantized> {
    let base = w.name();
    let (params, q) = if w.dtype() == DataType::FLOAT {
        check_scale_dtype(spec.scale_dtype)?;
        quantize_f32(w, spec)?
    } else {
        let params = params_for_tensor(w, spec)?;
        let q = quantize_with(
            &format!("{base}_quantized"),
            w,
            &params,
            spec.axis,
            spec.qtype.dtype(),
            spec.range(),
        )?;
        (params, q)
    };
    let (scale, zero_point) = param_tensors(base, spec, &params)?;
    Ok(Quantized {
        q,
        scale,
        zero_point,
        params,
    })
}

/// The scale (`<base>_scale`, dtype `spec.scale_dtype`) and zero point (`<base>_zero_point`, the quantized
/// dtype) tensors of `params`: scalars per tensor, 1-D per channel.
pub fn param_tensors(base: &str, spec: &QuantSpec, params: &[QParams]) -> Result<(Tensor, Tensor)> {
    let pdims = match spec.axis {
        None => vec![],
        Some(_) => vec![params.len() as i64],
    };
    let scales: Vec<f64> = params.iter().map(|p| f64::from(p.scale)).collect();
    let zps: Vec<f64> = params.iter().map(|p| f64::from(p.zero_point)).collect();
    let scale = Tensor::from_f64_as(
        format!("{base}_scale"),
        spec.scale_dtype,
        pdims.clone(),
        &scales,
    )?;
    let zero_point = Tensor::from_f64_as(
        format!("{base}_zero_point"),
        spec.qtype.dtype(),
        pdims,
        &zps,
    )?;
    Ok((scale, zero_point))
}

/// The inverse, as `DequantizeLinear(q, scale, zero_point, axis)` computes it: an f32 tensor named `name`.
/// `axis` is used when the scale is 1-D with more than one element (as the op's attribute, default 1).
pub fn dequantize_tensor(
    name: &str,
    q: &Tensor,
    scale: &Tensor,
    zero_point: Option<&Tensor>,
    axis: i64,
) -> Result<Tensor> {
    let qv = q.to_i64_vec()?;
    let sv = scale.to_f32_vec()?;
    let zv = match zero_point {
        Some(z) => z.to_i64_vec()?,
        None => vec![0; sv.len()],
    };
    if zv.len() != sv.len() {
        return Err(tensor_err(
            q,
            format!("{} scales but {} zero points", sv.len(), zv.len()),
        ));
    }
    let layout = ParamLayout::resolve(&q.dims, &scale.dims, axis, 0)
        .map_err(|e| tensor_err(q, e.to_string()))?;
    if layout.param_numel() != sv.len() {
        return Err(tensor_err(
            q,
            format!(
                "scale has {} values, the layout needs {}",
                sv.len(),
                layout.param_numel()
            ),
        ));
    }
    let out: Vec<f32> = qv
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let j = layout.param_index(i);
            (*v - zv[j]) as f32 * sv[j]
        })
        .collect();
    Tensor::from_vec(name, q.dims.clone(), out)
}

/// The axis a per-channel spec uses, normalised against `rank` (None for per tensor).
pub fn resolved_axis(spec: &QuantSpec, rank: usize) -> Result<Option<usize>> {
    spec.axis.map(|a| normalize_axis(a, rank)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t32(dims: Vec<i64>, v: Vec<f32>) -> Tensor {
        Tensor::from_vec("w", dims, v).unwrap()
    }

    /// The branch-free f32 kernel (`q_byte`) against the reference rule (`quantize_value`) on values that
    /// exercise every path: exact rounding ties (k/2 steps of the scale), saturation at both ends, quotients
    /// past the +-1024 clamp and overflowing to infinity, subnormals, signed zeros, for int8 and uint8 ranges
    /// (full, symmetric and reduced) and zero points across them. Equality is exact: both compute the same
    /// f32 division and then integer arithmetic, so any difference is a kernel bug, not float noise.
    #[test]
    fn f32_kernel_equals_the_reference_rule() {
        let ranges = [(-128, 127), (-127, 127), (-64, 64), (0, 255), (0, 127)];
        let scales = [1.0f32, 0.5, 0.01, 3.7e-3, 1e-6, 1e-30, 1e3, 6.1e4];
        let mut specials = vec![
            0.0f32,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            f32::MAX,
            f32::MIN,
            1e30,
            -1e30,
        ];
        let mut checked = 0u64;
        for &(lo, hi) in &ranges {
            for zp in [lo, lo + 1, (lo + hi) / 2, hi - 1, hi, 0.clamp(lo, hi)] {
                for &scale in &scales {
                    let p = QParams {
                        scale,
                        zero_point: zp,
                    };
                    specials.truncate(10);
                    // ties and their neighbours: x = k/2 * scale, for quotients up to past the clamp
                    for k in -2200..=2200 {
                        let x = k as f32 * 0.5 * scale;
                        specials.push(x);
                        specials.push(f32::from_bits(x.to_bits().wrapping_add(1)));
                    }
                    for &x in &specials {
                        if !x.is_finite() {
                            continue;
                        }
                        let want = quantize_value(x, p, (lo, hi));
                        let got = q_byte(x, scale, zp, lo, hi);
                        assert_eq!(
                            got, want as u8,
                            "x={x:e} scale={scale:e} zp={zp} range=({lo},{hi}): kernel {got}, rule {want}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1_000_000, "{checked}");
    }

    #[test]
    fn ranges_follow_onnxruntime() {
        assert_eq!(QType::Int8.range(true, false), (-127, 127));
        assert_eq!(QType::Int8.range(false, false), (-128, 127));
        assert_eq!(QType::Int8.range(true, true), (-64, 64));
        assert_eq!(QType::Uint8.range(false, false), (0, 255));
        assert_eq!(QType::Uint8.range(false, true), (0, 127));
        assert_eq!("u8".parse::<QType>().unwrap(), QType::Uint8);
        assert!(matches!("int4".parse::<QType>(), Err(Error::Usage(_))));
    }

    #[test]
    fn symmetric_int8_scale_and_zero() {
        let s = QuantSpec::per_tensor(QType::Int8, true);
        let p = params_for_range(-0.5, 2.54, &s).unwrap();
        assert_eq!(p.zero_point, 0);
        assert_eq!(p.scale, (2.54f64 * 2.0 / 254.0) as f32);
        // uint8 symmetric: zero point 128 (127.5 rounds half to even)
        let p = params_for_range(-1.0, 1.0, &QuantSpec::per_tensor(QType::Uint8, true)).unwrap();
        assert_eq!(p.zero_point, 128);
        assert_eq!(p.scale, (2.0f64 / 255.0) as f32);
    }

    #[test]
    fn asymmetric_range_contains_zero() {
        let s = QuantSpec::per_tensor(QType::Uint8, false);
        // a range above 0 is widened to [0, 3]
        let p = params_for_range(1.0, 3.0, &s).unwrap();
        assert_eq!(p.zero_point, 0);
        assert_eq!(p.scale, (3.0f64 / 255.0) as f32);
        // [-1, 3]: zero point round(0 - (-1) / (4 / 255)) = round(63.75) = 64
        let p = params_for_range(-1.0, 3.0, &s).unwrap();
        assert_eq!(p.zero_point, 64);
        // zero is exactly representable: quantize(0) dequantizes to 0
        assert_eq!(
            dequantize_value(quantize_value(0.0, p, QType::Uint8.type_range()), p),
            0.0
        );
        let s8 = QuantSpec::per_tensor(QType::Int8, false);
        let p = params_for_range(-1.0, 3.0, &s8).unwrap();
        assert_eq!(p.zero_point, -64);
    }

    #[test]
    fn degenerate_and_bad_ranges() {
        let s = QuantSpec::per_tensor(QType::Int8, true);
        assert_eq!(
            params_for_range(0.0, 0.0, &s).unwrap(),
            QParams {
                scale: 1.0,
                zero_point: 0
            }
        );
        // a scale that underflows f32 normals is treated as the zero range
        let p = params_for_range(-1e-40, 1e-40, &s).unwrap();
        assert_eq!(p.scale, 1.0);
        assert!(params_for_range(f64::NAN, 1.0, &s).is_err());
        assert!(params_for_range(0.0, f64::INFINITY, &s).is_err());
        assert!(params_for_range(2.0, 1.0, &s).is_err());
        let bad = QuantSpec {
            scale_dtype: DataType::DOUBLE,
            ..s
        };
        assert!(matches!(
            params_for_range(0.0, 1.0, &bad),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn rounding_is_half_to_even_and_saturates() {
        let p = QParams {
            scale: 1.0,
            zero_point: 0,
        };
        let r = QType::Int8.type_range();
        assert_eq!(quantize_value(0.5, p, r), 0);
        assert_eq!(quantize_value(1.5, p, r), 2);
        assert_eq!(quantize_value(2.5, p, r), 2);
        assert_eq!(quantize_value(-0.5, p, r), 0);
        assert_eq!(quantize_value(-2.5, p, r), -2);
        assert_eq!(quantize_value(300.0, p, r), 127);
        assert_eq!(quantize_value(-300.0, p, r), -128);
        assert_eq!(quantize_value(f32::INFINITY, p, r), 127);
        assert_eq!(quantize_value(f32::NAN, p, r), 0);
        let pu = QParams {
            scale: 0.5,
            zero_point: 10,
        };
        assert_eq!(quantize_value(-100.0, pu, QType::Uint8.type_range()), 0);
        assert_eq!(quantize_value(1.25, pu, QType::Uint8.type_range()), 12); // 2.5 -> 2, + 10
    }

    /// Round trip error bound: a value inside the range comes back within half a step. The step is the
    /// stored f32 scale; the f32 division x / scale and product (q - z) * scale each add at most one
    /// rounding of relative size eps32 = 2^-24 on values of magnitude <= 128 * scale, so the bound is
    /// scale / 2 + 2 * 128 * scale * 2^-24.
    fn check_roundtrip(w: &Tensor, spec: &QuantSpec) {
        let r = quantize_tensor_full(w, spec).unwrap();
        let back = dequantize_tensor(
            "b",
            &r.q,
            &r.scale,
            Some(&r.zero_point),
            spec.axis.unwrap_or(1),
        )
        .unwrap()
        .to_f32_vec()
        .unwrap();
        let wv = w.to_f32_vec().unwrap();
        let layout = match spec.axis {
            None => ParamLayout::PerTensor,
            Some(a) => ParamLayout::PerAxis(AxisSplit::new(&w.dims, a).unwrap()),
        };
        for (i, (x, y)) in wv.iter().zip(&back).enumerate() {
            let s = f64::from(r.params[layout.param_index(i)].scale);
            let bound = s / 2.0 + 2.0 * 128.0 * s * 2f64.powi(-24);
            assert!(
                (f64::from(*x) - f64::from(*y)).abs() <= bound,
                "element {i}: {x} came back as {y} (scale {s})"
            );
        }
    }

    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f64 / (1u64 << 31) as f64 * 4.0 - 1.5) as f32
            })
            .collect()
    }

    #[test]
    fn roundtrip_every_spec() {
        let w = t32(vec![4, 3, 2, 2], pseudo(48, 7));
        for qtype in [QType::Int8, QType::Uint8] {
            for symmetric in [true, false] {
                for reduce_range in [false, true] {
                    for axis in [None, Some(0), Some(1), Some(-1)] {
                        let spec = QuantSpec {
                            qtype,
                            symmetric,
                            axis,
                            reduce_range,
                            scale_dtype: DataType::FLOAT,
                        };
                        check_roundtrip(&w, &spec);
                    }
                }
            }
        }
    }

    #[test]
    fn per_channel_layout_and_names() {
        // channel 0 in [-1, 1], channel 1 in [-10, 10]: per-channel scales differ by 10x
        let w = t32(vec![2, 3], vec![-1.0, 0.5, 1.0, -10.0, 5.0, 10.0]);
        let (q, s, z) = quantize_tensor(&w, &QuantSpec::per_axis(QType::Int8, true, 0)).unwrap();
        assert_eq!(q.name(), "w_quantized");
        assert_eq!(s.name(), "w_scale");
        assert_eq!(z.name(), "w_zero_point");
        assert_eq!(q.dtype(), DataType::INT8);
        assert_eq!(s.dims, vec![2]);
        assert_eq!(z.dims, vec![2]);
        assert_eq!(z.dtype(), DataType::INT8);
        assert_eq!(
            q.to_vec::<i8>().unwrap(),
            vec![-127, 64, 127, -127, 64, 127]
        );
        let sv = s.to_f32_vec().unwrap();
        assert_eq!(sv, vec![(1.0f64 / 127.0) as f32, (10.0f64 / 127.0) as f32]);
        // per tensor: scalar parameters, channel 0 loses resolution
        let (q, s, _) = quantize_tensor(&w, &QuantSpec::per_tensor(QType::Int8, true)).unwrap();
        assert!(s.dims.is_empty());
        assert_eq!(q.to_vec::<i8>().unwrap(), vec![-13, 6, 13, -127, 64, 127]);
        // axis 1 of a [2, 3]: three scales
        let (_, s, _) = quantize_tensor(&w, &QuantSpec::per_axis(QType::Uint8, false, 1)).unwrap();
        assert_eq!(s.dims, vec![3]);
    }

    #[test]
    fn uint8_asymmetric_values() {
        // [-1, 3] -> scale 4/255, zero point 64
        let w = t32(vec![3], vec![-1.0, 0.0, 3.0]);
        let (q, _, z) = quantize_tensor(&w, &QuantSpec::per_tensor(QType::Uint8, false)).unwrap();
        assert_eq!(z.to_vec::<u8>().unwrap(), vec![64]);
        assert_eq!(q.to_vec::<u8>().unwrap(), vec![0, 64, 255]);
    }

    #[test]
    fn refuses_what_cannot_be_quantized() {
        let w = t32(vec![2], vec![1.0, f32::NAN]);
        let e = quantize_tensor(&w, &QuantSpec::per_tensor(QType::Int8, true)).unwrap_err();
        assert!(
            e.to_string().contains("'w'") && e.to_string().contains("non-finite"),
            "{e}"
        );
        let i = Tensor::from_vec("ints", vec![2], vec![1i32, 2]).unwrap();
        assert!(quantize_tensor(&i, &QuantSpec::per_tensor(QType::Int8, true)).is_err());
        let w = t32(vec![2, 2], vec![1.0; 4]);
        assert!(quantize_tensor(&w, &QuantSpec::per_axis(QType::Int8, true, 2)).is_err());
        // wrong parameter counts
        let p = QParams {
            scale: 1.0,
            zero_point: 0,
        };
        assert!(quantize_with("q", &w, &[p; 3], Some(0), DataType::INT8, (-128, 127)).is_err());
        assert!(quantize_with("q", &w, &[p; 2], None, DataType::INT8, (-128, 127)).is_err());
    }

    #[test]
    fn zero_tensor_and_empty_channel() {
        let w = t32(vec![2, 2], vec![0.0; 4]);
        let (q, s, z) = quantize_tensor(&w, &QuantSpec::per_axis(QType::Int8, true, 0)).unwrap();
        assert_eq!(q.to_vec::<i8>().unwrap(), vec![0; 4]);
        assert_eq!(s.to_f32_vec().unwrap(), vec![1.0, 1.0]);
        assert_eq!(z.to_vec::<i8>().unwrap(), vec![0, 0]);
        let e = t32(vec![3, 0], vec![]);
        let (q, s, _) = quantize_tensor(&e, &QuantSpec::per_axis(QType::Int8, true, 0)).unwrap();
        assert_eq!(q.dims, vec![3, 0]);
        assert_eq!(s.to_f32_vec().unwrap(), vec![1.0; 3]);
    }

    #[test]
    fn f16_weights_get_f16_scales() {
        let v: Vec<half::f16> = [-2.0f32, 0.25, 1.0]
            .iter()
            .map(|x| half::f16::from_f32(*x))
            .collect();
        let w = Tensor::from_vec("h", vec![3], v).unwrap();
        let spec = QuantSpec {
            scale_dtype: DataType::FLOAT16,
            ..QuantSpec::per_tensor(QType::Int8, true)
        };
        let (q, s, _) = quantize_tensor(&w, &spec).unwrap();
        assert_eq!(s.dtype(), DataType::FLOAT16);
        let sc = s.to_f32_vec().unwrap()[0];
        assert_eq!(sc, half::f16::from_f64(2.0 / 127.0).to_f32());
        // quantized with the stored (rounded) scale
        assert_eq!(
            q.to_vec::<i8>().unwrap(),
            vec![
                (-2.0f32 / sc).round_ties_even().max(-127.0) as i8,
                (0.25f32 / sc).round_ties_even() as i8,
                (1.0f32 / sc).round_ties_even() as i8
            ]
        );
    }

    /// The f32 fast path and the general path (through f64, as for f16 / f64 weights) give the same tensors.
    #[test]
    fn fast_path_matches_general_path() {
        let w = t32(vec![5, 4, 3], pseudo(60, 11));
        for qtype in [QType::Int8, QType::Uint8] {
            for symmetric in [true, false] {
                for axis in [None, Some(0), Some(2)] {
                    let spec = QuantSpec {
                        axis,
                        ..QuantSpec::per_tensor(qtype, symmetric)
                    };
                    let (p, q) = quantize_f32(&w, &spec).unwrap();
                    let p2 = params_for_tensor(&w, &spec).unwrap();
                    let q2 =
                        quantize_with("w_quantized", &w, &p2, axis, qtype.dtype(), spec.range())
                            .unwrap();
                    assert_eq!(p, p2);
                    assert_eq!(q.to_i64_vec().unwrap(), q2.to_i64_vec().unwrap());
                    assert_eq!(q.dtype(), q2.dtype());
                }
            }
        }
    }

    #[test]
    fn int32_bias_through_quantize_with() {
        let b = t32(vec![2], vec![0.5, -1.0]);
        let p = [
            QParams {
                scale: 0.01,
                zero_point: 0,
            },
            QParams {
                scale: 0.1,
                zero_point: 0,
            },
        ];
        let q = quantize_with(
            "b_q",
            &b,
            &p,
            Some(0),
            DataType::INT32,
            (i32::MIN, i32::MAX),
        )
        .unwrap();
        assert_eq!(q.dtype(), DataType::INT32);
        assert_eq!(q.to_vec::<i32>().unwrap(), vec![50, -10]);
    }
}
