//! Minimal `.npy` reading and writing (format versions 1-3, little-endian, C order) to and from IR tensors.

use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ir::{DataType, Tensor};

fn descr_dtype(descr: &str) -> Option<DataType> {
    let (order, code) = descr.split_at(1.min(descr.len()));
    if !matches!(order, "<" | "|" | "=") {
        return None;
    }
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

/// The value text after `'key':` in a numpy header dict.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}'");
    let at = header.find(&pat)? + pat.len();
    let rest = header[at..].trim_start();
    Some(rest.strip_prefix(':')?.trim_start())
}

/// Parse an `.npy` file's bytes into a tensor named `name`.
pub fn parse_npy(name: &str, bytes: &[u8], at: &str) -> Result<Tensor> {
    let bad = |msg: String| Error::Validate(format!("{at}: {msg}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file (bad magic)".into()));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text".into()))?;
    let descr = header_field(header, "descr")
        .and_then(|r| {
            let q = r.chars().next()?;
            let r = &r[1..];
            r.find(q).map(|e| &r[..e])
        })
        .ok_or_else(|| bad("header has no descr".into()))?;
    let dtype = descr_dtype(descr).ok_or_else(|| {
        bad(format!(
            "unsupported dtype '{descr}' (need little-endian numbers)"
        ))
    })?;
    let fortran = header_field(header, "fortran_order")
        .map(|r| r.starts_with("True"))
        .unwrap_or(false);
    if fortran {
        return Err(bad(
            "fortran_order arrays are not supported (save with C order)".into(),
        ));
    }
    let shape_text = header_field(header, "shape")
        .and_then(|r| {
            let r = r.strip_prefix('(')?;
            r.find(')').map(|e| &r[..e])
        })
        .ok_or_else(|| bad("header has no shape".into()))?;
    let dims: Vec<i64> = shape_text
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<i64>()
                .map_err(|_| bad(format!("bad shape '{shape_text}'")))
        })
        .collect::<Result<_>>()?;
    let data = &bytes[start + hlen..];
    let numel = crate::ir::tensor::numel(&dims).ok_or_else(|| bad("bad shape".into()))?;
    let want = dtype.byte_len(numel).unwrap_or(u64::MAX);
    if data.len() as u64 != want {
        return Err(bad(format!(
            "data is {} bytes but {} x {:?} needs {want}",
            data.len(),
            dtype.name(),
            dims
        )));
    }
    Ok(Tensor::from_raw(
        name,
        dtype,
        dims,
        Bytes::copy_from_slice(data),
    ))
}

pub fn read_npy(path: &Path, name: &str) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(name, &bytes, &path.display().to_string())
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
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
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
        let back = parse_npy("x", &b, "mem").unwrap();
        assert!(back.same_content(&t));
        let s = Tensor::from_i64("s", vec![], &[7]);
        let back = parse_npy("s", &to_npy(&s).unwrap(), "mem").unwrap();
        assert!(back.same_content(&s));
    }
}
