"""EuclideanGeometry / PoincareGeometry: the interface tasks and methods code against."""

from __future__ import annotations

import json

import pytest
import torch

from harness.geometry import (
    Curvature,
    EuclideanGeometry,
    PoincareGeometry,
    dist0,
    einstein_midpoint,
    euclidean_pairwise_dist,
    expmap0,
    pairwise_dist,
)


def test_euclidean_pairwise_exact_diagonal_and_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 64, generator=g) * 10 + 50  # large offset: the matmul form cancels
    x = torch.cat([x, x[:50] + 1e-3 * torch.randn(50, 64, generator=g)])
    d = EuclideanGeometry().pairwise_dist(x)
    ref = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    assert d.dtype == torch.float32 and (d.diagonal() == 0).all()
    assert ((d.double() - ref).abs() / ref.clamp_min(1e-3)).max() < 1e-3
    naive = torch.cdist(x, x)  # torch's default uses the matmul form for large inputs
    assert (naive.diagonal().double()).abs().max() > 1e-3
    y = torch.randn(7, 64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(euclidean_pairwise_dist(x[:5].double(), y), torch.cdist(x[:5].double(), y), atol=1e-12,
                               rtol=0)


def test_euclidean_gradient_finite_at_zero_distance():
    x = torch.randn(6, 3, dtype=torch.float64)
    x = torch.cat([x, x[:2]]).requires_grad_()
    (gr,) = torch.autograd.grad(EuclideanGeometry().pairwise_dist(x).sum(), x)
    assert torch.isfinite(gr).all()
    xs = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ys = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: euclidean_pairwise_dist(a, b), (xs, ys))


def test_euclidean_midpoint_and_prototypes():
    geo = EuclideanGeometry()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (40,), generator=g)
    labels[labels == 4] = 0
    protos = geo.class_prototypes(x, labels, 6)
    for k in range(6):
        want = x[labels == k].mean(0) if (labels == k).any() else torch.zeros(5, dtype=x.dtype)
        torch.testing.assert_close(protos[k], want)
    w = torch.rand(4, 10, generator=g, dtype=torch.float64)
    xs = x.reshape(4, 10, 5)
    torch.testing.assert_close(geo.midpoint(xs, weights=w), (w[..., None] * xs).sum(1) / w.sum(1, keepdim=True))
    torch.testing.assert_close(geo.midpoint(xs, dim=0), xs.mean(0))
    # an empty set gives the origin in both geometries (not NaN in one and 0 in the other)
    empty = torch.zeros(2, 0, 3, dtype=torch.float64)
    for space in (geo, PoincareGeometry(0.5)):
        torch.testing.assert_close(space.midpoint(empty), torch.zeros(2, 3, dtype=torch.float64), atol=0, rtol=0)
    torch.testing.assert_close(geo.dist0(x), x.norm(dim=-1))
    assert geo.to_json() == {"name": "euclidean", "c": 0.0}


@pytest.mark.parametrize("c", [0.5, 1.0])
def test_poincare_geometry_delegates_to_free_functions(c):
    geo = PoincareGeometry(c)
    g = torch.Generator().manual_seed(2)
    x = expmap0(torch.randn(3, 12, 4, generator=g, dtype=torch.float64), c=c)
    torch.testing.assert_close(geo.pairwise_dist(x), pairwise_dist(x, c=c), atol=0, rtol=0)
    torch.testing.assert_close(geo.dist0(x), dist0(x, c=c), atol=0, rtol=0)
    torch.testing.assert_close(geo.midpoint(x), einstein_midpoint(x, c=c), atol=0, rtol=0)
    assert geo.pairwise_dist(x).shape == (3, 12, 12)
    flat = x.reshape(36, 4)
    labels = torch.arange(3).repeat_interleave(12)
    torch.testing.assert_close(geo.class_prototypes(flat, labels, 3), einstein_midpoint(x, c=c), atol=1e-12, rtol=0)
    assert geo.name == "poincare" and geo.c == c
    assert json.loads(json.dumps(geo.to_json())) == {"name": "poincare", "c": c}


def test_poincare_geometry_follows_a_learnable_curvature():
    curv = Curvature(1.0, learnable=True)
    geo = PoincareGeometry(curv)
    x = expmap0(torch.randn(5, 3) * 0.3, c=0.1)
    d1 = geo.pairwise_dist(x)
    with torch.no_grad():
        curv.theta.fill_(-0.5)
    c_now = float(curv().detach())
    assert c_now != pytest.approx(1.0)
    torch.testing.assert_close(geo.pairwise_dist(x), pairwise_dist(x, c=c_now), atol=1e-6, rtol=0)
    assert not torch.allclose(d1, geo.pairwise_dist(x))
    assert geo.to_json()["c"] == pytest.approx(c_now)
    geo_t = PoincareGeometry(torch.tensor(2.0))
    assert geo_t.to_json() == {"name": "poincare", "c": 2.0}


def test_geometry_bad_input():
    with pytest.raises(ValueError, match="c must be > 0"):
        PoincareGeometry(0.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        PoincareGeometry(torch.tensor(-1.0))
    with pytest.raises(ValueError, match="labels must have shape"):
        EuclideanGeometry().class_prototypes(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="not the last"):
        PoincareGeometry().midpoint(torch.zeros(3, 2), dim=-1)
    with pytest.raises(ValueError, match="same point dimension"):
        EuclideanGeometry().pairwise_dist(torch.zeros(3, 2), torch.zeros(3, 4))
