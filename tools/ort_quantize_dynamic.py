#!/usr/bin/env python3
"""ONNX Runtime's weight-only reference: quantize_dynamic of one model, for the size comparison of
`quantize --mode weight` (tests/quantize_weight.rs).

    ort_quantize_dynamic.py IN OUT

Runs onnxruntime.quantization.quantize_dynamic(IN, OUT) with its defaults (int8 weights, per tensor; MatMul,
Gemm, Conv, Gather, LSTM, Attention... as ONNX Runtime chooses) and prints JSON {"in_bytes", "out_bytes",
"constants_moved"}. quantize_dynamic reads weights from initializers only, so weights held in `Constant`
nodes (paddle2onnx exports) are first moved to initializers of the same name (a copy of IN; same values,
same file size within the few bytes of the node's framing): "constants_moved" counts them. On failure prints
{"error": "..."} and exits 1.
"""
import json
import logging
import os
import sys
import tempfile


def constants_to_initializers(model):
    """Move main-graph Constant nodes with a `value` tensor into initializers; returns how many moved."""
    g = model.graph
    keep, moved = [], 0
    for n in g.node:
        attrs = {a.name: a for a in n.attribute}
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and set(attrs) == {"value"}:
            t = attrs["value"].t
            t.name = n.output[0]
            g.initializer.append(t)
            moved += 1
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    return moved


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(src)
        moved = constants_to_initializers(model)
        feed = src
        if moved:
            feed = os.path.join(tmp, "constants_as_initializers.onnx")
            onnx.save(model, feed)
        try:
            quantize_dynamic(feed, dst, weight_type=QuantType.QInt8)
        except Exception as e:  # report, never a traceback: the caller prints the model's name
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            return 1
    print(json.dumps({"in_bytes": os.path.getsize(src), "out_bytes": os.path.getsize(dst),
                      "constants_moved": moved}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
