"""MS-COCO detection (Lin et al., ECCV 2014) from its published layout::

    annotations/instances_train2017.json   images, annotations (bbox [x, y, w, h]), categories
    annotations/instances_val2017.json
    train2017/<file_name>, val2017/<file_name>

``train`` = ``train_set`` (train2017), ``test`` = ``test_set`` (val2017: COCO's
held-out set with public annotations); either may be "" to leave it out.
Images are resized to ``image_size`` and ``boxes`` scaled with them (see
:mod:`._boxes`); crowd boxes are left out of ``boxes``, category ids are renumbered
contiguously (0..79 in id order). ``label`` is the class of the largest box
(an image-level label for linear probes; −1 for an image without one), ``coarse_label``
its COCO supercategory (−1 likewise). With ``skip_empty``, training images without a
(non-crowd) box are dropped, as torchvision's and Detectron2's COCO training do; the
test set keeps every image, as COCO's evaluation scores all of val2017 (detections on
an image without objects are false positives).

For detection, ``load_image_list`` gives each image at its own size and
``image_list_targets`` its boxes in those pixels, with COCO's ``area`` and
masks rasterised from the ``segmentation`` polygons / RLE; crowd regions come with
them, flagged ``ignore``: training leaves them out, the evaluation ignores
detections on them (COCO's ``iscrowd``).
"""

from __future__ import annotations

from typing import Any

import json
from dataclasses import dataclass

import numpy as np

from harness.config import image_hw
from harness.errors import ConfigError, DatasetFormatError
from harness.plugins.datasets._boxes import group_labels, largest_box_label, object_array, scale_boxes
from harness.plugins.datasets._folder import (IMAGENET_MEAN, IMAGENET_STD, FileImageDataset, find_root, named_sets,
                                              reading)


class Coco(FileImageDataset):
    """MS-COCO instances (boxes of 80 categories)."""

    VERSION = "2"  # 2: the test set keeps images without objects; crowd regions come as ignored targets

    @dataclass
    class Config:
        name: str = "coco"
        root: str = "~/data/coco"
        train_set: str = "train2017"
        test_set: str = "val2017"
        image_size: Any = 256  # an int or [H, W]
        skip_empty: bool = True  # drop training images without a (non-crowd) box (the test set keeps all)
        preload: bool = False
        workers: int = 4

        def validate(self) -> None:
            if not named_sets(self):
                raise ConfigError("coco: train_set and test_set are both empty; name at least one (e.g. val2017)")

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        sets = named_sets(c)
        root = find_root(c, [p for s in sets.values() for p in (f"annotations/instances_{s}.json", s)],
                         source="https://cocodataset.org/#download (images + annotations_trainval)")
        size = image_hw(c.image_size)
        files, rows, splits = [], [], {}
        own_rows, own_hw, areas, segms, ignore = [], [], [], [], []
        categories: list[dict] | None = None
        for split, s in sets.items():
            index_file = root / "annotations" / f"instances_{s}.json"
            with reading(index_file, "a COCO instances file"):
                data = json.loads(index_file.read_text())
                if categories is None:
                    categories = sorted(data["categories"], key=lambda d: d["id"])
                cat_index = {d["id"]: k for k, d in enumerate(categories)}
                per_image: dict[int, list] = {}
                for a in data["annotations"]:
                    if a["category_id"] not in cat_index:
                        raise DatasetFormatError(f"{index_file}: annotation {a.get('id')} has category_id "
                                                 f"{a['category_id']}, which the categories do not list")
                    x, y, w, h = a["bbox"]
                    per_image.setdefault(a["image_id"], []).append(
                        ([x, y, x + w, y + h, cat_index[a["category_id"]]], a.get("area", w * h),
                         a.get("segmentation"), bool(a.get("iscrowd", 0))))
                images = sorted(data["images"], key=lambda d: d["id"])
            start = len(files)
            for im in images:
                objects = per_image.get(im["id"], [])
                found = np.asarray([o[0] for o in objects], dtype=np.float32).reshape(-1, 5)
                crowd = np.asarray([o[3] for o in objects], dtype=bool)
                if c.skip_empty and split == "train" and not (~crowd).any():
                    continue
                files.append(root / s / im["file_name"])
                rows.append(scale_boxes(found[~crowd], (im["width"], im["height"]), size))
                own_rows.append(found)
                own_hw.append((im["height"], im["width"]))
                areas.append(np.asarray([o[1] for o in objects], dtype=np.float64))
                segms.append([o[2] for o in objects])
                ignore.append(crowd)
            splits[split] = np.arange(start, len(files))
        assert categories is not None
        supers = sorted({d["supercategory"] for d in categories})
        super_of = np.array([supers.index(d["supercategory"]) for d in categories], dtype=np.int64)
        boxes = object_array(rows)
        label = np.array([largest_box_label(b) for b in boxes], dtype=np.int64)
        annotations = {"label": label, "boxes": boxes, "coarse_label": group_labels(label, super_of)}
        self._set_contents(
            files, splits=splits, annotations=annotations, class_names=[d["name"] for d in categories],
            coarse_names=supers, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            license="annotations CC BY 4.0; images under their Flickr terms",
            citation="T.-Y. Lin et al. Microsoft COCO: common objects in context. ECCV 2014.")
        has_masks = all(g is not None for per in segms for g in per)
        self._set_own_targets(own_rows, sizes=own_hw, areas=areas, segmentations=segms if has_masks else None,
                              ignore=ignore)
