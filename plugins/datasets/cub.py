"""CUB-200-2011 (Wah et al. 2011) read from its published layout under ``root``::

    images.txt              "<image_id> <relative path>"
    image_class_labels.txt  "<image_id> <class_id>"       (class ids 1..200)
    train_test_split.txt    "<image_id> <is_training_image>"
    classes.txt             "<class_id> <class name>"
    images/<relative path>

Protocols (config ``protocol``):

- ``retrieval`` (deep metric learning, Wah et al. / Song et al. 2016): ``train``
  = every image of the first 100 classes, ``novel`` = every image of the last 100.
- ``classification``: ``train`` / ``test`` from ``train_test_split.txt``, all 200 classes.
"""

from __future__ import annotations

from typing import Any

from dataclasses import dataclass

import numpy as np

from harness.plugins.datasets._folder import (  # noqa: F401 - IMAGENET_*, PROTOCOLS, check_protocol re-exported
    IMAGENET_MEAN, IMAGENET_STD, PROTOCOLS, FileImageDataset, check_protocol, find_root, protocol_splits)


def read_table(path, columns: int) -> list[list[str]]:
    """Whitespace-separated rows of a split/label file; the last column keeps any spaces."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(line.split(maxsplit=columns - 1))
    return rows


class Cub200(FileImageDataset):
    """CUB-200-2011 birds: 11,788 images, 200 species."""

    VERSION = "1"
    FILES = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images"]

    @dataclass
    class Config:
        name: str = "cub200"
        root: str = "~/data/CUB_200_2011"
        protocol: str = "retrieval"
        image_size: Any = 224  # an int or [H, W]
        preload: bool = False
        workers: int = 4

        def validate(self) -> None:
            check_protocol(self.name, self.protocol)

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        root = find_root(c, self.FILES, source="https://www.vision.caltech.edu/datasets/cub_200_2011/")
        paths = {int(i): p for i, p in read_table(root / "images.txt", 2)}
        labels = {int(i): int(k) - 1 for i, k in read_table(root / "image_class_labels.txt", 2)}
        is_train = {int(i): t.strip() == "1" for i, t in read_table(root / "train_test_split.txt", 2)}
        classes = {int(k): n for k, n in read_table(root / "classes.txt", 2)}
        ids = sorted(paths)
        label = np.array([labels[i] for i in ids], dtype=np.int64)
        self._set_contents(
            [root / "images" / paths[i] for i in ids],
            splits=protocol_splits(c.protocol, label, len(classes), lambda: ~np.array([is_train[i] for i in ids])),
            annotations={"label": label}, class_names=[classes[k] for k in sorted(classes)],
            mean=IMAGENET_MEAN, std=IMAGENET_STD, license="research and non-commercial use",
            citation="C. Wah, S. Branson, P. Welinder, P. Perona, S. Belongie. The Caltech-UCSD "
                     "Birds-200-2011 Dataset. Caltech CNS-TR-2011-001, 2011.")
