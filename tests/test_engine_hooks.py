"""Methods own their batches: one toy method overrides every hook of the engine, and the engine honours each.

Checked: the call order (on_epoch_start before that epoch's plan, after_step after every optimiser step),
per-epoch plans that use what on_epoch_start computed, two views that differ, per-group learning rates
and the method's own schedule, frozen parameters unchanged, a label-free method trained once for two
tasks, and a model pre-trained on one dataset evaluated on another.
"""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness import hookimpl
from harness.geometry import EuclideanGeometry
from harness.method import Method
from harness.registry import get_registry
from harness.specs import PluginSpec
from tests.test_sweep import TINY

CALLS: list[tuple] = []


class Toy(Method):
    """Two views, a frozen stem, two parameter groups, a step schedule, per-epoch plans."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "toy_hooks"
        head_lr: float = 0.01

    def __init__(self, cfg, backbone, info):
        super().__init__(cfg, backbone, info)
        self.geometry = EuclideanGeometry()
        self.proj = nn.Linear(info.feat_dim, 8)
        self.fc = nn.Linear(8, max(info.num_classes, 1))
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.plan_size = 0

    def head(self, features):
        return self.proj(features)

    def logits(self, emb):
        return self.fc(emb)

    def on_epoch_start(self, state):
        self.plan_size = 8 + 4 * state.epoch  # what this epoch's plan must use
        CALLS.append(("epoch", state.epoch, state.step))

    def batch_indices(self, labels, batch_size, rng):
        CALLS.append(("plan", self.plan_size))
        order = rng.permutation(len(labels))
        return [order[i:i + self.plan_size] for i in range(0, 2 * self.plan_size, self.plan_size)]

    def training_step(self, batch, state):
        a, b = batch.view("crop_flip"), batch.view("mocov2")
        CALLS.append(("step", state.step, len(batch), bool((a - b).abs().max() > 0.1),
                      [g["lr"] for g in state.optimizer.param_groups]))
        emb = self.embed(torch.cat([a, b]))
        return F.cross_entropy(self.logits(emb), torch.cat([batch.labels, batch.labels]))

    def after_step(self, state):
        CALLS.append(("after", state.step, state.loss is not None))

    def configure_optimizer(self, train):
        return torch.optim.SGD([{"params": self.backbone.parameters(), "lr": 0.1},
                                {"params": [*self.proj.parameters(), *self.fc.parameters()],
                                 "lr": self.cfg.head_lr}], momentum=0.0)

    def lr_schedule(self, train):
        return lambda t: 1.0 if t < 0.5 else 0.1


class LabelFree(Toy):
    supervised = False

    @dataclass
    class Config:
        name: str = "toy_label_free"
        head_lr: float = 0.01

    def __init__(self, cfg, backbone, info):
        super().__init__(cfg, backbone, info)
        self.fc = nn.Identity()

    def batch_indices(self, labels, batch_size, rng):
        assert labels is None  # a label-free method is never shown labels
        return None

    def training_step(self, batch, state):
        assert batch.labels is None
        a, b = self.embed(batch.view("mocov2")), self.embed(batch.view("mocov2"))
        return (a - b).pow(2).mean()


class _Plugin:
    @hookimpl
    def harness_methods(self):
        return [PluginSpec("toy_hooks", f"{__name__}:Toy", "engine hook test"),
                PluginSpec("toy_label_free", f"{__name__}:LabelFree", "label-free hook test")]


@pytest.fixture(scope="module", autouse=True)
def toy_plugins():
    registry = get_registry()
    plugin = _Plugin()
    registry.register(plugin, name="toy_hooks_plugin", dist="tests")
    yield
    registry.pm.unregister(plugin)
    registry._specs = None


def _run(tmp_path, *overrides):
    import harness.run
    from harness.run import run_cell
    from harness.sweep import compose

    harness.run._MODELS.clear()
    config = compose([*overrides, *TINY, "train.epochs=2", f"results_dir={tmp_path / 'res'}",
                      f"cache_dir={tmp_path / 'cache'}"])
    return run_cell(config, progress=False)


def test_the_engine_calls_every_hook_in_order_with_the_methods_optimiser_and_schedule(tmp_path, capsys):
    from harness.plugins.methods import euclidean_ce  # noqa: F401 - registry warm

    CALLS.clear()
    frozen_before = {}

    original_init = Toy.__init__

    def spy_init(self, cfg, backbone, info):
        original_init(self, cfg, backbone, info)
        frozen_before["w"] = self.frozen.weight.detach().clone()
        frozen_before["m"] = self

    Toy.__init__ = spy_init
    try:
        result = _run(tmp_path, "method=toy_hooks", "task=few_shot")
    finally:
        Toy.__init__ = original_init
    assert result["status"] == "ok", result["reason"]
    kinds = [c[0] for c in CALLS]
    # epoch 0: on_epoch_start, plan, (step, after) x 2; epoch 1 the same
    assert kinds == ["epoch", "plan", "step", "after", "step", "after"] * 2
    plans = [c[1] for c in CALLS if c[0] == "plan"]
    steps = [c for c in CALLS if c[0] == "step"]
    assert plans == [8, 12]  # each epoch's plan used what its on_epoch_start computed
    assert [s[2] for s in steps] == [8, 8, 12, 12]  # batch sizes follow the plan
    assert all(s[3] for s in steps)  # the two views differ
    # per-group learning rates, times the method's schedule (1.0 before half-way, 0.1 after)
    assert [s[4] for s in steps] == [[0.1, 0.01], [0.1, 0.01], pytest.approx([0.01, 0.001]),
                                     pytest.approx([0.01, 0.001])]
    assert [c[1] for c in CALLS if c[0] == "after"] == [0, 1, 2, 3] and all(c[2] for c in CALLS if c[0] == "after")
    assert torch.equal(frozen_before["m"].frozen.weight.detach().cpu(), frozen_before["w"])  # frozen: unchanged
    assert result["training"]["steps"] == 4
    # without a terminal, training reports each tenth (here each of its 4 steps) on stderr
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  train toy_hooks")]
    assert [line.split()[2] for line in lines] == ["1/4", "2/4", "3/4", "4/4"] and "loss" in lines[-1]


def test_a_label_free_method_is_trained_once_for_tasks_with_different_label_fields(tmp_path):
    few_shot = _run(tmp_path, "method=toy_label_free", "task=few_shot")
    import harness.run

    harness.run._MODELS.clear()  # served by the disk cache, not by memory
    from harness.run import run_cell
    from harness.sweep import compose

    config = compose(["method=toy_label_free", "task=fine_from_coarse", "task.episodes=20", "task.n_query=5",
                      *[o for o in TINY if not o.startswith("task.")], "train.epochs=2",
                      f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"])
    coarse = run_cell(config, progress=False)
    assert few_shot["status"] == coarse["status"] == "ok", (few_shot["reason"], coarse["reason"])
    assert few_shot["protocol"]["train_label"] == "label" and coarse["protocol"]["train_label"] == "coarse_label"
    assert coarse["model_key"] == few_shot["model_key"] and coarse["timings"]["train_cached"]


def test_label_free_training_does_not_depend_on_the_labels(tmp_path, monkeypatch):
    from harness.plugins.datasets.synthetic_hierarchy import SyntheticHierarchy

    first = _run(tmp_path / "a", "method=toy_label_free", "task=few_shot")
    original = SyntheticHierarchy.__init__

    def garbage_labels(self, cfg=None):
        original(self, cfg)
        rng = np.random.default_rng(123)
        for key in ("label", "coarse_label"):
            self.annotations[key] = rng.permutation(self.annotations[key])

    monkeypatch.setattr(SyntheticHierarchy, "__init__", garbage_labels)
    import harness.run

    harness.run._DATASETS.clear()
    second = _run(tmp_path / "b", "method=toy_label_free", "task=few_shot")
    state_a = torch.load(tmp_path / "a" / "cache" / "models" / f"{first['model_key']}.pt", weights_only=True)
    state_b = torch.load(tmp_path / "b" / "cache" / "models" / f"{second['model_key']}.pt", weights_only=True)
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    harness.run._DATASETS.clear()


def test_a_model_pre_trained_on_one_dataset_is_evaluated_on_another(tmp_path):
    result = _run(tmp_path, "method=toy_label_free", "task=few_shot",
                  "train_dataset={name: glyphs, n_scripts: 3, characters_per_script: 4, samples_per_character: 6, "
                  "novel_per_script: 1, test_per_character: 2, image_size: 16}")
    assert result["status"] == "ok", result["reason"]
    assert result["cell"]["train_dataset"] == "glyphs"
    assert result["variant"]["diff"]["train_dataset"] == "glyphs" and result["cell"]["variant"]
    assert result["variant"]["diff"]["train_dataset.n_scripts"] == 3


def test_training_steps_read_as_training_and_every_embedding_reads_as_evaluation(tmp_path, monkeypatch):
    """The dataset is :meth:`reading_for_evaluation` exactly while the harness reads for an evaluation:
    ood's prototypes embed training images that way and its far set is read that way; the training
    steps read the training images as training."""
    from harness.plugins.datasets.glyphs import Glyphs
    from harness.plugins.datasets.synthetic_hierarchy import SyntheticHierarchy

    reads: list[tuple[bool, bool]] = []
    far_reads: list[bool] = []
    original, original_far = SyntheticHierarchy.load_images, Glyphs.load_images

    def recording(self, indices):
        reads.append((self.evaluating, bool(np.isin(indices, self.split("train")).all())))
        return original(self, indices)

    def recording_far(self, indices):
        far_reads.append(self.evaluating)
        return original_far(self, indices)

    monkeypatch.setattr(SyntheticHierarchy, "load_images", recording)
    monkeypatch.setattr(Glyphs, "load_images", recording_far)
    import harness.run
    from harness.run import run_cell
    from harness.sweep import compose

    harness.run._MODELS.clear()
    harness.run._DATASETS.clear()
    result = run_cell(compose(["method=toy_hooks", "task=ood", "task.far=[glyphs]", "task.max_far_images=64",
                               "train.epochs=2",
                               *[o for o in TINY if not o.startswith("task.")],
                               f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"]), progress=False)
    assert result["status"] == "ok", result["reason"]
    training = [r for r in reads if not r[0]]
    assert training and all(in_train for _, in_train in training)  # the steps: training images only
    assert (True, True) in reads  # the prototypes: training images, read as an evaluation reads them
    assert (True, False) in reads  # the evaluated splits
    assert far_reads and all(far_reads)  # the far set


def test_train_epochs_0_evaluates_the_method_at_its_initialisation(tmp_path, toy_plugins):
    """``train.epochs=0``: no hook runs, nothing is cached, the row is a reference; a method read on its
    backbone's features at initialisation is the untrained network (``random_init``) to the last digit."""
    import harness.run
    from harness.run import run_cell
    from harness.sweep import compose

    def run(*overrides):
        harness.run._MODELS.clear()
        config = compose([*(o for o in TINY if not o.startswith("task.")), "task=retrieval", *overrides,
                          f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"])
        return run_cell(config, progress=False)

    CALLS.clear()
    toy = run("method=toy_hooks", "train.epochs=0")
    assert toy["status"] == "ok", toy["reason"]
    assert CALLS == [] and toy["reference"] is True
    assert toy["training"]["steps"] == 0 and toy["training"]["train_top1_kind"] == "at initialisation"
    assert not list((tmp_path / "cache").rglob("models/*.pt"))
    at_init = run("method=euclidean_ce", "method.dim=0", "train.epochs=0")
    untrained = run("method=random_init")
    assert at_init["reference"] and untrained["reference"]
    assert {k: v["value"] for k, v in at_init["metrics"].items()} == {k: v["value"] for k, v in
                                                                       untrained["metrics"].items()}
    trained = run("method=euclidean_ce", "method.dim=0", "train.epochs=1")
    assert not trained["reference"] and trained["metrics"]["recall@1"] != untrained["metrics"]["recall@1"]
