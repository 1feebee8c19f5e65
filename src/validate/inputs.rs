//! Inputs for a validation run: seeded random tensors that respect each input's dtype and range, or tensors read
//! from `.npy` / ONNX `TensorProto` `.pb` files or a folder of samples.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::{AttrList, DataType, DimValue, Graph, Model, Tensor, TensorData, ValueId};
use crate::validate::{npy, ValidateOptions};

/// One set of input tensors (one per runtime input of the model), in the model's input order.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Where the sample came from: `random #k` or a file / folder path.
    pub origin: String,
    pub tensors: Vec<(String, Tensor)>,
}

impl Sample {
    /// Write each tensor as `<dir>/<input name>.npy` (names are sanitised: `/` and `:` become `_`).
    pub fn write_npy(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut out = Vec::new();
        for (name, t) in &self.tensors {
            let p = dir.join(format!("{}.npy", sanitize(name)));
            npy::write_npy(&p, t)?;
            out.push(p);
        }
        Ok(out)
    }
}

pub(crate) fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How one input is filled.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// `uniform[-1,1)`, `ints[0,30522) (Gather table 'embeddings.word')`, `file ...`.
    pub source: String,
}

/// A small, stable PRNG (splitmix64): the same seed gives the same inputs on every platform and version.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [lo, hi).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        // In 128 bits: hi - lo may not fit in an i64 (e.g. [i64::MIN, i64::MAX)).
        let span = (hi as i128 - lo as i128).max(1) as u128;
        (lo as i128 + (self.next_u64() as u128 % span) as i128) as i64
    }
}

fn fnv(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x1000_0000_01b3);
    }
    h
}

/// The declared dtype and the concrete shape of every runtime input, symbolic dims resolved from `opts.dims`
/// (default `opts.default_dim`, which defaults to 1).
pub(crate) fn declared_inputs(model: &Model, opts: &ValidateOptions) -> Result<Vec<Decl>> {
    let g = &model.graph;
    let mut out = Vec::new();
    for io in g.runtime_inputs() {
        let name = g.value_name(io.value).to_string();
        let (dt, shape) = io
            .info
            .ty
            .as_ref()
            .and_then(|t| t.as_tensor())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "input '{name}' is not a tensor with a declared type; give its values in a file"
                ))
            })?;
        let shape = shape.ok_or_else(|| {
            Error::Usage(format!(
                "input '{name}' has no declared shape (rank unknown); give its values in a file"
            ))
        })?;
        let mut fixed = Vec::new();
        let mut resolved = Vec::new();
        for d in &shape.0 {
            let v = match &d.value {
                DimValue::Fixed(v) if *v >= 0 => {
                    fixed.push(Some(*v as usize));
                    *v
                }
                DimValue::Param(p) => {
                    fixed.push(None);
                    *opts.dims.get(p).unwrap_or(&opts.default_dim)
                }
                _ => {
                    fixed.push(None);
                    let key = crate::validate::dims::unnamed_key(&name, fixed.len() - 1);
                    *opts.dims.get(&key).unwrap_or(&opts.default_dim)
                }
            };
            if v < 0 {
                return Err(Error::Usage(format!(
                    "input '{name}': dimension value {v} is negative"
                )));
            }
            resolved.push(v as usize);
        }
        out.push((name, dt, fixed, resolved));
    }
    Ok(out)
}

/// When integer input `v` indexes a constant table through `Gather` (maybe after Cast/Unsqueeze/Reshape/
/// Squeeze/Flatten/Identity), the number of rows of the smallest such table.
pub(crate) fn gather_table_rows(g: &Graph, v: ValueId) -> Option<(i64, String)> {
    let mut best: Option<(i64, String)> = None;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        for n in g.consumers(v) {
            let Some(node) = g.node(n) else { continue };
            if node.op.is("Gather") && node.input(1) == Some(v) {
                let Some(table_v) = node.input(0) else {
                    continue;
                };
                let Some(table) = g.constant(table_v) else {
                    continue;
                };
                let rank = table.dims.len() as i64;
                let mut axis = node.get_int("axis").ok().flatten().unwrap_or(0);
                if axis < 0 {
                    axis += rank;
                }
                if let Some(&rows) = table.dims.get(axis as usize) {
                    if best.as_ref().is_none_or(|(r, _)| rows < *r) {
                        best = Some((rows, g.value_name(table_v).to_string()));
                    }
                }
            } else if depth < 4
                && [
                    "Cast",
                    "Unsqueeze",
                    "Reshape",
                    "Squeeze",
                    "Flatten",
                    "Identity",
                ]
                .iter()
                .any(|op| node.op.is(op))
            {
                if let Some(o) = node.output(0) {
                    stack.push((o, depth + 1));
                }
            }
        }
    }
    best
}

/// Largest random input generated (1 GiB): a model declaring a larger input is refused with a hint instead
/// of exhausting memory.
const MAX_RANDOM_INPUT_BYTES: u64 = 1 << 30;

fn random_tensor(
    name: &str,
    dt: DataType,
    shape: &[usize],
    rng: &mut Rng,
    int_range: (i64, i64),
    float_range: (f64, f64),
) -> Result<Tensor> {
    let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
    // The shape comes from the model (and --dim): refuse one whose size overflows or passes the limit
    // before allocating anything.
    let bytes = crate::ir::tensor::numel(&dims).and_then(|n| dt.byte_len(n));
    let (n, nbytes) = match bytes {
        Some(b) if b <= MAX_RANDOM_INPUT_BYTES => (
            crate::ir::tensor::numel(&dims).unwrap_or(0) as usize,
            b as usize,
        ),
        _ => {
            return Err(Error::Usage(format!(
                "input '{name}': shape {shape:?} of {} needs {} bytes, more than the {} MiB limit for a \
                 generated input; set smaller symbolic dims with --dim NAME=VALUE / --default-dim, or give the \
                 values in a file",
                dt.name(),
                bytes.map(|b| b.to_string()).unwrap_or("more than 2^64".into()),
                MAX_RANDOM_INPUT_BYTES >> 20
            )))
        }
    };
    let (lo, hi) = float_range;
    let f = |rng: &mut Rng| lo + (hi - lo) * rng.next_f64();
    let ints = |rng: &mut Rng| rng.range(int_range.0, int_range.1);
    let mut raw: Vec<u8> = Vec::with_capacity(nbytes);
    match dt {
        DataType::FLOAT => (0..n).for_each(|_| raw.extend((f(rng) as f32).to_le_bytes())),
        DataType::DOUBLE => (0..n).for_each(|_| raw.extend(f(rng).to_le_bytes())),
        DataType::FLOAT16 => {
            (0..n).for_each(|_| raw.extend(f32_to_f16(f(rng) as f32).to_le_bytes()))
        }
        DataType::INT64 => (0..n).for_each(|_| raw.extend(ints(rng).to_le_bytes())),
        DataType::INT32 => (0..n).for_each(|_| raw.extend((ints(rng) as i32).to_le_bytes())),
        DataType::UINT32 => (0..n).for_each(|_| raw.extend((ints(rng) as u32).to_le_bytes())),
        DataType::UINT64 => (0..n).for_each(|_| raw.extend((ints(rng) as u64).to_le_bytes())),
        DataType::INT16 => (0..n).for_each(|_| raw.extend((ints(rng) as i16).to_le_bytes())),
        DataType::UINT16 => (0..n).for_each(|_| raw.extend((ints(rng) as u16).to_le_bytes())),
        DataType::INT8 => (0..n).for_each(|_| raw.push(ints(rng) as i8 as u8)),
        DataType::UINT8 => (0..n).for_each(|_| raw.push(ints(rng) as u8)),
        DataType::BOOL => (0..n).for_each(|_| raw.push((rng.next_u64() & 1) as u8)),
        other => {
            return Err(Error::Usage(format!(
                "input '{name}': cannot generate random {} values; give them in a file",
                other.name()
            )))
        }
    }
    Ok(Tensor::from_raw(name, dt, dims, Bytes::from(raw)))
}

/// Round to nearest, ties to even; subnormals kept (through `half`). The caller's f64 -> f32 -> f16 double
/// rounding is innocuous: f32's 24-bit significand is at least 2 * 11 + 2 bits (Figueroa's condition).
fn f32_to_f16(x: f32) -> u16 {
    crate::ir::tensor::f32_to_f16(x)
}

/// The inputs the comparison feeds both models, with a description of each. Random inputs are generated from
/// the reference's declared inputs; integer inputs that index a Gather table (in either model) stay below the
/// smaller table's row count.
pub fn prepare_samples(
    reference: &Model,
    candidate: Option<&Model>,
    opts: &ValidateOptions,
) -> Result<(Vec<InputSpec>, Vec<Sample>)> {
    if let Some((lo, hi)) = opts.int_range {
        if lo >= hi {
            return Err(Error::Usage(format!(
                "int_range [{lo}, {hi}) is empty: LO must be below HI"
            )));
        }
    }
    let (flo, fhi) = opts.float_range;
    if !(flo.is_finite() && fhi.is_finite() && flo <= fhi) {
        return Err(Error::Usage(format!(
            "float_range [{flo}, {fhi}) must be finite with LO <= HI"
        )));
    }
    let decl = declared_inputs(reference, opts)?;
    if let Some(c) = candidate {
        let cdecl = declared_inputs(c, opts)?;
        let rn: Vec<&str> = decl.iter().map(|d| d.0.as_str()).collect();
        let cn: Vec<&str> = cdecl.iter().map(|d| d.0.as_str()).collect();
        let mut rs = rn.clone();
        rs.sort();
        let mut cs = cn.clone();
        cs.sort();
        if rs != cs {
            return Err(Error::Usage(format!(
                "the models take different inputs: reference {rn:?}, candidate {cn:?}"
            )));
        }
        for (n, dt, ..) in &decl {
            let Some((_, cdt, ..)) = cdecl.iter().find(|d| &d.0 == n) else {
                continue;
            };
            if dt != cdt {
                return Err(Error::Usage(format!(
                    "input '{n}' is {} in the reference but {} in the candidate",
                    dt.name(),
                    cdt.name()
                )));
            }
        }
    }
    if !opts.inputs.is_empty() {
        return load_samples(&decl, &opts.inputs);
    }
    if let Some(chosen) = crate::validate::dims::choose(reference, opts)? {
        let with = ValidateOptions {
            dims: chosen.dims,
            auto_dims: false,
            ..opts.clone()
        };
        let (mut specs, samples) = prepare_samples(reference, candidate, &with)?;
        for s in &mut specs {
            if let Some(text) = chosen.said.get(&s.name) {
                s.source = format!("{}; {text}", s.source);
            }
        }
        return Ok((specs, samples));
    }
    let mut specs = Vec::new();
    let mut plans = Vec::new();
    for (name, dt, _, shape) in &decl {
        let mut int_range = opts.int_range.unwrap_or((0, 2));
        let mut desc = None;
        if !dt.is_float() && *dt != DataType::BOOL {
            let mut tables: Vec<(i64, String)> = Vec::new();
            for m in std::iter::once(reference).chain(candidate) {
                if let Some(v) = m.graph.value_by_name(name) {
                    if let Some(t) = gather_table_rows(&m.graph, v) {
                        tables.push(t);
                    }
                }
            }
            if let Some((rows, table)) = tables.into_iter().min_by_key(|t| t.0) {
                if rows <= 0 {
                    return Err(Error::Usage(format!(
                        "input '{name}' indexes Gather table '{table}', which has no rows along the gathered \
                         axis: no index value is valid, so no input can be generated"
                    )));
                }
                int_range = (0, rows);
                desc = Some(format!("ints[0,{rows}) (rows of Gather table '{table}')"));
            } else if opts.int_range.is_none() {
                desc = Some(format!(
                    "ints[{},{}) (default range; set int_range)",
                    int_range.0, int_range.1
                ));
            } else {
                desc = Some(format!("ints[{},{})", int_range.0, int_range.1));
            }
        }
        let (flo, fhi) = opts.float_range;
        let desc = match (*dt, desc) {
            (DataType::BOOL, _) => "bool (fair coin)".to_string(),
            (_, Some(d)) => d,
            _ => format!("uniform[{flo},{fhi})"),
        };
        specs.push(InputSpec {
            name: name.clone(),
            dtype: dt.name().into_owned(),
            shape: shape.clone(),
            source: format!("{desc}, seed {}", opts.seed),
        });
        plans.push((name.clone(), *dt, shape.clone(), int_range));
    }
    let mut samples = Vec::new();
    for k in 0..opts.samples.max(1) {
        let mut tensors = Vec::new();
        for (name, dt, shape, int_range) in &plans {
            let mut rng =
                Rng::new(opts.seed ^ fnv(name) ^ (k as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            tensors.push((
                name.clone(),
                random_tensor(name, *dt, shape, &mut rng, *int_range, opts.float_range)?,
            ));
        }
        samples.push(Sample {
            origin: format!("random #{k}"),
            tensors,
        });
    }
    Ok((specs, samples))
}

/// Check a decoded tensor can be fed as an input: a dtype tract takes, and every value valid for its dtype
/// (bools 0 or 1; 8/16-bit values stored widened in `int32_data` within their range). Returns it with packed
/// little-endian raw data. Errors are `Error::Invalid` without a file.
fn input_tensor(t: Tensor) -> Result<Tensor> {
    let dt = t.dtype();
    let at = format!("tensor '{}'", t.name());
    if crate::validate::run::datum_type(dt).is_none() {
        return Err(Error::invalid(
            at,
            format!(
                "holds {} values; input files must hold numbers (f16/f32/f64, 8-64 bit ints) or bools",
                dt.name()
            ),
        ));
    }
    let range: Option<(i64, i64)> = match dt {
        DataType::BOOL => Some((0, 1)),
        DataType::INT8 => Some((i8::MIN as i64, i8::MAX as i64)),
        DataType::UINT8 => Some((0, u8::MAX as i64)),
        DataType::INT16 => Some((i16::MIN as i64, i16::MAX as i64)),
        DataType::UINT16 | DataType::FLOAT16 => Some((0, u16::MAX as i64)),
        _ => None,
    };
    match (&t.data, range) {
        (TensorData::Int32(v), Some((lo, hi))) => {
            if let Some(i) = v.iter().position(|x| !(lo..=hi).contains(&(*x as i64))) {
                return Err(Error::invalid(
                    at,
                    format!(
                        "int32_data element {i} is {}, outside the range of {} [{lo}, {hi}]",
                        v[i],
                        dt.name()
                    ),
                ));
            }
        }
        (TensorData::Uint64(v), _) if dt == DataType::UINT32 => {
            if let Some(i) = v.iter().position(|x| *x > u32::MAX as u64) {
                return Err(Error::invalid(
                    at,
                    format!("uint64_data element {i} is {}, outside u32", v[i]),
                ));
            }
        }
        _ => {}
    }
    let raw = t.raw_bytes()?;
    // `check` counted the values, not that the field suits the dtype (e.g. int64_data for a bool tensor packs
    // 8 bytes per value): the packed length must be exactly what dtype x dims need.
    let want = dt.byte_len(t.numel()?);
    if want != Some(raw.len() as u64) {
        return Err(Error::invalid(
            at,
            format!(
                "its data field does not hold {} values ({} bytes packed, {} x {:?} needs {})",
                dt.name(),
                raw.len(),
                dt.name(),
                t.dims,
                want.map(|w| w.to_string()).unwrap_or("?".into())
            ),
        ));
    }
    if dt == DataType::BOOL {
        if let Some(i) = raw.iter().position(|b| *b > 1) {
            return Err(Error::invalid(
                at,
                format!("bool element {i} is {} (a bool is 0 or 1)", raw[i]),
            ));
        }
    }
    let name = t.name().to_string();
    Ok(Tensor::from_raw(name, dt, t.dims, raw))
}

/// Decode the bytes of a `.pb` tensor file (one ONNX `TensorProto`) into its name (when it has one) and a
/// tensor with packed raw data, checked as `read_tensor_file` does. Errors are `Error::Invalid` without a file.
pub fn parse_tensor_pb(bytes: &[u8]) -> Result<(Option<String>, Tensor)> {
    let t = crate::io::load_tensor_bytes(Bytes::copy_from_slice(bytes))?;
    let name = t.name.clone().filter(|n| !n.is_empty());
    Ok((name, input_tensor(t)?))
}

/// Read one tensor file (`.npy`, or `.pb` holding an ONNX TensorProto). A malformed file is `Error::Invalid`
/// naming it (exit code 3); a path that is not a `.npy` / `.pb` file is `Error::Usage` (exit code 2).
pub fn read_tensor_file(path: &Path) -> Result<(Option<String>, Tensor)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "npy" | "pb") {
        return Err(Error::Usage(format!(
            "{}: input files must be .npy or .pb (ONNX TensorProto)",
            path.display()
        )));
    }
    let meta = std::fs::metadata(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::Usage(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if ext == "npy" {
        let t = npy::read_npy(path, &stem)?;
        return Ok((None, t));
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tensor_pb(&bytes).map_err(|e| e.in_file(path))
}

/// The entries of a folder, sorted; hidden entries (`.name`) are skipped.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

fn is_tensor_file(p: &Path) -> bool {
    !p.is_dir() && matches!(p.extension().and_then(|e| e.to_str()), Some("npy" | "pb"))
}

type Decl = (String, DataType, Vec<Option<usize>>, Vec<usize>);

/// The groups of files that make samples: (origin, files).
fn sample_groups(paths: &[PathBuf]) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if paths.len() == 1 && paths[0].is_dir() {
        let dir = &paths[0];
        let entries = list_dir(dir)?;
        let subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        let files: Vec<PathBuf> = entries
            .iter()
            .filter(|p| is_tensor_file(p))
            .cloned()
            .collect();
        if subdirs.is_empty() {
            if files.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: the folder holds no .npy or .pb files (give one file per input, or one sub-folder \
                     of files per sample)",
                    dir.display()
                )));
            }
            return Ok(vec![(dir.display().to_string(), files)]);
        }
        if let Some(f) = files.first() {
            return Err(Error::Usage(format!(
                "{}: the folder holds both sample sub-folders and tensor files ({}); put every sample's files \
                 in its own sub-folder",
                dir.display(),
                f.display()
            )));
        }
        let mut groups = Vec::new();
        for d in subdirs {
            let files: Vec<PathBuf> = list_dir(d)?
                .into_iter()
                .filter(|p| is_tensor_file(p))
                .collect();
            if files.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: the sample folder holds no .npy or .pb files",
                    d.display()
                )));
            }
            groups.push((d.display().to_string(), files));
        }
        return Ok(groups);
    }
    if let Some(d) = paths.iter().find(|p| p.is_dir()) {
        return Err(Error::Usage(format!(
            "{}: a folder of samples must be the only --input (got {} paths)",
            d.display(),
            paths.len()
        )));
    }
    let origin = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    Ok(vec![(origin, paths.to_vec())])
}

fn stem(p: &Path) -> Option<&str> {
    p.file_stem().and_then(|s| s.to_str())
}

/// Files -> samples. One folder holding sub-folders: one sample per sub-folder (sorted). One folder of tensor
/// files: one sample. Otherwise the files given make one sample. Within a sample a file is matched to an input
/// by its stem (sanitised input name), by the TensorProto name (.pb), by `input_K` (K-th input) or, when the
/// counts agree, by sorted position. A malformed file is `Error::Invalid` naming it; a file that does not fit
/// the model (dtype, shape, matches no input, an input without a file) is `Error::Usage` naming it.
fn load_samples(decl: &[Decl], paths: &[PathBuf]) -> Result<(Vec<InputSpec>, Vec<Sample>)> {
    let names: Vec<&str> = decl.iter().map(|d| d.0.as_str()).collect();
    let mut samples = Vec::new();
    for (origin, files) in sample_groups(paths)? {
        let mut read: Vec<(PathBuf, Option<String>, Tensor)> = Vec::new();
        for f in &files {
            let (n, t) = read_tensor_file(f)?;
            read.push((f.clone(), n, t));
        }
        let mut assigned: Vec<Option<usize>> = vec![None; decl.len()];
        let mut used = vec![false; read.len()];
        for (i, d) in decl.iter().enumerate() {
            let found = read.iter().enumerate().position(|(j, (p, n, _))| {
                !used[j] && (n.as_deref() == Some(d.0.as_str()) || stem(p) == Some(&sanitize(&d.0)))
            });
            if let Some(j) = found {
                assigned[i] = Some(j);
                used[j] = true;
            }
        }
        for (i, slot) in assigned.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let want = format!("input_{i}");
            if let Some(j) = read
                .iter()
                .enumerate()
                .position(|(j, (p, _, _))| !used[j] && stem(p) == Some(want.as_str()))
            {
                *slot = Some(j);
                used[j] = true;
            }
        }
        if assigned.iter().any(|a| a.is_none()) && read.len() == decl.len() {
            let mut free = (0..read.len())
                .filter(|j| !used[*j])
                .collect::<Vec<_>>()
                .into_iter();
            for slot in assigned.iter_mut().filter(|a| a.is_none()) {
                *slot = free.next();
                if let Some(j) = *slot {
                    used[j] = true;
                }
            }
        }
        if let Some(j) = used.iter().position(|u| !u) {
            return Err(Error::Usage(format!(
                "{}: matches no input of the model (inputs: {names:?}; {} files for {} inputs; name files \
                 <input>.npy or input_K.npy)",
                read[j].0.display(),
                read.len(),
                decl.len()
            )));
        }
        let mut tensors = Vec::new();
        for (i, d) in decl.iter().enumerate() {
            let j = assigned[i].ok_or_else(|| {
                Error::Usage(format!(
                    "{origin}: no file for input '{}' ({} files for {} inputs; name files <input>.npy, \
                     input_{i}.npy or input_{i}.pb)",
                    d.0,
                    read.len(),
                    decl.len()
                ))
            })?;
            let (p, _, t) = &read[j];
            if t.dtype() != d.1 {
                return Err(Error::Usage(format!(
                    "{}: holds {} but input '{}' is {}",
                    p.display(),
                    t.dtype().name(),
                    d.0,
                    d.1.name()
                )));
            }
            let ok_rank = t.dims.len() == d.2.len();
            let ok_dims = ok_rank
                && d.2
                    .iter()
                    .zip(&t.dims)
                    .all(|(f, v)| f.is_none_or(|f| f as i64 == *v));
            if !ok_dims {
                return Err(Error::Usage(format!(
                    "{}: shape {:?} does not fit input '{}' declared {:?}",
                    p.display(),
                    t.dims,
                    d.0,
                    d.2.iter()
                        .map(|f| f.map(|v| v.to_string()).unwrap_or("?".into()))
                        .collect::<Vec<_>>()
                )));
            }
            let mut t = t.clone();
            t.name = Some(d.0.clone());
            tensors.push((d.0.clone(), t));
        }
        samples.push(Sample { origin, tensors });
    }
    let first = samples
        .first()
        .ok_or_else(|| Error::Usage("no input samples found".into()))?;
    let specs = first
        .tensors
        .iter()
        .map(|(n, t)| InputSpec {
            name: n.clone(),
            dtype: t.dtype().name().into_owned(),
            shape: t.dims.iter().map(|d| *d as usize).collect(),
            source: if samples.len() == 1 {
                format!("from {}", first.origin)
            } else {
                format!(
                    "from files, {} samples (first: {})",
                    samples.len(),
                    first.origin
                )
            },
        })
        .collect();
    Ok((specs, samples))
}

/// Class labels read from an `.npy` file: one non-negative integer per row of the classifier output.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub path: PathBuf,
    pub values: Vec<i64>,
}

/// Integer labels from an `.npy` file (any integer dtype; shape [N] or [N, 1]), for accuracy. A malformed file
/// is `Error::Invalid`; labels that are not integers, not one per row or negative are `Error::Usage`; both
/// name the file. Whether they match the classifier's rows and classes is checked when accuracy is computed.
pub fn read_labels(path: &Path) -> Result<Labels> {
    let t = npy::read_npy(path, "labels")?;
    let usage = |msg: String| Error::Usage(format!("{}: {msg}", path.display()));
    let dims = &t.dims;
    if !(dims.len() == 1 || (dims.len() == 2 && dims[1] == 1)) {
        return Err(usage(format!(
            "labels must have shape [N] or [N, 1], one per row; this file is {dims:?}"
        )));
    }
    let raw = t.raw_bytes()?;
    let le = |n: usize| raw.chunks_exact(n);
    let values: Vec<i64> = match t.dtype() {
        DataType::INT8 => raw.iter().map(|b| *b as i8 as i64).collect(),
        DataType::UINT8 => raw.iter().map(|b| *b as i64).collect(),
        DataType::INT16 => le(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        DataType::UINT16 => le(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        DataType::INT32 => le(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        DataType::UINT32 => le(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        DataType::INT64 => le(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b)
            })
            .collect(),
        DataType::UINT64 => {
            let mut v = Vec::with_capacity(raw.len() / 8);
            for (i, c) in le(8).enumerate() {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                let x = u64::from_le_bytes(b);
                v.push(
                    i64::try_from(x)
                        .map_err(|_| usage(format!("label {i} is {x}, past any class index")))?,
                );
            }
            v
        }
        dt => {
            return Err(usage(format!(
                "labels must be integers (class indices); this file holds {}",
                dt.name()
            )))
        }
    };
    if let Some(i) = values.iter().position(|v| *v < 0) {
        return Err(usage(format!(
            "label {i} is {} (labels are class indices, 0 or more)",
            values[i]
        )));
    }
    Ok(Labels {
        path: path.to_path_buf(),
        values,
    })
}
