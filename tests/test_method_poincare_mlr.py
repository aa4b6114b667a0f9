"""poincare_mlr and its Poincaré head against a re-typed hyptorch (tests/_hyptorch_ref.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError
from harness.geometry import HyperbolicMLR, ToPoincare
from harness.method import Batch, TrainInfo
from harness.plugins.methods.poincare_mlr import PoincareMLR
from harness.registry import make_config

from . import _hyptorch_ref as ref

# c values are float32 numbers: hyptorch rounds c to float32 even for float64 points
# (torch.as_tensor(c).type_as(x)), the harness keeps it exact; see test_rescaling_uses_c_exactly.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [1.0, 0.25])
def test_to_poincare_matches_hyptorch_forward_and_riemannian_gradient(dtype, c):
    g = torch.Generator().manual_seed(0)
    # norms from 0.05 to 40/√c: inside the ball and projected to the boundary
    x = torch.randn(64, 8, generator=g, dtype=torch.float64)
    x = (x / x.norm(dim=-1, keepdim=True) * torch.logspace(-1.3, 1.6, 64, dtype=torch.float64)[:, None] / c**0.5)
    x = x.to(dtype)
    grad_out = torch.randn(64, 8, generator=g, dtype=torch.float64).to(dtype)
    a = x.clone().requires_grad_()
    ya = ref.ToPoincare(c)(a)
    ya.backward(grad_out)
    b = x.clone().requires_grad_()
    yb = ToPoincare(c, riemannian=True, proj_eps=1e-3)(b)
    yb.backward(grad_out)
    assert (ya.norm(dim=-1) * c**0.5 > 0.998).sum() > 10  # some points are on the projection radius
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(yb, ya, **tol)
    torch.testing.assert_close(b.grad, a.grad, rtol=tol["rtol"], atol=tol["rtol"] * float(a.grad.abs().max()))


def test_default_projection_margin_differs_from_hyptorchs_in_float64():
    x = torch.tensor([[30.0, 0.0]], dtype=torch.float64)
    assert float(ToPoincare(1.0)(x).norm()) == pytest.approx(1 - 1e-5, abs=1e-12)  # the dtype's margin
    assert float(ToPoincare(1.0, proj_eps=1e-3)(x).norm()) == pytest.approx(1 - 1e-3, abs=1e-12)
    assert float(ToPoincare(1.0, proj_eps=1e-3)(x.float()).norm()) == pytest.approx(1 - 1e-3, abs=1e-6)
    with pytest.raises(ValueError, match="proj_eps must lie in"):
        ToPoincare(1.0, proj_eps=1.0)


def test_rescaling_uses_c_exactly_in_float64():
    c = 0.3  # not a float32 number: a float32 c would move the scale by ~1e-5 at the boundary
    x = torch.tensor([[10.0, 0.0, 0.0], [0.1, 0.2, -0.3]], dtype=torch.float64, requires_grad=True)
    y = ToPoincare(c, riemannian=True, proj_eps=1e-3)(x)
    grad_out = torch.ones_like(y)
    (g,) = torch.autograd.grad(y, x, grad_out)
    x2 = x.detach().requires_grad_()
    y2 = ToPoincare(c, proj_eps=1e-3)(x2)
    scale = (1 - c * y2.detach().pow(2).sum(-1, keepdim=True)) ** 2 / 4
    (expected,) = torch.autograd.grad(y2, x2, grad_out * scale)
    torch.testing.assert_close(g, expected, rtol=1e-13, atol=0)


def test_unprojected_class_points_are_hyptorchs():
    torch.manual_seed(0)
    mlr = HyperbolicMLR(4, 3, c=1.0, project_points=False)
    with torch.no_grad():
        mlr.p_vals.mul_(4 / mlr.p_vals.norm(dim=-1, keepdim=True))  # tanh(4) = 0.99933 > 1 - 1e-3
    p, _ = mlr.class_points()
    torch.testing.assert_close(p.norm(dim=-1), torch.full((3,), float(torch.tanh(torch.tensor(4.0)))))
    projected = HyperbolicMLR(4, 3, c=1.0)
    projected.load_state_dict(mlr.state_dict())
    assert float(projected.class_points()[0].detach().norm(dim=-1).max()) == pytest.approx(1 - 1e-3, abs=1e-6)
    # points near the origin: far from the class points the MLR argument exceeds 1e5 and hyptorch's
    # Arsinh (log of x + sqrt(1 + x²), clamped at 1e-5) loses the negative side; the harness's is exact
    x = ref.project(ref.expmap0(torch.randn(6, 4, dtype=torch.float64) * 0.3, c=1.0), c=1.0)
    mlr64 = mlr.double()
    # hyptorch adds 1e-5 to its Möbius denominators (tests/_hyptorch_ref.py): 0 here, the exact formula
    expected = ref.hyperbolic_mlr(x, mlr64.a_vals, mlr64.p_vals, 1.0, mobius_eps=0.0)
    torch.testing.assert_close(mlr64(x), expected, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        mlr.float().p_vals.mul_(100)  # tanh rounds to 1 in float32: hyptorch's logits would be inf
    with pytest.raises(ValueError, match="project_points=True"):
        mlr(torch.zeros(2, 4))


def _plugin(feat_dim=6, classes=3, **cfg):
    info = TrainInfo(feat_dim=feat_dim, num_classes=classes, num_train=10, label_field="label", epochs=1)
    return PoincareMLR(make_config(PoincareMLR, cfg), nn.Identity(), info)


def test_defaults_are_the_released_codes_plus_clipping():
    cfg = make_config(PoincareMLR, {})
    cfg.validate()
    assert (cfg.riemannian, cfg.proj_eps, cfg.project_class_points, cfg.c) == (True, 1e-3, False, 1.0)
    assert cfg.clip_r == 1.0  # Guo et al. 2022; without it training collapses on the embedded data


def test_poincare_mlr_loss_and_gradients_match_hyptorch():
    """Linear projection, ToPoincare(riemannian=True), HyperbolicMLR, cross-entropy: hyptorch's
    examples/mnist.py head (fc2 → ToPoincare → HyperbolicMLR → log_softmax + nll_loss)."""
    torch.manual_seed(1)
    method = _plugin(c=0.5, dim=5, clip_r=0.0).double()
    feats = torch.randn(12, 6, dtype=torch.float64) * 3
    labels = torch.arange(12) % 3
    x = feats.clone().requires_grad_()
    loss = method.loss(method.embed(x), Batch(images=x, labels=labels))
    loss.backward()
    x_ref = feats.clone().requires_grad_()
    proj_w = method.proj.weight.detach().clone().requires_grad_()
    a_vals = method.mlr.a_vals.detach().clone().requires_grad_()
    p_vals = method.mlr.p_vals.detach().clone().requires_grad_()
    z = ref.ToPoincare(0.5)(F.linear(x_ref, proj_w, method.proj.bias.detach()))
    # with hyptorch's +1e-5 in the Möbius denominators set to 0 (the harness's formula is exact;
    # with it the loss moves by ~2e-4 relative here)
    logits = ref.hyperbolic_mlr(z, a_vals, p_vals, 0.5, mobius_eps=0.0)
    expected = F.nll_loss(F.log_softmax(logits, dim=-1), labels)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    for ours, theirs in ((x.grad, x_ref.grad), (method.proj.weight.grad, proj_w.grad),
                         (method.mlr.a_vals.grad, a_vals.grad), (method.mlr.p_vals.grad, p_vals.grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-8 * float(theirs.abs().max()))


def test_clipping_is_an_option():
    method = _plugin(clip_r=1.0, c=1.0, dim=6)
    method.proj = nn.Identity()
    emb = method.embed(torch.randn(20, 6) * 10)
    torch.testing.assert_close(emb.norm(dim=-1), torch.full((20,), float(torch.tanh(torch.tensor(1.0)))))


def test_mlr_learning_rate_scale_moves_only_the_mlr_parameters_faster():
    """mlr_lr_scale=1 keeps the engine's one group (hyptorch); another scale puts the class points and
    normals in their own group: one plain SGD step moves them by scale × lr × grad, the rest by lr × grad."""
    from harness.config import TrainConfig

    train = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0)
    assert _plugin(dim=3).configure_optimizer(train) is None
    torch.manual_seed(0)
    method = _plugin(dim=3, clip_r=0.0, mlr_lr_scale=10.0)
    opt = method.configure_optimizer(train)
    assert [g["lr"] for g in opt.param_groups] == [0.1, pytest.approx(1.0)]
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    feats = torch.randn(8, 6)
    method.loss(method.embed(feats), Batch(images=feats, labels=torch.arange(8) % 3)).backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters()}
    opt.step()
    for name, p in method.named_parameters():
        lr = 1.0 if name.startswith("mlr.") else 0.1
        torch.testing.assert_close(p.detach(), before[name] - lr * grads[name])
    assert any(n.startswith("mlr.") for n in grads) and any(n.startswith("proj.") for n in grads)


@pytest.mark.parametrize("bad, match", [
    (dict(mlr_lr_scale=0.0), "mlr_lr_scale must be > 0"),
    (dict(c=0.0), "c must be > 0"),
    (dict(dim=0), "dim must be >= 1"),
    (dict(clip_r=-1.0), "clip_r must be >= 0"),
    (dict(proj_eps=1.0), r"proj_eps must lie in \[0, 1\)"),
])
def test_invalid_configs(bad, match):
    with pytest.raises(ConfigError, match=match):
        make_config(PoincareMLR, bad).validate()
