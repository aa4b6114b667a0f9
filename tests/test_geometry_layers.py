"""ToPoincare, HyperbolicMLR and Curvature against direct formulas."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from geoopt.manifolds.stereographic import math as gmath

from harness.geometry import (Curvature, HyperbolicMLR, PoincareGeometry, ToPoincare, expmap0, geoopt_k,
                              hyperbolic_mlr_logits)

warnings.filterwarnings("ignore", category=FutureWarning)


def ganea_logits_loop(x: torch.Tensor, p: torch.Tensor, a: torch.Tensor, c: float) -> torch.Tensor:
    """Ganea et al. 2018 Eq. 25 class by class, float64, Möbius addition from geoopt."""
    k = geoopt_k(c, dtype=torch.float64)
    cols = []
    for j in range(p.shape[0]):
        z = gmath.mobius_add(-p[j].expand_as(x), x, k=k)  # -p ⊕ x
        lam = 2 / (1 - c * p[j].pow(2).sum())
        an = a[j].norm()
        arg = 2 * c**0.5 * (z * a[j]).sum(-1) / ((1 - c * z.pow(2).sum(-1)) * an)
        cols.append(lam * an / c**0.5 * torch.asinh(arg))
    return torch.stack(cols, -1)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_mlr_logits_match_per_class_loop(c):
    g = torch.Generator().manual_seed(0)
    x = expmap0(torch.randn(30, 6, generator=g, dtype=torch.float64), c=c)
    p = expmap0(torch.randn(7, 6, generator=g, dtype=torch.float64) * 0.7, c=c)
    a = torch.randn(7, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(hyperbolic_mlr_logits(x, p, a, c=c), ganea_logits_loop(x, p, a, c), atol=1e-9, rtol=1e-9)


def test_mlr_module_matches_hyptorch_parametrisation():
    torch.manual_seed(1)
    c = 0.8
    mlr = HyperbolicMLR(5, 4, c=c).double()
    x = expmap0(torch.randn(3, 2, 5, dtype=torch.float64), c=c)
    p = expmap0(mlr.p_vals, c=c)
    a = mlr.a_vals * (1 - c * p.pow(2).sum(-1, keepdim=True))  # hyptorch: a transported from 0 to p
    out = mlr(x)
    assert out.shape == (3, 2, 4)
    torch.testing.assert_close(out, ganea_logits_loop(x.reshape(6, 5), p, a, c).reshape(3, 2, 4), atol=1e-9, rtol=1e-9)
    # p stays inside the ball whatever the parameter value
    with torch.no_grad():
        mlr.p_vals.mul_(1e3)
    assert (mlr.class_points()[0].norm(dim=-1) < c**-0.5).all()
    assert torch.isfinite(mlr(x)).all()


def test_mlr_hand_value_one_dimension():
    # d = 1, c = 1, p = 0, a = 1: -p ⊕ x = x, logit = 2·asinh(2x/(1-x²)) = 4·artanh(x)
    x = torch.tensor([[0.3], [-0.6]], dtype=torch.float64)
    out = hyperbolic_mlr_logits(x, torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), c=1.0)
    torch.testing.assert_close(out[:, 0], 4 * torch.atanh(x[:, 0]), atol=1e-13, rtol=0)


def test_mlr_gradcheck_and_boundary():
    c = 1.2
    g = torch.Generator().manual_seed(2)
    x = expmap0(torch.randn(4, 3, generator=g, dtype=torch.float64), c=c).requires_grad_()
    p = expmap0(torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.5, c=c).requires_grad_()
    a = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: hyperbolic_mlr_logits(*t, c=c), (x, p, a), eps=1e-6, atol=1e-5)
    cc = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: hyperbolic_mlr_logits(x.detach(), p.detach(), a.detach(), c=k), (cc,))
    # at the boundary and at x = p: finite forward and backward
    xb = torch.cat([expmap0(torch.randn(2, 3, dtype=torch.float64) * 100, c=c), p.detach()[:1]]).requires_grad_()
    out = hyperbolic_mlr_logits(xb, p, a, c=c)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(xb.grad).all() and torch.isfinite(a.grad).all()


def test_mlr_invalid_shapes():
    mlr = HyperbolicMLR(4, 3)
    with pytest.raises(ValueError, match=r"expected inputs \(\.\.\., 4\)"):
        mlr(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="shape"):
        hyperbolic_mlr_logits(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(3, 5), c=1.0)
    with pytest.raises(ValueError, match="outside the Poincaré ball"):
        mlr(torch.full((2, 4), 0.9))


# --------------------------------------------------------------------------- ToPoincare


def test_to_poincare_without_clip_is_expmap0():
    x = torch.randn(10, 6, dtype=torch.float64)
    torch.testing.assert_close(ToPoincare(2.0)(x), expmap0(x, c=2.0), atol=0, rtol=0)


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0])
def test_to_poincare_feature_clipping(c):
    r = 1.5
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64) * torch.rand(50, 1, generator=g, dtype=torch.float64) * 2
    out = ToPoincare(c, clip_r=r)(x)
    n = x.norm(dim=-1)
    # Guo et al.: x ← min(1, r/‖x‖)·x, then exp_0: the norm is tanh(√c·min(‖x‖, r))/√c, direction kept
    torch.testing.assert_close(out.norm(dim=-1), torch.tanh(c**0.5 * n.clamp(max=r)) / c**0.5, atol=1e-12, rtol=0)
    torch.testing.assert_close(out / out.norm(dim=-1, keepdim=True), x / n[:, None], atol=1e-12, rtol=0)
    assert (n > r).any() and (n < r).any()
    out0 = ToPoincare(c, clip_r=r)(torch.zeros(1, 8, requires_grad=True))
    assert (out0 == 0).all()


def test_to_poincare_learnable_curvature_trains_and_stays_in_range():
    torch.manual_seed(4)
    layer = ToPoincare(1.0, learn_c=True, c_min=0.5, c_max=2.0)
    assert [n for n, _ in layer.named_parameters()] == ["curvature.theta"]
    opt = torch.optim.SGD(layer.parameters(), lr=50.0)
    x = torch.randn(16, 4)
    for _ in range(30):  # a loss rewarding large c: SGD drives c towards c_max but never past it
        opt.zero_grad()
        loss = -layer.c * 10
        loss.backward()
        assert torch.isfinite(layer.curvature.theta.grad)
        opt.step()
    c_end = float(layer.c.detach())
    assert 0.5 <= c_end <= 2.0 and c_end > 1.9
    out = layer(x)
    assert (out.norm(dim=-1) < c_end**-0.5).all()


def test_to_poincare_riemannian_gradient_scaling():
    c = 1.0
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = ToPoincare(c, riemannian=True)(x)
    g_out = torch.randn_like(y)
    (gr,) = torch.autograd.grad(y, x, g_out)
    x2 = x.detach().requires_grad_()
    y2 = expmap0(x2, c=c)
    scale = (1 - c * y2.detach().pow(2).sum(-1, keepdim=True)).pow(2) / 4
    (ge,) = torch.autograd.grad(y2, x2, g_out * scale)
    torch.testing.assert_close(gr, ge, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, y2, atol=0, rtol=0)


def test_shared_curvature_module():
    curv = Curvature(1.0, learnable=True)
    to_ball, mlr = ToPoincare(curv), HyperbolicMLR(4, 3, c=curv)
    logits = mlr(to_ball(torch.randn(6, 4)))
    logits.sum().backward()
    assert curv.theta.grad is not None and torch.isfinite(curv.theta.grad)
    with pytest.raises(ValueError, match="learn_c=True needs a float c"):
        ToPoincare(curv, learn_c=True)


# --------------------------------------------------------------------------- Curvature


def test_curvature_range_and_values():
    fixed = Curvature(0.3)
    assert fixed() == 0.3 and not list(fixed.parameters())  # exact: not rounded to float32 (0.30000001)
    x = torch.tensor([[0.9, 0.0]], dtype=torch.float64)
    assert PoincareGeometry(fixed).dist0(x).item() == pytest.approx(2 / math.sqrt(0.3) * math.atanh(math.sqrt(0.3) * 0.9),
                                                                    rel=1e-15)
    learn = Curvature(0.7, learnable=True, c_min=0.1, c_max=10.0)
    assert float(learn().detach()) == pytest.approx(0.7, rel=1e-6)
    with torch.no_grad():
        learn.theta.fill_(1e4)
    assert float(learn().detach()) == pytest.approx(10.0, rel=1e-6)
    with torch.no_grad():
        learn.theta.fill_(-1e4)
    assert float(learn().detach()) == pytest.approx(0.1, rel=1e-6)
    # log c is an affine function of sigmoid(theta): midpoint of the log range at theta = 0
    with torch.no_grad():
        learn.theta.zero_()
    assert float(learn().detach()) == pytest.approx(math.sqrt(0.1 * 10.0), rel=1e-6)
    for bad in (dict(c=0.0), dict(c=-1.0), dict(c=20.0, learnable=True), dict(c=1.0, c_min=2.0, c_max=1.0)):
        with pytest.raises(ValueError):
            Curvature(**bad)
