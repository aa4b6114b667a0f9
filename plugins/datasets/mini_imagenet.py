"""miniImageNet (Vinyals et al. 2016) with the class splits of Ravi & Larochelle (2017)::

    train.csv, val.csv, test.csv   header "filename,label", label = ImageNet wnid
    images/<filename>

or FEAT's layout (Ye et al. 2020; ``feat``), the same CSVs in a ``split/`` folder
beside ``images/``: ``split/train.csv``, ``split/val.csv``, ``split/test.csv``. The
first is read when both are there. A dataset read from FEAT's has its own
fingerprint: nothing checks that its CSVs list the images in the same order.

64 / 16 / 20 disjoint classes of 600 images: ``train`` = train.csv, ``val`` =
val.csv, ``novel`` = test.csv (the few-shot evaluation classes). Class ids are
numbered in order of first appearance in train.csv, val.csv, test.csv.
"""

from __future__ import annotations

from typing import Any

import csv
from dataclasses import dataclass

import numpy as np

from harness.plugins.datasets._folder import IMAGENET_MEAN, IMAGENET_STD, FileImageDataset, Layout, check_eval_crop

CSV_SPLITS = {"train": "train.csv", "val": "val.csv", "novel": "test.csv"}
#: The folder of the split CSVs in each layout, relative to the folder of ``images/``.
CSV_FOLDERS = {"ravi": "", "feat": "split"}
LAYOUTS = (
    Layout("ravi", (*CSV_SPLITS.values(), "images"),
           "the ImageNet images listed by Ravi & Larochelle's split CSVs "
           "(https://github.com/twitter-research/meta-learning-lstm/tree/master/data/miniImagenet)"),
    Layout("feat", (*(f"split/{f}" for f in CSV_SPLITS.values()), "images"),
           "FEAT's data/miniimagenet folder (https://github.com/Sha-Lab/FEAT)"),
)


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
        # 0: every image stretched to the square; f in [0.5, 1]: every image an evaluation reads as
        # Resize(round(image_size / f)) + CenterCrop(image_size), the released test transform
        eval_crop: float = 0.0
        preload: bool = False
        workers: int = 4

        def validate(self) -> None:
            check_eval_crop(self.name, self.eval_crop, self.image_size)

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        root, layout = self._find_layout(LAYOUTS)
        csv_folder = root / CSV_FOLDERS[layout.name]
        files, wnids, splits, class_of = [], [], {}, {}
        for split, csv_name in CSV_SPLITS.items():
            rows = read_split_csv(csv_folder / csv_name)
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
