"""Shared fixtures of the Python package's tests: repo paths, the CLI binary (for byte-identity checks), the
real-model cache, and an ONNX Runtime runner."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
EXAMPLES = REPO / "examples"


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


@pytest.fixture(scope="session")
def cli() -> str:
    """The CLI: $ONNX_REWRITE_CLI, else the debug binary `cargo test` built (built here when missing)."""
    exe = os.environ.get("ONNX_REWRITE_CLI")
    if exe:
        return exe
    built = target_dir() / "debug" / "onnx-rewrite"
    if built.exists():
        return str(built)
    subprocess.run(
        ["cargo", "build", "--quiet", "--bin", "onnx-rewrite"], cwd=REPO, check=True
    )
    exe = target_dir() / "debug" / "onnx-rewrite"
    assert exe.exists(), f"{exe} missing after cargo build"
    return str(exe)


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The pinned real models (tools/fetch_models.py fetches them; .ci/run does before the tests)."""
    d = Path(os.environ.get("ONNX_REWRITE_MODEL_CACHE", REPO / "target" / "model-cache"))
    if not (d / "ppocr_mobile_v2_cls.onnx").exists():
        subprocess.run(["python3", str(REPO / "tools" / "fetch_models.py")], check=True)
    return d


def ort_run(model, feeds):
    """Run a model (ModelProto or path) in ONNX Runtime on the CPU, graph optimisations off (ORT sees the graph
    as written, as tools/check_model.py does)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    data = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    if not isinstance(data, (str, os.PathLike)):
        sess = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    else:
        sess = ort.InferenceSession(str(data), sess_options=so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def seeded(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)
