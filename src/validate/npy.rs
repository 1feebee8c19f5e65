//! `.npy` reading and writing (format versions 1-3, little-endian) to and from IR tensors. Data in Fortran
//! order (what numpy writes for a transposed array) is read into the C order IR tensors hold, with the shape
//! the header gives, as `np.load` reads it; files are written in C order.
//!
//! The reader takes untrusted bytes: the header must be the Python dict literal numpy writes (exactly the keys
//! `descr`, `fortran_order`, `shape`), the dtype one of the plain little-endian numbers or `b1`, the shape
//! non-negative, and the data exactly as long as dtype x shape says (checked before anything is allocated).
//! Every refusal is `Error::Invalid` naming the part of the file at fault; `read_npy` adds the file name.

use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ir::{DataType, Tensor};

/// The dtypes this reader accepts, as numpy's type codes (byte order aside).
const SUPPORTED: &str = "f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1";

fn code_dtype(code: &str) -> Option<DataType> {
    Some(match code {
        "f4" => DataType::FLOAT,
        "f8" => DataType::DOUBLE,
        "f2" => DataType::FLOAT16,
        "i1" => DataType::INT8,
        "u1" => DataType::UINT8,
        "i2" => DataType::INT16,
        "u2" => DataType::UINT16,
        "i4" => DataType::INT32,
        "u4" => DataType::UINT32,
        "i8" => DataType::INT64,
        "u8" => DataType::UINT64,
        "b1" => DataType::BOOL,
        _ => return None,
    })
}

/// `descr` -> dtype, or why not. Works on any text (no byte indexing into possibly multi-byte characters).
fn descr_dtype(descr: &str) -> std::result::Result<DataType, String> {
    let mut chars = descr.chars();
    let order = chars.next().unwrap_or(' ');
    let code = chars.as_str();
    let (order, code) = if matches!(order, '<' | '>' | '|' | '=') {
        (order, code)
    } else {
        ('|', descr)
    };
    if code.starts_with('O') {
        return Err(format!(
            "dtype '{descr}' is an object array (pickled Python objects), which is never read"
        ));
    }
    let dt = code_dtype(code).ok_or_else(|| {
        format!(
            "unsupported dtype '{}' (supported: {SUPPORTED}, little-endian)",
            descr.escape_debug()
        )
    })?;
    let one_byte = dt.bits() == Some(8);
    let little = match order {
        '<' => true,
        '=' => cfg!(target_endian = "little"),
        '|' => one_byte,
        _ => one_byte,
    };
    if !little {
        return Err(format!(
            "dtype '{descr}' is not little-endian (save with dtype.newbyteorder('<'))"
        ));
    }
    Ok(dt)
}

fn dtype_descr(dt: DataType) -> Option<&'static str> {
    Some(match dt {
        DataType::FLOAT => "<f4",
        DataType::DOUBLE => "<f8",
        DataType::FLOAT16 => "<f2",
        DataType::INT8 => "|i1",
        DataType::UINT8 => "|u1",
        DataType::INT16 => "<i2",
        DataType::UINT16 => "<u2",
        DataType::INT32 => "<i4",
        DataType::UINT32 => "<u4",
        DataType::INT64 => "<i8",
        DataType::UINT64 => "<u8",
        DataType::BOOL => "|b1",
        _ => return None,
    })
}

/// A value of the header dict.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<i64>),
}

/// A parser for the one Python literal form numpy writes: `{'key': value, ...}` with string, True/False and
/// tuple-of-int values, optional trailing commas, whitespace anywhere between tokens.
struct Header<'a> {
    s: &'a [u8],
    i: usize,
}

impl Header<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{}'", c as char)))
        }
    }

    fn unexpected(&mut self, want: &str) -> String {
        match self.peek() {
            Some(c) if c.is_ascii_graphic() => {
                format!(
                    "expected {want} at byte {} but found '{}'",
                    self.i, c as char
                )
            }
            Some(c) => format!(
                "expected {want} at byte {} but found byte 0x{c:02x}",
                self.i
            ),
            None => format!("expected {want} but the header ends"),
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.unexpected("a quoted string")),
        };
        self.i += 1;
        let start = self.i;
        while let Some(&c) = self.s.get(self.i) {
            if c == b'\\' {
                return Err(format!("escape sequence in a string at byte {}", self.i));
            }
            if c == q {
                let text = std::str::from_utf8(&self.s[start..self.i])
                    .map_err(|_| format!("string at byte {start} is not UTF-8"))?;
                self.i += 1;
                return Ok(text.to_string());
            }
            self.i += 1;
        }
        Err(format!("string at byte {start} is not closed"))
    }

    fn int(&mut self) -> std::result::Result<i64, String> {
        self.ws();
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        // Python 2 wrote long integers with an `L` suffix.
        if self.s.get(self.i) == Some(&b'L') {
            self.i += 1;
        }
        if text.is_empty() || text == "-" {
            self.i = start;
            return Err(self.unexpected("an integer"));
        }
        text.parse::<i64>()
            .map_err(|_| format!("shape entry {text} does not fit in 64 bits"))
    }

    fn value(&mut self) -> std::result::Result<Lit, String> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Lit::Str(self.string()?)),
            Some(b'(') => {
                self.i += 1;
                let mut v = Vec::new();
                loop {
                    if self.eat(b')') {
                        break;
                    }
                    v.push(self.int()?);
                    if !self.eat(b',') {
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(Lit::Tuple(v))
            }
            Some(b'T') if self.s[self.i..].starts_with(b"True") => {
                self.i += 4;
                Ok(Lit::Bool(true))
            }
            Some(b'F') if self.s[self.i..].starts_with(b"False") => {
                self.i += 5;
                Ok(Lit::Bool(false))
            }
            Some(b'[') => Err(format!(
                "a list at byte {} (a structured dtype?): only plain number arrays are read",
                self.i
            )),
            _ => Err(self.unexpected("a string, True/False or a tuple")),
        }
    }

    fn dict(&mut self) -> std::result::Result<Vec<(String, Lit)>, String> {
        self.expect(b'{')?;
        let mut out: Vec<(String, Lit)> = Vec::new();
        loop {
            if self.eat(b'}') {
                break;
            }
            let k = self.string()?;
            self.expect(b':')?;
            let v = self.value()?;
            if out.iter().any(|(o, _)| *o == k) {
                return Err(format!("key '{}' appears twice", k.escape_debug()));
            }
            out.push((k, v));
            if !self.eat(b',') {
                self.expect(b'}')?;
                break;
            }
        }
        if self.peek().is_some() {
            return Err(self.unexpected("the end of the header after '}'"));
        }
        Ok(out)
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Parse an `.npy` file's bytes into a tensor named `name`. Errors are `Error::Invalid` without a file (the
/// caller adds it, see `read_npy`); `at` names the part of the file at fault.
pub fn parse_npy(name: &str, bytes: &[u8]) -> Result<Tensor> {
    let bad = |at: &str, msg: String| Error::invalid(at, msg);
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad(
            "magic",
            "not an .npy file (it does not start with \\x93NUMPY)".into(),
        ));
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(v) => (v[0], v[1]),
        None => return Err(bad("version", "file ends inside the version bytes".into())),
    };
    let len_bytes = match major {
        1 => 2,
        2 | 3 => 4,
        _ => {
            return Err(bad(
                "version",
                format!(
                    "unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)"
                ),
            ))
        }
    };
    let start = 8 + len_bytes;
    let len_field = bytes.get(8..start).ok_or_else(|| {
        bad(
            "header length",
            format!(
                "file ends after {} bytes, inside the header length",
                bytes.len()
            ),
        )
    })?;
    let hlen = len_field
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | *b as u64);
    let end = (start as u64).saturating_add(hlen);
    if end > bytes.len() as u64 {
        return Err(bad(
            "header",
            format!(
                "header claims {hlen} bytes but the file holds only {} after the length field (truncated)",
                bytes.len() - start
            ),
        ));
    }
    let end = end as usize;
    let header_bytes = &bytes[start..end];
    if major < 3 && !header_bytes.is_ascii() {
        return Err(bad(
            "header",
            "header is not ASCII text (format 1.0 / 2.0 headers are)".into(),
        ));
    }
    let fields = Header {
        s: header_bytes,
        i: 0,
    }
    .dict()
    .map_err(|m| bad("header", format!("not a valid numpy header dict: {m}")))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in fields {
        match (k.as_str(), v) {
            ("descr", Lit::Str(s)) => descr = Some(s),
            ("fortran_order", Lit::Bool(b)) => fortran = Some(b),
            ("shape", Lit::Tuple(t)) => shape = Some(t),
            ("descr" | "fortran_order" | "shape", v) => {
                return Err(bad(
                    "header",
                    format!("'{k}' has a value of the wrong kind: {v:?}"),
                ))
            }
            (other, _) => {
                return Err(bad(
                    "header",
                    format!(
                        "unexpected key '{}' (numpy writes exactly descr, fortran_order, shape)",
                        other.escape_debug()
                    ),
                ))
            }
        }
    }
    let missing = |k: &str| bad("header", format!("the header has no '{k}'"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
    let dims = shape.ok_or_else(|| missing("shape"))?;
    let dtype = descr_dtype(&descr).map_err(|m| bad("descr", m))?;
    if let Some(d) = dims.iter().find(|d| **d < 0) {
        return Err(bad(
            "shape",
            format!("negative dimension {d} in shape {dims:?}"),
        ));
    }
    let data = &bytes[end..];
    // The product of dims and its size in bytes are checked in 64 bits (overflow is an error) and compared with
    // the bytes the file holds, so a shape claiming terabytes fails here, before anything is allocated.
    let numel = crate::ir::tensor::numel(&dims)
        .ok_or_else(|| bad("shape", format!("shape {dims:?} overflows 64 bits")))?;
    let want = dtype.byte_len(numel).ok_or_else(|| {
        bad(
            "shape",
            format!("shape {dims:?} of {} overflows 64 bits", dtype.name()),
        )
    })?;
    let have = data.len() as u64;
    if have != want {
        let what = if have < want {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(bad(
            "data",
            format!(
                "{what}: the data is {have} bytes but {} x {dims:?} needs {want}",
                dtype.name()
            ),
        ));
    }
    if dtype == DataType::BOOL {
        if let Some(i) = data.iter().position(|b| *b > 1) {
            return Err(bad(
                "data",
                format!("bool element {i} is byte {} (a bool is 0 or 1)", data[i]),
            ));
        }
    }
    // Fortran order is the same bytes as C order for arrays with at most one dimension above 1.
    let data = if fortran && dims.iter().filter(|d| **d > 1).count() > 1 {
        let size = dtype.byte_len(1).expect("one element fits") as usize;
        Bytes::from(fortran_to_c(data, &dims, size))
    } else {
        Bytes::copy_from_slice(data)
    };
    Ok(Tensor::from_raw(name, dtype, dims, data))
}

/// The elements of `data` (each `size` bytes), stored in Fortran order (first axis fastest) for `dims`,
/// rearranged into C order (last axis fastest). `data` holds exactly numel x size bytes.
fn fortran_to_c(data: &[u8], dims: &[i64], size: usize) -> Vec<u8> {
    let dims: Vec<usize> = dims.iter().map(|d| *d as usize).collect();
    // Fortran strides, in elements: axis k moves by the product of the dims before it
    let mut strides = vec![1usize; dims.len()];
    for k in 1..dims.len() {
        strides[k] = strides[k - 1] * dims[k - 1];
    }
    let numel: usize = dims.iter().product();
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; dims.len()];
    let mut at = 0usize;
    for _ in 0..numel {
        out.extend_from_slice(&data[at * size..(at + 1) * size]);
        // the next C-order index: an odometer whose last digit turns fastest, keeping `at` in step
        for k in (0..dims.len()).rev() {
            index[k] += 1;
            at += strides[k];
            if index[k] < dims[k] {
                break;
            }
            at -= strides[k] * dims[k];
            index[k] = 0;
        }
    }
    out
}

/// Read and parse an `.npy` file; errors name the file.
pub fn read_npy(path: &Path, name: &str) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(name, &bytes).map_err(|e| e.in_file(path))
}

/// Encode a tensor as `.npy` (version 1.0).
pub fn to_npy(t: &Tensor) -> Result<Vec<u8>> {
    let descr = dtype_descr(t.dtype()).ok_or_else(|| {
        Error::Validate(format!(
            "tensor '{}': {} cannot be written as .npy",
            t.name(),
            t.dtype().name()
        ))
    })?;
    let shape = match t.dims.len() {
        1 => format!("({},)", t.dims[0]),
        _ => format!(
            "({})",
            t.dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Version 1.0 stores the header length in 16 bits; a longer header (thousands of dims) needs 2.0 (32 bits).
    let v1 = header.len() + 1 + 63 <= u16::MAX as usize;
    let prefix = if v1 { 10 } else { 12 };
    let total = prefix + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    let mut out = MAGIC.to_vec();
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        let len = u32::try_from(header.len()).map_err(|_| {
            Error::Refused(format!(
                "tensor '{}': too many dimensions for .npy",
                t.name()
            ))
        })?;
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.raw_bytes()?);
    Ok(out)
}

pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    std::fs::write(path, to_npy(t)?).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let t = Tensor::from_f32("x", vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = to_npy(&t).unwrap();
        assert_eq!((b.len() - 6 * 4) % 64, 0);
        let back = parse_npy("x", &b).unwrap();
        assert!(back.same_content(&t));
        let s = Tensor::from_i64("s", vec![], &[7]);
        let back = parse_npy("s", &to_npy(&s).unwrap()).unwrap();
        assert!(back.same_content(&s));
    }

    #[test]
    fn long_header_uses_version_2() {
        let t = Tensor::from_raw(
            "r",
            DataType::FLOAT,
            vec![1; 30_000],
            Bytes::from(vec![0u8; 4]),
        );
        let b = to_npy(&t).unwrap();
        assert_eq!(b[6], 2);
        assert!(parse_npy("r", &b).unwrap().same_content(&t));
    }

    /// What `np.save` writes for `np.arange(24, dtype=np.float32).reshape(2, 3, 4).T` (shape (4, 3, 2),
    /// Fortran order: its bytes are 0..24 in order) reads as numpy reads it: element [i, j, k] = k * 12 + j * 4 +
    /// i, in C order; a (2, 3) int64 one as well. A Fortran-order array with one dimension above 1 is its bytes.
    #[test]
    fn fortran_order_is_read_as_numpy_reads_it() {
        let data: Vec<u8> = (0..24).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let t = parse_npy(
            "t",
            &npy(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 3, 2), }",
                &data,
            ),
        )
        .unwrap();
        assert_eq!(t.dims, vec![4, 3, 2]);
        let want: Vec<f32> = (0..4)
            .flat_map(|i| {
                (0..3).flat_map(move |j| (0..2).map(move |k| (k * 12 + j * 4 + i) as f32))
            })
            .collect();
        assert_eq!(t.to_f32_vec().unwrap(), want);
        // [[0, 1, 2], [3, 4, 5]] stored column by column
        let data: Vec<u8> = [0i64, 3, 1, 4, 2, 5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = parse_npy(
            "t",
            &npy(
                "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }",
                &data,
            ),
        )
        .unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![0, 1, 2, 3, 4, 5]);
        let data: Vec<u8> = [7i64, 8, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = parse_npy(
            "t",
            &npy(
                "{'descr': '<i8', 'fortran_order': True, 'shape': (1, 3), }",
                &data,
            ),
        )
        .unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![7, 8, 9]);
    }

    /// An .npy file with this header text and data.
    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn err(bytes: &[u8]) -> String {
        match parse_npy("t", bytes) {
            Ok(t) => panic!("accepted: {t:?}"),
            Err(e) => {
                assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn header_forms_numpy_writes_are_read() {
        for h in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }          \n",
            "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2L,)}",
            "{'shape': (2,), 'fortran_order': True, 'descr': '<f4'}",
            "{'descr':'<f4','fortran_order':False,'shape':(1, 2)}",
        ] {
            let t = parse_npy("t", &npy(h, &[0; 8])).unwrap_or_else(|e| panic!("{h}: {e}"));
            assert_eq!(t.numel().unwrap(), 2, "{h}");
        }
        let b = parse_npy(
            "b",
            &npy(
                "{'descr': '|b1', 'fortran_order': False, 'shape': (3,)}",
                &[0, 1, 1],
            ),
        )
        .unwrap();
        assert_eq!(b.to_i64_vec().unwrap(), vec![0, 1, 1]);
    }

    #[test]
    fn hostile_headers_are_refused_with_a_reason() {
        let f4 =
            |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}}}");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "magic"),
            (b"\x93NUMPX\x01\x00".to_vec(), "magic"),
            (b"\x93NUMPY".to_vec(), "version"),
            (b"\x93NUMPY\x01\x00\x10".to_vec(), "header length"),
            (b"\x93NUMPY\x09\x00\x10\x00".to_vec(), "version 9.0"),
            (b"\x93NUMPY\x01\x00\xff\xff{}".to_vec(), "truncated"),
            (
                npy(
                    "{'descr': '\u{e9}4', 'fortran_order': False, 'shape': (1,)}",
                    &[0; 4],
                ),
                "not ASCII",
            ),
            (
                npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
                    &[0; 4],
                ),
                "header ends",
            ),
            (npy("descr=<f4 shape=(1,)", &[0; 4]), "expected '{'"),
            (
                npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
                    &[0; 4],
                ),
                "end of the header",
            ),
            (
                npy(
                    "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
                    &[0; 4],
                ),
                "twice",
            ),
            (
                npy("{'descr': '<f4', 'fortran_order': False}", &[0; 4]),
                "no 'shape'",
            ),
            (
                npy(
                    "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
                    &[0; 4],
                ),
                "expected a string",
            ),
            (
                npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 'y'}",
                    &[0; 4],
                ),
                "unexpected key",
            ),
            (
                npy(
                    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                    &[0; 4],
                ),
                "structured",
            ),
            (
                npy(
                    "{'descr': '|O', 'fortran_order': False, 'shape': (1,)}",
                    &[0; 8],
                ),
                "object array",
            ),
            (
                npy(
                    "{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}",
                    &[0; 8],
                ),
                "unsupported dtype",
            ),
            (
                npy(
                    "{'descr': '', 'fortran_order': False, 'shape': (1,)}",
                    &[0; 8],
                ),
                "unsupported dtype",
            ),
            (
                npy(
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (1,)}",
                    &[0; 4],
                ),
                "little-endian",
            ),
            (npy(&f4("(-1,)"), &[0; 4]), "negative dimension"),
            (npy(&f4("(2, -2)"), &[0; 16]), "negative dimension"),
            (npy(&f4("(99999999999999999999,)"), &[0; 4]), "64 bits"),
            (npy(&f4("(4294967296, 4294967296)"), &[0; 4]), "overflows"),
            (npy(&f4("(1000000, 1000000)"), &[0; 4]), "truncated"),
            (npy(&f4("(2,)"), &[0; 7]), "truncated"),
            (npy(&f4("(2,)"), &[0; 9]), "trailing bytes"),
            (npy(&f4("(2,"), &[0; 8]), "an integer"),
            (npy(&f4("(a,)"), &[0; 8]), "an integer"),
            (
                npy(
                    "{'descr': '|b1', 'fortran_order': False, 'shape': (2,)}",
                    &[1, 2],
                ),
                "bool element 1",
            ),
            (
                npy(
                    "{'descr': '<f4\\x', 'fortran_order': False, 'shape': (1,)}",
                    &[0; 4],
                ),
                "escape",
            ),
        ];
        for (bytes, needle) in cases {
            let msg = err(&bytes);
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        }
    }

    #[test]
    fn non_ascii_descr_in_a_version_3_header_is_refused_not_sliced() {
        // Format 3.0 allows UTF-8 headers: a multi-byte first character used to panic in split_at(1).
        for descr in ["\u{e9}", "\u{e9}f4", "<\u{1F600}", "\u{1F600}"] {
            let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,)}}");
            let mut b = b"\x93NUMPY\x03\x00".to_vec();
            b.extend_from_slice(&(h.len() as u32).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(&[0; 4]);
            let msg = err(&b);
            assert!(msg.contains("unsupported dtype"), "{msg}");
        }
    }
}
