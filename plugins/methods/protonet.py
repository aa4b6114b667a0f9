r"""Prototypical networks trained on episodes: Euclidean, hyperbolic and fixed-radius.

One episode (Snell et al., NeurIPS 2017, "Prototypical Networks for Few-shot
Learning", Alg. 1): ``train_way`` classes, ``shot`` support and ``query`` query
images of each. Prototypes are a midpoint of each class's support embeddings;
a query's logits are minus its distances to the prototypes over a temperature
T, trained with cross-entropy:

.. math:: \mathcal L = -\frac{1}{|Q|}\sum_{(x, y)\in Q}\log
          \frac{\exp(-d(f(x), \mathbf p_y)/T)}{\sum_k \exp(-d(f(x), \mathbf p_k)/T)}

* ``protonet`` (Snell et al. 2017, Eq. 1-2): Euclidean features, mean prototypes,
  :math:`d = \|x - p\|^2` (squared), Adam 1e-3.
* ``hyperbolic_protonet`` (Khrulkov et al., CVPR 2020, "Hyperbolic Image
  Embeddings", §3 "Hyperbolic averaging" and the few-shot experiments): features mapped to the Poincaré ball by
  ``ToPoincare`` (exp map at 0, projection to radius :math:`(1-10^{-3})/\sqrt c`, the
  Riemannian gradient rescaling :math:`(1-c\|y\|^2)^2/4`), Einstein-midpoint prototypes
  ("HypAve", averaged in the Klein model), :math:`d = d_c` the Poincaré distance
  (unsquared), T = 1, with their released code's artanh clamp (below).
* ``fixed_radius_protonet`` (Moreira et al., WACV 2024, "Hyperbolic vs Euclidean
  Embeddings in Few-Shot Learning: Two Sides of the Same Coin"): the Euclidean control
  of the hyperbolic one, :math:`x \mapsto r\,x/\|x\|`, mean prototypes (not put back on
  the sphere), :math:`d = \|x - p\|` (unsquared).

All three share the episodic plan, plain Adam (``torch.optim.Adam``, no weight decay, as
the released ``train_protonet.py``; ``train.lr``, ``train.optimizer`` and
``train.weight_decay`` are not used) and step decay of the learning rate (PyTorch's
StepLR, expressed as a fraction of training: ``lr · gamma^⌊t / lr_step⌋``).

The epoch: ``episodes_per_epoch`` episodes; 0 (the default) draws as many as make
one pass over the training images (⌊N / (way·(shot+query))⌋, at least 1), so that
``train.epochs`` buys an episodic method the same number of images as a batch method.
Khrulkov et al. use 100 episodes per epoch and 200 epochs (the named variants).

Defaults: the released miniImageNet 5-shot setting (``configs/mini/conv4_5s.sh``: 20-way
5-shot episodes, 15 queries, Adam 5e-3, StepLR 60 of 200 epochs with γ = 0.8, c = 0.005), with
the harness's epoch. Why this one on the CPU: a 20-way 5-shot episode is 400 images, so an
epoch is a few large steps (7 on the embedded data) instead of 36 small ones of 5-way 1-shot
(52 vs 18 images/s in our runs), and one model serves both the 1-shot and the 5-shot
evaluation as well as 5-way 1-shot training does (embedded data, seed 0, 1-/5-shot accuracy:
20-way 5-shot 0.55 / 0.76 at c = 0.01, 5-way 1-shot 0.59 / 0.71; c = 0.05 falls to 0.37 / 0.49,
c = 0.001 gives 0.66 / 0.76). The controls use the same plan,
optimiser and schedule; ``protonet`` keeps Snell et al.'s lr 1e-3 and ``fixed_radius_protonet``
the 5-shot radius r = 12 of Moreira et al.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError, HarnessError
from harness.geometry import EuclideanGeometry, PoincareGeometry, ToPoincare, pairwise_dist
from harness.method import Batch, Method
from harness.tasks._episodes import class_pool, sample_episodes


def episode_plan(labels: np.ndarray, *, way: int, shot: int, query: int, episodes: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """``episodes`` training episodes as index arrays into ``labels`` (Snell et al. 2017, Alg. 1).

    Each episode draws ``way`` distinct classes and ``shot + query`` distinct images of
    each (:func:`harness.tasks._episodes.sample_episodes`, the sampler of the few-shot
    tasks), laid out as hyptorch's ``CategoriesSampler``: ``shot + query`` rows of ``way``
    images, row i holding the i-th image of every class; the first ``shot`` rows are the
    support. Classes with fewer than ``shot + query`` images are left out. With too few
    classes (or images) for the configured episode, the way (or the number of queries)
    shrinks to what the split holds, with a warning.
    """
    if labels is None:
        raise HarnessError("an episodic method needs training labels (the task gave none)")
    pool, _ = class_pool(labels, shot + query)
    if len(pool.classes) < 2:  # small data: keep every class with one query, fewer queries each
        pool, _ = class_pool(labels, shot + 1)
        if len(pool.classes) < 2:
            raise HarnessError(f"episodes need at least 2 classes with {shot + 1} images (shot={shot} "
                               f"+ 1 query); the training split has {len(pool.classes)}: lower method.shot")
        fewer = int(pool.counts.min()) - shot
        warnings.warn(f"training classes hold too few images for {shot} + {query} per class: "
                      f"episodes use {fewer} queries per class", stacklevel=2)
        query = fewer
    if len(pool.classes) < way:
        warnings.warn(f"{way}-way episodes asked for, but {len(pool.classes)} training classes hold "
                      f"{shot + query} images: episodes are {len(pool.classes)}-way", stacklevel=2)
        way = len(pool.classes)
    eps = sample_episodes(pool, n_way=way, n_per_class=shot + query, episodes=episodes, rng=rng)
    return [e.T.reshape(-1) for e in eps]  # (way, shot+query) positions -> rows of `way` images


def episode_split(embeddings: torch.Tensor, labels: torch.Tensor, shot: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support ``(shot, way, d)``, queries ``(query·way, d)`` and query targets ``(query·way,)``
    of an episode laid out by :func:`episode_plan` (row-major: image i of every class)."""
    if labels is None:
        raise HarnessError("an episodic method needs training labels")
    way = int(torch.unique(labels).numel())
    n = labels.shape[0]
    if way < 2 or n % way or n // way <= shot:
        raise HarnessError(f"a batch of {n} images with {way} classes is not an episode of {shot}-shot "
                           "support plus queries; episodic methods train on their own plan (batch_indices)")
    rows = labels.view(n // way, way)
    if not bool((rows == rows[:1]).all()):
        raise HarnessError("the batch is not laid out as an episode (row i = image i of every class); "
                           "episodic methods train on their own plan (batch_indices)")
    z = embeddings.view(n // way, way, -1)
    query = n // way - shot
    target = torch.arange(way, device=embeddings.device).repeat(query)
    return z[:shot], z[shot:].reshape(query * way, -1), target


class _ClampedArtanhDistance(torch.autograd.Function):
    r"""hyptorch's ``pmath.Artanh`` clamp, written on the distance: the Poincaré distance is
    :math:`d = \tfrac{2}{\sqrt c}\operatorname{artanh} t` with :math:`t = \sqrt c\|-x\oplus_c y\|`,
    and hyptorch clamps t at :math:`1-\varepsilon` (ε = 1e-5) inside a custom autograd function
    whose backward is :math:`1/(1-t_{cl}^2)`: the value is capped at
    :math:`d_{max} = \tfrac{2}{\sqrt c}\operatorname{artanh}(1-\varepsilon)` while the gradient
    keeps flowing, scaled by :math:`(1-t^2)/(1-t_{cl}^2) = \cosh^2(b)/\cosh^2(a)`,
    :math:`a = \sqrt c\,d/2`, :math:`b = \sqrt c\,d_{max}/2`.
    """

    @staticmethod
    def forward(ctx, d: torch.Tensor, sqrt_c: float, d_max: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(d)
        ctx.sqrt_c, ctx.d_max = sqrt_c, d_max
        return d.clamp(max=d_max)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (d,) = ctx.saved_tensors
        a = ctx.sqrt_c * d / 2
        b = ctx.sqrt_c * ctx.d_max / 2
        # cosh(b)/cosh(a) = e^{b-a} (1 + e^{-2b}) / (1 + e^{-2a}), without overflow for large a
        ratio = torch.exp(b - a) * (1 + math.exp(-2 * b)) / (1 + torch.exp(-2 * a))
        return torch.where(d > ctx.d_max, grad * ratio.square(), grad), None, None


def hyptorch_clamped_dist(d: torch.Tensor, *, c: float, margin: float) -> torch.Tensor:
    """Poincaré distances ``d`` capped as hyptorch's ``dist_matrix`` caps them (artanh argument
    at ``1 - margin``, see :class:`_ClampedArtanhDistance`); ``margin=0`` leaves them exact."""
    if margin == 0:
        return d
    sc = c**0.5
    return _ClampedArtanhDistance.apply(d, sc, 2 / sc * math.atanh(1 - margin))


class _EpisodicProtoNet(Method):
    """Shared plan, optimiser and schedule of the prototypical networks; subclasses give the head,
    the prototype and the distance (:meth:`episode_logits`)."""

    @dataclass
    class Config:
        name: str = ""
        train_way: int = 20  # classes per training episode (miniImageNet 5-shot config, conv4_5s.sh)
        shot: int = 5  # support images per class in a training episode (conv4_5s.sh)
        query: int = 15  # query images per class (Snell et al. 2017 §3.2; train_protonet.py --query 15)
        episodes_per_epoch: int = 0  # 0: one pass over the training images per epoch; their code: 100
        lr: float = 1e-3  # Adam learning rate
        lr_step: float = 0.3  # StepLR step as a fraction of training: conv4_5s.sh --step 60 of 200 epochs
        gamma: float = 0.8  # StepLR factor (conv4_5s.sh --gamma 0.8)
        temperature: float = 1.0  # logits = -d / temperature (train_protonet.py --temperature 1)

        def validate(self) -> None:
            name = self.name
            if self.train_way < 2:
                raise ConfigError(f"{name}: train_way must be >= 2 (an episode compares classes), got {self.train_way}")
            if self.shot < 1 or self.query < 1:
                raise ConfigError(f"{name}: shot and query must be >= 1, got shot={self.shot}, query={self.query}")
            if self.episodes_per_epoch < 0:
                raise ConfigError(f"{name}: episodes_per_epoch must be >= 0 (0 = one pass over the "
                                  f"training images), got {self.episodes_per_epoch}")
            if not (math.isfinite(self.lr) and self.lr > 0):
                raise ConfigError(f"{name}: lr must be > 0, got {self.lr}")
            if not 0 < self.lr_step:
                raise ConfigError(f"{name}: lr_step is a fraction of training (> 0; >= 1 never decays), "
                                  f"got {self.lr_step}")
            if not 0 < self.gamma <= 1:
                raise ConfigError(f"{name}: gamma must lie in (0, 1], got {self.gamma}")
            if not (math.isfinite(self.temperature) and self.temperature > 0):
                raise ConfigError(f"{name}: temperature must be > 0, got {self.temperature}")

    def batch_indices(self, labels: np.ndarray | None, batch_size: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
        cfg = self.cfg
        n_episodes = cfg.episodes_per_epoch or max(
            1, self.info.num_train // (cfg.train_way * (cfg.shot + cfg.query)))
        return episode_plan(labels, way=cfg.train_way, shot=cfg.shot, query=cfg.query,
                            episodes=n_episodes, rng=rng)

    def loss(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        if embeddings.dtype in (torch.float16, torch.bfloat16):  # autocast: distances in float32
            embeddings = embeddings.float()
        support, queries, target = episode_split(embeddings, batch.labels, self.cfg.shot)
        return F.cross_entropy(self.episode_logits(support, queries) / self.cfg.temperature, target)

    def episode_logits(self, support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Support ``(shot, way, d)``, queries ``(q, d)`` → logits ``(q, way)`` before the temperature."""
        raise NotImplementedError

    def configure_optimizer(self, train: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.cfg.lr)

    def lr_schedule(self, train: Any):
        step, gamma = self.cfg.lr_step, self.cfg.gamma
        return lambda t: gamma ** math.floor(t / step + 1e-9)


class ProtoNet(_EpisodicProtoNet):
    r"""Snell et al. 2017: mean prototypes, logits :math:`-\|x - p\|^2` of the backbone features."""

    VERSION = "1"

    @dataclass
    class Config(_EpisodicProtoNet.Config):
        name: str = "protonet"
        lr: float = 1e-3  # Snell et al. 2017 §3.2: Adam, initial lr 1e-3
        # Snell halve the lr every 2000 episodes of an early-stopped run; here the same step
        # decay as hyperbolic_protonet's default, so that the two differ only in geometry and lr.

    def __init__(self, cfg: Config, backbone: nn.Module, info) -> None:
        super().__init__(cfg, backbone, info)
        self.geometry = EuclideanGeometry()

    def episode_logits(self, support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        protos = support.mean(0)
        return -self.geometry.pairwise_dist(queries, protos).square()


class HyperbolicProtoNet(_EpisodicProtoNet):
    r"""Khrulkov et al. 2020: ``ToPoincare`` + Einstein-midpoint prototypes, logits :math:`-d_c(x, p)`."""

    VERSION = "1"

    @dataclass
    class Config(_EpisodicProtoNet.Config):
        name: str = "hyperbolic_protonet"
        lr: float = 5e-3  # miniImageNet 5-shot config (configs/mini/conv4_5s.sh); CUB uses 1e-3
        c: float = 0.005  # curvature; miniImageNet 5-shot config (their settings: 0.005-0.05)
        # ToPoincare(riemannian=True), hyptorch's default: what every released run ran. conv4_5s.sh passes
        # --not-riemannian, but train_protonet.py never hands the flag to ToPoincare
        riemannian: bool = True
        proj_eps: float = 1e-3  # ball projection margin, hyptorch pmath._project; 0 = the dtype's (float64 1e-5)
        artanh_clamp: float = 1e-5  # hyptorch pmath.Artanh clamps at 1 - 1e-5; 0 = exact distances

        def validate(self) -> None:
            super().validate()
            if not (math.isfinite(self.c) and self.c > 0):
                raise ConfigError(f"{self.name}: c must be > 0 (ball radius 1/sqrt(c)), got {self.c}")
            if not 0 <= self.proj_eps < 1 or not 0 <= self.artanh_clamp < 1:
                raise ConfigError(f"{self.name}: proj_eps and artanh_clamp must lie in [0, 1) (0 = off), got "
                                  f"{self.proj_eps} and {self.artanh_clamp}")

    def __init__(self, cfg: Config, backbone: nn.Module, info) -> None:
        super().__init__(cfg, backbone, info)
        self.to_ball = ToPoincare(c=cfg.c, riemannian=cfg.riemannian, proj_eps=cfg.proj_eps or None)
        self.geometry = PoincareGeometry(c=cfg.c)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.to_ball(features)

    def episode_logits(self, support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        protos = self.geometry.midpoint(support, dim=0)  # Einstein midpoint (HypAve)
        d = pairwise_dist(queries, protos, c=self.cfg.c)
        return -hyptorch_clamped_dist(d, c=self.cfg.c, margin=self.cfg.artanh_clamp)


class FixedRadiusProtoNet(_EpisodicProtoNet):
    r"""Moreira et al. 2024: features on the sphere of radius r, mean prototypes, logits :math:`-\|x - p\|`."""

    VERSION = "1"

    @dataclass
    class Config(_EpisodicProtoNet.Config):
        name: str = "fixed_radius_protonet"
        lr: float = 5e-3  # as hyperbolic_protonet (the protocol it controls)
        r: float = 12.0  # sphere radius, tuned; their code: ~12 for 5-shot, 31.6 for 1-shot

        def validate(self) -> None:
            super().validate()
            if not (math.isfinite(self.r) and self.r > 0):
                raise ConfigError(f"{self.name}: r (the sphere radius) must be > 0, got {self.r}")

    def __init__(self, cfg: Config, backbone: nn.Module, info) -> None:
        super().__init__(cfg, backbone, info)
        self.geometry = EuclideanGeometry()

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.cfg.r * F.normalize(features, dim=-1)

    def episode_logits(self, support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return -self.geometry.pairwise_dist(queries, support.mean(0))
