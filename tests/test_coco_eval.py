"""COCO box / mask AP: hand-computed cases, pycocotools identity, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from harness.tasks._coco_eval import CocoFormatError
from harness.tasks.detection import coco_box_ap, coco_segm_ap


def _gt(boxes_per_image, size=(100, 100), n_categories=2):
    """COCO gt from per-image lists of (x, y, w, h, category_id)."""
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": i, "width": size[1], "height": size[0]})
        for x, y, w, h, c in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": k, "name": f"c{k}"} for k in range(1, n_categories + 1)]}


def _det(image_id, bbox, score, category_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


def test_perfect_predictions_score_one():
    gt = _gt([[(10, 10, 20, 20, 1), (50, 50, 40, 40, 2)], [(0, 0, 99, 99, 1)]], size=(100, 100))
    dets = [_det(a["image_id"], a["bbox"], 0.9, a["category_id"]) for a in gt["annotations"]]
    res = coco_box_ap(gt, dets)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert res[key] == 1.0, key
    assert res["reasons"] == {}


def test_one_missed_object():
    # Two objects, one found exactly: precision 1 up to recall 0.5, then nothing. COCO samples the
    # interpolated precision at recall 0, 0.01, …, 1: 51 of the 101 points are 1, so AP = 51/101 at every IoU.
    gt = _gt([[(10, 10, 20, 20, 1), (50, 50, 20, 20, 1)]])
    res = coco_box_ap(gt, [_det(1, (10, 10, 20, 20), 0.9)])
    for key in ("AP", "AP50", "AP75", "APs"):
        assert res[key] == pytest.approx(51 / 101, abs=1e-12), key


def test_false_positive_at_a_higher_score():
    # Ranked: a false positive (0.9), then the true box (0.8): precision 0 then 1/2 at recall 1; its
    # monotone envelope is 1/2 at every recall point, so AP = 0.5 at every IoU threshold.
    gt = _gt([[(10, 10, 20, 20, 1)]])
    res = coco_box_ap(gt, [_det(1, (60, 60, 20, 20), 0.9), _det(1, (10, 10, 20, 20), 0.8)])
    for key in ("AP", "AP50", "AP75"):
        assert res[key] == pytest.approx(0.5, abs=1e-12), key


def test_box_at_iou_062_counts_at_ap50_not_ap75():
    # gt 10×10 at the origin, detection 10×6.2 inside it: IoU = 62/100 = 0.62, a match at the
    # thresholds 0.50, 0.55, 0.60 (3 of 10), a miss (and a false positive) above.
    gt = _gt([[(0, 0, 10, 10, 1)]])
    res = coco_box_ap(gt, [_det(1, (0, 0, 10, 6.2), 0.9)])
    assert res["AP50"] == 1.0
    assert res["AP75"] == 0.0
    assert res["AP"] == pytest.approx(3 / 10, abs=1e-12)


def test_area_ranges_and_missing_ones_are_none_with_a_reason():
    # a small (20², found) and a medium (50², missed) object, nothing large
    gt = _gt([[(0, 0, 20, 20, 1), (40, 40, 50, 50, 1)]])
    res = coco_box_ap(gt, [_det(1, (0, 0, 20, 20), 0.9)])
    assert res["APs"] == 1.0 and res["APm"] == 0.0
    assert res["APl"] is None and "96²" in res["reasons"]["APl"]


def test_no_detections_score_zero():
    gt = _gt([[(10, 10, 20, 20, 1)], [(0, 0, 50, 50, 2)]])
    res = coco_box_ap(gt, [])
    assert res["AP"] == res["AP50"] == res["AP75"] == res["APs"] == res["APm"] == 0.0


def test_inputs_are_not_modified():
    gt = _gt([[(10, 10, 20, 20, 1)]])
    dets = [_det(1, (10, 10, 20, 20), 0.9)]
    gt0, dets0 = copy.deepcopy(gt), copy.deepcopy(dets)
    coco_box_ap(gt, dets)
    assert gt == gt0 and dets == dets0
    gt, dets = _masks_case(2)
    gt0, dets0 = copy.deepcopy(gt), copy.deepcopy(dets)
    coco_segm_ap(gt, dets)
    coco_box_ap(gt, [{k: v for k, v in d.items() if k != "segmentation"} | {"bbox": [1, 1, 5, 5]} for d in dets])
    assert gt == gt0 and dets == dets0


@pytest.mark.parametrize("bad, match", [
    (_det(1, (10, 10, 0, 20), 0.5), "width or height <= 0"),
    (_det(1, (10, 10, 20, -3), 0.5), "width or height <= 0"),
    (_det(7, (10, 10, 20, 20), 0.5), "image_id 7 is not among"),
    (_det(1, (10, 10, 20, 20), 0.5, category_id=9), "category_id 9 is not among"),
    (_det(1, (10, 10, 20, 20), float("nan")), "scores must be finite"),
    ({"image_id": 1, "category_id": 1, "score": 0.5}, "lacks \\['bbox'\\]"),
    (_det(1, (10, 10, 20), 0.5), "4 numbers"),
])
def test_bad_detections_are_clear_errors(bad, match):
    gt = _gt([[(10, 10, 20, 20, 1)]])
    with pytest.raises(CocoFormatError, match=match):
        coco_box_ap(gt, [_det(1, (10, 10, 20, 20), 0.9), bad])


def test_bad_ground_truth_is_a_clear_error():
    with pytest.raises(CocoFormatError, match="'images', 'annotations' and 'categories'"):
        coco_box_ap({"images": []}, [])
    gt = _gt([[(10, 10, 20, 20, 1)]])
    gt["annotations"][0]["bbox"] = [10, 10, 0, 5]
    with pytest.raises(CocoFormatError, match="width or height <= 0"):
        coco_box_ap(gt, [])
    gt = _gt([[(10, 10, 20, 20, 1)]])
    gt["annotations"][0]["id"] = 0
    with pytest.raises(CocoFormatError, match="ids must be unique and >= 1"):
        coco_box_ap(gt, [])


def _random_case(seed: int):
    """Images of several sizes, 3 categories, objects of every area range, a crowd box; detections:
    jittered matches, duplicates, wrong classes and background boxes with random scores."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, 16):
        h, w = int(rng.integers(120, 400)), int(rng.integers(120, 400))
        images.append({"id": i, "width": w, "height": h})
        for _ in range(int(rng.integers(0, 6))):
            bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            c = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": int(rng.random() < 0.05)})
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, 0.15, 4) * [bw, bh, bw, bh]
                cc = c if rng.random() < 0.85 else int(rng.integers(1, 4))
                dets.append(_det(i, [x + j[0], y + j[1], max(bw + j[2], 1.0), max(bh + j[3], 1.0)],
                                 float(rng.random()), cc))
        for _ in range(int(rng.integers(0, 4))):
            bw, bh = rng.uniform(4, w / 3), rng.uniform(4, h / 3)
            dets.append(_det(i, [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], float(rng.random()),
                             int(rng.integers(1, 4))))
    gt = {"images": images, "annotations": anns, "categories": [{"id": k, "name": f"c{k}"} for k in (1, 2, 3)]}
    return gt, dets


def _pycocotools_stats(gt, dets, iou_type):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_ap_identical_to_pycocotools(seed):
    pytest.importorskip("pycocotools")
    gt, dets = _random_case(seed)
    ours = coco_box_ap(gt, dets)
    ref = _pycocotools_stats(gt, dets, "bbox")
    for key, r in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), ref):
        assert (ours[key] is None) == (r == -1), key
        if r != -1:
            assert ours[key] == pytest.approx(r, abs=1e-12), key
    assert 0.05 < ours["AP"] < 0.95  # a case with every kind of error, not a degenerate one


def _masks_case(seed):
    """Random disc / rectangle masks as ground truth (polygons for some) and noisy masks as detections."""
    from faster_coco_eval.core import mask as mask_utils

    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []

    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode("ascii")
        return r

    for i in range(1, 9):
        h, w = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        images.append({"id": i, "width": w, "height": h})
        yy, xx = np.mgrid[:h, :w]
        for _ in range(int(rng.integers(1, 4))):
            cx, cy, r = rng.uniform(15, w - 15), rng.uniform(15, h - 15), rng.uniform(4, 14)
            m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            ys, xs = np.nonzero(m)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            c = int(rng.integers(1, 3))
            if rng.random() < 0.3:  # a polygon (the rectangle), as COCO files mostly hold
                segm = [[float(x1), float(y1), float(x2), float(y1), float(x2), float(y2), float(x1), float(y2)]]
                area = float(mask_utils.area(mask_utils.frPyObjects(segm, h, w))[0])
            else:
                segm, area = rle(m), float(m.sum())
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "segmentation": segm,
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "area": area, "iscrowd": 0})
            for _ in range(int(rng.integers(0, 3))):
                dm = (xx - cx - rng.normal(0, 2)) ** 2 + (yy - cy - rng.normal(0, 2)) ** 2 < (r * rng.uniform(.7, 1.3)) ** 2
                dets.append({"image_id": i, "category_id": c if rng.random() < 0.8 else 3 - c,
                             "segmentation": rle(dm), "score": float(rng.random())})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    return gt, dets


def test_segm_ap_identical_to_pycocotools():
    pytest.importorskip("pycocotools")
    gt, dets = _masks_case(0)
    ours = coco_segm_ap(gt, dets)
    ref = _pycocotools_stats(gt, dets, "segm")
    for key, r in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), ref):
        assert (ours[key] is None) == (r == -1), key
        if r != -1:
            assert ours[key] == pytest.approx(r, abs=1e-12), key
    assert 0.05 < ours["AP"] < 0.95


def test_segm_perfect_masks_score_one_and_bad_rle_is_an_error():
    gt, _ = _masks_case(1)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentation": a["segmentation"]} for a in gt["annotations"] if isinstance(a["segmentation"], dict)]
    keep = {id(a) for a in gt["annotations"] if isinstance(a["segmentation"], dict)}
    gt["annotations"] = [a for a in gt["annotations"] if id(a) in keep]
    assert coco_segm_ap(gt, perfect)["AP"] == 1.0
    with pytest.raises(CocoFormatError, match="RLE dict"):
        coco_segm_ap(gt, [{**perfect[0], "segmentation": [[0, 0, 5, 0, 5, 5]]}])
    wrong = {**perfect[0], "segmentation": {**perfect[0]["segmentation"], "size": [3, 3]}}
    with pytest.raises(CocoFormatError, match="differs from its image"):
        coco_segm_ap(gt, [wrong])
