"""miniImageNet (Vinyals et al. 2016) with the class splits of Ravi & Larochelle (2017)::

    train.csv, val.csv, test.csv   header "filename,label", label = ImageNet wnid
    images/<filename>

64 / 16 / 20 disjoint classes of 600 images: ``train`` = train.csv, ``val`` =
val.csv, ``novel`` = test.csv (the few-shot evaluation classes). Class ids are
numbered in order of first appearance in train.csv, val.csv, test.csv.
"""

from __future__ import annotations

from typing import Any

import csv
from dataclasses import dataclass

import numpy as np

from harness.plugins.datasets._folder import IMAGENET_MEAN, IMAGENET_STD, FileImageDataset, find_root

CSV_SPLITS = {"train": "train.csv", "val": "val.csv", "novel": "test.csv"}


def read_split_csv(path) -> list[tuple[str, str]]:
    """(filename, wnid) rows of a Ravi & Larochelle split file."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["filename", "label"]:
            raise ValueError(f"{path}: expected the header 'filename,label', got {header}")
        return [(row[0].strip(), row[1].strip()) for row in reader if row]


class MiniImageNet(FileImageDataset):
    """miniImageNet: 60,000 84×84 images of 100 ImageNet classes."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "mini_imagenet"
        root: str = "~/data/miniImageNet"
        image_size: Any = 84  # an int or [H, W]
        preload: bool = False
        workers: int = 4

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        root = find_root(
            self.cfg, [*CSV_SPLITS.values(), "images"],
            source="the ImageNet images listed by Ravi & Larochelle's split CSVs "
                   "(https://github.com/twitter-research/meta-learning-lstm/tree/master/data/miniImagenet)")
        files, wnids, splits, class_of = [], [], {}, {}
        for split, csv_name in CSV_SPLITS.items():
            rows = read_split_csv(root / csv_name)
            start = len(files)
            for filename, wnid in rows:
                class_of.setdefault(wnid, len(class_of))
                files.append(root / "images" / filename)
                wnids.append(wnid)
            splits[split] = np.arange(start, len(files))
        self._set_contents(
            files, splits=splits, annotations={"label": np.array([class_of[w] for w in wnids], dtype=np.int64)},
            class_names=list(class_of), mean=IMAGENET_MEAN, std=IMAGENET_STD,
            license="ImageNet terms of access (research, non-commercial)",
            citation="O. Vinyals et al. Matching networks for one shot learning. NeurIPS 2016; "
                     "S. Ravi, H. Larochelle. Optimization as a model for few-shot learning. ICLR 2017.")
