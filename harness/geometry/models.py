r"""Conversions between the Poincaré ball, the Klein disk and the hyperboloid (Lorentz model).

All with curvature ``-c`` (``c > 0``): ball/disk radius :math:`1/\sqrt c`, hyperboloid
:math:`\{x=(x_0,\bar x): -x_0^2+\|\bar x\|^2 = -1/c,\ x_0>0\}` (time coordinate first).
Formulas: Cannon et al., "Hyperbolic Geometry" (1997), §7-8; with :math:`s = c\|p\|^2`:

.. math::
    \text{Poincaré}\to\text{Klein}: k = \frac{2p}{1+s} \qquad
    \text{Klein}\to\text{Poincaré}: p = \frac{k}{1+\sqrt{1-c\|k\|^2}}

    \text{Poincaré}\to\text{Lorentz}: x = \Big(\frac{1+s}{\sqrt c\,(1-s)}, \frac{2p}{1-s}\Big) \qquad
    \text{Lorentz}\to\text{Poincaré}: p = \frac{\bar x}{1+\sqrt c\,x_0}

geoopt has no model conversions, hence this module.
"""

from __future__ import annotations

import torch

from ._dtype import upcast
from .curvature import check_c
from .poincare import _check_dim, conformal_gap


def _c_as(c: float | torch.Tensor, t: torch.Tensor) -> float | torch.Tensor:
    return c.to(t.dtype) if isinstance(c, torch.Tensor) else c


@upcast
def poincare_to_klein(p: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Poincaré ball -> Klein disk, ``k = 2p / (1 + c‖p‖²)``."""
    c = check_c(c)
    _check_dim(p, "poincare_to_klein")
    gap = conformal_gap(p, c=_c_as(c, torch.empty(0, dtype=torch.float64)), fn="poincare_to_klein")
    return (2 * p.to(gap.dtype) / (2 - gap).unsqueeze(-1)).to(p.dtype)


@upcast
def klein_to_poincare(k: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Klein disk -> Poincaré ball, ``p = k / (1 + sqrt(1 - c‖k‖²))``."""
    c = check_c(c)
    _check_dim(k, "klein_to_poincare")
    gap = conformal_gap(k, c=_c_as(c, torch.empty(0, dtype=torch.float64)), fn="klein_to_poincare")
    return (k.to(gap.dtype) / (1 + gap.sqrt()).unsqueeze(-1)).to(k.dtype)


@upcast
def poincare_to_lorentz(p: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Poincaré ball (..., d) -> hyperboloid (..., d+1), time coordinate first."""
    c = check_c(c)
    _check_dim(p, "poincare_to_lorentz")
    gap = conformal_gap(p, c=_c_as(c, torch.empty(0, dtype=torch.float64)), fn="poincare_to_lorentz").unsqueeze(-1)
    x0 = (2 - gap) / (_c_as(c, gap) ** 0.5 * gap)
    return torch.cat([x0, 2 * p.to(gap.dtype) / gap], dim=-1).to(p.dtype)


@upcast
def lorentz_to_poincare(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Hyperboloid (..., d+1) -> Poincaré ball (..., d), ``p = x̄ / (1 + √c·x0)``.

    ``x0`` is recomputed from the space part (see :func:`.lorentz.time_coord`), which
    keeps the result inside the ball even for points slightly off the hyperboloid.
    """
    from .lorentz import split_lorentz, time_coord

    c = check_c(c)
    xs = split_lorentz(x, c=c, fn="lorentz_to_poincare")
    x0 = time_coord(xs, c=c).unsqueeze(-1)
    return (xs.to(x0.dtype) / (1 + _c_as(c, x0) ** 0.5 * x0)).to(x.dtype)


def klein_to_lorentz(k: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Klein disk -> hyperboloid (via the Poincaré ball)."""
    return poincare_to_lorentz(klein_to_poincare(k, c=c), c=c)


def lorentz_to_klein(x: torch.Tensor, *, c: float | torch.Tensor) -> torch.Tensor:
    """Hyperboloid -> Klein disk (via the Poincaré ball)."""
    return poincare_to_klein(lorentz_to_poincare(x, c=c), c=c)
