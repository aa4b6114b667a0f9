"""Hyperbolic classification head of Khrulkov et al., "Hyperbolic Image Embeddings" (CVPR 2020).

Features are projected linearly, mapped to the Poincaré ball of curvature
``-c`` by the exponential map at the origin (``ToPoincare``, optionally with the
feature clipping of Guo et al. 2022, ``‖x‖ ≤ clip_r`` before the map), and
classified by hyperbolic multinomial logistic regression (Ganea et al. 2018):

    logit_k(x) = (λ_{p_k} ‖a_k‖ / √c) · asinh( 2√c ⟨−p_k ⊕_c x, a_k⟩ / ((1 − c‖−p_k ⊕_c x‖²) ‖a_k‖) )

trained with cross-entropy. Tasks measure the embeddings with the Poincaré
distance and Einstein-midpoint prototypes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.geometry import HyperbolicMLR, PoincareGeometry, ToPoincare
from harness.method import Batch, Method


class PoincareMLR(Method):
    """Exp map to the Poincaré ball + hyperbolic MLR, cross-entropy."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "poincare_mlr"
        dim: int = 64  # ball dimension (the linear projection's output)
        c: float = 1.0  # curvature -c of the ball (radius 1/√c)
        clip_r: float = 1.0  # feature clipping radius (Guo et al. 2022); 0 disables

    def __init__(self, cfg: Config, backbone: nn.Module, info) -> None:
        super().__init__(cfg, backbone, info)
        self.proj = nn.Linear(info.feat_dim, cfg.dim)
        self.to_ball = ToPoincare(c=cfg.c, clip_r=cfg.clip_r or None)
        self.mlr = HyperbolicMLR(cfg.dim, info.num_classes, c=cfg.c)
        self.geometry = PoincareGeometry(c=cfg.c)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.to_ball(self.proj(features))

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.mlr(embeddings)

    def loss(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings), batch.labels)
