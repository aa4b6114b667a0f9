r"""Distances on the hyperboloid (Lorentz model) :math:`\{x : \langle x,x\rangle_L=-1/c,\ x_0>0\}`.

:math:`\langle x,y\rangle_L = -x_0y_0 + \langle\bar x,\bar y\rangle` (time coordinate first) and

.. math:: d_c(x,y) = \frac{1}{\sqrt c}\operatorname{arcosh}(-c\langle x,y\rangle_L)
          = \frac{2}{\sqrt c}\operatorname{asinh}\sqrt{q/2},\quad q = -c\langle x,y\rangle_L - 1

(Nickel & Kiela, ICML 2018, "Learning Continuous Hierarchies in the Lorentz Model").
As in MERU (Desai et al. 2023), a point is determined by its space part :math:`\bar x`:
:math:`x_0 = \sqrt{1/c + \|\bar x\|^2}` is recomputed (:func:`time_coord`); inputs are full
(..., d+1) vectors and an ``x0`` that disagrees by more than 1e-3 relative raises.
geoopt's ``Lorentz(k=1/c)`` has the same distance but, like its ball, no O(n·m) pairwise form
and it computes ``arcosh`` of a cancelling inner product (inaccurate for near pairs).
"""

from __future__ import annotations

import torch

from ._dtype import accurate_dtype, upcast
from ._pairwise import flatten_pair, refine_pairs, matmul_rel_error, safe_sqrt
from .curvature import c_value, check_c

#: Target absolute error of a Lorentz pairwise distance (see :data:`.poincare.DIST_TOL`).
DIST_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def time_coord(xs: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """``x0 = sqrt(1/c + ‖x̄‖²)`` in float64 (``accurate_dtype``) from the space part (..., d)."""
    x64 = xs.to(accurate_dtype(xs))
    cc = c.to(x64.dtype) if isinstance(c, torch.Tensor) else c
    return (1 / cc + x64.pow(2).sum(-1)).sqrt()


def split_lorentz(x: torch.Tensor, *, c: float | torch.Tensor, fn: str) -> torch.Tensor:
    """Check that x (..., d+1) lies on the hyperboloid (1e-3 relative in x0) and return x̄."""
    if x.dim() < 1 or x.shape[-1] < 2:
        raise ValueError(f"{fn}: Lorentz points need shape (..., d+1) with d >= 1, got {tuple(x.shape)}")
    xs = x[..., 1:]
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        x0 = time_coord(xs.detach(), c=c.detach() if isinstance(c, torch.Tensor) else c)
        bad = ~((x[..., 0].detach().to(x0.dtype) - x0).abs() <= 1e-3 * x0)
        if bool(bad.any()):
            raise ValueError(
                f"{fn}: {int(bad.sum())} point(s) are not on the hyperboloid <x,x>_L = -1/c (c={c_value(c):.4g}, "
                "time coordinate first, x0 > 0); fix them with harness.geometry.lorentz_project(x, c=c)"
            )
    return xs


@upcast
def lorentz_project(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Put x (..., d+1) on the hyperboloid by recomputing ``x0 = sqrt(1/c + ‖x̄‖²)``."""
    c = check_c(c)
    if x.dim() < 1 or x.shape[-1] < 2:
        raise ValueError(f"lorentz_project: need shape (..., d+1) with d >= 1, got {tuple(x.shape)}")
    xs = x[..., 1:]
    return torch.cat([time_coord(xs, c=c).to(x.dtype).unsqueeze(-1), xs], dim=-1)


@upcast
def lorentz_dist0(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Distance to the origin :math:`(1/\sqrt c, 0)`: :math:`\frac{1}{\sqrt c}\operatorname{asinh}(\sqrt c\,\|\bar x\|)`."""
    c = check_c(c)
    xs = split_lorentz(x, c=c, fn="lorentz_dist0")
    sc = c**0.5
    n = xs.to(accurate_dtype(xs)).norm(dim=-1).to(x.dtype)
    return torch.asinh(sc * n) / sc


def _exact_q(xs: torch.Tensor, ys: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, c) -> torch.Tensor:
    r""":math:`q = \tfrac c2(\|u\|^2 - (x_0-y_0)^2)` with :math:`u=\bar x-\bar y`,
    :math:`x_0-y_0 = \langle u, \bar x+\bar y\rangle/(x_0+y_0)` (no cancellation in x0 - y0)."""
    u = xs - ys
    dt = (u * (xs + ys)).sum(-1) / (x0 + y0)
    return (0.5 * c * (u.pow(2).sum(-1) - dt.pow(2))).clamp_min(0.0)


def _from_q(q: torch.Tensor, c) -> torch.Tensor:
    return 2 / c**0.5 * torch.asinh(safe_sqrt(q / 2))


@upcast(points=2)
def lorentz_dist(x: torch.Tensor, y: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Elementwise Lorentz distance of broadcastable x, y (..., d+1) -> (...)."""
    c = check_c(c)
    xs, ys = split_lorentz(x, c=c, fn="lorentz_dist"), split_lorentz(y, c=c, fn="lorentz_dist")
    if xs.shape[-1] != ys.shape[-1]:
        raise ValueError(f"lorentz_dist: x and y must have the same dimension, got {x.shape[-1]} and {y.shape[-1]}")
    x0, y0 = time_coord(xs, c=c).to(x.dtype), time_coord(ys, c=c).to(x.dtype)
    xs, ys = torch.broadcast_tensors(xs, ys)
    return _from_q(_exact_q(xs, ys, x0, y0, c), c)


@upcast(points=2)
def lorentz_pairwise_dist(x: torch.Tensor, y: torch.Tensor | None = None, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Lorentz distance matrix: x (..., n, d+1), y (..., m, d+1) (default ``y = x``) -> (..., n, m).

    :math:`q = c(x_0y_0 - \langle\bar x,\bar y\rangle) - 1` from one matmul; pairs whose matmul
    error could move the distance by more than :data:`DIST_TOL` are recomputed with
    :func:`_exact_q`. Memory O(n·m). Exact for near pairs; for near pairs far from the origin
    (‖x̄‖ = R) the exact form still loses about log10(c·R²) digits.
    """
    c = check_c(c)
    xb, yb, batch = flatten_pair(x, y, "lorentz_pairwise_dist")
    xs = split_lorentz(xb, c=c, fn="lorentz_pairwise_dist")
    ys = xs if y is None else split_lorentz(yb, c=c, fn="lorentz_pairwise_dist")
    wd = xb.dtype
    x0 = time_coord(xs, c=c).to(wd)
    y0 = x0 if y is None else time_coord(ys, c=c).to(wd)
    cf = c_value(c)
    g = torch.baddbmm(x0.unsqueeze(-1) * y0.unsqueeze(-2), xs, ys.transpose(-1, -2), alpha=-1.0)
    q = c * g - 1
    tol = cf**0.5 * DIST_TOL.get(wd, 1e-5)
    with torch.no_grad():
        err = matmul_rel_error(xs) * cf * (x0.unsqueeze(-1).square() + y0.unsqueeze(-2).square())
        qu = torch.maximum(q.detach(), err)
        mask = err > tol * (qu * (qu + 2)).sqrt()

    def exact(xi: torch.Tensor, yj: torch.Tensor, idx: tuple[torch.Tensor, ...]) -> torch.Tensor:
        b, i, j = idx
        return _exact_q(xi, yj, x0[b, i], y0[b, j], c)

    q = refine_pairs(q, mask, xs, ys, exact).clamp_min(0.0)
    out = _from_q(q, c)
    return out.reshape(*batch, *out.shape[-2:])


def lorentz_centroid(x: torch.Tensor, weights: torch.Tensor | None = None, *, c: float | torch.Tensor,
                     dim: int = -2, labels: torch.Tensor | None = None, num_classes: int | None = None
                     ) -> torch.Tensor:
    r"""Lorentzian centroid (Law et al., ICML 2019, Eq. 5 with :math:`\beta = 1/c`):

    .. math:: \mu = \frac{S}{\sqrt c\,\sqrt{-\langle S,S\rangle_L}},\qquad S = \sum_i w_i x_i,

    the point of the hyperboloid that minimises :math:`\sum_i w_i\|x_i-\mu\|_L^2` (squared Lorentzian
    distance). It is the Einstein midpoint of the same points in the Poincaré ball
    (:func:`.poincare.einstein_midpoint`): in the Klein model both are :math:`\bar S/S_0`.

    ``x`` (..., K, d+1) is reduced over ``dim`` (any dim but the last; ``weights`` broadcastable to
    ``x.shape[:-1]``, ≥ 0, default 1); or, with ``labels`` (N,) in ``[0, num_classes)``, ``x`` (N, d+1)
    gives one centroid per class (C, d+1) by ``index_add``. An empty set, a class without points or
    weights all 0 give the origin :math:`(1/\sqrt c, 0)`. Accumulated in float64.
    """
    c = check_c(c)
    xs = split_lorentz(x, c=c, fn="lorentz_centroid")
    x64 = xs.to(accurate_dtype(xs))
    full = torch.cat([time_coord(x64, c=c).unsqueeze(-1), x64], dim=-1)
    if weights is not None:
        if bool((weights < 0).any()):
            raise ValueError("lorentz_centroid: weights must be non-negative")
        full = full * weights.to(full.dtype).unsqueeze(-1)
    if labels is not None:
        if x.dim() != 2 or num_classes is None:
            raise ValueError("lorentz_centroid: with labels, x must be (N, d+1) and num_classes given")
        s = full.new_zeros(num_classes, full.shape[-1]).index_add(0, labels.to(torch.long), full)
    else:
        nd = x.dim()
        if not -nd <= dim < nd or dim % nd == nd - 1:
            raise ValueError(f"lorentz_centroid: dim={dim} must index a set dimension of x {tuple(x.shape)}, "
                             "not the last")
        s = full.sum(dim % nd)
    gap = (s[..., 0].square() - s[..., 1:].square().sum(-1)).clamp_min(0).sqrt()  # sqrt(-<S,S>_L)
    cc = c.to(s.dtype) if isinstance(c, torch.Tensor) else c
    space = torch.where(gap.unsqueeze(-1) > 0, s[..., 1:] / (cc**0.5 * gap.clamp_min(1e-300)).unsqueeze(-1),
                        torch.zeros_like(s[..., 1:]))
    return torch.cat([time_coord(space, c=c).unsqueeze(-1), space], dim=-1).to(x.dtype)


def lorentz_logmap0(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Logarithmic map at the origin, as the tangent vector's space part (..., d):
    :math:`\log_0(x) = d_c(0, x)\,\bar x/\|\bar x\|` (0 at the origin), so its norm is the distance to
    the origin and its direction that of :math:`\bar x`."""
    c = check_c(c)
    xs = split_lorentz(x, c=c, fn="lorentz_logmap0")
    # asinh(s)/s · x̄ with s = √c‖x̄‖, and its series 1 − s²/6 near 0: the Jacobian at the origin is the
    # identity (a quotient of two norms would have no gradient there)
    s = c**0.5 * xs.to(accurate_dtype(xs)).norm(dim=-1, keepdim=True)
    small = s < 1e-4
    safe = torch.where(small, torch.ones_like(s), s)
    scale = torch.where(small, 1 - s.square() / 6, torch.asinh(safe) / safe)
    return scale.to(xs.dtype) * xs
