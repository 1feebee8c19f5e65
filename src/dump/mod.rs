//! Deterministic text of a model (`render`), structural diffs (`diff`) and the counts both use (`stats`).
//! Shared by the CLI, the pass snapshots and users' own insta tests. No internal ids ever appear.

mod diff;
mod render;
pub mod stats;

pub use diff::{diff, Diff};
pub use render::{render, ty as render_type};
