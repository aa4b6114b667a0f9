"""When a number measures float rounding rather than a model: the degenerate rule and embedding diagnostics.

One rule decides, for every task, when a measured quantity (a score, a
distance to the origin, a set of prototype distances) is too close to
constant to carry a metric:

* round every value to a grid of step ``REL_TOL × max|x|`` (a relative
  tolerance: float32 keeps about 7 significant digits, so ``REL_TOL = 1e-5``
  is about 80 float32 ulps — rounding noise lands in one or two cells);
* the values are **degenerate** when they fill fewer than ``MIN_DISTINCT``
  cells (5: "fewer than a handful"), or when one cell holds more than
  ``MAX_TIED_FRACTION`` of them (90%: a clipped head with a few embeddings
  inside the clipping sphere); a constant array fills one. With 90% of the
  pooled values of an AUROC in one cell, about 80% or more of its (ID, OOD)
  pairs tie, so the AUROC lies within about 0.1 of 0.5 whatever the other
  values do: the number is mostly the formula's value for ties. (The clause
  was 99% until a 16-epoch ``poincare_mlr`` left 96% of its embeddings on
  the clipping sphere and scored a dist0 AUROC of 0.498 from the other 4%.)

A metric computed from degenerate values is ``null`` with the reason
(:class:`harness.task.MetricValue`), never the number the formula returns for
ties (an AUROC of 0.5, a Spearman correlation of float rounding). Label-like
sides of a correlation (tree distances 2 / 4, depth levels) are discrete by
design; for them only a constant side is degenerate (``min_distinct=2``).

The example this rule was written for: ``poincare_mlr`` with feature clipping
puts every embedding on one sphere, and its float32 distances to the origin
take three values, 1.99999976, 2.0 and 2.00000048 (relative spread 2.4e-7):
one cell, degenerate. :func:`embedding_diagnostics` reports that symptom for
any embedding set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Values closer than this fraction of the largest magnitude count as equal.
REL_TOL = 1e-5
#: Fewer distinct values (after rounding at ``REL_TOL``) than this: degenerate.
MIN_DISTINCT = 5
#: More than this fraction of the values in one cell (after rounding): degenerate.
MAX_TIED_FRACTION = 0.9
#: More than this fraction of (positive, negative) pairs tied: an AUROC is undefined (:func:`tied_pairs_reason`).
MAX_TIED_PAIR_FRACTION = 0.5
#: "On the largest sphere": distance to the origin within this fraction of the largest.
ON_SPHERE_RTOL = 1e-4
#: Quantiles (in %) of the distance to the origin that :func:`embedding_diagnostics` reports.
QUANTILES = (0, 5, 25, 50, 75, 95, 100)


def _as_float64(values: Any, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(values, dtype=np.float64).ravel()
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} of {x.size} values are NaN or inf; "
                         "check the embeddings (the model may have diverged)")
    return x


def rounded(values: Any) -> np.ndarray:
    """The values rounded to multiples of ``REL_TOL × max|x|`` (as float64 cell indices).

    Equal cells are ties: rank statistics on these merge values that differ only by
    float rounding (:func:`harness.tasks._correlation.spearman`).
    """
    x = _as_float64(values, "values")
    scale = float(np.abs(x).max()) if x.size else 0.0
    if scale == 0.0:
        return np.zeros_like(x)
    return np.round(x / (REL_TOL * scale))


def distinct_values(values: Any) -> int:
    """How many distinct values there are after rounding at ``REL_TOL`` (:func:`rounded`)."""
    return int(np.unique(rounded(values)).size)


def degenerate_reason(values: Any, what: str, *, min_distinct: int = MIN_DISTINCT) -> str | None:
    """Why ``values`` cannot carry a metric, or ``None`` if they can.

    Degenerate: fewer than ``min_distinct`` distinct values after rounding at a
    relative ``REL_TOL``, or (for ``min_distinct > 2``: measured values, not label-like
    ones) more than ``MAX_TIED_FRACTION`` of them in one value (see the module
    docstring). ``what`` names the values in the reason (e.g. ``"the dist0 score over
    ID and OOD images"``).
    """
    x = _as_float64(values, what)
    if x.size == 0:
        return f"{what}: there are no values"
    cells = rounded(x)
    distinct, counts = np.unique(cells, return_counts=True)
    k = distinct.size
    if k == 1:
        return (f"{what} is constant ({x[0]:.9g} for all {x.size}, up to a relative {REL_TOL:g}): "
                "the metric would measure ties, not the model")
    if k < min_distinct:
        lo, hi = float(x.min()), float(x.max())
        return (f"{what} takes only {k} distinct values among {x.size} (in [{lo:.9g}, {hi:.9g}], rounded at a "
                f"relative {REL_TOL:g}); fewer than {min_distinct} is treated as constant")
    if min_distinct > 2:
        top = int(counts.argmax())
        if counts[top] > MAX_TIED_FRACTION * x.size:
            value = float(x[cells == distinct[top]][0])
            return (f"{what}: {counts[top]} of {x.size} values are one value ({value:.9g}, up to a relative "
                    f"{REL_TOL:g}); more than {MAX_TIED_FRACTION:.0%} tied is treated as constant")
    return None


def tied_pairs_reason(positives: Any, negatives: Any, what: str) -> str | None:
    r"""Why an AUROC of ``positives`` against ``negatives`` would be mostly ties, or ``None``.

    With both sides rounded on their pooled scale (:func:`rounded`), the fraction of tied
    (positive, negative) pairs is :math:`\sum_v n_+(v)\,n_-(v) / (N_+ N_-)`. The AUROC counts each tied
    pair as ½, so when more than ``MAX_TIED_PAIR_FRACTION`` (half) of the pairs tie, more than half of
    the number is ½ by construction, whatever the model does: it is undefined. This catches what the
    pooled rule of :func:`degenerate_reason` lets through when the two sides are tied unevenly (a clipped
    head with 84% of its ID embeddings and 97% of the OOD ones on the clipping sphere: 82% of the pairs
    tie, AUROC 0.4996).
    """
    pos, neg = _as_float64(positives, what), _as_float64(negatives, what)
    if pos.size == 0 or neg.size == 0:
        return f"{what}: one side has no values"
    cells = rounded(np.concatenate([pos, neg]))
    values, inverse = np.unique(cells, return_inverse=True)
    n_pos = np.bincount(inverse[: pos.size], minlength=values.size)
    n_neg = np.bincount(inverse[pos.size:], minlength=values.size)
    fraction = float((n_pos * n_neg).sum()) / (pos.size * neg.size)
    if fraction > MAX_TIED_PAIR_FRACTION:
        return (f"{what}: {fraction:.0%} of the {pos.size}×{neg.size} pairs tie (up to a relative {REL_TOL:g}); "
                f"an AUROC counts a tie as 1/2, so more than {MAX_TIED_PAIR_FRACTION:.0%} tied is treated as "
                "undefined")
    return None


def collapsed_reason(embeddings: Any, what: str = "embeddings") -> str | None:
    """``None``, or why the embeddings cannot be ranked: every one is the same point.

    Collapsed: the largest per-coordinate spread is at most ``REL_TOL × max|x|``.
    Distances among them are then all equal (or float rounding), and any ranking
    or nearest-neighbour metric would only report how ties are broken.
    """
    x = embeddings.detach().to("cpu", torch.float64).numpy() if isinstance(embeddings, torch.Tensor) \
        else np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        return None
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {int((~np.isfinite(x).all(-1)).sum())} of {len(x)} rows contain NaN or inf")
    scale = float(np.abs(x).max())
    spread = float((x.max(0) - x.min(0)).max())
    if spread <= REL_TOL * scale or scale == 0.0:
        return (f"all {len(x)} {what} are the same point (spread {spread:.3g} ≤ {REL_TOL:g} × {scale:.3g}): "
                "distances are all equal and the metric would only measure how ties are broken")
    return None


def embedding_diagnostics(embeddings: Any, geometry: Any) -> dict[str, Any]:
    """Facts about the distance to the origin of a set of embeddings (JSON-ready).

    ``embeddings`` ``(n, d)`` in the method's geometry; the distance to the origin is
    ``geometry.dist0`` computed in the embeddings' own dtype (as the tasks do).
    Returns

    * ``n`` — number of embeddings;
    * ``dist0_quantiles`` — ``{"q0": min, "q5": ..., "q100": max}`` (:data:`QUANTILES`, linear
      interpolation, ``numpy.quantile``'s default);
    * ``dist0_distinct`` — number of distinct values exactly as computed (three for
      clipped ``poincare_mlr``: the float32 neighbours of 2.0);
    * ``dist0_distinct_rtol`` — number of distinct values after rounding at ``REL_TOL``;
    * ``on_max_sphere_fraction`` — fraction of embeddings whose distance to the origin is
      within ``ON_SPHERE_RTOL`` (relative) of the largest: 1.0 when every embedding lies on
      one sphere;
    * ``dist0_degenerate`` — :func:`degenerate_reason` of the distances, or ``None``.
    """
    x = torch.as_tensor(embeddings)
    if x.dim() != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x).all(-1)).sum())
        raise ValueError(f"{bad} of {len(x)} embeddings contain NaN or inf; no diagnostics can be computed")
    with torch.no_grad():
        r_native = geometry.dist0(x).detach().cpu()
    distinct = int(torch.unique(r_native).numel())
    r = r_native.double().numpy()
    top = float(r.max())
    q = np.quantile(r, np.asarray(QUANTILES) / 100.0)
    return {
        "n": int(len(r)),
        "dist0_quantiles": {f"q{p}": float(v) for p, v in zip(QUANTILES, q)},
        "dist0_distinct": distinct,
        "dist0_distinct_rtol": distinct_values(r),
        "on_max_sphere_fraction": float(np.mean(r >= top - ON_SPHERE_RTOL * abs(top))),
        "dist0_degenerate": degenerate_reason(r, "the distance to the origin"),
    }
