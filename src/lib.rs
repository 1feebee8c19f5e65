//! onnx-rewrite: load an ONNX model into a graph IR, rewrite it with passes, write it back (byte-identical when
//! nothing changed), and prove the result still computes what the original computed.
//!
//! ```no_run
//! use onnx_rewrite::{io, passes, dump};
//! # fn main() -> onnx_rewrite::Result<()> {
//! let mut model = io::load("model.onnx".as_ref())?;
//! let before = model.clone();
//! let reports = passes::run_pipeline(&mut model, &["dce", "dedup-initializers"], &Default::default())?;
//! for r in &reports { println!("{r}"); }
//! println!("{}", dump::diff(&before, &model));
//! io::save(&model, "model.opt.onnx".as_ref(), &io::SaveOptions::default())?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod dump;
pub mod error;
pub mod io;
pub mod ir;
pub mod json;
pub mod passes;
pub mod recipe;
pub mod validate;

pub use error::{Error, Result};

/// The generated protobuf types. Only `io/` uses them.
pub(crate) mod pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
