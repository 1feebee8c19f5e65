#!/usr/bin/env python3
"""ONNX Runtime latency of our quantized outputs against float and against ONNX Runtime's own quantizers.

    ort_latency_bench.py --bin PATH/onnx-rewrite [--models NAME,...] [--cache DIR] [--runs 21]
                         [--samples 8] [--work DIR] [--json FILE]

For each real model of tools/real_models.json found in --cache (and the generated CNN of compare_quantizers.py):
1. F = the model after our `fold-batchnorm,dce` (every variant starts from the same float model), at the input
   sizes of compare_quantizers.py except where DEPLOY_INPUTS names a deployment size;
2. the variants: `ours weight` (`quantize --mode weight`), `ours static` (`quantize --mode static`, MinMax, on
   --samples seeded calibration samples), `ort dynamic` (quantize_dynamic, QInt8 per-channel weights; what a
   user of ONNX Runtime's weight-only path gets) and `ort static` (quantize_static, QDQ, per-channel QInt8
   weights, QUInt8 activations, MinMax, the same calibration samples);
3. every variant runs in ONNX Runtime on the CPU provider with one intra-op and one inter-op thread and the
   default graph optimisations, and again with the session option `session.disable_quant_qdq=1` (ORT then
   folds a constant weight's DequantizeLinear at load and runs the float kernel: the setting the quantize report
   recommends for weight-only outputs);
4. timing: 3 warm-up runs per session, then --runs rounds in which every session runs once, in the same order
   (interleaved, so a slow patch of the machine hits every variant alike); the median per session.
Printed: a markdown table, float's median in ms and every variant as a ratio to it (`-`: the variant failed,
with the reason below the table), and one JSON line per model on stderr (--json writes them all).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_quantizers as cq  # noqa: E402  (model input settings, samples, ORT's static quantizer)

ROOT = Path(__file__).resolve().parent.parent
NO_QDQ = "session.disable_quant_qdq"


def session(path, fold_qdq):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if fold_qdq:
        so.add_session_config_entry(NO_QDQ, "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ours(bin_path, mode, src, dst, calib_dir):
    cmd = [str(bin_path), "quantize", str(src), str(dst), "--mode", mode]
    if mode == "static":
        cmd += ["--input", str(calib_dir)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit {p.returncode}")


def ort_dynamic(src, dst):
    """QInt8 weights as ONNX Runtime's docs suggest; its CPU provider has no ConvInteger kernel for int8 weights,
    so a model that then cannot load is quantized again with QUInt8 weights (what a user must do there)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8)
    try:
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    except Exception:
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QUInt8)


def interleaved(sessions, feed, runs):
    """Median ms per session over `runs` rounds, each session once per round."""
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feed)
    times = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


VARIANTS = ["ours weight", "ours static", "ort dynamic", "ort static"]

# Latency at deployment sizes, not at the small sizes the accuracy comparison uses for speed: a 64x64 page gives
# a detector nothing to do but its fixed overheads (and on noise its score map is zero everywhere).
DEPLOY_INPUTS = {
    "ppocrv4_det": {"shape": {"x": [1, 3, 640, 640]}},
    "minilm_l3_paraphrase": {"dims": {"batch_size": 1, "sequence_length": 128},
                             "range": {"input_ids": (0, 1000)}, "fill": {"attention_mask": 1}},
    "minilm_l6_int8": {"dims": {"batch": 1, "sequence": 128}, "range": {"input_ids": (0, 1000)},
                       "fill": {"attention_mask": 1, "token_type_ids": 0}},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", default="")
    ap.add_argument("--cache", default=os.environ.get("ONNX_REWRITE_MODEL_CACHE", str(ROOT / "target/model-cache")))
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--work", default=str(ROOT / "target/ort-latency"))
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    names = [m["name"] for m in json.load(open(ROOT / "tools/real_models.json"))] + ["generated_cnn"]
    if a.models:
        names = [n for n in a.models.split(",") if n]
    rows = []
    for name in names:
        cfg = DEPLOY_INPUTS.get(name, cq.MODEL_INPUTS.get(name, {}))
        d = work / name
        flt = cq.float_model(name, a.bin, a.cache, d)
        if flt is None:
            continue
        specs = cq.input_specs(flt, cfg)
        calib = cq.make_samples(specs, cfg, a.samples, 0)
        feed = cq.make_samples(specs, cfg, 1, 1)[0]
        calib_dir = d / "calib"
        cq.write_samples(calib, calib_dir)
        files = {"float": flt}
        errors = {}
        makers = {
            "ours weight": lambda out: ours(a.bin, "weight", flt, out, calib_dir),
            "ours static": lambda out: ours(a.bin, "static", flt, out, calib_dir),
            "ort dynamic": lambda out: ort_dynamic(flt, out),
            "ort static": lambda out: cq.run_ort(flt, out, calib),
        }
        for v, make in makers.items():
            out = d / (v.replace(" ", "_") + ".onnx")
            try:
                make(out)
                files[v] = out
            except Exception as e:  # one quantizer failing on one model must not stop the table
                errors[v] = str(e)[:160]
        sessions = {}
        for v, f in files.items():
            for fold in (False, True):
                if v == "float" and fold:
                    continue
                try:
                    sessions[(v, fold)] = session(f, fold)
                except Exception as e:
                    errors[f"{v}{' +fold' if fold else ''}"] = str(e)[:160]
        ms = interleaved(sessions, feed, a.runs)
        row = {"model": name, "runs": a.runs, "float_ms": ms[("float", False)],
               "bytes": {v: cq.file_size(f) for v, f in files.items()}, "errors": errors}
        for (v, fold), t in ms.items():
            if v != "float":
                row[f"{v}{' +fold' if fold else ''}"] = t / ms[("float", False)]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    cols = [f"{v}{f}" for v in VARIANTS for f in ("", " +fold")]
    print(f"ONNX Runtime {__import__('onnxruntime').__version__}, CPU, 1 thread, median of {a.runs} interleaved "
          f"runs; ratios to float (`+fold`: session option {NO_QDQ}=1)")
    print("| model | float ms | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        cells = [f"{r[c]:.2f}x" if c in r else "-" for c in cols]
        print(f"| {r['model']} | {r['float_ms']:.2f} | " + " | ".join(cells) + " |")
    for r in rows:
        for v, e in r["errors"].items():
            print(f"{r['model']}: {v} failed: {e}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
