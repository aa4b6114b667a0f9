r"""HACK: images assigned one-to-one to uniformly packed particles in the Poincaré ball.

Guo et al., "Unsupervised Feature Learning with Emergent Data-Driven Prototypicality"
(arXiv 2307.01421, Sec. 4). Two stages:

1. **Packing** (Sec. 4.2): N particles, one per training image, are spread uniformly over the
   ball by a repulsion energy plus a boundary term (:mod:`._uniform_packing`). It runs once,
   in :meth:`Hack.on_epoch_start` of the first epoch, and the particles are a buffer of the model
   (saved and cached with it).
2. **Assignment** (Sec. 4.3): the encoder :math:`f` (backbone → linear → ``ToPoincare``) is trained
   so that every image lands on its own particle,

   .. math:: L = \frac{1}{B}\sum_{i \in \text{batch}} d_{\mathbb D}\big(f(x_i), p_{\pi(i)}\big),

   with the one-to-one assignment :math:`\pi` re-solved by the Hungarian algorithm (scipy
   ``linear_sum_assignment`` on the Poincaré distances) *within each mini-batch* on every other
   epoch, as released (``train_assignment``: ``update_targets = (epoch + 1) % 2 == 0`` with
   epochs counted from 1, i.e. epochs 1, 3, 5, …; here ``state.epoch % reassign_every == 0``
   counting from 0). The first assignment is a random permutation.

Prototypicality is the distance to the origin, :math:`d_{\mathbb D}(0, f(x))`: small = typical
(Sec. 4.4); the geometry's ``dist0`` reads it, and a cell run with ``save_embeddings=true`` writes it
for every evaluated image (``<split>_dist0``).

The tasks evaluate the ball points by default (``embedding=projection``, the paper's output);
``embedding=backbone`` evaluates the backbone's pooled features in Euclidean geometry instead, as the
other self-supervised methods do by default (``method=hack_backbone``). The loss reads the ball points
either way, so training is the same.

``hack`` is the paper's unsupervised setting: one packing for all training images, no labels
read. The released experiments run HACK on each class separately (one model per class, N = the
class size; the paper lists joint training as future work): ``hack_per_class`` packs each class
on its own (classes share the ball; a class's particles repel only each other) and assigns images
only to particles of their class (the Hungarian cost is infinite across classes), with one encoder
for all classes instead of one per class.

Defaults are the released code's (``hyperbolic_assignment`` / particle simulation scripts): SGD
without momentum, lr 0.1 and the un-augmented view for the encoder (the released loss uses ``f1``,
the ``transform_val`` crop); particles lr 0.01, 600 full-batch steps, cosine schedule (their start and
optimiser excepted, see below); ball
dimension 2, c = 1. The paper trains the encoder 200 epochs with batch 1024; here ``train.epochs`` /
``train.batch_size`` come from the grid (set ``train.batch_size=1024`` to match; the Hungarian
step costs O(B³) per batch; ``grid=hack_prototypicality`` runs the paper's per-class protocol). With
all images in one packing (``hack``), a batch of 1,024 and the released lr 0.1 can throw every
embedding onto the ball's boundary, where no gradient reaches it; a warning says so (lower
``method.lr``). ``train.lr`` / ``train.optimizer`` / ``train.schedule`` are not used.

Not in the indexed release (``pmath.Eculidean_to_Hyperbolic``, ``h_area``, ``area_to_r``): the radius
R of the region the particles share. Read as a Poincaré norm, ``Euclidean_r = tanh 15`` is at
distance 30 from the origin; then 2r exceeds every distance in the packing and the first step
throws every particle onto the float32 projection sphere (measured). We read it as the tangent
norm the boundary term bounds, R = d(0, exp_0(u)) = 2‖u‖ = 2·tanh 15 ≈ 2 (see
:func:`._uniform_packing.pack_particles`).

Two departures from the release, for thousands of particles (``pack_init``, ``pack_optimizer``;
``pack_init=released pack_optimizer=sgd`` restores it). Measured on CPU float32 with this reading of
R, the released start and step do not spread more than tens of particles. The energy is a mean over
all ~N² close pairs, so one particle's step under plain SGD is O(1/N). The U(±0.01) start is denser
than the repulsion clip, and pairs closer than the clip feel no force, so they never separate. For
N = 300, the median distance to the origin stays 0.16 (a uniform packing: 1.35) with 93% of nearest
neighbours inside the clip; N = 2,880 stays within 0.05 of the origin. The defaults therefore start
from a draw of the uniform (volume) distribution on the region
(:func:`._uniform_packing.uniform_ball_tangents`) and step with Adam at the released lr 0.01, 600
steps, cosine. Adam's step does not shrink with N. For N = 2,880 the nearest-neighbour distance goes
from 0.0046 / 0.033 (1st percentile / median of the draw) to 0.051 / 0.064 (2r = 0.088); 0.6% of
particles keep a partner inside the clip from the draw. The median distance to the origin is 1.33
(uniform: 1.35). It costs 97 s on 2 CPU cores. Plain SGD from the same draw moves nothing (0.004 /
0.037 after 600 steps). A packing that did not spread is reported by a warning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from harness import schedules
from harness.augment import check_policy
from harness.errors import ConfigError
from harness.geometry import EuclideanGeometry, PoincareGeometry, ToPoincare, dist, dist0, pairwise_dist
from harness.geometry._dtype import proj_eps
from harness.method import Batch, Method, TrainState
from harness.plugins.methods.moco import EMBEDDINGS

from ._uniform_packing import PACK_INITS, PACK_OPTIMIZERS, pack_particles

#: HACK works on the unit Poincaré ball (released ``--c 1.0``).
C = 1.0


def hungarian_reassign(embeddings: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor | None = None
                       ) -> torch.Tensor:
    r"""Permutation ``col`` of the batch's particles minimising :math:`\sum_i d_{\mathbb D}(e_i, t_{col_i})`
    (released ``calc_optimal_target_permutation``: ``targets = targets[col_ind]``).

    ``embeddings`` and ``targets`` (B, d) on the ball; ``groups`` (B,): an image may only take a
    particle of its own group (the cost across groups is infinite; each group's images and
    particles are equal in number, so a full assignment exists). Returns ``col`` (B,) long.
    """
    from scipy.optimize import linear_sum_assignment

    with torch.no_grad():
        cost = pairwise_dist(embeddings.detach().float(), targets.float(), c=C)
        if groups is not None:
            cost = cost.masked_fill(groups[:, None] != groups[None, :], float("inf"))
    rows, cols = linear_sum_assignment(cost.cpu().double().numpy())
    return torch.as_tensor(cols[np.argsort(rows)], dtype=torch.long, device=targets.device)


class Hack(Method):
    """Encoder trained to land each image on its own uniformly packed particle (unsupervised)."""

    VERSION = "2"  # 2: the packing starts uniform on the region and steps with Adam
    supervised = False
    #: Pack and assign per class (``hack_per_class``) or over all images (``hack``).
    PER_CLASS: ClassVar[bool] = False

    @dataclass
    class Config:
        name: str = "hack"
        dim: int = 2  # ball dimension (paper Sec. 5, released --dim 2: the Poincaré disc)
        clip_r: float = 15.0  # tangent-norm clip of ToPoincare (released --max_clip_norm 15; the tanh clamp 15)
        k: float = 1.55  # repulsion exponent (released particle_embedding/hyperbolic/1.55)
        repulsion_clip: float = 0.01  # distances below it repel no more (released repulsion_loss clip_v)
        boundary_weight: float = 100.0  # released --boundary_loss_weight
        boundary_margin: float = 0.1  # released boundary_loss: relu(‖u‖ − tanh(15) + 0.1)
        #: "uniform": the particles start as a uniform draw on the region (see the module docstring);
        #: "released": as U(±init_scale) tangent vectors (released Particles)
        pack_init: str = "uniform"
        init_scale: float = 0.01  # pack_init=released: the half-width of the U(±init_scale) start
        #: "adam" (see the module docstring) | "sgd": the released run's SGD, momentum 0
        pack_optimizer: str = "adam"
        pack_steps: int = 600  # full-batch steps of the packing (released run: 600 epochs)
        pack_lr: float = 0.01  # released run: lr 0.01 (SGD), cosine
        lr: float = 0.1  # encoder SGD learning rate (released run: lr 0.1, momentum 0, cosine)
        momentum: float = 0.0  # released optim.SGD(..., momentum=0.0)
        reassign_every: int = 2  # Hungarian re-assignment every other epoch (released); 0 = never
        #: Weight of the released --with_augmentation term (off in the released default): mean Poincaré
        #: distance between the embeddings of two augmented views (``augmentation`` policy) of each image.
        augmentation_weight: float = 0.0
        augmentation: str = "crop_flip"  # released MNIST views: RandomResizedCrop + horizontal flip
        #: What the tasks evaluate: "projection" — the ball points f(x) (the paper's output, whose
        #: distance to the origin is the prototypicality); "backbone" — the pooled features before the
        #: linear map to the ball, as the other self-supervised methods' default (Euclidean geometry)
        embedding: str = "projection"

        def validate(self) -> None:
            name = self.name or "hack"
            if self.dim < 1:
                raise ConfigError(f"{name}: dim must be >= 1 (the ball dimension), got {self.dim}")
            positive = {"clip_r": self.clip_r, "k": self.k, "repulsion_clip": self.repulsion_clip,
                        "init_scale": self.init_scale, "pack_lr": self.pack_lr, "lr": self.lr}
            for key, value in positive.items():
                if not (math.isfinite(value) and value > 0):
                    raise ConfigError(f"{name}: {key} must be a finite number > 0, got {value}")
            if not (math.isfinite(self.boundary_weight) and self.boundary_weight >= 0):
                raise ConfigError(f"{name}: boundary_weight must be >= 0, got {self.boundary_weight}")
            bound = math.tanh(self.clip_r)
            if not 0 <= self.boundary_margin < bound:
                raise ConfigError(f"{name}: boundary_margin must be in [0, tanh(clip_r) = {bound:.4g}), got "
                                  f"{self.boundary_margin}: the boundary term keeps ‖u‖ ≤ tanh(clip_r) − "
                                  "margin")
            if self.pack_init not in PACK_INITS:
                raise ConfigError(f"{name}: pack_init must be one of {', '.join(PACK_INITS)}, got {self.pack_init!r}")
            if self.pack_optimizer not in PACK_OPTIMIZERS:
                raise ConfigError(f"{name}: pack_optimizer must be one of {', '.join(PACK_OPTIMIZERS)}, "
                                  f"got {self.pack_optimizer!r}")
            if self.pack_steps < 1:
                raise ConfigError(f"{name}: pack_steps must be >= 1, got {self.pack_steps}")
            if not 0 <= self.momentum < 1:
                raise ConfigError(f"{name}: momentum must be in [0, 1), got {self.momentum}")
            if not (math.isfinite(self.augmentation_weight) and self.augmentation_weight >= 0):
                raise ConfigError(f"{name}: augmentation_weight must be >= 0, got {self.augmentation_weight}")
            check_policy(f"{name}: augmentation", self.augmentation)
            if self.embedding not in EMBEDDINGS:
                raise ConfigError(f"{name}: embedding must be one of {', '.join(EMBEDDINGS)}, "
                                  f"got {self.embedding!r}")
            if self.reassign_every < 0:
                raise ConfigError(f"{name}: reassign_every must be >= 0 (0 = never re-assign), "
                                  f"got {self.reassign_every}")

    def __init__(self, cfg: Config, backbone: nn.Module, info) -> None:
        super().__init__(cfg, backbone, info)
        if info.num_train < 1:
            raise ConfigError(f"{cfg.name}: needs training images to pack particles for (num_train = 0)")
        self.geometry = PoincareGeometry(c=C) if cfg.embedding == "projection" else EuclideanGeometry()
        self.proj = nn.Linear(info.feat_dim, cfg.dim)
        # hyptorch's ToPoincare (riemannian=True by default, kept by the released Projection_Head)
        self.to_ball = ToPoincare(c=C, clip_r=cfg.clip_r, riemannian=True)
        n = info.num_train
        # Particle p_j of the packing; image i (position in the training split) is assigned p_{assignment[i]}.
        self.register_buffer("particles", torch.zeros(n, cfg.dim))
        self.register_buffer("assignment", torch.arange(n))
        self.register_buffer("packed", torch.tensor(False))
        # this epoch's embeddings on the ball's projection sphere (a tensor: no device sync per step), and all
        self._on_boundary: torch.Tensor | int = 0
        self._seen = 0
        self._boundary_warned = False

    def ball(self, images: torch.Tensor) -> torch.Tensor:
        """The images' points on the ball, f(x) = exp_0(W · backbone(x)) (what the loss reads)."""
        return self._to_ball(self.features(images))

    def _to_ball(self, features: torch.Tensor) -> torch.Tensor:
        return self.to_ball(self.proj(features))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.cfg.embedding == "backbone" else self._to_ball(features)

    # -- stage 1: packing, once ---------------------------------------------------------
    def _groups(self, state: TrainState) -> np.ndarray:
        """Group id of every training image: its class (per class) or 0."""
        n = self.info.num_train
        if not self.PER_CLASS:
            return np.zeros(n, dtype=np.int64)
        if state.labels is None or len(state.labels) != n:
            raise ConfigError(f"{self.cfg.name}: packs particles per class and needs the {n} training labels")
        return np.asarray(state.labels, dtype=np.int64)

    def pack(self, state: TrainState) -> None:
        """Stage 1 (Sec. 4.2): pack the particles and draw the first one-to-one assignment."""
        cfg = self.cfg
        groups = self._groups(state)
        _, groups = np.unique(groups, return_inverse=True)
        sizes = np.bincount(groups).tolist()
        particles, _ = pack_particles(
            sizes, dim=cfg.dim, steps=cfg.pack_steps, lr=cfg.pack_lr, k=cfg.k, boundary_weight=cfg.boundary_weight,
            boundary_margin=cfg.boundary_margin, clip_r=cfg.clip_r, repulsion_clip=cfg.repulsion_clip,
            init_scale=cfg.init_scale, generator=state.generator, device=state.device,
            schedule=schedules.cosine(), c=C, init=cfg.pack_init, optimizer=cfg.pack_optimizer,
            progress=f"{cfg.name} packing")
        # The packing returns group 0's particles first: give particle slot j of class g to the
        # j-th image of class g (in split order), then assign images to their class's slots at random.
        slots = np.argsort(groups, kind="stable")  # images sorted by group: slot s belongs to image slots[s]'s group
        order = np.empty_like(slots)
        order[slots] = np.arange(len(slots))
        self.particles.copy_(particles[torch.as_tensor(order, device=particles.device)].to(self.particles))
        perm = torch.randperm(len(groups), generator=state.generator).numpy()
        shuffled = perm[np.argsort(groups[perm], kind="stable")]  # images of each group, in random order
        assignment = np.empty(len(groups), dtype=np.int64)
        assignment[shuffled] = slots  # a random bijection within each group
        self.assignment.copy_(torch.as_tensor(assignment))
        self.packed.fill_(True)
        self._check_spread(particles, sizes)

    def _check_spread(self, particles: torch.Tensor, sizes: list[int]) -> None:
        """Warn when the packing left the particles in a clump: the median distance to the origin far
        below the region radius R = 2·tanh(clip_r) that a uniform packing fills (its median is ~0.7 R)."""
        radius = dist0(particles, c=C)
        region = 2 * math.tanh(self.cfg.clip_r)
        median = float(radius.median())
        if median < 0.25 * region:
            warnings.warn(f"{self.cfg.name}: the particle packing did not spread ({len(radius)} particles in "
                          f"{len(sizes)} group(s), largest {max(sizes)}): median distance to the origin "
                          f"{median:.3g}, a uniform packing of the region reaches ~{0.7 * region:.2f}. "
                          f"The released start and step (pack_init=released, pack_optimizer=sgd) spread "
                          "tens of particles, not thousands; use the defaults (pack_init=uniform, "
                          f"pack_optimizer=adam) or raise method.pack_steps (now {self.cfg.pack_steps})", stacklevel=2)

    def on_epoch_start(self, state: TrainState) -> None:
        if not bool(self.packed):
            self.pack(state)
        self._check_boundary(state)

    def _count_boundary(self, emb: torch.Tensor) -> None:
        """Count the batch's embeddings on the projection sphere, norm ≥ 1 − 2·eps (c = 1)."""
        with torch.no_grad():
            norm = emb.detach().norm(dim=-1)
            self._on_boundary = self._on_boundary + (norm >= 1 - 2 * proj_eps(emb.dtype)).sum()
            self._seen += len(emb)

    def _check_boundary(self, state: TrainState) -> None:
        """Warn once when, past the first quarter of training, most of an epoch's embeddings sat on the
        ball's projection sphere. There the exp map has saturated and the projection passes no gradient,
        so the loss cannot bring them back to the particles (all within distance 2 of the origin).
        Measured: ``hack`` at batch 1,024 on ``glyphs`` with the released lr 0.1 put them there in its
        first epoch (loss 4.4 → 7.8) and kept them there for 200 epochs; lr 0.01 trains (loss 0.35
        after 12 epochs)."""
        on, seen = int(self._on_boundary), self._seen
        self._on_boundary, self._seen = 0, 0
        previous = state.epoch - 1
        if self._boundary_warned or seen == 0 or previous < state.epochs / 4 or 2 * on <= seen:
            return
        self._boundary_warned = True
        warnings.warn(f"{self.cfg.name}: {on} of the {seen} embeddings of epoch {previous} lie on the ball's "
                      "boundary (the projection sphere), far beyond the particles: the exp map has saturated "
                      "there and the loss cannot bring them back. The step was too large for this backbone and "
                      f"batch: lower method.lr (now {self.cfg.lr})", stacklevel=2)

    # -- stage 2: assignment --------------------------------------------------------------
    def training_step(self, batch: Batch, state: TrainState) -> torch.Tensor:
        emb = self.ball(batch.view("none"))  # the released loss reads the un-augmented view f1
        self._count_boundary(emb)
        idx = batch.indices
        targets = self.assignment[idx]
        every = self.cfg.reassign_every
        if every and state.epoch % every == 0:
            groups = batch.labels if self.PER_CLASS else None
            if self.PER_CLASS and groups is None:
                raise ConfigError(f"{self.cfg.name}: assigns within classes and needs the batch labels")
            targets = targets[hungarian_reassign(emb, self.particles[targets], groups)]
            self.assignment[idx] = targets
        loss = dist(emb, self.particles[targets], c=C).mean()
        if self.cfg.augmentation_weight:
            views = self.ball(torch.cat([batch.view(self.cfg.augmentation), batch.view(self.cfg.augmentation)]))
            first, second = views.chunk(2)
            loss = loss + self.cfg.augmentation_weight * dist(first, second, c=C).mean()
        return loss

    def configure_optimizer(self, train: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.cfg.lr,
                               momentum=self.cfg.momentum)

    def lr_schedule(self, train: Any):
        return schedules.cosine()  # released adjust_cosine_learning_rate


def class_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of single-class batches: each class shuffled and cut into batches of at most
    ``batch_size``, the batches in random order. A one-image batch (it would break BatchNorm) joins
    the batch after it (before it, if last); the Hungarian step keeps such a mixed batch's
    assignment within classes anyway."""
    batches = []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        batches += [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    merged: list[np.ndarray] = []
    carry = None
    for b in batches:
        b = b if carry is None else np.concatenate([carry, b])
        carry = b if len(b) < 2 else None
        if carry is None:
            merged.append(b)
    if carry is not None:
        if merged:
            merged[-1] = np.concatenate([merged[-1], carry])
        else:
            merged.append(carry)
    return merged


class HackPerClass(Hack):
    """HACK as released: particles packed and images assigned within each class (reads labels).

    Batches hold one class each (:func:`class_batches`), as in the released runs, which train on
    one class at a time: the Hungarian step then re-assigns among up to ``train.batch_size``
    images of a class rather than the few a mixed batch would hold.
    """

    supervised = True
    PER_CLASS = True

    @dataclass
    class Config(Hack.Config):
        name: str = "hack_per_class"

    #: Untrained, it is HACK's network: per-class packing and assignment only change the training.
    UNTRAINED_AS: ClassVar[str | None] = "hack"

    def batch_indices(self, labels: np.ndarray | None, batch_size: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
        if labels is None:
            raise ConfigError(f"{self.cfg.name}: plans single-class batches and needs the training labels")
        return class_batches(np.asarray(labels), batch_size, rng)
