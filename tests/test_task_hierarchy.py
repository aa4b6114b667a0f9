"""hierarchy: CPCC vs scipy.stats.pearsonr, radius-angle Spearman vs scipy.stats.spearmanr, top-1 and
mistake severity by hand, chance severity by enumeration, null metrics where undefined."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from harness.errors import Incompatible
from harness.task import Embedded, EvalContext
from harness.tasks.hierarchy import (Hierarchy, MistakeSeverity, angle_to, chance_severity, cpcc, cpcc_or_reason,
                                     fine_to_coarse, pearson, spearman, tree_distance)

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


def test_cpcc_of_three_classes_is_defined_when_their_three_distances_differ() -> None:
    # 3 classes give 3 pairs: fewer than the 5 distinct values a measured side needs in general
    d = np.array([[0, 1, 3], [1, 0, 2.9], [3, 2.9, 0]])
    value, reason = cpcc_or_reason(d, np.arange(3), {0: 0, 1: 0, 2: 1})
    assert reason is None and value == pytest.approx(pearsonr([1, 3, 2.9], [2, 4, 4])[0], abs=1e-12)
    tied = np.array([[0, 1, 3], [1, 0, 3], [3, 3, 0]])  # two of the three distances coincide
    assert cpcc_or_reason(tied, np.arange(3), {0: 0, 1: 0, 2: 1})[0] is None
    # one coarse class: the reason names the constant tree distances, not the prototypes
    value, reason = cpcc_or_reason(d, np.arange(3), {0: 0, 1: 0, 2: 0})
    assert value is None and "tree distance" in reason and "constant" in reason


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


def context(ds, emb, geo, logits=None, tmp_path=None):
    return EvalContext(dataset=ds, protocol=Hierarchy().protocol(ds), method=FakeMethod(geo),
                       embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None if logits is None else logits[idx]),
                       seed=0, device=torch.device("cpu"), artifacts_dir=tmp_path)


def angles_np(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    cos = (x * p).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(p, axis=1))
    return np.arccos(np.clip(cos, -1, 1))


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_hierarchy_task_against_scipy(geometry, tmp_path) -> None:
    ds, emb = toy(geometry)
    geo = euclidean() if geometry == "euclidean" else poincare()
    task = Hierarchy()
    ctx = context(ds, emb, geo, tmp_path=tmp_path)
    res = task.evaluate(ctx)
    test = ds.splits["test"]
    fine, e = ds.annotations["label"][test], emb[test]
    # independent recomputation: prototypes per class, scipy correlations
    protos = torch.stack([geo.midpoint(e[fine == k], dim=0) for k in range(6)])
    d = geo.pairwise_dist(protos).numpy()
    iu = np.triu_indices(6, 1)
    tree = np.where(iu[0] // 3 == iu[1] // 3, 2, 4)
    assert res["cpcc"].value == pytest.approx(pearsonr(d[iu], tree)[0], abs=1e-9)
    train = ds.splits["train"]
    tr_protos = torch.stack([geo.midpoint(emb[train][ds.annotations["label"][train] == k], dim=0) for k in range(6)])
    # radius-angle Spearman: per class, scipy on (distance to the origin, arccos angle), plain mean
    radius, ang = geo.dist0(e).numpy(), angles_np(e.numpy(), tr_protos.numpy()[fine])
    per_class = [spearmanr(radius[fine == k], ang[fine == k])[0] for k in range(6)]
    m = res["dist0_angle_spearman"]
    assert m.value == pytest.approx(np.mean(per_class), abs=1e-9)
    assert m.ci95 == pytest.approx(1.96 * np.std(per_class, ddof=1) / np.sqrt(6), abs=1e-9) and m.n == 6
    # top-1 and mistake severity of the nearest train prototype (no logits)
    pred = geo.pairwise_dist(e, tr_protos).argmin(1).numpy()
    wrong = pred != fine
    assert wrong.sum() > 0
    assert res["top1"].value == pytest.approx((pred == fine).mean()) and res["top1"].n == len(fine)
    sev = np.where(pred[wrong] // 3 == fine[wrong] // 3, 2, 4).mean()
    assert res["mistake_severity"].value == pytest.approx(sev)
    assert res["mistake_severity"].n == wrong.sum() and res["mistake_severity"].higher_is_better is False
    assert "nearest class prototype" in ctx.details["top1/predictor"]
    # 6 classes in 2 coarse classes of 3: a random wrong prediction is a sibling 2 times in 5
    assert ctx.details["mistake_severity/chance"] == pytest.approx((2 * 2 + 4 * 3) / 5)
    assert ctx.details["top1/chance"] == pytest.approx(1 / 6)
    assert (tmp_path / "hierarchy_dist0.png").exists()


def test_top1_and_severity_follow_the_classifier() -> None:
    ds, emb = toy("euclidean")
    fine = ds.annotations["label"]
    # a classifier that predicts the sibling (f + 1 within the coarse class) for every odd image
    pred = np.where(np.arange(len(fine)) % 2 == 1, fine // 3 * 3 + (fine % 3 + 1) % 3, fine)
    pred[1::4] = (fine[1::4] + 3) % 6  # every other of those: a cousin instead
    logits = torch.nn.functional.one_hot(torch.as_tensor(pred), 6).float()
    ctx = context(ds, emb, euclidean(), logits=logits)
    res = Hierarchy().evaluate(ctx)
    test = ds.splits["test"]  # the odd images: 60 mistakes, 30 to a sibling and 30 to a cousin
    assert res["top1"].value == 0.0 and res["top1"].n == len(test)
    assert res["mistake_severity"].value == pytest.approx(3.0) and res["mistake_severity"].n == 60
    assert "classifier" in ctx.details["top1/predictor"]
    assert 0 < ctx.details["nearest_prototype_accuracy"] <= 1


def brute_chance_severity(truth, cand, parent) -> float:
    """Every image, every candidate predicted with probability 1/K: expected severity sum / expected mistakes."""
    total = count = 0.0
    for y in truth:
        for k in cand:
            if k != y:
                total += tree_distance(np.array([k]), np.array([y]), parent)[0] / len(cand)
                count += 1 / len(cand)
    return total / count


def test_chance_severity_by_enumeration() -> None:
    # unequal tree: coarse 0 has fine 0, 1, 2; coarse 1 has fine 3; coarse 2 has 4, 5
    parent = {0: 0, 1: 0, 2: 0, 3: 1, 4: 2, 5: 2}
    truth = np.array([0, 0, 3, 4, 5, 5, 5])
    assert chance_severity(truth, np.arange(6), parent) == pytest.approx(brute_chance_severity(truth, range(6), parent))
    # by hand: class 0 -> (2*2 + 4*3)/5, class 3 -> 4, class 4 and 5 -> (2*1 + 4*4)/5
    assert chance_severity(truth, np.arange(6), parent) == pytest.approx((2 * 16 / 5 + 4 + 4 * 18 / 5) / 7)
    # a true class outside the candidates: every prediction of it is a mistake (weight 1, not 4/5)
    cand = [0, 1, 2, 4, 5]
    assert chance_severity(truth, cand, parent) == pytest.approx(brute_chance_severity(truth, cand, parent))
    with pytest.raises(ValueError, match="at least 2 candidate"):
        chance_severity(truth, [0], parent)


def test_undefined_metrics_are_null_with_a_reason() -> None:
    ds, emb = toy("poincare")
    # every embedding on one sphere: the distance to the origin is constant, the angle is not
    on_sphere = 0.7 * emb / emb.norm(dim=1, keepdim=True)
    res = Hierarchy().evaluate(context(ds, on_sphere, poincare()))
    m = res["dist0_angle_spearman"]
    assert m.value is None and "constant" in m.reason and m.to_json()["value"] is None
    assert res["cpcc"].value is not None  # prototypes still differ
    # one point for everything: CPCC, top-1 and severity undefined
    same = torch.full_like(emb, 0.1)
    res = Hierarchy().evaluate(context(ds, same, poincare()))
    assert all(res[k].value is None for k in ("cpcc", "top1", "mistake_severity", "dist0_angle_spearman"))
    assert "same point" in res["top1"].reason and "constant" in res["cpcc"].reason
    # a perfect classifier: no mistakes, severity undefined
    logits = torch.nn.functional.one_hot(torch.as_tensor(ds.annotations["label"]), 6).float()
    res = Hierarchy().evaluate(context(ds, emb, poincare(), logits=logits))
    assert res["top1"].value == 1.0
    assert res["mistake_severity"].value is None and "no mistakes" in res["mistake_severity"].reason
    assert cpcc_or_reason(np.ones((4, 4)) - np.eye(4), np.arange(4), {0: 0, 1: 0, 2: 1, 3: 1})[0] is None


def test_angle_to_small_and_large_angles() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 1e-9], [-1.0, 1e-9], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    d = torch.tensor([[3.0, 0.0]] * 5, dtype=torch.float64)
    a = angle_to(x, d)
    assert a[0] == 0.0 and a[1] == pytest.approx(1e-9, rel=1e-6) and a[2] == pytest.approx(np.pi - 1e-9, abs=1e-12)
    assert a[3] == pytest.approx(np.pi / 2) and np.isnan(a[4])


def test_hierarchy_incompatible() -> None:
    fine = np.repeat(np.arange(4), 5)
    with pytest.raises(Incompatible, match="coarse_label"):
        Hierarchy().protocol(ArrayDataset({"label": fine}, {"train": np.arange(20), "test": np.arange(20)}))
    one = ArrayDataset({"label": fine, "coarse_label": np.zeros(20, int)},
                       {"train": np.arange(20), "test": np.arange(20)})
    with pytest.raises(Incompatible, match="single coarse class"):
        Hierarchy().protocol(one)
