#!/usr/bin/env python3
"""Build the validation canaries: tiny ONNX models with ONNX Runtime's outputs recorded beside them.

usage: python tools/make_canaries.py OUTDIR      (run with the venv python: $(bash tools/venv.sh | tail -n1))

Each case (defined in tools/canary_cases.py) is one Q/DQ form or one operator that our passes emit or
validation must run. For every case this writes OUTDIR/<case>/model.onnx, input_K.npy (the K-th graph input,
in graph order) and expected_K.npy (the K-th graph output as ONNX Runtime computes it), then OUTDIR/cases.json:
the case list with what each exercises, what tract is expected to do with it (run it exactly, fold it into
float weights with a remark, or refuse it with exit 5) and the versions of the tools that made it.

The reference is ONNX Runtime on the CPU provider with graph_optimization_level = ORT_DISABLE_ALL: with its
default level ORT rewrites DequantizeLinear -> MatMul into a dynamically quantized matmul, whose output is not
the graph's exact value. Each model must pass onnx.checker (full_check) and run in ORT, or the script fails.
Where the case is simple enough to compute with numpy (Q/DQ element-wise chains, integer ops, the low-bit
weights), ORT's output is also checked against that: exactly for element-wise and integer results, within the
float32 summation bound for float matmuls. A reference that disagrees with the spec would make every canary
meaningless, so this is checked before anything is written.

Determinism: every random array comes from a numpy Generator seeded from its case's name (cases do not shift
when one is added), models are written with the default onnx serializer and arrays with np.save, and the index
is written with sorted keys; running the script twice gives byte-identical files. The expected outputs of float
reductions (MatMul, Conv, Gemm) are ORT's on this CPU: another machine's kernels may differ in the last bits,
which the tests' tolerance allows for.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

from canary_cases import EXACT, FOLDED, REFUSED, all_cases


def run_ort(m, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check_against_numpy(c, outs):
    """ORT's outputs against the numpy reference: equal where the reference is exact (bound 0), else within it."""
    for k, (want, bound) in enumerate(c.numpy_ref(c.feeds)):
        got = outs[k]
        if np.shape(got) != np.shape(want):
            sys.exit(f"{c.name}: output {k} has shape {np.shape(got)}, numpy says {np.shape(want)}")
        diff = np.abs(got.astype(np.float64) - np.asarray(want).astype(np.float64))
        if np.any(diff > bound):
            i = np.unravel_index(np.argmax(diff - bound), diff.shape)
            sys.exit(f"{c.name}: ONNX Runtime disagrees with numpy on output {k} at {i}: {got[i]} vs {want[i]}")


def save_npy(path, arr):
    # np.save writes a fixed header for a given dtype and shape: same array, same bytes
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)


def main(argv):
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = argv[0]
    cases = all_cases()
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"

    os.makedirs(out, exist_ok=True)
    index = []
    for c in sorted(cases, key=lambda c: c.name):
        m = c.model()
        onnx.checker.check_model(m, full_check=True)
        feeds = [c.feeds[n] for n, _, _ in c.inputs]
        outs = run_ort(m, c.feeds)
        if c.numpy_ref is not None:
            check_against_numpy(c, outs)
        d = os.path.join(out, c.name)
        os.makedirs(d, exist_ok=True)
        stale = [f for f in os.listdir(d) if f.endswith(".npy")]
        for f in stale:
            os.remove(os.path.join(d, f))
        onnx.save(m, os.path.join(d, "model.onnx"))
        for k, a in enumerate(feeds):
            save_npy(os.path.join(d, f"input_{k}.npy"), a)
        for k, a in enumerate(outs):
            save_npy(os.path.join(d, f"expected_{k}.npy"), a)
        index.append(
            {
                "name": c.name,
                "exercises": c.exercises,
                "tract": c.tract,
                "mention": c.mention,
                "opset": c.opset,
                "inputs": [n for n, _, _ in c.inputs],
                "outputs": [n for n, _, _ in c.outputs],
                "numpy_checked": c.numpy_ref is not None,
            }
        )
    strays = sorted(
        e for e in os.listdir(out) if os.path.isdir(os.path.join(out, e)) and e not in {c["name"] for c in index}
    )
    if strays:
        print(f"warning: folders in {out} that are no case (delete them): {', '.join(strays)}", file=sys.stderr)
    doc = {
        "about": "canary cases of tools/make_canaries.py: expected_K.npy are ONNX Runtime's outputs "
        "(CPU provider, graph_optimization_level ORT_DISABLE_ALL) for input_K.npy; tract: exact | folded | refused",
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "cases": index,
    }
    # one line per case, so a regenerated index diffs case by case
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in sorted(doc.items()) if k != "cases"]
    lines += [' "cases": [']
    lines += [f"  {json.dumps(c, sort_keys=True)}," for c in index]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" ]", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == doc
    tmp = os.path.join(out, "cases.json.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(out, "cases.json"))
    counts = {k: sum(c["tract"] == k for c in index) for k in (EXACT, FOLDED, REFUSED)}
    print(f"{len(index)} cases in {out}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
