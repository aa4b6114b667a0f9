"""Geometry objects: what a method declares and what a task measures with.

Every geometry offers the same interface (``name``, ``c``, ``pairwise_dist``, ``dist``,
``dist0``, ``midpoint``, ``class_prototypes``, ``logmap0``, ``to_json``), so a task never branches on
the geometry. Shapes: points (..., d) (the hyperboloid's (..., d+1), time coordinate first);
``pairwise_dist`` (..., n, d) x (..., m, d) -> (..., n, m); ``logmap0`` gives tangent vectors at the
origin (..., d) in each model's own coordinates: their directions are the angles at the origin, their
norms the distance to the origin times a constant (1/2 in the ball, whose metric at the origin is
4× the Euclidean one; 1 on the hyperboloid). Tasks read them only through directions and scale-free
clustering (angles, k-means, plots).
"""

from __future__ import annotations

from typing import Any

import torch

from ._dtype import upcast
from ._pairwise import flatten_pair, safe_sqrt, stable_sqdist
from .curvature import CurvatureLike, c_value, check_c, resolve_c
from .lorentz import lorentz_centroid, lorentz_dist, lorentz_dist0, lorentz_logmap0, lorentz_pairwise_dist
from .poincare import (check_labels, class_midpoints, dist, dist0, einstein_midpoint, logmap0, pairwise_dist,
                       sqnorm)

#: Target relative error of a Euclidean pairwise distance (matmul form kept above it).
EUCLID_REL_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def check_finite(x: torch.Tensor, fn: str) -> torch.Tensor:
    """Raise ``ValueError`` naming how many points of ``x`` (..., d) hold NaN or inf.

    Without it a NaN row spreads silently: the centring of :func:`euclidean_pairwise_dist`
    puts it into every row and the clamped square root maps it to 0, so every distance reads 0.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return x
    bad = ~torch.isfinite(x).all(dim=-1)
    if bool(bad.any()):
        raise ValueError(f"{fn}: embeddings contain NaN or inf ({int(bad.sum())} of {bad.numel()} rows); "
                         "the model diverged or its head overflowed")
    return x


@upcast(points=2)
def euclidean_pairwise_dist(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    r"""L2 distance matrix (..., n, m): :math:`\|x_i-y_j\|`, via one matmul on mean-centred
    points plus the exact difference for near pairs (:mod:`._pairwise`): relative error
    ≤ :data:`EUCLID_REL_TOL`, ``d(x, x) = 0`` exactly, gradient 0 there.

    ``torch.cdist`` uses the bare matmul form for large inputs (float32 error ~1e-3 on
    the diagonal) and its gradient at a zero distance is NaN-prone; hence this kernel.
    """
    check_finite(x, "euclidean_pairwise_dist")
    if y is not None:
        check_finite(y, "euclidean_pairwise_dist")
    xb, yb, batch = flatten_pair(x, y, "euclidean_pairwise_dist")
    wd = xb.dtype
    with torch.no_grad():  # translation invariance: centring shrinks the matmul error bound
        mu = xb.mean(-2, keepdim=True) if y is None else torch.cat([xb, yb], -2).mean(-2, keepdim=True)
    xb, yb = xb - mu, yb - mu
    sx = sqnorm(xb).to(wd)
    sy = sx if y is None else sqnorm(yb).to(wd)
    tol = 2 * EUCLID_REL_TOL.get(wd, 1e-4)

    def needs_exact(d2: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
        return err > tol * torch.maximum(d2, err)

    out = safe_sqrt(stable_sqdist(xb, yb, sx, sy, needs_exact))
    return out.reshape(*batch, *out.shape[-2:])


def _mean(x: torch.Tensor, dim: int, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:  # an empty set gives the origin, as in einstein_midpoint
        return x.sum(dim) / max(x.shape[dim], 1)
    if bool((weights < 0).any()):
        raise ValueError("midpoint: weights must be non-negative")
    w = weights.to(x.dtype).unsqueeze(-1)
    den = w.sum(dim)
    return (w * x).sum(dim) / torch.where(den > 0, den, torch.ones_like(den))


def _set_dim(x: torch.Tensor, dim: int) -> int:
    nd = x.dim()
    if not -nd <= dim < nd or dim % nd == nd - 1:
        raise ValueError(f"midpoint: dim={dim} must index a set dimension of x {tuple(x.shape)}, not the last")
    return dim % nd


class EuclideanGeometry:
    """Flat space: L2 distance, arithmetic-mean prototypes (Snell et al. 2017, ProtoNet)."""

    name = "euclidean"
    c = 0.0

    def pairwise_dist(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(..., n, d) x (..., m, d) -> (..., n, m) L2 distances (:func:`euclidean_pairwise_dist`)."""
        return euclidean_pairwise_dist(x, y)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Elementwise L2 distance of broadcastable (..., d) tensors."""
        return torch.linalg.vector_norm(check_finite(x, "dist") - check_finite(y, "dist"), dim=-1)

    def dist0(self, x: torch.Tensor) -> torch.Tensor:
        """‖x‖, (..., d) -> (...)."""
        return torch.linalg.vector_norm(check_finite(x, "dist0"), dim=-1)

    def midpoint(self, x: torch.Tensor, dim: int = -2, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(Weighted) arithmetic mean over ``dim``; ``weights`` of shape ``x.shape[:-1]``, ≥ 0. An empty
        set, or one whose weights are all 0, gives the origin (as :func:`.poincare.einstein_midpoint`)."""
        return _mean(check_finite(x, "midpoint"), _set_dim(x, dim), weights)

    def class_prototypes(self, x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Per-class means (C, d) by ``index_add`` (no class loop); empty classes give 0."""
        if x.dim() != 2:
            raise ValueError(f"class_prototypes: x must be (N, d), got {tuple(x.shape)}")
        check_finite(x, "class_prototypes")
        labels = check_labels(labels, x.shape[0], num_classes, "class_prototypes")
        s = x.new_zeros(num_classes, x.shape[1]).index_add(0, labels, x)
        n = torch.bincount(labels, minlength=num_classes).to(x.dtype).clamp_min(1).unsqueeze(-1)
        return s / n

    def logmap0(self, x: torch.Tensor) -> torch.Tensor:
        """The points themselves: flat space is its own tangent space at the origin."""
        return check_finite(x, "logmap0")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "c": 0.0}

    def __repr__(self) -> str:
        return "EuclideanGeometry()"


class _CurvedGeometry:
    """A space of curvature ``-c``. ``c`` is a float, a scalar tensor, or a callable returning one (e.g.
    the :class:`.Curvature` module of a head with learnable curvature): ``geometry.c`` reads the
    current value at every call, so distances follow the learnt curvature."""

    name = ""

    def __init__(self, c: CurvatureLike = 1.0) -> None:
        if not callable(c) or isinstance(c, torch.Tensor):
            check_c(c if isinstance(c, torch.Tensor) else c_value(c))
        self._c = c if callable(c) or isinstance(c, torch.Tensor) else c_value(c)

    @property
    def c(self) -> float | torch.Tensor:
        return resolve_c(self._c)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "c": c_value(self.c)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(c={c_value(self.c):.4g})"


class PoincareGeometry(_CurvedGeometry):
    r"""Poincaré ball of curvature ``-c`` (radius :math:`1/\sqrt c`): hyperbolic distance,
    Einstein-midpoint prototypes (Khrulkov et al. 2020, Hyperbolic ProtoNet)."""

    name = "poincare"

    def pairwise_dist(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(..., n, d) x (..., m, d) -> (..., n, m) (:func:`.poincare.pairwise_dist`)."""
        check_finite(x, "pairwise_dist")
        return pairwise_dist(x, None if y is None else check_finite(y, "pairwise_dist"), c=self.c)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Elementwise distance of broadcastable (..., d) tensors (:func:`.poincare.dist`)."""
        return dist(check_finite(x, "dist"), check_finite(y, "dist"), c=self.c)

    def dist0(self, x: torch.Tensor) -> torch.Tensor:
        """Distance to the origin (..., d) -> (...) (:func:`.poincare.dist0`)."""
        return dist0(check_finite(x, "dist0"), c=self.c)

    def midpoint(self, x: torch.Tensor, dim: int = -2, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Einstein midpoint over ``dim`` (:func:`.poincare.einstein_midpoint`)."""
        return einstein_midpoint(check_finite(x, "midpoint"), weights, c=self.c, dim=dim)

    def class_prototypes(self, x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Per-class Einstein midpoints (C, d) (:func:`.poincare.class_midpoints`); empty classes give 0."""
        return class_midpoints(check_finite(x, "class_prototypes"), labels, num_classes, c=self.c)

    def logmap0(self, x: torch.Tensor) -> torch.Tensor:
        """Tangent vectors at the origin (:func:`.poincare.logmap0`, Ganea et al. 2018)."""
        return logmap0(check_finite(x, "logmap0"), c=self.c)


class LorentzGeometry(_CurvedGeometry):
    r"""Hyperboloid (Lorentz model) of curvature ``-c``: points (..., d+1), time coordinate first
    (:mod:`.lorentz`; Nickel & Kiela 2018), Lorentzian-centroid prototypes (Law et al. 2019), which are
    the Einstein midpoints of the same points in the ball: a method whose embeddings are the
    :func:`~.models.poincare_to_lorentz` image of another's scores the same on every task."""

    name = "lorentz"

    def pairwise_dist(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(..., n, d+1) x (..., m, d+1) -> (..., n, m) (:func:`.lorentz.lorentz_pairwise_dist`)."""
        check_finite(x, "pairwise_dist")
        return lorentz_pairwise_dist(x, None if y is None else check_finite(y, "pairwise_dist"), c=self.c)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Elementwise distance of broadcastable (..., d+1) tensors (:func:`.lorentz.lorentz_dist`)."""
        return lorentz_dist(check_finite(x, "dist"), check_finite(y, "dist"), c=self.c)

    def dist0(self, x: torch.Tensor) -> torch.Tensor:
        r"""Distance to the origin :math:`(1/\sqrt c, 0)` (:func:`.lorentz.lorentz_dist0`)."""
        return lorentz_dist0(check_finite(x, "dist0"), c=self.c)

    def midpoint(self, x: torch.Tensor, dim: int = -2, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Lorentzian centroid over ``dim`` (:func:`.lorentz.lorentz_centroid`)."""
        return lorentz_centroid(check_finite(x, "midpoint"), weights, c=self.c, dim=dim)

    def class_prototypes(self, x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Per-class Lorentzian centroids (C, d+1); empty classes give the origin."""
        if x.dim() != 2:
            raise ValueError(f"class_prototypes: x must be (N, d+1), got {tuple(x.shape)}")
        labels = check_labels(labels, x.shape[0], num_classes, "class_prototypes")
        return lorentz_centroid(check_finite(x, "class_prototypes"), c=self.c, labels=labels,
                                num_classes=num_classes)

    def logmap0(self, x: torch.Tensor) -> torch.Tensor:
        """Tangent vectors at the origin as their space parts (..., d) (:func:`.lorentz.lorentz_logmap0`)."""
        return lorentz_logmap0(check_finite(x, "logmap0"), c=self.c)


__all__ = ["EuclideanGeometry", "LorentzGeometry", "PoincareGeometry", "check_finite", "euclidean_pairwise_dist"]
