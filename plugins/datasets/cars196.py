"""Stanford Cars (Cars-196, Krause et al. 2013) from the devkit's combined annotation file::

    cars_annos.mat   struct ``annotations`` (relative_im_path, bbox_x1..y2, class 1..196, test 0/1)
                     and cell ``class_names``
    car_ims/000001.jpg ...   (paths as in ``relative_im_path``)

Protocols: ``retrieval`` (``train`` = classes 1..98, ``novel`` = classes 99..196,
Song et al. 2016) or ``classification`` (``train`` / ``test`` from the ``test`` flag).
"""

from __future__ import annotations

from typing import Any

from dataclasses import dataclass

import numpy as np

from harness.plugins.datasets._folder import (IMAGENET_MEAN, IMAGENET_STD, FileImageDataset, check_protocol,
                                              find_root, protocol_splits, reading)


def read_cars_annos(path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(relative paths, 0-based classes, test flags, class names) from ``cars_annos.mat``."""
    from scipy.io import loadmat

    mat = loadmat(path, squeeze_me=True)
    annos = np.atleast_1d(mat["annotations"])
    rel = [str(p) for p in annos["relative_im_path"]]
    label = np.asarray(annos["class"], dtype=np.int64) - 1
    test = np.asarray(annos["test"], dtype=np.int64).astype(bool)
    names = [str(n) for n in np.atleast_1d(mat["class_names"])]
    return rel, label, test, names


class Cars196(FileImageDataset):
    """Stanford Cars: 16,185 images of 196 car models."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "cars196"
        root: str = "~/data/cars196"
        protocol: str = "retrieval"
        image_size: Any = 224  # an int or [H, W]
        preload: bool = False
        workers: int = 4

        def validate(self) -> None:
            check_protocol(self.name, self.protocol)

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        root = find_root(c, ["cars_annos.mat", "car_ims"],
                         source="https://ai.stanford.edu/~jkrause/cars/car_dataset.html (car_ims.tgz + cars_annos.mat)")
        with reading(root / "cars_annos.mat", "Stanford Cars' annotation file"):
            rel, label, test, names = read_cars_annos(root / "cars_annos.mat")
        self._set_contents(
            [root / p for p in rel],
            splits=protocol_splits(c.protocol, label, len(names), lambda: test,
                                   f"{root / 'cars_annos.mat'} (class_names)"),
            annotations={"label": label}, class_names=names, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            license="research use (ImageNet-style terms)",
            citation="J. Krause, M. Stark, J. Deng, L. Fei-Fei. 3D object representations for "
                     "fine-grained categorization. 3dRR workshop, ICCV 2013.")
