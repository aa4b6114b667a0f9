"""Poincaré ↔ Klein ↔ Lorentz conversions and Lorentz distances."""

from __future__ import annotations

import math
import warnings

import geoopt
import pytest
import torch

from harness.geometry import (
    dist0,
    geoopt_lorentz_k,
    klein_to_lorentz,
    klein_to_poincare,
    lorentz_dist,
    lorentz_dist0,
    lorentz_pairwise_dist,
    lorentz_project,
    lorentz_to_klein,
    lorentz_to_poincare,
    pairwise_dist,
    poincare_to_klein,
    poincare_to_lorentz,
)

warnings.filterwarnings("ignore", category=FutureWarning)
CS = [0.4, 1.0, 2.0]


def ball_points(n: int, d: int, c: float, seed: int, rmax: float = 0.95) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    return u / u.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=g, dtype=torch.float64) * rmax / c**0.5


def test_hand_values_c1():
    p = torch.tensor([0.5, 0.0], dtype=torch.float64)
    torch.testing.assert_close(poincare_to_klein(p, c=1.0), torch.tensor([0.8, 0.0], dtype=torch.float64))
    # x0 = (1 + 1/4)/(1 - 1/4) = 5/3, x̄ = 2p/(3/4) = (4/3, 0)
    torch.testing.assert_close(poincare_to_lorentz(p, c=1.0), torch.tensor([5 / 3, 4 / 3, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("c", CS)
def test_round_trips_and_on_manifold(c):
    p = ball_points(50, 5, c, 0)
    k = poincare_to_klein(p, c=c)
    x = poincare_to_lorentz(p, c=c)
    torch.testing.assert_close(klein_to_poincare(k, c=c), p, atol=1e-12, rtol=0)
    torch.testing.assert_close(lorentz_to_poincare(x, c=c), p, atol=1e-12, rtol=0)
    torch.testing.assert_close(lorentz_to_klein(x, c=c), k, atol=1e-12, rtol=0)
    torch.testing.assert_close(klein_to_lorentz(k, c=c), x, atol=1e-9, rtol=1e-11)
    # on the hyperboloid: -x0² + ‖x̄‖² = -1/c, x0 > 0; Klein point inside the disk
    torch.testing.assert_close(-x[:, 0] ** 2 + x[:, 1:].pow(2).sum(-1), torch.full((50,), -1 / c, dtype=x.dtype))
    assert (x[:, 0] > 0).all() and (k.norm(dim=-1) < c**-0.5).all()
    # geoopt's Lorentz(k = 1/c) accepts the points
    assert geoopt.Lorentz(k=geoopt_lorentz_k(c)).double().check_point_on_manifold(x, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("c", CS)
def test_distances_agree_across_models_and_with_geoopt(c):
    p = ball_points(20, 4, c, 1)
    q = ball_points(15, 4, c, 2)
    x, y = poincare_to_lorentz(p, c=c), poincare_to_lorentz(q, c=c)
    dp = pairwise_dist(p, q, c=c)
    dl = lorentz_pairwise_dist(x, y, c=c)
    torch.testing.assert_close(dl, dp, atol=1e-10, rtol=0)
    torch.testing.assert_close(lorentz_dist(x[:, None], y[None], c=c), dp, atol=1e-10, rtol=0)
    torch.testing.assert_close(lorentz_dist0(x, c=c), dist0(p, c=c), atol=1e-10, rtol=0)
    geo = geoopt.Lorentz(k=geoopt_lorentz_k(c)).dist(x[:, None], y[None])
    torch.testing.assert_close(dl, geo.to(dl.dtype), atol=1e-5, rtol=0)
    # closed form from the Lorentz inner product, float64
    inner = -x[:, None, 0] * y[None, :, 0] + (x[:, None, 1:] * y[None, :, 1:]).sum(-1)
    torch.testing.assert_close(dl, torch.acosh(-c * inner) / c**0.5, atol=1e-6, rtol=0)


def test_lorentz_pairwise_float32_near_pairs_and_diagonal():
    c = 1.0
    p = ball_points(100, 16, c, 3, rmax=0.99)
    g = torch.Generator().manual_seed(4)
    p = torch.cat([p, p[:40] + 1e-6 * torch.randn(40, 16, generator=g, dtype=torch.float64)])
    x64 = poincare_to_lorentz(p, c=c)
    x = x64.float()
    xr = lorentz_project(x.double(), c=c)  # the float32 points, exactly on the hyperboloid in float64
    ref = pairwise_dist(lorentz_to_poincare(xr, c=c), c=c)
    d = lorentz_pairwise_dist(x, c=c)
    assert d.dtype == torch.float32 and (d.diagonal() == 0).all()
    assert (d.double() - ref).abs().max() < 1e-4
    naive = torch.acosh((-c * (x[:, 1:] @ x[:, 1:].T - x[:, None, 0] * x[None, :, 0])).clamp_min(1)) / c**0.5
    assert (naive.double() - ref).abs().max() > 1e-2  # the bare matmul form fails on this set


def test_lorentz_gradcheck_and_finite_at_coincident_points():
    c = 0.7
    x = poincare_to_lorentz(ball_points(4, 3, c, 5), c=c)
    xs = x[:, 1:].clone().requires_grad_()

    def lift(s):
        return torch.cat([(1 / c + s.pow(2).sum(-1, keepdim=True)).sqrt(), s], -1)

    assert torch.autograd.gradcheck(lambda s: lorentz_pairwise_dist(lift(s), c=c), (xs,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda s: lorentz_dist0(lift(s), c=c), (xs,), eps=1e-6, atol=1e-5)
    out = lorentz_pairwise_dist(lift(xs), c=c).sum() + lorentz_dist(lift(xs), lift(xs), c=c).sum()
    (g,) = torch.autograd.grad(out, xs)
    assert torch.isfinite(g).all()
    pts = poincare_to_lorentz(ball_points(3, 3, c, 6), c=c).requires_grad_()
    (g,) = torch.autograd.grad(lorentz_to_poincare(pts, c=c).sum() + poincare_to_klein(
        lorentz_to_poincare(pts, c=c), c=c).sum(), pts)
    assert torch.isfinite(g).all()


def test_conversion_gradcheck():
    c = 1.5
    p = ball_points(4, 3, c, 7).requires_grad_()
    for fn in (poincare_to_klein, poincare_to_lorentz, lambda z, c: klein_to_poincare(poincare_to_klein(z, c=c), c=c)):
        assert torch.autograd.gradcheck(lambda z: fn(z, c=c), (p,), eps=1e-6, atol=1e-5)


def test_invalid_lorentz_inputs():
    with pytest.raises(ValueError, match="not on the hyperboloid"):
        lorentz_dist0(torch.tensor([[1.0, 1.0, 0.0]]), c=1.0)
    with pytest.raises(ValueError, match="not on the hyperboloid"):
        lorentz_dist0(torch.tensor([[-math.sqrt(2), 1.0, 0.0]]), c=1.0)  # lower sheet
    with pytest.raises(ValueError, match=r"\(\.\.\., d\+1\)"):
        lorentz_project(torch.ones(3, 1), c=1.0)
    with pytest.raises(ValueError, match="outside the Poincaré ball"):
        poincare_to_lorentz(torch.tensor([[0.6, 0.6]]), c=2.0)
    fixed = lorentz_project(torch.tensor([[7.0, 1.0, 0.0]]), c=1.0)
    torch.testing.assert_close(fixed, torch.tensor([[math.sqrt(2), 1.0, 0.0]]))
