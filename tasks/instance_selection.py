r"""Task ``instance_selection``: train a classifier from scratch on the images a model calls typical or atypical.

HACK (Guo et al., "Unsupervised Feature Learning with Emergent Data-Driven Prototypicality",
arXiv 2307.01421, Sec. 5, sample complexity) ranks each class's training images by prototypicality,
the distance to the origin :math:`d(0, f(x))`, and trains a classifier from scratch on a fraction of
them: the paper reports 16.54% higher test accuracy from the 10% most atypical images, and reads it as
a lower sample complexity. This task runs that protocol for any method's embeddings.

Protocol. The method trains on the ``train`` split (fine labels, where it reads labels) and embeds
the same images. For each fraction :math:`f` in ``fractions`` and each selection, per class
:math:`c` with :math:`n_c` training images, :math:`k_c = \lceil f n_c \rceil` images are kept:

* ``typical``: the :math:`k_c` nearest the origin;
* ``atypical``: the :math:`k_c` farthest from it;
* ``random``: a uniform draw (seeded by the cell's seed): the reference.

One learner per (fraction, selection), all in one fine-tuning stage of the core (cached, resumable,
with progress): the cell's backbone architecture with every layer re-initialised (PyTorch's default
``reset_parameters``) and a linear classifier, trained
``iterations`` steps on batches of ``batch_size`` drawn from its own subset (cross-entropy, Adam,
``lr``, ``weight_decay``, cosine schedule, the ``augment`` view). The stage's loss is the sum of the
learners' losses; they share no parameter, so each gets the gradient it would get alone. Every learner
starts from the same weights and sees the same augmentation draws (drawn from the cell's seed), and the
random subset depends on the seed alone: at a seed, the ``random`` learner is the same for every
method, and a gain compares subsets, not initialisations.

Metrics, per fraction (e.g. ``10%``), on the ``split`` split (held-out images of the training classes):

* ``acc/<selection>/<f>``: top-1 of that learner; ``ci95 = 1.96 √(p(1 − p)/n)``;
* ``gain/atypical/<f>`` (HACK's claim: > 0) and ``gain/typical/<f>``: top-1 minus the random subset's
  learner's, paired over the same images: the mean of :math:`d_i = [\text{sel. right}] −
  [\text{random right}] \in \{-1, 0, 1\}`, ``ci95 = 1.96 · std(d)/√n``. On random embeddings the
  selection is a random subset and the expected gain is 0.

When the distances to the origin are degenerate (constant, e.g. every embedding on a clipping sphere;
:func:`harness.diagnostics.degenerate_reason`) the ranking would be arbitrary: nothing is trained and
every metric is ``null`` with the reason. Where the dataset annotates ``typicality``, the details
give each subset's mean annotated typicality (what the selection picked, by the generator's truth).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError, HarnessError
from harness.task import SIGNED_UNIT, UNIT, EvalContext, MetricValue, Protocol, Task

SELECTIONS = ("typical", "atypical", "random")


def fraction_label(fraction: float) -> str:
    """``0.1`` → ``"10%"``."""
    return f"{100 * fraction:.4g}%"


def select(radius: np.ndarray, labels: np.ndarray, fraction: float, selection: str,
           rng: np.random.Generator) -> np.ndarray:
    r"""Positions (into ``radius``/``labels``) of the selected images: per class, the
    :math:`\lceil f n_c \rceil` nearest the origin (``typical``), farthest (``atypical``) or a uniform draw
    (``random``). Ties are broken by position: ``typical`` takes the first of tied images, ``atypical`` the
    last (the stable order reversed). Sorted ascending."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    keep = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        k = math.ceil(fraction * len(members) - 1e-9)
        if selection == "random":
            keep.append(rng.choice(members, size=k, replace=False))
            continue
        order = members[np.argsort(radius[members], kind="stable")]
        keep.append(order[:k] if selection == "typical" else order[::-1][:k])
    return np.sort(np.concatenate(keep))


def reinitialised(backbone: nn.Module, seed: int) -> nn.Module:
    """A copy of ``backbone`` with every layer re-initialised by its ``reset_parameters`` (PyTorch's
    default initialisation), drawn from ``seed`` without touching the global generator's state."""
    net = copy.deepcopy(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return net


class Learners(nn.Module):
    """``count`` independent classifiers (``backbone`` + a linear layer) trained side by side, all starting
    from the same weights (drawn from ``seed``); ``forward(k, x)`` is learner k's logits."""

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int, count: int, seed: int) -> None:
        super().__init__()
        start = nn.Sequential(reinitialised(backbone, seed), nn.Linear(feat_dim, num_classes))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            start[1].reset_parameters()
        self.backbones = nn.ModuleList(copy.deepcopy(start[0]) for _ in range(count))
        self.heads = nn.ModuleList(copy.deepcopy(start[1]) for _ in range(count))

    def forward(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self.heads[k](self.backbones[k](x))


class SubsetBatches:
    """Iteration ``i``'s batch: for each learner, ``batch_size`` images of its subset (without
    replacement within the batch), viewed with ``augment``. Learners whose subsets have one size take
    the same positions in them and the same view draws, so two selections of the same images train
    the same learner. The randomness comes from the iteration's generator, so a resumed run sees the
    same batches."""

    def __init__(self, dataset: Any, subsets: list[np.ndarray], targets: list[np.ndarray], batch_size: int,
                 viewer: Any, augment: str) -> None:
        self.dataset, self.subsets, self.targets = dataset, subsets, targets
        self.batch_size, self.viewer, self.augment = batch_size, viewer, augment

    def __call__(self, iteration: int, rng: np.random.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        seed = int(rng.integers(2**62))
        picks: dict[int, np.ndarray] = {}  # subsets of one size take the same positions (common random numbers)
        out = []
        for subset, target in zip(self.subsets, self.targets):
            if len(subset) not in picks:
                picks[len(subset)] = rng.choice(len(subset), size=min(self.batch_size, len(subset)), replace=False)
            pick = picks[len(subset)]
            self.viewer.generator = torch.Generator().manual_seed(seed)  # the same view draws for every learner
            x = self.viewer(self.dataset.load_images(subset[pick]), self.augment)
            out.append((x, torch.as_tensor(target[pick], device=x.device)))
        return out


def subsets_loss(model: Learners, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sum over learners of the cross-entropy of their own batch."""
    return sum(F.cross_entropy(model(k, x), y) for k, (x, y) in enumerate(batch))


class InstanceSelection(Task):
    """Top-1 of a classifier trained from scratch on each class's most typical / atypical / random fraction."""

    VERSION = "1"
    requires = frozenset({"label"})
    BOUNDS = {"acc": UNIT, "gain": SIGNED_UNIT}  # acc/<subset>/<fraction>, gain/<subset>/<fraction>
    CONVENTION = ("per class, the ⌈f·n⌉ training images nearest the origin (typical), farthest (atypical) or "
                  "drawn at random; a classifier (the backbone re-initialised + linear) trained from scratch on "
                  "each; top-1 on held-out images of the training classes; gain = top-1 minus the random "
                  "subset's, paired per image (HACK's claim: atypical > 0); 0 in expectation on random "
                  "embeddings; null when the distances to the origin are degenerate")

    @classmethod
    def unranked_reason(cls, name: str) -> str | None:
        if name.startswith("acc/random/"):
            return ("at a seed the random subset's learner is the same for every method (the reference the gains "
                    "are taken against)")
        return super().unranked_reason(name)

    @dataclass
    class Config:
        name: str = "instance_selection"
        fractions: list[float] = field(default_factory=lambda: [0.1, 0.5])  # the paper's headline 10%, and half
        split: str = "test"  # held-out images of the training classes
        #: steps of each learner: the default grid's 16 epochs of batch 32 over the hierarchy's 2,880 training
        #: images (160 passes over a 10% subset). With all the data a learner reaches top-1 0.61 at 1,500
        #: steps and 0.18-0.22 at 600, where three learners on the same images (other batches) differed by 0.04
        iterations: int = 1440
        batch_size: int = 32
        lr: float = 0.005  # Adam, as the grid's cross-entropy baseline (train.lr)
        weight_decay: float = 0.0005  # as train.weight_decay
        augment: str = "crop"  # as train.augment
        eval_batch_size: int = 512

        def validate(self) -> None:  # before any work (harness.config.validate)
            from harness.augment import check_policy

            fractions = [float(f) for f in self.fractions]
            if not fractions or any(not (0 < f <= 1) for f in fractions) or len(set(fractions)) != len(fractions):
                raise ConfigError("instance_selection: fractions must be distinct numbers in (0, 1], "
                                  f"got {list(self.fractions)}")
            labels = [fraction_label(f) for f in fractions]
            if len(set(labels)) != len(labels):
                clash = next(lab for lab in labels if labels.count(lab) > 1)
                raise ConfigError(f"instance_selection: fractions {[f for f in fractions if fraction_label(f) == clash]} "
                                  f"both name their metrics '{clash}' (4 significant digits): use fractions that "
                                  "differ there")
            if self.iterations < 1 or self.batch_size < 2 or self.eval_batch_size < 1:
                raise ConfigError("instance_selection: iterations >= 1, batch_size >= 2 (BatchNorm) and "
                                  f"eval_batch_size >= 1 are needed, got {self.iterations}, {self.batch_size}, "
                                  f"{self.eval_batch_size}")
            if not (math.isfinite(self.lr) and self.lr > 0 and math.isfinite(self.weight_decay)
                    and self.weight_decay >= 0):
                raise ConfigError(f"instance_selection: lr must be > 0 and weight_decay >= 0, got {self.lr}, "
                                  f"{self.weight_decay}")
            check_policy("task.augment", self.augment)

    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        if self.cfg.split not in dataset.splits:
            raise ConfigError(f"instance_selection: dataset '{dataset.name}' has no split '{self.cfg.split}' "
                              f"(it has {', '.join(sorted(dataset.splits))}); set task.split")
        return Protocol(train=dataset.split("train"), train_label="label",
                        eval={self.cfg.split: dataset.split(self.cfg.split)},
                        description="classifiers trained from scratch on each class's most typical / atypical / "
                                    f"random fraction {[fraction_label(f) for f in self.cfg.fractions]} of 'train', "
                                    f"top-1 on '{self.cfg.split}'")

    # -- what is trained ---------------------------------------------------------------------------------------
    def learners(self) -> list[tuple[float, str]]:
        """(fraction, selection) of each learner, in the order of :class:`Learners`."""
        return [(float(f), s) for f in self.cfg.fractions for s in SELECTIONS]

    def ranking(self, ctx: Any) -> tuple[np.ndarray, str | None]:
        """The training images' distances to the origin, and why they cannot rank (None if they can)."""
        from harness.diagnostics import degenerate_reason

        emb = ctx.embed(ctx.protocol.train).embeddings
        with torch.no_grad():
            radius = ctx.method.geometry.dist0(emb).detach().cpu().double().numpy()
        return radius, degenerate_reason(radius, "the distance to the origin of the training images")

    def subsets(self, ctx: Any, radius: np.ndarray) -> list[np.ndarray]:
        """Dataset indices of each learner's training images."""
        train = ctx.protocol.train
        labels = ctx.dataset.annotations["label"][train]
        out = []
        for f, s in self.learners():
            rng = np.random.default_rng([ctx.seed, *f"instance_selection/{f}".encode()])
            out.append(train[select(radius, labels, f, s, rng)])
        return out

    def finetune(self, ctx: Any) -> Any:
        from harness import schedules
        from harness.engine import Viewer
        from harness.finetune import Finetune

        radius, reason = self.ranking(ctx)
        if reason is not None:
            return None  # evaluate() reports every metric null with the reason
        classes = np.unique(ctx.dataset.annotations["label"][ctx.protocol.train])
        subsets = self.subsets(ctx, radius)
        small = min(len(s) for s in subsets)
        if small < 2:
            raise ConfigError(f"instance_selection: a subset of {small} image cannot train a learner (BatchNorm needs "
                              f"2 per batch); raise task.fractions (now {list(self.cfg.fractions)}) or use more "
                              "training images")
        targets = [np.searchsorted(classes, ctx.dataset.annotations["label"][s]) for s in subsets]
        model = Learners(ctx.method.backbone, ctx.method.info.feat_dim, len(classes), len(subsets), ctx.seed)
        # One layout whatever the method's (a method's backbone is channels-last only when trained): float
        # rounding alone moved a learner's top-1 by up to 0.018 (measured), and channels-last is the faster
        # one on CPU too (harness.engine.configure_device)
        model.to(ctx.device, memory_format=torch.channels_last)
        viewer = Viewer(ctx.mean, ctx.std, ctx.input_size, ctx.device)
        viewer.memory_format = torch.channels_last
        # what evaluate() needs besides the weights (not saved: rebuilt here on every run, cached or not)
        model.viewer, model.classes, model.subsets = viewer, classes, subsets
        c = self.cfg
        return Finetune(model=model, batch=SubsetBatches(ctx.dataset, subsets, targets, c.batch_size, viewer, c.augment),
                        loss=subsets_loss, iterations=c.iterations, schedule=schedules.cosine(),
                        optimizer=torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay))

    # -- evaluation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def correct(self, model: Learners, dataset: Any, indices: np.ndarray) -> np.ndarray:
        """(learners, n) booleans: learner k's top-1 prediction of image i is its class."""
        truth = torch.as_tensor(np.searchsorted(model.classes, dataset.annotations["label"][indices]))
        known = torch.as_tensor(np.isin(dataset.annotations["label"][indices], model.classes))
        if not bool(known.all()):
            raise HarnessError(f"instance_selection: {int((~known).sum())} images of split '{self.cfg.split}' belong to "
                               "classes without training images; use a split of the training classes (task.split)")
        out = torch.zeros(len(model.heads), len(indices), dtype=torch.bool)
        with dataset.reading_for_evaluation():
            for s in range(0, len(indices), self.cfg.eval_batch_size):
                idx = indices[s:s + self.cfg.eval_batch_size]
                x = model.viewer(dataset.load_images(idx), "none")
                for k in range(len(model.heads)):
                    out[k, s:s + len(idx)] = model(k, x).argmax(1).cpu() == truth[s:s + len(idx)]
        return out.numpy()

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        indices = ctx.protocol.eval[self.cfg.split]
        model = ctx.finetuned
        names = {f: fraction_label(f) for f, _ in self.learners()}
        metric_names = [f"acc/{s}/{names[f]}" for f, s in self.learners()] + \
                       [f"gain/{s}/{label}" for label in names.values() for s in ("atypical", "typical")]
        if model is None:
            _, reason = self.ranking(ctx)
            if reason is None:
                raise HarnessError("instance_selection: the core gave no trained learners (ctx.finetuned); the task's "
                                   "finetune() stage must run before evaluate()")
            return {name: MetricValue.undefined(reason, True, n=len(indices), bounds=self.bounds_of(name))
                    for name in metric_names}
        right = self.correct(model, ctx.dataset, indices)
        n = len(indices)
        out: dict[str, MetricValue] = {}
        position = {key: k for k, key in enumerate(self.learners())}
        for (f, s), k in position.items():
            p = float(right[k].mean())
            out[f"acc/{s}/{names[f]}"] = MetricValue(p, True, ci95=1.96 * math.sqrt(p * (1 - p) / n), n=n,
                                                         bounds=self.bounds_of("acc"))
        for f, label in names.items():
            random = right[position[(f, "random")]].astype(np.int8)
            for s in ("atypical", "typical"):
                d = right[position[(f, s)]].astype(np.int8) - random
                half = 1.96 * float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else None
                out[f"gain/{s}/{label}"] = MetricValue(float(d.mean()), True, ci95=half, n=n, bounds=self.bounds_of("gain"))
        ctx.details["subset_sizes"] = {f"{s}/{names[f]}": int(len(model.subsets[k])) for (f, s), k in position.items()}
        if "typicality" in ctx.dataset.annotations:
            typ = ctx.dataset.annotations["typicality"]
            ctx.details["subset_mean_typicality"] = {
                "all": float(typ[ctx.protocol.train].mean()),
                **{f"{s}/{names[f]}": float(typ[model.subsets[k]].mean()) for (f, s), k in position.items()}}
        return out
