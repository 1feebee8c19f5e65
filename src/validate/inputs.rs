//! Inputs for a validation run: seeded random tensors that respect each input's dtype and range, or tensors read
//! from `.npy` / ONNX `TensorProto` `.pb` files or a folder of samples.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::{AttrList, DataType, DimValue, Graph, Model, Tensor, ValueId};
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
        let span = (hi - lo).max(1) as u64;
        lo + (self.next_u64() % span) as i64
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
                Error::Validate(format!(
                    "input '{name}' is not a tensor with a declared type; give its values in a file"
                ))
            })?;
        let shape = shape.ok_or_else(|| {
            Error::Validate(format!(
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
                    opts.default_dim
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

fn random_tensor(
    name: &str,
    dt: DataType,
    shape: &[usize],
    rng: &mut Rng,
    int_range: (i64, i64),
    float_range: (f64, f64),
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
    let (lo, hi) = float_range;
    let f = |rng: &mut Rng| lo + (hi - lo) * rng.next_f64();
    let ints = |rng: &mut Rng| rng.range(int_range.0, int_range.1);
    let mut raw: Vec<u8> = Vec::with_capacity(n * 8);
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
            return Err(Error::Validate(format!(
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
            return Err(Error::Validate(format!(
                "the models take different inputs: reference {rn:?}, candidate {cn:?}"
            )));
        }
        for (n, dt, ..) in &decl {
            let (_, cdt, ..) = cdecl.iter().find(|d| &d.0 == n).unwrap();
            if dt != cdt {
                return Err(Error::Validate(format!(
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
                int_range = (0, rows.max(1));
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

/// Read one tensor file (`.npy`, or `.pb` holding an ONNX TensorProto).
pub fn read_tensor_file(path: &Path) -> Result<(Option<String>, Tensor)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    match ext {
        "npy" => Ok((None, npy::read_npy(path, &stem)?)),
        "pb" => {
            let bytes = std::fs::read(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let (name, t) = crate::validate::run::tensor_from_pb(&bytes)
                .map_err(|e| Error::Validate(format!("{}: {e}", path.display())))?;
            let name = (!name.is_empty()).then_some(name);
            Ok((name, t))
        }
        _ => Err(Error::Usage(format!(
            "{}: input files must be .npy or .pb (ONNX TensorProto)",
            path.display()
        ))),
    }
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

type Decl = (String, DataType, Vec<Option<usize>>, Vec<usize>);

/// Files -> samples. One folder holding sub-folders: one sample per sub-folder (sorted). One folder of tensor
/// files: one sample. Otherwise the files given make one sample. Within a sample a file is matched to an input
/// by its stem (sanitised input name), by the TensorProto name (.pb), by `input_K` (K-th input) or, when the
/// counts agree, by sorted position.
fn load_samples(decl: &[Decl], paths: &[PathBuf]) -> Result<(Vec<InputSpec>, Vec<Sample>)> {
    let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
    if paths.len() == 1 && paths[0].is_dir() {
        let entries = list_dir(&paths[0])?;
        let subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        if subdirs.is_empty() {
            groups.push((paths[0].display().to_string(), entries));
        } else {
            for d in subdirs {
                groups.push((d.display().to_string(), list_dir(d)?));
            }
        }
    } else {
        groups.push((
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            paths.to_vec(),
        ));
    }
    let mut samples = Vec::new();
    for (origin, files) in groups {
        let files: Vec<PathBuf> = files
            .into_iter()
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("npy") | Some("pb")
                )
            })
            .collect();
        let mut read: Vec<(PathBuf, Option<String>, Tensor)> = Vec::new();
        for f in &files {
            let (n, t) = read_tensor_file(f)?;
            read.push((f.clone(), n, t));
        }
        let mut assigned: Vec<Option<usize>> = vec![None; decl.len()];
        let mut used = vec![false; read.len()];
        for (i, d) in decl.iter().enumerate() {
            let found = read.iter().enumerate().position(|(j, (p, n, _))| {
                !used[j]
                    && (n.as_deref() == Some(d.0.as_str())
                        || p.file_stem().and_then(|s| s.to_str()) == Some(&sanitize(&d.0)))
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
            if let Some(j) = read.iter().enumerate().position(|(j, (p, _, _))| {
                !used[j] && p.file_stem().and_then(|s| s.to_str()) == Some(&want)
            }) {
                *slot = Some(j);
                used[j] = true;
            }
        }
        if assigned.iter().any(|a| a.is_none()) && read.len() == decl.len() {
            let mut free = (0..read.len()).filter(|j| !used[*j]);
            for slot in assigned.iter_mut().filter(|a| a.is_none()) {
                *slot = free.next();
            }
        }
        let mut tensors = Vec::new();
        for (i, d) in decl.iter().enumerate() {
            let j = assigned[i].ok_or_else(|| {
                Error::Validate(format!(
                    "{origin}: no file for input '{}' (name files <input>.npy, input_{i}.npy or input_{i}.pb)",
                    d.0
                ))
            })?;
            let (p, _, t) = &read[j];
            if t.dtype() != d.1 {
                return Err(Error::Validate(format!(
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
                return Err(Error::Validate(format!(
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
        .ok_or_else(|| Error::Validate("no input samples found".into()))?;
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

/// Integer labels from an `.npy` file (any integer dtype), for accuracy.
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    let t = npy::read_npy(path, "labels")?;
    t.to_i64_vec()
        .map_err(|_| Error::Validate(format!("{}: labels must be integers", path.display())))
}
