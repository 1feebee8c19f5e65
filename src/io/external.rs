//! External tensor data: path rules, bounds checks and lazy reads on load; placement on save.
//!
//! A location must be a relative path inside the model's folder: no absolute path, no `..`, no NUL, and no
//! symlink that leads out of the folder. Offset and length are checked against the file's size at load; the
//! bytes are mapped on first use.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::io::source::map_file;

/// One external data file, mapped lazily.
#[derive(Debug)]
pub struct ExternalFile {
    pub path: PathBuf,
    pub len: u64,
    map: OnceLock<Bytes>,
    /// The (offset, length) ranges the model loaded with this file referenced: a save compares the live
    /// tensors against them to tell an untouched file (copied as it is) from one that changed (packed).
    loaded: OnceLock<BTreeSet<(u64, u64)>>,
    /// `Some(k)` for the k-th scratch file this process wrote (`Spill`): its `path` is only a label (the
    /// file has no name on disk) and a save lays its data out after the input's files, in `k` order.
    written: Option<u64>,
}

impl ExternalFile {
    /// For a scratch file this process wrote, its sequence number (module docs of `Spill`).
    pub fn written_seq(&self) -> Option<u64> {
        self.written
    }

    /// The ranges the loaded model referenced (empty for a file no load registered ranges in).
    pub fn loaded_ranges(&self) -> &BTreeSet<(u64, u64)> {
        static EMPTY: BTreeSet<(u64, u64)> = BTreeSet::new();
        self.loaded.get().unwrap_or(&EMPTY)
    }

    /// `length` bytes at `offset` (checked against the size seen at load).
    pub fn slice(&self, offset: u64, length: u64) -> Result<Bytes> {
        let map = match self.map.get() {
            Some(m) => m,
            None => {
                let m = map_file(&self.path)?;
                self.map.get_or_init(|| m)
            }
        };
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= map.len() as u64)
            .ok_or_else(|| Error::Invalid {
                file: Some(self.path.clone()),
                at: format!("range {offset}+{length}"),
                msg: format!(
                    "past the end of the file ({} bytes; did it change since load?)",
                    map.len()
                ),
            })?;
        Ok(map.slice(offset as usize..end as usize))
    }
}

/// Resolves `external_data` locations against the model's folder.
#[derive(Debug)]
pub struct Resolver {
    base: Option<PathBuf>,
    files: HashMap<String, Arc<ExternalFile>>,
    ranges: HashMap<String, BTreeSet<(u64, u64)>>,
}

impl Resolver {
    /// `base` is the folder of the model file; `None` for a model loaded from bytes (external data refused).
    pub fn new(base: Option<&Path>) -> Resolver {
        Resolver {
            base: base.map(Path::to_path_buf),
            files: HashMap::new(),
            ranges: HashMap::new(),
        }
    }

    /// Record that a tensor of the model being loaded reads `length` bytes at `offset` of `location`.
    pub fn note(&mut self, location: &str, offset: u64, length: u64) {
        self.ranges
            .entry(location.to_string())
            .or_default()
            .insert((offset, length));
    }

    /// End of the load: hand every file the ranges the model referenced in it.
    pub fn finish(mut self) {
        for (location, file) in &self.files {
            let ranges = self.ranges.remove(location).unwrap_or_default();
            let _ = file.loaded.set(ranges);
        }
    }

    /// Check `location` and return the shared handle of the file it names.
    pub fn open(&mut self, location: &str) -> std::result::Result<Arc<ExternalFile>, String> {
        if let Some(f) = self.files.get(location) {
            return Ok(f.clone());
        }
        check_location(location)?;
        let Some(base) = &self.base else {
            return Err(
                "model was loaded from memory: external data has no folder to resolve against"
                    .into(),
            );
        };
        let path = base.join(location);
        let canon_base = base
            .canonicalize()
            .map_err(|e| format!("model folder {}: {e}", base.display()))?;
        let canon = path
            .canonicalize()
            .map_err(|e| format!("external data file '{location}': {e}"))?;
        if !canon.starts_with(&canon_base) {
            return Err(format!("external data location '{location}' leads outside the model folder (via a symlink)"));
        }
        let meta = std::fs::metadata(&canon)
            .map_err(|e| format!("external data file '{location}': {e}"))?;
        if !meta.is_file() {
            return Err(format!(
                "external data location '{location}' is not a regular file"
            ));
        }
        let file = Arc::new(ExternalFile {
            path,
            len: meta.len(),
            map: OnceLock::new(),
            loaded: OnceLock::new(),
            written: None,
        });
        self.files.insert(location.to_string(), file.clone());
        Ok(file)
    }
}

/// The lexical rules for a location (also applied to names we write).
pub fn check_location(location: &str) -> std::result::Result<(), String> {
    if location.is_empty() {
        return Err("external data location is empty".into());
    }
    if location.contains('\0') {
        return Err(format!(
            "external data location {location:?} contains a NUL byte"
        ));
    }
    let p = Path::new(location);
    if p.is_absolute()
        || location.starts_with('/')
        || location.starts_with('\\')
        || location.get(1..2) == Some(":")
    {
        return Err(format!("external data location '{location}' is absolute; only paths relative to the model folder are allowed"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir))
        || location.split(['/', '\\']).any(|c| c == "..")
    {
        return Err(format!("external data location '{location}' contains '..'"));
    }
    Ok(())
}

/// Scratch data files for tensors computed from data that lives on disk (a weight-only quantization of an
/// external-data model): each tensor is written window by window into its own anonymous file (created
/// unlinked in `dir`, so nothing is left behind whatever happens to the process) and read back through a
/// read-only mapping, so the computed bytes stay in the page cache, not in the process's anonymous memory.
/// Saving copies them into the output's data file like any external tensor.
#[derive(Clone, Debug)]
pub struct Spill {
    pub dir: PathBuf,
}

/// Orders scratch files by creation, so saves lay them out deterministically.
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Bytes per write of `Spill::write_with` (the buffer it holds).
pub const SPILL_WINDOW: usize = 16 << 20;

impl Spill {
    pub fn new(dir: impl Into<PathBuf>) -> Spill {
        Spill { dir: dir.into() }
    }

    /// Write `len` bytes, produced window by window by `fill(start, window)`, to a new scratch file and map
    /// it. `label` names the data in errors.
    pub fn write_with(
        &self,
        label: &str,
        len: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<Arc<ExternalFile>> {
        use std::io::Write;
        let werr = |source| Error::Write {
            path: self.dir.clone(),
            source,
        };
        let mut file = tempfile::tempfile_in(&self.dir).map_err(werr)?;
        let mut buf = vec![0u8; SPILL_WINDOW.min(len)];
        let mut start = 0;
        while start < len {
            let n = SPILL_WINDOW.min(len - start);
            fill(start, &mut buf[..n])?;
            file.write_all(&buf[..n]).map_err(werr)?;
            start += n;
        }
        drop(buf);
        let k = WRITTEN.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("<scratch {k}: {label}>"));
        let map = crate::io::source::map_open_file(&file, &path)?;
        let map_cell = OnceLock::new();
        let _ = map_cell.set(map);
        Ok(Arc::new(ExternalFile {
            path,
            len: len as u64,
            map: map_cell,
            loaded: OnceLock::new(),
            written: Some(k),
        }))
    }
}
