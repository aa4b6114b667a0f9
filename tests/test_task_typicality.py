"""typicality: per-class and pooled Spearman vs scipy.stats.spearmanr, sign, nulls, protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from harness.errors import Incompatible
from harness.registry import create
from harness.task import Embedded, EvalContext
from harness.tasks.typicality import Typicality

from tests.test_task_fixtures import ArrayDataset, FakeMethod, euclidean, poincare


def toy(seed=0, classes=5, per_class=30):
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(classes), per_class)
    typ = rng.random(len(label)).astype(np.float32)
    n = len(label)
    ds = ArrayDataset({"label": label, "typicality": typ}, {"train": np.arange(0, n, 3),
                                                             "test": np.setdiff1d(np.arange(n), np.arange(0, n, 3))})
    return ds, rng


def context(ds, emb, geo):
    return EvalContext(dataset=ds, protocol=Typicality().protocol(ds), method=FakeMethod(geo),
                       embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0, device=torch.device("cpu"))


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_against_scipy(geometry) -> None:
    ds, rng = toy()
    # radius partly follows atypicality (typical images nearer the origin), plus noise
    direction = rng.normal(size=(len(ds), 4))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    atyp = 1 - ds.annotations["typicality"]
    r = 0.2 + 0.5 * atyp + 0.15 * rng.random(len(ds))
    emb = torch.tensor(direction * r[:, None] * (0.9 if geometry == "poincare" else 3.0))
    geo = euclidean() if geometry == "euclidean" else poincare()
    res = Typicality().evaluate(ctx := context(ds, emb, geo))
    test = ds.splits["test"]
    radius, a, y = geo.dist0(emb[test]).numpy(), atyp[test], ds.annotations["label"][test]
    per_class = [spearmanr(radius[y == k], a[y == k])[0] for k in range(5)]
    m = res["spearman_per_class"]
    assert m.value == pytest.approx(np.mean(per_class), abs=1e-12) and m.n == 5
    assert m.ci95 == pytest.approx(1.96 * np.std(per_class, ddof=1) / np.sqrt(5), abs=1e-12)
    assert res["spearman_pooled"].value == pytest.approx(spearmanr(radius, a)[0], abs=1e-12)
    assert res["spearman_pooled"].n == len(test)
    assert m.value > 0.5 and ctx.details["sign"].startswith("positive = typical")


def test_sign_by_hand_and_nulls() -> None:
    ds, _ = toy(classes=2, per_class=12)
    atyp = 1 - ds.annotations["typicality"].astype(np.float64)
    # radius = atypicality exactly: every class correlates +1; the reverse order gives -1
    emb = torch.tensor(np.c_[atyp, np.zeros(len(ds))])
    assert Typicality().evaluate(context(ds, emb, euclidean()))["spearman_per_class"].value == pytest.approx(1.0)
    emb = torch.tensor(np.c_[2 - atyp, np.zeros(len(ds))])
    assert Typicality().evaluate(context(ds, emb, euclidean()))["spearman_pooled"].value == pytest.approx(-1.0)
    # every embedding on one sphere (float32 rounding only): null with the reason, for both metrics
    rng = np.random.default_rng(1)
    u = rng.normal(size=(len(ds), 3)).astype(np.float32)
    sphere = torch.tensor(0.7616 * u / np.linalg.norm(u, axis=1, keepdims=True))
    res = Typicality().evaluate(ctx := context(ds, sphere, poincare()))
    for name in ("spearman_per_class", "spearman_pooled"):
        assert res[name].value is None and "constant" in res[name].reason
    assert set(ctx.details["spearman_per_class/skipped_classes"]) == {"0", "1"}


def test_protocol_and_registration() -> None:
    task = create("task", "typicality")
    assert isinstance(task, Typicality) and task.cfg.split == "test"
    ds, _ = toy()
    p = task.protocol(ds)
    assert p.train_label == "label" and list(p.eval) == ["test"]
    no_typ = ArrayDataset({"label": np.zeros(6, int)}, {"train": np.arange(3), "test": np.arange(3, 6)})
    with pytest.raises(Incompatible, match="typicality"):
        task.protocol(no_typ)


def test_scatter_plot_draws_the_distance_to_the_origin_against_atypicality(tmp_path, monkeypatch) -> None:
    from PIL import Image

    import harness.plots

    ds, rng = toy()
    emb = torch.tensor(rng.normal(size=(len(ds), 3)))
    drawn = []
    real = harness.plots.save_scatter
    monkeypatch.setattr(harness.plots, "save_scatter", lambda path, x, y, **kw: drawn.append((x, y, kw)) or
                        real(path, x, y, **kw))
    ctx = EvalContext(dataset=ds, protocol=Typicality().protocol(ds), method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0, device=torch.device("cpu"),
                      artifacts_dir=tmp_path)
    res = Typicality().evaluate(ctx)
    png = tmp_path / ctx.details["scatter"]
    assert png.name == "dist0_vs_atypicality.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100
        image.verify()
    [(x, y, kw)] = drawn
    test = ds.splits["test"]
    np.testing.assert_allclose(x, 1 - ds.annotations["typicality"][test].astype(np.float64))
    np.testing.assert_allclose(y, emb[test].norm(dim=-1).numpy())
    np.testing.assert_array_equal(kw["groups"], ds.annotations["label"][test])
    assert f"{res['spearman_pooled'].value:.3f}" in kw["title"]
    # no artifacts folder, no figure
    plain = context(ds, emb, euclidean())
    Typicality().evaluate(plain)
    assert "scatter" not in plain.details
