r"""Pairwise squared distances that are fast (one matmul) *and* exact for near pairs.

The matmul form :math:`\|x-y\|^2 = \|x\|^2 + \|y\|^2 - 2\langle x, y\rangle` costs one GEMM
and O(n·m) memory, but its absolute error is about :math:`\gamma(\|x\|^2+\|y\|^2)`
(:math:`\gamma \approx \sqrt{d}\,\varepsilon`): for near-duplicate pairs and the diagonal
the result is pure rounding noise (in float32 about 1e-3 on a distance of 0, which the
hyperbolic conformal factor near the boundary amplifies to ~0.1). We therefore keep the
matmul value only where its error bound is small for the caller (``needs_exact``) and
recompute the remaining pairs from the explicit difference :math:`x_i - y_j`, in chunks
of at most :data:`PAIR_CHUNK_ELEMS` gathered elements: memory stays O(n·m), never O(n·m·d).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

#: At most this many gathered elements (pairs × dim) are alive during the exact pass.
PAIR_CHUNK_ELEMS = 1 << 22


def matmul_rel_error(x: torch.Tensor) -> float:
    r"""Bound :math:`\gamma` on |matmul-form error| / (‖x‖² + ‖y‖²) for this dtype/device/dim.

    Inner products accumulated in the working precision err by about
    :math:`\sqrt{d}\,\varepsilon` (measured on CPU float32, d = 2…1024, also for clustered
    points: ≤ 1.54·√d·ε at d = 2, ≤ 0.6·√d·ε for d ≥ 64); we use (2·√d + 2)·ε.
    CUDA float32 matmuls may run in TF32 (10-bit mantissa) or bf16 when
    ``torch.backends.cuda.matmul.allow_tf32`` or ``torch.set_float32_matmul_precision``
    allow it; then ε is theirs, and correspondingly more pairs take the exact path.
    """
    eps = torch.finfo(x.dtype).eps
    if x.dtype == torch.float32 and x.device.type == "cuda":
        precision = torch.get_float32_matmul_precision()
        if precision == "medium":
            eps = 2.0**-7
        elif precision == "high" or torch.backends.cuda.matmul.allow_tf32:
            eps = 2.0**-10
    return (2.0 * x.shape[-1] ** 0.5 + 2.0) * eps


def refine_pairs(
    value: torch.Tensor,
    mask: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    exact: Callable[[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]], torch.Tensor],
    values_only: bool = False,
) -> torch.Tensor:
    """Replace ``value[b, i, j]`` where ``mask`` holds by ``exact(x[b, i], y[b, j], (b, i, j))``.

    ``x`` (B, n, d), ``y`` (B, m, d), ``value``/``mask`` (B, n, m); ``mask`` may also be the
    (k, 3) index list of the pairs. ``exact`` receives gathered rows (k', d) and returns (k',)
    values; at most :data:`PAIR_CHUNK_ELEMS` gathered elements are alive at a time.
    Returns the updated copy of ``value`` (differentiable ``index_put``), or with
    ``values_only`` just the (k,) exact values.
    """
    idx = mask if mask.dtype == torch.long and mask.dim() == 2 else mask.nonzero()
    if idx.shape[0] == 0:
        return value.new_zeros(0) if values_only else value
    step = max(1, PAIR_CHUNK_ELEMS // max(x.shape[-1], 1))
    parts = []
    for s in range(0, idx.shape[0], step):
        b, i, j = idx[s : s + step].unbind(1)
        parts.append(exact(x[b, i], y[b, j], (b, i, j)))
    vals = torch.cat(parts)
    if values_only:
        return vals
    return value.index_put(tuple(idx.unbind(1)), vals)


def _exact_sqdist(xi: torch.Tensor, yj: torch.Tensor, _idx: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return (xi - yj).pow(2).sum(-1)


def stable_sqdist(
    x: torch.Tensor,
    y: torch.Tensor,
    sx: torch.Tensor,
    sy: torch.Tensor,
    needs_exact: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    r"""Squared Euclidean distances (B, n, m) of x (B, n, d) and y (B, m, d), clamped ≥ 0.

    ``sx``/``sy`` are the squared norms (B, n)/(B, m) in the working dtype.
    ``needs_exact(d2, err)`` gets the matmul values and their absolute error bound
    :math:`\gamma(\|x\|^2+\|y\|^2)` and returns the mask of pairs to recompute exactly.
    """
    scale = sx.unsqueeze(-1) + sy.unsqueeze(-2)
    d2 = torch.baddbmm(scale, x, y.transpose(-1, -2), alpha=-2.0)
    err = scale.mul_(matmul_rel_error(x)) if not scale.requires_grad else scale * matmul_rel_error(x)
    with torch.no_grad():
        mask = needs_exact(d2.detach(), err.detach())
    d2 = refine_pairs(d2, mask, x, y, _exact_sqdist)
    return d2.clamp_min(0.0)


def safe_sqrt(q: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not NaN/inf) gradient at 0, for distances at x = y."""
    pos = q > 0
    return torch.where(pos, torch.where(pos, q, torch.ones_like(q)).sqrt(), torch.zeros_like(q))


def flatten_pair(
    x: torch.Tensor, y: torch.Tensor | None, fn: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Check shapes (..., n, d) / (..., m, d), broadcast batch dims, flatten them to one."""
    if x.dim() < 2:
        raise ValueError(f"{fn}: x must have shape (..., n, d), got {tuple(x.shape)}; use x[None] for one point")
    if y is None:
        y = x
    if y.dim() < 2:
        raise ValueError(f"{fn}: y must have shape (..., m, d), got {tuple(y.shape)}; use y[None] for one point")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"{fn}: x and y must have the same point dimension d, got {x.shape[-1]} and {y.shape[-1]}")
    try:
        batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    except RuntimeError as e:
        raise ValueError(
            f"{fn}: leading (batch) dims of x {tuple(x.shape[:-2])} and y {tuple(y.shape[:-2])} do not broadcast"
        ) from e
    flat = math.prod(batch)  # not -1: a reshape cannot infer it when n or m is 0
    xb = x.expand(*batch, *x.shape[-2:]).reshape(flat, *x.shape[-2:])
    yb = y.expand(*batch, *y.shape[-2:]).reshape(flat, *y.shape[-2:])
    return xb, yb, tuple(batch)
