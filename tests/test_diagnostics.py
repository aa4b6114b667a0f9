"""harness.diagnostics: the degenerate rule and embedding diagnostics on hand-made sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.diagnostics import (MIN_DISTINCT, REL_TOL, collapsed_reason, degenerate_reason, distinct_values,
                                 embedding_diagnostics, rounded)
from harness.geometry import EuclideanGeometry, PoincareGeometry

# The float32 distances to the origin of clipped poincare_mlr embeddings: 2.0 and its two neighbours.
ONE_SPHERE = np.array([1.99999976, 2.0, 2.00000048], dtype=np.float32)


def test_the_one_sphere_case_is_degenerate() -> None:
    assert len(np.unique(ONE_SPHERE)) == 3
    assert distinct_values(ONE_SPHERE) == 1
    reason = degenerate_reason(np.tile(ONE_SPHERE, 100), "the distance to the origin")
    assert reason.startswith("the distance to the origin is constant") and "300" in reason


def test_distinct_values_round_at_the_relative_tolerance() -> None:
    # step = REL_TOL * max|x| = 1e-5 * 10: values 1e-6 apart merge, values 1e-3 apart do not
    x = np.array([10.0, 10.0 - 1e-6, 9.999, 5.0, 0.0])
    assert np.unique(rounded(x)).size == 4
    assert distinct_values(x) == 4
    assert distinct_values(np.zeros(7)) == 1
    assert rounded(np.array([3.0, -3.0])).tolist() == [round(1 / REL_TOL), -round(1 / REL_TOL)]


def test_fewer_than_a_handful_is_degenerate() -> None:
    four = np.repeat([0.1, 0.2, 0.3, 0.4], 10)
    assert MIN_DISTINCT == 5
    reason = degenerate_reason(four, "the score")
    assert "only 4 distinct values among 40" in reason
    assert degenerate_reason(np.r_[four, 0.5], "the score") is None
    # a label-like side: two values are fine, one is not
    assert degenerate_reason([2, 4, 4, 2], "tree distance", min_distinct=2) is None
    assert "constant" in degenerate_reason([4, 4, 4], "tree distance", min_distinct=2)
    assert "no values" in degenerate_reason([], "the score")
    with pytest.raises(ValueError, match="1 of 3 values are NaN"):
        degenerate_reason([1.0, math.nan, 2.0], "the score")


def test_collapsed_embeddings() -> None:
    x = np.ones((5, 3))
    assert "all 5 embeddings are the same point" in collapsed_reason(x)
    x[2, 1] += 1e-7  # below REL_TOL * max|x| = 1e-5: still one point
    assert collapsed_reason(x) is not None
    x[2, 1] += 1e-3
    assert collapsed_reason(x) is None
    assert collapsed_reason(np.zeros((4, 2))) is not None
    assert collapsed_reason(np.ones((1, 2))) is None  # one point is not a collapse


def test_embedding_diagnostics_euclidean_hand_made() -> None:
    # 1-D embeddings at radii 0, 1, ..., 100 (signs mixed): the quantiles are the percentages
    r = np.arange(101.0)
    x = torch.tensor(r * np.where(np.arange(101) % 2, 1, -1))[:, None]
    d = embedding_diagnostics(x, EuclideanGeometry())
    assert d["n"] == 101
    assert d["dist0_quantiles"] == {f"q{p}": float(p) for p in (0, 5, 25, 50, 75, 95, 100)}
    assert d["dist0_distinct"] == 101 and d["dist0_distinct_rtol"] == 101
    assert d["on_max_sphere_fraction"] == pytest.approx(1 / 101) and d["dist0_degenerate"] is None


def test_embedding_diagnostics_on_one_sphere() -> None:
    # float32 radii 2.0 and its neighbours (Euclidean norms of 1-D points), then the Poincaré ball
    x = torch.tensor(np.tile(ONE_SPHERE, 4))[:, None]
    d = embedding_diagnostics(x, EuclideanGeometry())
    assert d["dist0_distinct"] == 3 and d["dist0_distinct_rtol"] == 1
    assert d["on_max_sphere_fraction"] == 1.0 and "constant" in d["dist0_degenerate"]
    # Poincaré ball (c = 1): ‖x‖ = tanh(1) is at distance 2 from the origin; 3 of 4 points there
    rng = np.random.default_rng(0)
    u = rng.normal(size=(4, 6))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    radii = np.array([math.tanh(1.0), math.tanh(1.0), math.tanh(1.0), math.tanh(0.5)])
    p = torch.tensor(u * radii[:, None])
    d = embedding_diagnostics(p, PoincareGeometry(c=1.0))
    assert d["dist0_quantiles"]["q100"] == pytest.approx(2.0) and d["dist0_quantiles"]["q0"] == pytest.approx(1.0)
    assert d["on_max_sphere_fraction"] == 0.75
    # the tolerance: 5e-5 below the largest radius counts as on the sphere, 2e-4 below does not
    e = torch.tensor([[1.0], [1.0 - 5e-5], [1.0 - 2e-4], [0.5]], dtype=torch.float64)
    assert embedding_diagnostics(e, EuclideanGeometry())["on_max_sphere_fraction"] == 0.5


def test_embedding_diagnostics_bad_input() -> None:
    with pytest.raises(ValueError, match="1 of 2 embeddings contain NaN"):
        embedding_diagnostics(torch.tensor([[0.1, math.nan], [0.2, 0.1]]), EuclideanGeometry())
    with pytest.raises(ValueError, match="non-empty"):
        embedding_diagnostics(torch.zeros(0, 3), EuclideanGeometry())


def test_values_almost_all_tied_are_degenerate_however_many_distinct_values_the_rest_take():
    # 1,430 embeddings on the clipping sphere (radius 2) and 10 inside it: 11 distinct values, 99.3% tied
    inside = np.linspace(1.4, 1.9, 10)
    reason = degenerate_reason(np.r_[np.full(1430, 2.0), inside], "the distance to the origin")
    assert reason.startswith("the distance to the origin: 1430 of 1440 values are one value (2,")
    assert "more than 90% tied" in reason
    # 95.7% on the sphere, 62 distinct values inside (a 16-epoch poincare_mlr): still degenerate
    assert degenerate_reason(np.r_[np.full(1378, 2.0), np.linspace(1.3, 1.9, 62)], "d") is not None
    assert degenerate_reason(np.r_[np.full(1290, 2.0), np.linspace(1.4, 1.9, 150)], "d") is None  # 89.6% tied
    assert degenerate_reason(np.r_[np.full(995, 2), np.full(5, 4)], "tree distance", min_distinct=2) is None


def test_an_auroc_with_more_than_half_of_its_pairs_tied_is_undefined():
    from harness.diagnostics import tied_pairs_reason

    # 8 of 10 positives and 9 of 10 negatives at 2.0: 72 of the 100 pairs tie (hand count)
    reason = tied_pairs_reason(np.r_[np.full(8, 2.0), 1.0, 1.5], np.r_[np.full(9, 2.0), 0.5], "s")
    assert reason.startswith("s: 72% of the 10×10 pairs tie")
    # 5 and 5 at 2.0: 25 of 100 pairs tie; the AUROC is defined
    assert tied_pairs_reason(np.r_[np.full(5, 2.0), np.arange(5.0)], np.r_[np.full(5, 2.0), np.arange(5.0) + 10],
                             "s") is None
    # values that differ only by float rounding tie (the pooled scale's relative 1e-5)
    assert tied_pairs_reason(np.full(4, 2.0), np.full(4, 2.0) + 1e-7, "s") is not None
    # random continuous scores: no ties, the chance case
    rng = np.random.default_rng(0)
    assert tied_pairs_reason(rng.normal(size=500), rng.normal(size=300), "s") is None
