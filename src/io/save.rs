//! Saving: where tensor data goes (`DataPlan`), streaming the protobuf straight to a temp file, and the atomic
//! rename. The input model and its external data files are never written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes};
use prost::Message;

use crate::error::{Error, Result};
use crate::io::export::{Exporter, Placed};
use crate::io::external::{check_location, ExternalFile};
use crate::ir::{DataType, Model, Tensor, TensorData};
use crate::pb;

/// Protobuf cannot encode a message past 2 GiB.
pub const PROTOBUF_LIMIT: u64 = i32::MAX as u64;

/// What to do with tensor data when saving.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ExternalMode {
    /// Inline tensors stay inline, external ones stay external under the same location (at the same offsets
    /// when possible). With no pass applied this reproduces the input byte for byte.
    #[default]
    Keep,
    /// Everything inline (fails past the 2 GiB protobuf limit).
    Inline,
    /// Main-graph initializers of at least `min_bytes` go to one external file `location` (default
    /// `<model stem>.data`); everything else inline.
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
}

struct Chunk {
    offset: u64,
    data: Bytes,
    /// The file and offset the bytes came from, when they were external already.
    origin: Option<(Arc<ExternalFile>, u64)>,
}

#[derive(Default)]
struct OutFile {
    chunks: Vec<Chunk>,
    end: u64,
}

/// Decides, tensor by tensor, where data is written; collects the external files' contents.
pub(crate) struct DataPlan {
    mode: ExternalMode,
    default_location: String,
    files: BTreeMap<String, OutFile>,
}

const ALIGN: u64 = 64;

impl DataPlan {
    pub fn new(mode: ExternalMode, default_location: String) -> DataPlan {
        DataPlan {
            mode,
            default_location,
            files: BTreeMap::new(),
        }
    }

    pub fn place(&mut self, t: &Tensor, main_initializer: bool) -> Result<Placed> {
        match self.mode.clone() {
            ExternalMode::Inline => match &t.data {
                TensorData::External(e) => Ok(Placed::Inline(e.bytes()?)),
                _ => Ok(Placed::AsIs),
            },
            ExternalMode::Keep => match &t.data {
                TensorData::External(e) => {
                    let data = e.bytes()?;
                    let file = self.files.entry(e.location.clone()).or_default();
                    let free = file.chunks.iter().all(|c| {
                        e.offset >= c.offset + c.data.len() as u64
                            || e.offset + e.length <= c.offset
                    });
                    if free {
                        file.end = file.end.max(e.offset + e.length);
                        file.chunks.push(Chunk {
                            offset: e.offset,
                            data,
                            origin: Some((e.file.clone(), e.offset)),
                        });
                        Ok(Placed::AsIs)
                    } else {
                        let loc = e.location.clone();
                        Ok(Placed::External(self.append(
                            &loc,
                            data,
                            Some((e.file.clone(), e.offset)),
                        )))
                    }
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
                    let origin = match &t.data {
                        TensorData::External(e) => Some((e.file.clone(), e.offset)),
                        _ => None,
                    };
                    let data = t.raw_bytes()?;
                    Ok(Placed::External(self.append(&loc, data, origin)))
                } else {
                    match &t.data {
                        TensorData::External(e) => Ok(Placed::Inline(e.bytes()?)),
                        _ => Ok(Placed::AsIs),
                    }
                }
            }
        }
    }

    fn append(
        &mut self,
        location: &str,
        data: Bytes,
        origin: Option<(Arc<ExternalFile>, u64)>,
    ) -> Vec<pb::StringStringEntryProto> {
        let file = self.files.entry(location.to_string()).or_default();
        let offset = file.end.div_ceil(ALIGN) * ALIGN;
        let length = data.len() as u64;
        file.end = offset + length;
        file.chunks.push(Chunk {
            offset,
            data,
            origin,
        });
        let e = |k: &str, v: String| pb::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        vec![
            e("location", location.to_string()),
            e("offset", offset.to_string()),
            e("length", length.to_string()),
        ]
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
    };
    // data files first, so a model file never points at data that is not there yet
    for (location, file) in &plan.files {
        check_location(location).map_err(Error::Refused)?;
        let dest = dir.join(location);
        if dest.canonicalize().ok() == path.canonicalize().ok() && dest.exists() {
            return Err(Error::Refused(format!(
                "external data location '{location}' is the model file itself"
            )));
        }
        let dest_canon = dest.canonicalize().ok();
        let from_dest = |c: &Chunk| {
            c.origin.as_ref().is_some_and(|(f, off)| {
                f.path.canonicalize().ok() == dest_canon && *off == c.offset
            })
        };
        if dest_canon.is_some() && file.chunks.iter().all(from_dest) {
            continue; // every tensor already sits at this offset of this very file: reuse it as it is
        }
        if dest_canon.is_some()
            && file.chunks.iter().any(|c| {
                c.origin
                    .as_ref()
                    .is_some_and(|(f, _)| f.path.canonicalize().ok() == dest_canon)
            })
        {
            return Err(Error::Refused(format!(
                "saving would rewrite the input's external data file {}: save to another folder or pick another location",
                dest.display()
            )));
        }
        write_atomic(&dest, |w| {
            let mut chunks: Vec<&Chunk> = file.chunks.iter().collect();
            chunks.sort_by_key(|c| c.offset);
            let mut pos = 0u64;
            for c in chunks {
                if c.offset > pos {
                    w.write_all(&vec![0u8; (c.offset - pos) as usize])?;
                }
                w.write_all(&c.data)?;
                pos = c.offset + c.data.len() as u64;
            }
            Ok(())
        })?;
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
