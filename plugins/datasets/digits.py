"""scikit-learn's 8×8 handwritten digits (shipped inside scikit-learn), for the smallest smoke runs."""

from __future__ import annotations

from typing import Any, ClassVar

from dataclasses import dataclass, field

import numpy as np
import torch

from harness.data import DatasetInfo
from harness.plugins.datasets._folder import ArrayImageDataset


class Digits(ArrayImageDataset):
    """1,797 8×8 grayscale digits (UCI "Optical Recognition of Handwritten Digits", via
    ``sklearn.datasets.load_digits``).

    Pixel values 0..16 are mapped to uint8 by ``round(v · 255 / 16)``. No
    published split: a seeded stratified ``test_fraction`` is ``test``;
    ``novel_classes`` (empty by default) become a class-disjoint ``novel`` split.
    """

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "digits"
        image_size: Any = 8  # an int or [H, W]
        test_fraction: float = 0.2
        seed: int = 0
        novel_classes: list[int] = field(default_factory=list)
        NUM_CLASSES: ClassVar[int] = 10  # novel_classes are checked against it before any work

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        labels = bunch.target.astype(np.int64)
        self._set_labelled(torch.from_numpy(images), labels, 10)
        self.annotations = {"label": labels}
        mean = float(images.mean()) / 255.0
        std = float(images.std()) / 255.0
        self.info = DatasetInfo(
            image_size=self._size, channels=1, class_names=[str(d) for d in range(10)],
            mean=(round(mean, 4),), std=(round(std, 4),), license="CC BY 4.0 (UCI), shipped by scikit-learn (BSD)",
            citation="E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. UCI Machine "
                     "Learning Repository, 1998.")
