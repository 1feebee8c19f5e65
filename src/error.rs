//! The library error. Every variant that comes from a model file names the file and the place in it
//! (graph, node, tensor) so a user can find what is wrong without a debugger.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model (or one of its external data files) is malformed or breaks an invariant.
    #[error("{}{}{msg}", file_prefix(file), at_prefix(at))]
    Invalid {
        file: Option<PathBuf>,
        at: String,
        msg: String,
    },
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing an output failed.
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The request cannot be carried out as asked (overwriting the input, a model too large to inline...).
    #[error("{0}")]
    Refused(String),
    /// Bad options: unknown pass name, out-of-range value. The message lists what is valid.
    #[error("{0}")]
    Usage(String),
    /// A pass failed; names the pass and, where known, the node.
    #[error("pass '{pass}': {msg}")]
    Pass { pass: String, msg: String },
    /// The graph broke an IR invariant (use-def, cycle, names), found by `verify`.
    #[error("graph '{graph}' does not verify: {msg}")]
    Verify { graph: String, msg: String },
    /// A validation run could not be carried out (the executor refused a model, inputs did not fit).
    #[error("validation: {0}")]
    Validate(String),
}

fn at_prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    match file {
        Some(f) => format!("{}: ", f.display()),
        None => String::new(),
    }
}

impl Error {
    pub fn invalid(at: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Invalid {
            file: None,
            at: at.into(),
            msg: msg.into(),
        }
    }

    /// Attach the file name to an `Invalid` error that does not have one yet.
    pub fn in_file(self, path: &std::path::Path) -> Error {
        match self {
            Error::Invalid {
                file: None,
                at,
                msg,
            } => Error::Invalid {
                file: Some(path.to_path_buf()),
                at,
                msg,
            },
            other => other,
        }
    }

    /// The process exit code the CLI uses for this error (see README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } | Error::Read { .. } => 3,
            Error::Usage(_) | Error::Refused(_) => 2,
            Error::Validate(_) => 4,
            Error::Write { .. } | Error::Pass { .. } | Error::Verify { .. } => 1,
        }
    }
}
