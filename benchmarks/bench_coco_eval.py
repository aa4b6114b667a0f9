"""coco_box_ap (faster-coco-eval) vs pycocotools' COCOeval on a COCO-val-sized synthetic case.

Ground truth: ``--images`` images of random sizes with 0-14 boxes each of 80
categories (about COCO val2017's 7.3 objects per image at the default); detections:
jittered copies of the boxes, duplicates, wrong classes and background boxes
with random scores, ``--dets`` per image at most (COCO's limit is 100). Times
the whole evaluation (index, evaluate, accumulate, summarize) of both, best of
``--repeat`` for ours, prints the ratio and the largest difference of the six AP numbers.

    python benchmarks/bench_coco_eval.py [--images 5000] [--dets 100] [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.tasks.detection import coco_box_ap  # noqa: E402


def synthetic_case(n_images: int, max_dets: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        h, w = int(rng.integers(300, 640)), int(rng.integers(300, 640))
        images.append({"id": i, "width": w, "height": h})
        mine = []
        for _ in range(int(rng.integers(0, 15))):
            bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
            x, y, c = rng.uniform(0, w - bw), rng.uniform(0, h - bh), int(rng.integers(1, 81))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": int(rng.random() < 0.01)})
            for _ in range(int(rng.integers(1, 4))):
                j = rng.normal(0, 0.15, 4) * [bw, bh, bw, bh]
                mine.append({"image_id": i, "category_id": c if rng.random() < 0.8 else int(rng.integers(1, 81)),
                             "bbox": [x + j[0], y + j[1], max(bw + j[2], 1.0), max(bh + j[3], 1.0)],
                             "score": float(rng.random())})
        while len(mine) < max_dets and rng.random() < 0.97:
            bw, bh = rng.uniform(4, w / 3), rng.uniform(4, h / 3)
            mine.append({"image_id": i, "category_id": int(rng.integers(1, 81)),
                         "bbox": [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], "score": float(rng.random())})
        dets += mine[:max_dets]
    gt = {"images": images, "annotations": anns, "categories": [{"id": k, "name": f"c{k}"} for k in range(1, 81)]}
    return gt, dets


def pycocotools_ap(gt: dict, dets: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:6])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    gt, dets = synthetic_case(args.images, args.dets)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} objects, {len(dets)} detections")
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = coco_box_ap(gt, dets)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)
    t0 = time.perf_counter()
    ref = pycocotools_ap(gt, dets)
    t_ref = time.perf_counter() - t0
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    diff = max(abs(ours[k] - r) for k, r in zip(keys, ref))
    print(f"pycocotools {t_ref:.2f} s, ours (faster-coco-eval) {t_ours:.2f} s: {t_ref / t_ours:.1f}x; "
          f"AP {ours['AP']:.4f}, largest difference {diff:.1e}")
    if diff > 1e-12:
        raise SystemExit("results differ from pycocotools")


if __name__ == "__main__":
    main()
