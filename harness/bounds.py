"""The values a metric can take: ``(low, high)`` pairs, ``None`` for an open side.

A task declares them per metric (``Task.BOUNDS``); a value outside fails the cell, and a result file
holding one is refused (:func:`harness.results.validate`). No torch import: the leaderboard reads
results without it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

#: The bounds of a rate, an accuracy, a recall, an AP or an AUROC.
UNIT: tuple[float, float] = (0.0, 1.0)
#: The bounds of a correlation (Pearson, Spearman) and of a difference of two rates.
SIGNED_UNIT: tuple[float, float] = (-1.0, 1.0)
#: The bounds of a distance or a δ.
NON_NEGATIVE: tuple[float, None] = (0.0, None)
#: How far float rounding may carry a value past a bound (it is then set to the bound).
BOUNDS_ROUNDING = 1e-9


def check_bounds(bounds: Any) -> tuple[float | None, float | None]:
    """``bounds`` as a ``(low, high)`` pair of finite floats or ``None`` (an open side), low < high."""
    if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__") or len(bounds) != 2 or not all(
            b is None or isinstance(b, numbers.Real) and not isinstance(b, bool) for b in bounds):
        raise ValueError(f"metric bounds are a pair (low, high) of numbers or None, got {bounds!r}")
    low, high = (None if b is None else float(b) for b in bounds)
    if any(b is not None and not math.isfinite(b) for b in (low, high)) or (
            low is not None and high is not None and not low < high):
        raise ValueError(f"metric bounds {bounds!r} are not finite with low < high (None for an open side)")
    return low, high


def within_bounds(value: float, bounds: tuple[float | None, float | None], what: str = "metric") -> float:
    """``value``, moved onto a bound it passes by float rounding (:data:`BOUNDS_ROUNDING`); a value
    farther outside raises ``ValueError`` naming ``what``."""
    low, high = bounds
    for bound, outside in ((low, low is not None and value < low), (high, high is not None and value > high)):
        if outside:
            if abs(value - bound) > BOUNDS_ROUNDING * max(1.0, abs(bound)):  # type: ignore[arg-type]
                shown = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
                raise ValueError(f"{what}: value {value!r} is outside its bounds {shown}")
            return float(bound)  # type: ignore[arg-type]
    return value
