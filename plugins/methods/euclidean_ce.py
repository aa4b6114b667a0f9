"""Euclidean softmax baseline: a linear projection and a linear classifier, cross-entropy.

Embeddings are the projected features; tasks measure them with the Euclidean
distance and arithmetic-mean prototypes (ProtoNet's geometry).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError
from harness.geometry import EuclideanGeometry
from harness.method import Batch, Method


class EuclideanCE(Method):
    """Cross-entropy on ``W·proj(f(x)) + b``."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "euclidean_ce"
        dim: int = 64  # embedding dimension; 0 keeps the backbone features as they are
        label_smoothing: float = 0.0

        def validate(self) -> None:
            name = self.name or "euclidean_ce"
            if self.dim < 0:
                raise ConfigError(f"{name}: dim must be >= 0 (0 keeps the backbone features), got {self.dim}")
            if not 0 <= self.label_smoothing < 1:
                raise ConfigError(f"{name}: label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def __init__(self, cfg: Config, backbone: nn.Module, info) -> None:
        super().__init__(cfg, backbone, info)
        self.geometry = EuclideanGeometry()
        self.proj = nn.Linear(info.feat_dim, cfg.dim) if cfg.dim else nn.Identity()
        self.classifier = nn.Linear(cfg.dim or info.feat_dim, info.num_classes)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings)

    def loss(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings), batch.labels, label_smoothing=self.cfg.label_smoothing)
