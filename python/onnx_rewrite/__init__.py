"""onnx_rewrite: rewrite ONNX models (prune, quantize, low-rank, clean-up) and prove the result still computes
the same thing, from Python. The same Rust library as the ``onnx-rewrite`` CLI, not a second implementation:
the same recipe gives the same output bytes and the same report.

Models are given as an ``onnx.ModelProto``, ``bytes`` (a serialized model) or a path (external data resolved
against the model's folder); rewritten models come back as an ``onnx.ModelProto`` (``bytes`` when the ``onnx``
package is not installed, or with ``as_bytes=True``).

Calibration / validation samples (``inputs=``) are random by default (``seed``, ``samples``, ``dims``), or:
a numpy array (one sample of a one-input model), a dict input name -> array (one sample), a list of such dicts
or arrays (one sample each), or paths as the CLI's ``--input`` takes them (.npy / .pb files, or one folder).
``labels=`` is a numpy array of integer class ids (one per row of the classifier output) or a .npy path.

Errors raise :class:`UsageError` (exit code 2), :class:`BadModelError` (3), :class:`DriftError` (4),
:class:`CannotValidateError` (5), or :class:`OnnxRewriteError` (1), with the CLI's messages. The GIL is released
while the library works.

>>> import onnx, onnx_rewrite
>>> out, report = onnx_rewrite.run("model.onnx", {"pass": [{"name": "dce"}]}, report=True)  # doctest: +SKIP
>>> onnx.save(out, "model.opt.onnx")  # doctest: +SKIP
"""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _native
from ._errors import (
    BadModelError,
    CannotValidateError,
    DriftError,
    OnnxRewriteError,
    UsageError,
)

__version__ = _native.__version__

__all__ = [
    "run",
    "quantize",
    "prune",
    "lowrank",
    "validate",
    "diff",
    "dump",
    "passes",
    "OnnxRewriteError",
    "UsageError",
    "BadModelError",
    "DriftError",
    "CannotValidateError",
]


# ---------------------------------------------------------------------------------------------------------------
# arguments


def _model_arg(model: Any) -> Union[bytes, str]:
    """A model argument as the extension takes it: bytes, or a path string."""
    if isinstance(model, bytes):
        return model
    if isinstance(model, (bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise TypeError(
        f"model: expected an onnx.ModelProto, bytes or a path, got {type(model).__name__}"
    )


def _model_out(data: bytes, as_bytes: bool) -> Any:
    if as_bytes:
        return data
    try:
        import onnx
    except ImportError:
        return data
    return onnx.ModelProto.FromString(data)


def _recipe_arg(recipe: Any) -> Tuple[str, str, bool]:
    """(text, source, is_json): a dict, a path to a TOML file, or TOML text."""
    if isinstance(recipe, dict):
        try:
            return json.dumps(recipe, allow_nan=False), "<dict>", True
        except (TypeError, ValueError) as e:
            raise UsageError(f"recipe <dict>: {e}") from None
    path = None
    if isinstance(recipe, os.PathLike):
        path = os.fspath(recipe)
    elif isinstance(recipe, str):
        # a TOML recipe has a [[pass]] table, so it always has a '[': a string without one is a path
        if "[" not in recipe:
            path = recipe
        else:
            return recipe, "<string>", False
    else:
        raise TypeError(
            f"recipe: expected TOML text, a path or a dict, got {type(recipe).__name__}"
        )
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), str(path), False
    except (OSError, UnicodeDecodeError) as e:
        # the CLI's message for an unreadable recipe
        raise UsageError(f"cannot read recipe {path}: {e}") from None


def _sanitize(name: str) -> str:
    # the library's file-name form of an input name (validate/inputs.rs sanitize): '/' and ':' become '_'
    return name.replace("/", "_").replace(":", "_")


def _is_array(x: Any) -> bool:
    return hasattr(x, "__array__") and not isinstance(x, (str, bytes, dict))


def _write_sample(folder: str, sample: Any) -> None:
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    if isinstance(sample, dict):
        for name, value in sample.items():
            if not isinstance(name, str):
                raise UsageError(f"inputs: input names must be strings, got {name!r}")
            np.save(os.path.join(folder, _sanitize(name) + ".npy"), np.asarray(value))
    elif _is_array(sample):
        # one array: the model's only input (the library matches input_0 to the first input)
        np.save(os.path.join(folder, "input_0.npy"), np.asarray(sample))
    else:
        raise UsageError(
            f"inputs: a sample is a numpy array or a dict name -> array, got {type(sample).__name__}"
        )


@contextmanager
def _samples(
    inputs: Any,
    labels: Any,
    seed: Optional[int] = None,
    samples: Optional[int] = None,
    dims: Optional[Dict[str, int]] = None,
    default_dim: Optional[int] = None,
    float_range: Optional[Tuple[float, float]] = None,
    int_range: Optional[Tuple[int, int]] = None,
    tolerances: Optional[Dict[str, float]] = None,
    no_default_tolerances: bool = False,
    optimize: bool = False,
    no_attribution: bool = False,
    latency: Optional[int] = None,
) -> Iterator[str]:
    """The sample options as JSON for the extension; numpy inputs / labels are written as .npy files into a
    temporary folder (deleted afterwards) and read by the library exactly like the CLI's --input / --labels."""
    tmp = None
    try:
        paths: List[str] = []
        if inputs is None:
            pass
        elif isinstance(inputs, (str, os.PathLike)):
            paths = [os.fspath(inputs)]
        elif isinstance(inputs, dict) or _is_array(inputs):
            tmp = tempfile.mkdtemp(prefix="onnx_rewrite_")
            folder = os.path.join(tmp, "inputs")
            _write_sample(folder, inputs)
            paths = [folder]
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise UsageError("inputs: an empty list (give at least one sample)")
            if all(isinstance(p, (str, os.PathLike)) for p in inputs):
                paths = [os.fspath(p) for p in inputs]
            else:
                tmp = tempfile.mkdtemp(prefix="onnx_rewrite_")
                folder = os.path.join(tmp, "inputs")
                for k, s in enumerate(inputs):
                    _write_sample(os.path.join(folder, f"sample_{k:06d}"), s)
                paths = [folder]
        else:
            raise UsageError(
                "inputs: expected a numpy array, a dict name -> array, a list of those, or paths; got "
                f"{type(inputs).__name__}"
            )
        label_path = None
        if labels is not None:
            if isinstance(labels, (str, os.PathLike)):
                label_path = os.fspath(labels)
            elif _is_array(labels) or isinstance(labels, (list, tuple)):
                import numpy as np

                if tmp is None:
                    tmp = tempfile.mkdtemp(prefix="onnx_rewrite_")
                label_path = os.path.join(tmp, "labels.npy")
                np.save(label_path, np.asarray(labels))
            else:
                raise UsageError(
                    f"labels: expected a numpy array of class ids or a .npy path, got {type(labels).__name__}"
                )
        opts: Dict[str, Any] = {"inputs": paths, "dims": dict(dims or {})}
        for key, value in (
            ("seed", seed),
            ("samples", samples),
            ("default_dim", default_dim),
            ("float_range", float_range),
            ("int_range", int_range),
            ("labels", label_path),
            ("latency", latency),
        ):
            if value is not None:
                opts[key] = list(value) if isinstance(value, tuple) else value
        opts["tolerances"] = dict(tolerances or {})
        opts["no_default_tolerances"] = bool(no_default_tolerances)
        opts["optimize"] = bool(optimize)
        opts["no_attribution"] = bool(no_attribution)
        yield json.dumps(opts)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# the API


def run(
    model: Any,
    recipe: Any,
    *,
    inputs: Any = None,
    labels: Any = None,
    report: bool = False,
    seed: Optional[int] = None,
    samples: Optional[int] = None,
    dims: Optional[Dict[str, int]] = None,
    default_dim: Optional[int] = None,
    float_range: Optional[Tuple[float, float]] = None,
    int_range: Optional[Tuple[int, int]] = None,
    no_validate: bool = False,
    stop_after: Optional[str] = None,
    latency: int = 10,
    as_bytes: bool = False,
) -> Any:
    """Run a recipe on a model, like ``onnx-rewrite run IN OUT --recipe R``; the same recipe and options give
    the same output bytes as the CLI.

    model: an ``onnx.ModelProto``, ``bytes``, or a path (external data resolved against its folder).
    recipe: TOML text, a path to a TOML file, or a dict with the same schema, e.g.
        ``{"pass": [{"name": "quantize", "options": {"mode": "static"}, "budget": "cosine >= 0.99"}]}``.
    inputs, labels: calibration / validation samples (see the module docstring); by default ``samples``
        seeded random inputs (``seed``, ``dims``, ``default_dim``, ``float_range``, ``int_range``: as the CLI's
        flags).
    report: also return the pipeline report as a dict (what ``--report FILE`` writes).
    no_validate: do not run the models through tract (no drift, no evaluation; budgets are then refused).
    stop_after: stop after the first pass with this name.
    latency: timed runs of the before / after evaluation (0: no latency).
    as_bytes: return the model's bytes rather than an ``onnx.ModelProto``.

    Returns the rewritten model, or ``(model, report)`` with ``report=True``.
    Raises DriftError (with ``.report``) when a pass breaks its budget; UsageError for a bad recipe or options;
    BadModelError for an unreadable model or samples file; CannotValidateError when tract cannot run a model.
    """
    text, source, is_json = _recipe_arg(recipe)
    m = _model_arg(model)
    with _samples(
        inputs,
        labels,
        seed=seed,
        samples=samples,
        dims=dims,
        default_dim=default_dim,
        float_range=float_range,
        int_range=int_range,
    ) as opts:
        data, report_json = _native.run(
            m, text, source, is_json, opts, no_validate, stop_after, latency
        )
    rep = json.loads(report_json)
    if data is None:
        failed = rep.get("failed_pass") or "?"
        raise DriftError(f"budget broken by {failed}: no model returned", rep)
    out = _model_out(data, as_bytes)
    return (out, rep) if report else out


def _run_pass(
    model: Any,
    name: str,
    options: Dict[str, Any],
    inputs: Any,
    labels: Any,
    validate: bool,
    report: bool,
    as_bytes: bool,
    sample_kw: Dict[str, Any],
) -> Any:
    m = _model_arg(model)
    with _samples(inputs, labels, **sample_kw) as opts:
        data, report_json, checked, passed = _native.run_pass(
            m, name, json.dumps(options), opts, validate
        )
    rep: Dict[str, Any] = json.loads(report_json)
    if checked is not None:
        rep["validation"] = json.loads(checked)
    if not passed:
        raise DriftError("validation failed: drift past the tolerances", rep)
    out = _model_out(data, as_bytes)
    return (out, rep) if report else out


def quantize(
    model: Any,
    *,
    mode: str = "weight",
    dtype: str = "int8",
    per_tensor: bool = False,
    symmetric: Optional[bool] = None,
    reduce_range: bool = False,
    min_elements: int = 256,
    ops: Optional[Sequence[str]] = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    method: str = "minmax",
    percentile: float = 99.999,
    activation_type: str = "uint8",
    equalize: bool = False,
    bias_correction: bool = False,
    drift_budget: float = 0.0,
    format: str = "qdq",
    block_size: int = 32,
    plan: Optional[str] = None,
    load_plan: Optional[str] = None,
    inputs: Any = None,
    labels: Any = None,
    validate: bool = False,
    report: bool = False,
    as_bytes: bool = False,
    **samples: Any,
) -> Any:
    """Quantize a model, like ``onnx-rewrite quantize``: ``mode="weight"`` (constant weights to int8 / uint8
    read through DequantizeLinear) or ``mode="static"`` (calibrated QDQ on activations too, calibrated on
    ``inputs`` or seeded random samples).

    Options are the CLI's flags: ``per_tensor`` (else per channel), ``symmetric`` (True / False / None: the
    mode's default), ``reduce_range``, ``min_elements``, ``ops``, ``include`` / ``exclude`` (node-name
    patterns), and for static mode ``method`` (minmax, percentile, entropy), ``percentile``,
    ``activation_type``, ``equalize``, ``bias_correction``, ``drift_budget``, and the ``plan`` / ``load_plan``
    paths (write the plan, JSON; build from a plan without calibrating); for weight mode ``format``
    (``"qdq"``, or ``"matmulnbits"``: MatMul weights as ONNX Runtime's MatMulNBits, 8-bit blocks of
    ``block_size`` along K).
    ``validate=True`` compares the result with the input (default tolerances, or ``tolerances={...}`` /
    ``no_default_tolerances``) and raises DriftError past them. Sample keywords: ``seed``, ``samples``,
    ``dims``, ``default_dim``, ``float_range``, ``int_range``.
    Returns the model, or ``(model, report)`` with ``report=True`` (the pass report, plus ``validation``).
    """
    options: Dict[str, Any] = {
        "mode": mode,
        "dtype": dtype,
        "per_channel": not per_tensor,
        "reduce_range": reduce_range,
        "min_elements": min_elements,
        "include": list(include),
        "exclude": list(exclude),
        "method": method,
        "percentile": percentile,
        "activation_type": activation_type,
        "equalize": equalize,
        "bias_correction": bias_correction,
        "drift_budget": drift_budget,
        "format": format,
        "block_size": block_size,
    }
    if symmetric is not None:
        options["symmetric"] = symmetric
    if ops is not None:
        options["ops"] = list(ops)
    for key, value in (("plan", plan), ("load_plan", load_plan)):
        if value is not None:
            options[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return _run_pass(
        model, "quantize", options, inputs, labels, validate, report, as_bytes, samples
    )


def prune(
    model: Any,
    *,
    method: str = "magnitude",
    sparsity: float = 0.5,
    scope: str = "layer",
    threshold: Optional[float] = None,
    n: int = 2,
    m: int = 4,
    ratio: float = 0.3,
    global_: bool = False,
    importance: str = "l1",
    mode: str = "zero",
    round_to: int = 1,
    plan: Optional[str] = None,
    load_plan: Optional[str] = None,
    inputs: Any = None,
    labels: Any = None,
    validate: bool = False,
    report: bool = False,
    as_bytes: bool = False,
    **samples: Any,
) -> Any:
    """Prune weights, like ``onnx-rewrite prune``: ``method="magnitude"`` (``sparsity``, ``scope``,
    ``threshold``), ``"nm"`` (``n`` of every ``m``) or ``"channel"`` (whole channels through their dependency
    groups: ``ratio``, ``global_`` (the CLI's --global), ``importance``, ``mode`` zero / remove, ``round_to``,
    ``plan`` / ``load_plan`` paths). ``validate``, samples and ``report`` as for :func:`quantize`.
    """
    options: Dict[str, Any] = {
        "method": method,
        "sparsity": sparsity,
        "scope": scope,
        "n": n,
        "m": m,
        "ratio": ratio,
        "global": global_,
        "importance": importance,
        "mode": mode,
        "round_to": round_to,
    }
    for key, value in (("threshold", threshold), ("plan", plan), ("load_plan", load_plan)):
        if value is not None:
            options[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return _run_pass(
        model, "prune", options, inputs, labels, validate, report, as_bytes, samples
    )


def lowrank(
    model: Any,
    *,
    rank: Optional[int] = None,
    ratio: Optional[float] = None,
    energy: Optional[float] = None,
    max_error: Optional[float] = None,
    multiple: int = 1,
    min_saving: float = 0.1,
    ops: Sequence[str] = ("MatMul", "Gemm", "Conv"),
    randomized: str = "auto",
    data_aware: bool = False,
    svd_seed: int = 0,
    inputs: Any = None,
    labels: Any = None,
    validate: bool = False,
    report: bool = False,
    as_bytes: bool = False,
    **samples: Any,
) -> Any:
    """Split MatMul / Gemm / 1x1 Conv layers by truncated SVD, like ``onnx-rewrite lowrank``: at most one of
    ``rank``, ``ratio``, ``energy``, ``max_error`` (none: energy 0.95); ``multiple``, ``min_saving``, ``ops``,
    ``randomized`` (auto, always, never), ``svd_seed``, ``data_aware`` (minimise the output error on the
    samples). ``validate``, samples and ``report`` as for :func:`quantize`.
    """
    options: Dict[str, Any] = {
        "multiple": multiple,
        "min_saving": min_saving,
        "ops": list(ops),
        "randomized": randomized,
        "seed": svd_seed,
        "data_aware": data_aware,
    }
    for key, value in (("rank", rank), ("ratio", ratio), ("energy", energy), ("max_error", max_error)):
        if value is not None:
            options[key] = value
    return _run_pass(
        model, "lowrank", options, inputs, labels, validate, report, as_bytes, samples
    )


def validate(
    reference: Any,
    candidate: Any,
    *,
    inputs: Any = None,
    labels: Any = None,
    tolerances: Optional[Dict[str, float]] = None,
    no_default_tolerances: bool = False,
    no_attribution: bool = False,
    latency: Optional[int] = None,
    optimize: bool = False,
    check: bool = False,
    **samples: Any,
) -> Dict[str, Any]:
    """Run two models on the same inputs through tract and return the drift report as a dict (what
    ``onnx-rewrite validate A B --json`` prints; ``report["passed"]`` says whether the tolerances held).

    tolerances: limits overriding the defaults (Pearson >= 0.99, centred SQNR >= 20 dB, SQNR >= 20 dB), keys
        ``max_abs``, ``mean_abs``, ``min_cosine``, ``min_sqnr_db``, ``min_pearson``, ``min_sqnr_centered_db``,
        ``min_top1``, ``min_top5``; ``no_default_tolerances`` starts from no limits.
    check: raise DriftError (with ``.report``) when the tolerances do not hold, like the CLI's exit code 4.
    Sample keywords (``seed``, ``samples``, ``dims``...) and ``inputs`` / ``labels`` as for :func:`run`.
    """
    a, b = _model_arg(reference), _model_arg(candidate)
    with _samples(
        inputs,
        labels,
        tolerances=tolerances,
        no_default_tolerances=no_default_tolerances,
        no_attribution=no_attribution,
        latency=latency,
        optimize=optimize,
        **samples,
    ) as opts:
        report_json, passed = _native.validate(a, b, opts)
    rep = json.loads(report_json)
    rep["passed"] = passed
    if check and not passed:
        raise DriftError("validation failed: drift past the tolerances", rep)
    return rep


def diff(a: Any, b: Any, *, json: bool = False) -> str:
    """The structural diff of two models: the text ``onnx-rewrite diff A B`` prints (``--json`` with
    ``json=True``)."""
    return _native.diff(_model_arg(a), _model_arg(b), json)


def dump(model: Any) -> str:
    """The deterministic text dump of a model: the text ``onnx-rewrite dump M`` prints."""
    return _native.dump(_model_arg(model))


def passes() -> List[Dict[str, Any]]:
    """The registered passes with their options (what ``onnx-rewrite passes --json`` prints)."""
    return json.loads(_native.passes_json())
