"""The label tree over the fine classes: parents, tree distances, chance mistake severity.

By default the tree is root → coarse → fine, and the tree distance between fine
classes, in edges, is 0 (same class), 2 (siblings: same coarse class) or 4
(cousins). A dataset with a deeper tree gives each image its ``lineage``: the
ids of its ancestors from the top level down, the class itself last (shape
``(n, L)``); the distance is then ``2 · (L − length of the common prefix)``
(0, 2, …, 2L). Used by ``hierarchy`` (CPCC, mistake severity) and
``fine_from_coarse`` (sibling-only episodes).
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


class Tree:
    """A rooted label tree of one depth ``L`` over the fine classes, from each class's lineage."""

    def __init__(self, lineage: dict[int, tuple[int, ...]]) -> None:
        depths = {len(v) for v in lineage.values()}
        if len(depths) != 1:
            raise ValueError(f"every class's lineage must have the same length, got lengths {sorted(depths)}")
        self.depth = depths.pop()
        self.classes = np.array(sorted(lineage), dtype=np.int64)
        self._paths = np.array([lineage[int(c)] for c in self.classes], dtype=np.int64).reshape(len(self.classes), -1)

    @classmethod
    def from_parent(cls, parent: dict[int, int]) -> Tree:
        return cls({f: (p, f) for f, p in parent.items()})

    @classmethod
    def from_annotations(cls, annotations: dict[str, np.ndarray]) -> Tree:
        """The tree of a dataset: its ``lineage`` annotation, else root → ``coarse_label`` → ``label``.
        An error if a class has two lineages (the labels do not form a tree)."""
        if "lineage" in annotations:
            rows = np.unique(np.asarray(annotations["lineage"], dtype=np.int64), axis=0)
            if len(np.unique(rows[:, -1])) != len(rows):
                raise ValueError("a class has two different lineages: the labels do not form a tree")
            return cls({int(r[-1]): tuple(int(v) for v in r) for r in rows})
        return cls.from_parent(fine_to_coarse(annotations["label"], annotations["coarse_label"]))

    def paths(self, classes: Any) -> np.ndarray:
        classes = np.asarray(classes, dtype=np.int64)
        rows = np.searchsorted(self.classes, classes)
        bad = (rows >= len(self.classes)) | (self.classes[np.minimum(rows, len(self.classes) - 1)] != classes)
        if bad.any():
            raise ValueError(f"classes {sorted(set(classes[bad].tolist()))[:10]} are not in the tree")
        return self._paths[rows]

    def top_level(self) -> np.ndarray:
        """The distinct ancestors at the top level (the coarse classes of a two-level tree)."""
        return np.unique(self._paths[:, 0])

    def distance(self, a: Any, b: Any) -> np.ndarray:
        """Edges between classes ``a`` and ``b`` (broadcast): ``2 · (L − common prefix length)``."""
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
        if a.size == 0:
            return np.zeros(a.shape, dtype=np.int64)
        pa, pb = self.paths(a.ravel()), self.paths(b.ravel())
        prefix = np.cumprod(pa == pb, axis=1).sum(1)
        return (2 * (self.depth - prefix)).reshape(a.shape)


def as_tree(tree: Tree | dict[int, int]) -> Tree:
    return tree if isinstance(tree, Tree) else Tree.from_parent(tree)


def tree_distance(a: np.ndarray, b: np.ndarray, tree: Tree | dict[int, int]) -> np.ndarray:
    """Edges between fine classes (root → coarse → fine: 0 same, 2 same parent, 4 otherwise; deeper trees
    by their lineage)."""
    return as_tree(tree).distance(a, b)


def chance_severity(true_classes: Any, candidates: Any, tree: Tree | dict[int, int]) -> float:
    """Mistake severity of a predictor that picks uniformly among ``candidates`` (closed form).

    For an image of class ``y``, a uniformly random wrong prediction is one of the
    ``K_y = |candidates \\ {y}|`` other candidates, so its expected severity is the mean tree
    distance from ``y`` to them (two levels: ``(2 s_y + 4 (K_y − s_y)) / K_y`` with ``s_y``
    siblings). Over the images, a mistake happens with
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
    tree = as_tree(tree)
    classes, counts = np.unique(y, return_counts=True)
    dist = tree.distance(classes[:, None], cand[None, :])  # (classes, candidates)
    others = classes[:, None] != cand[None, :]
    k_y = others.sum(1)
    sev = (dist * others).sum(1) / k_y  # mean distance to a uniformly random wrong candidate
    weight = counts * k_y / len(cand)
    return float((weight * sev).sum() / weight.sum())
