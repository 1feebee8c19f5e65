//! Typed access to tensor data: constructors and reads for every numeric ONNX element type, whatever field of
//! the `TensorProto` holds the data (raw little-endian bytes, the typed fields, or an external file), and a
//! rewrite that keeps the dtype.
//!
//! Conversions from f64 (`Element::from_f64`, `Tensor::from_f64_as`, `Tensor::map_f64`):
//! - floating types round to nearest, ties to even (f16 and bf16 through the `half` crate: subnormals kept,
//!   overflow to infinity, NaN stays NaN);
//! - integer types round to nearest, ties to even (as ONNX `QuantizeLinear` does), then saturate to the type's
//!   range; NaN becomes 0. int4 / uint4 saturate to [-8, 7] / [0, 15];
//! - bool is `x != 0` (so NaN is true, as in NumPy).
//!
//! Reads in f64 are exact for every type except 64-bit integers past 2^53 (rounded to nearest).

use bytes::Bytes;
use half::{bf16, f16};

use super::{DataType, Tensor, TensorData};
use crate::error::{Error, Result};

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that is the in-memory form of one ONNX element type.
pub trait Element:
    Copy + PartialEq + std::fmt::Debug + Send + Sync + 'static + sealed::Sealed
{
    /// The ONNX element type this Rust type stands for.
    const DTYPE: DataType;
    /// Bytes per element in `raw_data` (little-endian).
    const SIZE: usize;
    /// Append the little-endian encoding.
    fn put_le(self, out: &mut Vec<u8>);
    /// Decode one element from exactly `SIZE` little-endian bytes.
    fn get_le(b: &[u8]) -> Self;
    fn to_f64(self) -> f64;
    /// Convert with the rounding and saturation rules of the module docs.
    fn from_f64(x: f64) -> Self;
}

macro_rules! int_element {
    ($t:ty, $dt:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DataType = $dt;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(x: f64) -> Self {
                // `as` from a float saturates at the type's bounds and maps NaN to 0
                x.round_ties_even() as $t
            }
        }
    };
}

int_element!(i8, DataType::INT8);
int_element!(u8, DataType::UINT8);
int_element!(i16, DataType::INT16);
int_element!(u16, DataType::UINT16);
int_element!(i32, DataType::INT32);
int_element!(u32, DataType::UINT32);
int_element!(i64, DataType::INT64);
int_element!(u64, DataType::UINT64);

macro_rules! float_element {
    ($t:ty, $dt:expr, $to:expr, $from:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DataType = $dt;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn from_f64(x: f64) -> Self {
                $from(x)
            }
        }
    };
}

float_element!(f32, DataType::FLOAT, |x: f32| x as f64, |x: f64| x as f32);
float_element!(f64, DataType::DOUBLE, |x: f64| x, |x: f64| x);
float_element!(f16, DataType::FLOAT16, f16::to_f64, f16::from_f64);
float_element!(bf16, DataType::BFLOAT16, bf16::to_f64, bf16::from_f64);

impl sealed::Sealed for bool {}
impl Element for bool {
    const DTYPE: DataType = DataType::BOOL;
    const SIZE: usize = 1;
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn get_le(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(x: f64) -> Self {
        x != 0.0
    }
}

/// Run `$body` with `$T` bound to the Rust type of `$dt`, or evaluate `$other` for types without one
/// (strings, complex, 4-bit, float8, float4, unknown codes).
macro_rules! with_element {
    ($dt:expr, $T:ident => $body:expr, _ => $other:expr) => {
        match $dt {
            DataType::FLOAT => {
                type $T = f32;
                $body
            }
            DataType::DOUBLE => {
                type $T = f64;
                $body
            }
            DataType::FLOAT16 => {
                type $T = half::f16;
                $body
            }
            DataType::BFLOAT16 => {
                type $T = half::bf16;
                $body
            }
            DataType::INT8 => {
                type $T = i8;
                $body
            }
            DataType::UINT8 => {
                type $T = u8;
                $body
            }
            DataType::INT16 => {
                type $T = i16;
                $body
            }
            DataType::UINT16 => {
                type $T = u16;
                $body
            }
            DataType::INT32 => {
                type $T = i32;
                $body
            }
            DataType::UINT32 => {
                type $T = u32;
                $body
            }
            DataType::INT64 => {
                type $T = i64;
                $body
            }
            DataType::UINT64 => {
                type $T = u64;
                $body
            }
            DataType::BOOL => {
                type $T = bool;
                $body
            }
            _ => $other,
        }
    };
}

fn is_4bit(dt: DataType) -> bool {
    matches!(dt, DataType::INT4 | DataType::UINT4)
}

/// Unpack 4-bit elements (low nibble first), sign-extending int4.
fn unpack_4bit(raw: &[u8], n: usize, signed: bool) -> Vec<i64> {
    (0..n)
        .map(|i| {
            let b = raw[i / 2];
            let nib = if i % 2 == 0 { b & 0x0f } else { b >> 4 };
            if signed {
                (((nib << 4) as i8) >> 4) as i64
            } else {
                nib as i64
            }
        })
        .collect()
}

/// Pack 4-bit elements (low nibble first); values must already be in range.
fn pack_4bit(values: &[i64]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|c| {
            let lo = (c[0] as u8) & 0x0f;
            let hi = c.get(1).map_or(0, |v| (*v as u8) & 0x0f);
            lo | (hi << 4)
        })
        .collect()
}

/// Decode one finite minifloat of `e` exponent and `m` mantissa bits with exponent bias `bias` (sign in bit
/// e+m, subnormals at exponent 0); the callers handle each format's NaN and infinity codes first.
fn minifloat(code: u8, e: u32, m: u32, bias: i32) -> f64 {
    let sign = if (code >> (e + m)) & 1 == 1 {
        -1.0
    } else {
        1.0
    };
    let exp = ((code >> m) as u32 & ((1 << e) - 1)) as i32;
    let mant = (code as u32 & ((1 << m) - 1)) as f64;
    let scale = (1u32 << m) as f64;
    let mag = if exp == 0 {
        mant / scale * 2f64.powi(1 - bias)
    } else {
        (1.0 + mant / scale) * 2f64.powi(exp - bias)
    };
    sign * mag
}

/// float8 / float4 / float8e8m0 codes to f64, per the ONNX spec (docs/Float8.md, the FLOAT4E2M1 and
/// FLOAT8E8M0 sections): e4m3fn has NaN at S.1111.111 and no infinity; the fnuz types have one NaN (0x80) and
/// no negative zero, bias 8 (e4m3) / 16 (e5m2); e5m2 is IEEE-like (bias 15, infinity and NaNs at exponent
/// 31); e2m1 (bias 1) has neither; e8m0 is 2^(code - 127) with NaN at 0xFF.
fn decode_small_float(dt: DataType, code: u8) -> f64 {
    match dt.0 {
        17 if code & 0x7f == 0x7f => f64::NAN,
        17 => minifloat(code, 4, 3, 7),
        18 | 20 if code == 0x80 => f64::NAN,
        18 => minifloat(code, 4, 3, 8),
        19 if code & 0x7c == 0x7c => {
            if code & 0x03 == 0 {
                if code & 0x80 != 0 {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            } else {
                f64::NAN
            }
        }
        19 => minifloat(code, 5, 2, 15),
        20 => minifloat(code, 5, 2, 16),
        23 => minifloat(code & 0x0f, 2, 1, 1),
        24 if code == 0xff => f64::NAN,
        24 => 2f64.powi(code as i32 - 127),
        _ => f64::NAN,
    }
}

impl Tensor {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::invalid(format!("tensor '{}'", self.name()), msg)
    }

    /// The packed little-endian bytes, checked against dtype and dims as at load (`check`: the field suits the
    /// dtype, counts and int32_data widths fit; a hand-built tensor may disagree), then the byte length.
    fn checked_bytes(&self) -> Result<(Bytes, usize)> {
        self.check()?;
        let n = usize::try_from(self.numel()?).map_err(|_| self.err("too many elements"))?;
        let raw = self.raw_bytes()?;
        let want = self
            .dtype()
            .byte_len(n as u64)
            .ok_or_else(|| self.err(format!("{} has no packed form", self.dtype().name())))?;
        if raw.len() as u64 != want {
            return Err(self.err(format!(
                "data is {} bytes but {} x {:?} needs {want}",
                raw.len(),
                self.dtype().name(),
                self.dims
            )));
        }
        Ok((raw, n))
    }

    /// A tensor of `T` values stored as little-endian `raw_data`; errors when `values` does not fill `dims`.
    pub fn from_vec<T: Element>(
        name: impl Into<String>,
        dims: Vec<i64>,
        values: Vec<T>,
    ) -> Result<Tensor> {
        let name = name.into();
        let n = super::numel(&dims).ok_or_else(|| {
            Error::invalid(format!("tensor '{name}'"), format!("invalid dims {dims:?}"))
        })?;
        if n != values.len() as u64 {
            return Err(Error::invalid(
                format!("tensor '{name}'"),
                format!(
                    "{} values given for dims {dims:?} ({n} elements)",
                    values.len()
                ),
            ));
        }
        let mut raw = Vec::with_capacity(values.len() * T::SIZE);
        for v in values {
            v.put_le(&mut raw);
        }
        Ok(Tensor::from_raw(name, T::DTYPE, dims, Bytes::from(raw)))
    }

    /// The values as `T`; errors unless the tensor's dtype is exactly `T::DTYPE`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.dtype() != T::DTYPE {
            return Err(self.err(format!(
                "is {}, read as {}",
                self.dtype().name(),
                T::DTYPE.name()
            )));
        }
        let (raw, _) = self.checked_bytes()?;
        Ok(raw.chunks_exact(T::SIZE).map(T::get_le).collect())
    }

    /// The values of any real numeric dtype as f64 (exact but for 64-bit integers past 2^53; float8, float4
    /// and float8e8m0 decoded too). Complex and string tensors are refused.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let dt = self.dtype();
        if is_4bit(dt) {
            return Ok(self.to_i64_vec()?.into_iter().map(|v| v as f64).collect());
        }
        let (raw, n) = self.checked_bytes_for_read()?;
        match dt.0 {
            17..=20 | 24 => return Ok(raw.iter().map(|b| decode_small_float(dt, *b)).collect()),
            23 => {
                return Ok((0..n)
                    .map(|i| {
                        let b = raw[i / 2];
                        decode_small_float(dt, if i % 2 == 0 { b & 0x0f } else { b >> 4 })
                    })
                    .collect())
            }
            _ => {}
        }
        with_element!(dt, T => Ok(raw.chunks_exact(T::SIZE).map(|b| T::get_le(b).to_f64()).collect()),
            _ => Err(self.refuse("numbers")))
    }

    /// The values as f32 (f64 and 64-bit integers rounded to nearest); complex refused as in `to_f64_vec`.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        if let (DataType::FLOAT, TensorData::Float(v)) = (self.dtype(), &self.data) {
            if self.numel()? == v.len() as u64 {
                return Ok(v.clone());
            }
        }
        Ok(self.to_f64_vec()?.into_iter().map(|x| x as f32).collect())
    }

    /// The values of an integer or bool tensor (4-bit types unpacked) as i64; float types are refused, and so
    /// are uint64 values past i64::MAX.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        let dt = self.dtype();
        let (raw, n) = self.checked_bytes_for_read()?;
        if is_4bit(dt) {
            return Ok(unpack_4bit(&raw, n, dt == DataType::INT4));
        }
        fn read<T: Element>(raw: &[u8], f: impl Fn(T) -> i64) -> Vec<i64> {
            raw.chunks_exact(T::SIZE).map(|b| f(T::get_le(b))).collect()
        }
        Ok(match dt {
            DataType::INT64 => read(&raw, |v: i64| v),
            DataType::INT32 => read(&raw, |v: i32| v as i64),
            DataType::UINT32 => read(&raw, |v: u32| v as i64),
            DataType::INT16 => read(&raw, |v: i16| v as i64),
            DataType::UINT16 => read(&raw, |v: u16| v as i64),
            DataType::INT8 => read(&raw, |v: i8| v as i64),
            DataType::UINT8 => read(&raw, |v: u8| v as i64),
            DataType::BOOL => read(&raw, |v: bool| v as i64),
            DataType::UINT64 => {
                return raw
                    .chunks_exact(8)
                    .map(|b| {
                        i64::try_from(u64::get_le(b))
                            .map_err(|_| self.err("uint64 value past i64::MAX"))
                    })
                    .collect()
            }
            _ => return Err(self.refuse("integers")),
        })
    }

    fn checked_bytes_for_read(&self) -> Result<(Bytes, usize)> {
        let dt = self.dtype();
        if matches!(dt, DataType::COMPLEX64 | DataType::COMPLEX128) {
            return Err(self.refuse("real numbers"));
        }
        if dt == DataType::STRING || !dt.is_known() {
            return Err(self.refuse("numbers"));
        }
        self.checked_bytes()
    }

    fn refuse(&self, what: &str) -> Error {
        self.err(format!("cannot read {} as {what}", self.dtype().name()))
    }

    /// A tensor of dtype `dtype` from f64 values, converted with the rules of the module docs. Supports every
    /// type `Element` covers plus int4 / uint4 (packed); errors on other types or when `values` does not
    /// fill `dims`.
    pub fn from_f64_as(
        name: impl Into<String>,
        dtype: DataType,
        dims: Vec<i64>,
        values: &[f64],
    ) -> Result<Tensor> {
        let name = name.into();
        if is_4bit(dtype) {
            let (lo, hi) = if dtype == DataType::INT4 {
                (-8.0, 7.0)
            } else {
                (0.0, 15.0)
            };
            let n = super::numel(&dims).filter(|n| *n == values.len() as u64);
            if n.is_none() {
                return Err(Error::invalid(
                    format!("tensor '{name}'"),
                    format!("{} values given for dims {dims:?}", values.len()),
                ));
            }
            let q: Vec<i64> = values
                .iter()
                .map(|x| {
                    if x.is_nan() {
                        0
                    } else {
                        x.round_ties_even().clamp(lo, hi) as i64
                    }
                })
                .collect();
            return Ok(Tensor::from_raw(
                name,
                dtype,
                dims,
                Bytes::from(pack_4bit(&q)),
            ));
        }
        with_element!(dtype, T => Tensor::from_vec::<T>(name, dims, values.iter().map(|x| T::from_f64(*x)).collect()),
        _ => Err(Error::invalid(
            format!("tensor '{name}'"),
            format!("cannot build {} values from numbers", dtype.name()),
        )))
    }

    /// The same tensor (name, dtype, dims, doc string, metadata) with every value replaced by `f(value)`,
    /// computed in f64 and stored back in the tensor's own dtype (module docs: rounding and saturation).
    /// The result holds `raw_data`.
    pub fn map_f64(&self, mut f: impl FnMut(f64) -> f64) -> Result<Tensor> {
        let v: Vec<f64> = self.to_f64_vec()?.into_iter().map(&mut f).collect();
        let mut t = Tensor::from_f64_as(self.name(), self.dtype(), self.dims.clone(), &v)?;
        t.name = self.name.clone();
        t.doc_string = self.doc_string.clone();
        t.metadata_props = self.metadata_props.clone();
        Ok(t)
    }

    /// The same content in the typed field the ONNX spec assigns to the dtype (float_data, int32_data,
    /// int64_data, double_data or uint64_data) instead of raw or external data; as small constants are
    /// often written by exporters.
    pub fn to_field_storage(&self) -> Result<Tensor> {
        let dt = self.dtype();
        let (raw, _) = self.checked_bytes()?;
        let data = match dt.0 {
            1 | 14 => TensorData::Float(raw.chunks_exact(4).map(f32::get_le).collect()),
            11 | 15 => TensorData::Double(raw.chunks_exact(8).map(f64::get_le).collect()),
            7 => TensorData::Int64(raw.chunks_exact(8).map(i64::get_le).collect()),
            12 => TensorData::Uint64(raw.chunks_exact(4).map(|b| u32::get_le(b) as u64).collect()),
            13 => TensorData::Uint64(raw.chunks_exact(8).map(u64::get_le).collect()),
            6 => TensorData::Int32(raw.chunks_exact(4).map(i32::get_le).collect()),
            5 => TensorData::Int32(raw.chunks_exact(2).map(|b| i16::get_le(b) as i32).collect()),
            4 | 10 | 16 => {
                TensorData::Int32(raw.chunks_exact(2).map(|b| u16::get_le(b) as i32).collect())
            }
            3 => TensorData::Int32(raw.iter().map(|b| *b as i8 as i32).collect()),
            // uint8, bool, float8 bit patterns; 4- and 2-bit types one packed byte per value
            2 | 9 | 17..=26 => TensorData::Int32(raw.iter().map(|b| *b as i32).collect()),
            _ => return Err(self.err(format!("{} has no typed field", dt.name()))),
        };
        let mut t = self.clone();
        t.data = data;
        t.data_location = None;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value through every storage form a dtype allows: raw, typed field, and back.
    fn round_trip<T: Element>(values: Vec<T>) {
        let dims = vec![values.len() as i64];
        let t = Tensor::from_vec("t", dims.clone(), values.clone()).unwrap();
        assert_eq!(t.dtype(), T::DTYPE);
        t.check().unwrap();
        assert_eq!(t.to_vec::<T>().unwrap(), values, "raw {}", T::DTYPE.name());
        let typed = t.to_field_storage().unwrap();
        assert!(!matches!(typed.data, TensorData::Raw(_)));
        typed.check().unwrap();
        assert_eq!(
            typed.to_vec::<T>().unwrap(),
            values,
            "field {}",
            T::DTYPE.name()
        );
        assert_eq!(typed.raw_bytes().unwrap(), t.raw_bytes().unwrap());
        let f: Vec<f64> = values.iter().map(|v| v.to_f64()).collect();
        assert_eq!(t.to_f64_vec().unwrap(), f);
        assert_eq!(typed.to_f64_vec().unwrap(), f);
        // from f64 back to the dtype is exact for values the dtype holds
        let back = Tensor::from_f64_as("t", T::DTYPE, dims, &f).unwrap();
        assert_eq!(back.raw_bytes().unwrap(), t.raw_bytes().unwrap());
    }

    #[test]
    fn round_trips_every_dtype_raw_and_field() {
        round_trip(vec![
            1.5f32,
            -0.0,
            f32::MIN_POSITIVE / 4.0,
            f32::MAX,
            f32::INFINITY,
        ]);
        round_trip(vec![0.1f64, -1e300, 5e-324]);
        round_trip(vec![
            f16::from_f32(1.0),
            f16::from_bits(0x0001),
            f16::MAX,
            f16::NEG_INFINITY,
        ]);
        round_trip(vec![
            bf16::from_f32(-3.0),
            bf16::from_bits(0x0001),
            bf16::MAX,
        ]);
        round_trip(vec![i8::MIN, -1, 0, i8::MAX]);
        round_trip(vec![0u8, 200, u8::MAX]);
        round_trip(vec![i16::MIN, -2, i16::MAX]);
        round_trip(vec![0u16, 40000, u16::MAX]);
        round_trip(vec![i32::MIN, -3, i32::MAX]);
        round_trip(vec![0u32, 3_000_000_000, u32::MAX]);
        round_trip(vec![i64::MIN, -4, 1 << 40]);
        round_trip(vec![0u64, 1 << 50]);
        round_trip(vec![true, false, true]);
    }

    /// The same tensors stored as ranges of one external data file read back the same.
    #[test]
    fn external_storage_reads_like_raw() {
        std::fs::create_dir_all("target").unwrap();
        let dir = tempfile::tempdir_in("target").unwrap();
        let tensors = vec![
            Tensor::from_vec("a", vec![3], vec![1.5f32, -2.0, 1e-40]).unwrap(),
            Tensor::from_vec("b", vec![2], vec![f16::from_f32(0.1), f16::MIN_POSITIVE]).unwrap(),
            Tensor::from_vec("c", vec![2], vec![bf16::from_f32(-7.5), bf16::EPSILON]).unwrap(),
            Tensor::from_vec("d", vec![2], vec![0.1f64, -3.0]).unwrap(),
            Tensor::from_vec("e", vec![3], vec![-1i8, 0, 100]).unwrap(),
            Tensor::from_vec("f", vec![2], vec![i64::MAX, -9]).unwrap(),
            Tensor::from_vec("g", vec![2], vec![true, false]).unwrap(),
            Tensor::from_f64_as("h", DataType::UINT4, vec![3], &[1.0, 15.0, 4.0]).unwrap(),
        ];
        let mut file = Vec::new();
        let mut ranges = Vec::new();
        for t in &tensors {
            let b = t.raw_bytes().unwrap();
            ranges.push((file.len() as u64, b.len() as u64));
            file.extend_from_slice(&b);
            file.push(0xAA); // a gap, so an offset off by one reads wrong bytes
        }
        std::fs::write(dir.path().join("w.bin"), &file).unwrap();
        let mut resolver = crate::io::external::Resolver::new(Some(dir.path()));
        let handle = resolver.open("w.bin").unwrap();
        for (t, (offset, length)) in tensors.iter().zip(ranges) {
            let mut x = t.clone();
            x.data = TensorData::External(super::super::ExternalRef {
                entries: Vec::new(),
                location: "w.bin".into(),
                offset,
                length,
                file: handle.clone(),
            });
            x.check().unwrap();
            assert_eq!(x.raw_bytes().unwrap(), t.raw_bytes().unwrap());
            let name = x.name().to_string();
            match x.dtype() {
                DataType::UINT4 => assert_eq!(x.to_i64_vec().unwrap(), [1, 15, 4]),
                DataType::INT64 => assert_eq!(x.to_i64_vec().unwrap(), [i64::MAX, -9]),
                _ => assert_eq!(x.to_f64_vec().unwrap(), t.to_f64_vec().unwrap(), "{name}"),
            }
        }
    }

    #[test]
    fn int32_data_as_the_spec_stores_it() {
        // int8 sign-extended, uint16 and float16 as unsigned bit patterns
        let mut t = Tensor::from_raw("a", DataType::INT8, vec![2], Bytes::new());
        t.data = TensorData::Int32(vec![-5, 127]);
        t.check().unwrap();
        assert_eq!(t.to_vec::<i8>().unwrap(), [-5, 127]);
        assert_eq!(t.to_i64_vec().unwrap(), [-5, 127]);
        let mut h = Tensor::from_raw("h", DataType::FLOAT16, vec![2], Bytes::new());
        h.data = TensorData::Int32(vec![0x3c00, 0xc000]);
        assert_eq!(h.to_f64_vec().unwrap(), [1.0, -2.0]);
        let mut b = Tensor::from_raw("b", DataType::BFLOAT16, vec![1], Bytes::new());
        b.data = TensorData::Int32(vec![0xbf80]);
        assert_eq!(b.to_f64_vec().unwrap(), [-1.0]);
        // uint32 in uint64_data, double in double_data, int64 in int64_data
        let mut u = Tensor::from_raw("u", DataType::UINT32, vec![1], Bytes::new());
        u.data = TensorData::Uint64(vec![4_000_000_000]);
        assert_eq!(u.to_vec::<u32>().unwrap(), [4_000_000_000]);
        let mut d = Tensor::from_raw("d", DataType::DOUBLE, vec![1], Bytes::new());
        d.data = TensorData::Double(vec![0.1]);
        assert_eq!(d.to_f64_vec().unwrap(), [0.1]);
        assert_eq!(d.to_f32_vec().unwrap(), [0.1f32]);
    }

    #[test]
    fn field_reserved_for_other_types_is_refused() {
        let mut t = Tensor::from_raw("w", DataType::INT64, vec![1], Bytes::new());
        t.data = TensorData::Float(vec![1.0]);
        let e = t.check().unwrap_err().to_string();
        assert!(e.contains("'w'") && e.contains("float_data"), "{e}");
        assert!(t.to_i64_vec().is_err());
        // int32_data values wider than the element
        let mut w = Tensor::from_raw("wide", DataType::INT8, vec![2], Bytes::new());
        w.data = TensorData::Int32(vec![-128, 300]);
        let e = w.check().unwrap_err().to_string();
        assert!(e.contains("300") && e.contains("index 1"), "{e}");
        assert!(w.to_vec::<i8>().is_err() && w.to_f64_vec().is_err());
        w.data = TensorData::Int32(vec![-128, 255]);
        w.check().unwrap();
        let mut h = Tensor::from_raw("h", DataType::FLOAT16, vec![1], Bytes::new());
        h.data = TensorData::Int32(vec![65536]);
        assert!(h.check().is_err());
        let mut s = Tensor::from_raw("s", DataType::FLOAT, vec![1], Bytes::new());
        s.data = TensorData::Int32(vec![1]);
        assert!(s.check().is_err() && s.to_f64_vec().is_err());
    }

    #[test]
    fn integer_reads_are_exact_past_2_pow_53() {
        let big = (1i64 << 60) + 1;
        let t = Tensor::from_vec("i", vec![2], vec![big, -big]).unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), [big, -big]);
        assert_eq!(
            t.to_field_storage().unwrap().to_i64_vec().unwrap(),
            [big, -big]
        );
        let u = Tensor::from_vec("u", vec![1], vec![u32::MAX]).unwrap();
        assert_eq!(u.to_i64_vec().unwrap(), [u32::MAX as i64]);
    }

    #[test]
    fn f64_does_not_narrow() {
        let t = Tensor::from_vec("d", vec![2], vec![0.1f64, 1e-310]).unwrap();
        assert_eq!(t.to_f64_vec().unwrap(), [0.1, 1e-310]);
    }

    #[test]
    fn complex_is_refused_not_read_as_pairs() {
        let t = Tensor::from_raw("c", DataType::COMPLEX64, vec![1], Bytes::from(vec![0u8; 8]));
        t.check().unwrap();
        for e in [
            t.to_f64_vec().unwrap_err(),
            t.to_f32_vec().unwrap_err(),
            t.map_f64(|x| x).unwrap_err(),
        ] {
            assert!(e.to_string().contains("c64"), "{e}");
        }
        let mut f = t.clone();
        f.data = TensorData::Float(vec![1.0, 2.0]);
        f.check().unwrap();
        assert!(f.to_f32_vec().is_err());
    }

    #[test]
    fn f16_rounding_edges() {
        let h = |x: f64| {
            Tensor::from_f64_as("h", DataType::FLOAT16, vec![1], &[x])
                .unwrap()
                .to_vec::<f16>()
                .unwrap()[0]
                .to_bits()
        };
        // 1 + 2^-11 lies halfway between 1 (0x3c00, even) and 1 + 2^-10 (0x3c01): ties to even -> 0x3c00
        assert_eq!(h(1.0 + 2f64.powi(-11)), 0x3c00);
        // 1 + 3 * 2^-11 lies halfway between 0x3c01 (odd) and 0x3c02 (even) -> 0x3c02
        assert_eq!(h(1.0 + 3.0 * 2f64.powi(-11)), 0x3c02);
        // just above the first tie rounds up
        assert_eq!(h(1.0 + 2f64.powi(-11) + 2f64.powi(-20)), 0x3c01);
        // smallest subnormal 2^-24 kept, half of it ties to even zero, 3/2 of it ties up to 2 (even)
        assert_eq!(h(2f64.powi(-24)), 0x0001);
        assert_eq!(h(2f64.powi(-25)), 0x0000);
        assert_eq!(h(1.5 * 2f64.powi(-24)), 0x0002);
        assert_eq!(h(-3.0 * 2f64.powi(-24)), 0x8003);
        // max 65504; 65520 is the tie between 65504 and 65536 (odd mantissa) -> infinity
        assert_eq!(h(65504.0), 0x7bff);
        assert_eq!(h(65519.0), 0x7bff);
        assert_eq!(h(65520.0), 0x7c00);
        assert_eq!(h(f64::NEG_INFINITY), 0xfc00);
        let nan = h(f64::NAN);
        assert!(nan & 0x7c00 == 0x7c00 && nan & 0x03ff != 0, "{nan:#x}");
        // the f32 helpers agree
        assert_eq!(super::super::f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(super::super::f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(super::super::f16_to_f32(0x0001), 2f32.powi(-24));
    }

    #[test]
    fn bf16_rounding_edges() {
        let b = |x: f64| {
            Tensor::from_f64_as("b", DataType::BFLOAT16, vec![1], &[x])
                .unwrap()
                .to_vec::<bf16>()
                .unwrap()[0]
                .to_bits()
        };
        // bf16 keeps 7 mantissa bits: 1 + 2^-8 ties to 1 (even), 1 + 3 * 2^-8 ties to 1 + 2^-6 (even)
        assert_eq!(b(1.0), 0x3f80);
        assert_eq!(b(1.0 + 2f64.powi(-8)), 0x3f80);
        assert_eq!(b(1.0 + 3.0 * 2f64.powi(-8)), 0x3f82);
        // smallest subnormal 2^-133 kept
        assert_eq!(b(2f64.powi(-133)), 0x0001);
        assert_eq!(b(f64::INFINITY), 0x7f80);
        assert_eq!(b(-1e39), 0xff80);
        let nan = b(f64::NAN);
        assert!(nan & 0x7f80 == 0x7f80 && nan & 0x007f != 0, "{nan:#x}");
    }

    #[test]
    fn ints_round_ties_even_and_saturate() {
        let t = Tensor::from_f64_as(
            "q",
            DataType::INT8,
            vec![7],
            &[0.5, 1.5, -2.5, 2.6, 300.0, -1e9, f64::NAN],
        )
        .unwrap();
        assert_eq!(t.to_vec::<i8>().unwrap(), [0, 2, -2, 3, 127, -128, 0]);
        let u = Tensor::from_f64_as("u", DataType::UINT8, vec![3], &[-4.0, 255.5, 254.5]).unwrap();
        assert_eq!(u.to_vec::<u8>().unwrap(), [0, 255, 254]);
        let b = Tensor::from_f64_as("b", DataType::BOOL, vec![3], &[0.0, -0.5, f64::NAN]).unwrap();
        assert_eq!(b.to_vec::<bool>().unwrap(), [false, true, true]);
    }

    #[test]
    fn int4_pack_unpack() {
        let t = Tensor::from_f64_as("i4", DataType::INT4, vec![5], &[-8.0, 7.0, 1.0, -1.0, 20.0])
            .unwrap();
        t.check().unwrap();
        assert_eq!(t.raw_bytes().unwrap().as_ref(), [0x78, 0xf1, 0x07]);
        assert_eq!(t.to_i64_vec().unwrap(), [-8, 7, 1, -1, 7]);
        let f = t.to_field_storage().unwrap();
        f.check().unwrap();
        assert_eq!(f.to_i64_vec().unwrap(), [-8, 7, 1, -1, 7]);
        let u = Tensor::from_f64_as("u4", DataType::UINT4, vec![3], &[-1.0, 15.0, 3.0]).unwrap();
        assert_eq!(u.to_f64_vec().unwrap(), [0.0, 15.0, 3.0]);
    }

    #[test]
    fn map_keeps_dtype_name_and_metadata() {
        let mut t = Tensor::from_vec("w", vec![2, 2], vec![1i16, -2, 3, -4]).unwrap();
        t.doc_string = Some("doc".into());
        let m = t.map_f64(|x| x * 1000.0).unwrap();
        assert_eq!(m.dtype(), DataType::INT16);
        assert_eq!(m.dims, [2, 2]);
        assert_eq!(m.name(), "w");
        assert_eq!(m.doc_string.as_deref(), Some("doc"));
        assert_eq!(m.to_vec::<i16>().unwrap(), [1000, -2000, 3000, -4000]);
        let h = Tensor::from_vec("h", vec![1], vec![f16::from_f32(2.0)]).unwrap();
        assert_eq!(
            h.map_f64(|x| x / 3.0).unwrap().to_vec::<f16>().unwrap(),
            [f16::from_f64(2.0 / 3.0)]
        );
    }

    #[test]
    fn mismatched_lengths_and_types_are_errors() {
        let e = Tensor::from_vec("w", vec![2, 3], vec![1.0f32; 5]).unwrap_err();
        assert!(e.to_string().contains("'w'") && e.to_string().contains("5 values"));
        assert!(Tensor::from_vec("w", vec![-1], vec![1u8]).is_err());
        assert!(Tensor::from_f64_as("w", DataType::INT4, vec![3], &[1.0]).is_err());
        assert!(Tensor::from_f64_as("w", DataType::STRING, vec![1], &[1.0]).is_err());
        let t = Tensor::from_vec("w", vec![2], vec![1i32, 2]).unwrap();
        assert!(t.to_vec::<i64>().unwrap_err().to_string().contains("i32"));
        // a hand-built tensor whose bytes do not fill its dims
        let short = Tensor::from_raw("s", DataType::FLOAT, vec![3], Bytes::from(vec![0u8; 8]));
        assert!(short
            .to_f64_vec()
            .unwrap_err()
            .to_string()
            .contains("8 bytes"));
        let big = Tensor::from_vec("u", vec![1], vec![u64::MAX]).unwrap();
        assert!(big.to_i64_vec().is_err());
        assert!(Tensor::from_vec("f", vec![1], vec![1.0f32])
            .unwrap()
            .to_i64_vec()
            .is_err());
    }
}
