"""Shared helpers of the task tests (no tests here): an in-memory dataset and geometries."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.data import DatasetInfo, ImageDataset
from harness.geometry import EuclideanGeometry, PoincareGeometry


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


def euclidean() -> Any:
    return EuclideanGeometry()


def poincare(c: float = 1.0) -> Any:
    return PoincareGeometry(c=c)
