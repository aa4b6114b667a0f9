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

from harness.errors import DatasetFormatError

from harness.plugins.datasets._folder import (  # noqa: F401 - IMAGENET_*, PROTOCOLS, check_protocol re-exported
    IMAGENET_MEAN, IMAGENET_STD, PROTOCOLS, FileImageDataset, check_eval_crop, check_protocol, find_root, protocol_splits,
    reading)


def read_table(path, columns: int) -> dict[int, str]:
    """``{id: rest}`` of a whitespace-separated CUB index file whose first column is an integer id; the
    last column keeps any spaces."""
    rows: dict[int, str] = {}
    with reading(path, f"a CUB index file ({columns} columns)"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                parts = line.split(maxsplit=columns - 1)
                if len(parts) != columns:
                    raise DatasetFormatError(f"{path}, line {n}: {len(parts)} column(s), expected {columns}: {line!r}")
                rows[int(parts[0])] = parts[1]
    return rows


def lookup(table: dict[int, str], ids: list[int], path, listed_in: str) -> list[str]:
    """``table[i]`` for each of ``ids``; an id ``path`` has no row for is an error naming both files."""
    if missing := [i for i in ids if i not in table]:
        raise DatasetFormatError(f"{path} has no row for {len(missing)} image id(s) listed in {listed_in}, e.g. "
                                 f"{missing[0]} (a file cut short?)")
    return [table[i] for i in ids]


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
        # 0: every image stretched to the square; f in [0.5, 1]: every image an evaluation reads as
        # Resize(round(image_size / f)) + CenterCrop(image_size), the released test transform
        eval_crop: float = 0.0
        preload: bool = False
        workers: int = 4

        def validate(self) -> None:
            check_protocol(self.name, self.protocol)
            check_eval_crop(self.name, self.eval_crop, self.image_size)

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        root = find_root(c, self.FILES, source="https://www.vision.caltech.edu/datasets/cub_200_2011/")
        paths = read_table(root / "images.txt", 2)
        ids = sorted(paths)
        label_file, split_file = root / "image_class_labels.txt", root / "train_test_split.txt"
        with reading(label_file, "CUB's class of each image"):
            labels = read_table(label_file, 2)
            if unlisted := sorted(set(labels) - set(paths)):
                raise DatasetFormatError(f"{root / 'images.txt'} lists {len(paths)} images, {label_file} has labels "
                                         f"for {len(labels)}: image ids {unlisted[:3]}{' …' if len(unlisted) > 3 else ''} "
                                         "have no path (images.txt cut short?); copy it again")
            label = np.array([int(k) - 1 for k in lookup(labels, ids, label_file, "images.txt")], dtype=np.int64)
        is_train = read_table(split_file, 2)
        classes = read_table(root / "classes.txt", 2)
        splits = protocol_splits(c.protocol, label, len(classes), lambda: ~np.array(
            [t.strip() == "1" for t in lookup(is_train, ids, split_file, "images.txt")]), root / "classes.txt")
        self._set_contents(
            [root / "images" / paths[i] for i in ids], splits=splits,
            annotations={"label": label}, class_names=[classes[k] for k in sorted(classes)],
            mean=IMAGENET_MEAN, std=IMAGENET_STD, license="research and non-commercial use",
            citation="C. Wah, S. Branson, P. Welinder, P. Perona, S. Belongie. The Caltech-UCSD "
                     "Birds-200-2011 Dataset. Caltech CNS-TR-2011-001, 2011.")
