"""Hyperbolic geometry for the harness, on top of geoopt.

Curvature convention: ``c > 0``, Poincaré ball of radius ``1/sqrt(c)`` (:mod:`.curvature`
converts to geoopt's ``k``). Free functions take ``c`` keyword-only; half-precision inputs
are computed in float32 and returned in their dtype (:mod:`._dtype`).
"""

from .curvature import Curvature, check_c, geoopt_k, geoopt_lorentz_k, poincare_ball
from .layers import HyperbolicMLR, ToPoincare, hyperbolic_mlr_logits
from .lorentz import (lorentz_centroid, lorentz_dist, lorentz_dist0, lorentz_logmap0, lorentz_pairwise_dist,
                      lorentz_project)
from .models import (
    klein_to_lorentz,
    klein_to_poincare,
    lorentz_to_klein,
    lorentz_to_poincare,
    poincare_to_klein,
    poincare_to_lorentz,
)
from .poincare import class_midpoints, dist, dist0, einstein_midpoint, expmap0, logmap0, pairwise_dist, project
from .spaces import EuclideanGeometry, LorentzGeometry, PoincareGeometry, euclidean_pairwise_dist

__all__ = [
    "Curvature",
    "EuclideanGeometry",
    "HyperbolicMLR",
    "LorentzGeometry",
    "PoincareGeometry",
    "ToPoincare",
    "check_c",
    "class_midpoints",
    "dist",
    "dist0",
    "einstein_midpoint",
    "euclidean_pairwise_dist",
    "expmap0",
    "geoopt_k",
    "geoopt_lorentz_k",
    "hyperbolic_mlr_logits",
    "klein_to_lorentz",
    "klein_to_poincare",
    "logmap0",
    "lorentz_centroid",
    "lorentz_dist",
    "lorentz_dist0",
    "lorentz_logmap0",
    "lorentz_pairwise_dist",
    "lorentz_project",
    "lorentz_to_klein",
    "lorentz_to_poincare",
    "pairwise_dist",
    "poincare_ball",
    "poincare_to_klein",
    "poincare_to_lorentz",
    "project",
]
