"""Type stubs of onnx_rewrite (docstrings: help(onnx_rewrite.run) etc.)."""

import os
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union, overload

import numpy.typing as npt

from ._errors import (
    BadModelError as BadModelError,
    CannotValidateError as CannotValidateError,
    DriftError as DriftError,
    OnnxRewriteError as OnnxRewriteError,
    UsageError as UsageError,
)

__version__: str

# an onnx.ModelProto, serialized bytes, or a path
ModelLike = Union[Any, bytes, bytearray, memoryview, str, os.PathLike]
# TOML text, a path to a TOML file, or a dict with the recipe schema
RecipeLike = Union[str, os.PathLike, Mapping[str, Any]]
Sample = Union[npt.ArrayLike, Mapping[str, npt.ArrayLike]]
InputsLike = Union[None, str, os.PathLike, Sample, Sequence[Sample], Sequence[Union[str, os.PathLike]]]
LabelsLike = Union[None, str, os.PathLike, npt.ArrayLike]
# onnx.ModelProto, or bytes when onnx is not installed / as_bytes=True
ModelOut = Any
Report = Dict[str, Any]

@overload
def run(
    model: ModelLike,
    recipe: RecipeLike,
    *,
    inputs: InputsLike = ...,
    labels: LabelsLike = ...,
    report: Literal[False] = ...,
    seed: Optional[int] = ...,
    samples: Optional[int] = ...,
    dims: Optional[Dict[str, int]] = ...,
    default_dim: Optional[int] = ...,
    float_range: Optional[Tuple[float, float]] = ...,
    int_range: Optional[Tuple[int, int]] = ...,
    no_validate: bool = ...,
    stop_after: Optional[str] = ...,
    latency: int = ...,
    as_bytes: bool = ...,
) -> ModelOut: ...
@overload
def run(
    model: ModelLike,
    recipe: RecipeLike,
    *,
    inputs: InputsLike = ...,
    labels: LabelsLike = ...,
    report: Literal[True],
    seed: Optional[int] = ...,
    samples: Optional[int] = ...,
    dims: Optional[Dict[str, int]] = ...,
    default_dim: Optional[int] = ...,
    float_range: Optional[Tuple[float, float]] = ...,
    int_range: Optional[Tuple[int, int]] = ...,
    no_validate: bool = ...,
    stop_after: Optional[str] = ...,
    latency: int = ...,
    as_bytes: bool = ...,
) -> Tuple[ModelOut, Report]: ...
def quantize(
    model: ModelLike,
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
    plan: Optional[Union[str, os.PathLike]] = None,
    load_plan: Optional[Union[str, os.PathLike]] = None,
    inputs: InputsLike = None,
    labels: LabelsLike = None,
    validate: bool = False,
    report: bool = False,
    as_bytes: bool = False,
    **samples: Any,
) -> Union[ModelOut, Tuple[ModelOut, Report]]: ...
def prune(
    model: ModelLike,
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
    plan: Optional[Union[str, os.PathLike]] = None,
    load_plan: Optional[Union[str, os.PathLike]] = None,
    inputs: InputsLike = None,
    labels: LabelsLike = None,
    validate: bool = False,
    report: bool = False,
    as_bytes: bool = False,
    **samples: Any,
) -> Union[ModelOut, Tuple[ModelOut, Report]]: ...
def lowrank(
    model: ModelLike,
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
    inputs: InputsLike = None,
    labels: LabelsLike = None,
    validate: bool = False,
    report: bool = False,
    as_bytes: bool = False,
    **samples: Any,
) -> Union[ModelOut, Tuple[ModelOut, Report]]: ...
def validate(
    reference: ModelLike,
    candidate: ModelLike,
    *,
    inputs: InputsLike = None,
    labels: LabelsLike = None,
    tolerances: Optional[Dict[str, float]] = None,
    no_default_tolerances: bool = False,
    no_attribution: bool = False,
    latency: Optional[int] = None,
    optimize: bool = False,
    check: bool = False,
    **samples: Any,
) -> Report: ...
def diff(a: ModelLike, b: ModelLike, *, json: bool = False) -> str: ...
def dump(model: ModelLike) -> str: ...
def passes() -> List[Dict[str, Any]]: ...
