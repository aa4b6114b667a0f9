r"""The one curvature convention of :mod:`harness.geometry`, and learnable curvature.

Convention: ``c > 0`` everywhere; the Poincaré ball is :math:`\{x : c\|x\|^2 < 1\}`
(radius :math:`1/\sqrt{c}`), sectional curvature :math:`-c`; the hyperboloid is
:math:`\{x : \langle x, x\rangle_L = -1/c,\ x_0 > 0\}`.

geoopt spells the same spaces differently; convert only here:

* ``geoopt.PoincareBall(c=c)`` uses our ``c``;
* ``geoopt.Stereographic(k=k)`` and the functions of ``geoopt.manifolds.stereographic.math``
  use ``k = -c`` (:func:`geoopt_k`);
* ``geoopt.Lorentz(k=k)`` uses ``⟨x, x⟩_L = -k``, i.e. ``k = 1/c`` (:func:`geoopt_lorentz_k`).

Learnable curvature (:class:`Curvature`) is confined to ``[c_min, c_max]`` like MERU
(Desai et al., ICML 2023, "Hyperbolic Image-Text Representations", which clamps
``c`` to [0.1, 10]) so that it can neither run to 0 (flat, the ball radius explodes)
nor blow up (the ball shrinks to a point).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import geoopt
import torch
from torch import nn

CurvatureLike = Union[float, int, torch.Tensor, nn.Module, Callable[[], "float | torch.Tensor"]]


def check_c(c: float | torch.Tensor) -> float | torch.Tensor:
    """Validate a curvature value: a positive finite float or a scalar tensor.

    Raises ``ValueError`` for ``c <= 0`` or non-finite values. A tensor is only checked
    when it is not being traced (the check reads its value).
    """
    if isinstance(c, torch.Tensor):
        if c.dim() != 0:
            raise ValueError(f"curvature c must be a scalar, got a tensor of shape {tuple(c.shape)}")
        if not c.dtype.is_floating_point:
            raise ValueError(f"curvature c must be a floating tensor, got {c.dtype}")
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            v = float(c.detach())
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"curvature c must be > 0 and finite (ball radius 1/sqrt(c)), got {v}")
        return c
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        raise TypeError(f"curvature c must be a float or a scalar tensor, got {type(c).__name__}")
    if not (c > 0 and math.isfinite(c)):
        raise ValueError(f"curvature c must be > 0 and finite (ball radius 1/sqrt(c)), got {c}")
    return float(c)


def c_value(c: float | torch.Tensor) -> float:
    """The curvature as a Python float (a tensor is read without its graph)."""
    return float(c.detach()) if isinstance(c, torch.Tensor) else float(c)


def resolve_c(c: CurvatureLike) -> float | torch.Tensor:
    """Current value of a curvature given as a float, a scalar tensor or a callable/module."""
    if callable(c) and not isinstance(c, torch.Tensor):
        c = c()
    return check_c(c)


def geoopt_k(
    c: float | torch.Tensor, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """geoopt's stereographic curvature ``k = -c`` as a tensor (geoopt's math functions want one).

    ``dtype`` defaults to the tensor's own / torch's default dtype; pass the points' dtype
    (a float32 ``k`` used with float64 points would round c).
    """
    c = check_c(c)
    k = -c if isinstance(c, torch.Tensor) else torch.tensor(-c, dtype=dtype or torch.get_default_dtype())
    return k.to(dtype=dtype or k.dtype, device=device)


def geoopt_lorentz_k(c: float | torch.Tensor) -> float | torch.Tensor:
    """geoopt's ``Lorentz(k)`` parameter for our ``c``: ``k = 1/c``."""
    return 1.0 / check_c(c)


def poincare_ball(c: float = 1.0, learnable: bool = False) -> geoopt.PoincareBall:
    """``geoopt.PoincareBall`` with our convention (for ``ManifoldParameter`` / RiemannianAdam)."""
    return geoopt.PoincareBall(c=check_c(c), learnable=learnable)


class Curvature(nn.Module):
    r"""A curvature ``c > 0``, fixed or learnable, kept inside ``[c_min, c_max]``.

    Learnable: :math:`c = \exp(\log c_{min} + (\log c_{max} - \log c_{min})\,\sigma(\theta))`
    with a free parameter :math:`\theta`. MERU clamps ``log c`` in place after each
    optimizer step; the sigmoid squashing keeps the same range without an optimizer hook
    and never zeroes the gradient abruptly. Defaults follow MERU: ``[0.1, 10]``.

    Call the module (``curv()``) to get ``c``: a learnable one as a scalar tensor (with its
    graph), a fixed one as the Python float it was given, exact (a float32 tensor would round
    c = 0.3 to 0.30000001), as the layers keep a fixed c.
    """

    def __init__(
        self, c: float = 1.0, learnable: bool = False, c_min: float = 0.1, c_max: float = 10.0
    ) -> None:
        super().__init__()
        c = check_c(float(c))
        check_c(float(c_min))
        if not c_min < c_max:
            raise ValueError(f"need c_min < c_max, got [{c_min}, {c_max}]")
        self.learnable = learnable
        self.c_min, self.c_max = float(c_min), float(c_max)
        if learnable:
            if not c_min < c < c_max:
                raise ValueError(f"initial c={c} must lie strictly inside [c_min, c_max] = [{c_min}, {c_max}]")
            lo, hi = math.log(c_min), math.log(c_max)
            u = (math.log(c) - lo) / (hi - lo)
            self.theta = nn.Parameter(torch.tensor(math.log(u / (1 - u))))
        else:
            self.value = c

    def forward(self) -> torch.Tensor | float:
        if not self.learnable:
            return self.value
        lo, hi = math.log(self.c_min), math.log(self.c_max)
        return torch.exp(lo + (hi - lo) * torch.sigmoid(self.theta))

    def extra_repr(self) -> str:
        return f"c={c_value(self()):.4g}, learnable={self.learnable}, range=[{self.c_min}, {self.c_max}]"
