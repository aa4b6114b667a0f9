"""NormFace (Wang et al., ACM MM 2017): cross-entropy on s·cos(θ) between embedding and class weight."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.geometry import EuclideanGeometry
from harness.method import Method


class CosineCE(Method):
    """logit_k = s · ⟨x/‖x‖, w_k/‖w_k‖⟩; embeddings are unit vectors (Euclidean distance on the sphere)."""

    @dataclass
    class Config:
        name: str = "cosine_ce"
        dim: int = 64
        scale: float = 16.0

    def __init__(self, cfg, backbone, info):
        super().__init__(cfg, backbone, info)
        self.geometry = EuclideanGeometry()
        self.proj = nn.Linear(info.feat_dim, cfg.dim)
        self.weight = nn.Parameter(torch.randn(info.num_classes, cfg.dim) * 0.01)

    def head(self, features):
        return F.normalize(self.proj(features), dim=-1)

    def logits(self, embeddings):
        return self.cfg.scale * embeddings @ F.normalize(self.weight, dim=-1).T

    def loss(self, embeddings, batch):
        return F.cross_entropy(self.logits(embeddings), batch.labels)
