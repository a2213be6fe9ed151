"""Strict JSON for every file the project writes (reports, metrics, summaries, bench results).

NaN and the infinities are not JSON: Python writes them by default and strict parsers (jq,
JavaScript's JSON.parse) then reject the whole file. An undefined number (a sparsity over no
prunable tensor, a correlation of constant predictions) is written as null instead, and
`allow_nan=False` guarantees nothing non-finite slips through.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def clean(obj: Any) -> Any:
    """`obj` with numpy scalars as Python numbers and non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.ndim == 0 or isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, **kwargs) -> str:
    return json.dumps(clean(obj), allow_nan=False, **kwargs)


def _reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


def loads_strict(text: str) -> Any:
    """json.loads that refuses NaN/Infinity, as jq and JSON.parse do."""
    return json.loads(text, parse_constant=_reject)
