"""Task ``fine_from_coarse``: train on coarse labels only, evaluate fine-grained few-shot.

Protocol of HCM (Xu et al., "Hyperbolic Space with Hierarchical Margin Boosts
Fine-Grained Learning from Coarse Labels", NeurIPS 2023, arXiv 2311.11019),
itself following ANCOR (Bukchin et al., CVPR 2021): the model trains on the
``train`` split with ``coarse_label`` only; evaluation draws episodes over the
FINE classes of the held-out ``test`` images, ``n_way``-way (5) and all-way
(every fine class with enough images in each episode), with ``shot`` support
and ``n_query`` queries per class. Scoring is :mod:`harness.tasks._episodes`
(the same batched implementation as ``few_shot``): nearest prototype (geometry
midpoint of the support) by the geometry's distance; mean accuracy in [0, 1]
with ``ci95 = 1.96 * std(acc, ddof=0) / sqrt(episodes)``.
Metrics ``acc_5way_1shot``, ``acc_5way_5shot``, ``acc_allway_1shot``, ``acc_allway_5shot``.

Drawn from all fine classes, most 5-way episodes mix coarse classes (with 12
coarse classes of 6 fine classes, 44% of them have five different coarse
classes), so they mostly test coarse separation, which coarse training teaches
directly. The intra-coarse setting (``intra_coarse``, metrics
``acc_intra_5way_1shot`` and ``acc_intra_5way_5shot``) draws all ``n_way``
classes of an episode from ONE coarse class: siblings, told apart only by
what the coarse labels never named. The coarse class is drawn uniformly among
those with at least ``n_way`` fine classes that have ``shot + n_query`` eval
images (the others are never drawn; their number is in ``details``), then
``n_way`` of its fine classes uniformly. Where no coarse class qualifies the
metric is absent, with the reason in ``details``. Chance is ``1 / n_way`` in
every setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.task import UNIT, EvalContext, MetricValue
from harness.tasks._tree import fine_to_coarse
from harness.tasks.few_shot import FewShot, _check_episode_config, episodic_metrics


class FineFromCoarse(FewShot):
    """Coarse-label training, fine-class few-shot episodes (5-way and all-way) on ``test``."""

    VERSION = "2"
    requires = frozenset({"label", "coarse_label"})
    METRICS = {"acc_5way_1shot": True, "acc_5way_5shot": True,
               "acc_allway_1shot": True, "acc_allway_5shot": True,
               "acc_intra_5way_1shot": True, "acc_intra_5way_5shot": True}
    BOUNDS = dict.fromkeys(METRICS, UNIT)
    CONVENTION = ("trained on coarse labels only (HCM, Xu et al. 2023); nearest-prototype accuracy on "
                  "5-way and all-way episodes over the fine classes of held-out images; intra = all 5 classes "
                  "of an episode are siblings under one coarse class (random 5-way episodes mostly test "
                  "coarse separation); chance = 1 / ways")

    @dataclass
    class Config:
        name: str = "fine_from_coarse"
        n_way: int = 5
        all_way: bool = True
        intra_coarse: bool = True
        shots: list[int] = field(default_factory=lambda: [1, 5])
        n_query: int = 15
        episodes: int = 600
        split: str = "test"

        def validate(self) -> None:  # before any work (harness.config.validate)
            _check_episode_config(self.name, self.n_way, list(self.shots), self.n_query, self.episodes)

    TRAIN_LABEL = "coarse_label"

    def describe(self) -> str:
        cfg = self.cfg
        settings = [f"{cfg.n_way}-way", *(["all-way"] if cfg.all_way else []),
                    *([f"intra-coarse {cfg.n_way}-way"] if cfg.intra_coarse else [])]
        return (f"train on coarse labels; fine {', '.join(settings)} {list(cfg.shots)}-shot episodes "
                f"on split '{cfg.split}'")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        cfg = self.cfg
        idx = ctx.protocol.eval[cfg.split]
        labels, emb = ctx.annotation("label", idx), ctx.embed(idx).embeddings
        common = dict(shots=list(cfg.shots), n_query=cfg.n_query, episodes=cfg.episodes, salt=self.name)
        out = episodic_metrics(ctx, labels, emb, n_way=cfg.n_way,
                               metric_name=lambda k: f"acc_{cfg.n_way}way_{k}shot", **common)
        if cfg.all_way:
            out.update(episodic_metrics(ctx, labels, emb, n_way=None,
                                        metric_name=lambda k: f"acc_allway_{k}shot", **common))
        if cfg.intra_coarse:
            parent = fine_to_coarse(labels, ctx.annotation("coarse_label", idx))
            out.update(episodic_metrics(ctx, labels, emb, n_way=cfg.n_way, group_of=parent,
                                        metric_name=lambda k: f"acc_intra_{cfg.n_way}way_{k}shot",
                                        **{**common, "salt": f"{self.name}/intra"}))
        return out
