#!/usr/bin/env python3
"""The ONNX Runtime side of benches/validate.rs: the same comparison `onnx-rewrite validate` does, in Python.

    ort_compare_bench.py REFERENCE.onnx CANDIDATE.onnx

Loads both models (ORT_DISABLE_ALL, one thread), feeds the same seeded random inputs, computes the metrics of
tools/ort_metrics.py and prints one JSON line: {"seconds": wall time of load + run + metrics, "peak_rss_mb":
this process's peak resident set (VmHWM; interpreter and imports included)}.
"""
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_metrics  # noqa: E402


def main():
    t0 = time.perf_counter()
    ref = ort_metrics.session(sys.argv[1])
    cand = ort_metrics.session(sys.argv[2])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in ref.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    ro = ref.run(None, feeds)
    co = cand.run(None, feeds)
    metrics = {o.name: ort_metrics.metrics(a, b) for o, a, b in zip(ref.get_outputs(), ro, co)}
    seconds = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve, so it would include the parent's peak.
    peak = float("nan")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024.0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "outputs": len(metrics)}))


if __name__ == "__main__":
    main()
