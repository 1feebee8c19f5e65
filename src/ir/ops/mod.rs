//! Typed views of standard operators: attribute names, spec defaults and opset differences live here, one file
//! per op, so passes never read attributes by string key.

mod arity;
mod conv;
mod gemm;

pub use arity::check_arity;
pub use conv::ConvView;
pub use gemm::GemmView;
