"""Exceptions of onnx_rewrite. Each carries the exit code the CLI uses for the same failure
(``exit_code``) and the CLI's message unchanged (``str(e)``)."""

from typing import Any, Dict, Optional


class OnnxRewriteError(Exception):
    """Base class. Raised as such for an unexpected failure (CLI exit code 1: a pass failed, a write failed)."""

    exit_code = 1


class UsageError(OnnxRewriteError, ValueError):
    """Bad options or recipe: unknown pass, option out of range, malformed recipe (CLI exit code 2)."""

    exit_code = 2


class BadModelError(OnnxRewriteError, ValueError):
    """The model, an external data file, an input or labels file is malformed or unreadable (exit code 3)."""

    exit_code = 3


class DriftError(OnnxRewriteError):
    """The result drifted past a budget or tolerance (exit code 4). ``report`` holds the report as a dict (the
    pipeline report for :func:`run`, the validation report for a shortcut with ``validate=True``)."""

    exit_code = 4

    def __init__(self, message: str, report: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.report = report


class CannotValidateError(OnnxRewriteError):
    """tract cannot load, type or run a model, so nothing was compared (exit code 5)."""

    exit_code = 5
