"""Box conventions shared by the datasets that have boxes, and the COCO export.

A box row is ``x1, y1, x2, y2, class`` in pixels of the returned image, with
pixel *edges* as coordinates: a box covering pixel columns ``i..j`` has
``x1 = i`` and ``x2 = j + 1`` (so ``x2 − x1`` is the width in pixels, as COCO's
``[x, y, w, h]`` expects). ``class`` is the 0-based contiguous class id.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 5), dtype=np.float32)


def object_array(rows: Sequence[np.ndarray]) -> np.ndarray:
    """A 1-D object array whose entry i is the float32 (k_i, 5) box array of image i."""
    out = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        out[i] = np.asarray(r, dtype=np.float32).reshape(-1, 5)
    return out


def scale_boxes(boxes: np.ndarray, from_wh: tuple[float, float], to_hw: tuple[int, int]) -> np.ndarray:
    """Boxes of an image of width × height ``from_wh`` in the pixels of the image resized to ``to_hw``."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    sx, sy = to_hw[1] / float(from_wh[0]), to_hw[0] / float(from_wh[1])
    out[:, [0, 2]] *= sx
    out[:, [1, 3]] *= sy
    return out


def largest_box_label(boxes: np.ndarray) -> int:
    """The class of the largest-area box (first one on ties); −1 for an image without boxes."""
    if len(boxes) == 0:
        return -1
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(boxes[int(np.argmax(area)), 4])


def group_labels(label: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Each image's ``group_of[label]`` (its coarse class), −1 where ``label`` is −1 (no box)."""
    return np.where(label >= 0, group_of[np.maximum(label, 0)], -1)


def to_coco_dict(boxes: np.ndarray, *, image_size: tuple[int, int], class_names: Sequence[str],
                 indices: np.ndarray | None = None, supercategories: Sequence[str] | None = None,
                 file_name: str = "{:06d}.png") -> dict:
    """The COCO detection dict (``images``, ``annotations``, ``categories``) of ``boxes``.

    Image ids are the dataset indices + 1 and category ids the class ids + 1
    (COCO ids start at 1); ``bbox`` is ``[x, y, w, h]``, ``area`` the box area
    ``w · h`` (there are no masks), ``iscrowd`` 0. The dict loads with
    ``pycocotools.coco.COCO`` (assign it to ``coco.dataset`` and call ``createIndex()``).
    """
    h, w = image_size
    idx = np.arange(len(boxes)) if indices is None else np.asarray(indices, dtype=np.int64)
    images, annotations = [], []
    for i in idx:
        image_id = int(i) + 1
        images.append({"id": image_id, "file_name": file_name.format(int(i)), "width": int(w), "height": int(h)})
        for x1, y1, x2, y2, cls in np.asarray(boxes[i], dtype=np.float64).reshape(-1, 5):
            bw, bh = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                "bbox": [float(x1), float(y1), float(bw), float(bh)], "area": float(bw * bh),
                                "iscrowd": 0})
    sup = list(supercategories) if supercategories is not None else ["object"] * len(class_names)
    categories = [{"id": k + 1, "name": str(n), "supercategory": str(sup[k])} for k, n in enumerate(class_names)]
    return {"info": {"description": "exported by hyperbolic-harness"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}
