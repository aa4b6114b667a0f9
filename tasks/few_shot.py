"""Task ``few_shot``: N-way K-shot episodes on novel classes, prototypes in the method's geometry.

Protocol (CloserLook, Chen et al. ICLR 2019; Hyperbolic ProtoNet, Khrulkov et
al. CVPR 2020): the model trains on the dataset's ``train`` split with fine
labels; evaluation draws ``episodes`` episodes from the ``novel`` split
(classes disjoint from training). Each episode: ``n_way`` random classes,
``shot`` support and ``n_query`` query images per class; prototypes are the
geometry's midpoint of the support embeddings (mean / Einstein midpoint),
queries go to the nearest prototype by the geometry's distance. Metric
``acc_{shot}shot`` = mean episode accuracy in [0, 1], with
``ci95 = 1.96 * std(acc, ddof=0) / sqrt(episodes)`` (CloserLook's convention).
600 episodes follow CloserLook; Khrulkov et al. use 10,000.

Classes of the evaluation split with fewer than ``shot + n_query`` images
are dropped for that shot setting (listed in ``details``); fewer than
``n_way`` remaining classes makes the cell :class:`Incompatible`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.diagnostics import collapsed_reason
from harness.errors import ConfigError, Incompatible
from harness.task import UNIT, EvalContext, MetricValue, Protocol, Task
from harness.tasks._episodes import EpisodeAccuracy, class_pool, episode_accuracies, sample_episodes

CI95_CONVENTION = "1.96 * std(episode accuracies, ddof=0) / sqrt(episodes) (CloserLook, Chen et al. 2019)"


def _check_episode_config(task: str, n_way: int, shots: list[int], n_query: int, episodes: int) -> None:
    if n_way < 2:
        raise ConfigError(f"{task}: n_way must be at least 2, got {n_way}")
    if not shots or any(int(k) < 1 for k in shots):
        raise ConfigError(f"{task}: shots must be a non-empty list of integers >= 1, got {shots}")
    if n_query < 1 or episodes < 1:
        raise ConfigError(f"{task}: n_query and episodes must be >= 1, got {n_query} and {episodes}")


def _check_enough_classes(task: str, dataset: Any, split: str, labels: np.ndarray, n_way: int,
                          per_class: int) -> None:
    pool, _ = class_pool(labels, per_class)
    if len(pool.classes) < n_way:
        raise Incompatible(
            f"task '{task}': split '{split}' of dataset '{dataset.name}' has "
            f"{len(pool.classes)} classes with at least {per_class} images; {n_way}-way episodes "
            f"need {n_way} (lower n_way, shots or n_query)")


def episodic_metrics(ctx: EvalContext, labels: np.ndarray, embeddings: Any, *, n_way: int | None,
                     shots: list[int], n_query: int, episodes: int, salt: str,
                     metric_name: Any, group_of: dict[int, int] | None = None) -> dict[str, MetricValue]:
    """Run every shot setting on one embedded split and return its metrics.

    ``n_way=None`` is all-way (every eligible class in each episode).
    ``metric_name(shot)`` names the metric. ``group_of`` (class id → group id)
    restricts every episode to the classes of one group (:func:`sample_episodes`);
    a shot setting where no group has ``n_way`` eligible classes is left out with a
    note in ``details``, as is one with too few classes. Embeddings that are all one
    point give ``null`` metrics with the reason (the accuracy would be the tie-break's).
    Facts go to ``ctx.details``.
    """
    out: dict[str, MetricValue] = {}
    collapsed = collapsed_reason(embeddings)
    for shot in shots:
        shot = int(shot)
        name = metric_name(shot)
        pool, dropped = class_pool(labels, shot + n_query)
        way = len(pool.classes) if n_way is None else n_way
        ctx.details[f"{name}/dropped_classes"] = {str(c): n for c, n in dropped.items()}
        if len(pool.classes) < max(way, 2):
            ctx.details[f"{name}/skipped"] = (f"{len(pool.classes)} classes have at least "
                                               f"{shot + n_query} images; {way}-way needs {way}")
            continue
        groups = None
        if group_of is not None:
            groups = np.array([group_of[int(c)] for c in pool.classes])
            sizes = np.unique(groups, return_counts=True)[1]
            if (sizes >= way).sum() == 0:
                ctx.details[f"{name}/skipped"] = (f"no coarse class has {way} fine classes with at least "
                                                   f"{shot + n_query} images (most: {int(sizes.max())})")
                continue
            ctx.details[f"{name}/groups_drawn"] = int((sizes >= way).sum())
        ctx.details[f"{name}/n_way"] = way
        if collapsed is not None:
            out[name] = MetricValue.undefined(collapsed, True, n=0, bounds=UNIT)
            continue
        eps = sample_episodes(pool, n_way=way, n_per_class=shot + n_query, episodes=episodes,
                              rng=ctx.rng(f"{salt}/{way}way/{shot}shot"), groups=groups)
        meter = EpisodeAccuracy()
        meter.update(episode_accuracies(embeddings, eps, n_shot=shot, geometry=ctx.geometry,
                                        device=ctx.device))
        mean, ci, n = meter.compute()
        out[name] = MetricValue(mean, True, ci95=ci, n=n, bounds=UNIT)
    ctx.details["episodes"] = episodes
    ctx.details["n_query"] = n_query
    return out


class FewShot(Task):
    """N-way K-shot nearest-prototype episodes on the ``novel`` split."""

    VERSION = "2"
    requires = frozenset({"label"})
    METRICS = {"acc_1shot": True, "acc_5shot": True}
    BOUNDS = dict.fromkeys(METRICS, UNIT)
    CONVENTION = ("nearest-prototype accuracy on N-way K-shot episodes of novel classes, prototypes and "
                  f"distances in the method's geometry; per-run ± = {CI95_CONVENTION}")

    @dataclass
    class Config:
        name: str = "few_shot"
        n_way: int = 5
        shots: list[int] = field(default_factory=lambda: [1, 5])
        n_query: int = 15
        episodes: int = 600
        split: str = "novel"

        def validate(self) -> None:  # before any work (harness.config.validate)
            _check_episode_config(self.name, self.n_way, list(self.shots), self.n_query, self.episodes)

    #: The annotation the model trains on (the fine label here; subclasses change it).
    TRAIN_LABEL = "label"

    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        cfg = self.cfg
        idx = dataset.split(cfg.split)
        _check_enough_classes(self.name, dataset, cfg.split, dataset.annotations["label"][idx],
                              cfg.n_way, min(int(k) for k in cfg.shots) + cfg.n_query)
        return Protocol(train=dataset.split("train"), train_label=self.TRAIN_LABEL, eval={cfg.split: idx},
                        description=self.describe())

    def describe(self) -> str:
        cfg = self.cfg
        return (f"{cfg.n_way}-way {list(cfg.shots)}-shot {cfg.n_query}-query, "
                f"{cfg.episodes} episodes on split '{cfg.split}'")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        cfg = self.cfg
        idx = ctx.protocol.eval[cfg.split]
        return episodic_metrics(ctx, ctx.annotation("label", idx), ctx.embed(idx).embeddings,
                                n_way=cfg.n_way, shots=list(cfg.shots), n_query=cfg.n_query,
                                episodes=cfg.episodes, salt=self.name,
                                metric_name=lambda k: f"acc_{k}shot")
