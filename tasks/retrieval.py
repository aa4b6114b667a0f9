"""Task ``retrieval``: class-disjoint image retrieval, Recall@K / MAP@R / NMI in the method's geometry.

Protocol of the deep metric learning benchmarks (Oh Song et al. 2016; Musgrave
et al. 2020, "A Metric Learning Reality Check"): train on the ``train``
classes (CUB-200: first 100, Cars-196: first 98, SOP: 11,318), evaluate on the
disjoint ``novel`` classes, every image querying all the others (leave-one-
out; the query is excluded from its own neighbours). Neighbours are ranked by
the method's geometry distance (:func:`retrieval_metrics` ``distance``).

Metric conventions (pytorch-metric-learning's ``AccuracyCalculator``, k=None):

* ``recall@k`` — fraction of queries with at least one same-class image among
  their k nearest (the metric-learning papers' Recall@K; ``recall@1`` equals
  PML's ``precision_at_1``);
* ``precision_at_1`` — fraction of queries whose nearest neighbour shares their class;
* ``r_precision`` — with R = number of other images of the query's class,
  the fraction of the R nearest that share it;
* ``map_at_r`` — MAP@R: ``(1/R) Σ_{i≤R} P(i)·rel(i)`` (Musgrave et al. 2020);
* ``nmi`` — normalised mutual information (scikit-learn, arithmetic mean, as
  PML) between the labels and a k-means clustering with as many clusters as
  classes (:func:`kmeans`: k-means++ seeding, Lloyd iterations to
  convergence; PML calls faiss, whose random seeding more often stops in a
  poor local optimum). Hyperbolic embeddings are clustered in the tangent space at the
  origin (the geometry's ``logmap0``: angles at the origin kept, distances to the origin
  scaled by one constant, 1/2 in the ball's coordinates, which k-means ignores);
  Euclidean ones as they are.

Queries whose class has no other image ("lone" queries) are excluded from the
neighbour metrics, as PML does, and counted. Embeddings that are all one point
(:func:`harness.diagnostics.collapsed_reason`) give ``null`` metrics with the
reason: every distance ties and the ranking would be the tie-break's.

Chance values (a random ranking), from the class sizes ``n_c`` (``n`` images,
``M = n − 1`` candidates per query, ``R = n_c − 1`` relevant): ``precision_at_1``
= ``r_precision`` = ``Σ_c n_c (n_c − 1) / (n (n − 1))``; ``recall@k`` = mean over
queries of ``1 − C(M − R, k) / C(M, k)``; ``map_at_r`` = mean over queries of
``(H_R + (R − 1)(R − H_R) / (M − 1)) / M`` (``H_R`` the R-th harmonic number). Ties among equal distances are
broken by ``torch.topk`` (unspecified order, as in PML).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.diagnostics import collapsed_reason
from harness.errors import ConfigError, Incompatible
from harness.task import UNIT, EvalContext, MetricValue, Protocol, Task
from harness.tasks._labels import integer_labels

_CHUNK_ELEMENTS = 1 << 24


def _distance_fn(distance: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if isinstance(distance, str):
        if distance != "euclidean":
            raise ValueError(f"distance must be 'euclidean', a geometry or a callable, got {distance!r}")
        from harness.geometry import euclidean_pairwise_dist

        return euclidean_pairwise_dist
    if hasattr(distance, "pairwise_dist"):
        return distance.pairwise_dist
    if callable(distance):
        return distance
    raise TypeError(f"distance must be 'euclidean', a geometry or a callable, got {type(distance).__name__}")


def _clustering_space(x: torch.Tensor, distance: Any) -> torch.Tensor:
    """Where k-means runs: a geometry's tangent space at the origin (``logmap0``; the identity for
    Euclidean geometry), else the coordinates as given."""
    logmap0 = getattr(distance, "logmap0", None)
    return logmap0(x) if callable(logmap0) else x


def kmeans(x: torch.Tensor, k: int, *, iters: int = 100, seed: int = 0) -> torch.Tensor:
    """Cluster ids ``(n,)``: k-means++ seeding (Arthur & Vassilvitskii 2007: one D²-weighted draw
    per centre; scikit-learn's default, "greedy" k-means++, keeps the best of 2 + ⌊ln k⌋ draws) then
    Lloyd iterations until the assignment stops changing or ``iters`` is
    reached; an empty cluster keeps its previous centroid. Computed in float64."""
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n, got k={k}, n={n}")
    x = x.double()
    gen = np.random.default_rng(seed)
    centroids = x.new_empty(k, x.shape[1])
    first = int(gen.integers(n))
    centroids[0] = x[first]
    closest = (x - x[first]).pow(2).sum(1)
    for j in range(1, k):
        p = closest.cpu().numpy()
        total = p.sum()
        pick = int(gen.choice(n, p=p / total)) if total > 0 else int(gen.integers(n))
        centroids[j] = x[pick]
        closest = torch.minimum(closest, (x - x[pick]).pow(2).sum(1))
    assign = torch.full((n,), -1, dtype=torch.long, device=x.device)
    chunk = max(1, _CHUNK_ELEMENTS // k)
    for _ in range(iters):
        c_sq = centroids.pow(2).sum(1)
        new = torch.cat([(c_sq[None] - 2 * x[s:s + chunk] @ centroids.T).argmin(1)
                         for s in range(0, n, chunk)])
        if torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].double()
    return assign


def retrieval_metrics(embeddings: Any, labels: Any, *, distance: Any = "euclidean",
                      ks: Sequence[int] = (1, 2, 4, 8), nmi: bool = True, kmeans_iters: int = 100,
                      seed: int = 0) -> dict[str, float]:
    """Leave-one-out retrieval metrics of ``embeddings`` ``(n, d)`` with class ``labels`` ``(n,)``.

    ``distance``: ``"euclidean"``, a geometry (its ``pairwise_dist``) or a callable
    ``(x (b, d), y (n, d)) -> (b, n)``. Returns ``recall@k`` for each k, ``precision_at_1``,
    ``r_precision``, ``map_at_r``, ``nmi`` (if asked) and ``num_lone_queries``; see the
    module docstring for the conventions. The distance matrix is never materialised: rows are
    processed in chunks, keeping the top neighbours of each.
    """
    x = torch.as_tensor(embeddings)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if x.dim() != 2 or labels.ndim != 1 or len(x) != len(labels):
        raise ValueError(f"embeddings must be (n, d) and labels (n,), got {tuple(x.shape)} and {labels.shape}")
    y = torch.from_numpy(integer_labels(labels, "labels"))
    n = len(x)
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 images, got {n}")
    bad = int((~torch.isfinite(x).all(-1)).sum())
    if bad:
        raise ValueError(f"{bad} of {n} embeddings contain NaN or inf; no metric can be computed")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > n - 1:
        raise ValueError(f"every k must be in [1, n-1] = [1, {n - 1}], got {ks}")
    dist = _distance_fn(distance)
    y = y.to(x.device)
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    if len(counts) < 2:
        raise ValueError("retrieval needs at least 2 classes: with one, every neighbour is relevant and every "
                         "metric (NMI included) is 1 whatever the embeddings")
    r_all = counts[inverse] - 1  # other images of the query's class
    k_max = max(ks[-1], int(r_all.max()))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    hits = {k: 0.0 for k in ks}
    p1 = r_prec = map_r = 0.0
    for s in range(0, n, chunk):
        d = dist(x[s:s + chunk], x)
        rows = torch.arange(len(d), device=d.device)
        d[rows, rows + s] = float("inf")  # a query is not its own neighbour
        nn = d.topk(k_max, dim=1, largest=False, sorted=True).indices
        match = (y[nn] == y[s:s + chunk, None])
        r = r_all[s:s + chunk]
        keep = r > 0
        match, r = match[keep], r[keep]
        for k in ks:
            hits[k] += float(match[:, :k].any(1).sum())
        p1 += float(match[:, 0].sum())
        within_r = torch.arange(k_max, device=d.device)[None] < r[:, None]
        rel = match & within_r
        rd = r.double()
        r_prec += float((rel.sum(1).double() / rd).sum())
        prec_at = rel.cumsum(1).double() / torch.arange(1, k_max + 1, device=d.device, dtype=torch.float64)
        map_r += float(((prec_at * rel).sum(1) / rd).sum())
    n_q = int((r_all > 0).sum())
    if n_q == 0:
        raise ValueError("every class has a single image: no query has a relevant neighbour")
    out = {f"recall@{k}": hits[k] / n_q for k in ks}
    out.update(precision_at_1=p1 / n_q, r_precision=r_prec / n_q, map_at_r=map_r / n_q,
               num_lone_queries=n - n_q)
    if nmi:
        from sklearn.metrics import normalized_mutual_info_score

        clusters = kmeans(_clustering_space(x, distance), len(counts), iters=kmeans_iters, seed=seed)
        out["nmi"] = float(normalized_mutual_info_score(y.cpu().numpy(), clusters.cpu().numpy()))
    return out


class RetrievalMetrics:
    """Torchmetrics-style shell: ``update(embeddings, labels)`` accumulates the evaluation set,
    ``compute()`` runs :func:`retrieval_metrics` on all of it (leave-one-out needs the whole set)."""

    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.reset()

    def reset(self) -> None:
        self._x: list[torch.Tensor] = []
        self._y: list[np.ndarray] = []

    def update(self, embeddings: Any, labels: Any) -> None:
        self._x.append(torch.as_tensor(embeddings))
        self._y.append(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels))

    def compute(self) -> dict[str, float]:
        if not self._x:
            raise ValueError("no embeddings to evaluate")
        return retrieval_metrics(torch.cat(self._x), np.concatenate(self._y), **self.kwargs)


class Retrieval(Task):
    """Leave-one-out retrieval on the class-disjoint ``novel`` split."""

    VERSION = "2"
    requires = frozenset({"label"})
    METRICS = {"recall@1": True, "recall@2": True, "recall@4": True, "recall@8": True,
               "recall@16": True, "recall@32": True, "precision_at_1": True, "r_precision": True,
               "map_at_r": True, "nmi": True}
    BOUNDS = dict.fromkeys(METRICS, UNIT)
    CONVENTION = ("class-disjoint test classes, each image a query against the rest (pytorch-metric-learning "
                  "conventions); Recall@K = a same-class item among the K nearest; NMI of k-means++ with one "
                  "cluster per class (Poincaré embeddings clustered after the log map at 0)")

    @dataclass
    class Config:
        name: str = "retrieval"
        ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
        split: str = "novel"
        nmi: bool = True
        kmeans_iters: int = 100

        def validate(self) -> None:  # before any work (harness.config.validate)
            bad = [k for k in self.ks if f"recall@{k}" not in Retrieval.METRICS]
            if bad or not self.ks:
                raise ConfigError(f"retrieval: ks {bad or '[]'} are not supported; choose from 1, 2, 4, 8, 16, 32")
            if self.kmeans_iters < 1:
                raise ConfigError(f"retrieval: kmeans_iters must be >= 1 (the NMI's k-means), got {self.kmeans_iters}")
            # one config per set of ks: [8, 4, 2, 1] computes what [1, 2, 4, 8] does (one hash, one row)
            self.ks = sorted(set(self.ks))

    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        cfg = self.cfg
        idx = dataset.split(cfg.split)
        if len(idx) <= max(cfg.ks):
            raise Incompatible(f"split '{cfg.split}' of dataset '{dataset.name}' has {len(idx)} images; "
                               f"recall@{max(cfg.ks)} needs more")
        return Protocol(train=dataset.split("train"), train_label="label", eval={cfg.split: idx},
                        description=f"leave-one-out retrieval on split '{cfg.split}'")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        cfg = self.cfg
        idx = ctx.protocol.eval[cfg.split]
        emb = ctx.embed(idx).embeddings
        collapsed = collapsed_reason(emb)
        if collapsed is not None:
            names = [f"recall@{k}" for k in cfg.ks] + ["precision_at_1", "r_precision", "map_at_r"]
            return {k: self.metric(k, None, reason=collapsed) for k in names + (["nmi"] if cfg.nmi else [])}
        meter = RetrievalMetrics(distance=ctx.geometry, ks=list(cfg.ks), nmi=cfg.nmi,
                                 kmeans_iters=cfg.kmeans_iters, seed=int(ctx.rng("kmeans").integers(2**31)))
        meter.update(emb.to(ctx.device), ctx.annotation("label", idx))
        res = meter.compute()
        n_q = len(idx) - res.pop("num_lone_queries")
        ctx.details.update(num_queries=n_q, num_lone_queries=len(idx) - n_q)
        return {k: self.metric(k, v, n=n_q) for k, v in res.items()}
