"""Summary statistics for leaderboards."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_ci95(values: Sequence[float]) -> tuple[float, float | None, int]:
    """Mean and the half-width of the 95% Student-t interval, ``t_{0.975, n−1} · s / √n``.

    ``s`` is the sample standard deviation (ddof = 1). With one value the
    half-width is ``None`` (no interval can be given).
    """
    from scipy.stats import t

    n = len(values)
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None, 1
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, float(t.ppf(0.975, n - 1)) * math.sqrt(var / n), n
