"""reid: evaluate_reid vs a faithful re-implementation of torchreid's eval_market1501 (+ AGW's mINP)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.errors import Incompatible
from harness.task import Embedded, EvalContext
from harness.tasks._ranking import query_stats_numba, query_stats_torch
from harness.tasks.reid import Reid, ReidMetrics, evaluate_reid

from benchmarks.references import torchreid_market1501
from tests.test_task_fixtures import ArrayDataset, FakeMethod, euclidean


def random_problem(seed, nq=60, ng=400, ids=30, cams=4, tie_levels=None, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, ids + ids // 3, nq), rng.integers(0, ids, ng)  # some queries unmatched
    q_cams, g_cams = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    d = rng.random((nq, ng))
    if tie_levels:
        d = np.floor(d * tie_levels) / tie_levels  # many equal distances
    return d.astype(dtype), q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchreid_on_tie_free_data(backend, seed) -> None:
    d, qp, gp, qc, gc = random_problem(seed, dtype=np.float64)
    assert all(len(np.unique(row)) == len(row) for row in d)
    cmc, m_ap, m_inp, n_valid = torchreid_market1501(d, qp, gp, qc, gc, 50)
    res = evaluate_reid(d, qp, gp, qc, gc, max_rank=50, backend=backend)
    np.testing.assert_allclose(res["cmc"], cmc, rtol=1e-6)
    assert res["mAP"] == pytest.approx(m_ap, rel=1e-12)
    assert res["mINP"] == pytest.approx(m_inp, rel=1e-12)
    assert res["num_valid_queries"] == n_valid and res["num_skipped"] == 60 - n_valid
    assert res["num_skipped"] > 0  # the problem has queries without a valid match


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_ties_follow_a_stable_sort(backend) -> None:
    d, qp, gp, qc, gc = random_problem(7, ids=10, tie_levels=8)
    cmc, m_ap, m_inp, _ = torchreid_market1501(d, qp, gp, qc, gc, 50, sort_kind="stable")
    res = evaluate_reid(d, qp, gp, qc, gc, backend=backend)
    np.testing.assert_allclose(res["cmc"], cmc, rtol=1e-6)
    assert res["mAP"] == pytest.approx(m_ap, rel=1e-12)
    assert res["mINP"] == pytest.approx(m_inp, rel=1e-12)


@pytest.mark.parametrize("tie_levels", [None, 6])
def test_kernel_paths_agree_per_query(tie_levels) -> None:
    # counting passes (few positives), sort + search (many), and the torch stable-sort kernel
    d, qp, gp, qc, gc = random_problem(11, ids=6, tie_levels=tie_levels)
    counted = query_stats_numba(d, qp, gp, qc, gc, sort_above=10**6)
    searched = query_stats_numba(d, qp, gp, qc, gc, sort_above=0)
    sorted_ = query_stats_torch(*(torch.as_tensor(a) for a in (d, qp, gp, qc, gc)), chunk=16)
    for a, b, c in zip(counted, searched, sorted_):
        np.testing.assert_allclose(a, b, rtol=1e-12)
        np.testing.assert_allclose(a, c, rtol=1e-12)


def test_hand_computed_case() -> None:
    # one query (pid 1, cam 0); gallery sorted by distance:
    # g0 pid1 cam0 (junk, removed), g1 pid2, g2 pid1 cam1 (match), g3 pid3, g4 pid1 cam2 (match)
    # kept ranking: pid2, M, pid3, M -> first match rank 2; AP = (1/2 + 2/4)/2 = 0.5; INP = 2/4
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    res = evaluate_reid(d, np.array([1]), np.array([1, 2, 1, 3, 1]), np.array([0]), np.array([0, 0, 1, 0, 2]),
                        max_rank=4)
    np.testing.assert_allclose(res["cmc"], [0, 1, 1, 1])
    assert res["mAP"] == pytest.approx(0.5) and res["mINP"] == pytest.approx(0.5)
    # gallery smaller than max_rank: the CMC is capped at the gallery size, as in torchreid
    assert len(evaluate_reid(d, [1], [1, 2, 1, 3, 1], [0], [0, 0, 1, 0, 2])["cmc"]) == 5


def test_chunked_updates_equal_one_call() -> None:
    d, qp, gp, qc, gc = random_problem(3)
    meter = ReidMetrics(gp, gc)
    for s in range(0, 60, 7):
        meter.update(torch.tensor(d[s:s + 7]), qp[s:s + 7], qc[s:s + 7])
    whole = evaluate_reid(d, qp, gp, qc, gc)
    got = meter.compute()
    np.testing.assert_array_equal(got["cmc"], whole["cmc"])
    assert got["mAP"] == whole["mAP"] and got["mINP"] == whole["mINP"]


def test_bad_input_is_an_error() -> None:
    d, qp, gp, qc, gc = random_problem(0, nq=5, ng=20)
    with pytest.raises(ValueError, match="gallery is empty"):
        evaluate_reid(np.zeros((5, 0)), qp, gp[:0], qc, gc[:0])
    with pytest.raises(ValueError, match="no queries"):
        evaluate_reid(np.zeros((0, 20)), qp[:0], gp, qc[:0], gc)
    with pytest.raises(ValueError, match="expected"):
        evaluate_reid(d[:, :10], qp, gp, qc, gc)
    bad = d.copy()
    bad[np.flatnonzero(np.isin(qp, gp))[0], 2] = np.nan  # a query that has matches
    for value in (np.nan, np.inf):
        bad[np.flatnonzero(np.isin(qp, gp))[0], 2] = value
        for backend in ("numba", "torch"):
            with pytest.raises(ValueError, match="NaN or inf"):
                evaluate_reid(bad, qp, gp, qc, gc, backend=backend)
    # a query without a true match is skipped by both backends, and its NaN is still an error in both
    lone = d.copy()
    lone[np.flatnonzero(~np.isin(qp + 1000, gp))[0]] = np.nan
    for backend in ("numba", "torch"):
        with pytest.raises(ValueError, match="NaN or inf"):
            evaluate_reid(lone, qp + 1000, gp, qc, gc, backend=backend)
    with pytest.raises(ValueError, match="none of the 5 query identities"):
        evaluate_reid(d, qp + 1000, gp, qc, gc)
    # identity 1.7 is not identity 1.2: float ids are an error, not truncated into one identity
    with pytest.raises(ValueError, match="pids must be whole numbers"):
        evaluate_reid(np.array([[0.1, 0.2]]), [1.7], [1.2, 3.0], [0], [1, 1])


def test_reid_task_end_to_end() -> None:
    rng = np.random.default_rng(0)
    pid = np.repeat(np.arange(20), 6)
    cam = np.tile(np.arange(6), 20)
    query = np.flatnonzero(cam == 0)
    gallery = np.flatnonzero((cam > 0) & (pid >= 10))  # identities 0..9 have no gallery image
    ds = ArrayDataset({"pid": pid, "camid": cam}, {"train": np.flatnonzero(pid < 0), "query": query,
                                                   "gallery": gallery})
    emb = torch.tensor(rng.normal(size=(20, 5))[pid] + 0.01 * rng.normal(size=(120, 5)), dtype=torch.float32)
    task = Reid()
    proto = task.protocol(ds)
    assert proto.train_label == "pid"
    ctx = EvalContext(dataset=ds, protocol=proto, method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0,
                      device=torch.device("cpu"))
    res = task.evaluate(ctx)
    assert {k: v.value for k, v in res.items()} == {"rank1": 1.0, "rank5": 1.0, "rank10": 1.0,
                                                    "mAP": 1.0, "mINP": 1.0}
    assert ctx.details["num_skipped_queries"] == 10 and ctx.details["num_valid_queries"] == 10
    with pytest.raises(Incompatible, match="camid"):
        task.protocol(ArrayDataset({"pid": pid}, {"train": query, "query": query, "gallery": gallery}))
    # every embedding the same point: the ranking would be the gallery order, so the metrics are null
    same = torch.zeros(120, 5)
    ctx = EvalContext(dataset=ds, protocol=proto, method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(same[idx], same[idx], None), seed=0,
                      device=torch.device("cpu"))
    res = task.evaluate(ctx)
    assert set(res) == set(Reid.METRICS) and all(v.value is None and "same point" in v.reason for v in res.values())


def test_cmc_figure_plots_the_task_rank_metrics(tmp_path, monkeypatch) -> None:
    from PIL import Image

    import harness.plots

    rng = np.random.default_rng(1)
    pid = np.repeat(np.arange(40), 4)
    cam = np.tile(np.arange(4), 40)
    query, gallery = np.flatnonzero(cam == 0), np.flatnonzero(cam > 0)
    ds = ArrayDataset({"pid": pid, "camid": cam}, {"train": query[:0], "query": query, "gallery": gallery})
    # noisy identities: some first matches fall beyond rank 1, 5 and 10
    emb = torch.tensor(rng.normal(size=(40, 6))[pid] + 1.2 * rng.normal(size=(160, 6)), dtype=torch.float32)
    plotted = []
    real_points = harness.plots.cmc_points
    monkeypatch.setattr(harness.plots, "cmc_points", lambda cmc: plotted.append(real_points(cmc)) or plotted[-1])
    task = Reid()
    ctx = EvalContext(dataset=ds, protocol=task.protocol(ds), method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0,
                      device=torch.device("cpu"), artifacts_dir=tmp_path)
    res = task.evaluate(ctx)
    png = tmp_path / ctx.details["cmc_curve"]
    assert png.name == "cmc.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100
        image.verify()
    [(ranks, values)] = plotted
    np.testing.assert_array_equal(ranks, np.arange(1, 51))  # max_rank 50 < 120 gallery images
    for r in (1, 5, 10):
        assert values[r - 1] == res[f"rank{r}"].value
    assert 0 < values[0] < values[4] < values[9] < 1
    # the whole curve against torchreid's eval_market1501 on the same Euclidean distances
    d = torch.cdist(emb[query].double(), emb[gallery].double()).numpy()
    cmc, _, _, _ = torchreid_market1501(d, pid[query], pid[gallery], cam[query], cam[gallery], 50)
    np.testing.assert_allclose(values, cmc, atol=1e-12)


def test_no_figure_without_an_artifacts_dir() -> None:
    pid, cam = np.repeat(np.arange(5), 3), np.tile(np.arange(3), 5)
    ds = ArrayDataset({"pid": pid, "camid": cam}, {"train": pid[:0], "query": np.flatnonzero(cam == 0),
                                                   "gallery": np.flatnonzero(cam > 0)})
    emb = torch.randn(15, 4)
    ctx = EvalContext(dataset=ds, protocol=Reid().protocol(ds), method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0, device=torch.device("cpu"))
    Reid().evaluate(ctx)
    assert "cmc_curve" not in ctx.details
