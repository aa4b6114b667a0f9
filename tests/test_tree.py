"""Deep label trees: tree distances and chance severity against brute force; the generated synthetic_tree."""

import itertools

import numpy as np
import pytest

from harness.registry import create
from harness.tasks._tree import Tree, chance_severity, fine_to_coarse, tree_distance


def _brute_distance(path_a, path_b):
    prefix = 0
    for x, y in zip(path_a, path_b):
        if x != y:
            break
        prefix += 1
    return 2 * (len(path_a) - prefix)


def test_deep_tree_distances_match_the_edge_count():
    # depth 3, branching 2: leaf id = 4a + 2b + c, lineage (a, 2a + b, leaf)
    lineage = {leaf: (leaf // 4, leaf // 2, leaf) for leaf in range(8)}
    tree = Tree(lineage)
    for a, b in itertools.product(range(8), repeat=2):
        assert tree.distance(a, b) == _brute_distance(lineage[a], lineage[b])
    assert tree.distance(0, 1) == 2 and tree.distance(0, 2) == 4 and tree.distance(0, 7) == 6
    assert tree.depth == 3 and list(tree.top_level()) == [0, 1]


def test_a_two_level_tree_is_the_coarse_fine_tree():
    fine, coarse = np.arange(6), np.array([0, 0, 0, 1, 1, 1])
    parent = fine_to_coarse(fine, coarse)
    tree = Tree.from_annotations({"label": fine, "coarse_label": coarse})
    a, b = np.meshgrid(fine, fine)
    expected = np.where(a == b, 0, np.where(coarse[a] == coarse[b], 2, 4))
    assert np.array_equal(tree.distance(a, b), expected)
    assert np.array_equal(tree_distance(a, b, parent), expected)


def test_chance_severity_of_a_deep_tree_is_the_mean_distance_to_the_other_candidates():
    lineage = {leaf: (leaf // 4, leaf // 2, leaf) for leaf in range(8)}
    tree = Tree(lineage)
    y = np.array([0, 0, 3, 5, 7, 7, 7])
    cand = np.arange(8)
    brute = np.mean([np.mean([tree.distance(t, c) for c in cand if c != t]) for t in y])
    assert chance_severity(y, cand, tree) == pytest.approx(brute)
    # simulated: a uniformly random wrong prediction
    rng = np.random.default_rng(0)
    sims = [tree.distance(t, rng.choice([c for c in cand if c != t])) for t in np.repeat(y, 4000)]
    assert np.mean(sims) == pytest.approx(brute, abs=0.03)


def test_synthetic_tree_lineage_splits_and_similarity():
    ds = create("dataset", "synthetic_tree", depth=3, branching=3, images_per_class=40, image_size=16)
    lin, label = ds.annotations["lineage"], ds.annotations["label"]
    assert lin.shape == (len(ds), 3) and np.array_equal(lin[:, -1], label)
    assert np.array_equal(ds.annotations["coarse_label"], label // 9)
    tree = Tree.from_annotations(ds.annotations)
    assert tree.depth == 3 and len(tree.classes) == 27
    novel = np.unique(label[ds.splits["novel"]])
    assert np.array_equal(novel, np.arange(2, 27, 3))  # the last leaf under each parent
    assert not set(ds.splits["train"]) & set(ds.splits["novel"]) and not set(ds.splits["test"]) & set(ds.splits["novel"])
    # leaves with a deeper common ancestor look more alike: mean image distance grows with tree distance
    imgs = ds.load_images(np.arange(len(ds))).float().flatten(1)
    means = torch_class_means(imgs, label, 27)
    d_img = np.linalg.norm(means[:, None] - means[None], axis=-1)
    a, b = np.triu_indices(27, 1)
    d_tree = tree.distance(a, b)
    by_level = [d_img[a, b][d_tree == t].mean() for t in (2, 4, 6)]
    assert by_level[0] < by_level[1] < by_level[2]


def torch_class_means(x, labels, k):
    x = x.numpy()
    return np.stack([x[labels == c].mean(0) for c in range(k)])
