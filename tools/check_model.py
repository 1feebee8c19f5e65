#!/usr/bin/env python3
"""Validate ONNX model files with the reference checker and onnxruntime.

usage: python check_model.py [--no-ort] [--no-full-check] FILE...

For each FILE: onnx.checker.check_model(path, full_check=True) (the path form, so external data
next to the model is resolved and > 2 GB models work), then an onnxruntime.InferenceSession on the
CPU provider with every graph optimisation disabled (so ORT sees the graph as written).
Prints "ok FILE" or "FAIL FILE: reason" per file; exits 1 if any file failed.
"""
import sys


def check(path, full_check=True, run_ort=True):
    import onnx

    onnx.checker.check_model(path, full_check=full_check)
    if run_ort:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def main(argv):
    full_check, run_ort, files = True, True, []
    for a in argv:
        if a == "--no-ort":
            run_ort = False
        elif a == "--no-full-check":
            full_check = False
        elif a in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        else:
            files.append(a)
    if not files:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        try:
            check(f, full_check=full_check, run_ort=run_ort)
        except Exception as e:  # noqa: BLE001 - report every failure uniformly
            reason = " ".join(str(e).split()) or type(e).__name__
            print(f"FAIL {f}: {type(e).__name__}: {reason}", flush=True)
            failed += 1
        else:
            print(f"ok {f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
