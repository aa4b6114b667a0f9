"""Task `delta`: protocol, metrics against the library and brute force, subsampling, config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.errors import ConfigError, Incompatible
from harness.registry import create
from harness.task import Embedded, EvalContext
from harness.tasks.delta import Delta, delta_hyperbolicity

from tests.test_delta import brute_four_point, disk_sample, euclid, poincare_dist
from tests.test_task_fixtures import ArrayDataset, FakeMethod, euclidean, poincare


def dataset(n_eval=12, split="test"):
    n = 20 + n_eval
    return ArrayDataset({"label": np.arange(n) % 4}, {"train": np.arange(20), split: np.arange(20, n)})


def context(task, ds, geometry, emb, feats, seed=0):
    proto = task.protocol(ds)
    return EvalContext(dataset=ds, protocol=proto, method=FakeMethod(geometry),
                       embed_fn=lambda idx: Embedded(emb[idx], feats[idx], None), seed=seed,
                       device=torch.device("cpu"))


def test_registered_with_its_config():
    task = create("task", "delta")
    assert isinstance(task, Delta) and task.cfg.max_points == 1000 and task.cfg.estimator == "auto"
    assert Delta.METRICS == {"delta_rel": False, "delta": False, "delta_rel_features": False,
                             "delta_features": False}


def test_protocol_uses_test_else_novel():
    task = Delta()
    p = task.protocol(dataset(split="test"))
    assert p.train_label == "label" and list(p.train) == list(range(20)) and list(p.eval) == ["test"]
    assert list(task.protocol(dataset(split="novel")).eval["test"]) == list(range(20, 32))
    with pytest.raises(Incompatible, match="no split 'novel'"):
        task.protocol(ArrayDataset({"label": np.zeros(5)}, {"train": np.arange(5)}))


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_poincare_embeddings_and_euclidean_features(c):
    rng = np.random.default_rng(0)
    n = 32
    emb = np.zeros((n, 2))
    emb[20:] = disk_sample(12, rng, c)
    feats = rng.normal(size=(n, 5))
    task = Delta()
    ctx = context(task, dataset(), poincare(c), torch.tensor(emb), torch.tensor(feats, dtype=torch.float32))
    out = task.evaluate(ctx)
    truth = brute_four_point(poincare_dist(emb[20:], c))
    diam = poincare_dist(emb[20:], c).max()
    assert out["delta"].value == pytest.approx(truth, rel=1e-6)
    assert out["delta_rel"].value == pytest.approx(2 * truth / diam, rel=1e-6)
    assert out["delta_rel"].higher_is_better is False and out["delta_rel"].n == 12
    f = feats[20:].astype(np.float32).astype(np.float64)
    assert out["delta_features"].value == pytest.approx(brute_four_point(euclid(f)), rel=1e-6)
    assert out["delta_rel_features"].value == pytest.approx(
        2 * brute_four_point(euclid(f)) / euclid(f).max(), rel=1e-6)
    det = ctx.details["delta/embeddings"]
    assert det["estimator"] == "exact" and det["exact"] is True and det["n"] == 12
    assert det["lower"] == pytest.approx(truth, rel=1e-6)
    assert 0 <= det["upper"] - det["lower"] <= 6 * 2.0 ** -24 * diam  # twice the float32 kernel's rounding bound
    assert det["geometry"] == "poincare"
    assert ctx.details["delta/features"]["geometry"] == "euclidean"


def test_subsampling_bracket_and_no_features():
    rng = np.random.default_rng(1)
    n = 20 + 50
    emb = torch.tensor(rng.normal(size=(n, 3)))
    task = Delta(Delta.Config(max_points=15, estimator="bracket", n_bases=3, features=False))
    ctx = context(task, dataset(n_eval=50), euclidean(), emb, emb, seed=3)
    out = task.evaluate(ctx)
    assert set(out) == {"delta", "delta_rel"}
    det = ctx.details["delta/embeddings"]
    assert det["n"] == 15 and det["estimator"] == "bracket" and len(det["bases"]) == 3
    pick = np.sort(ctx.rng("delta/subsample").choice(50, 15, replace=False))
    pts = emb.numpy()[20:][pick]
    truth = brute_four_point(euclid(pts))
    assert det["lower"] <= truth + 1e-9 <= det["upper"] + 1e-9
    assert out["delta"].value == det["lower"]
    again = delta_hyperbolicity(pts, estimator="bracket", n_bases=3)
    assert again["lower"] == pytest.approx(det["lower"]) and again["upper"] == pytest.approx(det["upper"])


def test_tree_like_embeddings_are_more_hyperbolic_than_a_grid():
    """Points along the rays of a star (a tree in the plane, up to the Euclidean metric between
    rays) versus a square grid: δ_rel must order them."""
    grid = np.array([(i, j) for i in range(6) for j in range(6)], float)
    star = np.concatenate([np.outer(np.linspace(0.1, 3, 12), [math.cos(a), math.sin(a)])
                           for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
    task = Delta(Delta.Config(features=False))
    rel = []
    for pts in (star, grid):
        emb = torch.tensor(np.concatenate([np.zeros((20, 2)), pts]))
        ds = ArrayDataset({"label": np.zeros(len(emb))}, {"train": np.arange(20), "test": np.arange(20, len(emb))})
        rel.append(task.evaluate(context(task, ds, euclidean(), emb, emb))["delta_rel"].value)
    assert rel[0] < rel[1]
    assert rel[1] == pytest.approx(2 * (math.sqrt(2) - 1) * 5 / (5 * math.sqrt(2)), rel=1e-6)


@pytest.mark.parametrize("cfg,match", [
    (dict(max_points=3), "max_points"),
    (dict(estimator="base"), "unknown estimator"),
    (dict(estimator="exact", max_points=100000), "limited to"),
    (dict(n_bases=0), "n_bases"),
])
def test_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        Delta(Delta.Config(**cfg)).protocol(dataset())


def test_coincident_points_give_null_delta_with_the_reason():
    ds = dataset()
    emb = torch.full((32, 3), 0.2, dtype=torch.float64)
    feats = torch.randn(32, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = Delta().evaluate(context(Delta(), ds, poincare(), emb, feats))
    for name in ("delta_rel", "delta"):
        assert out[name].value is None and "same point" in out[name].reason
        assert out[name].to_json()["value"] is None and out[name].higher_is_better is False
    assert out["delta_rel_features"].value == pytest.approx(
        delta_hyperbolicity(feats[20:], metric="euclidean")["delta_rel"], rel=1e-9)
