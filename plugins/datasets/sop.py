"""Stanford Online Products (Song et al., CVPR 2016) from its published split files::

    Ebay_train.txt, Ebay_test.txt   header "image_id class_id super_class_id path", then one row per image
    <super class>_final/<file>.JPG  (paths as listed)

``label`` = class_id − 1, ``coarse_label`` = super_class_id − 1 (12 product
categories, named after the path's folder without ``_final``). ``train`` =
Ebay_train (11,318 classes), ``novel`` = Ebay_test (11,316 disjoint classes).
"""

from __future__ import annotations

from typing import Any

from dataclasses import dataclass

import numpy as np

from harness.plugins.datasets._folder import IMAGENET_MEAN, IMAGENET_STD, FileImageDataset, check_eval_crop, find_root


def read_ebay(path) -> list[tuple[int, int, str]]:
    """(class_id, super_class_id, path) rows of an Ebay_*.txt file (the header is skipped)."""
    rows = []
    for line in path.read_text().splitlines()[1:]:
        if line.strip():
            _, cls, sup, rel = line.split(maxsplit=3)
            rows.append((int(cls), int(sup), rel))
    return rows


class StanfordOnlineProducts(FileImageDataset):
    """Stanford Online Products: 120,053 images of 22,634 products in 12 categories."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "sop"
        root: str = "~/data/Stanford_Online_Products"
        image_size: Any = 224  # an int or [H, W]
        # 0: every image stretched to the square; f in [0.5, 1]: every image an evaluation reads as
        # Resize(round(image_size / f)) + CenterCrop(image_size), the released test transform
        eval_crop: float = 0.0
        preload: bool = False
        workers: int = 4

        def validate(self) -> None:
            check_eval_crop(self.name, self.eval_crop, self.image_size)

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        root = find_root(self.cfg, ["Ebay_train.txt", "Ebay_test.txt"],
                         source="https://cvgl.stanford.edu/projects/lifted_struct/ (Stanford_Online_Products.zip)")
        train_rows, test_rows = read_ebay(root / "Ebay_train.txt"), read_ebay(root / "Ebay_test.txt")
        rows = train_rows + test_rows
        label = np.array([r[0] - 1 for r in rows], dtype=np.int64)
        coarse = np.array([r[1] - 1 for r in rows], dtype=np.int64)
        names: dict[int, str] = {}
        for _, sup, rel in rows:
            names.setdefault(sup - 1, rel.split("/", 1)[0].removesuffix("_final"))
        n_train = len(train_rows)
        self._set_contents(
            [root / r[2] for r in rows], splits={"train": np.arange(n_train), "novel": np.arange(n_train, len(rows))},
            annotations={"label": label, "coarse_label": coarse},
            coarse_names=[names.get(k, str(k)) for k in range(int(coarse.max()) + 1)],
            mean=IMAGENET_MEAN, std=IMAGENET_STD, license="research use",
            citation="H. O. Song, Y. Xiang, S. Jegelka, S. Savarese. Deep metric learning via lifted "
                     "structured feature embedding. CVPR 2016.")
