#!/usr/bin/env python3
"""Compute onnx-rewrite's comparison metrics from ONNX Runtime outputs (cross-check of src/validate/).

    ort_metrics.py REFERENCE.onnx CANDIDATE.onnx INPUT_DIR [OUTPUT_DIR]

INPUT_DIR holds one <input name>.npy per model input (names sanitised as in src/validate/inputs.rs: every
character outside [A-Za-z0-9_.-] becomes '_'). Both models run with graph_optimization_level = ORT_DISABLE_ALL
(ORT's default optimisations re-quantize DequantizeLinear->MatMul and are not an exact reference). Prints JSON:
{"outputs": {name: {max_abs, mean_abs, cosine, sqnr_db, pearson, sqnr_centered_db, top1, top5}}} with the
definitions of src/validate/metrics.rs (f64 accumulation; inf as the string "inf"; centred measures null for a
constant reference). With OUTPUT_DIR, also saves ONNX Runtime's outputs there as reference_<k>.npy and
candidate_<k>.npy (k = the reference's output position), so a test can bound the engines' float noise.
"""
import json
import math
import re
import sys

import numpy as np
import onnxruntime as ort


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def num(v):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def classes(shape, is_float):
    if not is_float or len(shape) == 0:
        return None
    first = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    c = shape[-1]
    return c if len(shape) - first <= 2 and c >= 2 else None


def top5(row):
    # stable: larger first, ties by lower index (as metrics.rs)
    return list(np.lexsort((np.arange(len(row)), -row.astype(np.float64)))[:5])


def metrics(a, b):
    af = a.astype(np.float64).ravel()
    bf = b.astype(np.float64).ravel()
    e = np.abs(af - bf)
    aa, bb, ee, dot = float(af @ af), float(bf @ bf), float(e @ e), float(af @ bf)
    if aa == 0 and bb == 0:
        cos = 1.0
    elif aa == 0 or bb == 0:
        cos = 0.0
    else:
        cos = max(-1.0, min(1.0, dot / (math.sqrt(aa) * math.sqrt(bb))))
    if ee == 0:
        sqnr = math.inf
    elif aa == 0:
        sqnr = -math.inf
    else:
        sqnr = 10 * math.log10(aa / ee)
    # two-pass centring (as metrics.rs: exact means, no sum a^2 - n mean^2 cancellation)
    ac = af - af.mean() if af.size else af
    bc = bf - bf.mean() if bf.size else bf
    saa, sbb, sab = float(ac @ ac), float(bc @ bc), float(ac @ bc)
    if saa > 0:
        pearson = 0.0 if sbb == 0 else max(-1.0, min(1.0, sab / (math.sqrt(saa) * math.sqrt(sbb))))
        sqnr_c = math.inf if ee == 0 else 10 * math.log10(saa / ee)
        pearson, sqnr_c = num(pearson), num(sqnr_c)
    else:
        pearson, sqnr_c = None, None
    out = {
        "max_abs": num(float(e.max()) if e.size else 0.0),
        "mean_abs": num(float(e.mean()) if e.size else 0.0),
        "cosine": num(cos),
        "sqnr_db": num(sqnr),
        "pearson": pearson,
        "sqnr_centered_db": sqnr_c,
        "top1": None,
        "top5": None,
    }
    c = classes(list(a.shape), np.issubdtype(a.dtype, np.floating))
    if c is not None:
        ra, rb = a.reshape(-1, c), b.reshape(-1, c)
        t1 = sum(int(np.argmax(x) == np.argmax(y)) for x, y in zip(ra, rb))
        out["top1"] = t1 / len(ra)
        if c > 5:
            t5 = sum(int(np.argmax(x) in top5(y)) for x, y in zip(ra, rb))
            out["top5"] = t5 / len(ra)
    return out


def main():
    ref_path, cand_path, input_dir = sys.argv[1:4]
    ref, cand = session(ref_path), session(cand_path)
    feeds = {i.name: np.load(f"{input_dir}/{sanitize(i.name)}.npy") for i in ref.get_inputs()}
    ro = ref.run(None, feeds)
    co = dict(zip([o.name for o in cand.get_outputs()], cand.run(None, feeds)))
    result = {}
    for k, (o, a) in enumerate(zip(ref.get_outputs(), ro)):
        b = np.asarray(co[o.name])
        result[o.name] = metrics(np.asarray(a), b)
        if len(sys.argv) > 4:
            np.save(f"{sys.argv[4]}/reference_{k}.npy", np.asarray(a))
            np.save(f"{sys.argv[4]}/candidate_{k}.npy", b)
    print(json.dumps({"outputs": result}, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
