"""Task ``delta``: Gromov δ-hyperbolicity of a method's embeddings and of the backbone's features.

The estimators (exact, certified bracket, the published sampling protocols) are
:mod:`harness.tasks.delta_estimators`; ``harness delta FILE`` is :mod:`harness.tasks.delta_cli`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.errors import ConfigError, Incompatible
from harness.task import EvalContext, MetricValue, Protocol, Task
from harness.tasks.delta_estimators import (DEFAULT_N_BASES, ESTIMATORS, EXACT_MAX_N, SAMPLED_ESTIMATORS,
                                            delta_hyperbolicity)

__all__ = ["Delta", "SAMPLED_ESTIMATORS", "delta_hyperbolicity"]


class Delta(Task):
    """δ-hyperbolicity of a method's embeddings (and of the backbone's raw features) on the eval split.

    Protocol: the model trains on ``train`` with fine labels (shared with the other tasks);
    evaluation embeds the ``test`` split (``novel`` where there is none), subsampled to
    ``max_points`` with the cell's seed. The embeddings' distances are the method's
    geometry (``ctx.geometry.pairwise_dist``), the features' are Euclidean. Metrics (lower
    δ_rel = more hyperbolic, so ``higher_is_better=False``): ``delta_rel``, ``delta``,
    ``delta_rel_features``, ``delta_features``; a bracket reports its certified lower
    bound, with the upper bound in ``details``.
    """

    VERSION = "1"
    requires = frozenset({"label"})
    METRICS = {"delta_rel": False, "delta": False, "delta_rel_features": False, "delta_features": False}

    @dataclass
    class Config:
        name: str = "delta"
        max_points: int = 1000
        estimator: str = "auto"
        n_bases: int = DEFAULT_N_BASES
        features: bool = True

    def _check_config(self) -> None:
        cfg = self.cfg
        if int(cfg.max_points) < 4:
            raise ConfigError(f"delta: max_points must be at least 4, got {cfg.max_points}")
        allowed = [e for e in ESTIMATORS if e != "base"]
        if cfg.estimator not in allowed:
            raise ConfigError(f"delta: unknown estimator {cfg.estimator!r}; choose one of {', '.join(allowed)}")
        if cfg.estimator == "exact" and int(cfg.max_points) > EXACT_MAX_N:
            raise ConfigError(f"delta: the exact estimator is limited to {EXACT_MAX_N} points; "
                              f"lower max_points (now {cfg.max_points}) or use estimator=bracket")
        if int(cfg.n_bases) < 1:
            raise ConfigError(f"delta: n_bases must be at least 1, got {cfg.n_bases}")

    def protocol(self, dataset: Any) -> Protocol:
        self._check_config()
        split = "test" if "test" in dataset.splits else "novel"
        return Protocol(train=dataset.split("train"), train_label="label",
                        eval={"test": dataset.split(split)},
                        description=f"δ-hyperbolicity of the '{split}' split (≤ {self.cfg.max_points} points)")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        self._check_config()
        idx = np.asarray(ctx.protocol.eval["test"], dtype=np.int64)
        if len(idx) < 4:
            raise Incompatible(f"task '{self.name}': the evaluation split has {len(idx)} images; δ needs 4")
        if len(idx) > self.cfg.max_points:
            pick = ctx.rng("delta/subsample").choice(len(idx), int(self.cfg.max_points), replace=False)
            idx = idx[np.sort(pick)]
        emb = ctx.embed(idx)
        kw = dict(estimator=self.cfg.estimator, n_bases=int(self.cfg.n_bases), seed=int(ctx.seed),
                  device="cuda" if ctx.device.type == "cuda" else "cpu")
        with torch.no_grad():
            dist = ctx.geometry.pairwise_dist(emb.embeddings.to(torch.float64))
        res = delta_hyperbolicity(dist, metric="precomputed", assume_metric=True, **kw)
        out = {"delta_rel": self.metric("delta_rel", res["delta_rel"], n=len(idx)),
               "delta": self.metric("delta", res["delta"], n=len(idx))}
        ctx.details["delta/embeddings"] = _details(res, geometry=ctx.geometry.name)
        if self.cfg.features:
            res_f = delta_hyperbolicity(emb.features, metric="euclidean", **kw)
            out["delta_rel_features"] = self.metric("delta_rel_features", res_f["delta_rel"], n=len(idx))
            out["delta_features"] = self.metric("delta_features", res_f["delta"], n=len(idx))
            ctx.details["delta/features"] = _details(res_f, geometry="euclidean")
        return out


def _details(res: dict[str, Any], **extra: Any) -> dict[str, Any]:
    keep = ("estimator", "n", "exact", "delta", "lower", "upper", "diameter", "delta_rel", "witness",
            "bases", "sample_size", "draws", "seed", "delta_rel_std", "seconds", "backend")
    return {**{k: res[k] for k in keep}, **extra}
