"""PASCAL VOC 2007 detection (Everingham et al., IJCV 2010) from ``VOCdevkit/VOC2007``::

    Annotations/<id>.xml       <size><width/><height/></size>, <object><name/><difficult/><bndbox>
                               <xmin/><ymin/><xmax/><ymax/></bndbox></object> (1-based pixel indices)
    JPEGImages/<id>.jpg
    ImageSets/Main/trainval.txt, test.txt   one image id per line

``train`` = ``train_set`` (trainval), ``test`` = ``test_set`` (test; "" leaves
it out). Boxes become pixel-edge coordinates as in Detectron2's
``pascal_voc.py`` (``x1 = xmin − 1``, ``y1 = ymin − 1``, ``x2 = xmax``,
``y2 = ymax``) and are scaled with the resized image (``load_image_list`` /
``image_list_targets`` give the images at their own size with the unscaled
boxes, for detection); ``difficult`` objects are left out of ``boxes`` unless
``use_difficult``, and come with the detection targets flagged ``ignore``: the
VOC evaluation ignores them, so detections on them are neither hits nor false
positives, and detection training leaves them out (Detectron2 trains on them:
``use_difficult=true`` makes them ordinary objects everywhere). ``label`` is the
class of the largest box (of the difficult ones where an image has nothing else;
−1 for an image without objects); ``coarse_label`` its group in the VOC
challenge's own grouping (person, animal, vehicle, indoor).
"""

from __future__ import annotations

from typing import Any

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.config import image_hw
from harness.errors import DatasetFormatError
from harness.plugins.datasets._boxes import group_labels, largest_box_label, object_array, scale_boxes
from harness.plugins.datasets._folder import (IMAGENET_MEAN, IMAGENET_STD, FileImageDataset, find_root, named_sets,
                                              reading)

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]
VOC_GROUPS = ["person", "animal", "vehicle", "indoor"]
_GROUP_OF = {"person": 0, "bird": 1, "cat": 1, "cow": 1, "dog": 1, "horse": 1, "sheep": 1,
             "aeroplane": 2, "bicycle": 2, "boat": 2, "bus": 2, "car": 2, "motorbike": 2, "train": 2,
             "bottle": 3, "chair": 3, "diningtable": 3, "pottedplant": 3, "sofa": 3, "tvmonitor": 3}
VOC_COARSE = np.array([_GROUP_OF[c] for c in VOC_CLASSES], dtype=np.int64)


def parse_voc_xml(path: Path) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """(width, height), the (k, 5) boxes ``x1 y1 x2 y2 class`` (pixel edges) and the k difficult flags."""
    with reading(path, "a VOC annotation file"):
        root = ET.parse(path).getroot()
        size = root.find("size")
        wh = (int(float(size.findtext("width"))), int(float(size.findtext("height"))))
        rows, difficult = [], []
        for obj in root.iter("object"):
            difficult.append(bool(int(obj.findtext("difficult", "0") or 0)))
            name = obj.findtext("name").strip()
            if name not in VOC_CLASSES:
                raise DatasetFormatError(f"{path}: unknown VOC class '{name}' (expected one of {VOC_CLASSES})")
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            rows.append([x1 - 1, y1 - 1, x2, y2, VOC_CLASSES.index(name)])
        return wh, np.asarray(rows, dtype=np.float32).reshape(-1, 5), np.asarray(difficult, dtype=bool)


class Voc2007(FileImageDataset):
    """PASCAL VOC 2007: 9,963 images with boxes of 20 classes."""

    VERSION = "2"  # 2: difficult objects come with the detection targets, flagged ignore

    @dataclass
    class Config:
        name: str = "voc2007"
        root: str = "~/data/VOCdevkit/VOC2007"
        train_set: str = "trainval"
        test_set: str = "test"
        image_size: Any = 256  # an int or [H, W]
        use_difficult: bool = False
        preload: bool = False
        workers: int = 4

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        sets = named_sets(c)
        root = find_root(c, ["Annotations", "JPEGImages", *(f"ImageSets/Main/{s}.txt" for s in sets.values())],
                         nested="VOC2007", marker="Annotations",
                         source="http://host.robots.ox.ac.uk/pascal/VOC/voc2007/ (VOCtrainval + VOCtest tars)")
        size = image_hw(c.image_size)
        files, rows, labels, splits = [], [], [], {}
        own_rows, own_hw, ignore = [], [], []
        for split, s in sets.items():
            ids = [line.strip() for line in (root / "ImageSets/Main" / f"{s}.txt").read_text().splitlines()
                   if line.strip()]
            start = len(files)
            for image_id in ids:
                wh, found, difficult = parse_voc_xml(root / "Annotations" / f"{image_id}.xml")
                if c.use_difficult:
                    difficult = np.zeros_like(difficult)
                kept = found[~difficult]
                files.append(root / "JPEGImages" / f"{image_id}.jpg")
                rows.append(scale_boxes(kept, wh, size))
                own_rows.append(found)
                own_hw.append((wh[1], wh[0]))
                ignore.append(difficult)
                # an image whose objects are all difficult still gets a label (from its difficult boxes)
                labels.append(largest_box_label(kept if len(kept) else found))
            splits[split] = np.arange(start, len(files))
        boxes = object_array(rows)
        label = np.array(labels, dtype=np.int64)
        self._set_contents(
            files, splits=splits, annotations={"label": label, "boxes": boxes,
                                               "coarse_label": group_labels(label, VOC_COARSE)},
            class_names=list(VOC_CLASSES), coarse_names=list(VOC_GROUPS), mean=IMAGENET_MEAN, std=IMAGENET_STD,
            license="images under Flickr terms; research use",
            citation="M. Everingham, L. Van Gool, C. K. I. Williams, J. Winn, A. Zisserman. The PASCAL "
                     "Visual Object Classes (VOC) challenge. IJCV 88(2), 2010.")
        self._set_own_targets(own_rows, sizes=own_hw, ignore=ignore)
