"""LorentzGeometry: distances against geoopt, the centroid against a brute-force minimiser, and every task
scoring the hyperboloid image of Poincaré embeddings exactly as it scores the embeddings themselves."""

from __future__ import annotations

import geoopt
import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from harness.geometry import (LorentzGeometry, PoincareGeometry, geoopt_lorentz_k, lorentz_centroid,
                              lorentz_to_poincare, poincare_to_lorentz)
from harness.task import Embedded, EvalContext
from tests.test_task_fixtures import ArrayDataset, FakeMethod


def _points(n: int, d: int, c: float, seed: int = 0) -> torch.Tensor:
    """Points of the ball of curvature −c (radius 1/√c), up to 0.9 of the radius, in float64."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    r = 0.9 * torch.rand(n, 1, generator=g, dtype=torch.float64) / c**0.5
    return u / u.norm(dim=-1, keepdim=True) * r


@pytest.mark.parametrize("c", [0.3, 1.0, 2.0])
def test_distances_are_geoopts_and_the_balls(c):
    p = _points(30, 4, c)
    x = poincare_to_lorentz(p, c=c)
    geo, ball = LorentzGeometry(c), PoincareGeometry(c)
    manifold = geoopt.Lorentz(k=geoopt_lorentz_k(c))
    # geoopt takes arcosh of a cancelling inner product, with a clamp: up to ~1e-6 off in float64 (see
    # .lorentz); the ball's closed forms (an isometry) are the tight reference
    ref = manifold.dist(x[:, None], x[None]).fill_diagonal_(0)
    torch.testing.assert_close(geo.pairwise_dist(x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(geo.dist(x[:10], x[10:20]), manifold.dist(x[:10], x[10:20]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(geo.dist0(x), manifold.dist0(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(geo.pairwise_dist(x), ball.pairwise_dist(p), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(geo.dist(x[:10], x[10:20]), ball.dist(p[:10], p[10:20]), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(geo.dist0(x), ball.dist0(p), atol=1e-12, rtol=1e-12)
    # the log map at the origin: norm = distance to the origin, direction = the space part's
    v = geo.logmap0(x)
    torch.testing.assert_close(v.norm(dim=-1), geo.dist0(x))
    torch.testing.assert_close(v / v.norm(dim=-1, keepdim=True), p / p.norm(dim=-1, keepdim=True))
    assert geo.to_json() == {"name": "lorentz", "c": c}


def test_the_centroid_minimises_the_squared_lorentzian_distance():
    """Law et al. 2019: the centroid is the argmin over the hyperboloid of sum_i w_i ||x_i - mu||_L^2,
    here found by a generic minimiser over mu's space part."""
    c = 0.5
    x = poincare_to_lorentz(_points(7, 3, c, seed=1), c=c)
    w = torch.tensor([1.0, 2.0, 0.5, 0.0, 3.0, 1.0, 0.25], dtype=torch.float64)

    def cost(space: np.ndarray) -> float:
        mu = np.r_[np.sqrt(1 / c + space @ space), space]
        inner = -x[:, 0].numpy() * mu[0] + x[:, 1:].numpy() @ mu[1:]
        return float((w.numpy() * (-2 / c - 2 * inner)).sum())

    best = minimize(cost, np.zeros(3), method="BFGS", options={"gtol": 1e-12}).x
    mu = lorentz_centroid(x, w, c=c)
    np.testing.assert_allclose(mu[1:].numpy(), best, atol=1e-6)
    assert LorentzGeometry(c).dist0(mu[None]).item() < LorentzGeometry(c).dist0(x).max().item()
    # weighted by index_add per class, as class_prototypes does: the same centroid
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0])
    torch.testing.assert_close(lorentz_centroid(x, w, c=c, labels=labels, num_classes=2)[0], mu)


def test_centroid_edge_cases_and_the_einstein_midpoint():
    c = 1.5
    geo = LorentzGeometry(c)
    x = poincare_to_lorentz(_points(5, 2, c, seed=2), c=c)
    origin = torch.tensor([1 / c**0.5, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(geo.midpoint(x[:1]), x[0])  # one point: itself
    torch.testing.assert_close(geo.midpoint(x[:0]), origin)  # an empty set: the origin
    torch.testing.assert_close(geo.midpoint(x, weights=torch.zeros(5, dtype=torch.float64)), origin)
    pair = torch.stack([x[0], torch.cat([x[0, :1], -x[0, 1:]])])  # symmetric about the origin
    torch.testing.assert_close(geo.midpoint(pair), origin)
    with pytest.raises(ValueError, match="non-negative"):
        geo.midpoint(x, weights=-torch.ones(5, dtype=torch.float64))
    # class prototypes: the Einstein midpoints of the same points in the ball; an empty class: the origin
    labels = torch.tensor([0, 1, 0, 1, 1])
    protos = geo.class_prototypes(x, labels, 3)
    ball = PoincareGeometry(c).class_prototypes(lorentz_to_poincare(x, c=c), labels, 3)
    torch.testing.assert_close(lorentz_to_poincare(protos, c=c), ball)
    torch.testing.assert_close(protos[2], origin)
    with pytest.raises(ValueError, match="not on the hyperboloid"):
        geo.pairwise_dist(x * 1.1)


# -- every task reads the geometry through its interface only ---------------------------------------------
def _hierarchy_data(seed: int = 0):
    """6 coarse × 2 fine classes of clustered ball points: 40 train / 20 test images per training class,
    2 novel classes per coarse class with 30 images each."""
    rng = np.random.default_rng(seed)
    c, d = 1.0, 6
    coarse_dir = rng.normal(size=(6, d))
    fine_dir = coarse_dir.repeat(4, 0) + 0.5 * rng.normal(size=(24, d))  # 4 fine classes per coarse
    rows, labels, splits = [], [], {"train": [], "test": [], "novel": []}
    for k in range(24):
        n = 60 if k % 4 < 2 else 30
        start = len(labels)
        v = fine_dir[k] + 0.3 * rng.normal(size=(n, d))
        r = rng.uniform(0.3, 0.95, size=(n, 1))
        rows.append(v / np.linalg.norm(v, axis=1, keepdims=True) * r)
        labels += [k] * n
        if k % 4 < 2:
            splits["train"] += range(start, start + 40)
            splits["test"] += range(start + 40, start + 60)
        else:
            splits["novel"] += range(start, start + n)
    labels = np.asarray(labels)
    p = torch.tensor(np.concatenate(rows))
    annotations = {"label": labels, "coarse_label": labels // 4, "typicality": rng.uniform(size=len(labels))}
    return ArrayDataset(annotations, splits), p, c


def _evaluate(task, dataset, emb, geometry, features):
    def embed_fn(what):
        idx = torch.as_tensor(np.asarray(what))
        return Embedded(emb[idx], features[idx], None)

    ctx = EvalContext(dataset=dataset, protocol=task.protocol(dataset), method=FakeMethod(geometry),
                      embed_fn=embed_fn, seed=0, device=torch.device("cpu"))
    return {k: m.value for k, m in task.evaluate(ctx).items()}


@pytest.mark.parametrize("task_name, options", [
    ("few_shot", {"episodes": 40, "n_query": 5}), ("retrieval", {}), ("hierarchy", {}),
    ("fine_from_coarse", {"episodes": 40, "n_query": 5}), ("typicality", {}), ("delta", {}),
    ("ood", {"far": []}),
])
def test_a_task_scores_the_hyperboloid_image_as_the_ball_embeddings(task_name, options):
    from harness.registry import create

    dataset, p, c = _hierarchy_data()
    task = create("task", task_name, **options)
    on_ball = _evaluate(task, dataset, p, PoincareGeometry(c), features=p)
    on_hyperboloid = _evaluate(task, dataset, poincare_to_lorentz(p, c=c), LorentzGeometry(c), features=p)
    assert on_ball.keys() == on_hyperboloid.keys()
    assert any(v is not None for v in on_ball.values())
    for name, value in on_ball.items():
        assert on_hyperboloid[name] == pytest.approx(value, abs=1e-6) if value is not None else \
            on_hyperboloid[name] is None, name


def test_the_disk_picture_of_the_hyperboloid_is_the_balls(tmp_path):
    from harness.plots import disk_coordinates, save_disk

    _, p, c = _hierarchy_data()
    x = poincare_to_lorentz(p, c=c)
    np.testing.assert_allclose(disk_coordinates(x.numpy(), geometry=LorentzGeometry(c)),
                               disk_coordinates(p.numpy(), geometry=PoincareGeometry(c)), atol=1e-9)
    assert save_disk(tmp_path / "disk.png", x.numpy(), np.arange(len(x)) % 3, geometry=LorentzGeometry(c)).exists()


def test_the_log_map_at_the_origin_has_the_identity_jacobian_there():
    from harness.geometry import lorentz_logmap0

    c = 0.7
    for space in (torch.zeros(3, dtype=torch.float64), torch.full((3,), 1e-7, dtype=torch.float64)):
        jac = torch.autograd.functional.jacobian(
            lambda s: lorentz_logmap0(torch.cat([(1 / c + s.square().sum()).sqrt()[None], s]), c=c), space)
        torch.testing.assert_close(jac, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)


LORENTZ_METHOD = '''
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness import PluginSpec, hookimpl
from harness.geometry import LorentzGeometry, lorentz_project
from harness.method import Method


def on_hyperboloid(space, c):
    return lorentz_project(torch.cat([space.new_zeros(len(space), 1), space], -1), c=c)


class LorentzProto(Method):
    """Cross-entropy over minus the Lorentz distances to learnt class points on the hyperboloid."""

    @dataclass
    class Config:
        name: str = "lorentz_proto"
        dim: int = 8
        c: float = 1.0

    def __init__(self, cfg, backbone, info):
        super().__init__(cfg, backbone, info)
        self.c = cfg.c
        self.geometry = LorentzGeometry(c=cfg.c)
        self.proj = nn.Linear(info.feat_dim, cfg.dim)
        self.points = nn.Parameter(torch.randn(info.num_classes, cfg.dim) * 0.1)

    def head(self, features):
        return on_hyperboloid(self.proj(features), self.c)

    def loss(self, emb, batch):
        return F.cross_entropy(-self.geometry.pairwise_dist(emb, on_hyperboloid(self.points, self.c)), batch.labels)


@hookimpl
def harness_methods():
    return [PluginSpec("lorentz_proto", "lorentz_mod:LorentzProto", "a method on the hyperboloid")]
'''


def test_a_third_party_method_on_the_hyperboloid_runs_every_task_end_to_end(tmp_path):
    from harness.results import iter_results
    from tests.test_sweep import TINY, _harness, fake_dist

    site = tmp_path / "site"
    site.mkdir()
    fake_dist(site, "lorentz_dist", "lorentz_mod", LORENTZ_METHOD)
    res = tmp_path / "res"
    tasks = "few_shot,retrieval,hierarchy,ood,delta"
    tiny = [o for o in TINY if not o.startswith("task.")]  # the task options are few_shot's
    proc = _harness(["sweep", "grid=smoke", "method=lorentz_proto", f"task={tasks}", "seed=0", "plots=true", *tiny,
                     f"results_dir={res}"], tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["cell"]["task"]: r for _, r in iter_results(res)}
    assert sorted(results) == sorted(tasks.split(","))
    for task, r in results.items():
        assert r["status"] == "ok", (task, r.get("reason"))
        assert r["geometry"] == {"name": "lorentz", "c": 1.0}
        assert all(m["value"] is not None for k, m in r["metrics"].items() if not k.startswith("delta_rel_features")
                   ), (task, r["metrics"])
    assert 0 <= results["hierarchy"]["metrics"]["dist0_angle_spearman"]["value"] ** 2 <= 1
    assert any(f.endswith("embeddings_disk.png") for f in results["hierarchy"]["figures"]), results["hierarchy"]["figures"]
    assert "| lorentz_proto " in (res / "leaderboards" / "few_shot.md").read_text()
    assert "| lorentz " in (res / "leaderboards" / "few_shot.md").read_text()
