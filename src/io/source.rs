//! Bring a file into memory as `Bytes`: memory-mapped, so tensor data decoded from it are zero-copy slices.

use std::fs::File;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};

/// Map a file read-only. Empty files are returned as empty `Bytes` (mmap of length 0 is an error on Linux).
pub fn map_file(path: &Path) -> Result<Bytes> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(Error::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    if meta.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only and private to this process. A model file truncated or rewritten by
    // another process while we hold the map is undefined behaviour for any mmap reader; we never write to files
    // we map (saving refuses to write over its own input and writes to a temp file that is renamed), which is
    // the guarantee this tool can give.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
    Ok(Bytes::from_owner(map))
}

/// Map a file this process created and wrote (a scratch file without a name: `external::Spill`).
pub fn map_open_file(file: &File, label: &Path) -> Result<Bytes> {
    let read_err = |source| Error::Read {
        path: label.to_path_buf(),
        source,
    };
    if file.metadata().map_err(read_err)?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: read-only and private, as in `map_file`; the file was created unlinked by this process, which
    // has finished writing it and never writes it again, and no other process can open it by name.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(read_err)?;
    Ok(Bytes::from_owner(map))
}
