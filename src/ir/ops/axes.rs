//! Where an operator takes its `axes` (or `split`) list from: an attribute in older opsets, an input since the
//! opset that moved it. Shared by the Squeeze/Unsqueeze, Reduce* and Split views.

use crate::error::Result;
use crate::ir::attr::AttrList;
use crate::ir::ids::ValueId;
use crate::ir::node::Node;

/// An integer list argument in the form the node's opset gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntsArg {
    /// Not given (the op's default applies: all axes, equal split, ...).
    Absent,
    /// An attribute (the opset before the move).
    Attr(Vec<i64>),
    /// An input (the opset after the move); its value may or may not be constant.
    Input(ValueId),
}

impl IntsArg {
    /// Read `name` as an attribute when `opset < moved_at`, else input `slot`.
    pub fn read(
        node: &Node,
        opset: i64,
        moved_at: i64,
        name: &str,
        slot: usize,
    ) -> Result<IntsArg> {
        Ok(if opset < moved_at {
            match node.get_ints(name)? {
                Some(v) => IntsArg::Attr(v),
                None => IntsArg::Absent,
            }
        } else {
            match node.input(slot) {
                Some(v) => IntsArg::Input(v),
                None => IntsArg::Absent,
            }
        })
    }
}
