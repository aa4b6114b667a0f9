"""instance_selection: the per-class selection by hand, the learners' independence, the null on a degenerate
ranking, selection by random embeddings is a random subset, and a full cell against its own predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.errors import ConfigError
from harness.task import Embedded, EvalContext
from harness.tasks.instance_selection import (InstanceSelection, Learners, fraction_label, reinitialised, select,
                                              subsets_loss)
from tests.test_task_fixtures import ArrayDataset, FakeMethod, euclidean, poincare


def test_selection_by_hand():
    radius = np.array([0.5, 0.1, 0.9, 0.3, 2.0, 1.0, 0.2, 0.7])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    rng = np.random.default_rng(0)
    # class 0: radii 0.5 0.1 0.9 0.3 -> nearest two are positions 1, 3; farthest two 2, 0
    # class 1: radii 2.0 1.0 0.2 0.7 -> nearest two 6, 7; farthest two 4, 5
    assert select(radius, labels, 0.5, "typical", rng).tolist() == [1, 3, 6, 7]
    assert select(radius, labels, 0.5, "atypical", rng).tolist() == [0, 2, 4, 5]
    # ceil(0.1 * 4) = 1 per class; ceil(0.26 * 4) = 2
    assert select(radius, labels, 0.1, "typical", rng).tolist() == [1, 6]
    assert select(radius, labels, 0.26, "atypical", rng).tolist() == [0, 2, 4, 5]
    drawn = select(radius, labels, 0.5, "random", np.random.default_rng(3))
    assert len(drawn) == 4 and (np.bincount(labels[drawn]) == 2).all()
    assert drawn.tolist() == select(radius, labels, 0.5, "random", np.random.default_rng(3)).tolist()
    assert select(radius, labels, 1.0, "atypical", rng).tolist() == list(range(8))
    assert fraction_label(0.1) == "10%" and fraction_label(0.05) == "5%" and fraction_label(1.0) == "100%"


def test_selection_by_random_embeddings_is_a_random_subset():
    """Random embeddings rank the images independently of their content: the atypical and typical subsets'
    mean annotated typicality is the population's, within 4 sampling standard errors."""
    classes, per, k = 20, 100, 10
    labels = np.repeat(np.arange(classes), per)
    typicality = np.random.default_rng(1).random(len(labels))
    for kind in ("gaussian", "poincare"):
        emb = torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(2)) / math.sqrt(8)
        geometry = poincare() if kind == "poincare" else euclidean()
        radius = geometry.dist0(poincare_map(emb) if kind == "poincare" else emb).double().numpy()
        for selection in ("typical", "atypical"):
            picked = select(radius, labels, k / per, selection, np.random.default_rng(0))
            se = typicality.std() / math.sqrt(len(picked)) * math.sqrt(1 - len(picked) / len(labels))
            assert abs(typicality[picked].mean() - typicality.mean()) <= 4 * se, (kind, selection)


def poincare_map(x: torch.Tensor) -> torch.Tensor:
    from harness.geometry import expmap0

    return expmap0(x, c=1.0)


def test_reinitialised_copies_share_a_fresh_start_and_leave_the_global_generator_alone():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.randn(2, 3, 5, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)
    net[1].running_mean.fill_(3.0)
    state = torch.random.get_rng_state()
    a, b, c = reinitialised(net, 0), reinitialised(net, 0), reinitialised(net, 1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(a[0].weight, net[0].weight) and torch.equal(net[0].weight, torch.full_like(net[0].weight, 7.0))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, c[0].weight)
    assert torch.equal(a[1].running_mean, torch.zeros(4)) and torch.equal(a[1].weight, torch.ones(4))


def test_the_summed_loss_gives_each_learner_its_own_gradient():
    torch.manual_seed(0)
    model = Learners(torch.nn.Linear(5, 6), feat_dim=6, num_classes=4, count=3, seed=0)
    same = Learners(torch.nn.Linear(5, 6), feat_dim=6, num_classes=4, count=3, seed=0)
    for k in range(3):  # every learner starts from the seed's weights, whatever the global generator did
        for p, q in zip([*model.backbones[0].parameters(), *model.heads[0].parameters()],
                        [*same.backbones[k].parameters(), *same.heads[k].parameters()]):
            assert torch.equal(p, q)
    batch = [(torch.randn(8, 5), torch.randint(0, 4, (8,))) for _ in range(3)]
    subsets_loss(model, batch).backward()
    together = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(1, batch[1][0]), batch[1][1]).backward()
    alone = [p.grad for p in model.parameters()]
    for g_all, g_one, p in zip(together, alone, model.parameters()):
        owner = next(k for k in range(3) if any(p is q for q in [*model.backbones[k].parameters(),
                                                                    *model.heads[k].parameters()]))
        if owner == 1:
            assert torch.allclose(g_all, g_one)
        else:
            assert g_one is None or torch.count_nonzero(g_one) == 0


def test_a_constant_distance_to_the_origin_gives_null_metrics_with_the_reason():
    labels = np.repeat(np.arange(4), 10)
    ds = ArrayDataset({"label": labels}, {"train": np.arange(0, 40, 2), "test": np.arange(1, 40, 2)})
    task = InstanceSelection()
    emb = torch.nn.functional.normalize(torch.randn(40, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    ctx = EvalContext(dataset=ds, protocol=task.protocol(ds), method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0, device=torch.device("cpu"))
    assert task.finetune(ctx) is None  # nothing is trained on an arbitrary ranking
    out = task.evaluate(ctx)
    assert sorted(out) == sorted(f"{kind}/{s}/{f}" for f in ("10%", "50%") for kind, sels in
                                 (("acc", ("typical", "atypical", "random")), ("gain", ("typical", "atypical"))) for s in sels)
    assert all(m.value is None and "constant" in m.reason for m in out.values())



def test_a_one_image_subset_is_refused_with_the_fix():
    from harness.registry import make_config

    ds = ArrayDataset({"label": np.zeros(12, dtype=np.int64)}, {"train": np.arange(10), "test": np.arange(10, 12)})
    task = InstanceSelection(make_config(InstanceSelection, {"fractions": [0.1]}))  # one class: 1 of 10 images
    emb = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    ctx = EvalContext(dataset=ds, protocol=task.protocol(ds), method=FakeMethod(euclidean()),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None), seed=0, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="raise task.fractions"):
        task.finetune(ctx)


def test_the_shared_random_learner_is_never_ranked_and_the_gains_are():
    from harness.leaderboard import render_task

    assert "same for every method" in InstanceSelection.unranked_reason("acc/random/10%")
    assert InstanceSelection.unranked_reason("gain/atypical/10%") is None
    assert InstanceSelection.unranked_reason("acc/atypical/50%") is None
    rows = [{"status": "ok", "cell": {"task": "instance_selection", "dataset": "d", "method": m, "backbone": "b",
                                      "seed": 0, "variant": "", "train_dataset": None},
             "config": {"method": {"name": m}, "seed": 0}, "config_hash": "h", "geometry": {"name": "euclidean"},
             "grid": "g", "variant": {"tag": "", "diff": {}}, "details": {},
             "metrics": {"acc/random/10%": {"value": 0.5, "higher_is_better": True},
                         "gain/atypical/10%": {"value": v, "higher_is_better": True}}}
            for m, v in (("a", 0.1), ("b", 0.2))]
    text = render_task("instance_selection", rows)
    assert "**0.500" not in text and "**0.200" in text
    assert "Not ranked (acc/random/10%)" in text


@pytest.mark.parametrize("override,match", [
    ({"fractions": [0.0]}, "fractions must be distinct numbers in"),
    ({"fractions": [0.1, 0.1]}, "fractions must be distinct"),
    ({"fractions": [0.12345, 0.12346]}, r"fractions \[0.12345, 0.12346\] both name their metrics '12.35%'"),
    ({"fractions": []}, "fractions must be distinct"),
    ({"batch_size": 1}, "batch_size >= 2"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"augment": "colur"}, "colour"),
    ({"split": "nope"}, "has no split 'nope'"),
])
def test_bad_config_is_named(override, match):
    from harness.registry import make_config

    ds = ArrayDataset({"label": np.arange(4)}, {"train": np.arange(2), "test": np.arange(2, 4)})
    with pytest.raises(ConfigError, match=match):  # values when the task is built, the split at protocol()
        InstanceSelection(make_config(InstanceSelection, override)).protocol(ds)


TINY = ["dataset.n_coarse=3", "dataset.fine_per_coarse=4", "dataset.novel_per_coarse=2",
        "dataset.images_per_class=24", "dataset.image_size=16"]


def test_a_cell_trains_three_learners_and_scores_them_on_the_held_out_images(tmp_path, monkeypatch):
    """The full path (the core's fine-tuning stage, cache, evaluation): every metric equals a recomputation
    from the cached learners, the subsets have the sizes ceil(f n_c) gives, the learners learned (top-1
    above chance 1/12 on the held-out images) and a re-run loads them from the fine-tuning cache."""
    import harness.run
    from harness.run import run_cell
    from harness.sweep import compose

    from harness.plugins.datasets.synthetic_hierarchy import SyntheticHierarchy

    overrides = ["method=euclidean_ce", "task=instance_selection", "task.fractions=[0.5]", "task.iterations=120",
                 "train.epochs=2", *TINY, f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"]
    harness.run._MODELS.clear()
    reads: list[tuple[bool, bool]] = []
    original = SyntheticHierarchy.load_images

    def recording(self, indices):
        reads.append((self.evaluating, bool(np.isin(indices, self.split("train")).all())))
        return original(self, indices)

    monkeypatch.setattr(SyntheticHierarchy, "load_images", recording)
    result = run_cell(compose(overrides), progress=False)
    assert result["status"] == "ok", result["reason"]
    # the learners' training batches are training reads of training images; their test reads as an evaluation
    assert (False, True) in reads and (True, False) in reads and (False, False) not in reads
    m = {k: v["value"] for k, v in result["metrics"].items()}
    assert m["gain/atypical/50%"] == pytest.approx(m["acc/atypical/50%"] - m["acc/random/50%"])
    assert m["gain/typical/50%"] == pytest.approx(m["acc/typical/50%"] - m["acc/random/50%"])
    n = result["metrics"]["acc/random/50%"]["n"]
    assert n == result["protocol"]["eval_sizes"]["test"]
    for name in ("acc/typical/50%", "acc/atypical/50%", "acc/random/50%"):
        p = m[name]
        assert result["metrics"][name]["ci95"] == pytest.approx(1.96 * math.sqrt(p * (1 - p) / n))
        assert p > 1 / 12 + 0.05, (name, p)
    train = result["protocol"]["train_size"]
    assert set(result["details"]["subset_sizes"].values()) == {train // 2}  # 12 classes of an even size
    assert result["details"]["subset_mean_typicality"]["typical/50%"] != \
        result["details"]["subset_mean_typicality"]["atypical/50%"]
    assert result["training"]["finetune"]["iterations"] == 120
    again = run_cell(compose([*overrides, "force=true"]), progress=False)
    assert again["timings"]["finetune_cached"] is True and again["metrics"] == result["metrics"]


def test_learners_on_the_same_images_see_the_same_batches():
    """At fraction 100% the three selections are the same images: the three learners must get the same
    batches and views (common random numbers), so their gains are exactly 0."""
    from harness.engine import Viewer
    from harness.tasks.instance_selection import SubsetBatches

    labels = np.repeat(np.arange(3), 6)
    ds = ArrayDataset({"label": labels}, {"train": np.arange(18)}, size=(8, 8))
    ds.load_images = lambda idx: torch.as_tensor(np.asarray(idx), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)
    everything = np.arange(18)
    batches = SubsetBatches(ds, [everything, everything.copy(), everything[::2]], [labels, labels, labels[::2]],
                            batch_size=4, viewer=Viewer((0.5,) * 3, (0.25,) * 3, (8, 8), torch.device("cpu")),
                            augment="crop")
    for it in range(3):
        (x0, y0), (x1, y1), (x2, _) = batches(it, np.random.default_rng([0, it]))
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert x2.shape == x0.shape
    again = batches(1, np.random.default_rng([0, 1]))[0][0]
    assert torch.equal(again, batches(1, np.random.default_rng([0, 1]))[0][0])  # a resumed run: the same batch
