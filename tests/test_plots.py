"""Figures: the disk coordinates keep hyperbolic distances to the origin; PNGs are written."""

import numpy as np
import pytest
import torch

from harness.geometry import EuclideanGeometry, PoincareGeometry, expmap0
from harness.plots import cmc_points, disk_coordinates, save_cmc, save_disk, save_histograms


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_disk_radius_is_tanh_of_half_the_distance_to_the_origin(c):
    x = expmap0(torch.randn(200, 16, dtype=torch.float64), c=c)
    xy = disk_coordinates(x.numpy(), geometry=PoincareGeometry(c=c))
    r = np.linalg.norm(xy, axis=1)
    # closed form: a point at Euclidean norm ‖x‖ of the ball of curvature −c is at distance
    # (2/√c)·artanh(√c‖x‖) from the origin, so tanh(√c·d/2) = √c‖x‖
    assert np.allclose(r, np.sqrt(c) * x.norm(dim=1).numpy(), atol=1e-9)
    assert (r < 1).all()


def test_euclidean_coordinates_are_the_top_two_principal_components():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) * np.array([5.0, 3.0, 0.1, 0.1, 0.1])
    xy = disk_coordinates(x, geometry=EuclideanGeometry())
    assert np.allclose(np.abs(np.corrcoef(xy[:, 0], x[:, 0])[0, 1]), 1.0, atol=1e-3)
    assert np.allclose(xy.var(0), np.sort(x.var(0))[::-1][:2] * 299 / 300, rtol=0.05)


def test_pngs_are_written(tmp_path):
    x = expmap0(torch.randn(50, 8), c=1.0).numpy()
    disk = save_disk(tmp_path / "d.png", x, np.arange(50) % 3, geometry=PoincareGeometry(c=1.0))
    hist = save_histograms(tmp_path / "h.png", {"a": {"x": np.arange(10.0), "y": np.ones(5)}})
    for path in (disk, hist):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cmc_points_are_rank_and_value_and_bad_curves_are_errors(tmp_path):
    # the hand-computed re-ID case of tests/test_task_reid.py: first true match at rank 2 of 4
    ranks, values = cmc_points(np.array([0.0, 1.0, 1.0, 1.0]))
    assert ranks.tolist() == [1, 2, 3, 4] and values.tolist() == [0.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="non-decreasing"):
        cmc_points(np.array([0.5, 0.2, 0.1]))  # per-rank hit rates, not cumulative
    with pytest.raises(ValueError, match="fractions in"):
        cmc_points(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        cmc_points(np.zeros((2, 3)))
    path = save_cmc(tmp_path / "cmc.png", np.array([0.2, 0.5, 0.9]))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
