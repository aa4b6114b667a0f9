r"""Free functions on the Poincaré ball :math:`\mathbb{D}^d_c = \{x : c\|x\|^2 < 1\}`.

Curvature ``-c`` with ``c > 0`` (keyword-only everywhere; see :mod:`.curvature`).
Formulas follow Ganea, Bécigneul & Hofmann, "Hyperbolic Neural Networks" (NeurIPS 2018)
and Khrulkov et al., "Hyperbolic Image Embeddings" (CVPR 2020); they agree with
geoopt's ``PoincareBall`` (tests check it). geoopt already provides these maps; we
re-implement the few that the harness calls in bulk because geoopt (i) computes in the
input dtype (bf16/fp16 lose the boundary entirely), (ii) has no O(n·m)-memory pairwise
distance (``dist(x[:, None], y[None])`` materialises n·m·d values and loses all digits
for near pairs through cancellation), (iii) clamps ``artanh`` at 1 - 1e-7 (beyond
‖x‖ = 1 - 1e-7 its float64 distances are wrong: d(0, x) errs by 2.3 at 1 - 1e-8) and keeps c
as a float32 softplus parameter (c = 0.3 is rounded), and (iv) has no grouped (per-label)
midpoint.

Inputs must lie strictly inside the ball wherever a formula needs it
(:func:`pairwise_dist`, :func:`dist`, :func:`dist0`, :func:`logmap0`,
:func:`einstein_midpoint`, :func:`class_midpoints`): a point with ``c‖x‖² ≥ 1`` raises
``ValueError`` (call :func:`project` first). :func:`expmap0` always projects its output.
"""

from __future__ import annotations

import torch

from ._dtype import accurate_dtype, proj_eps, upcast
from ._pairwise import flatten_pair, matmul_rel_error, refine_pairs, safe_sqrt
from .curvature import c_value, check_c

#: Target absolute error (per working dtype) of a pairwise hyperbolic distance: pairs whose
#: matmul-form error bound exceeds it are recomputed from the explicit difference.
DIST_TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def _sqrt_c(c: float | torch.Tensor) -> float | torch.Tensor:
    return c**0.5


def _check_dim(x: torch.Tensor, fn: str) -> None:
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"{fn}: expected points of shape (..., d) with d >= 1, got {tuple(x.shape)}")


def sqnorm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖² over the last dim, accumulated in float64 without copying x (:mod:`._dtype`), shape (...)."""
    return torch.linalg.vector_norm(x, dim=-1, dtype=accurate_dtype(x)).square()


def conformal_gap(x: torch.Tensor, *, c: float | torch.Tensor, fn: str = "poincare") -> torch.Tensor:
    r""":math:`1 - c\|x\|^2` (= :math:`2/\lambda^c_x`) in float64, checking that x is inside the ball."""
    s = sqnorm(x)
    gap = 1 - (c.to(s.dtype) if isinstance(c, torch.Tensor) else c) * s
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        bad = ~(gap > 0)
        if bool(bad.any()):
            worst = float((1 - gap.detach()).max() / c_value(c))
            raise ValueError(
                f"{fn}: {int(bad.sum())} point(s) lie on or outside the Poincaré ball of radius 1/sqrt(c) "
                f"(c={c_value(c):.4g}, largest ‖x‖ = {worst ** 0.5:.6g} ≥ {c_value(c) ** -0.5:.6g}, or NaN); "
                "a method's head maps them inside with harness.geometry.project(x, c=c) or expmap0; "
                "NaN during training is a divergence: lower train.lr"
            )
    return gap


@upcast
def project(x: torch.Tensor, *, c: float | torch.Tensor, eps: float | None = None, out_dtype=None) -> torch.Tensor:
    r"""Pull points back inside the ball: :math:`x \mapsto x\cdot\min(1, r_{max}/\|x\|)`,
    :math:`r_{max} = (1-\varepsilon)/\sqrt{c}`.

    ``eps`` defaults to :data:`._dtype.PROJ_EPS` of the returned dtype (float64 1e-5, float32
    1e-3 as hyptorch, float16 2e-3, bfloat16 1e-2): larger than twice that dtype's unit
    roundoff, so the projected point is still inside the ball after rounding. Project in
    the dtype you keep: a float32 projection cast to bf16 afterwards can land outside.
    """
    c = check_c(c)
    _check_dim(x, "project")
    eps = proj_eps(out_dtype or x.dtype) if eps is None else eps
    maxnorm = (1 - eps) / _sqrt_c(c)
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return torch.where(norm > maxnorm, x / norm * maxnorm, x)


@upcast
def expmap0(u: torch.Tensor, *, c: float | torch.Tensor, out_dtype=None) -> torch.Tensor:
    r"""Exponential map at the origin, then :func:`project`:

    .. math:: \exp_0^c(u) = \tanh(\sqrt{c}\,\|u\|)\,\frac{u}{\sqrt{c}\,\|u\|}

    (Ganea et al. 2018, Lemma 2). Projection is needed because ``tanh`` rounds to 1
    for ``√c‖u‖`` ≳ 9 (float32) / 19 (float64), which would put the point on the boundary.
    """
    c = check_c(c)
    _check_dim(u, "expmap0")
    sc = _sqrt_c(c)
    n = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    out = torch.tanh(sc * n) * u / (sc * n)
    return project(out, c=c, eps=proj_eps(out_dtype or u.dtype))


@upcast
def logmap0(y: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Logarithmic map at the origin (inverse of :func:`expmap0`):

    .. math:: \log_0^c(y) = \operatorname{artanh}(\sqrt{c}\,\|y\|)\,\frac{y}{\sqrt{c}\,\|y\|}

    (Ganea et al. 2018, Lemma 2). ``y`` must be inside the ball.
    """
    c = check_c(c)
    _check_dim(y, "logmap0")
    conformal_gap(y, c=c, fn="logmap0")
    sc = _sqrt_c(c)
    n = y.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return torch.atanh(sc * n) * y / (sc * n)


@upcast
def dist0(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Geodesic distance to the origin, shape ``x.shape[:-1]``:

    .. math:: d_c(0, x) = \frac{2}{\sqrt{c}}\operatorname{artanh}(\sqrt{c}\,\|x\|)

    ``‖x‖`` and the artanh are computed in float64 (the norm's rounding dominates the error near
    the boundary, where artanh magnifies it), then cast to x's dtype.
    The gradient at ``x = 0`` is the subgradient 0.
    """
    c = check_c(c)
    _check_dim(x, "dist0")
    conformal_gap(x, c=c, fn="dist0")
    sc = _sqrt_c(c)
    n = torch.linalg.vector_norm(x, dim=-1, dtype=accurate_dtype(x))
    return (2 / sc * torch.atanh(sc * n)).to(x.dtype)


@upcast(points=2)
def dist(x: torch.Tensor, y: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Elementwise geodesic distance of broadcastable ``x`` and ``y`` (..., d) -> (...).

    .. math::
        d_c(x, y) = \frac{2}{\sqrt c}\operatorname{artanh}(\sqrt c\,\|-x \oplus_c y\|)
                  = \frac{2}{\sqrt c}\operatorname{asinh}\frac{\sqrt c\,\|x-y\|}
                    {\sqrt{(1-c\|x\|^2)(1-c\|y\|^2)}}

    The second form (used here) needs no Möbius addition and is exact at ``x = y``.
    """
    c = check_c(c)
    _check_dim(x, "dist")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"dist: x and y must have the same point dimension, got {x.shape[-1]} and {y.shape[-1]}")
    ctype = c.to(torch.float64) if isinstance(c, torch.Tensor) else c
    gx = conformal_gap(x, c=ctype, fn="dist").to(x.dtype)
    gy = conformal_gap(y, c=ctype, fn="dist").to(x.dtype)
    q = c * (x - y).pow(2).sum(-1) / (gx * gy)
    return _hyp_from_q(q, c)


def _hyp_from_q(q: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    r"""Distance from :math:`q = c\|x-y\|^2/((1-c\|x\|^2)(1-c\|y\|^2)) \ge 0`:

    .. math:: d = \frac{2}{\sqrt c}\operatorname{asinh}\sqrt q
              = \frac{1}{\sqrt c}\operatorname{log1p}\big(2q + 2\sqrt{q(1+q)}\big)

    The log1p form has no cancellation (all terms ≥ 0) and, unlike ``torch.asinh``, is
    vectorised on CPU (~10x faster). The square root is made safe so that the gradient at
    q = 0 (x = y) is 0.
    """
    return torch.log1p(2 * (q + safe_sqrt(torch.addcmul(q, q, q)))) / c**0.5


@upcast(points=2)
def pairwise_dist(x: torch.Tensor, y: torch.Tensor | None = None, *, c: float | torch.Tensor) -> torch.Tensor:
    r"""Poincaré distance matrix: x (..., n, d), y (..., m, d) (default ``y = x``) -> (..., n, m).

    .. math:: d_c(x_i, y_j) = \frac{2}{\sqrt c}\operatorname{asinh}\sqrt{q_{ij}},\qquad
              q_{ij} = \frac{c\,\|x_i-y_j\|^2}{(1-c\|x_i\|^2)(1-c\|y_j\|^2)}

    (the closed form of :math:`\frac{2}{\sqrt c}\operatorname{artanh}(\sqrt c\|-x\oplus_c y\|)`,
    Ganea et al. 2018, Eq. 2). With :math:`r_i = 1/(1-c\|x_i\|^2)` (float64) and the points
    centred on their mean μ (:math:`\tilde x = x - \mu`), all of :math:`q` is one matmul of
    augmented rows, :math:`q_{ij} = c\,\langle (r_i\|\tilde x_i\|^2, r_i, -2r_i\tilde x_i),
    (r_j, r_j\|\tilde y_j\|^2, r_j\tilde y_j)\rangle`.
    Its rounding error is bounded by :math:`E_{ij} = 2\gamma c\,r_ir_j(\|\tilde x_i\|^2+\|\tilde y_j\|^2)`
    (a rank-2 matmul); pairs where that error could move the distance by more than
    :data:`DIST_TOL` (near pairs, the diagonal — the matmul form cancels there and errs
    by ~0.1 near the boundary) are recomputed from the explicit difference :math:`x_i-y_j`
    (:mod:`._pairwise`). Memory O(n·m); max error ~1e-6 in float32 also at norm 0.999/√c;
    ``d(x, x) = 0`` with gradient 0; with ``y=None`` the matrix is exactly symmetric.
    Without autograd the n×m buffers are reused in place.
    """
    c = check_c(c)
    xb, yb, batch = flatten_pair(x, y, "pairwise_dist")
    if xb.shape[-1] == 0:
        raise ValueError("pairwise_dist: points must have d >= 1")
    ctype = c.to(torch.float64) if isinstance(c, torch.Tensor) else c
    wd = xb.dtype
    grad = torch.is_grad_enabled() and (
        xb.requires_grad or yb.requires_grad or (isinstance(c, torch.Tensor) and c.requires_grad)
    )

    # ‖x - y‖ is translation invariant: centring the points first makes the matmul error
    # (∝ ‖x - μ‖² + ‖y - μ‖²) small for clustered embeddings, so fewer pairs need the exact path.
    with torch.no_grad():
        mu = xb.sum(-2, keepdim=True) if y is None else xb.sum(-2, keepdim=True) + yb.sum(-2, keepdim=True)
        mu = mu / (xb.shape[-2] + (0 if y is None else yb.shape[-2]))

    def rows(z: torch.Tensor, first: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = 1 / conformal_gap(z, c=ctype, fn="pairwise_dist")
        z = z - mu
        s = sqnorm(z)
        if first:  # (c r s, c r, -2 c r z): the factor c rides on the x side
            heads, scale = (ctype * r * s, ctype * r), -2 * ctype * r
        else:
            heads, scale = (r, r * s), r
        scale = scale.to(wd).unsqueeze(-1)
        if grad:
            return torch.cat([torch.stack(heads, -1).to(wd), scale * z], -1), r, s
        # Without autograd the rows go into one buffer: torch.cat would copy the (…, n, d) block once
        # more, which dominates for the many small matrices of batched few-shot episodes.
        out = z.new_empty(*z.shape[:-1], z.shape[-1] + 2)
        out[..., 0], out[..., 1] = heads
        torch.mul(z, scale, out=out[..., 2:])
        return out, r, s

    xa, rx, sx = rows(xb, True)
    if y is None:  # same points: reuse r and ‖x - μ‖²
        ya = torch.cat([torch.stack([rx, rx * sx], -1).to(wd), rx.to(wd).unsqueeze(-1) * (yb - mu)], -1)
        ry, sy = rx, sx
    else:
        ya, ry, sy = rows(yb, False)
    q = torch.bmm(xa, ya.transpose(-1, -2))
    with torch.no_grad():
        # err = E/(tol·√c) with E = 2γc·r_i r_j(‖x_i-μ‖²+‖y_j-μ‖²) ≥ |error of q|. Exact path where
        # E > tol·√c·∂q/∂d = tol·√c·√(q(1+q)) (the error would move d by > tol), or where
        # E > q (q is rounding noise; there d ≈ 2√q/√c is not linear in the error).
        tol = DIST_TOL.get(wd, 1e-5) * c_value(c) ** 0.5
        a = matmul_rel_error(xa) * 2 * c_value(c) / tol
        small = 1 / tol
        ex = torch.stack([a * rx * sx, a * rx], -1).to(wd)
        ey = torch.stack([ry, ry * sy], -1).to(wd)
        err = torch.bmm(ex, ey.transpose(-1, -2))

    def exact(xi: torch.Tensor, yj: torch.Tensor, idx: tuple[torch.Tensor, ...]) -> torch.Tensor:
        b, i, j = idx
        return (xi - yj).pow(2).sum(-1) * (ctype * rx[b, i] * ry[b, j]).to(wd)

    if grad:
        with torch.no_grad():
            qd = q.detach().clamp_min(0)
            mask = err > torch.minimum(torch.addcmul(qd, qd, qd).sqrt_(), qd * small)
            if y is None:
                mask.diagonal(dim1=-2, dim2=-1).fill_(True)
            del qd, err
        q = refine_pairs(q, mask, xb, yb, exact).clamp_min(0)
        out = _hyp_from_q(q, c)
        if y is None:  # symmetric bit for bit (the augmented matmul is not; scipy's squareform checks it)
            out = (out + out.mT) * 0.5
    else:  # same formulas; four n×m buffers (q, err, root, tmp), everything else in place
        q.clamp_min_(0)
        root = torch.addcmul(q, q, q).sqrt_()  # √(q(1+q))
        tmp = torch.mul(q, small)
        if y is None:
            err.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
        idx = err.gt_(torch.minimum(root, tmp, out=tmp)).nonzero()
        del err
        if idx.shape[0]:
            b, i, j = idx.unbind(1)
            qe = refine_pairs(q, idx, xb, yb, exact, values_only=True)
            q.index_put_((b, i, j), qe)
            root.index_put_((b, i, j), torch.addcmul(qe, qe, qe).sqrt_())
        out = root.add_(q).mul_(2).log1p_()
        if c != 1:
            out.mul_(1 / c**0.5)
        if y is None:
            out = torch.add(out, out.mT, out=tmp).mul_(0.5)
    return out.reshape(*batch, *out.shape[-2:])


def _klein_weights(x: torch.Tensor, c: float | torch.Tensor, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Klein coordinates ``k = 2x/(1+c‖x‖²)`` and Lorentz factors
    ``γ = (1+c‖x‖²)/(1-c‖x‖²)``, in float64 (``accurate_dtype``)."""
    ctype = c.to(torch.float64) if isinstance(c, torch.Tensor) else c
    gap = conformal_gap(x, c=ctype, fn=fn)
    x64 = x.to(gap.dtype)
    one_plus = 2 - gap
    return 2 * x64 / one_plus.unsqueeze(-1), one_plus / gap


def _klein_to_poincare(k: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    ctype = c.to(k.dtype) if isinstance(c, torch.Tensor) else c
    gap = (1 - ctype * k.pow(2).sum(-1, keepdim=True)).clamp_min(0)
    return k / (1 + gap.sqrt())


def _check_weights(w: torch.Tensor, fn: str) -> None:
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and bool((w < 0).any()):
        raise ValueError(f"{fn}: weights must be non-negative (a negative weight can leave the ball)")


@upcast
def einstein_midpoint(
    x: torch.Tensor, weights: torch.Tensor | None = None, *, c: float | torch.Tensor, dim: int = -2
) -> torch.Tensor:
    r"""Weighted Einstein midpoint of the sets along ``dim`` (Khrulkov et al. 2020, Eq. 8 "HypAve"):

    .. math::
        k_i = \frac{2x_i}{1+c\|x_i\|^2},\quad \gamma_i = \frac{1}{\sqrt{1-c\|k_i\|^2}}
        = \frac{1+c\|x_i\|^2}{1-c\|x_i\|^2},\quad
        \bar k = \frac{\sum_i w_i\gamma_i k_i}{\sum_i w_i\gamma_i},\quad
        m = \frac{\bar k}{1+\sqrt{1-c\|\bar k\|^2}}

    i.e. average in the Klein model and map back. This is exactly geoopt's
    ``weighted_midpoint`` (Möbius gyromidpoint, :math:`\tfrac12\otimes(\cdot)` = Klein→Poincaré);
    we write it out because it is accumulated in float64 here (the Klein gap
    :math:`1-c\|\bar k\|^2 \approx (1-c\|x\|^2)^2/4` loses half the float32 digits near the
    boundary) and shares code with the grouped :func:`class_midpoints`.

    ``x`` (..., K, d) with ``dim=-2`` (any dim but the last), ``weights`` broadcastable to
    ``x.shape[:-1]`` and ≥ 0 (default: all 1). Returns ``x`` without ``dim``.
    An empty set, or one whose weights are all 0, gives the origin (as
    :meth:`EuclideanGeometry.midpoint <harness.geometry.spaces.EuclideanGeometry.midpoint>`).
    """
    c = check_c(c)
    _check_dim(x, "einstein_midpoint")
    nd = x.dim()
    if not -nd <= dim < nd or dim % nd == nd - 1:
        raise ValueError(f"einstein_midpoint: dim={dim} must index a set dimension of x {tuple(x.shape)}, not the last")
    dim = dim % nd
    k, gamma = _klein_weights(x, c, "einstein_midpoint")
    if weights is not None:
        _check_weights(weights, "einstein_midpoint")
        try:
            gamma = gamma * weights.to(gamma.dtype)
        except RuntimeError as e:
            raise ValueError(
                f"einstein_midpoint: weights {tuple(weights.shape)} do not broadcast to {tuple(x.shape[:-1])}"
            ) from e
        if gamma.shape != x.shape[:-1]:
            raise ValueError(
                f"einstein_midpoint: weights {tuple(weights.shape)} must broadcast to x.shape[:-1] = "
                f"{tuple(x.shape[:-1])} without enlarging it"
            )
    num = (gamma.unsqueeze(-1) * k).sum(dim)
    den = gamma.sum(dim).unsqueeze(-1)
    kbar = num / torch.where(den > 0, den, torch.ones_like(den))
    return _klein_to_poincare(kbar, c).to(x.dtype)


@upcast
def class_midpoints(
    x: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    c: float | torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Einstein midpoint of every class at once: x (N, d), labels (N,) in [0, C) -> (C, d).

    Same formula as :func:`einstein_midpoint`, with the sums over each class formed by
    ``index_add`` (no loop over classes). Classes without points give the origin.
    """
    c = check_c(c)
    _check_dim(x, "class_midpoints")
    if x.dim() != 2:
        raise ValueError(f"class_midpoints: x must be (N, d), got {tuple(x.shape)}")
    labels = check_labels(labels, x.shape[0], num_classes, "class_midpoints")
    k, gamma = _klein_weights(x, c, "class_midpoints")
    if weights is not None:
        if weights.shape != (x.shape[0],):
            raise ValueError(f"class_midpoints: weights must be ({x.shape[0]},), got {tuple(weights.shape)}")
        _check_weights(weights, "class_midpoints")
        gamma = gamma * weights.to(gamma.dtype)
    num = k.new_zeros(num_classes, x.shape[1]).index_add(0, labels, gamma.unsqueeze(-1) * k)
    den = gamma.new_zeros(num_classes).index_add(0, labels, gamma).unsqueeze(-1)
    kbar = num / torch.where(den > 0, den, torch.ones_like(den))
    return _klein_to_poincare(kbar, c).to(x.dtype)


def check_labels(labels: torch.Tensor, n: int, num_classes: int, fn: str) -> torch.Tensor:
    """Validate integer labels (n,) in [0, num_classes) and return them as int64 on their device."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{fn}: labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels))}")
    if labels.shape != (n,):
        raise ValueError(f"{fn}: labels must have shape ({n},) to match x, got {tuple(labels.shape)}")
    if num_classes < 1:
        raise ValueError(f"{fn}: num_classes must be >= 1, got {num_classes}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{fn}: labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long()
