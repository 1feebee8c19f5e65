//! Channel dependency groups of one graph (the main graph or an If / Loop / Scan body; see `super` for how
//! bodies are handled).
//!
//! Nodes are visited in graph (topological) order. A producer (Conv with group 1 or a grouped Conv, ConvTranspose
//! with group 1, Gemm, MatMul with a constant 2-D weight) starts a group: its output channels. Every value that
//! carries channels gets a `Layout`: the list of group segments along its channel axis (Concat appends segments,
//! Split / Slice cut them), the axis counted from the end, and `block` features per channel (after Flatten /
//! Reshape). Ops that keep channels pass the layout on; element-wise ops with two channel operands tie their
//! groups; ops that read channels (consumers) or carry per-channel parameters become `Site`s, the tensors and
//! arguments that apply edits. Anything else that reads a channel value freezes the groups it reads, with a
//! remark naming the node.
//!
//! Grouped Conv (1 < group G < channels, weight [Cout, Cin / G, k..]): output block b (Cout / G channels) reads
//! only input block b. As Torch-Pruning's DepGraph does, both sides are pruned by *aligned index sets*: a
//! group a grouped conv reads or produces carries `blocks = G` and loses the same offsets in every block (the
//! plan ranks an offset by its importance summed over the blocks). Removal then keeps G equal blocks, `group`
//! stays G, and the weight edits are plain slices: output rows along axis 0, and the same input columns along
//! axis 1 for every output block (the consumer site describes block 0 only). The input and output groups of a
//! grouped conv are not tied: with the per-block constraint on each side they can be pruned independently,
//! which a tie would forbid for no gain. A group read only in part (a Split or Concat segment), a Split / Slice
//! cutting inside a block, or blocks of one channel freeze the group, naming the conv.

use std::collections::{BTreeSet, HashMap};

use crate::error::Result;
use crate::ir::ops::{IntsArg, SplitView, SqueezeView};
use crate::ir::{AttrList, DimValue, Graph, Node, NodeId, UseSlot, ValueDef, ValueId};

/// `len` channels of group `group` starting at channel `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seg {
    pub group: usize,
    pub start: usize,
    pub len: usize,
}

/// The channel structure of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub segs: Vec<Seg>,
    /// Channel axis counted from the end (1 = last axis).
    pub from_end: usize,
    /// Rank when known.
    pub rank: Option<usize>,
    /// Consecutive features per channel along the axis (1 unless flattened).
    pub block: usize,
}

impl Layout {
    pub fn channels(&self) -> usize {
        self.segs.iter().map(|s| s.len).sum()
    }
}

/// What role a constant tensor plays (importance and zeroing rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A producer's weight (output channels).
    Producer,
    /// A per-output-channel bias or parameter zeroed in `zero` mode.
    Param,
    /// BatchNormalization scale (importance `bn`; zeroed).
    BnScale,
    /// Sliced in `remove` mode, left alone in `zero` mode (BN mean / variance, divisors).
    Keep,
    /// A consumer's weight (input channels).
    Consumer,
}

/// Something `apply` edits.
#[derive(Clone, Debug)]
pub enum SiteKind {
    /// Constant input `slot`, channels along `axis` of that tensor (after right-aligned broadcasting).
    Tensor {
        slot: usize,
        axis: usize,
        role: Role,
    },
    /// Depthwise Conv: `group` becomes the channel count.
    GroupAttr,
    /// Split on the channel axis: each output's layout (new sizes are their kept counts).
    SplitSizes { outputs: Vec<Layout> },
    /// Reshape whose constant shape (input 1) has the channel dim at `index` spelled out.
    ReshapeDim { index: usize },
    /// Slice (opset >= 10) on the channel axis: entry `index` of its constant starts / ends (inputs 1, 2) is
    /// the channel range [start, end) of the input layout; in `remove` mode they become kept counts.
    SliceRange {
        index: usize,
        start: usize,
        end: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Site {
    pub node: NodeId,
    pub kind: SiteKind,
    pub layout: Layout,
}

#[derive(Clone, Debug)]
pub struct RawGroup {
    pub channels: usize,
    pub producers: Vec<NodeId>,
    pub frozen: Option<String>,
    /// Channel positions where a Split / Slice cuts the group: each range between cuts is pruned on its own.
    pub cuts: BTreeSet<usize>,
    /// A grouped Conv reads or writes these channels in `blocks` equal consecutive blocks: every block must lose
    /// the same channels (same offsets within the block), 1 when unconstrained. The lcm when several do.
    pub blocks: usize,
    /// The grouped Conv that set `blocks` (named in remarks).
    pub blocks_by: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Analysis {
    pub groups: Vec<RawGroup>,
    parent: Vec<usize>,
    pub sites: Vec<Site>,
    /// Every value that carries channels, with its layout.
    pub values: Vec<(ValueId, Layout)>,
}

impl Analysis {
    pub fn root(&self, mut g: usize) -> usize {
        while self.parent[g] != g {
            g = self.parent[g];
        }
        g
    }

    fn new_group(&mut self, channels: usize, producer: NodeId) -> usize {
        self.groups.push(RawGroup {
            channels,
            producers: vec![producer],
            frozen: None,
            cuts: BTreeSet::new(),
            blocks: 1,
            blocks_by: None,
        });
        self.parent.push(self.groups.len() - 1);
        self.groups.len() - 1
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        if a == b {
            return;
        }
        let (lo, hi) = (a.min(b), a.max(b));
        self.parent[hi] = lo;
        let h = std::mem::replace(
            &mut self.groups[hi],
            RawGroup {
                channels: 0,
                producers: vec![],
                frozen: None,
                cuts: BTreeSet::new(),
                blocks: 1,
                blocks_by: None,
            },
        );
        let l = &mut self.groups[lo];
        l.producers.extend(h.producers);
        l.producers.sort();
        if l.frozen.is_none() {
            l.frozen = h.frozen;
        }
        l.cuts.extend(h.cuts);
        l.channels = l.channels.max(h.channels);
        l.blocks = lcm(l.blocks, h.blocks);
        if l.blocks_by.is_none() {
            l.blocks_by = h.blocks_by;
        }
    }

    /// Require the same channels pruned in each of `blocks` equal blocks of group `g` (a grouped Conv `by`).
    fn constrain_blocks(&mut self, g: usize, blocks: usize, by: &str) {
        let r = self.root(g);
        let gr = &mut self.groups[r];
        gr.blocks = lcm(gr.blocks, blocks);
        if gr.blocks_by.is_none() {
            gr.blocks_by = Some(by.to_string());
        }
    }

    fn freeze(&mut self, layout: &Layout, why: &str) {
        for s in &layout.segs {
            let r = self.root(s.group);
            if self.groups[r].frozen.is_none() {
                self.groups[r].frozen = Some(why.to_string());
            }
        }
    }

    /// The root groups, in order.
    pub fn roots(&self) -> Vec<usize> {
        (0..self.groups.len())
            .filter(|&g| self.root(g) == g)
            .collect()
    }

    /// For each position along a layout's axis (in channel units): (root group, channel).
    pub fn positions(&self, layout: &Layout) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(layout.channels());
        for s in &layout.segs {
            let r = self.root(s.group);
            out.extend((s.start..s.start + s.len).map(|c| (r, c)));
        }
        out
    }
}

const PASS_THROUGH: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Clip",
    "Gelu",
    "Erf",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Mish",
    "Identity",
    "Dropout",
    "Abs",
    "Neg",
    "Exp",
    "Sqrt",
    "Cast",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "Floor",
    "Ceil",
    "Round",
    "ThresholdedRelu",
    "Shrink",
    "Sign",
    "Not",
    "Log",
    "Reciprocal",
    "Sin",
    "Cos",
];
const ELEMENTWISE: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "PRelu", "Pow", "Mean",
];

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    if a == 0 || b == 0 {
        a.max(b)
    } else {
        a / gcd(a, b) * b
    }
}

fn uz(d: &[i64]) -> Option<Vec<usize>> {
    d.iter().map(|&x| usize::try_from(x).ok()).collect()
}

/// The declared type of a value (value_info, graph input or output).
pub fn declared_type(g: &Graph, v: ValueId) -> Option<&crate::ir::TypeInfo> {
    g.value_info()
        .iter()
        .chain(g.inputs())
        .chain(g.outputs())
        .find(|io| io.value == v)
        .and_then(|io| io.info.ty.as_ref())
}

/// Fixed dims of a value's declared shape.
fn declared_dims(g: &Graph, v: ValueId) -> Option<Vec<Option<i64>>> {
    let ty = declared_type(g, v)?;
    let (_, shape) = ty.as_tensor()?;
    Some(
        shape?
            .0
            .iter()
            .map(|d| match d.value {
                DimValue::Fixed(x) => Some(x),
                _ => None,
            })
            .collect(),
    )
}

struct Walker<'a> {
    g: &'a Graph,
    opset: i64,
    a: Analysis,
    lay: HashMap<ValueId, Layout>,
    /// `Shape(x)` outputs of channel values: x and its layout. Reading only other dims of it is free; reading the
    /// channel count freezes the groups (the count changes when channels go).
    shapes: HashMap<ValueId, (ValueId, Layout)>,
}

/// An element of a shape tensor computed from `Shape` (for a Reshape's shape argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShapeEl {
    Const(i64),
    /// Dim `axis` of value `of`.
    Dim(ValueId, usize),
}

impl<'a> Walker<'a> {
    fn cst(&self, v: Option<ValueId>) -> Option<crate::ir::Tensor> {
        let v = v?;
        self.g.weight(v)?;
        self.g.constant(v).map(|t| t.into_owned())
    }

    fn set(&mut self, v: Option<ValueId>, l: Layout) {
        if let Some(v) = v {
            self.lay.insert(v, l);
        }
    }

    fn freeze_all(&mut self, node: &Node, why: String) {
        for v in node.inputs.iter().flatten() {
            if let Some(l) = self.lay.get(v).cloned() {
                self.a.freeze(&l, &why);
            }
        }
    }

    /// A producer: (output channels, [(slot, axis, role)], from_end, rank, blocks). A grouped Conv (group G,
    /// at least two output channels per group) produces G blocks that must lose the same channels.
    #[allow(clippy::type_complexity)]
    fn producer(
        &self,
        node: &Node,
    ) -> Result<
        Option<(
            usize,
            Vec<(usize, usize, Role)>,
            usize,
            Option<usize>,
            usize,
        )>,
    > {
        let op = node.op.op_type.as_str();
        if !node.op.is_default_domain() {
            return Ok(None);
        }
        let bias = |slot: usize, n: usize| -> Option<(usize, usize, Role)> {
            let t = self.cst(node.input(slot))?;
            let d = uz(&t.dims)?;
            (d.last() == Some(&n) && d.iter().rev().skip(1).all(|&x| x == 1))
                .then(|| (slot, d.len() - 1, Role::Param))
        };
        Ok(match op {
            "Conv" | "ConvTranspose" => {
                let group = node.get_int("group")?.unwrap_or(1);
                if group != 1 && op == "ConvTranspose" || group < 1 {
                    return Ok(None);
                }
                let group = group as usize;
                let Some(w) = self.cst(node.input(1)) else {
                    return Ok(None);
                };
                let Some(d) = uz(&w.dims) else {
                    return Ok(None);
                };
                if d.len() < 3 {
                    return Ok(None);
                }
                // a depthwise-like conv (one output channel per group) has nothing to prune per block
                if group > 1 && (!d[0].is_multiple_of(group) || d[0] / group < 2) {
                    return Ok(None);
                }
                let (n, axis) = if op == "Conv" { (d[0], 0) } else { (d[1], 1) };
                let mut sites = vec![(1, axis, Role::Producer)];
                if node.input(2).is_some() {
                    match bias(2, n) {
                        Some(b) => sites.push(b),
                        None => return Ok(None),
                    }
                }
                Some((n, sites, d.len() - 1, Some(d.len()), group))
            }
            "Gemm" | "MatMul" => {
                let Some(w) = self.cst(node.input(1)) else {
                    return Ok(None);
                };
                let Some(d) = uz(&w.dims) else {
                    return Ok(None);
                };
                if d.len() != 2 {
                    return Ok(None);
                }
                let tb = node.get_int("transB")?.unwrap_or(0) != 0;
                if node.get_int("transA")?.unwrap_or(0) != 0 {
                    return Ok(None);
                }
                let (n, axis) = if tb { (d[0], 0) } else { (d[1], 1) };
                let mut sites = vec![(1, axis, Role::Producer)];
                if op == "Gemm" && node.input(2).is_some() {
                    let c = self.cst(node.input(2));
                    match c.as_ref().and_then(|c| uz(&c.dims)) {
                        // a scalar bias adds the same to every channel
                        Some(cd) if cd.iter().all(|&x| x == 1) => {}
                        Some(_) => match bias(2, n) {
                            Some(b) => sites.push(b),
                            None => return Ok(None),
                        },
                        None => return Ok(None),
                    }
                }
                let rank = if op == "Gemm" { Some(2) } else { None };
                Some((n, sites, 1, rank, 1))
            }
            _ => None,
        })
    }

    /// Where a constant operand of an element-wise op lines up with the channel axis: Ok(None) when it does not
    /// depend on the channel, Ok(Some(axis)) when it has one entry per channel feature, Err otherwise.
    fn broadcast_axis(
        &self,
        t: &crate::ir::Tensor,
        l: &Layout,
    ) -> std::result::Result<Option<usize>, ()> {
        let r = t.dims.len();
        if r < l.from_end {
            return Ok(None);
        }
        let axis = r - l.from_end;
        let d = t.dims[axis];
        if d == 1 {
            Ok(None)
        } else if d == (l.channels() * l.block) as i64 {
            Ok(Some(axis))
        } else {
            Err(())
        }
    }

    fn node(&mut self, id: NodeId, node: &Node) -> Result<()> {
        let op = node.op.op_type.as_str();
        let name = node.name().to_string();
        let ins: Vec<Option<Layout>> = node
            .inputs
            .iter()
            .map(|v| v.and_then(|v| self.lay.get(&v).cloned()))
            .collect();
        let any = ins.iter().any(|l| l.is_some());
        let dflt = node.op.is_default_domain();
        let not_understood = |why: &str| format!("node '{name}' ({op}) {why}");
        // readers of Shape(channel value): only picking other dims leaves the channel count unread
        for (slot, v) in node.inputs.iter().enumerate() {
            let Some((_, l)) = v.and_then(|v| self.shapes.get(&v).cloned()) else {
                continue;
            };
            if !(slot == 0 && dflt && self.picks_other_dims(node, &l)?) {
                self.a.freeze(
                    &l,
                    &not_understood(
                        "reads the channel count of a Shape (or reads the shape whole)",
                    ),
                );
            }
        }

        if any && (!dflt || node.has_subgraphs()) {
            self.freeze_all(
                node,
                not_understood("reads the channels and is not understood"),
            );
            return Ok(());
        }
        // consumer side
        if let Some(Some(l)) = ins.first() {
            let l = l.clone();
            let x_only = ins.iter().skip(1).all(|x| x.is_none());
            match op {
                "Conv" | "ConvTranspose" => {
                    let group = node.get_int("group")?.unwrap_or(1);
                    let w = self.cst(node.input(1));
                    let wd = w.as_ref().and_then(|w| uz(&w.dims));
                    let Some(wd) = wd.filter(|d| d.len() >= 3 && x_only) else {
                        let outer = node
                            .input(1)
                            .is_some_and(|v| self.g.value(v).def == ValueDef::Outer);
                        self.freeze_all(
                            node,
                            not_understood(if outer {
                                "has no constant weight (it reads its weight from an enclosing graph, not edited from a body)"
                            } else {
                                "has no constant weight"
                            }),
                        );
                        return Ok(());
                    };
                    let c = l.channels();
                    if l.block != 1 || l.from_end != wd.len() - 1 {
                        self.freeze_all(node, not_understood("reads channels on another axis"));
                        return Ok(());
                    }
                    if op == "Conv" && group > 1 && group as usize == c && wd[0] == c && wd[1] == 1
                    {
                        // depthwise: channels pass through
                        self.a.sites.push(Site {
                            node: id,
                            kind: SiteKind::Tensor {
                                slot: 1,
                                axis: 0,
                                role: Role::Param,
                            },
                            layout: l.clone(),
                        });
                        if let Some(b) = self.cst(node.input(2)) {
                            if b.dims != [c as i64] {
                                self.freeze_all(
                                    node,
                                    not_understood("has a bias of unexpected shape"),
                                );
                                return Ok(());
                            }
                            self.a.sites.push(Site {
                                node: id,
                                kind: SiteKind::Tensor {
                                    slot: 2,
                                    axis: 0,
                                    role: Role::Param,
                                },
                                layout: l.clone(),
                            });
                        } else if node.input(2).is_some() {
                            self.freeze_all(node, not_understood("has a non-constant bias"));
                            return Ok(());
                        }
                        self.a.sites.push(Site {
                            node: id,
                            kind: SiteKind::GroupAttr,
                            layout: l.clone(),
                        });
                        self.set(node.output(0), l);
                        return Ok(());
                    }
                    let in_axis = if op == "Conv" { 1 } else { 0 };
                    if op == "Conv" && group > 1 {
                        // grouped: weight [Cout, C / G, k..]; input block b feeds output block b. The group
                        // read must lose the same offsets in each of its G blocks, so the weight loses the same
                        // columns for every output block; the site describes block 0 only
                        let g = group as usize;
                        if !c.is_multiple_of(g) || wd[1] * g != c {
                            self.freeze_all(
                                node,
                                not_understood("has a weight that does not match its group count"),
                            );
                            return Ok(());
                        }
                        let whole = l.segs.len() == 1 && l.segs[0].start == 0 && {
                            let r = self.a.root(l.segs[0].group);
                            l.segs[0].len == self.a.groups[r].channels
                        };
                        if !whole {
                            self.freeze_all(
                                node,
                                not_understood(
                                    "is a grouped convolution reading part of a channel group (or several)",
                                ),
                            );
                            return Ok(());
                        }
                        let seg = l.segs[0].clone();
                        self.a.constrain_blocks(seg.group, g, &name);
                        self.a.sites.push(Site {
                            node: id,
                            kind: SiteKind::Tensor {
                                slot: 1,
                                axis: 1,
                                role: Role::Consumer,
                            },
                            layout: Layout {
                                segs: vec![Seg {
                                    group: seg.group,
                                    start: 0,
                                    len: c / g,
                                }],
                                ..l
                            },
                        });
                    } else if group != 1 || wd[in_axis] != c {
                        self.freeze_all(
                            node,
                            not_understood(
                                "is a grouped transposed convolution or has a weight that does not match the channels",
                            ),
                        );
                        return Ok(());
                    } else {
                        self.a.sites.push(Site {
                            node: id,
                            kind: SiteKind::Tensor {
                                slot: 1,
                                axis: in_axis,
                                role: Role::Consumer,
                            },
                            layout: l,
                        });
                    }
                }
                "Gemm" | "MatMul" => {
                    let w = self.cst(node.input(1));
                    let wd = w
                        .as_ref()
                        .and_then(|w| uz(&w.dims))
                        .filter(|d| d.len() == 2);
                    let ta = node.get_int("transA")?.unwrap_or(0) != 0;
                    let tb = node.get_int("transB")?.unwrap_or(0) != 0;
                    let Some(wd) = wd.filter(|_| !ta && x_only && l.from_end == 1) else {
                        self.freeze_all(
                            node,
                            not_understood(
                                "reads channels without a constant 2-D weight on its last axis",
                            ),
                        );
                        return Ok(());
                    };
                    let axis = if tb { 1 } else { 0 };
                    if wd[axis] != l.channels() * l.block {
                        self.freeze_all(
                            node,
                            not_understood(
                                "has a weight whose reduction size does not match the channels",
                            ),
                        );
                        return Ok(());
                    }
                    self.a.sites.push(Site {
                        node: id,
                        kind: SiteKind::Tensor {
                            slot: 1,
                            axis,
                            role: Role::Consumer,
                        },
                        layout: l,
                    });
                }
                _ => {}
            }
        }
        if let Some((n, sites, from_end, rank, blocks)) = self.producer(node)? {
            if ins.iter().skip(1).any(|l| l.is_some()) {
                self.freeze_all(node, not_understood("reads channels as a weight"));
                return Ok(());
            }
            let g = self.a.new_group(n, id);
            if blocks > 1 {
                self.a.constrain_blocks(g, blocks, &name);
            }
            let l = Layout {
                segs: vec![Seg {
                    group: g,
                    start: 0,
                    len: n,
                }],
                from_end,
                rank,
                block: 1,
            };
            for (slot, axis, role) in sites {
                self.a.sites.push(Site {
                    node: id,
                    kind: SiteKind::Tensor { slot, axis, role },
                    layout: l.clone(),
                });
            }
            self.set(node.output(0), l);
            return Ok(());
        }
        if matches!(op, "Conv" | "ConvTranspose" | "Gemm" | "MatMul") || !any {
            return Ok(());
        }
        let l0 = ins
            .iter()
            .flatten()
            .next()
            .cloned()
            .expect("some input has a layout");
        if PASS_THROUGH.contains(&op) {
            if ins.iter().skip(1).any(|l| l.is_some()) {
                self.freeze_all(node, not_understood("reads channels as an argument"));
                return Ok(());
            }
            self.set(node.output(0), l0);
            return Ok(());
        }
        match op {
            "BatchNormalization" | "InstanceNormalization" => {
                let nparams = if op == "BatchNormalization" { 4 } else { 2 };
                let ok = ins[0].is_some()
                    && (1..=nparams).all(|s| {
                        self.cst(node.input(s))
                            .is_some_and(|t| t.dims == [l0.channels() as i64])
                    })
                    && l0.block == 1
                    && node.outputs.len() == 1;
                if !ok {
                    self.freeze_all(node, not_understood("has parameters that are not per-channel constants (or training outputs)"));
                    return Ok(());
                }
                for s in 1..=nparams {
                    let role = match (op, s) {
                        ("BatchNormalization", 1) => Role::BnScale,
                        (_, 1) | (_, 2) => Role::Param,
                        _ => Role::Keep,
                    };
                    self.a.sites.push(Site {
                        node: id,
                        kind: SiteKind::Tensor {
                            slot: s,
                            axis: 0,
                            role,
                        },
                        layout: l0.clone(),
                    });
                }
                self.set(node.output(0), l0);
            }
            _ if ELEMENTWISE.contains(&op) => {
                let mut first: Option<Layout> = None;
                for (slot, v) in node.inputs.iter().enumerate() {
                    let Some(v) = *v else { continue };
                    if let Some(l) = &ins[slot] {
                        match &first {
                            None => first = Some(l.clone()),
                            Some(f) => {
                                if !self.tie(f, l) {
                                    self.freeze_all(
                                        node,
                                        not_understood(
                                            "combines channel tensors that do not line up",
                                        ),
                                    );
                                    return Ok(());
                                }
                            }
                        }
                        continue;
                    }
                    if self.cst(Some(v)).is_none() && self.reshaped_const(v, &l0, op, slot) {
                        continue;
                    }
                    let Some(t) = self.cst(Some(v)) else {
                        self.freeze_all(
                            node,
                            not_understood(
                                "combines the channels with a tensor of unknown channels",
                            ),
                        );
                        return Ok(());
                    };
                    match self.broadcast_axis(&t, &l0) {
                        Ok(None) => {}
                        Ok(Some(axis)) => {
                            let role = if matches!(op, "Div" | "Pow") || (op == "Sub" && slot == 0)
                            {
                                Role::Keep
                            } else {
                                Role::Param
                            };
                            self.a.sites.push(Site {
                                node: id,
                                kind: SiteKind::Tensor { slot, axis, role },
                                layout: l0.clone(),
                            });
                        }
                        Err(()) => {
                            self.freeze_all(
                                node,
                                not_understood(
                                    "broadcasts a constant that does not line up with the channels",
                                ),
                            );
                            return Ok(());
                        }
                    }
                }
                self.set(node.output(0), l0);
            }
            "Concat" => {
                let axis = node.get_int("axis")?.unwrap_or(0);
                let from_end = match (axis, l0.rank) {
                    (a, _) if a < 0 => (-a) as usize,
                    (a, Some(r)) if (a as usize) < r => r - a as usize,
                    _ => {
                        self.freeze_all(
                            node,
                            not_understood("concatenates on an axis of unknown position"),
                        );
                        return Ok(());
                    }
                };
                if ins.iter().any(|l| l.is_none()) {
                    self.freeze_all(
                        node,
                        not_understood("concatenates channels with a tensor of unknown channels"),
                    );
                    return Ok(());
                }
                let ls: Vec<Layout> = ins.into_iter().flatten().collect();
                if from_end != l0.from_end {
                    for l in &ls[1..] {
                        if !self.tie(&ls[0], l) {
                            self.freeze_all(
                                node,
                                not_understood("concatenates channel tensors that do not line up"),
                            );
                            return Ok(());
                        }
                    }
                    self.set(node.output(0), l0);
                    return Ok(());
                }
                if ls.iter().any(|l| l.block != 1 || l.from_end != l0.from_end) {
                    self.freeze_all(node, not_understood("concatenates flattened channels"));
                    return Ok(());
                }
                let segs = ls.iter().flat_map(|l| l.segs.clone()).collect();
                let rank = ls.iter().find_map(|l| l.rank);
                self.set(
                    node.output(0),
                    Layout {
                        segs,
                        from_end: l0.from_end,
                        rank,
                        block: 1,
                    },
                );
            }
            "Split" => {
                let Some(v) = SplitView::of(node, self.opset)? else {
                    return Ok(());
                };
                let from_end = match (v.axis, l0.rank) {
                    (a, _) if a < 0 => (-a) as usize,
                    (a, Some(r)) if (a as usize) < r => r - a as usize,
                    _ => {
                        self.freeze_all(
                            node,
                            not_understood("splits on an axis of unknown position"),
                        );
                        return Ok(());
                    }
                };
                if from_end != l0.from_end {
                    for o in node.outputs.clone() {
                        self.set(o, l0.clone());
                    }
                    return Ok(());
                }
                let c = l0.channels();
                let k = node.outputs.len();
                let sizes: Option<Vec<usize>> = match &v.split {
                    IntsArg::Attr(s) => uz(s),
                    IntsArg::Input(i) => self
                        .cst(Some(*i))
                        .and_then(|t| t.to_i64_vec().ok())
                        .and_then(|s| uz(&s)),
                    IntsArg::Absent => (k > 0 && c % k == 0).then(|| vec![c / k; k]),
                };
                let Some(sizes) =
                    sizes.filter(|s| s.len() == k && s.iter().sum::<usize>() == c && l0.block == 1)
                else {
                    self.freeze_all(
                        node,
                        not_understood("splits the channels in a way not understood"),
                    );
                    return Ok(());
                };
                let mut outs = Vec::new();
                let mut off = 0;
                for s in sizes {
                    let l = self.cut(&l0, off, off + s);
                    off += s;
                    outs.push(l);
                }
                for (o, l) in node.outputs.clone().into_iter().zip(outs.clone()) {
                    self.set(o, l);
                }
                self.a.sites.push(Site {
                    node: id,
                    kind: SiteKind::SplitSizes { outputs: outs },
                    layout: l0,
                });
            }
            "Flatten" | "Reshape" | "Squeeze" => self.reshape(id, node, l0)?,
            "Shape"
                if x_only_layout(&ins)
                    && l0.rank.is_some()
                    && node.attr("start").is_none()
                    && node.attr("end").is_none() =>
            {
                if let (Some(out), Some(x)) = (node.output(0), node.input(0)) {
                    self.shapes.insert(out, (x, l0));
                }
            }
            "Transpose" if x_only_layout(&ins) => {
                // the channel axis moves to where the permutation puts it; its segments and block go along
                let Some(rank) = l0.rank else {
                    self.freeze_all(node, not_understood("transposes channels of unknown rank"));
                    return Ok(());
                };
                let perm: Vec<i64> = node
                    .get_ints("perm")?
                    .unwrap_or_else(|| (0..rank as i64).rev().collect());
                let ch = (rank - l0.from_end) as i64;
                let mut sorted = perm.clone();
                sorted.sort();
                let Some(j) = perm
                    .iter()
                    .position(|&a| a == ch)
                    .filter(|_| sorted == (0..rank as i64).collect::<Vec<_>>())
                else {
                    self.freeze_all(
                        node,
                        not_understood("has a perm that is not a permutation of its rank"),
                    );
                    return Ok(());
                };
                self.set(
                    node.output(0),
                    Layout {
                        from_end: rank - j,
                        ..l0
                    },
                );
            }
            "Pad" if x_only_layout(&ins) => {
                // pads on other axes keep channels; a pruned (zero) channel stays zero when padded with 0
                // (constant mode) or with its own values (reflect / edge / wrap)
                let Some(rank) = l0.rank else {
                    self.freeze_all(node, not_understood("pads channels of unknown rank"));
                    return Ok(());
                };
                let (pads, value) = if self.opset >= 11 {
                    let pads = self.cst(node.input(1)).and_then(|t| t.to_i64_vec().ok());
                    let value = match node.input(2) {
                        None => Some(0.0),
                        Some(v) => self
                            .cst(Some(v))
                            .and_then(|t| t.to_f64_vec().ok())
                            .and_then(|v| {
                                if v.is_empty() {
                                    Some(0.0)
                                } else {
                                    v.first().copied()
                                }
                            }),
                    };
                    (pads, value)
                } else {
                    let pads = node.get_ints("pads")?;
                    let value = node.get_float("value")?.map(f64::from).or(Some(0.0));
                    (pads, value)
                };
                let mode = node
                    .get_string("mode")?
                    .unwrap_or_else(|| "constant".into());
                let ch = rank - l0.from_end;
                let ok = node.input(3).is_none()
                    && pads
                        .as_ref()
                        .is_some_and(|p| p.len() == 2 * rank && p[ch] == 0 && p[rank + ch] == 0)
                    && (mode != "constant" || value == Some(0.0));
                if !ok {
                    self.freeze_all(
                        node,
                        not_understood(
                            "pads the channel axis, pads with a non-zero value, or has pads / axes that are not constants",
                        ),
                    );
                    return Ok(());
                }
                self.set(node.output(0), l0);
            }
            "Slice"
                if self.opset >= 10
                    && ins[0].is_some()
                    && ins.iter().skip(1).all(|l| l.is_none()) =>
            {
                self.slice(id, node, l0)?
            }
            "Resize" | "Upsample"
                if ins[0].is_some() && ins.iter().skip(1).all(|l| l.is_none()) =>
            {
                // scales (input 2 of Resize, 1 of Upsample) must keep the channel axis; sizes would spell it
                let (scales_slot, sizes_slot) = if op == "Resize" {
                    (2, Some(3))
                } else {
                    (1, None)
                };
                let sizes = sizes_slot
                    .and_then(|s| node.input(s))
                    .and_then(|v| self.cst(Some(v)));
                let has_sizes = sizes_slot.and_then(|s| node.input(s)).is_some()
                    && sizes
                        .as_ref()
                        .is_none_or(|t| t.dims.iter().product::<i64>() != 0);
                let scales = node
                    .input(scales_slot)
                    .and_then(|v| self.cst(Some(v)))
                    .and_then(|t| t.to_f64_vec().ok());
                let ok = !has_sizes
                    && scales.is_some_and(|sc| {
                        sc.len() >= l0.from_end && sc[sc.len() - l0.from_end] == 1.0
                    });
                if !ok {
                    self.freeze_all(
                        node,
                        not_understood("resizes with sizes or a scale on the channel axis"),
                    );
                    return Ok(());
                }
                self.set(node.output(0), l0);
            }
            _ => self.freeze_all(
                node,
                not_understood("reads the channels and is not understood"),
            ),
        }
        Ok(())
    }

    /// An operand that is `Reshape(constant, constant shape)` read only here (a bias exported as a 1-D
    /// tensor reshaped to [1, C, 1, 1]): its data and its shape argument become sites. False when `v` is
    /// not such a value or does not line up with the channels.
    fn reshaped_const(&mut self, v: ValueId, l: &Layout, op: &str, slot: usize) -> bool {
        let Some((rid, rn)) = self.g.producer(v) else {
            return false;
        };
        if !rn.op.is("Reshape")
            || !rn.op.is_default_domain()
            || self.g.uses(v).len() != 1
            || self.g.is_output(v)
        {
            return false;
        }
        let (Some(data), Some(shape)) = (self.cst(rn.input(0)), self.cst(rn.input(1))) else {
            return false;
        };
        let Ok(shape) = shape.to_i64_vec() else {
            return false;
        };
        let n = (l.channels() * l.block) as i64;
        if shape.len() < l.from_end || shape.iter().any(|&d| d <= 0) {
            return false;
        }
        let idx = shape.len() - l.from_end;
        if shape[idx] == 1 {
            return true;
        }
        // data must be 1-D of n values (or n along its only non-1 axis)
        let non1: Vec<usize> = (0..data.dims.len())
            .filter(|&a| data.dims[a] != 1)
            .collect();
        if shape[idx] != n
            || non1.len() != 1
            || data.dims[non1[0]] != n
            || shape.iter().filter(|&&d| d != 1).count() != 1
        {
            return false;
        }
        if self.g.uses(rn.input(0).expect("checked")).len() != 1 {
            return false;
        }
        let role = if matches!(op, "Div" | "Pow") || (op == "Sub" && slot == 0) {
            Role::Keep
        } else {
            Role::Param
        };
        self.a.sites.push(Site {
            node: rid,
            kind: SiteKind::Tensor {
                slot: 0,
                axis: non1[0],
                role,
            },
            layout: l.clone(),
        });
        self.a.sites.push(Site {
            node: rid,
            kind: SiteKind::ReshapeDim { index: idx },
            layout: l.clone(),
        });
        true
    }

    /// The constant 1-D int64 arguments of a Gather (axis 0) or Slice (axis 0, step 1, opset >= 10) on a shape
    /// vector of `len` entries: the positions it picks. None for anything else.
    fn shape_pick(&self, node: &Node, len: usize) -> Result<Option<Vec<usize>>> {
        let ints = |s: usize| {
            node.input(s)
                .and_then(|v| self.cst(Some(v)))
                .and_then(|t| t.to_i64_vec().ok())
        };
        let norm = |i: i64| {
            let i = if i < 0 { i + len as i64 } else { i };
            usize::try_from(i).ok().filter(|&i| i < len)
        };
        if node.op.is("Gather") && node.get_int("axis")?.unwrap_or(0) == 0 {
            return Ok(ints(1).and_then(|ix| ix.into_iter().map(norm).collect()));
        }
        if node.op.is("Slice") && self.opset >= 10 {
            let (Some(st), Some(en)) = (ints(1), ints(2)) else {
                return Ok(None);
            };
            let axes_ok = node.input(3).is_none() || ints(3).is_some_and(|a| a == [0]);
            let steps_ok = node.input(4).is_none() || ints(4).is_some_and(|a| a == [1]);
            if st.len() != 1 || en.len() != 1 || !axes_ok || !steps_ok {
                return Ok(None);
            }
            let n = len as i64;
            let clamp = |v: i64| if v < 0 { (v + n).clamp(0, n) } else { v.min(n) };
            let (a, b) = (clamp(st[0]), clamp(en[0]));
            return Ok(Some((a.max(0) as usize..b.max(a) as usize).collect()));
        }
        Ok(None)
    }

    /// Does `node` (reading a `Shape` of a channel value of layout `l` at input 0) pick only other dims?
    fn picks_other_dims(&self, node: &Node, l: &Layout) -> Result<bool> {
        let Some(rank) = l.rank else { return Ok(false) };
        let ch = rank - l.from_end;
        Ok(self
            .shape_pick(node, rank)?
            .is_some_and(|p| !p.contains(&ch)))
    }

    /// The elements of a computed shape argument: constants, Concat (axis 0), Cast, Unsqueeze / Squeeze of one
    /// element, and Gather / Slice of `Shape(x)` (dims of x). None when not understood.
    fn shape_elems(&self, v: ValueId, depth: usize) -> Option<Vec<ShapeEl>> {
        if depth > 16 {
            return None;
        }
        if let Some(t) = self.cst(Some(v)) {
            return Some(
                t.to_i64_vec()
                    .ok()?
                    .into_iter()
                    .map(ShapeEl::Const)
                    .collect(),
            );
        }
        let (_, p) = self.g.producer(v)?;
        if !p.op.is_default_domain() {
            return None;
        }
        let op = p.op.op_type.as_str();
        match op {
            "Concat" if p.get_int("axis").ok()?.unwrap_or(0) == 0 => {
                let mut out = Vec::new();
                for i in p.inputs.iter() {
                    out.extend(self.shape_elems((*i)?, depth + 1)?);
                }
                Some(out)
            }
            "Cast" | "Unsqueeze" | "Squeeze" => {
                let e = self.shape_elems(p.input(0)?, depth + 1)?;
                (op == "Cast" || e.len() == 1).then_some(e)
            }
            "Gather" | "Slice" => {
                let src = p.input(0)?;
                let (_, sp) = self.g.producer(src)?;
                if !sp.op.is("Shape") || sp.attr("start").is_some() || sp.attr("end").is_some() {
                    return None;
                }
                let x = sp.input(0)?;
                let rank = match self.shapes.get(&src) {
                    Some((_, l)) => l.rank?,
                    None => declared_dims(self.g, x)?.len(),
                };
                let picks = self.shape_pick(p, rank).ok()??;
                Some(picks.into_iter().map(|a| ShapeEl::Dim(x, a)).collect())
            }
            _ => None,
        }
    }

    /// Slice with constant starts / ends / axes / steps: on another axis the layout passes; on the channel
    /// axis with step 1 the output is the cut [start, end).
    fn slice(&mut self, id: NodeId, node: &Node, l: Layout) -> Result<()> {
        let name = node.name();
        let why = |w: &str| format!("node '{name}' (Slice) {w}");
        let read = |s: usize| {
            node.input(s)
                .map(|v| self.cst(Some(v)).and_then(|t| t.to_i64_vec().ok()))
        };
        let (Some(Some(starts)), Some(Some(ends))) = (read(1), read(2)) else {
            self.freeze_all(node, why("has starts / ends that are not constants"));
            return Ok(());
        };
        let axes = match read(3) {
            None => Some((0..starts.len() as i64).collect::<Vec<_>>()),
            Some(a) => a,
        };
        let steps = match read(4) {
            None => Some(vec![1; starts.len()]),
            Some(s) => s,
        };
        let (Some(axes), Some(steps)) = (axes, steps) else {
            self.freeze_all(node, why("has axes / steps that are not constants"));
            return Ok(());
        };
        if axes.len() != starts.len() || ends.len() != starts.len() || steps.len() != starts.len() {
            self.freeze_all(node, why("has arguments of different lengths"));
            return Ok(());
        }
        let mut hit = None;
        for (k, &a) in axes.iter().enumerate() {
            let from_end = match (a, l.rank) {
                (a, _) if a < 0 => (-a) as usize,
                (a, Some(r)) if (a as usize) < r => r - a as usize,
                _ => {
                    self.freeze_all(node, why("slices an axis of unknown position"));
                    return Ok(());
                }
            };
            if from_end == l.from_end {
                hit = Some(k);
            }
        }
        let Some(k) = hit else {
            self.set(node.output(0), l);
            return Ok(());
        };
        let n = (l.channels() * l.block) as i64;
        let clamp = |v: i64| if v < 0 { (v + n).clamp(0, n) } else { v.min(n) };
        let (a, b) = (clamp(starts[k]), clamp(ends[k]));
        if steps[k] != 1 || l.block != 1 || a >= b {
            self.freeze_all(
                node,
                why("slices the channels with a step or an empty range"),
            );
            return Ok(());
        }
        let (a, b) = (a as usize, b as usize);
        let out = self.cut(&l, a, b);
        self.a.sites.push(Site {
            node: id,
            kind: SiteKind::SliceRange {
                index: k,
                start: a,
                end: b,
            },
            layout: l,
        });
        self.set(node.output(0), out);
        Ok(())
    }

    /// The sub-layout of channel positions [a, b) (cuts the groups it splits).
    fn cut(&mut self, l: &Layout, a: usize, b: usize) -> Layout {
        let mut segs = Vec::new();
        let mut off = 0;
        for s in &l.segs {
            let (lo, hi) = (off.max(a), (off + s.len).min(b));
            if lo < hi {
                let seg = Seg {
                    group: s.group,
                    start: s.start + lo - off,
                    len: hi - lo,
                };
                let r = self.a.root(s.group);
                self.a.groups[r].cuts.insert(seg.start);
                self.a.groups[r].cuts.insert(seg.start + seg.len);
                segs.push(seg);
            }
            off += s.len;
        }
        Layout {
            segs,
            from_end: l.from_end,
            rank: l.rank,
            block: l.block,
        }
    }

    /// Tie two layouts read by one element-wise op: whole groups of equal size pair up; false when they cannot.
    fn tie(&mut self, x: &Layout, y: &Layout) -> bool {
        if x.segs.len() != y.segs.len() || x.block != y.block || x.from_end != y.from_end {
            return false;
        }
        for (s, t) in x.segs.iter().zip(&y.segs) {
            let same = self.a.root(s.group) == self.a.root(t.group)
                && s.start == t.start
                && s.len == t.len;
            if same {
                continue;
            }
            let whole =
                |a: &Analysis, s: &Seg| s.start == 0 && s.len == a.groups[a.root(s.group)].channels;
            if !(whole(&self.a, s) && whole(&self.a, t) && s.len == t.len) {
                return false;
            }
            self.a.union(s.group, t.group);
        }
        true
    }

    /// Flatten / Reshape / Squeeze: channels on axis 1 of [N, C, ...] become blocks of the last axis of [N, F].
    fn reshape(&mut self, id: NodeId, node: &Node, l: Layout) -> Result<()> {
        let op = node.op.op_type.as_str();
        let name = node.name();
        let why = |w: &str| format!("node '{name}' ({op}) {w}");
        let Some(rank) = l.rank else {
            self.freeze_all(node, why("reshapes channels of unknown rank"));
            return Ok(());
        };
        if op == "Squeeze" {
            let v = SqueezeView::of(node, self.opset)?;
            let axes: Option<Vec<i64>> = v.and_then(|v| match v.axes {
                IntsArg::Attr(a) => Some(a),
                IntsArg::Input(i) => self.cst(Some(i)).and_then(|t| t.to_i64_vec().ok()),
                IntsArg::Absent => None,
            });
            let ch = rank - l.from_end;
            let axes: Option<Vec<usize>> = axes.map(|a| {
                a.iter()
                    .map(|&x| {
                        if x < 0 {
                            (rank as i64 + x) as usize
                        } else {
                            x as usize
                        }
                    })
                    .collect()
            });
            match axes {
                Some(a) if a.iter().all(|&x| x > ch && x < rank) => {
                    let k = a.iter().collect::<BTreeSet<_>>().len();
                    self.set(
                        node.output(0),
                        Layout {
                            from_end: l.from_end - k,
                            rank: Some(rank - k),
                            ..l
                        },
                    );
                }
                Some(a) if a.iter().all(|&x| x < ch) => {
                    let k = a.iter().collect::<BTreeSet<_>>().len();
                    self.set(
                        node.output(0),
                        Layout {
                            rank: Some(rank - k),
                            ..l
                        },
                    );
                }
                _ => self.freeze_all(node, why("squeezes axes not understood")),
            }
            return Ok(());
        }
        let ch = rank - l.from_end;
        let x = node.input(0).expect("has input 0");
        let after: Option<usize> = if ch + 1 == rank {
            Some(1)
        } else if self.g.producer(x).is_some_and(|(_, p)| {
            matches!(p.op.op_type.as_str(), "GlobalAveragePool" | "GlobalMaxPool")
        }) {
            Some(1)
        } else {
            declared_dims(self.g, x)
                .filter(|d| d.len() == rank)
                .and_then(|d| {
                    d[ch + 1..]
                        .iter()
                        .map(|x| x.and_then(|x| usize::try_from(x).ok()))
                        .product()
                })
        };
        let Some(after) = after else {
            self.freeze_all(node, why("flattens channels over dims of unknown size"));
            return Ok(());
        };
        if op == "Flatten" {
            let axis = node.get_int("axis")?.unwrap_or(1);
            let axis = if axis < 0 { rank as i64 + axis } else { axis };
            if axis != ch as i64 || ch != 1 {
                self.freeze_all(node, why("flattens at an axis other than the channel axis"));
                return Ok(());
            }
            self.set(
                node.output(0),
                Layout {
                    from_end: 1,
                    rank: Some(2),
                    block: l.block * after,
                    segs: l.segs,
                },
            );
            return Ok(());
        }
        // Reshape to [N, F] (or [0 | -1 | N, -1 | F]); a computed [dim 0 of x, -1] (`Shape(x)[0:1]` concatenated
        // with -1, as exporters flatten) is the same with nothing to edit
        let computed = self.cst(node.input(1)).is_none()
            && node.input(1).and_then(|s| self.shape_elems(s, 0))
                == Some(vec![ShapeEl::Dim(x, 0), ShapeEl::Const(-1)]);
        if computed && ch == 1 {
            self.set(
                node.output(0),
                Layout {
                    from_end: 1,
                    rank: Some(2),
                    block: l.block * after,
                    segs: l.segs,
                },
            );
            return Ok(());
        }
        let shape = self.cst(node.input(1)).and_then(|t| t.to_i64_vec().ok());
        let f = (l.channels() * l.block * after) as i64;
        let Some(shape) = shape.filter(|s| {
            s.len() == 2 && ch == 1 && (s[1] == -1 || s[1] == f) && s[0] != -1
                || s.len() == 2 && ch == 1 && s[1] == f
        }) else {
            self.freeze_all(
                node,
                why("reshapes the channels into a shape not understood"),
            );
            return Ok(());
        };
        if shape[1] != -1 {
            self.a.sites.push(Site {
                node: id,
                kind: SiteKind::ReshapeDim { index: 1 },
                layout: Layout {
                    from_end: 1,
                    rank: Some(2),
                    block: l.block * after,
                    segs: l.segs.clone(),
                },
            });
        }
        self.set(
            node.output(0),
            Layout {
                from_end: 1,
                rank: Some(2),
                block: l.block * after,
                segs: l.segs,
            },
        );
        Ok(())
    }
}

/// Only input 0 carries channels.
fn x_only_layout(ins: &[Option<Layout>]) -> bool {
    ins.first().is_some_and(|l| l.is_some()) && ins.iter().skip(1).all(|l| l.is_none())
}

/// Analyse graph `g` (ai.onnx opset `opset`): the main graph (`display` empty) or the body at `display`
/// (`if_0/then_branch`), whose outputs are boundaries. Values a body reads from an enclosing graph carry no
/// layout here (they are unknown operands: a node combining them with channels freezes), and weights it reads
/// from an enclosing graph are not constants here (their readers are no producers and freeze what they read):
/// editing such a weight would change it for every reader in every branch.
pub fn analyse(g: &Graph, opset: i64, display: &str) -> Result<Analysis> {
    let mut w = Walker {
        g,
        opset,
        a: Analysis::default(),
        lay: HashMap::new(),
        shapes: HashMap::new(),
    };
    for (id, node) in g.nodes() {
        w.node(id, node)?;
    }
    // values that leave the graph or are read by a subgraph
    let mut values: Vec<(ValueId, Layout)> = w.lay.iter().map(|(v, l)| (*v, l.clone())).collect();
    values.sort_by_key(|(v, _)| *v);
    let producer_name = |v: ValueId| {
        g.producer(v)
            .map(|(_, n)| n.name().to_string())
            .unwrap_or_default()
    };
    let capturer = |v: ValueId| {
        g.uses(v)
            .iter()
            .find(|u| u.slot == UseSlot::Capture)
            .and_then(|u| g.node(u.node))
            .map(|n| n.name().to_string())
    };
    for (v, l) in &values {
        if g.is_output(*v) {
            let why = if display.is_empty() {
                format!("value '{}' is a graph output", g.value_name(*v))
            } else {
                format!(
                    "value '{}' (from node '{}') is an output of the body '{display}'",
                    g.value_name(*v),
                    producer_name(*v)
                )
            };
            w.a.freeze(l, &why);
        } else if let Some(owner) = capturer(*v) {
            let why = format!(
                "value '{}' is read inside a subgraph of node '{owner}'",
                g.value_name(*v)
            );
            w.a.freeze(l, &why);
        }
    }
    // a Shape of channels that leaves the graph or enters a subgraph reads the channel count
    let mut shapes: Vec<(ValueId, Layout)> =
        w.shapes.iter().map(|(v, (_, l))| (*v, l.clone())).collect();
    shapes.sort_by_key(|(v, _)| *v);
    for (v, l) in &shapes {
        if g.is_output(*v) || g.uses(*v).iter().any(|u| u.slot == UseSlot::Capture) {
            let why = format!(
                "the shape '{}' of channels leaves the graph",
                g.value_name(*v)
            );
            w.a.freeze(l, &why);
        }
    }
    // grouped convs: a block of one channel cannot lose any; a Split / Slice cutting inside a block would let
    // the blocks lose different counts
    for r in w.a.roots() {
        let gr = &w.a.groups[r];
        if gr.blocks <= 1 || gr.frozen.is_some() {
            continue;
        }
        let by = gr.blocks_by.clone().unwrap_or_default();
        let why = if !gr.channels.is_multiple_of(gr.blocks) || gr.channels / gr.blocks < 2 {
            Some(format!(
                "node '{by}' (grouped Conv) splits the {} channels into {} blocks of fewer than two",
                gr.channels, gr.blocks
            ))
        } else {
            let bl = gr.channels / gr.blocks;
            gr.cuts
                .iter()
                .find(|&&c| c % bl != 0)
                .map(|c| {
                    format!(
                        "node '{by}' (grouped Conv) needs the same channels pruned in each of {} blocks, but a Split / Slice cuts the group at channel {c}, inside a block",
                        gr.blocks
                    )
                })
        };
        if let Some(why) = why {
            w.a.groups[r].frozen = Some(why);
        }
    }
    w.a.values = values;
    Ok(w.a)
}
