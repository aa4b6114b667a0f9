"""Stanford Cars (Cars-196, Krause et al. 2013): 16,185 images of 196 car models, in either of two layouts.

The devkit's combined annotation file (``cars_annos``, read first when both are there)::

    cars_annos.mat   struct ``annotations`` (relative_im_path, bbox_x1..y2, class 1..196, test 0/1)
                     and cell ``class_names``
    car_ims/000001.jpg ...   (paths as in ``relative_im_path``)

torchvision's ``StanfordCars`` layout (``torchvision``; ``root`` may also be the
folder holding ``stanford_cars/``, as torchvision's own root is)::

    devkit/cars_meta.mat                cell ``class_names``
    devkit/cars_train_annos.mat         struct ``annotations`` (bbox_x1..y2, class 1..196, fname)
    cars_test_annos_withlabels.mat      the same struct for the test images
    cars_train/<fname>, cars_test/<fname>   (or cars_train/cars_train/<fname> …, as Kaggle's copy unpacks)

Both give the same images, labels and class names, in another order: the
``torchvision`` layout lists the train file's images then the test file's, each in
file order; ``cars_annos.mat`` lists ``car_ims/000001.jpg`` onwards, train and test
mixed. So image ``i`` is another car in each, and a dataset read from the
``torchvision`` layout has another fingerprint (see
:class:`~harness.plugins.datasets._folder.RootedDataset`): its caches are its own.

Protocols: ``retrieval`` (``train`` = classes 1..98, ``novel`` = classes 99..196,
Song et al. 2016) or ``classification`` (``train`` / ``test`` from the ``test`` flag,
or from the train / test file).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.plugins.datasets._folder import (IMAGENET_MEAN, IMAGENET_STD, FileImageDataset, Layout, check_eval_crop,
                                              check_protocol, protocol_splits, reading)

CARS_ANNOS = Layout("cars_annos", ("cars_annos.mat", "car_ims"),
                    "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (car_ims.tgz + cars_annos.mat)")
TORCHVISION = Layout(
    "torchvision",
    ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat", "cars_train",
     "cars_test"),
    "torchvision's StanfordCars folder (Kaggle's stanford-cars-dataset images, car_devkit.tgz and "
    "cars_test_annos_withlabels.mat: https://github.com/pytorch/vision/issues/7545)",
    nested="stanford_cars")
LAYOUTS = (CARS_ANNOS, TORCHVISION)


class CarsIndex(NamedTuple):
    """What either layout lists: image files, 0-based classes, test flags, class names, and the file
    the names come from (for messages)."""

    files: list[Path]
    label: np.ndarray
    test: np.ndarray
    names: list[str]
    names_file: Path


def _loadmat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    return loadmat(path, squeeze_me=True)


def _classes(annos: np.ndarray) -> np.ndarray:
    """0-based classes from the 1-based ``class`` field."""
    return np.asarray(annos["class"], dtype=np.int64).reshape(-1) - 1


def _class_names(mat: dict[str, Any]) -> list[str]:
    return [str(n) for n in np.atleast_1d(mat["class_names"])]


def read_cars_annos(root: Path) -> CarsIndex:
    """The ``cars_annos`` layout: images in ``cars_annos.mat``'s order."""
    path = root / "cars_annos.mat"
    with reading(path, "Stanford Cars' annotation file"):
        mat = _loadmat(path)
        annos = np.atleast_1d(mat["annotations"])
        files = [root / str(p) for p in np.atleast_1d(annos["relative_im_path"])]
        test = np.asarray(annos["test"], dtype=np.int64).reshape(-1).astype(bool)
        return CarsIndex(files, _classes(annos), test, _class_names(mat), path)


def _devkit_images(folder: Path, annos_file: str, images: str) -> tuple[list[Path], np.ndarray]:
    """(image files, 0-based classes) of one devkit annotation file, its images in ``folder/images``, or in
    ``folder/images/images`` as Kaggle's copy unpacks (``cars_train/cars_train/``)."""
    path = folder / annos_file
    image_folder = folder / images
    if (image_folder / images).is_dir():
        image_folder = image_folder / images
    with reading(path, "a Stanford Cars devkit annotation file"):
        annos = np.atleast_1d(_loadmat(path)["annotations"])
        return [image_folder / str(f) for f in np.atleast_1d(annos["fname"])], _classes(annos)


def read_torchvision_cars(folder: Path) -> CarsIndex:
    """The ``torchvision`` layout: the train file's images, then the test file's."""
    train_files, train_label = _devkit_images(folder, "devkit/cars_train_annos.mat", "cars_train")
    test_files, test_label = _devkit_images(folder, "cars_test_annos_withlabels.mat", "cars_test")
    meta = folder / "devkit/cars_meta.mat"
    with reading(meta, "the Stanford Cars devkit's class list"):
        names = _class_names(_loadmat(meta))
    test = np.repeat([False, True], [len(train_label), len(test_label)])
    return CarsIndex(train_files + test_files, np.concatenate([train_label, test_label]), test, names, meta)


class Cars196(FileImageDataset):
    """Stanford Cars: 16,185 images of 196 car models."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "cars196"
        root: str = "~/data/cars196"
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
        folder, layout = self._find_layout(LAYOUTS)
        index = read_cars_annos(folder) if layout == CARS_ANNOS else read_torchvision_cars(folder)
        self._set_contents(
            index.files,
            splits=protocol_splits(c.protocol, index.label, len(index.names), lambda: index.test,
                                   f"{index.names_file} (class_names)"),
            annotations={"label": index.label}, class_names=index.names, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            license="research use (ImageNet-style terms)",
            citation="J. Krause, M. Stark, J. Deng, L. Fei-Fei. 3D object representations for "
                     "fine-grained categorization. 3dRR workshop, ICCV 2013.")
