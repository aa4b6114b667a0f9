"""Poincaré-ball free functions of harness.geometry against closed forms and geoopt."""

from __future__ import annotations

import math
import warnings

import geoopt
import pytest
import torch
from geoopt.manifolds.stereographic import math as gmath

from harness.geometry import (
    class_midpoints,
    dist,
    dist0,
    einstein_midpoint,
    expmap0,
    geoopt_k,
    logmap0,
    pairwise_dist,
    project,
)

warnings.filterwarnings("ignore", category=FutureWarning)  # geoopt's torch.jit.script

CS = [0.3, 1.0, 2.5]


def ball_points(n: int, d: int, c: float, seed: int, rmax: float = 0.9, dtype=torch.float64) -> torch.Tensor:
    """n points with uniform directions and norm ~ U(0, rmax)/√c."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=g, dtype=torch.float64) * rmax
    return (u / c**0.5).to(dtype)


def boundary_points(n: int, d: int, c: float, seed: int, norm: float = 0.999, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (u / u.norm(dim=-1, keepdim=True) * norm / c**0.5).to(dtype)


def ref_dist(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Independent float64 reference: arccosh(1 + 2c‖x-y‖²/((1-c‖x‖²)(1-c‖y‖²)))/√c, broadcasting."""
    x, y = x.double(), y.double()
    d2 = (x - y).pow(2).sum(-1)
    gx, gy = 1 - c * x.pow(2).sum(-1), 1 - c * y.pow(2).sum(-1)
    return torch.acosh(1 + 2 * c * d2 / (gx * gy)) / c**0.5


# --------------------------------------------------------------------------- hand-computed values


def test_dist0_and_expmap0_hand_values():
    # c = 1, x = (0.5, 0): d(0, x) = 2 artanh(0.5) = ln 3
    x = torch.tensor([0.5, 0.0], dtype=torch.float64)
    assert dist0(x, c=1.0).item() == pytest.approx(math.log(3), abs=1e-14)
    # c = 4 (radius 1/2), u = (1, 0): exp0(u) = tanh(2)/2 · e1
    e = expmap0(torch.tensor([1.0, 0.0], dtype=torch.float64), c=4.0)
    assert e[0].item() == pytest.approx(math.tanh(2) / 2, abs=1e-14) and e[1].item() == 0


def test_pairwise_hand_value():
    # x = (0.5, 0), y = (-0.5, 0), c = 1: d = arccosh(1 + 2·1/(0.75·0.75)) = 2 ln 3
    x = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([[-0.5, 0.0]], dtype=torch.float64)
    assert pairwise_dist(x, y, c=1.0).item() == pytest.approx(2 * math.log(3), abs=1e-13)


# --------------------------------------------------------------------------- pairwise distance


@pytest.mark.parametrize("c", CS)
def test_pairwise_matches_reference_f64_and_geoopt(c):
    x = ball_points(40, 7, c, 0)
    y = ball_points(30, 7, c, 1)
    d = pairwise_dist(x, y, c=c)
    assert d.shape == (40, 30)
    torch.testing.assert_close(d, ref_dist(x[:, None], y[None], c), atol=1e-10, rtol=0)
    geo = geoopt.PoincareBall(c=c).dist(x[:, None], y[None])
    torch.testing.assert_close(d, geo, atol=1e-5, rtol=0)


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0])
def test_pairwise_float32_accuracy_near_duplicates_and_boundary(c):
    """float32 error ≤ 1e-4 (goal) for boundary points (norm 0.999/√c), near duplicates, the diagonal;
    the bare matmul form errs by > 1e-2 on the same set (so the test can fail)."""
    inner = ball_points(60, 64, c, 2)
    edge = boundary_points(60, 64, c, 3)
    g = torch.Generator().manual_seed(4)
    dups = edge[:30] + 1e-5 / c**0.5 * torch.randn(30, 64, generator=g, dtype=torch.float64)
    dups = dups * torch.clamp(0.999 / c**0.5 / dups.norm(dim=-1, keepdim=True), max=1.0)
    x64 = torch.cat([inner, edge, dups, inner[:20] + 1e-6 / c**0.5])
    x = x64.float()
    ref = ref_dist(x[:, None], x[None], c)
    d = pairwise_dist(x, c=c)
    assert d.dtype == torch.float32
    err = (d.double() - ref).abs()
    assert err.max() <= 1e-4, err.max()
    assert (d.diagonal() == 0).all()
    s = x.pow(2).sum(-1)
    naive = torch.acosh(1 + 2 * c * (s[:, None] + s[None] - 2 * x @ x.T).clamp_min(0)
                        / ((1 - c * s)[:, None] * (1 - c * s)[None])) / c**0.5
    assert (naive.double() - ref).abs().max() > 1e-2


def test_pairwise_properties():
    c = 1.3
    x = ball_points(25, 5, c, 5)
    d = pairwise_dist(x, c=c)
    torch.testing.assert_close(d, d.T, atol=0, rtol=0)  # symmetric, bit for bit
    assert (d.diagonal() == 0).all() and (d >= 0).all()
    # triangle inequality over all triples
    assert (d[:, None, :] <= d[:, :, None] + d[None, :, :] + 1e-12).all()
    # isometry: a Möbius translation preserves distances
    a = ball_points(1, 5, c, 6)[0]
    xt = gmath.mobius_add(a.expand_as(x), x, k=geoopt_k(c, dtype=torch.float64))
    torch.testing.assert_close(pairwise_dist(xt, c=c), d, atol=1e-12, rtol=0)


def test_pairwise_batched_and_broadcast():
    c = 0.7
    x = ball_points(2 * 3 * 6, 4, c, 7).reshape(2, 3, 6, 4)
    y = ball_points(3 * 5, 4, c, 8).reshape(3, 5, 4)
    d = pairwise_dist(x, y, c=c)
    assert d.shape == (2, 3, 6, 5)
    torch.testing.assert_close(d, ref_dist(x[..., :, None, :], y[None, :, None, :, :], c), atol=1e-10, rtol=0)
    torch.testing.assert_close(pairwise_dist(x, c=c)[1, 2], pairwise_dist(x[1, 2], c=c), atol=0, rtol=0)


def test_pairwise_grad_path_equals_nograd_path():
    c = 1.0
    x = torch.cat([ball_points(30, 16, c, 9), boundary_points(10, 16, c, 10)]).float()
    with torch.no_grad():
        a = pairwise_dist(x, c=c)
    b = pairwise_dist(x.clone().requires_grad_(), c=c)
    torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=0)


def test_elementwise_dist_matches_reference_and_geoopt():
    c = 2.0
    x, y = ball_points(50, 6, c, 11), ball_points(50, 6, c, 12)
    torch.testing.assert_close(dist(x, y, c=c), ref_dist(x, y, c), atol=1e-12, rtol=0)
    torch.testing.assert_close(dist(x, y, c=c), geoopt.PoincareBall(c=c).dist(x, y), atol=1e-5, rtol=0)
    assert (dist(x, x, c=c) == 0).all()


# --------------------------------------------------------------------------- exp / log / dist0 / project


@pytest.mark.parametrize("c", CS)
def test_exp_log_inverse_and_geoopt(c):
    g = torch.Generator().manual_seed(13)
    u = torch.randn(40, 5, generator=g, dtype=torch.float64) * 0.5 / c**0.5
    ball = geoopt.PoincareBall(c=c)
    x = expmap0(u, c=c)
    n = u.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(x, torch.tanh(c**0.5 * n) * u / (c**0.5 * n), atol=1e-14, rtol=0)
    # geoopt keeps c as a float32 parameter (softplus), hence ~1e-8 differences for c = 0.3
    torch.testing.assert_close(x, ball.expmap0(u), atol=1e-6, rtol=0)
    torch.testing.assert_close(logmap0(x, c=c), u, atol=1e-9, rtol=0)
    away = x.norm(dim=-1) * c**0.5 < 0.95  # geoopt clamps artanh near the boundary
    assert away.sum() > 30
    torch.testing.assert_close(logmap0(x, c=c)[away], ball.logmap0(x)[away], atol=1e-5, rtol=0)
    torch.testing.assert_close(dist0(x, c=c)[away], ball.dist0(x)[away], atol=1e-5, rtol=0)
    # dist0 = ‖u‖·λ_0/... : d(0, exp0(u)) = 2‖u‖ (λ_0 = 2 in Ganea's convention)
    torch.testing.assert_close(dist0(x, c=c), 2 * u.norm(dim=-1), atol=1e-9, rtol=0)
    torch.testing.assert_close(dist0(x, c=c), pairwise_dist(torch.zeros(1, 5, dtype=x.dtype), x, c=c)[0],
                               atol=1e-10, rtol=0)


def test_dist0_near_boundary_closed_form():
    # ours matches 2 artanh(√c r)/√c in float64 up to 1 - 1e-8, where geoopt's artanh clamp errs
    for c in CS:
        r = torch.tensor([0.99, 0.999, 1 - 1e-6, 1 - 1e-8], dtype=torch.float64)
        x = torch.stack([r / c**0.5, torch.zeros_like(r)], -1)
        want = 2 * torch.atanh(r) / c**0.5
        torch.testing.assert_close(dist0(x, c=c), want, atol=1e-6, rtol=1e-7)
        torch.testing.assert_close(pairwise_dist(torch.zeros(1, 2, dtype=x.dtype), x, c=c)[0], want, atol=1e-6,
                                   rtol=1e-7)
    geo = geoopt.PoincareBall(c=1.0).dist0(torch.tensor([1 - 1e-8, 0.0], dtype=torch.float64))
    assert abs(geo.item() - 2 * math.atanh(1 - 1e-8)) > 1.0


def test_dist0_of_float32_points_near_the_boundary_is_accurate_to_the_points():
    """The float32 points taken as exact, dist0 is within a float32 rounding of the float64 value of
    2·artanh(‖x‖) (review case: the norm cast to float32 before the artanh erred 58 ulps)."""
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=-1)
    x = (u * torch.empty(200, 1).uniform_(0.997, 0.999, generator=g)).float()
    want = 2 * torch.atanh(x.double().norm(dim=-1))
    got = dist0(x, c=1.0)
    assert got.dtype == torch.float32
    assert float((got.double() - want).abs().max()) <= 2 * 2.0 ** -24 * float(want.max())
    empty = pairwise_dist(torch.zeros(0, 3), x, c=1.0)  # no points: an empty matrix, as torch.cdist
    assert empty.shape == (0, 200)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_and_expmap0_stay_inside(dtype):
    c = 2.0
    u = torch.randn(100, 8, dtype=dtype) * 50  # tanh(√c‖u‖) rounds to 1
    x = expmap0(u, c=c)
    assert torch.isfinite(x).all()
    assert (x.double().norm(dim=-1) < c**-0.5).all()
    p = project(u, c=c)
    assert torch.allclose(p.double().norm(dim=-1), torch.full((100,), (1 - {torch.float32: 1e-3,
                          torch.float64: 1e-5}[dtype]) / c**0.5, dtype=torch.float64), atol=1e-6)
    inside = ball_points(10, 8, c, 14, dtype=dtype)
    assert torch.equal(project(inside, c=c), inside)  # points inside are untouched


# --------------------------------------------------------------------------- midpoints


def test_midpoint_matches_geoopt_weighted_midpoint():
    c = 1.5
    g = torch.Generator().manual_seed(15)
    x = expmap0(torch.randn(6, 9, 4, generator=g, dtype=torch.float64) * 0.6, c=c)
    w = torch.rand(6, 9, generator=g, dtype=torch.float64) + 0.05
    ours = einstein_midpoint(x, w, c=c)
    # geoopt's c defaults to a float32 parameter, whose float32 arithmetic differs from ours by up to
    # ~1e-6 depending on the CPU's kernels; with a float64 c both are float64 throughout.
    ball = geoopt.PoincareBall(c=torch.tensor(c, dtype=torch.float64))
    loop = torch.stack([ball.weighted_midpoint(x[k], w[k], reducedim=[0]) for k in range(6)])
    torch.testing.assert_close(ours, loop, atol=1e-10, rtol=0)
    torch.testing.assert_close(einstein_midpoint(x, c=c), ball.weighted_midpoint(x, reducedim=[1]),
                               atol=1e-10, rtol=0)


def test_midpoint_klein_closed_form_two_points():
    # two points ±a on a line, c = 1: the midpoint is the origin; a and 0 with equal weight:
    # Klein average of k(a) and 0 with weights γ(a), 1
    a = torch.tensor([0.6, 0.0], dtype=torch.float64)
    assert einstein_midpoint(torch.stack([a, -a]), c=1.0, dim=0).abs().max() < 1e-15
    m = einstein_midpoint(torch.stack([a, torch.zeros(2, dtype=torch.float64)]), c=1.0, dim=0)
    ka = 2 * 0.6 / (1 + 0.36)
    ga = 1 / math.sqrt(1 - ka**2)
    kb = ga * ka / (ga + 1)
    assert m[0].item() == pytest.approx(kb / (1 + math.sqrt(1 - kb**2)), abs=1e-14)
    # the midpoint of two points is equidistant from both, on the geodesic
    d = pairwise_dist(torch.stack([a, torch.zeros(2, dtype=torch.float64)]), m[None], c=1.0)
    assert d[0].item() == pytest.approx(d[1].item(), abs=1e-12)
    assert d[0].item() == pytest.approx(dist0(a, c=1.0).item() / 2, abs=1e-12)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 2e-7)])
def test_midpoint_of_identical_points_is_the_point(dtype, atol):
    c = 0.8
    p = torch.cat([ball_points(5, 6, c, 16), boundary_points(5, 6, c, 17)]).to(dtype)
    x = p[:, None, :].expand(10, 7, 6)
    w = torch.rand(10, 7, dtype=dtype)
    torch.testing.assert_close(einstein_midpoint(x, w, c=c), p, atol=atol, rtol=0)
    labels = torch.arange(10).repeat_interleave(7)
    torch.testing.assert_close(class_midpoints(x.reshape(70, 6), labels, 10, c=c), p, atol=atol, rtol=0)


def test_class_midpoints_equal_per_class_midpoints():
    c = 1.0
    g = torch.Generator().manual_seed(18)
    x = expmap0(torch.randn(60, 5, generator=g, dtype=torch.float64), c=c)
    labels = torch.randint(0, 7, (60,), generator=g)
    labels[labels == 3] = 2  # class 3 empty
    w = torch.rand(60, generator=g, dtype=torch.float64)
    protos = class_midpoints(x, labels, 8, c=c, weights=w)
    assert protos.shape == (8, 5)
    for k in range(8):
        sel = labels == k
        if sel.any():
            torch.testing.assert_close(protos[k], einstein_midpoint(x[sel], w[sel], c=c, dim=0), atol=1e-12, rtol=0)
        else:
            assert (protos[k] == 0).all()  # empty class: the origin


# --------------------------------------------------------------------------- gradients


def _gc(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_all_functions():
    c = 1.3
    x = ball_points(5, 3, c, 19).requires_grad_()
    y = ball_points(4, 3, c, 20).requires_grad_()
    u = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(5, dtype=torch.float64) + 0.1).requires_grad_()
    _gc(lambda a, b: pairwise_dist(a, b, c=c), x, y)
    _gc(lambda a: pairwise_dist(a, c=c), x)  # includes the diagonal, d(x, x)
    _gc(lambda a, b: dist(a, b, c=c), x[:4], y)
    _gc(lambda a: dist0(a, c=c), x)
    _gc(lambda a: expmap0(a, c=c), u)
    _gc(lambda a: logmap0(a, c=c), x)
    _gc(lambda a: project(a, c=c), u * 3)
    _gc(lambda a, b: einstein_midpoint(a, b, c=c, dim=0), x, w)
    _gc(lambda a: class_midpoints(a, torch.tensor([0, 1, 0, 2, 1]), 3, c=c), x)
    cc = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    _gc(lambda k: pairwise_dist(x.detach(), y.detach(), c=k), cc)
    _gc(lambda k: dist0(x.detach(), c=k), cc)


def test_no_nan_at_boundary_origin_and_coincident_points():
    c = 1.0
    for dtype in (torch.float32, torch.float64):
        pts = torch.cat([
            torch.zeros(2, 4, dtype=dtype),  # origin, twice
            boundary_points(3, 4, c, 21, norm=0.9999, dtype=dtype),
            boundary_points(1, 4, c, 21, norm=0.9999, dtype=dtype),  # duplicate of a boundary point
        ]).requires_grad_()
        for f in (
            lambda p: pairwise_dist(p, c=c).sum(),
            lambda p: dist(p, p.flip(0), c=c).sum() + dist(p, p, c=c).sum(),
            lambda p: dist0(p, c=c).sum(),
            lambda p: logmap0(p, c=c).sum(),
            lambda p: expmap0(p, c=c).sum(),
            lambda p: einstein_midpoint(p, c=c, dim=0).sum(),
            lambda p: class_midpoints(p, torch.tensor([0, 0, 1, 1, 1, 1]), 2, c=c).sum(),
        ):
            out = f(pts)
            (g,) = torch.autograd.grad(out, pts)
            assert torch.isfinite(out) and torch.isfinite(g).all()
        d = pairwise_dist(pts, c=c)
        assert d[0, 1] == 0 and d[2, 5] == 0 and torch.isfinite(d).all()


# --------------------------------------------------------------------------- invalid input


def test_invalid_inputs_raise_clear_errors():
    x = ball_points(4, 3, 1.0, 22)
    for bad_c in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="c must be > 0"):
            pairwise_dist(x, c=bad_c)
    with pytest.raises(ValueError, match="c must be > 0"):
        dist0(x, c=torch.tensor(-0.5))
    with pytest.raises(ValueError, match="same point dimension"):
        pairwise_dist(x, ball_points(4, 5, 1.0, 23), c=1.0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., n, d\)"):
        pairwise_dist(x[0], c=1.0)
    outside = x.clone()
    outside[1] = torch.tensor([0.8, 0.7, 0.0])
    for fn in (lambda p: pairwise_dist(p, c=1.0), lambda p: dist0(p, c=1.0), lambda p: logmap0(p, c=1.0),
               lambda p: einstein_midpoint(p, c=1.0, dim=0)):
        with pytest.raises(ValueError, match="outside the Poincaré ball"):
            fn(outside)
    with pytest.raises(ValueError, match="outside the Poincaré ball"):
        pairwise_dist(x * 0.6, c=4.0)  # inside the unit ball but not the radius-1/2 ball
    with pytest.raises(ValueError, match="non-negative"):
        einstein_midpoint(x, -torch.ones(4, dtype=x.dtype), c=1.0, dim=0)
    with pytest.raises(ValueError, match="labels must lie in"):
        class_midpoints(x, torch.tensor([0, 1, 2, 3]), 3, c=1.0)
    with pytest.raises(TypeError, match="floating-point"):
        dist0(torch.ones(3, dtype=torch.long), c=1.0)


def test_pairwise_float32_clustered_near_boundary():
    """A tight cluster at the boundary (typical of trained embeddings): every pair is a near pair."""
    c = 1.0
    g = torch.Generator().manual_seed(24)
    centre = boundary_points(1, 32, c, 25, norm=0.995)
    x64 = centre + 2e-3 * torch.randn(300, 32, generator=g, dtype=torch.float64)
    x64 = x64 * torch.clamp(0.999 / x64.norm(dim=-1, keepdim=True), max=1.0)
    x = x64.float()
    y = x[:100].flip(0).contiguous()
    ref = ref_dist(x[:, None], y[None], c)
    err = (pairwise_dist(x.clone().requires_grad_(), y, c=c).double() - ref).abs().max()  # autograd path
    assert err <= 1e-4, err
    with torch.no_grad():
        assert (pairwise_dist(x, y, c=c).double() - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("d", [1, 2, 3, 17, 128, 512])
@pytest.mark.parametrize("scale", [1e-3, 1.0])
def test_pairwise_float32_accuracy_across_dims(d, scale):
    """The matmul error bound holds across dims: error ≤ 1e-4 for interior, boundary and near pairs,
    with points spread over the whole ball (scale 1) or in one small region (scale 1e-3)."""
    c = 1.0
    g = torch.Generator().manual_seed(100 + d)
    centre = boundary_points(1, d, c, 26 + d, norm=0.5)
    pts = centre + scale * torch.randn(120, d, generator=g, dtype=torch.float64)
    pts = torch.cat([pts, pts[:40] + 1e-6 * torch.randn(40, d, generator=g, dtype=torch.float64)])
    pts = pts * torch.clamp(0.999 / pts.norm(dim=-1, keepdim=True), max=1.0)
    x = pts.float()
    ref = ref_dist(x[:, None], x[None], c)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = pairwise_dist(x.clone().requires_grad_(grad), c=c)
        assert (out.detach().double() - ref).abs().max() <= 1e-4
