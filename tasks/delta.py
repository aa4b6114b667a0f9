"""Task ``delta``: Gromov δ-hyperbolicity of a method's embeddings and of the backbone's features.

The estimators (exact, certified bracket, the published sampling protocols) are
:mod:`harness.tasks.delta_estimators`; ``harness delta FILE`` is :mod:`harness.tasks.delta_cli`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.diagnostics import collapsed_reason
from harness.errors import ConfigError, Incompatible
from harness.task import NON_NEGATIVE, EvalContext, MetricValue, Protocol, Task
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
    bound, with the upper bound in ``details``. Points that all coincide (up to float
    rounding, :func:`harness.diagnostics.collapsed_reason`) give ``null`` δ and δ_rel with
    the reason: δ_rel = 2δ/diam has no value at diam = 0, and δ would measure rounding.
    """

    VERSION = "2"
    requires = frozenset({"label"})
    METRICS = {"delta_rel": False, "delta": False, "delta_rel_features": False, "delta_features": False}
    # δ_rel ≤ 1 holds in a metric space only; a geometry's distance need not be one
    BOUNDS = dict.fromkeys(METRICS, NON_NEGATIVE)
    UNRANKED = {name: "δ is in the units of each geometry's own metric; only δ_rel = 2δ/diam is compared"
                for name in ("delta", "delta_features")}

    @classmethod
    def metric_header(cls, name: str, details: list[dict[str, Any]]) -> str:
        """``delta_rel [exact, 1000 pts]``: the estimator(s) that produced the column and the number of points
        they read (``max_points`` drawn from the split with the cell's seed; from the results' details)."""
        source = "delta/features" if name.endswith("_features") else "delta/embeddings"
        runs = [d[source] for d in details if isinstance(d.get(source), dict) and "estimator" in d[source]]
        used = sorted({str(r["estimator"]) for r in runs})
        sizes = sorted({int(r["n"]) for r in runs if isinstance(r.get("n"), int)})
        if sizes:
            used.append(f"{sizes[0]} pts" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]} pts")
        return f"{name} [{', '.join(used)}]" if used else name

    @dataclass
    class Config:
        name: str = "delta"
        max_points: int = 1000
        estimator: str = "auto"
        n_bases: int = DEFAULT_N_BASES
        features: bool = True

        def validate(self) -> None:  # before any work (harness.config.validate)
            if int(self.max_points) < 4:
                raise ConfigError(f"delta: max_points must be at least 4, got {self.max_points}")
            allowed = [e for e in ESTIMATORS if e != "base"]
            if self.estimator not in allowed:
                raise ConfigError(f"delta: unknown estimator {self.estimator!r}; "
                                  f"choose one of {', '.join(allowed)}")
            if self.estimator == "exact" and int(self.max_points) > EXACT_MAX_N:
                raise ConfigError(f"delta: the exact estimator is limited to {EXACT_MAX_N} points; "
                                  f"lower max_points (now {self.max_points}) or use estimator=bracket")
            if int(self.n_bases) < 1:
                raise ConfigError(f"delta: n_bases must be at least 1, got {self.n_bases}")

    def protocol(self, dataset: Any) -> Protocol:
        split = "test" if "test" in dataset.splits else "novel"
        return Protocol(train=dataset.split("train"), train_label="label",
                        eval={"test": dataset.split(split)},
                        description=f"δ-hyperbolicity of the '{split}' split (≤ {self.cfg.max_points} points)")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        idx = np.asarray(ctx.protocol.eval["test"], dtype=np.int64)
        if len(idx) < 4:
            raise Incompatible(f"task '{self.name}': the evaluation split has {len(idx)} images; δ needs 4")
        if len(idx) > self.cfg.max_points:
            pick = ctx.rng("delta/subsample").choice(len(idx), int(self.cfg.max_points), replace=False)
            idx = idx[np.sort(pick)]
        emb = ctx.embed(idx)
        kw = dict(estimator=self.cfg.estimator, n_bases=int(self.cfg.n_bases), seed=int(ctx.seed),
                  device="cuda" if ctx.device.type == "cuda" else "cpu")
        out: dict[str, MetricValue] = {}
        collapsed = collapsed_reason(emb.embeddings, "embeddings")
        if collapsed is None:
            with torch.no_grad():
                dist = ctx.geometry.pairwise_dist(emb.embeddings.to(torch.float64))
            res = delta_hyperbolicity(dist, metric="precomputed", assume_metric=True, **kw)
            ctx.details["delta/embeddings"] = _details(res, geometry=ctx.geometry.name)
        out.update(self._metrics(None if collapsed else res, collapsed, "", len(idx)))
        if self.cfg.features:
            collapsed = collapsed_reason(emb.features, "backbone features")
            res_f = None
            if collapsed is None:
                res_f = delta_hyperbolicity(emb.features, metric="euclidean", **kw)
                ctx.details["delta/features"] = _details(res_f, geometry="euclidean")
            out.update(self._metrics(res_f, collapsed, "_features", len(idx)))
        return out

    def _metrics(self, res: dict[str, Any] | None, collapsed: str | None, suffix: str, n: int) -> dict[str, MetricValue]:
        """``delta{suffix}`` and ``delta_rel{suffix}``; ``null`` with the reason when the points coincide."""
        if res is not None and not res["diameter"] > 0:
            collapsed = "all points coincide (diameter 0): δ_rel = 2δ/diam is undefined"
        if collapsed is not None:
            return {f"delta_rel{suffix}": self.metric(f"delta_rel{suffix}", None, reason=collapsed, n=n),
                    f"delta{suffix}": self.metric(f"delta{suffix}", None, reason=collapsed, n=n)}
        return {f"delta_rel{suffix}": self.metric(f"delta_rel{suffix}", res["delta_rel"], n=n),
                f"delta{suffix}": self.metric(f"delta{suffix}", res["delta"], n=n)}


def _details(res: dict[str, Any], **extra: Any) -> dict[str, Any]:
    keep = ("estimator", "n", "exact", "delta", "lower", "upper", "diameter", "delta_rel", "witness",
            "bases", "sample_size", "draws", "seed", "delta_rel_std", "seconds", "backend")
    return {**{k: res[k] for k in keep}, **extra}
