//! Tensors: dtype, shape and data. Raw data is a `bytes::Bytes` slice of the loaded file (zero-copy from the
//! mmap), a typed list as the file stored it, or a lazily read range of an external data file.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ir::MetaEntry;

pub mod axis;
pub mod typed;

pub use axis::{AxisSplit, Matrix, ParamLayout, Reduction};
pub use typed::Element;

/// An ONNX element type, kept as its wire code so unknown future codes are still representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DataType(pub i32);

impl DataType {
    pub const UNDEFINED: DataType = DataType(0);
    pub const FLOAT: DataType = DataType(1);
    pub const UINT8: DataType = DataType(2);
    pub const INT8: DataType = DataType(3);
    pub const UINT16: DataType = DataType(4);
    pub const INT16: DataType = DataType(5);
    pub const INT32: DataType = DataType(6);
    pub const INT64: DataType = DataType(7);
    pub const STRING: DataType = DataType(8);
    pub const BOOL: DataType = DataType(9);
    pub const FLOAT16: DataType = DataType(10);
    pub const DOUBLE: DataType = DataType(11);
    pub const UINT32: DataType = DataType(12);
    pub const UINT64: DataType = DataType(13);
    pub const COMPLEX64: DataType = DataType(14);
    pub const COMPLEX128: DataType = DataType(15);
    pub const BFLOAT16: DataType = DataType(16);
    pub const UINT4: DataType = DataType(21);
    pub const INT4: DataType = DataType(22);

    const NAMES: [&'static str; 27] = [
        "undefined",
        "f32",
        "u8",
        "i8",
        "u16",
        "i16",
        "i32",
        "i64",
        "string",
        "bool",
        "f16",
        "f64",
        "u32",
        "u64",
        "c64",
        "c128",
        "bf16",
        "f8e4m3fn",
        "f8e4m3fnuz",
        "f8e5m2",
        "f8e5m2fnuz",
        "u4",
        "i4",
        "f4e2m1",
        "f8e8m0",
        "u2",
        "i2",
    ];

    pub fn is_known(self) -> bool {
        (1..Self::NAMES.len() as i32).contains(&self.0)
    }

    /// Short stable name used in dumps and reports ("f32", "i8", ...).
    pub fn name(self) -> Cow<'static, str> {
        match usize::try_from(self.0)
            .ok()
            .and_then(|i| Self::NAMES.get(i))
        {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(format!("dtype{}", self.0)),
        }
    }

    /// Storage size of one element in bits (4 for int4, 2 for int2); `None` for strings and unknown codes.
    pub fn bits(self) -> Option<u64> {
        Some(match self.0 {
            1 | 6 | 12 => 32,
            2 | 3 | 9 | 17..=20 | 24 => 8,
            4 | 5 | 10 | 16 => 16,
            7 | 11 | 13 | 14 => 64,
            15 => 128,
            21..=23 => 4,
            25 | 26 => 2,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self.0, 1 | 10 | 11 | 16 | 17..=20 | 23 | 24)
    }

    /// Bytes needed to store `numel` elements packed as raw data.
    pub fn byte_len(self, numel: u64) -> Option<u64> {
        let bits = self.bits()?;
        numel.checked_mul(bits).map(|b| b.div_ceil(8))
    }
}

/// Where a tensor's content lives, mirroring which field of the file held it so it is written back there.
#[derive(Clone, Debug)]
pub enum TensorData {
    /// `raw_data` (little-endian packed).
    Raw(Bytes),
    Float(Vec<f32>),
    /// `int32_data`: also carries 8/16-bit ints, bool and float16 widened to i32.
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Double(Vec<f64>),
    /// `uint64_data`: also carries uint32.
    Uint64(Vec<u64>),
    String(Vec<Bytes>),
    External(ExternalRef),
    /// No data field at all (allowed for zero-element tensors and for dtype-only tensors).
    Empty,
}

impl TensorData {
    /// The `TensorProto` field this storage is written to; `None` for external data and no data.
    pub fn field_name(&self) -> Option<&'static str> {
        Some(match self {
            TensorData::Raw(_) => "raw_data",
            TensorData::Float(_) => "float_data",
            TensorData::Int32(_) => "int32_data",
            TensorData::Int64(_) => "int64_data",
            TensorData::Double(_) => "double_data",
            TensorData::Uint64(_) => "uint64_data",
            TensorData::String(_) => "string_data",
            TensorData::External(_) | TensorData::Empty => return None,
        })
    }

    /// Whether the ONNX spec allows this field for `dt` (onnx.proto, `TensorProto`: float_data for float and
    /// complex64; int32_data for every type of 16 bits or less (float16 / bfloat16 / float8 as bit patterns,
    /// 4- and 2-bit types packed); int64_data for int64; double_data for double and complex128; uint64_data
    /// for uint32 and uint64; string_data for strings; raw_data for everything but strings).
    pub fn field_allows(&self, dt: DataType) -> bool {
        match self {
            TensorData::Raw(_) => dt != DataType::STRING,
            TensorData::Float(_) => matches!(dt, DataType::FLOAT | DataType::COMPLEX64),
            TensorData::Int32(_) => matches!(dt.0, 2..=6 | 9 | 10 | 16..=26),
            TensorData::Int64(_) => dt == DataType::INT64,
            TensorData::Double(_) => matches!(dt, DataType::DOUBLE | DataType::COMPLEX128),
            TensorData::Uint64(_) => matches!(dt, DataType::UINT32 | DataType::UINT64),
            TensorData::String(_) => dt == DataType::STRING,
            TensorData::External(_) | TensorData::Empty => true,
        }
    }
}

/// A range of an external data file, checked against the file's size at load and read on first use.
#[derive(Clone, Debug)]
pub struct ExternalRef {
    /// The `external_data` key/value entries exactly as the file had them (written back verbatim).
    pub entries: Vec<MetaEntry>,
    pub location: String,
    pub offset: u64,
    pub length: u64,
    pub file: Arc<crate::io::external::ExternalFile>,
}

impl ExternalRef {
    pub fn bytes(&self) -> Result<Bytes> {
        self.file.slice(self.offset, self.length)
    }
}

/// A dense tensor (initializer, Constant value, attribute tensor).
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: Option<String>,
    pub data_type: Option<i32>,
    pub dims: Vec<i64>,
    pub data: TensorData,
    /// `segment { begin, end }` when present (rare; kept for losslessness).
    pub segment: Option<(Option<i64>, Option<i64>)>,
    pub doc_string: Option<String>,
    /// The explicit `data_location` field, when the file wrote it.
    pub data_location: Option<i32>,
    pub metadata_props: Vec<MetaEntry>,
}

impl Tensor {
    /// A tensor with little-endian `raw` data. Panics never; shape and length are checked by `check`.
    pub fn from_raw(
        name: impl Into<String>,
        dtype: DataType,
        dims: Vec<i64>,
        raw: Bytes,
    ) -> Tensor {
        Tensor {
            name: Some(name.into()),
            data_type: Some(dtype.0),
            dims,
            data: TensorData::Raw(raw),
            segment: None,
            doc_string: None,
            data_location: None,
            metadata_props: Vec::new(),
        }
    }

    pub fn from_f32(name: impl Into<String>, dims: Vec<i64>, values: &[f32]) -> Tensor {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(name, DataType::FLOAT, dims, Bytes::from(raw))
    }

    pub fn from_i64(name: impl Into<String>, dims: Vec<i64>, values: &[i64]) -> Tensor {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(name, DataType::INT64, dims, Bytes::from(raw))
    }

    pub fn dtype(&self) -> DataType {
        DataType(self.data_type.unwrap_or(0))
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn is_external(&self) -> bool {
        matches!(self.data, TensorData::External(_))
    }

    /// Number of elements; errors on negative dims or overflow.
    pub fn numel(&self) -> Result<u64> {
        numel(&self.dims).ok_or_else(|| {
            Error::invalid(
                format!("tensor '{}'", self.name()),
                format!("invalid dims {:?}", self.dims),
            )
        })
    }

    /// Size of the data as stored (packed raw bytes for numeric types, sum of string lengths for strings).
    pub fn byte_size(&self) -> u64 {
        match &self.data {
            TensorData::Raw(b) => b.len() as u64,
            TensorData::External(e) => e.length,
            TensorData::String(s) => s.iter().map(|b| b.len() as u64).sum(),
            _ => self
                .numel()
                .ok()
                .and_then(|n| self.dtype().byte_len(n))
                .unwrap_or(0),
        }
    }

    /// Check that dtype, dims and data agree. Run on every tensor at load.
    pub fn check(&self) -> Result<()> {
        let at = || format!("tensor '{}'", self.name());
        let dt = self.dtype();
        if !dt.is_known() {
            return Err(Error::invalid(at(), format!("unknown data_type {}", dt.0)));
        }
        if let Some(d) = self.dims.iter().find(|d| **d < 0) {
            return Err(Error::invalid(
                at(),
                format!("negative dim {d} in dims {:?}", self.dims),
            ));
        }
        let n = self.numel()?;
        if n > 1 << 40 {
            return Err(Error::invalid(
                at(),
                format!("dims {:?} claim {n} elements", self.dims),
            ));
        }
        let count_ok = |what: &str, got: usize, per_elem: u64| -> Result<()> {
            // int32_data holds one packed byte per value: two 4-bit or four 2-bit elements.
            let want = match dt.bits() {
                Some(4) if what == "int32_data" => n.div_ceil(2),
                Some(2) if what == "int32_data" => n.div_ceil(4),
                _ => n * per_elem,
            };
            if got as u64 != want {
                return Err(Error::invalid(
                    at(),
                    format!(
                        "{what} holds {got} values but {} x {:?} needs {want}",
                        dt.name(),
                        self.dims
                    ),
                ));
            }
            Ok(())
        };
        let complex = if matches!(dt.0, 14 | 15) { 2 } else { 1 };
        if let Some(field) = self.data.field_name() {
            if !self.data.field_allows(dt) {
                return Err(Error::invalid(
                    at(),
                    format!(
                        "{} values stored in {field}, which the ONNX spec reserves for other types",
                        dt.name()
                    ),
                ));
            }
        }
        match &self.data {
            TensorData::Raw(b) => {
                let want = dt
                    .byte_len(n)
                    .ok_or_else(|| Error::invalid(at(), "raw_data given for a string tensor"))?;
                if b.len() as u64 != want {
                    return Err(Error::invalid(
                        at(),
                        format!(
                            "raw_data is {} bytes but {} x {:?} needs {want}",
                            b.len(),
                            dt.name(),
                            self.dims
                        ),
                    ));
                }
            }
            TensorData::External(e) => {
                let want = dt
                    .byte_len(n)
                    .ok_or_else(|| Error::invalid(at(), "external data for a string tensor"))?;
                if e.length != want {
                    return Err(Error::invalid(
                        at(),
                        format!(
                            "external data length {} but {} x {:?} needs {want}",
                            e.length,
                            dt.name(),
                            self.dims
                        ),
                    ));
                }
            }
            TensorData::Float(v) => count_ok("float_data", v.len(), complex)?,
            TensorData::Int32(v) => {
                count_ok("int32_data", v.len(), 1)?;
                // Each value must fit the element (or packed byte) width, read signed or unsigned: writers
                // store int8 sign-extended and float16 bit patterns unsigned; anything wider would be cut.
                let bits = dt.bits().unwrap_or(32).max(8);
                if bits < 32 {
                    let (lo, hi) = (-(1i64 << (bits - 1)), (1i64 << bits) - 1);
                    if let Some((i, x)) = v
                        .iter()
                        .enumerate()
                        .find(|(_, x)| !(lo..=hi).contains(&(**x as i64)))
                    {
                        return Err(Error::invalid(
                            at(),
                            format!(
                                "int32_data value {x} at index {i} does not fit a {bits}-bit {} element",
                                dt.name()
                            ),
                        ));
                    }
                }
            }
            TensorData::Int64(v) => count_ok("int64_data", v.len(), 1)?,
            TensorData::Double(v) => count_ok("double_data", v.len(), complex)?,
            TensorData::Uint64(v) => count_ok("uint64_data", v.len(), 1)?,
            TensorData::String(v) => count_ok("string_data", v.len(), 1)?,
            TensorData::Empty => {
                if n != 0 {
                    return Err(Error::invalid(
                        at(),
                        format!("no data for dims {:?} ({n} elements)", self.dims),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The content as packed little-endian bytes, whatever field holds it (zero-copy for raw and external data).
    pub fn raw_bytes(&self) -> Result<Bytes> {
        let dt = self.dtype();
        let bad = || {
            Error::invalid(
                format!("tensor '{}'", self.name()),
                format!("{} data cannot be packed", dt.name()),
            )
        };
        Ok(match &self.data {
            TensorData::Raw(b) => b.clone(),
            TensorData::External(e) => e.bytes()?,
            TensorData::Empty => Bytes::new(),
            TensorData::Float(v) => v
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
            TensorData::Double(v) => v
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
            TensorData::Int64(v) => v
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
            TensorData::Uint64(v) => match dt.0 {
                13 => v
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
                12 => v
                    .iter()
                    .flat_map(|x| (*x as u32).to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
                _ => return Err(bad()),
            },
            TensorData::Int32(v) => match dt.bits() {
                Some(32) => v
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
                Some(16) => v
                    .iter()
                    .flat_map(|x| (*x as u16).to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
                // 8-bit elements one per value; 4- and 2-bit elements arrive already packed, a byte per value
                Some(8 | 4 | 2) => v.iter().map(|x| *x as u8).collect::<Vec<u8>>().into(),
                _ => return Err(bad()),
            },
            TensorData::String(_) => return Err(bad()),
        })
    }

    /// Short content hash for dumps: first 12 hex digits of sha256 over dtype, dims and packed data.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.dtype().0.to_le_bytes());
        for d in &self.dims {
            h.update(d.to_le_bytes());
        }
        match (&self.data, self.raw_bytes()) {
            (TensorData::String(v), _) => {
                for s in v {
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s);
                }
            }
            (_, Ok(b)) => h.update(&b),
            (_, Err(_)) => h.update(b"<unreadable>"),
        }
        let d = h.finalize();
        d.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// True when both tensors have the same dtype, dims and content (storage field may differ).
    pub fn same_content(&self, other: &Tensor) -> bool {
        if self.dtype() != other.dtype() || self.dims != other.dims {
            return false;
        }
        match (&self.data, &other.data) {
            (TensorData::String(a), TensorData::String(b)) => a == b,
            _ => match (self.raw_bytes(), other.raw_bytes()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            },
        }
    }
}

/// Product of dims, `None` on a negative dim or overflow.
pub fn numel(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, d| {
        u64::try_from(*d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// IEEE half (bit pattern) to single precision; exact.
pub fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// Single precision to IEEE half (bit pattern): round to nearest, ties to even; subnormals kept, overflow to
/// infinity, NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// A sparse tensor: values and indices are dense tensors, dims the dense shape.
#[derive(Clone, Debug)]
pub struct SparseTensor {
    pub values: Option<Tensor>,
    pub indices: Option<Tensor>,
    pub dims: Vec<i64>,
}
