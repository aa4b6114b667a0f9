r"""Thin ``nn.Module`` wrappers: the Poincaré head of Khrulkov et al. (CVPR 2020).

* :class:`ToPoincare` — Euclidean features -> ball by :func:`.expmap0`, with optional feature
  clipping (Guo et al., CVPR 2022, "Clipped Hyperbolic Classifiers Are Super-Hyperbolic
  Classifiers") and optionally learnable curvature.
* :class:`HyperbolicMLR` — hyperbolic multinomial logistic regression (Ganea et al. 2018,
  §3.1, as in hyptorch's ``HyperbolicMLR``), batched over classes with two matmuls.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._dtype import accurate_dtype, compute_dtype, upcast
from ._dtype import proj_eps as dtype_proj_eps
from .curvature import Curvature, CurvatureLike, check_c, resolve_c
from .poincare import _check_dim, conformal_gap, expmap0, project


def _as_curvature(c: CurvatureLike, learn_c: bool, c_min: float, c_max: float) -> nn.Module | float:
    if isinstance(c, nn.Module):
        if learn_c:
            raise ValueError("learn_c=True needs a float c; a shared Curvature module decides learnability itself")
        return c
    if learn_c:
        return Curvature(float(c), learnable=True, c_min=c_min, c_max=c_max)
    return check_c(float(c))


class _RiemannianGradient(torch.autograd.Function):
    r"""Identity forward; backward scales the gradient by :math:`(1-c\|y\|^2)^2/4 = \lambda_y^{-2}`
    (hyptorch's ``pmath.RiemannianGradient``: the Euclidean gradient turned into the Riemannian
    gradient of the ball metric, Khrulkov et al. 2020, their released ``ToPoincare``).

    The scale is computed in ``y``'s compute dtype with ``c`` exactly as given: a float ``c``
    stays a Python float (a float32 tensor would round c = 0.3 before a float64 backward).
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(y)
        ctx.c = c.detach() if isinstance(c, torch.Tensor) else c
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        y = y.to(compute_dtype(y.dtype))
        c = ctx.c.to(y.dtype) if isinstance(ctx.c, torch.Tensor) else ctx.c
        scale = (1 - c * y.pow(2).sum(-1, keepdim=True)).pow(2) / 4
        return grad * scale.to(grad.dtype), None


class ToPoincare(nn.Module):
    r"""Map Euclidean features onto the Poincaré ball (Khrulkov et al. 2020, hyptorch ``ToPoincare``):

    .. math:: x \mapsto \operatorname{proj}\big(\exp_0^c(\min(1, r/\|x\|)\,x)\big)

    Args:
        c: curvature (float), or a :class:`.Curvature` module shared with other layers.
        learn_c: learn ``c`` (a :class:`.Curvature` kept in ``[c_min, c_max]``).
        clip_r: feature clipping radius r of Guo et al. 2022 (``None`` = no clipping; they
            recommend r ≈ 1-2.3). Clipping bounds the output norm by ``tanh(√c·r)/√c``,
            away from the boundary, where gradients vanish.
        riemannian: scale the backward gradient by :math:`(1-c\|y\|^2)^2/4` (hyptorch's
            ``riemannian=True``, their default, on in all their released few-shot runs); off
            by default here so that the gradient is the true one.
        proj_eps: margin of the projection after the exp map, radius :math:`(1-\varepsilon)/\sqrt c`.
            ``None``: the dtype's margin (:data:`._dtype.PROJ_EPS`: float64 1e-5, float32 1e-3);
            hyptorch projects with 1e-3 in every dtype (``pmath._project``). The margin used is
            never below the dtype's (a smaller one would not survive rounding).
    """

    def __init__(
        self,
        c: CurvatureLike = 1.0,
        *,
        learn_c: bool = False,
        clip_r: float | None = None,
        riemannian: bool = False,
        proj_eps: float | None = None,
        c_min: float = 0.1,
        c_max: float = 10.0,
    ) -> None:
        super().__init__()
        if clip_r is not None and not clip_r > 0:
            raise ValueError(f"clip_r must be > 0 or None, got {clip_r}")
        if proj_eps is not None and not 0 < proj_eps < 1:
            raise ValueError(f"proj_eps must lie in (0, 1) or be None, got {proj_eps}")
        self.curvature = _as_curvature(c, learn_c, c_min, c_max)
        self.clip_r = clip_r
        self.riemannian = riemannian
        self.proj_eps = proj_eps

    @property
    def c(self) -> float | torch.Tensor:
        return resolve_c(self.curvature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.c
        if self.clip_r is not None:
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=compute_dtype(x.dtype)).clamp_min(1e-15)
            x = x * torch.clamp(self.clip_r / norm, max=1.0).to(x.dtype)
        y = expmap0(x, c=c)
        if self.proj_eps is not None and self.proj_eps > dtype_proj_eps(y.dtype):
            y = project(y, c=c, eps=self.proj_eps)
        if self.riemannian:
            y = _RiemannianGradient.apply(y, c)
        return y

    def extra_repr(self) -> str:
        c = self.curvature if isinstance(self.curvature, float) else "module"
        return f"c={c}, clip_r={self.clip_r}, riemannian={self.riemannian}, proj_eps={self.proj_eps}"


@upcast(points=3)
def hyperbolic_mlr_logits(
    x: torch.Tensor, p: torch.Tensor, a: torch.Tensor, *, c: float | torch.Tensor
) -> torch.Tensor:
    r"""Hyperbolic MLR logits (Ganea et al. 2018, Eq. 25): x (..., d), p/a (K, d) -> (..., K).

    .. math::
        \text{logit}_k(x) = \frac{\lambda_{p_k}\|a_k\|}{\sqrt c}\operatorname{asinh}
        \frac{2\sqrt c\,\langle -p_k\oplus_c x, a_k\rangle}{(1-c\|-p_k\oplus_c x\|^2)\,\|a_k\|}

    with :math:`p_k` on the ball and :math:`a_k` a tangent vector at :math:`p_k`. Expanding
    the Möbius sum (α = 1 - 2c⟨p,x⟩ + c‖x‖², β = 1 - c‖p‖², and the identity
    :math:`1-c\|u\oplus v\|^2 = (1-c\|u\|^2)(1-c\|v\|^2)/D`, whose denominator D cancels):

    .. math:: \text{logit}_k(x) = \frac{2\|a_k\|}{\beta_k\sqrt c}\operatorname{asinh}
              \frac{2\sqrt c\,(\beta_k\langle x,a_k\rangle - \alpha_k(x)\langle p_k,a_k\rangle)}
                   {\beta_k(1-c\|x\|^2)\,\|a_k\|}

    needs only the matmuls x·pᵀ and x·aᵀ: memory O(B·K), not hyptorch's O(B·K·d).
    """
    c = check_c(c)
    _check_dim(x, "hyperbolic_mlr_logits")
    if p.dim() != 2 or p.shape != a.shape or p.shape[1] != x.shape[-1]:
        raise ValueError(
            f"hyperbolic_mlr_logits: need p, a of shape (K, d={x.shape[-1]}), got {tuple(p.shape)}, {tuple(a.shape)}"
        )
    ctype = c.to(torch.float64) if isinstance(c, torch.Tensor) else c
    wd = x.dtype
    gx = conformal_gap(x, c=ctype, fn="hyperbolic_mlr_logits").to(wd).unsqueeze(-1)  # (..., 1)
    beta = conformal_gap(p, c=ctype, fn="hyperbolic_mlr_logits (class points p)").to(wd)  # (K,)
    sx = x.to(accurate_dtype(x)).pow(2).sum(-1, keepdim=True).to(wd)
    a_norm = a.norm(dim=-1).clamp_min(1e-15)  # (K,)
    pa = (p * a).sum(-1)  # (K,)
    xp = x @ p.T  # (..., K)
    xa = x @ a.T
    alpha = 1 - 2 * c * xp + c * sx
    sc = c**0.5
    num = 2 * sc * (beta * xa - alpha * pa)
    return 2 * a_norm / (beta * sc) * torch.asinh(num / (beta * gx * a_norm))


class HyperbolicMLR(nn.Module):
    r"""Hyperbolic multinomial logistic regression (Ganea et al. 2018; hyptorch ``HyperbolicMLR``).

    Per class k a point :math:`p_k = \exp_0^c(\tilde p_k)` and a normal
    :math:`a_k = (1-c\|p_k\|^2)\,\tilde a_k` (the parallel transport of :math:`\tilde a_k` from 0
    to :math:`p_k`), with Euclidean parameters :math:`\tilde p, \tilde a` (K, d), Kaiming-uniform
    initialised as in hyptorch. Parametrising :math:`p_k` through the exp map (hyptorch's
    choice, not a geoopt ``ManifoldParameter``) keeps it inside the ball for any parameter
    value and any (learnable) c, and works with any Euclidean optimizer.
    Logits: :func:`hyperbolic_mlr_logits`.

    ``project_points=True`` projects the class points like every exp map of the harness
    (:func:`.expmap0`: radius :math:`(1-\varepsilon)/\sqrt c`, so a point's radial gradient
    vanishes there); ``False`` is hyptorch's ``pmath.expmap0``, never projected. Unprojected
    float32 points reach the boundary only when :math:`\sqrt c\|\tilde p_k\| \gtrsim 9`
    (tanh rounds to 1); that raises a ValueError here (hyptorch's logits become inf/NaN).
    """

    def __init__(self, ball_dim: int, n_classes: int, c: CurvatureLike = 1.0, *, project_points: bool = True) -> None:
        super().__init__()
        if ball_dim < 1 or n_classes < 1:
            raise ValueError(f"HyperbolicMLR needs ball_dim >= 1 and n_classes >= 1, got {ball_dim}, {n_classes}")
        self.ball_dim, self.n_classes = ball_dim, n_classes
        self.curvature = c if isinstance(c, nn.Module) else check_c(float(c))
        self.project_points = project_points
        self.a_vals = nn.Parameter(torch.empty(n_classes, ball_dim))
        self.p_vals = nn.Parameter(torch.empty(n_classes, ball_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.a_vals, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.p_vals, a=math.sqrt(5))

    @property
    def c(self) -> float | torch.Tensor:
        return resolve_c(self.curvature)

    def class_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The class points p (K, d) on the ball and their normals a (K, d)."""
        c = self.c
        if self.project_points:
            p = expmap0(self.p_vals, c=c)
        else:  # hyptorch pmath._expmap0: tanh(√c‖u‖) u / (√c‖u‖), no projection
            sc = c**0.5
            n = self.p_vals.norm(dim=-1, keepdim=True).clamp_min(1e-15)
            p = torch.tanh(sc * n) * self.p_vals / (sc * n)
            if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and bool(
                    (c * p.detach().pow(2).sum(-1) >= 1).any()):
                raise ValueError("HyperbolicMLR: a class point reached the boundary of the ball (tanh rounded to 1: "
                                 "its parameter norm exceeds ~9/sqrt(c) in float32); build the layer with "
                                 "project_points=True to keep class points inside")
        a = self.a_vals * (1 - c * p.pow(2).sum(-1, keepdim=True))
        return p, a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., ball_dim) on the ball -> logits (..., n_classes).

        Dtype: promoted from x and the parameters (bf16 x with float32 parameters gives
        float32 logits; the computation is never below float32).
        """
        if x.shape[-1] != self.ball_dim:
            raise ValueError(f"HyperbolicMLR: expected inputs (..., {self.ball_dim}), got {tuple(x.shape)}")
        p, a = self.class_points()
        return hyperbolic_mlr_logits(x, p, a, c=self.c)

    def extra_repr(self) -> str:
        return f"ball_dim={self.ball_dim}, n_classes={self.n_classes}, project_points={self.project_points}"
