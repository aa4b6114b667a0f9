r"""Hyperbolic classification head of Khrulkov et al., "Hyperbolic Image Embeddings" (CVPR 2020).

Features are projected linearly, mapped to the Poincaré ball of curvature
``-c`` by the exponential map at the origin (``ToPoincare``, optionally with the
feature clipping of Guo et al. 2022, ``‖x‖ ≤ clip_r`` before the map), and
classified by hyperbolic multinomial logistic regression (Ganea et al. 2018):

    logit_k(x) = (λ_{p_k} ‖a_k‖ / √c) · asinh( 2√c ⟨−p_k ⊕_c x, a_k⟩ / ((1 − c‖−p_k ⊕_c x‖²) ‖a_k‖) )

trained with cross-entropy. Tasks measure the embeddings with the Poincaré
distance and Einstein-midpoint prototypes.

Defaults are those of the released code (hyptorch, github.com/leymir/hyperbolic-image-embeddings):
``ToPoincare(riemannian=True)`` scales the gradient of the embeddings by
:math:`(1-c\|y\|^2)^2/4` (``pmath.RiemannianGradient``), the exp map is projected to
radius :math:`(1-10^{-3})/\sqrt c` in every dtype (``pmath._project``), and the class
points :math:`p_k = \exp_0^c(\tilde p_k)` are not projected (``nn.HyperbolicMLR``). The
harness's own choices stay reachable: ``riemannian=false`` (the true gradient),
``proj_eps=0`` (the dtype's margin, float64 1e-5), ``project_class_points=true``.

One default is not the paper's: feature clipping (Guo et al. 2022) at ``clip_r=1``. Without
it the 64-d projection of the conv features starts on the projection radius, where the
rescaled gradient is ~1e-6 of the Euclidean one, and training collapses to uniform logits
(few-shot accuracy at chance on the embedded data, with or without weight decay). Its cost:
every embedding with ``‖x‖ ≥ clip_r`` lands on the sphere of radius ``tanh(√c·clip_r)/√c``
(all of them on the embedded data), so the distance to the origin carries no information.
``clip_r=0`` is Khrulkov et al.'s head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.engine import make_optimizer
from harness.errors import ConfigError
from harness.geometry import HyperbolicMLR, PoincareGeometry, ToPoincare
from harness.method import Batch, Method


class PoincareMLR(Method):
    """Exp map to the Poincaré ball + hyperbolic MLR, cross-entropy."""

    VERSION = "2"  # 2: hyptorch's gradient rescaling, projection margin and unprojected class points

    @dataclass
    class Config:
        name: str = "poincare_mlr"
        dim: int = 64  # ball dimension (the linear projection's output; re-ID runs of the paper: 32-128)
        c: float = 1.0  # curvature -c of the ball (radius 1/√c); hyptorch examples/mnist.py --c 1.0
        clip_r: float = 1.0  # feature clipping radius (Guo et al. 2022, r ≈ 1); 0 disables (Khrulkov et al.)
        riemannian: bool = True  # hyptorch ToPoincare(riemannian=True), its default
        proj_eps: float = 1e-3  # hyptorch pmath._project: radius (1 - 1e-3)/√c; 0 = the dtype's margin
        project_class_points: bool = False  # hyptorch nn.HyperbolicMLR: p = expmap0(p~), never projected
        # learning rate of the MLR's own parameters (class points p~_k, normals a_k) = train.lr × this;
        # hyptorch trains them with the rest at one rate (1). A probe of the tree control (README).
        mlr_lr_scale: float = 1.0

        def validate(self) -> None:
            if self.dim < 1:
                raise ConfigError(f"{self.name}: dim must be >= 1, got {self.dim}")
            if not (math.isfinite(self.c) and self.c > 0):
                raise ConfigError(f"{self.name}: c must be > 0 (ball radius 1/sqrt(c)), got {self.c}")
            if not (math.isfinite(self.clip_r) and self.clip_r >= 0):
                raise ConfigError(f"{self.name}: clip_r must be >= 0 (0 disables clipping), got {self.clip_r}")
            if not (math.isfinite(self.mlr_lr_scale) and self.mlr_lr_scale > 0):
                raise ConfigError(f"{self.name}: mlr_lr_scale must be > 0 (the MLR's lr = train.lr × it), "
                                  f"got {self.mlr_lr_scale}")
            if not 0 <= self.proj_eps < 1:
                raise ConfigError(f"{self.name}: proj_eps must lie in [0, 1) (0 = the dtype's margin), "
                                  f"got {self.proj_eps}")

    def __init__(self, cfg: Config, backbone: nn.Module, info) -> None:
        super().__init__(cfg, backbone, info)
        self.proj = nn.Linear(info.feat_dim, cfg.dim)
        self.to_ball = ToPoincare(c=cfg.c, clip_r=cfg.clip_r or None, riemannian=cfg.riemannian,
                                  proj_eps=cfg.proj_eps or None)
        self.mlr = HyperbolicMLR(cfg.dim, info.num_classes, c=cfg.c, project_points=cfg.project_class_points)
        self.geometry = PoincareGeometry(c=cfg.c)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.to_ball(self.proj(features))

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.mlr(embeddings)

    def configure_optimizer(self, train: Any) -> torch.optim.Optimizer | None:
        """The engine's optimiser from ``train.*``, with the MLR's parameters in their own group at
        ``train.lr × mlr_lr_scale`` when the scale is not 1 (else None: one group, hyptorch's)."""
        if self.cfg.mlr_lr_scale == 1:
            return None
        mlr = [p for p in self.mlr.parameters() if p.requires_grad]
        ids = {id(p) for p in mlr}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return make_optimizer([{"params": rest}, {"params": mlr, "lr": train.lr * self.cfg.mlr_lr_scale}], train)

    def loss(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings), batch.labels)
