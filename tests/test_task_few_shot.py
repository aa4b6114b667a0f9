"""few_shot / fine_from_coarse: episode sampling, batched accuracy vs a per-episode numpy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.errors import Incompatible
from harness.task import EvalContext
from harness.tasks._episodes import (EpisodeAccuracy, class_pool, episode_accuracies, mean_ci95,
                                     sample_episodes)
from harness.tasks.few_shot import FewShot

from tests.test_task_fixtures import ArrayDataset, FakeMethod, euclidean, poincare


# -- independent references ----------------------------------------------------
def einstein_midpoint_np(x: np.ndarray) -> np.ndarray:
    """Khrulkov et al. Eq. 8 for c=1: Poincaré -> Klein, gamma-weighted mean, Klein -> Poincaré."""
    k = 2 * x / (1 + (x * x).sum(-1, keepdims=True))
    gamma = 1 / np.sqrt(1 - (k * k).sum(-1, keepdims=True))
    m = (gamma * k).sum(0) / gamma.sum(0)
    return m / (1 + np.sqrt(1 - (m * m).sum()))


def poincare_dist_np(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sq = ((x[:, None] - y[None]) ** 2).sum(-1)
    nx, ny = (x * x).sum(-1)[:, None], (y * y).sum(-1)[None]
    return np.arccosh(1 + 2 * sq / ((1 - nx) * (1 - ny)))


def loop_accuracy(emb: np.ndarray, episodes: np.ndarray, n_shot: int, kind: str) -> np.ndarray:
    out = []
    for ep in episodes:
        x = emb[ep]  # (way, shot+query, d)
        if kind == "euclidean":
            protos = x[:, :n_shot].mean(1)
        else:
            protos = np.stack([einstein_midpoint_np(s) for s in x[:, :n_shot]])
        q = x[:, n_shot:].reshape(-1, x.shape[-1])
        d = (np.sqrt(((q[:, None] - protos[None]) ** 2).sum(-1)) if kind == "euclidean"
             else poincare_dist_np(q, protos))
        truth = np.repeat(np.arange(len(ep)), x.shape[1] - n_shot)
        out.append((d.argmin(1) == truth).mean())
    return np.array(out)


# -- sampling --------------------------------------------------------------------
def test_class_pool_groups_and_drops() -> None:
    labels = np.array([3, 1, 3, 2, 1, 3, 7])
    pool, dropped = class_pool(labels, min_count=2)
    assert pool.classes.tolist() == [1, 3]
    assert pool.counts.tolist() == [2, 3]
    assert pool.members[0, :2].tolist() == [1, 4] and pool.members[1].tolist() == [0, 2, 5]
    assert dropped == {2: 1, 7: 1}


def test_episodes_are_valid_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, size=600)
    pool, _ = class_pool(labels, 8)
    eps = sample_episodes(pool, n_way=5, n_per_class=8, episodes=300, rng=np.random.default_rng(1))
    assert eps.shape == (300, 5, 8)
    lab = labels[eps]
    assert (lab == lab[..., :1]).all()  # one class per way
    assert all(len(set(row)) == 5 for row in lab[..., 0])  # distinct classes
    assert all(len(set(e.ravel())) == 40 for e in eps)  # distinct images
    again = sample_episodes(pool, n_way=5, n_per_class=8, episodes=300, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(eps, again)


@pytest.mark.parametrize("n_per_class", [1, 2, 3])  # 1, 2: rejection draws; 3 (all items): sorted keys
def test_episode_sampling_is_uniform(n_per_class: int) -> None:
    # 4 classes x 3 items, 2-way: each class in 1/2 of the episodes; within a class, every ordered
    # tuple of distinct items equally likely (checked on the first two positions)
    labels = np.repeat(np.arange(4), 3)
    pool, _ = class_pool(labels)
    n = 30000
    eps = sample_episodes(pool, n_way=2, n_per_class=n_per_class, episodes=n, rng=np.random.default_rng(5))
    first = np.bincount(eps[:, :, 0].ravel(), minlength=12) / n
    np.testing.assert_allclose(first, 2 / 4 / 3, atol=0.01)
    if n_per_class > 1:
        assert (eps[..., 0] != eps[..., 1]).all()
        pair = eps[..., 0] * 12 + eps[..., 1]
        freq = np.bincount(pair.ravel(), minlength=144) / n
        a, b = np.arange(144) // 12, np.arange(144) % 12
        same_class = (a // 3 == b // 3) & (a != b)
        np.testing.assert_allclose(freq[same_class], 2 / 4 / 6, atol=0.01)
        assert freq[~same_class].sum() == 0


def test_sampler_rejects_too_few_classes() -> None:
    pool, _ = class_pool(np.repeat(np.arange(3), 5))
    with pytest.raises(ValueError, match="at least 5 classes"):
        sample_episodes(pool, n_way=5, n_per_class=2, episodes=3, rng=np.random.default_rng(0))


# -- accuracy --------------------------------------------------------------------
def test_hand_computed_episode() -> None:
    # 2-way 1-shot 2-query: supports at 0 and 10; queries 1 (->0 ok), 6 (->10 wrong), 9 (ok), 4 (wrong)
    emb = torch.tensor([[0.0], [1.0], [6.0], [10.0], [9.0], [4.0]])
    eps = np.array([[[0, 1, 2], [3, 4, 5]]])
    acc = episode_accuracies(emb, eps, n_shot=1, geometry=euclidean())
    assert acc.tolist() == [0.5]


@pytest.mark.parametrize("kind", ["euclidean", "poincare"])
def test_batched_equals_numpy_loop(kind: str) -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, size=400)
    emb = rng.normal(size=(400, 6)) * 0.3
    if kind == "poincare":
        emb = emb / (1 + np.linalg.norm(emb, axis=1, keepdims=True))  # inside the unit ball
    pool, _ = class_pool(labels, 8)
    eps = sample_episodes(pool, n_way=5, n_per_class=8, episodes=200, rng=np.random.default_rng(3))
    geo = euclidean() if kind == "euclidean" else poincare()
    for shot in (1, 3):
        ours = episode_accuracies(torch.tensor(emb, dtype=torch.float32), eps, n_shot=shot, geometry=geo)
        ref = loop_accuracy(emb.astype(np.float32).astype(np.float64), eps, shot, kind)
        np.testing.assert_array_equal(ours, ref)


def test_mean_ci95_matches_closerlook_formula() -> None:
    acc = np.array([0.2, 0.6, 0.8, 1.0])
    mean, ci = mean_ci95(acc)
    assert mean == pytest.approx(0.65)
    assert ci == pytest.approx(1.96 * np.sqrt(((acc - 0.65) ** 2).mean()) / 2)
    meter = EpisodeAccuracy()
    meter.update(acc[:1])
    meter.update(acc[1:])
    assert meter.compute() == (pytest.approx(0.65), pytest.approx(ci), 4)
    with pytest.raises(ValueError, match="no episodes"):
        EpisodeAccuracy().compute()


def test_nan_embeddings_raise() -> None:
    emb = torch.zeros(6, 2)
    emb[4, 1] = float("nan")
    with pytest.raises(ValueError, match="1 of 6 embeddings contain NaN"):
        episode_accuracies(emb, np.array([[[0, 1, 2], [3, 4, 5]]]), n_shot=1, geometry=euclidean())


# -- the task --------------------------------------------------------------------
def make_ctx(task, dataset, embeddings: np.ndarray, geometry=None) -> EvalContext:
    proto = task.protocol(dataset)
    emb = torch.tensor(embeddings, dtype=torch.float32)

    def embed_fn(idx):
        from harness.task import Embedded

        return Embedded(emb[torch.as_tensor(idx)], emb[torch.as_tensor(idx)], None)

    return EvalContext(dataset=dataset, protocol=proto, method=FakeMethod(geometry or euclidean()),
                       embed_fn=embed_fn, seed=0, device=torch.device("cpu"))


def clustered(labels: np.ndarray, dim: int = 8, spread: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels.max() + 1, dim))
    return centres[labels] + spread * rng.normal(size=(len(labels), dim))


def test_few_shot_task_end_to_end() -> None:
    labels = np.repeat(np.arange(16), 25)
    ds = ArrayDataset({"label": labels}, {"train": np.arange(200), "novel": np.arange(200, 400)})
    task = FewShot(FewShot.Config(episodes=50))
    proto = task.protocol(ds)
    assert proto.train_label == "label" and proto.eval["novel"].tolist() == list(range(200, 400))
    ctx = make_ctx(task, ds, clustered(labels))
    res = task.evaluate(ctx)
    assert set(res) == {"acc_1shot", "acc_5shot"}
    assert res["acc_1shot"].value == 1.0 and res["acc_5shot"].n == 50 and res["acc_5shot"].ci95 == 0.0
    assert "CloserLook" in FewShot.CONVENTION
    # random embeddings: chance level 1/5 within a generous band
    rng_emb = np.random.default_rng(9).normal(size=(400, 8))
    res = FewShot(FewShot.Config(episodes=400)).evaluate(make_ctx(task, ds, rng_emb))
    assert abs(res["acc_1shot"].value - 0.2) < 0.03


def test_few_shot_incompatible_and_dropped_classes() -> None:
    labels = np.concatenate([np.repeat(np.arange(4), 30), np.repeat([4, 5], 10)])
    ds = ArrayDataset({"label": labels}, {"train": np.arange(0), "novel": np.arange(len(labels))})
    with pytest.raises(Incompatible, match="4 classes with at least 16 images"):
        FewShot().protocol(ds)
    task = FewShot(FewShot.Config(n_way=3, shots=[1, 5], n_query=8, episodes=20))
    ctx = make_ctx(task, ds, clustered(labels))
    res = task.evaluate(ctx)
    assert ctx.details["acc_5shot/dropped_classes"] == {"4": 10, "5": 10}
    assert ctx.details["acc_1shot/dropped_classes"] == {}
    assert res["acc_5shot"].value == 1.0
    no_novel = ArrayDataset({"label": labels}, {"train": np.arange(10)})
    with pytest.raises(Incompatible, match="no split 'novel'"):
        FewShot().protocol(no_novel)


def test_fine_from_coarse_protocol_and_allway() -> None:
    from harness.tasks.fine_from_coarse import FineFromCoarse

    fine = np.repeat(np.arange(12), 20)
    coarse = fine // 4
    ds = ArrayDataset({"label": fine, "coarse_label": coarse},
                      {"train": np.arange(0, 240, 2), "test": np.arange(1, 240, 2)})
    task = FineFromCoarse(FineFromCoarse.Config(episodes=40, n_query=5))
    proto = task.protocol(ds)
    assert proto.train_label == "coarse_label" and set(proto.eval) == {"test"}
    ctx = make_ctx(task, ds, clustered(fine))
    res = task.evaluate(ctx)
    assert set(res) == {"acc_5way_1shot", "acc_5way_5shot", "acc_allway_1shot", "acc_allway_5shot"}
    assert all(m.value == 1.0 and m.n == 40 for m in res.values())
    assert ctx.details["acc_allway_1shot/n_way"] == 12
    # random embeddings: all-way chance is 1/12
    res = task.evaluate(make_ctx(task, ds, np.random.default_rng(4).normal(size=(240, 8))))
    assert abs(res["acc_allway_1shot"].value - 1 / 12) < 0.03
    no_coarse = ArrayDataset({"label": fine}, {"train": np.arange(10), "test": np.arange(240)})
    with pytest.raises(Incompatible, match="coarse_label"):
        task.protocol(no_coarse)


# -- intra-coarse episodes ------------------------------------------------------------
def test_grouped_episodes_stay_in_one_eligible_group_uniformly() -> None:
    # 9 classes: group 0 has classes 0-3, group 1 has 4-7, group 2 only class 8 (never drawn for 2-way)
    labels = np.repeat(np.arange(9), 4)
    pool, _ = class_pool(labels)
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    n = 24000
    eps = sample_episodes(pool, n_way=2, n_per_class=2, episodes=n, rng=np.random.default_rng(3), groups=groups)
    cls = labels[eps[..., 0]]  # (n, 2) classes of each episode
    assert (groups[cls[:, 0]] == groups[cls[:, 1]]).all() and (cls[:, 0] != cls[:, 1]).all()
    assert not (cls == 8).any()
    # each eligible group half the time; within it, each of the 12 ordered class pairs equally often
    np.testing.assert_allclose(np.bincount(groups[cls[:, 0]], minlength=2) / n, [0.5, 0.5], atol=0.015)
    pair = np.bincount(cls[:, 0] * 9 + cls[:, 1], minlength=81).reshape(9, 9) / n
    expected = np.zeros((9, 9))
    for g in (0, 1):
        members = np.flatnonzero(groups == g)
        for a in members:
            for b in members:
                if a != b:
                    expected[a, b] = 0.5 / 12
    np.testing.assert_allclose(pair, expected, atol=0.006)
    with pytest.raises(ValueError, match="no group has 5 classes"):
        sample_episodes(pool, n_way=5, n_per_class=2, episodes=3, rng=np.random.default_rng(0), groups=groups)
    with pytest.raises(ValueError, match="one group per pool class"):
        sample_episodes(pool, n_way=2, n_per_class=2, episodes=3, rng=np.random.default_rng(0), groups=groups[:3])


def test_fine_from_coarse_intra_episodes_need_fine_structure() -> None:
    from harness.tasks.fine_from_coarse import FineFromCoarse

    # 4 coarse classes of 6 fine classes; the embedding knows the coarse class only
    fine = np.repeat(np.arange(24), 24)
    coarse = fine // 6
    rng = np.random.default_rng(0)
    emb = 20 * rng.normal(size=(4, 8))[coarse] + rng.normal(size=(len(fine), 8))
    ds = ArrayDataset({"label": fine, "coarse_label": coarse}, {"train": np.arange(0), "test": np.arange(len(fine))})
    task = FineFromCoarse(FineFromCoarse.Config(episodes=800, n_query=5, all_way=False))
    ctx = make_ctx(task, ds, emb)
    res = task.evaluate(ctx)
    assert set(res) == {"acc_5way_1shot", "acc_5way_5shot", "acc_intra_5way_1shot", "acc_intra_5way_5shot"}
    for shot in (1, 5):
        intra = res[f"acc_intra_5way_{shot}shot"]
        # siblings are indistinguishable here: chance 1/5 (4 sampling standard errors, from the reported ci95)
        assert abs(intra.value - 0.2) < 4 * intra.ci95 / 1.96 + 1e-9 and intra.ci95 < 0.02
        assert res[f"acc_5way_{shot}shot"].value > 0.4  # mixed-coarse episodes are mostly separable
    assert ctx.details["acc_intra_5way_1shot/groups_drawn"] == 4
    # coarse classes with fewer than 5 eligible fine classes: the intra metric is absent, with a note
    few = ArrayDataset({"label": fine, "coarse_label": fine // 3},
                       {"train": np.arange(0), "test": np.arange(len(fine))})
    ctx = make_ctx(task, few, emb)
    res = task.evaluate(ctx)
    assert "acc_intra_5way_1shot" not in res and "acc_5way_1shot" in res
    assert "no coarse class has 5 fine classes" in ctx.details["acc_intra_5way_1shot/skipped"]


def test_collapsed_embeddings_give_null_accuracy() -> None:
    labels = np.repeat(np.arange(8), 25)
    ds = ArrayDataset({"label": labels}, {"train": np.arange(0), "novel": np.arange(200)})
    task = FewShot(FewShot.Config(episodes=20))
    res = task.evaluate(make_ctx(task, ds, np.ones((200, 4))))
    assert all(m.value is None and "same point" in m.reason for m in res.values())
