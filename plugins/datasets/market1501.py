"""Market-1501 person re-identification (Zheng et al., ICCV 2015) from its published folders::

    bounding_box_train/0002_c1s1_000451_03.jpg   (pid 0002, camera 1, sequence 1, frame 451, box 3)
    bounding_box_test/...                         gallery (pid 0000 = distractor, -1 = junk)
    query/...

Junk images (pid −1) are skipped and distractors (pid 0) are kept in the gallery,
as torchreid does (``torchreid.data.datasets.image.market1501``). ``pid`` is the
identity as published, ``camid`` the camera − 1 (0..5). ``label`` numbers the
identities densely: the training identities 0..750 in pid order, then the test
identities (and the distractor pid 0). Splits: ``train``; ``query`` and ``gallery``
(``is_query`` marks the query images); ``novel`` = query ∪ gallery without the
distractors (the test identities, class-disjoint from ``train``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.plugins.datasets._folder import IMAGENET_MEAN, IMAGENET_STD, FileImageDataset, find_root

_NAME = re.compile(r"([-\d]+)_c(\d)")


def parse_market_name(filename: str) -> tuple[int, int]:
    """``"0002_c1s1_000451_03.jpg"`` → ``(2, 0)``: (pid, 0-based camera)."""
    m = _NAME.search(filename)
    if m is None:
        raise ValueError(f"'{filename}' is not a Market-1501 file name (expected e.g. 0002_c1s1_000451_03.jpg)")
    return int(m.group(1)), int(m.group(2)) - 1


def dense_labels(pid: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Number the pids densely: those at indices ``first`` get 0.. in pid order, then the others in pid order."""
    head = np.unique(pid[first])
    order = np.concatenate([head, np.setdiff1d(np.unique(pid), head)])
    sorter = np.argsort(order)
    return sorter[np.searchsorted(order, pid, sorter=sorter)].astype(np.int64)


class Market1501(FileImageDataset):
    """Market-1501: 32,668 boxes of 1,501 identities from 6 cameras (+ distractors)."""

    VERSION = "1"
    FOLDERS = ["bounding_box_train", "bounding_box_test", "query"]

    @dataclass
    class Config:
        name: str = "market1501"
        root: str = "~/data/Market-1501-v15.09.15"
        image_size: tuple[int, int] = (256, 128)  # (H, W); the published boxes are 128×64
        preload: bool = False
        workers: int = 4

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        root = find_root(
            self.cfg, self.FOLDERS, nested="Market-1501-v15.09.15", marker="query",
            source="the Market-1501 authors (Market-1501-v15.09.15.zip, see https://zheng-lab-anu.github.io/)")
        paths: list[Path] = []
        pid, camid, part = [], [], []
        for k, folder in enumerate(self.FOLDERS):
            for path in sorted((root / folder).glob("*.jpg")):
                p, cam = parse_market_name(path.name)
                if p == -1:
                    continue  # junk
                paths.append(path)
                pid.append(p)
                camid.append(cam)
                part.append(k)
        pid_arr, part_arr = np.array(pid, dtype=np.int64), np.array(part)
        train = np.flatnonzero(part_arr == 0)
        is_query = part_arr == 2
        gallery = np.flatnonzero(part_arr == 1)
        query = np.flatnonzero(is_query)
        test = np.concatenate([query, gallery])
        self._set_contents(
            paths, splits={"train": train, "query": query, "gallery": gallery,
                           "novel": np.sort(test[pid_arr[test] != 0])},
            annotations={"label": dense_labels(pid_arr, train), "pid": pid_arr,
                         "camid": np.array(camid, dtype=np.int64), "is_query": is_query},
            mean=IMAGENET_MEAN, std=IMAGENET_STD, license="research use",
            citation="L. Zheng, L. Shen, L. Tian, S. Wang, J. Wang, Q. Tian. Scalable person "
                     "re-identification: a benchmark. ICCV 2015.")

