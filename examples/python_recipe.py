#!/usr/bin/env python3
"""Run a recipe from Python and print the report (README "From Python").

    python examples/python_recipe.py [MODEL.onnx]

Without an argument the model is a small MLP built here with onnx.helper (seeded weights, an inference-time
Identity, a dead branch); with one, that model (e.g. target/model-cache/ppocr_mobile_v2_cls.onnx, adding
--dim/--default-dim values below if its inputs have symbolic dims). The recipe is a dict with the same schema as
a recipe file: clean-up, then weight-only int8 with a drift budget checked against the original. Writes
<model>.opt.onnx (or mlp.opt.onnx) in the current folder.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnx_rewrite

RECIPE = {
    "pass": [
        {"name": "eliminate-identity", "budget": "max_abs <= 0"},
        {"name": "dce", "budget": "max_abs <= 0"},
        {
            "name": "quantize",
            "options": {"mode": "weight", "min_elements": 64},
            "budget": ["cosine >= 0.999", "sqnr_centered_db >= 25"],
        },
    ]
}


def mlp() -> onnx.ModelProto:
    """x[N,64] -> MatMul 64x128 -> Add -> Relu -> Identity -> MatMul 128x10 -> y, plus a node nothing reads."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("Identity", ["h2"], ["h3"], name="dropout_at_inference"),
        helper.make_node("MatMul", ["h3", "w2"], ["y"], name="fc2"),
        helper.make_node("Sigmoid", ["h1"], ["unused"], name="dead_branch"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [init("w1", 64, 128), init("b1", 128), init("w2", 128, 10)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv):
    if len(argv) > 1:
        model, out_path = argv[1], argv[1].rsplit(".onnx", 1)[0] + ".opt.onnx"
        inputs = None
    else:
        model, out_path = mlp(), "mlp.opt.onnx"
        # calibration / validation samples as numpy arrays: 32 rows for the one input
        inputs = {"x": np.random.default_rng(1).uniform(-1, 1, (32, 64)).astype(np.float32)}
    try:
        out, report = onnx_rewrite.run(model, RECIPE, inputs=inputs, report=True, latency=5)
    except onnx_rewrite.DriftError as e:
        print(f"{e} (exit code {e.exit_code})")
        return e.exit_code
    except onnx_rewrite.OnnxRewriteError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return e.exit_code

    def num(v):
        # the report writes non-finite values as "inf" / "nan" (JSON has no such numbers); None: undefined
        return float("nan") if v is None else float(v)

    print(f"{'pass':<20} {'time ms':>8} {'cosine':>9} {'sqnr_c dB':>9}  changes")
    for p in report["passes"]:
        worst = min(p["drift"], key=lambda d: num(d["cosine"])) if p.get("drift") else {}
        changes = ", ".join(f"{k} {v}" for k, v in sorted(p["change_counts"].items()) if v) or "-"
        print(
            f"{p['pass']:<20} {p['time_ms']:>8.1f} {num(worst.get('cosine')):>9.6f} "
            f"{num(worst.get('sqnr_centered_db')):>9.1f}  {changes}"
        )
    before, after = report["before"], report["after"]
    print(f"file bytes {before['file']['total_bytes']} -> {after['file']['total_bytes']}")
    print(f"parameters {before['params_total']} -> {after['params_total']}")
    print(f"MACs {before['macs_total']} -> {after['macs_total']}")
    if before.get("latency") and after.get("latency"):
        print(f"latency ms {before['latency']['median_ms']:.3f} -> {after['latency']['median_ms']:.3f}")
    print(f"status {report['status']}; output sha256 {report['output_sha256']}")
    onnx.save(out, out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
