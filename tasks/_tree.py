"""The two-level label tree root → coarse → fine: parents, tree distances, chance mistake severity.

Tree distance between fine classes, in edges: 0 (same class), 2 (siblings:
same coarse class), 4 (cousins). Used by ``hierarchy`` (CPCC, mistake
severity) and ``fine_from_coarse`` (sibling-only episodes).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fine_to_coarse(fine: np.ndarray, coarse: np.ndarray) -> dict[int, int]:
    """The parent of each fine class; an error if a fine class has two parents (not a tree)."""
    pairs = np.unique(np.stack([np.asarray(fine), np.asarray(coarse)], 1), axis=0)
    parents: dict[int, int] = {}
    for f, c in pairs:
        if int(f) in parents:
            raise ValueError(f"fine class {int(f)} has coarse labels {parents[int(f)]} and {int(c)}: "
                             "the labels do not form a tree")
        parents[int(f)] = int(c)
    return parents


def parents_of(classes: Any, parent: dict[int, int]) -> np.ndarray:
    """The coarse class of each fine class id in ``classes`` (int64 array of the same shape)."""
    classes = np.asarray(classes)
    if classes.size == 0:
        return classes.astype(np.int64)
    missing = sorted({int(c) for c in np.unique(classes)} - set(parent))
    if missing:
        raise ValueError(f"fine classes {missing[:10]} have no coarse class in the tree")
    return np.vectorize(parent.__getitem__, otypes=[np.int64])(classes)


def tree_distance(a: np.ndarray, b: np.ndarray, parent: dict[int, int]) -> np.ndarray:
    """Edges between fine classes in root → coarse → fine: 0 same, 2 same parent, 4 otherwise."""
    a, b = np.asarray(a), np.asarray(b)
    return np.where(a == b, 0, np.where(parents_of(a, parent) == parents_of(b, parent), 2, 4))


def chance_severity(true_classes: Any, candidates: Any, parent: dict[int, int]) -> float:
    """Mistake severity of a predictor that picks uniformly among ``candidates`` (closed form).

    For an image of class ``y``, a uniformly random wrong prediction is one of the
    ``K_y = |candidates \\ {y}|`` other candidates; ``s_y`` of them are siblings of ``y``
    (distance 2), the rest cousins (distance 4), so its expected severity is
    ``(2 s_y + 4 (K_y − s_y)) / K_y``. Over the images, a mistake happens with
    probability ``K_y / K`` (``K = |candidates|``), so the expected severity of the
    observed mistakes is the ratio ``Σ_i (K_{y_i}/K) sev_{y_i} / Σ_i (K_{y_i}/K)``:
    with every true class among the candidates, simply the mean of ``sev_y`` over the
    images. This is the value a classifier at chance gets (Bertinetto et al. CVPR 2020
    read severity beside accuracy for this reason).
    """
    y = np.asarray(true_classes)
    cand = np.unique(np.asarray(candidates))
    if y.size == 0 or cand.size < 2:
        raise ValueError(f"chance severity needs images and at least 2 candidate classes, got {y.size} "
                         f"images and {cand.size} candidates")
    classes, counts = np.unique(y, return_counts=True)
    cand_parent = parents_of(cand, parent)
    siblings_per_coarse = {int(p): int(n) for p, n in zip(*np.unique(cand_parent, return_counts=True))}
    k_total = len(cand)
    num = den = 0.0
    for c, n in zip(classes, counts):
        is_candidate = bool(np.isin(c, cand))
        k_y = k_total - is_candidate
        s_y = siblings_per_coarse.get(int(parent[int(c)]), 0) - is_candidate
        sev = (2 * s_y + 4 * (k_y - s_y)) / k_y
        weight = n * k_y / k_total
        num += weight * sev
        den += weight
    return num / den
