"""Correlations that are ``None`` with a reason where they are undefined, and their per-class mean.

Shared by ``hierarchy`` (CPCC, the radius–angle Spearman) and ``typicality``.
Undefined = a degenerate side by the one rule of :mod:`harness.diagnostics`
(a constant side, or float rounding only); the functions then return
``(None, reason)`` instead of raising or returning a number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.diagnostics import MIN_DISTINCT, degenerate_reason, rounded


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation of two 1-D arrays (float64); an error if either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"pearson needs two 1-D arrays of equal length >= 2, got {x.shape} and {y.shape}")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    if den == 0:
        raise ValueError("correlation is undefined: one of the arrays is constant")
    return float((xc * yc).sum() / den)


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks (ties share their mean rank).

    Values are first rounded at the relative tolerance of :func:`harness.diagnostics.rounded`,
    so values that differ only by float rounding are ties (scipy's ``spearmanr`` would rank
    them). On data without such near-ties the result equals ``scipy.stats.spearmanr``.
    """
    from scipy.stats import rankdata

    return pearson(rankdata(rounded(x)), rankdata(rounded(y)))


def correlation_or_reason(x: Any, y: Any, *, method: str, x_what: str, y_what: str,
                          x_min_distinct: int = MIN_DISTINCT,
                          y_min_distinct: int = MIN_DISTINCT) -> tuple[float | None, str | None]:
    """``(r, None)``, or ``(None, reason)`` when a side is degenerate.

    ``method``: ``"pearson"`` or ``"spearman"``. ``*_min_distinct``: the degenerate
    threshold of each side (2 for a label-like side, where only a constant is
    degenerate; :data:`~harness.diagnostics.MIN_DISTINCT` for a measured one).
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    for values, what, k in ((x, x_what, x_min_distinct), (y, y_what, y_min_distinct)):
        reason = degenerate_reason(values, what, min_distinct=k)
        if reason is not None:
            return None, f"correlation undefined: {reason}"
    return (pearson(x, y) if method == "pearson" else spearman(x, y)), None


def per_group_spearman(x: Any, y: Any, groups: Any, *, x_what: str, y_what: str,
                       y_min_distinct: int = MIN_DISTINCT) -> dict[str, Any]:
    """Spearman correlation of ``x`` and ``y`` within each group (class), and their mean.

    Each group is one unit: ``mean`` is the unweighted mean of the groups' correlations
    over the groups where it is defined, ``ci95 = 1.96 · std(ddof=1) / sqrt(groups)``
    across them (``None`` for one group). Groups whose correlation is undefined (a
    degenerate side, see :func:`correlation_or_reason`) are left out and listed in
    ``skipped`` with the reason. ``mean`` is ``None`` when no group is left, with
    ``reason`` = the first group's reason and how many groups share it.

    Returns ``{"mean", "ci95", "n", "per_group", "skipped", "reason"}``.
    """
    x, y, g = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), np.asarray(groups)
    if not (x.shape == y.shape == g.shape) or x.ndim != 1:
        raise ValueError(f"x, y and groups must be 1-D of one length, got {x.shape}, {y.shape}, {g.shape}")
    per_group: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for label in np.unique(g):
        m = g == label
        r, reason = correlation_or_reason(x[m], y[m], method="spearman", x_what=f"{x_what} in class {label}",
                                          y_what=f"{y_what} in class {label}", y_min_distinct=y_min_distinct)
        if r is None:
            skipped[str(label)] = reason
        else:
            per_group[str(label)] = r
    out: dict[str, Any] = {"per_group": per_group, "skipped": skipped, "n": len(per_group),
                           "mean": None, "ci95": None, "reason": None}
    if not per_group:
        first = next(iter(skipped.values()), f"no {x_what} values")
        out["reason"] = f"undefined in every class ({len(skipped)} classes); e.g. {first}"
        return out
    r = np.fromiter(per_group.values(), dtype=np.float64)
    out["mean"] = float(r.mean())
    out["ci95"] = float(1.96 * r.std(ddof=1) / np.sqrt(r.size)) if r.size > 1 else None
    return out
