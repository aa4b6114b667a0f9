"""Shared helpers of the task tests (no tests here): an in-memory dataset and a geometry.

The geometry is the real :mod:`harness.geometry` when it is importable, else a
minimal stand-in with the same API (used only until that module lands).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.data import DatasetInfo, ImageDataset


class ArrayDataset(ImageDataset):
    """Annotations and splits from arrays; images are constant grey (tasks never read them)."""

    def __init__(self, annotations: dict[str, np.ndarray], splits: dict[str, np.ndarray],
                 name: str = "arrays", size: tuple[int, int] = (8, 8), channels: int = 3) -> None:
        super().__init__(self.Config(name=name))
        self.annotations = {k: np.asarray(v) for k, v in annotations.items()}
        self.splits = {k: np.asarray(v, dtype=np.int64) for k, v in splits.items()}
        self.info = DatasetInfo(image_size=size, channels=channels)

    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        c, (h, w) = self.info.channels, self.info.image_size
        return torch.full((len(indices), c, h, w), 128, dtype=torch.uint8)


class FakeMethod:
    """What EvalContext reads of a method: its geometry."""

    def __init__(self, geometry: Any) -> None:
        self.geometry = geometry


class _StandInEuclidean:
    name, c = "euclidean", 0.0

    def pairwise_dist(self, x, y=None):
        y = x if y is None else y
        return torch.cdist(x, y) if x.dim() > 1 else torch.cdist(x[None], y[None])[0]

    def dist0(self, x):
        return x.norm(dim=-1)

    def midpoint(self, x, dim=-2, weights=None):
        return x.mean(dim=dim)

    def class_prototypes(self, x, labels, num_classes):
        return torch.stack([x[labels == k].mean(0) for k in range(num_classes)])


class _StandInPoincare:
    name = "poincare"

    def __init__(self, c: float = 1.0) -> None:
        self.c = c

    def pairwise_dist(self, x, y=None):
        y = x if y is None else y
        c = self.c
        sq = (x.unsqueeze(-2) - y.unsqueeze(-3)).pow(2).sum(-1)
        nx = x.pow(2).sum(-1).unsqueeze(-1)
        ny = y.pow(2).sum(-1).unsqueeze(-2)
        arg = 1 + 2 * c * sq / ((1 - c * nx) * (1 - c * ny))
        return torch.arccosh(arg.clamp_min(1)) / c ** 0.5

    def dist0(self, x):
        s = self.c ** 0.5
        return 2 * torch.atanh(s * x.norm(dim=-1)) / s

    def midpoint(self, x, dim=-2, weights=None):
        c = self.c
        k = 2 * x / (1 + c * x.pow(2).sum(-1, keepdim=True))
        gamma = 1 / torch.sqrt(1 - c * k.pow(2).sum(-1, keepdim=True))
        m = (gamma * k).sum(dim) / gamma.sum(dim)
        return m / (1 + torch.sqrt(1 - c * m.pow(2).sum(-1, keepdim=True)))

    def class_prototypes(self, x, labels, num_classes):
        return torch.stack([self.midpoint(x[labels == k], dim=0) for k in range(num_classes)])


def euclidean() -> Any:
    try:
        from harness.geometry import EuclideanGeometry
    except ImportError:
        return _StandInEuclidean()
    return EuclideanGeometry()


def poincare(c: float = 1.0) -> Any:
    try:
        from harness.geometry import PoincareGeometry
    except ImportError:
        return _StandInPoincare(c)
    return PoincareGeometry(c=c)
