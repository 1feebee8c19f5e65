#!/usr/bin/env python3
"""Oracles for rewrites that must not change what a model computes (used by tests/upgrade_opset.rs).

    ort_equal.py outputs ORIGINAL CANDIDATE [--seed S] [--shape NAME=d0,d1,..] [--range NAME=lo,hi]
                         [--fill NAME=v] [--dim SYMBOL=v]
        Run both models in ONNX Runtime (CPU, graph_optimization_level = ORT_DISABLE_ALL, one thread) on the
        same seeded inputs and print JSON {"outputs": {name: {"dtype", "shape", "max_abs", "max_ref",
        "rel", "identical"}}}: max_abs is max |a - b|, max_ref is max |a| (the output's magnitude), rel =
        max_abs / max_ref (0 when both are 0). NaN in the same places counts as equal; NaN in one only as inf.
        Inputs: float ~ N(0, 1), integers uniform in --range (default [0, 2)), bool uniform; shapes from the
        model with symbolic dims from --dim (default 1) or the whole shape from --shape; --fill gives every
        element one value (e.g. a sample rate).
    ort_equal.py signatures ORIGINAL CANDIDATE TO [--save-theirs PATH]
        Convert ORIGINAL with onnx.version_converter.convert_version(model, TO) (saved to PATH if asked, so
        its outputs can be compared too) and print JSON {"converted":
        bool, "error": str, "ours": [...], "theirs": [...]}: the sorted operator signatures (domain, op type,
        number of inputs, sorted attribute names) of every node in every graph, Constant nodes excluded (they
        store arguments, which we store as initializers in the main graph).
"""
import json
import sys

import numpy as np


def session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


NP = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
      "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
      "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def make_inputs(sess, opts, seed):
    rng = np.random.default_rng(seed)
    feed = {}
    for i in sess.get_inputs():
        if i.name in opts["shape"]:
            shape = opts["shape"][i.name]
        else:
            shape = [d if isinstance(d, int) and d > 0 else opts["dim"].get(str(d), 1) for d in i.shape]
        dt = NP.get(i.type)
        if dt is None:
            raise SystemExit(f"input {i.name}: type {i.type} is not supported")
        if i.name in opts["fill"]:
            a = np.full(shape, opts["fill"][i.name], dtype=dt)
        elif np.issubdtype(dt, np.floating):
            a = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            a = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            lo, hi = opts["range"].get(i.name, (0, 2))
            a = rng.integers(lo, hi, shape).astype(dt)
        feed[i.name] = a
    return feed


def compare(a, b):
    out = {"dtype": str(a.dtype), "shape": list(a.shape)}
    if a.shape != b.shape or a.dtype != b.dtype:
        out.update(max_abs=float("inf"), max_ref=0.0, rel=float("inf"), identical=False,
                   mismatch=f"{b.dtype}{list(b.shape)}")
        return out
    out["identical"] = bool(a.tobytes() == b.tobytes())
    if a.dtype.kind in "fc":
        af, bf = a.astype(np.float64), b.astype(np.float64)
        na, nb = np.isnan(af), np.isnan(bf)
        if (na != nb).any():
            d = float("inf")
        else:
            d = float(np.max(np.abs(af - bf)[~na], initial=0.0))
        ref = float(np.max(np.abs(af[~na]), initial=0.0))
    else:
        d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
        ref = float(np.max(np.abs(a.astype(np.float64)), initial=0.0))
    out.update(max_abs=d, max_ref=ref, rel=(0.0 if d == 0 else (d / ref if ref > 0 else float("inf"))))
    return out


def outputs(argv):
    opts = {"shape": {}, "range": {}, "fill": {}, "dim": {}}
    seed, files, it = 0, [], iter(argv)
    for a in it:
        if a == "--seed":
            seed = int(next(it))
        elif a in ("--shape", "--range", "--fill", "--dim"):
            k, v = next(it).split("=", 1)
            if a == "--shape":
                opts["shape"][k] = [int(x) for x in v.split(",") if x]
            elif a == "--range":
                lo, hi = v.split(",")
                opts["range"][k] = (int(lo), int(hi))
            elif a == "--fill":
                opts["fill"][k] = float(v)
            else:
                opts["dim"][k] = int(v)
        else:
            files.append(a)
    ref, cand = session(files[0]), session(files[1])
    feed = make_inputs(ref, opts, seed)
    names = [o.name for o in ref.get_outputs()]
    if names != [o.name for o in cand.get_outputs()]:
        raise SystemExit(f"outputs differ: {names} vs {[o.name for o in cand.get_outputs()]}")
    ra, rb = ref.run(None, feed), cand.run(None, feed)
    res = {n: compare(np.asarray(a), np.asarray(b)) for n, a, b in zip(names, ra, rb)}
    print(json.dumps({"outputs": res}, sort_keys=True))


def sigs(graph, acc):
    import onnx

    for n in graph.node:
        if n.op_type != "Constant" or n.domain not in ("", "ai.onnx"):
            acc.append([n.domain if n.domain != "ai.onnx" else "", n.op_type, len(n.input),
                        sorted(a.name for a in n.attribute)])
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                sigs(a.g, acc)
            for g in a.graphs:
                sigs(g, acc)
    return acc


def signatures(argv):
    import onnx
    from onnx import version_converter

    orig, cand, to = argv[0], argv[1], int(argv[2])
    ours = sorted(sigs(onnx.load(cand).graph, []))
    res = {"converted": False, "error": "", "ours": ours, "theirs": []}
    try:
        theirs = version_converter.convert_version(onnx.load(orig), to)
        res["theirs"] = sorted(sigs(theirs.graph, []))
        if len(argv) > 4 and argv[3] == "--save-theirs":
            onnx.save(theirs, argv[4])
        res["converted"] = True
    except Exception as e:  # the converter refuses many models; the caller reports which
        res["error"] = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    print(json.dumps(res, sort_keys=True))


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv[0] == "outputs":
        outputs(argv[1:])
    elif argv[0] == "signatures":
        signatures(argv[1:])
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
