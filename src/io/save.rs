//! Saving: where tensor data goes (`DataPlan`), streaming the protobuf straight to a temp file, and the atomic
//! rename. The input model and its external data files are never written.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes};
use prost::Message;

use crate::error::{Error, Result};
use crate::io::export::{Exporter, Placed};
use crate::io::external::{check_location, ExternalFile};
use crate::ir::tensor::ExternalRef;
use crate::ir::{DataType, Model, Tensor, TensorData};
use crate::pb;

/// Protobuf cannot encode a message past 2 GiB.
pub const PROTOBUF_LIMIT: u64 = i32::MAX as u64;

/// What to do with tensor data when saving.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ExternalMode {
    /// Inline tensors stay inline, external ones stay external. Per data file: when the live tensors are exactly
    /// the ones the input model read from it, the file is reproduced byte for byte (or left in place when the
    /// output sits beside the input); when tensors were removed or replaced, the file is packed: the live
    /// tensors back to back in their original order, each at a multiple of 64 bytes, nothing else. The input's
    /// data files are never written: a file that would land on one gets the name `<output stem>.data`.
    #[default]
    Keep,
    /// Everything inline (fails past the 2 GiB protobuf limit).
    Inline,
    /// Main-graph initializers of at least `min_bytes` go to one external file `location` (default
    /// `<model stem>.data`), packed like `Keep` does; everything else inline.
    Threshold {
        min_bytes: u64,
        location: Option<String>,
    },
}

#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    pub external: ExternalMode,
}

/// What a save wrote.
#[derive(Clone, Debug, Default)]
pub struct SaveReport {
    pub model_bytes: u64,
    /// External data files written (location, bytes); files reused in place are not listed.
    pub data_files: Vec<(String, u64)>,
    /// Locations renamed so as not to write over an input's data file: (input location, location written).
    pub relocated: Vec<(String, String)>,
}

/// Tensors in a packed data file start at multiples of this many bytes (a cache line), so a mapped file gives
/// aligned data; a packed file is the live tensors' bytes plus under `ALIGN` bytes of zeros after each tensor
/// whose size is not a multiple of it.
pub const ALIGN: u64 = 64;

/// Where one tensor's bytes come from.
#[derive(Clone)]
enum Source {
    /// A range of an input data file (read at write time).
    File(Arc<ExternalFile>, u64, u64),
    Bytes(Bytes),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::File(_, _, l) => *l,
            Source::Bytes(b) => b.len() as u64,
        }
    }

    fn bytes(&self) -> Result<Bytes> {
        match self {
            Source::File(f, o, l) => f.slice(*o, *l),
            Source::Bytes(b) => Ok(b.clone()),
        }
    }
}

/// Identifies a range of an input file, so tensors sharing it are written once.
type RangeKey = (PathBuf, u64, u64);

/// An external tensor found by the survey: (location, file, offset, length).
type Found = (String, Arc<ExternalFile>, u64, u64);

enum Content {
    /// An input data file copied byte for byte (nothing it holds changed).
    Verbatim(Arc<ExternalFile>),
    /// Tensors at the given offsets, zeros between them (only alignment padding when we lay them out).
    Packed(Vec<(u64, Source)>),
}

struct OutFile {
    content: Content,
    end: u64,
    /// The destination is the input file itself, unchanged: nothing to write.
    in_place: bool,
    /// Offsets of ranges already placed in this file.
    index: HashMap<RangeKey, u64>,
}

impl OutFile {
    fn packed() -> OutFile {
        OutFile {
            content: Content::Packed(Vec::new()),
            end: 0,
            in_place: false,
            index: HashMap::new(),
        }
    }

    /// Append `src` at the next aligned offset (or return where the same input range already went).
    fn append(&mut self, key: Option<RangeKey>, src: Source) -> u64 {
        if let Some(off) = key.as_ref().and_then(|k| self.index.get(k)) {
            return *off;
        }
        // an empty tensor takes no room (and adds no padding)
        let offset = if src.len() == 0 {
            self.end
        } else {
            self.end.div_ceil(ALIGN) * ALIGN
        };
        self.end = offset + src.len();
        if let Content::Packed(chunks) = &mut self.content {
            chunks.push((offset, src));
        }
        if let Some(k) = key {
            self.index.insert(k, offset);
        }
        offset
    }
}

/// In `Keep` mode, what happens to the tensors of one input location.
struct KeepRule {
    /// Location written in the output.
    dest: String,
    /// Offsets stay as they were (the file is copied verbatim or reused).
    verbatim: bool,
}

/// Decides, tensor by tensor, where data is written; collects the external files' contents.
pub(crate) struct DataPlan {
    mode: ExternalMode,
    default_location: String,
    files: BTreeMap<String, OutFile>,
    keep: HashMap<String, KeepRule>,
    /// Survey mode: record every external tensor and place nothing.
    survey: Option<Vec<Found>>,
    relocated: Vec<(String, String)>,
}

fn range_key(e: &ExternalRef) -> RangeKey {
    (e.file.path.clone(), e.offset, e.length)
}

fn entries(
    location: &str,
    offset: u64,
    length: u64,
    old: &[crate::ir::MetaEntry],
) -> Vec<pb::StringStringEntryProto> {
    let e = |k: &str, v: String| pb::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    let mut out = vec![
        e("location", location.to_string()),
        e("offset", offset.to_string()),
        e("length", length.to_string()),
    ];
    // other keys (a checksum) describe the bytes, which are unchanged: keep them
    for m in old {
        if !matches!(
            m.key.as_deref(),
            Some("location" | "offset" | "length" | "basepath")
        ) {
            out.push(pb::StringStringEntryProto {
                key: m.key.clone(),
                value: m.value.clone(),
            });
        }
    }
    out
}

/// `p` without `.` components, for comparing destinations that do not exist yet.
fn lexical(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

impl DataPlan {
    pub fn new(mode: ExternalMode, default_location: String) -> DataPlan {
        DataPlan {
            mode,
            default_location,
            files: BTreeMap::new(),
            keep: HashMap::new(),
            survey: None,
            relocated: Vec::new(),
        }
    }

    pub fn place(&mut self, t: &Tensor, main_initializer: bool) -> Result<Placed> {
        if let Some(found) = &mut self.survey {
            if let TensorData::External(e) = &t.data {
                found.push((e.location.clone(), e.file.clone(), e.offset, e.length));
            }
            return Ok(Placed::AsIs);
        }
        match self.mode.clone() {
            ExternalMode::Inline => match &t.data {
                TensorData::External(e) => Ok(Placed::Inline(e.bytes()?)),
                _ => Ok(Placed::AsIs),
            },
            ExternalMode::Keep => match &t.data {
                TensorData::External(e) => {
                    let rule = self.keep.get(&e.location).ok_or_else(|| {
                        Error::Refused(format!(
                            "external tensor '{}' at '{}' was not surveyed before saving",
                            t.name(),
                            e.location
                        ))
                    })?;
                    if rule.verbatim {
                        if rule.dest == e.location {
                            return Ok(Placed::AsIs);
                        }
                        return Ok(Placed::External(entries(
                            &rule.dest, e.offset, e.length, &e.entries,
                        )));
                    }
                    let dest = rule.dest.clone();
                    let file = self.files.get(&dest).ok_or_else(|| {
                        Error::Refused(format!(
                            "external tensor '{}': data file '{dest}' was not laid out before saving",
                            t.name()
                        ))
                    })?;
                    let offset = *file.index.get(&range_key(e)).ok_or_else(|| {
                        Error::Refused(format!(
                            "external tensor '{}' was not laid out before saving",
                            t.name()
                        ))
                    })?;
                    Ok(Placed::External(entries(
                        &dest, offset, e.length, &e.entries,
                    )))
                }
                _ => Ok(Placed::AsIs),
            },
            ExternalMode::Threshold {
                min_bytes,
                location,
            } => {
                if main_initializer
                    && t.dtype() != DataType::STRING
                    && t.byte_size() >= min_bytes
                    && t.byte_size() > 0
                {
                    let loc = location.unwrap_or_else(|| self.default_location.clone());
                    let (key, src) = match &t.data {
                        TensorData::External(e) => (
                            Some(range_key(e)),
                            Source::File(e.file.clone(), e.offset, e.length),
                        ),
                        _ => (None, Source::Bytes(t.raw_bytes()?)),
                    };
                    let length = src.len();
                    let file = self
                        .files
                        .entry(loc.clone())
                        .or_insert_with(OutFile::packed);
                    let offset = file.append(key, src);
                    Ok(Placed::External(entries(&loc, offset, length, &[])))
                } else {
                    match &t.data {
                        TensorData::External(e) => Ok(Placed::Inline(e.bytes()?)),
                        _ => Ok(Placed::AsIs),
                    }
                }
            }
        }
    }

    /// `Keep` mode: decide every input location's fate from the survey of the model's external tensors.
    fn keep_layout(
        &mut self,
        found: Vec<Found>,
        dir: &Path,
        out: &Path,
        input: Option<&Path>,
        stem: &str,
    ) -> Result<()> {
        let canon = |p: &Path| p.canonicalize().ok();
        let mut by_loc: BTreeMap<String, Vec<(Arc<ExternalFile>, u64, u64)>> = BTreeMap::new();
        // files we must never write: every input data file, the input model, the output model
        let mut forbidden: HashSet<PathBuf> = HashSet::new();
        for (loc, f, o, l) in found {
            forbidden.extend(canon(&f.path));
            by_loc.entry(loc).or_default().push((f, o, l));
        }
        forbidden.extend(input.and_then(canon));
        forbidden.extend(canon(out));
        let out_lex = lexical(out);
        let mut taken: HashSet<String> = by_loc.keys().cloned().collect();
        let mut dest_paths: HashSet<PathBuf> = HashSet::new();
        for (loc, refs) in by_loc {
            // every entry was created by a push, so none is empty
            let Some((file, _, _)) = refs.first().cloned() else {
                continue;
            };
            let one_file = refs.iter().all(|r| Arc::ptr_eq(&r.0, &file));
            let ranges: BTreeSet<(u64, u64)> = refs.iter().map(|r| (r.1, r.2)).collect();
            let unchanged = one_file && !ranges.is_empty() && &ranges == file.loaded_ranges();
            let dest_path = dir.join(&loc);
            let here = canon(&dest_path);
            if unchanged && here.is_some() && here == canon(&file.path) {
                // the output sits beside the input and nothing in this file changed: point at it as it is
                self.files.insert(
                    loc.clone(),
                    OutFile {
                        content: Content::Verbatim(file.clone()),
                        end: file.len,
                        in_place: true,
                        index: HashMap::new(),
                    },
                );
                dest_paths.insert(lexical(&dest_path));
                self.keep.insert(
                    loc.clone(),
                    KeepRule {
                        dest: loc,
                        verbatim: true,
                    },
                );
                continue;
            }
            let clash = |p: &Path, dest_paths: &HashSet<PathBuf>| {
                canon(p).is_some_and(|c| forbidden.contains(&c))
                    || lexical(p) == out_lex
                    || dest_paths.contains(&lexical(p))
            };
            let dest = if clash(&dest_path, &dest_paths) {
                let mut k = 0;
                let name = loop {
                    let name = if k == 0 {
                        format!("{stem}.data")
                    } else {
                        format!("{stem}.{k}.data")
                    };
                    if !taken.contains(&name) && !clash(&dir.join(&name), &dest_paths) {
                        break name;
                    }
                    k += 1;
                };
                taken.insert(name.clone());
                self.relocated.push((loc.clone(), name.clone()));
                name
            } else {
                loc.clone()
            };
            dest_paths.insert(lexical(&dir.join(&dest)));
            let content = if unchanged {
                OutFile {
                    content: Content::Verbatim(file.clone()),
                    end: file.len,
                    in_place: false,
                    index: HashMap::new(),
                }
            } else {
                // pack the live ranges in their input order; shared ranges once
                let mut live: Vec<(Arc<ExternalFile>, u64, u64)> = refs;
                // (scratch files this process wrote come after the input's, in the order they were written)
                live.sort_by(|a, b| {
                    (a.0.written_seq(), &a.0.path, a.1, a.2).cmp(&(
                        b.0.written_seq(),
                        &b.0.path,
                        b.1,
                        b.2,
                    ))
                });
                let mut f = OutFile::packed();
                for (file, o, l) in live {
                    f.append(Some((file.path.clone(), o, l)), Source::File(file, o, l));
                }
                f
            };
            self.files.insert(dest.clone(), content);
            self.keep.insert(
                loc,
                KeepRule {
                    dest,
                    verbatim: unchanged,
                },
            );
        }
        Ok(())
    }
}

/// Encode a model with every tensor inline (for executors that take bytes).
pub fn to_bytes(model: &Model) -> Result<Vec<u8>> {
    let mut plan = DataPlan::new(ExternalMode::Inline, String::new());
    let proto = Exporter { plan: &mut plan }.model(model)?;
    let len = proto.encoded_len() as u64;
    if len > PROTOBUF_LIMIT {
        return Err(Error::Refused(format!(
            "model encodes to {len} bytes, past protobuf's 2 GiB limit"
        )));
    }
    Ok(proto.encode_to_vec())
}

/// Save to `path` (temp file + rename). External data files go beside it.
pub fn save(model: &Model, path: &Path, opts: &SaveOptions) -> Result<SaveReport> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let (Some(src), Ok(dst)) = (&model.source, std::fs::canonicalize(path)) {
        if std::fs::canonicalize(src)
            .map(|s| s == dst)
            .unwrap_or(false)
        {
            return Err(Error::Refused(format!(
                "refusing to overwrite the input model {}",
                path.display()
            )));
        }
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut plan = DataPlan::new(opts.external.clone(), format!("{stem}.data"));
    if opts.external == ExternalMode::Keep {
        // where each external tensor goes depends on all of them: survey first, then lay the files out
        plan.survey = Some(Vec::new());
        Exporter { plan: &mut plan }.model(model)?;
        let found = plan.survey.take().unwrap_or_default();
        plan.keep_layout(found, &dir, path, model.source.as_deref(), &stem)?;
    }
    let proto = Exporter { plan: &mut plan }.model(model)?;
    let len = proto.encoded_len() as u64;
    if len > PROTOBUF_LIMIT {
        return Err(Error::Refused(format!(
            "model encodes to {len} bytes, past protobuf's 2 GiB limit: save with external data (--external-threshold)"
        )));
    }
    let mut report = SaveReport {
        model_bytes: len,
        data_files: Vec::new(),
        relocated: std::mem::take(&mut plan.relocated),
    };
    let input_canon = model.source.as_ref().and_then(|s| s.canonicalize().ok());
    // data files first, so a model file never points at data that is not there yet
    for (location, file) in &plan.files {
        check_location(location).map_err(Error::Refused)?;
        if file.in_place {
            continue;
        }
        let dest = dir.join(location);
        let dest_canon = dest.canonicalize().ok();
        if dest_canon.is_some()
            && (dest_canon == path.canonicalize().ok() || dest_canon == input_canon)
        {
            return Err(Error::Refused(format!(
                "external data location '{location}' is the model file itself"
            )));
        }
        let sources = match &file.content {
            Content::Verbatim(f) => vec![f.path.clone()],
            Content::Packed(chunks) => chunks
                .iter()
                .filter_map(|(_, s)| match s {
                    Source::File(f, ..) => Some(f.path.clone()),
                    Source::Bytes(_) => None,
                })
                .collect(),
        };
        if dest_canon.is_some() && sources.iter().any(|p| p.canonicalize().ok() == dest_canon) {
            return Err(Error::Refused(format!(
                "saving would rewrite the input's external data file {}: save to another folder or pick another location",
                dest.display()
            )));
        }
        // a location may name a sub-folder (`weights/model.bin`) of the output folder
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        match &file.content {
            Content::Verbatim(f) => {
                let bytes = f.slice(0, f.len)?;
                write_atomic(&dest, |w| w.write_all(&bytes))?;
            }
            Content::Packed(chunks) => {
                let chunks: Vec<(u64, Bytes)> = chunks
                    .iter()
                    .map(|(o, s)| Ok((*o, s.bytes()?)))
                    .collect::<Result<_>>()?;
                write_atomic(&dest, |w| {
                    let mut pos = 0u64;
                    for (offset, data) in &chunks {
                        if *offset > pos {
                            w.write_all(&vec![0u8; (*offset - pos) as usize])?;
                        }
                        w.write_all(data)?;
                        pos = offset + data.len() as u64;
                    }
                    Ok(())
                })?;
            }
        }
        report.data_files.push((location.clone(), file.end));
    }
    write_atomic(path, |w| {
        let mut sink = FileSink {
            out: w,
            buf: Vec::with_capacity(SINK_CAP),
            written: 0,
            err: None,
        };
        proto
            .encode(&mut sink)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        sink.flush_buf();
        match sink.err.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?;
    Ok(report)
}

/// Write through `f` into a temp file in the destination folder, then rename it over `dest`.
fn write_atomic(dest: &Path, f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let werr = |source| Error::Write {
        path: dest.to_path_buf(),
        source,
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".onnx-rewrite-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(werr)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        f(&mut w).map_err(werr)?;
        w.flush().map_err(werr)?;
    }
    tmp.as_file().sync_all().map_err(werr)?;
    // temp files are created 0600; give the output the permissions a plainly created file would have
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o644);
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(werr)?;
    }
    tmp.persist(dest).map_err(|e| werr(e.error))?;
    Ok(())
}

const SINK_CAP: usize = 1 << 20;

/// A `BufMut` that streams into a writer through a 1 MiB buffer, so encoding a model needs no buffer the size
/// of the file. IO errors are kept and reported after encoding (BufMut cannot fail).
struct FileSink<'w> {
    out: &'w mut dyn Write,
    buf: Vec<u8>,
    written: usize,
    err: Option<std::io::Error>,
}

impl FileSink<'_> {
    fn flush_buf(&mut self) {
        if self.err.is_none() && !self.buf.is_empty() {
            if let Err(e) = self.out.write_all(&self.buf) {
                self.err = Some(e);
            }
        }
        self.buf.clear();
    }
}

// SAFETY: `chunk_mut` hands out the spare capacity of `buf`; `advance_mut` only extends `buf`'s length over bytes
// the caller has initialised, as the `BufMut` contract requires, and never past its capacity (the caller may
// advance at most the length of the last `chunk_mut`).
unsafe impl BufMut for FileSink<'_> {
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize - self.written
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len();
        assert!(len + cnt <= self.buf.capacity(), "advance past the chunk");
        // SAFETY: see the impl comment.
        unsafe { self.buf.set_len(len + cnt) };
        self.written += cnt;
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
        UninitSlice::uninit(self.buf.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SINK_CAP / 4 {
            self.flush_buf();
            if self.err.is_none() {
                if let Err(e) = self.out.write_all(src) {
                    self.err = Some(e);
                }
            }
        } else {
            if self.buf.capacity() - self.buf.len() < src.len() {
                self.flush_buf();
            }
            self.buf.extend_from_slice(src);
        }
        self.written += src.len();
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        while src.has_remaining() {
            let n = {
                let c = src.chunk();
                self.put_slice(c);
                c.len()
            };
            src.advance(n);
        }
    }
}
