"""Small helpers every layer uses: missing values, JSON of numpy values, one-line exception reasons."""
from __future__ import annotations

from pathlib import Path


def is_missing(value) -> bool:
    """None or NaN (a Python, numpy or pandas NaN, ``pandas.NA``, ``NaT``): a value that was not recorded."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN is the only value not equal to itself
    if getattr(value, "ndim", 0) or isinstance(value, (str, bytes, list, tuple, dict, set)):
        return False  # a container (an array of one NaN included) is a value
    try:
        return bool(value != value)
    except (TypeError, ValueError):  # pandas.NA (ambiguous truth value), an array
        return type(value).__name__ == "NAType"


def json_default(o):
    """``json.dumps(..., default=json_default)``: numpy ints / floats (non-finite -> null) / arrays, paths.

    (``numpy.float64`` is a Python float: json writes it itself, NaN as ``NaN``.)"""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def exception_reason(exc: BaseException) -> str:
    """``"ValueError: first line of the message"`` (just the type name when the message is empty)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
