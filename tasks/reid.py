"""Task ``reid``: query/gallery re-identification, CMC / mAP / mINP in the method's geometry.

Metrics follow torchreid's ``eval_market1501`` (Zhou et al., torchreid,
``torchreid/metrics/rank.py``, MIT licence) exactly: for each query, gallery
items with the query's identity AND camera are removed; a query whose
identity has no remaining gallery item is skipped (counted in
``num_skipped``); CMC at rank r = fraction of valid queries whose first true
match is within the top r; AP = mean over true matches of precision at that
match (no interpolation); mAP = mean AP over valid queries. mINP is Ye et al.
2021 ("Deep Learning for Person Re-identification: A Survey and Outlook",
TPAMI, their ``eval_func``): INP = ``num_matches / rank of the last (hardest)
true match``; mINP = mean over valid queries. All values in [0, 1].

Ties among equal distances are ordered by gallery index (a stable sort); see
:mod:`harness.tasks._ranking`. Query and gallery embeddings that are all one
point (:func:`harness.diagnostics.collapsed_reason`) give ``null`` metrics with
the reason: the ranking would be the gallery order. With ``plots=true`` the
cell also writes ``cmc.png``, its CMC curve at ranks 1 … 50 (capped at the
gallery size; :func:`harness.plots.save_cmc`).

Chance (a random ranking): a query with ``m`` true matches among the ``G``
gallery items left after junk removal has ``CMC@r = 1 − C(G − m, r) / C(G, r)``
and ``E[AP] = (H_G + (m − 1)(G − H_G) / (G − 1)) / G``. The Khrulkov et al. 2020 re-ID numbers
(Market-1501, dim 128: rank-1 87.8, mAP 68.4) use this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.diagnostics import collapsed_reason
from harness.errors import Incompatible
from harness.task import UNIT, EvalContext, MetricValue, Protocol, Task
from harness.tasks._labels import integer_labels
from harness.tasks._ranking import query_stats_numba, query_stats_torch

_QUERY_CHUNK = 1024


class ReidMetrics:
    """Torchmetrics-style shell over the ranking kernels: a fixed gallery, queries in chunks.

    ``update(distmat, q_pids, q_camids)`` takes a ``(chunk, num_gallery)``
    distance block (numpy or tensor; a tensor on a GPU stays there and uses the
    torch kernel); ``compute()`` returns ``cmc`` (``(max_rank,)`` array),
    ``mAP``, ``mINP``, ``num_valid_queries`` and ``num_skipped``.
    """

    higher_is_better = True

    def __init__(self, g_pids: Any, g_camids: Any, max_rank: int = 50, backend: str = "auto") -> None:
        if backend not in ("auto", "numba", "torch"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
        self.g_pids = integer_labels(g_pids, "g_pids")
        self.g_camids = integer_labels(g_camids, "g_camids")
        if len(self.g_pids) == 0:
            raise ValueError("the gallery is empty: re-ID needs at least one gallery image")
        if len(self.g_camids) != len(self.g_pids):
            raise ValueError(f"g_pids ({len(self.g_pids)}) and g_camids ({len(self.g_camids)}) differ in length")
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        # torchreid: a gallery smaller than max_rank caps the CMC length
        self.max_rank = min(int(max_rank), len(self.g_pids))
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        self._stats: list[tuple[np.ndarray, ...]] = []

    def update(self, distmat: Any, q_pids: Any, q_camids: Any) -> None:
        q_pids, q_camids = integer_labels(q_pids, "q_pids"), integer_labels(q_camids, "q_camids")
        if tuple(distmat.shape) != (len(q_pids), len(self.g_pids)) or len(q_camids) != len(q_pids):
            raise ValueError(f"distmat has shape {tuple(distmat.shape)}; expected (num_query, num_gallery) = "
                             f"({len(q_pids)}, {len(self.g_pids)}) with {len(q_camids)} query camera ids")
        if len(q_pids) == 0:
            return
        use_torch = self.backend == "torch" or (
            self.backend == "auto" and isinstance(distmat, torch.Tensor) and distmat.device.type != "cpu")
        if use_torch:
            d = torch.as_tensor(distmat)
            finite = bool(torch.isfinite(d).all())
        else:
            d = distmat.detach().cpu().numpy() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
            finite = bool(np.isfinite(d).all())
        if not finite:  # any entry: a NaN ranks arbitrarily, whichever backend and query it falls on
            raise ValueError("distmat contains NaN or inf (check the embeddings)")
        if use_torch:
            stats = query_stats_torch(d, *(torch.as_tensor(a, device=d.device) for a in
                                           (q_pids, self.g_pids, q_camids, self.g_camids)))
        else:
            stats = query_stats_numba(d, q_pids, self.g_pids, q_camids, self.g_camids)
        self._stats.append(stats)

    def compute(self) -> dict[str, Any]:
        if not self._stats:
            raise ValueError("no queries: re-ID needs at least one query image")
        first, ap, inp, num_pos = (np.concatenate(parts) for parts in zip(*self._stats))
        valid = num_pos > 0
        n_valid = int(valid.sum())
        if n_valid == 0:
            raise ValueError(f"none of the {len(valid)} query identities appears in the gallery under "
                             "another camera: no query can be evaluated")
        hits = np.bincount(np.minimum(first[valid], self.max_rank + 1), minlength=self.max_rank + 2)
        cmc = np.cumsum(hits[1:self.max_rank + 1]) / n_valid
        return {"cmc": cmc, "mAP": float(ap[valid].mean()), "mINP": float(inp[valid].mean()),
                "num_valid_queries": n_valid, "num_skipped": int(len(valid) - n_valid)}


def evaluate_reid(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                  max_rank: int = 50, *, backend: str = "auto") -> dict[str, Any]:
    """torchreid's ``eval_market1501`` plus mINP, without sorting the distance matrix.

    ``distmat`` ``(num_query, num_gallery)``, numpy or tensor (smaller = more
    similar). Returns ``cmc`` (numpy ``(max_rank,)``; ``max_rank`` is capped at
    the gallery size as in torchreid), ``mAP``, ``mINP``,
    ``num_valid_queries`` and ``num_skipped`` (queries whose identity has no
    gallery image from another camera). Equal distances are ranked by gallery
    index (stable sort); on tie-free data the numbers equal torchreid's.
    """
    meter = ReidMetrics(g_pids, g_camids, max_rank=max_rank, backend=backend)
    meter.update(distmat, q_pids, q_camids)
    return meter.compute()


class Reid(Task):
    """Train on the identities of ``train``; rank ``gallery`` for each ``query``."""

    VERSION = "2"
    requires = frozenset({"pid", "camid"})
    METRICS = {"rank1": True, "rank5": True, "rank10": True, "mAP": True, "mINP": True}
    BOUNDS = dict.fromkeys(METRICS, UNIT)
    CONVENTION = ("CMC and mAP exactly as torchreid's eval_market1501 (same-identity same-camera gallery "
                  "items removed per query, queries without a valid match skipped); mINP as Ye et al. 2021")

    @dataclass
    class Config:
        name: str = "reid"

    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        query, gallery = dataset.split("query"), dataset.split("gallery")
        if len(query) == 0 or len(gallery) == 0:
            raise Incompatible(f"dataset '{dataset.name}' has an empty query ({len(query)}) or "
                               f"gallery ({len(gallery)}) split")
        return Protocol(train=dataset.split("train"), train_label="pid",
                        eval={"query": query, "gallery": gallery},
                        description="train on identities; Market-1501 query/gallery ranking")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        q_idx, g_idx = ctx.protocol.eval["query"], ctx.protocol.eval["gallery"]
        q_emb, g_emb = ctx.embed(q_idx).embeddings, ctx.embed(g_idx).embeddings
        for what, e in (("query", q_emb), ("gallery", g_emb)):
            bad = int((~torch.isfinite(e).all(-1)).sum())
            if bad:
                raise ValueError(f"{bad} of {len(e)} {what} embeddings contain NaN or inf")
        collapsed = collapsed_reason(torch.cat([q_emb, g_emb]), "query and gallery embeddings")
        if collapsed is not None:
            return {k: self.metric(k, None, reason=collapsed) for k in self.METRICS}
        q_pids, q_cams = ctx.annotation("pid", q_idx), ctx.annotation("camid", q_idx)
        meter = ReidMetrics(ctx.annotation("pid", g_idx), ctx.annotation("camid", g_idx), max_rank=50)
        g_dev = g_emb.to(ctx.device)
        for s in range(0, len(q_idx), _QUERY_CHUNK):
            d = ctx.geometry.pairwise_dist(q_emb[s:s + _QUERY_CHUNK].to(ctx.device), g_dev)
            meter.update(d, q_pids[s:s + _QUERY_CHUNK], q_cams[s:s + _QUERY_CHUNK])
        res = meter.compute()
        n = res["num_valid_queries"]
        out = {f"rank{r}": self.metric(f"rank{r}", res["cmc"][min(r, meter.max_rank) - 1], n=n)
               for r in (1, 5, 10)}
        out["mAP"] = self.metric("mAP", res["mAP"], n=n)
        out["mINP"] = self.metric("mINP", res["mINP"], n=n)
        ctx.details.update(num_valid_queries=n, num_skipped_queries=res["num_skipped"])
        if ctx.artifacts_dir is not None:
            from harness.plots import save_cmc

            path = save_cmc(ctx.artifacts_dir / "cmc.png", res["cmc"],
                            title=f"{ctx.dataset.name}: CMC of {n} queries, ranks 1-{meter.max_rank}")
            ctx.details["cmc_curve"] = path.name
        return out
