"""The canary cases of tools/make_canaries.py: each a tiny graph, seeded feeds, what it exercises, what tract is
expected to do with it and, where the spec is simple enough, a numpy computation of its outputs.

Every random array comes from a numpy Generator seeded from its case's name, so adding a case changes no other.
`all_cases()` builds the list.
"""
import zlib

import numpy as np
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

# what tract is expected to do with a case (cases.json "tract")
EXACT = "exact"  # runs it, outputs equal ORT's within float32 summation noise, no remark
FOLDED = "folded"  # runs it after folding a form it cannot load into float weights, with a remark
REFUSED = "refused"  # cannot run it: a clear error, exit code 5

CASES = []


class Case:
    """One canary: a graph, its feeds and what it is for."""

    def __init__(
        self, name, exercises, nodes, inputs, outputs, inits, feeds, opset=13, tract=EXACT, mention=None, numpy_ref=None
    ):
        # a case tract does not run exactly names a word its remark (folded) or error (refused) must contain
        assert (tract == EXACT) == (mention is None), name
        self.name = name
        self.exercises = exercises
        self.nodes = nodes
        self.inputs = inputs  # [(name, elem type, shape)]
        self.outputs = outputs
        self.inits = inits
        self.feeds = feeds  # {input name: array}
        self.opset = opset
        self.tract = tract
        self.mention = mention
        # numpy_ref(feeds) -> [(float64 or integer array, bound array or 0)] per output, or None
        self.numpy_ref = numpy_ref

    def model(self):
        vi = helper.make_tensor_value_info
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [vi(n, t, s) for n, t, s in self.inputs],
            [vi(n, t, s) for n, t, s in self.outputs],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="make_canaries")
        # the lowest IR version the opset needs (onnx.helper.VERSION_TABLE), so old readers are exercised too
        m.ir_version = {10: 5, 11: 6, 13: 7, 15: 8, 19: 9, 21: 10}[self.opset]
        return m


def case(*args, **kw):
    CASES.append(Case(*args, **kw))


def rng(*parts):
    """A Generator seeded from a case name (and a label), independent of every other case."""
    return np.random.default_rng(zlib.crc32("/".join(parts).encode()))


def normal(r, *shape, scale=1.0):
    return (r.standard_normal(shape) * scale).astype(np.float32)


def ints(r, lo, hi, shape, dtype):
    """Uniform integers in [lo, hi] inclusive."""
    return r.integers(lo, hi + 1, size=shape).astype(dtype)


def const(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def packed(name, dtype, arr):
    """A 4-bit tensor (INT4 / UINT4): onnx packs two values per byte."""
    arr = np.asarray(arr)
    return helper.make_tensor(name, dtype, list(arr.shape), arr.flatten().tolist())


def node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


F, U8, I8, I32, B = TP.FLOAT, TP.UINT8, TP.INT8, TP.INT32, TP.BOOL
EPS32 = float(np.finfo(np.float32).eps)


# ---- numpy references ------------------------------------------------------------------------------------------


def expand(param, shape, axis, block=0):
    """Broadcast a per-tensor, per-axis or blocked quantization parameter to `shape`."""
    p = np.asarray(param)
    if p.ndim == 0:
        return np.broadcast_to(p, shape)
    if block:
        return np.repeat(p, block, axis=axis).take(range(shape[axis]), axis=axis)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return p.reshape(view)


def dq(q, scale, zp=0, axis=1, block=0):
    """DequantizeLinear: (q - zp) * scale, formed exactly in float64 (an integer of at most 9 bits times a float32)
    and rounded once to float32, as the spec's float32 product is."""
    q = np.asarray(q).astype(np.int64)
    scale = np.asarray(scale, np.float32)
    exact = (q - expand(zp, q.shape, axis, block).astype(np.int64)) * expand(scale, q.shape, axis, block).astype(
        np.float64
    )
    return exact.astype(np.float32)


def q(x, scale, zp, lo, hi, axis=1):
    """QuantizeLinear: round(x / scale) half to even, + zp, saturated to [lo, hi]. The division is float32, as
    the spec computes it (x / scale may not be exact: the float32 quotient is what gets rounded)."""
    x = np.asarray(x, np.float32)
    s = expand(np.asarray(scale, np.float32), x.shape, axis)
    r = np.rint((x / s).astype(np.float32)).astype(np.int64)
    return np.clip(r + expand(zp, x.shape, axis).astype(np.int64), lo, hi)


def matmul_bound(a, b):
    """|a @ b - fl(a @ b)| <= n * eps32 * (|a| @ |b|) for float32 sums of n products (plus the rounding of each
    product, covered by the same factor): the summation order is the engine's choice."""
    n = a.shape[-1]
    return (n + 1) * EPS32 * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))


# ---- DequantizeLinear on constant weights (what weight-only quantization writes) ------------------------------


def dq_weight_cases():
    r = rng("dql_int8_per_tensor")
    w, x = ints(r, -128, 127, (4, 6), np.int8), normal(r, 4, 6)
    case(
        "dql_int8_per_tensor",
        "DequantizeLinear of an int8 initializer, scalar scale and zero point, added to the input",
        [node("DequantizeLinear", ["W", "s", "zp"], ["Wf"]), node("Add", ["X", "Wf"], ["Y"])],
        [("X", F, [4, 6])],
        [("Y", F, [4, 6])],
        [const("W", w), const("s", np.float32(0.0625)), const("zp", np.int8(-2))],
        {"X": x},
        # the dequantized weight is exact in float32, so the sum is one rounding: numpy rounds it the same way
        numpy_ref=lambda f, w=w: [((f["X"] + dq(w, 0.0625, -2)), 0)],
    )
    for axis in (0, 1):
        name = f"dql_int8_per_axis{axis}"
        r = rng(name)
        n = (4, 6)[axis]
        w, x = ints(r, -128, 127, (4, 6), np.int8), normal(r, 4, 6)
        s = (r.random(n) * 0.08 + 0.01).astype(np.float32)
        zp = ints(r, -6, 6, n, np.int8)
        case(
            name,
            f"DequantizeLinear of an int8 initializer with one scale and zero point per index of axis {axis}",
            [node("DequantizeLinear", ["W", "s", "zp"], ["Wf"], axis=axis), node("Add", ["X", "Wf"], ["Y"])],
            [("X", F, [4, 6])],
            [("Y", F, [4, 6])],
            [const("W", w), const("s", s), const("zp", zp)],
            {"X": x},
            numpy_ref=lambda f, w=w, s=s, zp=zp, axis=axis: [
                (f["X"] + dq(w, s, zp, axis), 0)
            ],
        )
    r = rng("dql_uint8_asymmetric_per_axis1_matmul")
    w, x = ints(r, 0, 255, (12, 5), np.uint8), normal(r, 3, 12)
    s = (r.random(5) * 0.02 + 0.004).astype(np.float32)
    zp = ints(r, 100, 160, 5, np.uint8)
    case(
        "dql_uint8_asymmetric_per_axis1_matmul",
        "uint8 MatMul weight with a scale and a non-zero zero point per output column (--dtype uint8 --asymmetric)",
        [node("DequantizeLinear", ["W", "s", "zp"], ["Wf"], axis=1), node("MatMul", ["X", "Wf"], ["Y"])],
        [("X", F, ["N", 12])],
        [("Y", F, ["N", 5])],
        [const("W", w), const("s", s), const("zp", zp)],
        {"X": x},
        numpy_ref=lambda f, w=w, s=s, zp=zp: [
            (f["X"].astype(np.float64) @ dq(w, s, zp, 1), matmul_bound(f["X"], dq(w, s, zp, 1)))
        ],
    )
    for axis, mode in ((1, "per_axis1"), (None, "per_tensor")):
        name = f"dql_matmul_weight_{mode}"
        r = rng(name)
        w, x = ints(r, -127, 127, (16, 8), np.int8), normal(r, 5, 16)
        s = (r.random(8) * 0.02 + 0.005).astype(np.float32) if axis else np.float32(0.0125)
        attrs = {"axis": axis} if axis else {}
        case(
            name,
            "symmetric int8 MatMul weight (zero point 0), "
            + ("one scale per output column" if axis else "one scale for the tensor")
            + "; ORT's default optimizations would quantize X dynamically here",
            [node("DequantizeLinear", ["W", "s", "zp"], ["Wf"], **attrs), node("MatMul", ["X", "Wf"], ["Y"])],
            [("X", F, ["N", 16])],
            [("Y", F, ["N", 8])],
            [const("W", w), const("s", s), const("zp", np.zeros(8, np.int8) if axis else np.int8(0))],
            {"X": x},
            numpy_ref=lambda f, w=w, s=s: [
                (f["X"].astype(np.float64) @ dq(w, s, 0, 1), matmul_bound(f["X"], dq(w, s, 0, 1)))
            ],
        )
    r = rng("dql_matmul_weight_per_tensor_opset10")
    w, x = ints(r, -127, 127, (10, 6), np.int8), normal(r, 2, 10)
    case(
        "dql_matmul_weight_per_tensor_opset10",
        "DequantizeLinear at opset 10 (no axis attribute yet): the per-tensor fallback for models that cannot be "
        "raised to opset 13",
        [node("DequantizeLinear", ["W", "s", "zp"], ["Wf"]), node("MatMul", ["X", "Wf"], ["Y"])],
        [("X", F, [2, 10])],
        [("Y", F, [2, 6])],
        [const("W", w), const("s", np.float32(0.03125)), const("zp", np.int8(0))],
        {"X": x},
        opset=10,
        numpy_ref=lambda f, w=w: [
            (f["X"].astype(np.float64) @ dq(w, 0.03125), matmul_bound(f["X"], dq(w, 0.03125)))
        ],
    )
    r = rng("o19_dql_int8_fp16_scale_per_axis0")
    w, x = ints(r, -127, 127, (4, 6), np.int8), normal(r, 4, 6).astype(np.float16)
    s16 = (r.random(4) * 0.03 + 0.005).astype(np.float16)
    case(
        "o19_dql_int8_fp16_scale_per_axis0",
        "opset-19 DequantizeLinear with a float16 scale per row (a float16 model's weight), added to a float16 input",
        [node("DequantizeLinear", ["W", "s", "zp"], ["Wf"], axis=0), node("Add", ["X", "Wf"], ["Y"])],
        [("X", TP.FLOAT16, [4, 6])],
        [("Y", TP.FLOAT16, [4, 6])],
        [const("W", w), const("s", s16), const("zp", np.zeros(4, np.int8))],
        {"X": x},
        opset=19,
        # tract 0.23.9 types DequantizeLinear's scale as float32 only ("Impossible to unify F16 with F32")
        tract=REFUSED,
        mention="F16",
        # (q - zp) * scale rounded once to float16, then one float16 addition
        numpy_ref=lambda f, w=w, s16=s16: [
            (f["X"] + (w.astype(np.float64) * s16.astype(np.float64)[:, None]).astype(np.float16), 0)
        ],
    )
    r = rng("dql_gather_table_per_axis0")
    table = ints(r, -127, 127, (7, 4), np.int8)
    s = (r.random(7) * 0.05 + 0.01).astype(np.float32)
    ids = np.array([[3, 0, 6], [6, 1, 3]], np.int64)
    case(
        "dql_gather_table_per_axis0",
        "an int8 embedding table dequantized per row (axis 0) and read by Gather with int64 ids",
        [node("DequantizeLinear", ["T", "s", "zp"], ["Tf"], axis=0), node("Gather", ["Tf", "ids"], ["Y"], axis=0)],
        [("ids", TP.INT64, [2, 3])],
        [("Y", F, [2, 3, 4])],
        [const("T", table), const("s", s), const("zp", np.zeros(7, np.int8))],
        {"ids": ids},
        numpy_ref=lambda f, t=table, s=s: [(dq(t, s, 0, 0)[f["ids"]], 0)],
    )


# ---- DequantizeLinear of a runtime tensor, Q -> DQ on activations, QuantizeLinear itself --------------------------


def activation_cases():
    for axis in (0, 1):
        name = f"dql_int8_per_axis{axis}_runtime_input"
        r = rng(name)
        n = (4, 6)[axis]
        s = (r.random(n) * 0.08 + 0.01).astype(np.float32)
        zp = ints(r, -6, 6, n, np.int8)
        case(
            name,
            f"DequantizeLinear of an int8 graph input (not a constant tract could fold) per axis {axis}",
            [node("DequantizeLinear", ["Q", "s", "zp"], ["Y"], axis=axis)],
            [("Q", I8, [4, 6])],
            [("Y", F, [4, 6])],
            [const("s", s), const("zp", zp)],
            {"Q": ints(r, -128, 127, (4, 6), np.int8)},
            numpy_ref=lambda f, s=s, zp=zp, axis=axis: [(dq(f["Q"], s, zp, axis), 0)],
        )
    for dt, elem, zp, lo, hi in (("uint8", U8, np.uint8(128), 0, 255), ("int8", I8, np.int8(-4), -128, 127)):
        name = f"qdq_activation_{dt}"
        r = rng(name)
        case(
            name,
            f"QuantizeLinear -> DequantizeLinear ({dt}, per tensor) on an activation: static QDQ's fake quantization",
            [node("QuantizeLinear", ["X", "s", "zp"], ["Xq"]), node("DequantizeLinear", ["Xq", "s", "zp"], ["Y"])],
            [("X", F, ["N", 16])],
            [("Y", F, ["N", 16])],
            [const("s", np.float32(0.02)), const("zp", zp)],
            # wide enough to saturate at both ends
            {"X": normal(r, 3, 16, scale=2.0)},
            numpy_ref=lambda f, zp=zp, lo=lo, hi=hi: [(dq(q(f["X"], 0.02, zp, lo, hi), 0.02, zp), 0)],
        )
    r = rng("qdq_activation_int8_per_axis1")
    s = np.array([0.01, 0.025, 0.04, 0.0625], np.float32)
    zp = np.array([0, 2, -1, 3], np.int8)
    case(
        "qdq_activation_int8_per_axis1",
        "QuantizeLinear -> DequantizeLinear per channel (axis 1) on a rank-3 activation",
        [
            node("QuantizeLinear", ["X", "s", "zp"], ["Xq"], axis=1),
            node("DequantizeLinear", ["Xq", "s", "zp"], ["Y"], axis=1),
        ],
        [("X", F, [2, 4, 5])],
        [("Y", F, [2, 4, 5])],
        [const("s", s), const("zp", zp)],
        {"X": normal(r, 2, 4, 5)},
        numpy_ref=lambda f, s=s, zp=zp: [(dq(q(f["X"], s, zp, -128, 127), s, zp), 0)],
    )
    r = rng("quantize_only_uint8")
    case(
        "quantize_only_uint8",
        "QuantizeLinear alone: a uint8 graph output (integers compared, not floats)",
        [node("QuantizeLinear", ["X", "s", "zp"], ["Y"])],
        [("X", F, [3, 16])],
        [("Y", U8, [3, 16])],
        [const("s", np.float32(0.02)), const("zp", np.uint8(128))],
        {"X": normal(r, 3, 16, scale=2.0)},
        numpy_ref=lambda f: [(q(f["X"], 0.02, 128, 0, 255), 0)],
    )
    # x / 0.5 lands on .5 ties (rounded half to even), on both saturation limits, and just below a tie
    below_quarter = np.nextafter(np.float32(0.25), np.float32(0))
    edges = np.array(
        [[-0.25, 0.25, 0.75, 1.25, -0.75, -1.25, 63.25, 63.75, 64.25, 200.0, -200.0, below_quarter, -5.25, -5.75]],
        np.float32,
    )
    for dt, elem, zp, lo, hi in (("uint8", U8, np.uint8(10), 0, 255), ("int8", I8, np.int8(0), -128, 127)):
        case(
            f"quantize_ties_saturation_{dt}",
            f"QuantizeLinear to {dt} on values whose quotient is an exact .5 tie (half to even), past either "
            "limit (saturation) or one ulp below a tie",
            [node("QuantizeLinear", ["X", "s", "zp"], ["Y"])],
            [("X", F, [1, edges.shape[1]])],
            [("Y", elem, [1, edges.shape[1]])],
            [const("s", np.float32(0.5)), const("zp", zp)],
            {"X": edges},
            numpy_ref=lambda f, zp=zp, lo=lo, hi=hi: [(q(f["X"], 0.5, zp, lo, hi), 0)],
        )


# ---- Conv with dequantized weights, int32 bias, the full static QDQ Conv ------------------------------------------


def conv_cases():
    r = rng("conv weights")
    w = ints(r, -127, 127, (8, 3, 3, 3), np.int8)
    ws = (r.random(8) * 0.02 + 0.005).astype(np.float32)
    xs = np.float32(0.03)
    bias = ints(r, -2000, 2000, 8, np.int32)
    bs = (ws * xs).astype(np.float32)
    x_shape = [1, 3, 8, 8]
    y_shape = [1, 8, 8, 8]
    weight = [node("DequantizeLinear", ["W", "ws", "wzp"], ["Wf"], axis=0)]
    weight_inits = [const("W", w), const("ws", ws), const("wzp", np.zeros(8, np.int8))]
    case(
        "dql_conv_weight_per_channel",
        "Conv whose int8 weight is dequantized per output channel (axis 0)",
        weight + [node("Conv", ["X", "Wf"], ["Y"], pads=[1, 1, 1, 1])],
        [("X", F, x_shape)],
        [("Y", F, y_shape)],
        weight_inits,
        {"X": normal(rng("dql_conv_weight_per_channel"), *x_shape)},
    )
    case(
        "dql_int32_bias_conv",
        "Conv with a per-channel int8 weight and an int32 bias dequantized with scale = input scale x weight scale",
        weight
        + [
            node("DequantizeLinear", ["Bq", "bs", "bzp"], ["Bf"], axis=0),
            node("Conv", ["X", "Wf", "Bf"], ["Y"], pads=[1, 1, 1, 1]),
        ],
        [("X", F, x_shape)],
        [("Y", F, y_shape)],
        weight_inits + [const("Bq", bias), const("bs", bs), const("bzp", np.zeros(8, np.int32))],
        {"X": normal(rng("dql_int32_bias_conv"), *x_shape)},
    )
    case(
        "qdq_conv_full",
        "the static QDQ Conv: Q/DQ (uint8) on the input, per-channel int8 weight, int32 bias without zero point, "
        "Relu, Q/DQ on the output",
        [
            node("QuantizeLinear", ["X", "xs", "xzp"], ["Xq"]),
            node("DequantizeLinear", ["Xq", "xs", "xzp"], ["Xf"]),
        ]
        + weight
        + [
            node("DequantizeLinear", ["Bq", "bs"], ["Bf"], axis=0),
            node("Conv", ["Xf", "Wf", "Bf"], ["C"], pads=[1, 1, 1, 1]),
            node("Relu", ["C"], ["R"]),
            node("QuantizeLinear", ["R", "ys", "yzp"], ["Rq"]),
            node("DequantizeLinear", ["Rq", "ys", "yzp"], ["Y"]),
        ],
        [("X", F, x_shape)],
        [("Y", F, y_shape)],
        [const("xs", xs), const("xzp", np.uint8(128))]
        + weight_inits
        + [const("Bq", bias), const("bs", bs), const("ys", np.float32(0.05)), const("yzp", np.uint8(0))],
        {"X": normal(rng("qdq_conv_full"), *x_shape)},
    )
    return w, ws, xs, bias


# ---- opset 21: int8 again, then int4 / uint4 / blocked, which tract 0.23.9 cannot load -------------------------


def opset21_cases():
    r = rng("o21_dql_int8_per_tensor")
    w, x = ints(r, -128, 127, (4, 6), np.int8), normal(r, 4, 6)
    case(
        "o21_dql_int8_per_tensor",
        "opset-21 DequantizeLinear of an int8 initializer (the same form as at opset 13)",
        [node("DequantizeLinear", ["W", "s", "zp"], ["Wf"]), node("Add", ["X", "Wf"], ["Y"])],
        [("X", F, [4, 6])],
        [("Y", F, [4, 6])],
        [const("W", w), const("s", np.float32(0.0625)), const("zp", np.int8(5))],
        {"X": x},
        opset=21,
        numpy_ref=lambda f, w=w: [(f["X"] + dq(w, 0.0625, 5), 0)],
    )
    # low-bit weights feeding a MatMul [3, 8] x [8, 6]
    def low_bit(name, exercises, w_tensor, w_values, s, zp_tensor, zp_values, attrs, mention):
        r = rng(name)
        x = normal(r, 3, 8)
        axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
        inits = [w_tensor, const("s", s)] + ([zp_tensor] if zp_tensor is not None else [])
        ins = ["W", "s"] + (["zp"] if zp_tensor is not None else [])
        case(
            name,
            exercises,
            [node("DequantizeLinear", ins, ["Wf"], **attrs), node("MatMul", ["X", "Wf"], ["Y"])],
            [("X", F, [3, 8])],
            [("Y", F, [3, 6])],
            inits,
            {"X": x},
            opset=21,
            tract=FOLDED,
            mention=mention,
            numpy_ref=lambda f: [
                (
                    f["X"].astype(np.float64) @ dq(w_values, s, zp_values, axis, block),
                    matmul_bound(f["X"], dq(w_values, s, zp_values, axis, block)),
                )
            ],
        )

    r = rng("low-bit weights")
    w4 = ints(r, -8, 7, (8, 6), np.int8)
    low_bit(
        "o21_dql_int4_per_tensor",
        "int4 MatMul weight (two values per byte), scalar scale and int4 zero point",
        packed("W", TP.INT4, w4),
        w4,
        np.float32(0.125),
        helper.make_tensor("zp", TP.INT4, [], [-1]),
        -1,
        {},
        "int4",
    )
    u4 = (w4 + 8).astype(np.uint8)
    s6 = (r.random(6) * 0.1 + 0.01).astype(np.float32)
    low_bit(
        "o21_dql_uint4_per_axis1",
        "uint4 MatMul weight with a scale per output column and zero point 8",
        packed("W", TP.UINT4, u4),
        u4,
        s6,
        helper.make_tensor("zp", TP.UINT4, [6], [8] * 6),
        np.full(6, 8),
        {"axis": 1},
        "uint4",
    )
    sb = (r.random((2, 6)) * 0.1 + 0.01).astype(np.float32)
    zb = ints(r, -2, 2, (2, 6), np.int8)
    low_bit(
        "o21_dql_int4_block4_axis0",
        "int4 MatMul weight quantized in blocks of 4 along axis 0: scale and zero point [2, 6]",
        packed("W", TP.INT4, w4),
        w4,
        sb,
        packed("zp", TP.INT4, zb),
        zb,
        {"axis": 0, "block_size": 4},
        "block",
    )
    w8 = ints(r, -128, 127, (8, 6), np.int8)
    sb8 = (r.random((2, 6)) * 0.01 + 0.001).astype(np.float32)
    low_bit(
        "o21_dql_int8_block4_axis0",
        "int8 MatMul weight quantized in blocks of 4 along axis 0, no zero point",
        const("W", w8),
        w8,
        sb8,
        None,
        0,
        {"axis": 0, "block_size": 4},
        "block",
    )
    r = rng("o21_qdq_activation_int4")
    case(
        "o21_qdq_activation_int4",
        "QuantizeLinear -> DequantizeLinear to int4 on an activation: nothing constant to fold",
        [node("QuantizeLinear", ["X", "s", "zp"], ["Xq"]), node("DequantizeLinear", ["Xq", "s", "zp"], ["Y"])],
        [("X", F, [3, 16])],
        [("Y", F, [3, 16])],
        [const("s", np.float32(0.25)), helper.make_tensor("zp", TP.INT4, [], [0])],
        {"X": normal(r, 3, 16)},
        opset=21,
        tract=REFUSED,
        mention="int4",
        numpy_ref=lambda f: [(dq(q(f["X"], 0.25, 0, -8, 7), 0.25), 0)],
    )
    r = rng("o21_qdq_activation_uint8")
    case(
        "o21_qdq_activation_uint8",
        "opset-21 QuantizeLinear -> DequantizeLinear (uint8, per tensor) on an activation",
        [node("QuantizeLinear", ["X", "s", "zp"], ["Xq"]), node("DequantizeLinear", ["Xq", "s", "zp"], ["Y"])],
        [("X", F, [3, 16])],
        [("Y", F, [3, 16])],
        [const("s", np.float32(0.02)), const("zp", np.uint8(128))],
        {"X": normal(r, 3, 16, scale=2.0)},
        opset=21,
        numpy_ref=lambda f: [(dq(q(f["X"], 0.02, 128, 0, 255), 0.02, 128), 0)],
    )


# ---- the integer operators of quantized models made by other tools --------------------------------------------


def integer_op_cases(w, ws, xs, bias):
    def mm_integer(a, b, azp, bzp):
        return (a.astype(np.int64) - int(azp)) @ (b.astype(np.int64) - int(bzp))

    for kind, b_elem, b_lo, b_hi, bzp in (
        ("u8_s8", np.int8, -128, 127, np.int8(0)),
        ("u8_u8", np.uint8, 0, 255, np.uint8(128)),
    ):
        name = f"qlinearmatmul_{kind}"
        r = rng(name)
        case(
            name,
            f"QLinearMatMul, uint8 A x {np.dtype(b_elem).name} B, per-tensor scales, requantized to uint8",
            [node("QLinearMatMul", ["A", "as", "azp", "B", "bs", "bzp", "ys", "yzp"], ["Y"])],
            [("A", U8, [4, 16])],
            [("Y", U8, [4, 8])],
            [
                const("as", np.float32(0.02)),
                const("azp", np.uint8(128)),
                const("B", ints(r, b_lo, b_hi, (16, 8), b_elem)),
                const("bs", np.float32(0.01)),
                const("bzp", bzp),
                const("ys", np.float32(0.5)),
                const("yzp", np.uint8(100)),
            ],
            {"A": ints(r, 0, 255, (4, 16), np.uint8)},
        )
    case(
        "qlinearconv_u8_s8_per_channel",
        "QLinearConv, uint8 input, int8 weight with a scale per output channel, int32 bias",
        [node("QLinearConv", ["X", "xs", "xzp", "W", "ws", "wzp", "ys", "yzp", "B"], ["Y"], pads=[1, 1, 1, 1])],
        [("X", U8, [1, 3, 8, 8])],
        [("Y", U8, [1, 8, 8, 8])],
        [
            const("xs", xs),
            const("xzp", np.uint8(128)),
            const("W", w),
            const("ws", ws),
            const("wzp", np.zeros(8, np.int8)),
            const("ys", np.float32(0.05)),
            const("yzp", np.uint8(128)),
            const("B", bias),
        ],
        {"X": ints(rng("qlinearconv_u8_s8_per_channel"), 0, 255, (1, 3, 8, 8), np.uint8)},
    )
    r = rng("qlinearconv_u8_u8_per_tensor")
    case(
        "qlinearconv_u8_u8_per_tensor",
        "QLinearConv, uint8 input and weight, per-tensor scales and zero points, no bias",
        [node("QLinearConv", ["X", "xs", "xzp", "W", "ws", "wzp", "ys", "yzp"], ["Y"], pads=[1, 1, 1, 1])],
        [("X", U8, [1, 3, 8, 8])],
        [("Y", U8, [1, 8, 8, 8])],
        [
            const("xs", xs),
            const("xzp", np.uint8(128)),
            const("W", ints(r, 0, 255, (8, 3, 3, 3), np.uint8)),
            const("ws", np.float32(0.01)),
            const("wzp", np.uint8(128)),
            const("ys", np.float32(0.5)),
            const("yzp", np.uint8(128)),
        ],
        {"X": ints(r, 0, 255, (1, 3, 8, 8), np.uint8)},
    )
    for kind, b_elem, b_lo, b_hi, bzp in (
        ("u8_s8", np.int8, -128, 127, np.int8(0)),
        ("u8_u8", np.uint8, 0, 255, np.uint8(120)),
    ):
        name = f"matmulinteger_{kind}"
        r = rng(name)
        b = ints(r, b_lo, b_hi, (16, 8), b_elem)
        case(
            name,
            f"MatMulInteger, uint8 A x {np.dtype(b_elem).name} B with zero points, int32 output",
            [node("MatMulInteger", ["A", "B", "azp", "bzp"], ["Y"])],
            [("A", U8, [4, 16])],
            [("Y", I32, [4, 8])],
            [const("B", b), const("azp", np.uint8(128)), const("bzp", bzp)],
            {"A": ints(r, 0, 255, (4, 16), np.uint8)},
            numpy_ref=lambda f, b=b, bzp=bzp: [(mm_integer(f["A"], b, 128, bzp), 0)],
        )
    # uint8 x uint8 only: ONNX Runtime 1.23's CPU provider has no ConvInteger kernel for an int8 weight
    case(
        "convinteger_u8_u8",
        "ConvInteger, uint8 input x uint8 weight with zero points, int32 output",
        [node("ConvInteger", ["X", "W", "xzp", "wzp"], ["Y"], pads=[1, 1, 1, 1])],
        [("X", U8, [1, 3, 8, 8])],
        [("Y", I32, [1, 8, 8, 8])],
        [
            const("W", ints(rng("convinteger_u8_u8"), 0, 255, (8, 3, 3, 3), np.uint8)),
            const("xzp", np.uint8(128)),
            const("wzp", np.uint8(128)),
        ],
        {"X": ints(rng("convinteger_u8_u8", "x"), 0, 255, (1, 3, 8, 8), np.uint8)},
    )
    case(
        "dynamicquantizelinear",
        "DynamicQuantizeLinear (what dynamic quantization puts before a MatMulInteger): uint8 data, scale, zero point",
        [node("DynamicQuantizeLinear", ["X"], ["Y", "ys", "yzp"])],
        [("X", F, [3, 16])],
        [("Y", U8, [3, 16]), ("ys", F, []), ("yzp", U8, [])],
        [],
        {"X": normal(rng("dynamicquantizelinear"), 3, 16)},
    )


# ---- float operators the rewrites produce or fold -----------------------------------------------------------------


def float_op_cases():
    r = rng("conv_depthwise_group8")
    case(
        "conv_depthwise_group8",
        "depthwise Conv (group = channels = 8) with bias and a symbolic batch",
        [node("Conv", ["X", "W", "B"], ["Y"], group=8, pads=[1, 1, 1, 1])],
        [("X", F, ["N", 8, 10, 10])],
        [("Y", F, ["N", 8, 10, 10])],
        [const("W", normal(r, 8, 1, 3, 3)), const("B", normal(r, 8))],
        {"X": normal(r, 2, 8, 10, 10)},
    )
    r = rng("gemm_transB_alpha_beta")
    case(
        "gemm_transB_alpha_beta",
        "Gemm with transB = 1, alpha = 0.5, beta = 2 (the attributes folding and low-rank splits must respect)",
        [node("Gemm", ["A", "B", "C"], ["Y"], transB=1, alpha=0.5, beta=2.0)],
        [("A", F, ["N", 16])],
        [("Y", F, ["N", 8])],
        [const("B", normal(r, 8, 16)), const("C", normal(r, 8))],
        {"A": normal(r, 5, 16)},
    )
    r = rng("batchnorm")
    case(
        "batchnorm",
        "BatchNormalization (inference form, opset 15) with its own epsilon",
        [node("BatchNormalization", ["X", "gamma", "beta", "mean", "var"], ["Y"], epsilon=1e-3)],
        [("X", F, ["N", 4, 5, 5])],
        [("Y", F, ["N", 4, 5, 5])],
        [
            const("gamma", normal(r, 4)),
            const("beta", normal(r, 4)),
            const("mean", normal(r, 4)),
            const("var", (r.random(4) + 0.5).astype(np.float32)),
        ],
        {"X": normal(r, 2, 4, 5, 5)},
        opset=15,
    )
    vi = helper.make_tensor_value_info
    # each branch reads the graph input X from the enclosing scope and an initializer of its own
    then_branch = helper.make_graph(
        [node("Mul", ["X", "two"], ["doubled"])], "then", [], [vi("doubled", F, [3, 4])], [const("two", np.float32(2))]
    )
    else_branch = helper.make_graph(
        [node("Add", ["X", "one"], ["plus_one"])],
        "else",
        [],
        [vi("plus_one", F, [3, 4])],
        [const("one", np.float32(1))],
    )
    x = normal(rng("if_subgraph"), 3, 4)
    for cond in (True, False):
        case(
            f"if_subgraph_cond_{str(cond).lower()}",
            f"If (condition {str(cond).lower()}, a graph input) whose branches read the enclosing graph's input X "
            "and an initializer of their own; the If node is unnamed (labelled by its output)",
            [node("If", ["C"], ["Y"], then_branch=then_branch, else_branch=else_branch)],
            [("X", F, [3, 4]), ("C", B, [])],
            [("Y", F, [3, 4])],
            [],
            {"X": x, "C": np.array(cond)},
            numpy_ref=lambda f: [((f["X"] * np.float32(2)) if f["C"] else (f["X"] + np.float32(1)), 0)],
        )
    r = rng("lowrank_matmul_split")
    case(
        "lowrank_matmul_split",
        "the low-rank split form: MatMul(MatMul(X, U[32, 4]), V[4, 24]) + b",
        [node("MatMul", ["X", "U"], ["H"]), node("MatMul", ["H", "V"], ["M"]), node("Add", ["M", "b"], ["Y"])],
        [("X", F, ["N", 32])],
        [("Y", F, ["N", 24])],
        [const("U", normal(r, 32, 4)), const("V", normal(r, 4, 24)), const("b", normal(r, 24))],
        {"X": normal(r, 3, 32)},
    )


def all_cases():
    """Every case, in no particular order (the writer sorts them by name)."""
    CASES.clear()
    dq_weight_cases()
    activation_cases()
    integer_op_cases(*conv_cases())
    opset21_cases()
    float_op_cases()
    return list(CASES)
