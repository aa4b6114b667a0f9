r"""UHML: unsupervised hyperbolic metric learning with hierarchical similarity.

Yan, Luo, Deng & Huang, "Unsupervised Hyperbolic Metric Learning" (CVPR 2021); released code
github.com/JiexiYan/UnHyperML. No label is read (``supervised = False``). Each epoch:

1. **Embed** the whole training split with the current weights (``state.embed_train()``: eval
   mode, un-augmented) into the Poincaré ball: ``z = exp_0^c(x / ‖x‖)`` with ``x`` a linear
   projection of the backbone features (Sec. 3.2, Eq. 2; the L2 normalisation before the map is
   the released ``models/BN_Inception.py``: ``Embedding(normalized=True)`` then ``ToPoincare(c=1)``).
2. **Cluster** the embeddings agglomeratively (Sec. 3.3): average linkage, Eq. 3,
   :math:`d_{ab} = \frac{1}{n_a n_b}\sum_{z_i\in C_a}\sum_{z_j\in C_b} d(z_i, z_j)`, and cut the
   dendrogram at the increasing distance thresholds :math:`\delta_1 < \dots < \delta_L`
   ("sub-clusters whose distance is less than δ will be aggregated"): level l's pseudo-labels
   are the flat clusters at :math:`\delta_l` (scipy ``fcluster(criterion="distance")``: the
   points joined at heights ≤ δ; "less than" and "≤" differ only on exact ties). Levels are
   nested (average linkage is monotone). By default δ is a multiple of this epoch's median
   pairwise distance (see *deviations*).
3. **Similarity degrees.** A pair's level :math:`h_{ij} = 1 + \#\{l : i, j \text{ apart at level } l\}`
   (1 = same finest cluster, L + 1 = apart at every level) and its degree
   :math:`s_{ij} = \Omega^{h_{ij}}` (the released ``LogRatio.py``: positives ``Omega``, a negative
   at level ``m`` ``Omega.pow(kk - m + 1)``).
4. **Loss** (log-ratio of Kim et al., "Deep Metric Learning Beyond Binary Supervision", CVPR
   2019, the paper's ref. [21]), over the triplets of a batch with an anchor a, a positive p
   (same finest cluster, p ≠ a) and a negative n (:math:`h_{an} > 1`):

   .. math:: \ell(a,p,n) = \Big(\log\frac{d(z_a,z_n)+\epsilon}{d(z_a,z_p)+\epsilon}
             - \beta\log\frac{s_{ap}}{s_{an}}\Big)^2,\qquad
             \log\frac{s_{ap}}{s_{an}} = (h_{an} - 1)\log\frac1\Omega,

   averaged over the triplets: the distance ratio of a negative to a positive is regressed onto
   :math:`\Omega^{-\beta(h_{an}-1)}` (1.26 for a negative in the anchor's coarse cluster, 1.58
   for one outside it, with the released Ω = β = 0.1), so negatives are ordered by level.
   :math:`d` is the Poincaré distance of Eq. 1, the paper's metric.

Batches are P×K over the finest pseudo-classes (the released ``FastRandomIdentitySampler``:
``num_instances`` = 8 images of each of ``batch_size / 8`` clusters, with replacement from a
cluster smaller than 8; :func:`cluster_batches`).

**Which distance the linkage uses.** The Poincaré distance (Eq. 1), the same the loss and the
evaluation tasks use. Sec. 3.3 says the clustering is "conducted in the learned hyperbolic
space", and average linkage (UPGMA) is defined for any dissimilarity (its Lance-Williams update
needs no coordinates, unlike Ward's or centroid linkage), so nothing forces the chord. Eq. 3 as
printed writes :math:`\|z_i - z_j\|`; read literally on ball coordinates that chord ignores the
metric (near the boundary a chord of 0.1 can be a hyperbolic distance of 5), and the thresholds
would then be in other units than the distances the model is trained and evaluated on. The
Euclidean control ``uhml_euclidean`` clusters by its own (Euclidean) distance.

**The released code's clustering** is offered as an option: ``linkage=ward`` (on the ball's
coordinates, as released: ``linkage(X, 'ward')``), ``cut=maxclust`` with ``n_clusters`` per level
(``for_clustering.py`` ``hierarchical_clusteirng``: CUB [100, 50], Cars [98, 49], SOP
[10000, 1000]; the method/ config variants ``uhml_released_cub`` / ``_cars`` / ``_sop``).

**Bugs of the released code that are not copied** (github.com/JiexiYan/UnHyperML, commit f51a1aa):

* ``losses/LogRatio.py`` line 12 and line 57: the loss takes ``log(sim + 1e-6)`` of raw dot
  products ``sim = inputs @ inputs.T`` of Poincaré points; a dot product is negative for any pair
  more than 90° apart, and its log is NaN (and any NaN triplet makes the summed loss NaN). Here
  the log-ratio is of distances, which are ≥ 0.
* ``losses/LogRatio.py`` line 40: the level-i "same cluster" mask compares sample k's level-i
  label with sample j's *level-0* label: entry [j, k] of ``labels[:, i].expand(n, n).eq(targets.expand(n, n).t())``
  is ``labels[k, i] == labels[j, 0]``;
  cluster ids of different levels are unrelated numberings, so the coarse-level negative masks
  (lines 41-46) are arbitrary. Here each level compares its own labels.
* ``for_clustering.py`` (``K == 3`` branch): the third level is cut with ``n_cluster[0]``
  instead of ``n_cluster[2]``, so the third level repeats the first.

**Where this deviates from the paper / release, and why** (the stored copy of the paper stops in
Sec. 3.3, before the loss is written out; the loss above is the released ``LogRatio`` structure —
anchor-positive vs anchor-negative log-ratio regressed onto Ω-power degrees, weight 0.1 — on the
paper's hyperbolic distance, with the two bugs above fixed):

* Thresholds in units of the median pairwise distance (``threshold_unit: median``; ``absolute``
  cuts at plain distances, as the paper). The log-ratio loss is invariant to the scale of the
  distances, so nothing holds that scale: measured on the default data (conv4_32, 8 epochs), the
  median pairwise distance grew from 0.51 (untrained) to 2.0-2.9, so an absolute cut that splits
  the untrained embeddings puts every image in its own cluster two epochs later, and one that
  splits the trained embeddings merges the untrained ones into a single cluster (an error says
  so). The default [0.7, 0.9] gave tens to hundreds of fine clusters and a handful to tens of
  coarse ones over a run (the paper's per-dataset thresholds are not given).
* The triplet average replaces the released sum (a constant factor per batch size; the
  released lr 1e-5 is tuned to the sum with batch 128).
* An epoch holds as many images as the training split (``n_train // batch_size`` P×K batches,
  clusters visited in shuffled passes) instead of one pass over the clusters
  (``n_clusters × 8`` images), so ``train.epochs`` means the same amount of training as for the
  other methods; the clustering is still re-done at every epoch start, as released.
* Optimiser and learning rate come from ``train.*``: the released Adam lr 1e-5 (weight decay
  5e-4, BatchNorm frozen) fine-tunes an ImageNet-pretrained BN-Inception; the harness trains its
  backbones from their initialisation within the grid's epochs.
* The linkage's O(N²) distance matrix limits the training split to some tens of thousands of
  images (released SOP runs need the same for Ward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from harness.augment import check_policy
from harness.errors import ConfigError, HarnessError
from harness.geometry import EuclideanGeometry, PoincareGeometry, ToPoincare
from harness.method import Batch, Method, TrainState

#: Added to a distance before its log (the released LogRatio's ``epsilon = 1e-6``), so that a
#: positive at distance 0 gives a finite loss.
EPS = 1e-6
LINKAGES = ("average", "ward")
CUTS = ("distance", "maxclust")
UNITS = ("median", "absolute")


def hierarchical_pseudo_labels(embeddings: torch.Tensor, geometry: Any, *, linkage: str = "average",
                               cut: str = "distance", thresholds: Sequence[float] = (),
                               threshold_unit: str = "absolute", n_clusters: Sequence[int] = ()) -> np.ndarray:
    """Pseudo hierarchical labels ``(N, L)`` (int64, 0-based per level, finest level first).

    ``linkage="average"``: UPGMA on ``geometry.pairwise_dist`` (paper Sec. 3.3, Eq. 3);
    ``"ward"``: Ward on the coordinates (released ``linkage(X, 'ward')``). ``cut="distance"``: one
    level per threshold δ (scipy ``fcluster(Z, δ, "distance")``: points joined at heights ≤ δ share a
    cluster), δ in distance units (``threshold_unit="absolute"``) or in units of the median pairwise
    distance (``"median"``); ``"maxclust"``: one level per cluster count (``fcluster(Z, k, "maxclust")``).
    """
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import squareform

    x = embeddings.detach()
    if x.dim() != 2 or len(x) < 2:
        raise ValueError(f"hierarchical clustering needs (N >= 2, d) embeddings, got {tuple(x.shape)}")
    if threshold_unit not in UNITS:
        raise ValueError(f"threshold_unit must be one of {UNITS}, got {threshold_unit!r}")
    condensed = None
    if linkage == "average" or (cut == "distance" and threshold_unit == "median"):
        with torch.no_grad():
            condensed = squareform(geometry.pairwise_dist(x.double()).cpu().numpy(), checks=False)
    if linkage == "average":
        tree = scipy_linkage(condensed, method="average")
    elif linkage == "ward":
        tree = scipy_linkage(x.double().cpu().numpy(), method="ward")
    else:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    if cut == "distance":
        unit = float(np.median(condensed)) if threshold_unit == "median" else 1.0
        cuts = [fcluster(tree, float(t) * unit, criterion="distance") for t in thresholds]
    elif cut == "maxclust":
        cuts = [fcluster(tree, int(k), criterion="maxclust") for k in n_clusters]
    else:
        raise ValueError(f"cut must be one of {CUTS}, got {cut!r}")
    if not cuts:
        raise ValueError("no level to cut: give thresholds (cut=distance) or n_clusters (cut=maxclust)")
    return np.stack([np.unique(level, return_inverse=True)[1] for level in cuts], axis=1).astype(np.int64)


def pair_levels(levels: torch.Tensor) -> torch.Tensor:
    """``h`` (B, B): 1 + the number of levels at which two samples are in different clusters
    (``levels`` (B, L), finest first): 1 = same finest cluster, L + 1 = apart at every level."""
    if levels.dim() != 2:
        raise ValueError(f"levels must be (B, L), got {tuple(levels.shape)}")
    return 1 + (levels[:, None, :] != levels[None, :, :]).sum(-1)


def hierarchical_log_ratio_loss(log_proximity: torch.Tensor, levels: torch.Tensor, *, omega: float,
                                ratio_scale: float) -> torch.Tensor:
    r"""Mean over the triplets (a, p, n) of :math:`(x_{ap} - x_{an} - \beta (h_{an} - 1)\log\frac1\Omega)^2`.

    ``log_proximity`` (B, B): :math:`x_{ij}`, larger = closer (``-log(d + ε)``, or the log of a
    similarity); ``levels`` (B, L) pseudo-labels, finest first; p: same finest cluster as a,
    p ≠ a; n: :math:`h_{an} > 1` (:func:`pair_levels`); β = ``ratio_scale``.

    Per anchor, with :math:`w_n = x_{an} + t_n` over its negatives, the sum over its
    :math:`|P||N|` triplets is :math:`|N|\sum_p (x_p-\bar x)^2 + |P|\sum_n (w_n-\bar w)^2
    + |P||N|(\bar x-\bar w)^2`: O(B²), not the O(B³) triplet tensor, without cancellation.
    A batch without a triplet gives 0 (with a gradient graph).
    """
    if log_proximity.dim() != 2 or log_proximity.shape[0] != log_proximity.shape[1]:
        raise ValueError(f"log_proximity must be (B, B), got {tuple(log_proximity.shape)}")
    if levels.shape[0] != log_proximity.shape[0]:
        raise ValueError(f"levels has {levels.shape[0]} rows for a {log_proximity.shape[0]}-sample batch")
    h = pair_levels(levels.to(log_proximity.device))
    b = h.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=h.device)
    pos = ((h == 1) & ~eye).to(log_proximity.dtype)
    neg = (h > 1).to(log_proximity.dtype)
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    count = (n_pos * n_neg).sum()
    if float(count) == 0:
        return log_proximity.sum() * 0.0
    x = log_proximity
    w = x + ratio_scale * math.log(1 / omega) * (h - 1).to(x.dtype)
    x_mean = (pos * x).sum(1) / n_pos.clamp_min(1)
    w_mean = (neg * w).sum(1) / n_neg.clamp_min(1)
    spread_pos = (pos * (x - x_mean[:, None]).square()).sum(1)
    spread_neg = (neg * (w - w_mean[:, None]).square()).sum(1)
    total = n_neg * spread_pos + n_pos * spread_neg + n_pos * n_neg * (x_mean - w_mean).square()
    return total.sum() / count


def cluster_batches(clusters: np.ndarray, *, batch_size: int, num_instances: int, n_batches: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """``n_batches`` batches over pseudo-classes, as the released ``FastRandomIdentitySampler``
    (Deep_Metric ``utils/sampler.py``) and ``DataLoader(drop_last=True)`` make them: a pass visits
    the clusters in random order and emits ``num_instances`` images of each (without replacement
    from a cluster that has as many, with replacement from a smaller one); the pass's stream is cut
    into batches of ``batch_size`` and its remainder dropped. Passes repeat until ``n_batches``
    batches are made. With ``batch_size = P·num_instances`` a batch is P clusters × K images; a pass
    shorter than a batch is one (smaller) batch."""
    if batch_size <= num_instances:
        raise ConfigError(f"a batch of {batch_size} holds at most one cluster of num_instances={num_instances}")
    ids, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    batches: list[np.ndarray] = []
    while len(batches) < n_batches:
        stream = np.concatenate([rng.choice(members[k], size=num_instances, replace=len(members[k]) < num_instances)
                                 for k in rng.permutation(len(ids))])
        cuts = range(0, len(stream) - batch_size + 1, batch_size) if len(stream) >= batch_size else [0]
        batches += [stream[s:s + batch_size] for s in cuts][:n_batches - len(batches)]
    return batches


class Uhml(Method):
    """Poincaré embeddings trained on pseudo hierarchical labels from average-link clustering (label-free)."""

    VERSION = "1"
    supervised = False
    HYPERBOLIC: ClassVar[bool] = True

    @dataclass
    class Config:
        name: str = "uhml"
        dim: int = 512  # embedding dimension (released train.py --dim 512)
        c: float = 1.0  # ball curvature (released BN_Inception.py ToPoincare(c=1.00), train.py --c 1.0)
        normalize: bool = True  # L2-normalise before the exp map (released Embedding(normalized=True))
        linkage: str = "average"  # paper Sec. 3.3, Eq. 3; "ward": released for_clustering.py
        cut: str = "distance"  # paper Sec. 3.3: distance thresholds; "maxclust": released cluster counts
        #: Increasing cut distances, finest level first (cut=distance), in units of threshold_unit. The
        #: paper gives no per-dataset values (its Fig. 4 illustrates {5, 10, 15}); see the module docstring.
        thresholds: list[float] = field(default_factory=lambda: [0.7, 0.9])
        #: "median": thresholds are multiples of the median pairwise distance of the epoch's embeddings
        #: (the loss is scale-free, so the distances drift; see the module docstring); "absolute": distances.
        threshold_unit: str = "median"
        #: Decreasing cluster counts, finest first (cut=maxclust; released CUB K=2: [100, 50]).
        n_clusters: list[int] = field(default_factory=lambda: [100, 50])
        omega: float = 0.1  # Ω of the similarity degrees s = Ω^h (released train.py --omega 0.1)
        ratio_scale: float = 0.1  # β, weight of log(s_ap/s_an) (released LogRatio.py: loss_dist - 0.1*loss_pair)
        num_instances: int = 8  # images per pseudo-class in a batch (released train.py --num_instances 8)
        #: The training view: RandomResizedCrop(scale 0.16-1) + flip (released DataSet 'rand-crop', --ratio 0.16).
        augment: str = "resized_crop_flip"

        def validate(self) -> None:
            name = self.name or "uhml"
            if self.dim < 1:
                raise ConfigError(f"{name}: dim must be >= 1 (the embedding dimension), got {self.dim}")
            if not (math.isfinite(self.c) and self.c > 0):
                raise ConfigError(f"{name}: c must be > 0 (the ball has radius 1/sqrt(c)), got {self.c}")
            if self.linkage not in LINKAGES:
                raise ConfigError(f"{name}: linkage must be one of {LINKAGES}, got {self.linkage!r}")
            if self.cut not in CUTS:
                raise ConfigError(f"{name}: cut must be one of {CUTS}, got {self.cut!r}")
            if self.threshold_unit not in UNITS:
                raise ConfigError(f"{name}: threshold_unit must be one of {UNITS}, got {self.threshold_unit!r}")
            check_policy(f"{name}: augment", self.augment)
            if self.cut == "distance":
                t = list(self.thresholds)
                if not t or not all(math.isfinite(v) and v > 0 for v in t) or any(a >= b for a, b in zip(t, t[1:])):
                    raise ConfigError(f"{name}: thresholds must be increasing positive distances, finest level "
                                      f"first (e.g. [0.7, 0.9]), got {t}")
            else:
                k = list(self.n_clusters)
                if not k or k[0] < 2 or any(a <= b for a, b in zip(k, k[1:])) or k[-1] < 1:
                    raise ConfigError(f"{name}: n_clusters must be decreasing cluster counts, finest level first, "
                                      f"the finest >= 2 (e.g. [100, 50]), got {k}")
            if not 0 < self.omega < 1:
                raise ConfigError(f"{name}: omega must be in (0, 1) (degrees Ω^h fall with the level), "
                                  f"got {self.omega}")
            if not (math.isfinite(self.ratio_scale) and self.ratio_scale > 0):
                raise ConfigError(f"{name}: ratio_scale must be > 0, got {self.ratio_scale}")
            if self.num_instances < 2:
                raise ConfigError(f"{name}: num_instances must be >= 2 (a batch needs positives), "
                                  f"got {self.num_instances}")

    def __init__(self, cfg: Config, backbone: nn.Module, info) -> None:
        super().__init__(cfg, backbone, info)
        self.proj = nn.Linear(info.feat_dim, cfg.dim)
        if self.HYPERBOLIC:
            # hyptorch's ToPoincare as released (riemannian=True, its default)
            self.to_ball: nn.Module = ToPoincare(c=cfg.c, riemannian=True)
            self.geometry = PoincareGeometry(c=cfg.c)
        else:
            self.to_ball = nn.Identity()
            self.geometry = EuclideanGeometry()
        self.pseudo_levels: torch.Tensor | None = None  # (n_train, L), re-computed every epoch
        self.cluster_counts: list[int] = []  # clusters per level at the last re-clustering

    def head(self, features: torch.Tensor) -> torch.Tensor:
        x = self.proj(features)
        if self.cfg.normalize:
            x = torch.nn.functional.normalize(x, dim=-1)
        return self.to_ball(x)

    def cluster(self, embeddings: torch.Tensor) -> np.ndarray:
        """Pseudo hierarchical labels (N, L) of ``embeddings`` under this config."""
        cfg = self.cfg
        return hierarchical_pseudo_labels(embeddings, self.geometry, linkage=cfg.linkage, cut=cfg.cut,
                                          thresholds=cfg.thresholds, threshold_unit=cfg.threshold_unit,
                                          n_clusters=cfg.n_clusters)

    def on_epoch_start(self, state: TrainState) -> None:
        embeddings, _ = state.embed_train()
        levels = self.cluster(embeddings)
        self.cluster_counts = [int(levels[:, j].max()) + 1 for j in range(levels.shape[1])]
        if self.cluster_counts[0] < 2:
            d = self.geometry.pairwise_dist(embeddings.double())
            raise ConfigError(
                f"{self.cfg.name}: at epoch {state.epoch} the finest cut put all {len(levels)} training "
                f"embeddings in one cluster (a batch would hold no negative); their distances are at most "
                f"{float(d.max()):.3g}, median {float(d.median()):.3g}. Lower method.thresholds "
                f"(now {list(self.cfg.thresholds)}, unit {self.cfg.threshold_unit}) or use method.cut=maxclust "
                "with method.n_clusters")
        self.pseudo_levels = torch.as_tensor(levels)

    def batch_indices(self, labels: np.ndarray | None, batch_size: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
        if self.pseudo_levels is None:
            raise HarnessError(f"{self.cfg.name}: no pseudo-labels yet; on_epoch_start clusters the training split")
        k = self.cfg.num_instances
        if batch_size <= k:
            raise ConfigError(f"{self.cfg.name}: train.batch_size={batch_size} holds at most one pseudo-class of "
                              f"method.num_instances={k} images (a batch needs negatives): raise train.batch_size "
                              f"above {k} (the release: 128 = 16 × 8) or lower method.num_instances")
        n = len(self.pseudo_levels)
        return cluster_batches(self.pseudo_levels[:, 0].numpy(), batch_size=batch_size, num_instances=k,
                               n_batches=max(1, n // batch_size), rng=rng)

    def loss(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.pseudo_levels is None or batch.indices is None:
            raise HarnessError(f"{self.cfg.name}: the loss needs this epoch's pseudo-labels and the batch's "
                               "indices into the training split")
        levels = self.pseudo_levels[batch.indices.cpu()]
        d = self.geometry.pairwise_dist(embeddings)
        return hierarchical_log_ratio_loss(-torch.log(d + EPS), levels, omega=self.cfg.omega,
                                           ratio_scale=self.cfg.ratio_scale)

    def training_step(self, batch: Batch, state: TrainState) -> torch.Tensor:
        return self.loss(self.embed(batch.view(self.cfg.augment)), batch)


class UhmlEuclidean(Uhml):
    """The Euclidean control: the same method on L2-normalised Euclidean embeddings."""

    HYPERBOLIC = False

    @dataclass
    class Config(Uhml.Config):
        name: str = "uhml_euclidean"
        c: float = 1.0  # unused (no ball); kept so that both configs have the same keys
