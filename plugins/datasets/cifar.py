"""CIFAR-10 and CIFAR-100 from either published version (Krizhevsky 2009): python or binary.

Layouts (``root`` may be the folder itself or its parent; the python version is
read when both are there):

- CIFAR-10, python (``python``): ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
- CIFAR-10, binary (``binary``): ``cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin,
  batches.meta.txt}``
- CIFAR-100, python: ``cifar-100-python/{train, test, meta}``
- CIFAR-100, binary: ``cifar-100-binary/{train.bin, test.bin, coarse_label_names.txt,
  fine_label_names.txt}``

A python batch is a pickled dict whose ``data`` is (N, 3072) uint8: the 1024 red,
1024 green, 1024 blue values of a 32×32 image in row-major order; its labels are
``labels`` (CIFAR-10) or ``coarse_labels`` and ``fine_labels`` (CIFAR-100), its
meta file's class names ``label_names`` or ``coarse_label_names`` and
``fine_label_names``. A binary file is a run of records, each the label byte(s)
(CIFAR-10: the label; CIFAR-100: coarse, then fine) and the same 3,072 image
bytes (:func:`~harness.plugins.datasets._formats.read_cifar_records`); its class
names are text files, one name a line. Both versions hold the same batches; a
dataset read from the binary one still has its own fingerprint, as nothing here
checks that their images come in the same order.

Splits: ``train`` / ``test`` as published; ``novel_classes`` (empty by default)
become a class-disjoint ``novel`` split. Batches are unpickled with an unpickler
that admits numpy arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from harness.data import DatasetInfo
from harness.plugins.datasets._folder import ArrayImageDataset, Layout, reading
from harness.plugins.datasets._formats import load_cifar_batch, read_cifar_records

_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CITATION = "A. Krizhevsky. Learning multiple layers of features from tiny images. Tech. report, U. Toronto, 2009."

#: CIFAR-10 has no published hierarchy; this is the usual two-way split (vehicles vs animals).
CIFAR10_COARSE_NAMES = ["vehicle", "animal"]
CIFAR10_COARSE = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0], dtype=np.int64)


class CifarFiles(NamedTuple):
    """One version's files: train batches, test batch, and the class-name file(s)."""

    train: tuple[str, ...]
    test: str
    names: tuple[str, ...]


class CifarData(NamedTuple):
    """What either version gives: images (N, 3, 32, 32) uint8; the labels, one (N,) array per kind in the
    binary records' order (CIFAR-10: the label; CIFAR-100: coarse, fine), and the class names of each
    kind; the number of train images (the first ones)."""

    images: np.ndarray
    labels: list[np.ndarray]
    names: list[list[str]]
    n_train: int


def _layout(name: str, folder: str, files: CifarFiles, version: str) -> Layout:
    return Layout(name, (*files.train, files.test, *files.names), f"{_SOURCE} (the '{version}')", nested=folder)


def _images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected data of shape (N, 3072), got {data.shape}")
    return data.reshape(-1, 3, 32, 32)


def _names(values: list) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_name_lines(path: Path) -> list[str]:
    """Class names of the binary version: one a line, blank lines left out."""
    with reading(path, "a CIFAR class-name list"):
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class _CifarBatches(ArrayImageDataset):
    """Reads the published python or binary version (layouts in the module docstring) of the subclass."""

    _PYTHON: ClassVar[CifarFiles]
    _BINARY: ClassVar[CifarFiles]
    _LAYOUTS: ClassVar[tuple[Layout, Layout]]  # python, binary
    _LABEL_KEYS: ClassVar[tuple[str, ...]]  # the python batches' label lists, in the binary records' order
    _NAME_KEYS: ClassVar[tuple[str, ...]]  # the python meta file's name lists, in the same order
    _N_CLASSES: ClassVar[int]

    def _load(self) -> CifarData:
        """Load the images and train/test splits of whichever version is there; return what it gives."""
        folder, layout = self._find_layout(self._LAYOUTS)
        data = self._read_python(folder) if layout == self._LAYOUTS[0] else self._read_binary(folder)
        self._set_labelled(torch.from_numpy(data.images), data.labels[-1], self._N_CLASSES, n_train=data.n_train)
        return data

    def _read_python(self, folder: Path) -> CifarData:
        files = self._PYTHON
        paths = [folder / f for f in (*files.train, files.test)]
        batches = [load_cifar_batch(p) for p in paths]
        meta = load_cifar_batch(folder / files.names[0])
        images = np.concatenate([_images(b, p) for b, p in zip(batches, paths, strict=True)])
        labels = [np.concatenate([np.asarray(b[k], dtype=np.int64) for b in batches]) for k in self._LABEL_KEYS]
        n_train = sum(len(b[self._LABEL_KEYS[0]]) for b in batches[:-1])
        return CifarData(images, labels, [_names(meta[k]) for k in self._NAME_KEYS], n_train)

    def _read_binary(self, folder: Path) -> CifarData:
        files = self._BINARY
        parts = [read_cifar_records(folder / f, len(self._LABEL_KEYS)) for f in (*files.train, files.test)]
        images = np.concatenate([part_images for _, part_images in parts])
        labels = [np.concatenate([part_labels[:, j] for part_labels, _ in parts]) for j in range(len(self._LABEL_KEYS))]
        n_train = sum(len(part_labels) for part_labels, _ in parts[:-1])
        return CifarData(images, labels, [read_name_lines(folder / f) for f in files.names], n_train)


class Cifar10(_CifarBatches):
    """CIFAR-10: 50,000 train / 10,000 test 32×32 RGB images, 10 classes; ``coarse_label`` =
    :data:`CIFAR10_COARSE` (vehicle / animal)."""

    VERSION = "1"
    _TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))
    _PYTHON = CifarFiles(_TRAIN, "test_batch", ("batches.meta",))
    _BINARY = CifarFiles(tuple(f"{f}.bin" for f in _TRAIN), "test_batch.bin", ("batches.meta.txt",))
    _LAYOUTS = (_layout("python", "cifar-10-batches-py", _PYTHON, "python version"),
                _layout("binary", "cifar-10-batches-bin", _BINARY, "binary version"))
    _LABEL_KEYS, _NAME_KEYS, _N_CLASSES = ("labels",), ("label_names",), 10

    @dataclass
    class Config:
        name: str = "cifar10"
        root: str = "~/data/cifar-10-batches-py"
        image_size: Any = 32  # an int or [H, W]
        novel_classes: list[int] = field(default_factory=list)
        NUM_CLASSES: ClassVar[int] = 10  # novel_classes are checked against it before any work

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        data = self._load()
        labels = data.labels[0]
        self.annotations = {"label": labels, "coarse_label": CIFAR10_COARSE[labels]}
        self.info = DatasetInfo(image_size=self._size, channels=3, class_names=data.names[0],
                                coarse_names=list(CIFAR10_COARSE_NAMES), mean=(0.4914, 0.4822, 0.4465),
                                std=(0.2470, 0.2435, 0.2616), license="unspecified (research use)",
                                citation=_CITATION)


class Cifar100(_CifarBatches):
    """CIFAR-100: 50,000 train / 10,000 test images, 100 fine classes in the 20 published
    superclasses (the batches' coarse labels) as ``coarse_label``."""

    VERSION = "1"
    _PYTHON = CifarFiles(("train",), "test", ("meta",))
    _BINARY = CifarFiles(("train.bin",), "test.bin", ("coarse_label_names.txt", "fine_label_names.txt"))
    _LAYOUTS = (_layout("python", "cifar-100-python", _PYTHON, "python version"),
                _layout("binary", "cifar-100-binary", _BINARY, "binary version"))
    _LABEL_KEYS, _NAME_KEYS = ("coarse_labels", "fine_labels"), ("coarse_label_names", "fine_label_names")
    _N_CLASSES = 100

    @dataclass
    class Config:
        name: str = "cifar100"
        root: str = "~/data/cifar-100-python"
        image_size: Any = 32  # an int or [H, W]
        novel_classes: list[int] = field(default_factory=list)
        NUM_CLASSES: ClassVar[int] = 100  # novel_classes are checked against it before any work

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        data = self._load()
        self.annotations = {"label": data.labels[1], "coarse_label": data.labels[0]}
        self.info = DatasetInfo(image_size=self._size, channels=3, class_names=data.names[1],
                                coarse_names=data.names[0], mean=(0.5071, 0.4865, 0.4409),
                                std=(0.2673, 0.2564, 0.2762), license="unspecified (research use)",
                                citation=_CITATION)
