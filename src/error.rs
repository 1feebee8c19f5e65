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
    /// A pass's own drift budget cannot be met by any choice it has (lowrank `drift_budget`): exit code 4, as
    /// for drift past a validation tolerance; nothing is written.
    #[error("pass '{pass}': {msg}")]
    BudgetUnmet { pass: String, msg: String },
    /// A pass's result computes non-finite outputs (NaN, inf) where the original's are finite, on the samples
    /// it was checked on: exit code 4, as for drift past a tolerance; nothing is written.
    #[error("pass '{pass}': {msg}")]
    NonFinite { pass: String, msg: String },
    /// The graph broke an IR invariant (use-def, cycle, names), found by `verify`.
    #[error("graph '{graph}' does not verify: {msg}")]
    Verify { graph: String, msg: String },
    /// A validation run could not be carried out (the executor refused a model, inputs did not fit).
    #[error("validation: {0}")]
    Validate(String),
    /// The engine (tract) cannot load, type or run a model, so no comparison was made (exit code 5). Names the
    /// model (reference / candidate), the node and op the engine refused when its error says, and a hint
    /// (e.g. the symbolic dims left at their default) when there is one.
    #[error(
        "cannot validate{}: {}{msg}{}",
        model.as_ref().map(|m| format!(" the {m} model")).unwrap_or_default(),
        node_prefix(node, op),
        hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
    )]
    CannotValidate {
        model: Option<String>,
        node: Option<String>,
        op: Option<String>,
        msg: String,
        hint: Option<String>,
    },
}

fn node_prefix(node: &Option<String>, op: &Option<String>) -> String {
    match (node, op) {
        (Some(n), Some(o)) => format!("node '{n}' ({o}): "),
        (Some(n), None) => format!("node '{n}': "),
        (None, Some(o)) => format!("op {o}: "),
        (None, None) => String::new(),
    }
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

    /// How the CLI ends for this error (see docs/recipes.md, "Exit codes").
    pub fn exit(&self) -> Exit {
        match self {
            Error::Invalid { .. } | Error::Read { .. } => Exit::BadFile,
            Error::Usage(_) | Error::Refused(_) => Exit::Usage,
            // drift past a tolerance is a report, not an error, except a pass budget no choice meets and a
            // quantized model whose outputs are non-finite where the float model's are finite
            Error::BudgetUnmet { .. } | Error::NonFinite { .. } => Exit::Drift,
            Error::Validate(_) | Error::CannotValidate { .. } => Exit::CannotValidate,
            Error::Write { .. } | Error::Pass { .. } | Error::Verify { .. } => Exit::Unexpected,
        }
    }

    /// The process exit code of [`Error::exit`].
    pub fn exit_code(&self) -> i32 {
        self.exit().code()
    }
}

/// The documented process exit codes (docs/recipes.md, "Exit codes"): every command returns one of these, and
/// every error maps to one ([`Error::exit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// A pass failed, an output could not be written.
    Unexpected = 1,
    /// Bad flags, an unknown pass or option, a refused request, an input file that does not fit the model.
    Usage = 2,
    /// An unreadable or malformed model, input or labels file.
    BadFile = 3,
    /// Drift past a tolerance or budget: the comparison ran and failed; nothing was written.
    Drift = 4,
    /// The engine cannot load, type or run a model.
    CannotValidate = 5,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}
