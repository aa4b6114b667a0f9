"""retrieval: retrieval_metrics vs pytorch-metric-learning's AccuracyCalculator and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from harness.errors import Incompatible
from harness.task import Embedded, EvalContext
from harness.tasks.retrieval import Retrieval, RetrievalMetrics, kmeans, retrieval_metrics

from tests.test_task_fixtures import ArrayDataset, FakeMethod, euclidean, poincare


def problem(seed=0, n=300, classes=20, dim=8, spread=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(classes, dim))[y] + spread * rng.normal(size=(n, dim))
    return x, y


def brute_force(dist: np.ndarray, y: np.ndarray, ks) -> dict[str, float]:
    """Full sort of every row, metrics written from their definitions."""
    n = len(y)
    out = {f"recall@{k}": [] for k in ks}
    p1, rp, mapr = [], [], []
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        order = others[np.argsort(dist[i, others], kind="stable")]
        rel = (y[order] == y[i]).astype(float)
        r = int(rel.sum())
        if r == 0:
            continue
        for k in ks:
            out[f"recall@{k}"].append(rel[:k].max())
        p1.append(rel[0])
        rp.append(rel[:r].mean())
        mapr.append(sum(rel[:j + 1].sum() / (j + 1) for j in range(r) if rel[j]) / r)
    res = {k: float(np.mean(v)) for k, v in out.items()}
    res.update(precision_at_1=float(np.mean(p1)), r_precision=float(np.mean(rp)), map_at_r=float(np.mean(mapr)))
    return res


def test_matches_pytorch_metric_learning() -> None:
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    x, y = problem()
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                              knn_func=CustomKNN(LpDistance(normalize_embeddings=False)), device=torch.device("cpu"))
    ref = calc.get_accuracy(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    ours = retrieval_metrics(torch.tensor(x, dtype=torch.float32), y, nmi=False)
    assert ours["precision_at_1"] == pytest.approx(ref["precision_at_1"], abs=1e-12)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-12)
    assert ours["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-12)
    assert ours["recall@1"] == ours["precision_at_1"]


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_matches_brute_force(geometry) -> None:
    x, y = problem(1, n=150, classes=12)
    y[:1] = 99  # one lone query (its class has no other image)
    if geometry == "poincare":
        x = 0.9 * x / (1 + np.linalg.norm(x, axis=1, keepdims=True))
        geo = poincare()
        sq = ((x[:, None] - x[None]) ** 2).sum(-1)
        nx = (x * x).sum(-1)
        dist = np.arccosh(1 + 2 * sq / ((1 - nx[:, None]) * (1 - nx[None])))
    else:
        geo = euclidean()
        dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    ks = (1, 2, 4, 8, 16, 32)
    ours = retrieval_metrics(torch.tensor(x), y, distance=geo, ks=ks, nmi=False)
    ref = brute_force(dist, y, ks)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k
    assert ours["num_lone_queries"] == 1


def test_hand_computed_case() -> None:
    # points on a line: a0=0, a1=1, b0=1.5, b1=10. Query a0: nn a1 (hit). a1: nn b0 (miss), then a0.
    # b0: nn a1 (miss), a0, then b1. b1: nn b0 (hit).
    x = torch.tensor([[0.0], [1.0], [1.5], [10.0]])
    y = np.array([0, 0, 1, 1])
    res = retrieval_metrics(x, y, ks=(1, 2, 3), nmi=False)
    assert res["recall@1"] == 0.5 and res["recall@2"] == 0.75 and res["recall@3"] == 1.0
    assert res["r_precision"] == 0.5  # R = 1 for everyone
    assert res["map_at_r"] == 0.5


def test_nmi_of_separated_clusters_and_sklearn() -> None:
    x, y = problem(2, n=200, classes=5, spread=0.01)
    assert retrieval_metrics(torch.tensor(x), y, ks=(1,), seed=3)["nmi"] == pytest.approx(1.0)
    x, y = problem(3, n=200, classes=5, spread=1.5)
    res = retrieval_metrics(torch.tensor(x), y, ks=(1,), seed=4)
    clusters = kmeans(torch.tensor(x), 5, seed=4).numpy()
    assert res["nmi"] == pytest.approx(normalized_mutual_info_score(y, clusters))
    assert 0 < res["nmi"] < 1


def test_kmeans_lloyd_fixed_point() -> None:
    x, _ = problem(4, n=120, classes=4, spread=0.3)
    xt = torch.tensor(x)
    assign = kmeans(xt, 4, iters=50, seed=0)
    centroids = torch.stack([xt[assign == c].mean(0) for c in range(4)])
    np.testing.assert_array_equal(torch.cdist(xt, centroids).argmin(1).numpy(), assign.numpy())


def test_bad_input() -> None:
    x, y = problem(5, n=20)
    with pytest.raises(ValueError, match="k must be in"):
        retrieval_metrics(x, y, ks=(1, 20))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 of 20 embeddings contain NaN"):
        retrieval_metrics(x, y)
    with pytest.raises(ValueError, match="single image"):
        retrieval_metrics(np.eye(3), np.arange(3), ks=(1,), nmi=False)
    with pytest.raises(ValueError, match="no embeddings"):
        RetrievalMetrics().compute()
    with pytest.raises(ValueError, match="at least 2 classes"):  # NMI would be 1.0 whatever the embeddings
        retrieval_metrics(np.random.default_rng(0).normal(size=(10, 3)), np.zeros(10))
    # float labels: whole numbers are taken, others are an error rather than truncated together
    pts = np.array([[0.0, 0], [1, 0], [5, 5], [5, 6]])
    assert retrieval_metrics(pts, [0.0, 0.0, 1.0, 1.0], ks=(1,), nmi=False)["recall@1"] == 1.0
    with pytest.raises(ValueError, match="whole numbers"):
        retrieval_metrics(pts, [0.2, 0.7, 1.0, 1.0], ks=(1,), nmi=False)


def test_retrieval_task_end_to_end() -> None:
    x, y = problem(6, n=200, classes=10, spread=0.01)
    ds = ArrayDataset({"label": np.concatenate([y, y + 10])}, {"train": np.arange(200, 400), "novel": np.arange(200)})
    emb = torch.tensor(np.concatenate([x, x]), dtype=torch.float32)
    task = Retrieval()
    proto = task.protocol(ds)
    ctx = EvalContext(dataset=ds, protocol=proto, method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0, device=torch.device("cpu"))
    res = task.evaluate(ctx)
    assert set(res) == {"recall@1", "recall@2", "recall@4", "recall@8", "precision_at_1", "r_precision",
                        "map_at_r", "nmi"}
    assert all(v.value == pytest.approx(1.0) for v in res.values())
    with pytest.raises(Incompatible, match="no split 'novel'"):
        task.protocol(ArrayDataset({"label": y}, {"train": np.arange(200)}))
    # every image the same point: every distance ties, so every metric is null with the reason
    same = torch.ones(400, 4)
    ctx = EvalContext(dataset=ds, protocol=proto, method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(same[idx], same[idx], None), seed=0, device=torch.device("cpu"))
    res = task.evaluate(ctx)
    assert set(res) == set(Retrieval.METRICS) - {"recall@16", "recall@32"}
    assert all(v.value is None and "same point" in v.reason for v in res.values())
