//! Clean-up passes: dead-code elimination, dedup of identical initializers, topological sort.

mod dce;
mod dedup;
mod topo;

pub use dce::{Dce, DceOptions};
pub use dedup::{DedupInitializers, DedupOptions};
pub use topo::{TopoSort, TopoSortOptions};
