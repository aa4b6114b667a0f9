"""CIFAR-10 and CIFAR-100 from the pickled python batches as published (Krizhevsky 2009).

Layouts (``root`` may be the batch folder itself or its parent):

- CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
- CIFAR-100: ``cifar-100-python/{train, test, meta}``

Each batch holds ``data`` (N, 3072) uint8, the 1024 red, 1024 green, 1024
blue values of a 32×32 image in row-major order. Splits: ``train`` / ``test``
as published; ``novel_classes`` (empty by default) become a class-disjoint
``novel`` split. Batches are unpickled with an unpickler that admits numpy
arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.data import DatasetInfo
from harness.plugins.datasets._folder import ArrayImageDataset, find_root
from harness.plugins.datasets._formats import load_cifar_batch

_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (the 'python version')"
_CITATION = "A. Krizhevsky. Learning multiple layers of features from tiny images. Tech. report, U. Toronto, 2009."

#: CIFAR-10 has no published hierarchy; this is the usual two-way split (vehicles vs animals).
CIFAR10_COARSE_NAMES = ["vehicle", "animal"]
CIFAR10_COARSE = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0], dtype=np.int64)


def _images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected data of shape (N, 3072), got {data.shape}")
    return data.reshape(-1, 3, 32, 32)


def _names(values: list) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class _CifarBatches(ArrayImageDataset):
    """Reads the published train batches, test batch and meta file named by the subclass."""

    _FOLDER: ClassVar[str]
    _TRAIN: ClassVar[tuple[str, ...]]
    _TEST: ClassVar[str]
    _META: ClassVar[str]
    _LABEL_KEY: ClassVar[str]
    _N_CLASSES: ClassVar[int]

    def _load(self) -> tuple[list[dict], dict, np.ndarray]:
        """Load the images and train/test splits; return the batches (train..., test), meta and labels."""
        files = [*self._TRAIN, self._TEST, self._META]
        folder = find_root(self.cfg, files, source=_SOURCE, nested=self._FOLDER)
        batches = [load_cifar_batch(folder / f) for f in files[:-1]]
        meta = load_cifar_batch(folder / self._META)
        images = np.concatenate([_images(b, folder) for b in batches])
        labels = np.concatenate([np.asarray(b[self._LABEL_KEY], dtype=np.int64) for b in batches])
        n_train = sum(len(b[self._LABEL_KEY]) for b in batches[:-1])
        self._set_labelled(torch.from_numpy(images), labels, self._N_CLASSES, n_train=n_train)
        return batches, meta, labels


class Cifar10(_CifarBatches):
    """CIFAR-10: 50,000 train / 10,000 test 32×32 RGB images, 10 classes; ``coarse_label`` =
    :data:`CIFAR10_COARSE` (vehicle / animal)."""

    VERSION = "1"
    _FOLDER, _TEST, _META, _LABEL_KEY, _N_CLASSES = "cifar-10-batches-py", "test_batch", "batches.meta", "labels", 10
    _TRAIN = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")

    @dataclass
    class Config:
        name: str = "cifar10"
        root: str = "~/data/cifar-10-batches-py"
        image_size: Any = 32  # an int or [H, W]
        novel_classes: list[int] = field(default_factory=list)
        NUM_CLASSES: ClassVar[int] = 10  # novel_classes are checked against it before any work

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        _, meta, labels = self._load()
        self.annotations = {"label": labels, "coarse_label": CIFAR10_COARSE[labels]}
        self.info = DatasetInfo(image_size=self._size, channels=3, class_names=_names(meta["label_names"]),
                                coarse_names=list(CIFAR10_COARSE_NAMES), mean=(0.4914, 0.4822, 0.4465),
                                std=(0.2470, 0.2435, 0.2616), license="unspecified (research use)",
                                citation=_CITATION)


class Cifar100(_CifarBatches):
    """CIFAR-100: 50,000 train / 10,000 test images, 100 fine classes in the 20 published
    superclasses (the batches' ``coarse_labels``) as ``coarse_label``."""

    VERSION = "1"
    _FOLDER, _TEST, _META, _LABEL_KEY, _N_CLASSES = "cifar-100-python", "test", "meta", "fine_labels", 100
    _TRAIN = ("train",)

    @dataclass
    class Config:
        name: str = "cifar100"
        root: str = "~/data/cifar-100-python"
        image_size: Any = 32  # an int or [H, W]
        novel_classes: list[int] = field(default_factory=list)
        NUM_CLASSES: ClassVar[int] = 100  # novel_classes are checked against it before any work

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        batches, meta, labels = self._load()
        coarse = np.concatenate([np.asarray(b["coarse_labels"], dtype=np.int64) for b in batches])
        self.annotations = {"label": labels, "coarse_label": coarse}
        self.info = DatasetInfo(image_size=self._size, channels=3, class_names=_names(meta["fine_label_names"]),
                                coarse_names=_names(meta["coarse_label_names"]), mean=(0.5071, 0.4865, 0.4409),
                                std=(0.2673, 0.2564, 0.2762), license="unspecified (research use)",
                                citation=_CITATION)
