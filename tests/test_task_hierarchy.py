"""hierarchy: CPCC vs scipy.stats.pearsonr, depth Spearman vs scipy.stats.spearmanr, mistake severity by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from harness.errors import Incompatible
from harness.task import Embedded, EvalContext
from harness.tasks.hierarchy import (Hierarchy, MistakeSeverity, cpcc, fine_to_coarse, pearson, spearman,
                                     tree_distance)

from tests.test_task_fixtures import ArrayDataset, FakeMethod, euclidean, poincare


def test_pearson_and_spearman_match_scipy() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y2 = x + 0.5 * y
    assert pearson(x, y2) == pytest.approx(pearsonr(x, y2)[0], abs=1e-12)
    ties_x, ties_y = rng.integers(0, 4, 60), rng.integers(0, 5, 60) + rng.integers(0, 4, 60)
    assert spearman(ties_x, ties_y) == pytest.approx(spearmanr(ties_x, ties_y)[0], abs=1e-12)
    with pytest.raises(ValueError, match="constant"):
        pearson([1, 1, 1], [1, 2, 3])


def test_tree_distance_and_tree_check() -> None:
    parent = fine_to_coarse(np.array([0, 1, 2, 3, 3]), np.array([0, 0, 1, 1, 1]))
    assert parent == {0: 0, 1: 0, 2: 1, 3: 1}
    assert tree_distance([0, 0, 0, 2], [0, 1, 2, 3], parent).tolist() == [0, 2, 4, 2]
    with pytest.raises(ValueError, match="do not form a tree"):
        fine_to_coarse(np.array([0, 0]), np.array([0, 1]))


def test_cpcc_hand_made() -> None:
    # fine classes 0, 1 under coarse 0 and 2, 3 under coarse 1, prototypes at 0, 1, 10, 11 on a line
    pos = np.array([0.0, 1.0, 10.0, 11.0])
    parent = {0: 0, 1: 0, 2: 1, 3: 1}
    d = np.abs(pos[:, None] - pos[None])
    pairs_d = [1, 10, 11, 9, 10, 1]  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    pairs_t = [2, 4, 4, 4, 4, 2]
    assert cpcc(d, np.arange(4), parent) == pytest.approx(pearsonr(pairs_d, pairs_t)[0], abs=1e-12)


def test_mistake_severity_by_hand() -> None:
    meter = MistakeSeverity({0: 0, 1: 0, 2: 1, 3: 1})
    meter.update([0, 1, 2, 3], [0, 0, 0, 3])  # one correct, one same-coarse (2), one cross-coarse (4), correct
    meter.update(np.array([3]), np.array([2]))  # same coarse (2)
    assert meter.compute() == (pytest.approx(8 / 3), 3)
    assert np.isnan(MistakeSeverity({0: 0}).compute()[0])


def toy(geometry: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    fine = np.repeat(np.arange(6), 20)
    coarse = fine // 3
    centres = np.array([[1, 0.1], [1, -0.1], [1, 0.3], [-1, 0.1], [-1, -0.1], [-1, 0.3]]) * 0.4
    x = centres[fine] + 0.12 * rng.normal(size=(len(fine), 2))
    if geometry == "poincare":
        x = x / (1 + np.linalg.norm(x, axis=1, keepdims=True))
    split = {"train": np.arange(0, 120, 2), "test": np.arange(1, 120, 2)}
    return ArrayDataset({"label": fine, "coarse_label": coarse}, split), torch.tensor(x)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_hierarchy_task_against_scipy(geometry, tmp_path) -> None:
    ds, emb = toy(geometry)
    geo = euclidean() if geometry == "euclidean" else poincare()
    task = Hierarchy()
    ctx = EvalContext(dataset=ds, protocol=task.protocol(ds), method=FakeMethod(geo),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0,
                      device=torch.device("cpu"), artifacts_dir=tmp_path)
    res = task.evaluate(ctx)
    test = ds.splits["test"]
    fine, coarse, e = ds.annotations["label"][test], ds.annotations["coarse_label"][test], emb[test]
    # independent recomputation: prototypes per class, scipy correlations
    protos = torch.stack([geo.midpoint(e[fine == k], dim=0) for k in range(6)])
    d = geo.pairwise_dist(protos).numpy()
    iu = np.triu_indices(6, 1)
    tree = np.where(iu[0] // 3 == iu[1] // 3, 2, 4)
    assert res["cpcc"].value == pytest.approx(pearsonr(d[iu], tree)[0], abs=1e-9)
    c_protos = torch.stack([geo.midpoint(e[coarse == k], dim=0) for k in range(2)])
    norms = np.concatenate([geo.dist0(p).numpy() for p in (c_protos, protos, e)])
    depth = np.r_[[1, 1], [2] * 6, [3] * len(e)]
    assert res["depth_spearman"].value == pytest.approx(spearmanr(norms, depth)[0], abs=1e-9)
    train = ds.splits["train"]
    tr_protos = torch.stack([geo.midpoint(emb[train][ds.annotations["label"][train] == k], dim=0) for k in range(6)])
    pred = geo.pairwise_dist(e, tr_protos).argmin(1).numpy()
    wrong = pred != fine
    assert wrong.sum() > 0
    sev = np.where(pred[wrong] // 3 == fine[wrong] // 3, 2, 4).mean()
    assert res["mistake_severity"].value == pytest.approx(sev)
    assert res["mistake_severity"].n == wrong.sum() and res["mistake_severity"].higher_is_better is False
    assert (tmp_path / "hierarchy_dist0.png").exists()


def test_hierarchy_incompatible() -> None:
    fine = np.repeat(np.arange(4), 5)
    with pytest.raises(Incompatible, match="coarse_label"):
        Hierarchy().protocol(ArrayDataset({"label": fine}, {"train": np.arange(20), "test": np.arange(20)}))
    one = ArrayDataset({"label": fine, "coarse_label": np.zeros(20, int)},
                       {"train": np.arange(20), "test": np.arange(20)})
    with pytest.raises(Incompatible, match="single coarse class"):
        Hierarchy().protocol(one)
