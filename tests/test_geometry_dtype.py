"""Half precision and autocast: computed in float32, returned in the input dtype, never on the boundary."""

from __future__ import annotations

import pytest
import torch

from harness.geometry import (
    HyperbolicMLR,
    PoincareGeometry,
    ToPoincare,
    dist0,
    einstein_midpoint,
    expmap0,
    logmap0,
    pairwise_dist,
    project,
)
from harness.geometry._dtype import proj_eps

HALF = [torch.bfloat16, torch.float16]
# unit roundoff: bf16 2^-8, fp16 2^-11; outputs are rounded once from float32
TOL = {torch.bfloat16: 2e-2, torch.float16: 3e-3}


def unit_dirs(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    return u / u.norm(dim=-1, keepdim=True)


def test_naive_projection_to_1_minus_1e5_rounds_onto_the_boundary_in_bf16():
    """The hazard the dtype policy guards against (if this stops holding, the next test is moot)."""
    x = (unit_dirs(200, 16, 0) * (1 - 1e-5)).to(torch.bfloat16)
    assert (x.double().norm(dim=-1) >= 1).any()


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("c", [1.0, 2.0])
def test_project_and_expmap0_stay_strictly_inside_after_rounding(dtype, c):
    big = (unit_dirs(500, 16, 1) * 100 / c**0.5).to(dtype)
    for out in (project(big, c=c), expmap0(big, c=c), project(big.float(), c=c, eps=proj_eps(dtype)).to(dtype)):
        norms = out.double().norm(dim=-1) * c**0.5
        assert out.dtype == dtype
        assert (norms < 1).all(), norms.max()
        assert torch.isfinite(dist0(out, c=c)).all() and torch.isfinite(logmap0(out, c=c)).all()
    # the margin is the documented one: bf16 1e-2, fp16 2e-3 (± one rounding)
    eps = {torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    assert (project(big, c=c).double().norm(dim=-1) * c**0.5 - (1 - eps)).abs().max() < 2 * TOL[dtype]
    if dtype == torch.bfloat16:  # projecting with float32's margin, casting afterwards, goes wrong
        late = project(big.float(), c=c).to(dtype)
        assert (late.double().norm(dim=-1) * c**0.5 >= 1).any()


@pytest.mark.parametrize("dtype", HALF)
def test_half_inputs_return_half_and_match_float64(dtype):
    c = 1.0
    g = torch.Generator().manual_seed(2)
    x64 = unit_dirs(40, 8, 3) * torch.rand(40, 1, generator=g, dtype=torch.float64) * 0.9
    xh = x64.to(dtype)
    ref_in = xh.double()  # compare on the same (rounded) inputs
    d = pairwise_dist(xh, c=c)
    assert d.dtype == dtype and (d.diagonal() == 0).all()
    torch.testing.assert_close(d.double(), pairwise_dist(ref_in, c=c), atol=TOL[dtype] * 4, rtol=TOL[dtype])
    for fn in (lambda z: dist0(z, c=c), lambda z: logmap0(z, c=c), lambda z: expmap0(z, c=c),
               lambda z: einstein_midpoint(z.reshape(5, 8, 8), c=c)):
        out = fn(xh)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), fn(ref_in), atol=TOL[dtype] * 4, rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", HALF)
def test_half_gradients_finite_at_boundary_and_diagonal(dtype):
    x = project((unit_dirs(10, 4, 4) * 2).to(dtype), c=1.0).requires_grad_()
    (g,) = torch.autograd.grad(pairwise_dist(x, c=1.0).float().sum() + dist0(x, c=1.0).float().sum(), x)
    assert g.dtype == dtype and torch.isfinite(g).all()


def test_autocast_cpu_bf16_keeps_float32_math():
    c = 1.0
    x = (unit_dirs(300, 32, 5) * 0.999).float()
    y = x + 1e-4 * unit_dirs(300, 32, 6).float()
    y = project(y, c=c)
    ref = pairwise_dist(x, y, c=c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (x @ y.T).dtype == torch.bfloat16  # autocast is really on
        d = pairwise_dist(x, y, c=c)
        e = expmap0(x * 5, c=c)
        m = einstein_midpoint(x.reshape(30, 10, 32), c=c)
    assert d.dtype == torch.float32 and torch.equal(d, ref)
    assert e.dtype == torch.float32 and torch.equal(e, expmap0(x * 5, c=c))
    assert torch.equal(m, einstein_midpoint(x.reshape(30, 10, 32), c=c))


def test_autocast_with_modules_and_geometry():
    torch.manual_seed(0)
    to_ball = ToPoincare(1.0, clip_r=2.0)
    mlr = HyperbolicMLR(16, 5)
    lin = torch.nn.Linear(8, 16)
    feats = torch.randn(32, 8)
    ref = mlr(to_ball(lin(feats)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(feats)
        assert h.dtype == torch.bfloat16
        z = to_ball(h)
        logits = mlr(z)
        dmat = PoincareGeometry(1.0).pairwise_dist(z)
    assert z.dtype == torch.bfloat16 and (z.double().norm(dim=-1) < 1).all()
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert dmat.dtype == torch.bfloat16 and (dmat.diagonal() == 0).all()
    torch.testing.assert_close(logits, ref, atol=0.1, rtol=0.05)  # bf16 Linear output, then float32 math
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in (*mlr.parameters(), *lin.parameters()))
