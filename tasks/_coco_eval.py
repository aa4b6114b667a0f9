"""COCO average precision of boxes and masks, on faster-coco-eval (the numbers of pycocotools).

:func:`coco_box_ap` and :func:`coco_segm_ap` run the COCO evaluation of Lin et
al. (ECCV 2014; the ``cocoapi`` ``COCOeval``): per category and IoU threshold
``t ∈ {0.50, 0.55, …, 0.95}``, detections are matched greedily by descending
score to the unmatched ground truth of highest IoU ≥ t; precision is made
monotone (``p(r) = max_{r' ≥ r} p(r')``) and sampled at the 101 recall points
``0, 0.01, …, 1``; AP is the mean over those points, categories and
thresholds. ``AP50`` / ``AP75`` fix t; ``APs`` / ``APm`` / ``APl`` keep only
ground truth (and unmatched detections) of area < 32², 32²–96², > 96² pixels.
At most 100 detections per image count (the highest scored).

The evaluation runs on ``faster_coco_eval.COCOeval_faster`` (its C++
matching and accumulation give pycocotools' numbers, ``tests/test_task_detection.py``
checks it against ``pycocotools.cocoeval.COCOeval`` when installed). Where
COCOeval reports −1 (no ground truth in an area range, or no category with
ground truth), the value is ``None`` and ``reasons`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: The summary keys, in COCOeval's ``stats`` order (its first six entries).
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_AREA_OF = {"APs": "area < 32² px", "APm": "32² ≤ area < 96² px", "APl": "area ≥ 96² px"}


class CocoFormatError(ValueError):
    """Ground truth or detections that COCO evaluation cannot take; the message says which entry."""


def coco_box_ap(gt: dict, detections: Sequence[dict]) -> dict[str, Any]:
    """COCO box AP of ``detections`` against the ground truth ``gt``.

    ``gt``: a COCO detection dict (``images`` with ``id``, ``width``, ``height``;
    ``annotations`` with ``id`` (≥ 1), ``image_id``, ``category_id``, ``bbox``
    ``[x, y, w, h]``, ``area``, optional ``iscrowd``; ``categories`` with ``id``).
    ``detections``: COCO result dicts ``{image_id, category_id, bbox [x, y, w, h], score}``.

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` as floats in [0, 1]
    (``None`` where COCOeval gives −1), plus ``reasons``: key → why it is ``None``.
    Neither argument is modified.
    """
    return _evaluate(gt, detections, "bbox")


def coco_segm_ap(gt: dict, detections: Sequence[dict]) -> dict[str, Any]:
    """COCO mask AP: as :func:`coco_box_ap` with IoU between masks.

    Ground-truth annotations need ``segmentation`` (polygons or RLE) and
    ``area`` (the mask area, as COCO's files have it); detections need
    ``segmentation`` as an RLE dict ``{"size": [h, w], "counts": …}`` (from
    ``faster_coco_eval.core.mask.encode`` or ``pycocotools.mask.encode``). A
    detection's ``bbox`` is dropped before evaluation, so its area is the mask's
    (as Detectron2's COCO evaluator does).
    """
    return _evaluate(gt, detections, "segm")


def _evaluate(gt: dict, detections: Sequence[dict], iou_type: str) -> dict[str, Any]:
    from faster_coco_eval import COCO, COCOeval_faster

    images, categories = check_ground_truth(gt, iou_type)
    dets = check_detections(detections, images, categories, iou_type)
    if iou_type == "segm":
        for d in dets:
            d.pop("bbox", None)
    coco_gt = COCO(_copy_ground_truth(gt), print_function=_quiet)
    coco_dt = coco_gt.loadRes(dets)  # loadRes adds ids and areas to the (copied) detections
    ev = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=_quiet)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return summary(ev.stats[:6], gt)


def summary(stats: Sequence[float], gt: dict) -> dict[str, Any]:
    """COCOeval's first six ``stats`` as :data:`AP_KEYS` → float, −1 → ``None`` with a reason."""
    out: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for key, value in zip(AP_KEYS, stats):
        if value < 0:
            out[key] = None
            reasons[key] = (f"no ground-truth object with {_AREA_OF[key]}" if key in _AREA_OF
                            else "no ground-truth object in any category")
        else:
            out[key] = float(value)
    if not any(not a.get("iscrowd", 0) for a in gt.get("annotations", [])):
        reasons = {k: "the ground truth has no (non-crowd) object" for k in reasons}
    out["reasons"] = reasons
    return out


def _quiet(*_: Any) -> None:
    pass


# -- input checks ---------------------------------------------------------------------------------------------
def check_ground_truth(gt: Any, iou_type: str = "bbox") -> tuple[dict[int, tuple[int, int]], set[int]]:
    """Check a COCO ground-truth dict; return image id → (height, width) and the category ids."""
    if not isinstance(gt, dict) or not all(k in gt for k in ("images", "annotations", "categories")):
        raise CocoFormatError("gt must be a COCO dict with 'images', 'annotations' and 'categories' lists "
                              f"(got {type(gt).__name__} with keys {sorted(gt) if isinstance(gt, dict) else '-'}); "
                              "a dataset's to_coco() gives one")
    images: dict[int, tuple[int, int]] = {}
    for im in gt["images"]:
        if not all(k in im for k in ("id", "width", "height")):
            raise CocoFormatError(f"gt image {im} lacks 'id', 'width' or 'height'")
        if int(im["id"]) in images:
            raise CocoFormatError(f"gt image id {im['id']} appears twice")
        images[int(im["id"])] = (int(im["height"]), int(im["width"]))
    categories = {int(c["id"]) for c in gt["categories"]}
    if not categories:
        raise CocoFormatError("gt has no categories")
    seen: set[int] = set()
    for a in gt["annotations"]:
        where = f"gt annotation {a.get('id')}"
        missing = [k for k in ("id", "image_id", "category_id", "bbox", "area") if k not in a]
        if missing:
            raise CocoFormatError(f"{where} lacks {missing}")
        if int(a["id"]) < 1 or int(a["id"]) in seen:
            raise CocoFormatError(f"{where}: annotation ids must be unique and >= 1 (COCOeval reads id 0 "
                                  "as 'unmatched')")
        seen.add(int(a["id"]))
        if int(a["image_id"]) not in images:
            raise CocoFormatError(f"{where}: image_id {a['image_id']} is not among gt['images']")
        if int(a["category_id"]) not in categories:
            raise CocoFormatError(f"{where}: category_id {a['category_id']} is not among gt['categories'] "
                                  f"{sorted(categories)}")
        _check_box(a["bbox"], where)
        if iou_type == "segm" and "segmentation" not in a:
            raise CocoFormatError(f"{where} has no 'segmentation' (mask AP needs polygons or RLE)")
    return images, categories


def check_detections(detections: Any, images: dict[int, tuple[int, int]], categories: set[int],
                     iou_type: str = "bbox") -> list[dict]:
    """Check COCO result dicts against the ground truth's images and categories; return copies."""
    if isinstance(detections, dict) or not isinstance(detections, Sequence):
        raise CocoFormatError(f"detections must be a list of COCO result dicts, got {type(detections).__name__}")
    out = []
    for n, d in enumerate(detections):
        where = f"detection {n}"
        if not isinstance(d, dict):
            raise CocoFormatError(f"{where} is a {type(d).__name__}, not a dict")
        need = ("image_id", "category_id", "score", "bbox" if iou_type == "bbox" else "segmentation")
        missing = [k for k in need if k not in d]
        if missing:
            raise CocoFormatError(f"{where} lacks {missing} (a {iou_type} result has {list(need)})")
        if int(d["image_id"]) not in images:
            raise CocoFormatError(f"{where}: image_id {d['image_id']} is not among the ground truth's images")
        if int(d["category_id"]) not in categories:
            raise CocoFormatError(f"{where}: category_id {d['category_id']} is not among the ground truth's "
                                  f"categories {sorted(categories)}")
        score = float(d["score"])
        if not math.isfinite(score):
            raise CocoFormatError(f"{where}: score is {score}; scores must be finite")
        if "bbox" in d and iou_type == "bbox":
            _check_box(d["bbox"], where)
        if iou_type == "segm":
            _check_rle(d["segmentation"], images[int(d["image_id"])], where)
        # a fresh dict per detection: COCO's loadRes writes id, area and iscrowd into them
        copied = {"image_id": int(d["image_id"]), "category_id": int(d["category_id"]), "score": score}
        if "bbox" in d:
            copied["bbox"] = [float(v) for v in d["bbox"]]
        if "segmentation" in d:
            copied["segmentation"] = dict(d["segmentation"]) if isinstance(d["segmentation"], dict) \
                else d["segmentation"]
        out.append(copied)
    return out


def _copy_ground_truth(gt: dict) -> dict:
    """A copy of the dict and of every image / annotation / category dict (COCO writes into them;
    copying them, not their contents, is what keeps the caller's dict unchanged, 10× faster than deepcopy)."""
    return {**gt, "images": [dict(im) for im in gt["images"]],
            "annotations": [dict(a, bbox=list(a["bbox"])) for a in gt["annotations"]],
            "categories": [dict(c) for c in gt["categories"]]}


def _check_box(bbox: Any, where: str) -> None:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise CocoFormatError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise CocoFormatError(f"{where}: bbox {bbox} is not finite")
    if w <= 0 or h <= 0:
        raise CocoFormatError(f"{where}: bbox {bbox} has width or height <= 0; COCO boxes are [x, y, w, h] "
                              "with w, h > 0 (convert x1, y1, x2, y2 with w = x2 - x1, h = y2 - y1)")


def _check_rle(segm: Any, hw: tuple[int, int], where: str) -> None:
    if not isinstance(segm, dict) or "size" not in segm or "counts" not in segm:
        raise CocoFormatError(f"{where}: segmentation must be an RLE dict {{'size': [h, w], 'counts': ...}} "
                              "(encode a binary mask with faster_coco_eval.core.mask.encode)")
    if tuple(int(v) for v in segm["size"]) != tuple(hw):
        raise CocoFormatError(f"{where}: RLE size {list(segm['size'])} differs from its image's (h, w) {list(hw)}")
