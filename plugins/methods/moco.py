r"""MoCo v2: momentum contrast with a queue of negative keys, and the machinery HCL reuses.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning" (CVPR 2020)
and Chen et al., "Improved Baselines with Momentum Contrastive Learning" (arXiv 2003.04297,
MoCo v2: MLP head, ``mocov2`` augmentation, τ = 0.2, cosine schedule). Released code:
facebookresearch/moco, ``moco/builder.py`` and ``main_moco.py``.

Two ``mocov2`` views of each image (``augment``): the query ``q = normalize(g(f(x₁)))`` goes through
the backbone f and the MLP head g, the key ``k₊ = normalize(g_k(f_k(x₂)))`` through their
momentum copies (no gradient). The loss is InfoNCE (MoCo Eq. 1) over the positive key and
the ``K`` keys of a FIFO queue of earlier batches:

.. math:: \mathcal L_q = -\log\frac{\exp(q\cdot k_+/\tau)}
          {\exp(q\cdot k_+/\tau) + \sum_{i=1}^{K}\exp(q\cdot k_i/\tau)}

— cross-entropy over the logits ``[q·k₊, q·queue] / τ`` with the positive at index 0.
After each optimiser step the momentum encoder follows the query encoder,
``θ_k ← m θ_k + (1 − m) θ_q`` (MoCo Eq. 2, parameters only; its BatchNorm statistics come
from its own forward passes, as in the released code), and the batch's keys replace the
oldest keys of the queue.

Shuffling BN (MoCo §3.3): the released code runs BatchNorm per GPU (32 images each: 256
over 8 GPUs for MoCo v2) and shuffles the key batch across GPUs, so that a query and its
positive key never share batch statistics (else the model "cheats" on them). One device
emulates it as the authors' own one-GPU demo does (``colab/moco_cifar10_demo.ipynb``,
SplitBatchNorm): the backbone runs on groups of ``bn_split_size`` images, the keys in a
random order that is undone afterwards (:func:`split_forward`).

The queue is a registered buffer (:class:`KeyQueue`): it is saved with the model, and a
model loaded from the cache has the queue it ended training with.

Embeddings for the tasks (``embedding``): ``backbone`` (default) — the backbone's pooled
features, the representation self-supervised papers transfer (linear probe, detection,
kNN); ``projection`` — the L2-normalised head output the loss sees.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import check_policy
from harness.errors import ConfigError
from harness.geometry import EuclideanGeometry
from harness.method import Batch, Method, TrainState

EMBEDDINGS = ("backbone", "projection")


def mlp_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v2's projection head (``--mlp``): Linear(d, d) → ReLU → Linear(d, out_dim)."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


@torch.no_grad()
def momentum_update(key: nn.Module, query: nn.Module, m: float) -> None:
    """``θ_k ← m θ_k + (1 − m) θ_q`` over the parameters of two modules of one architecture (MoCo Eq. 2)."""
    for pk, pq in zip(key.parameters(), query.parameters(), strict=True):
        pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, *, tau: float) -> torch.Tensor:
    """``[q·k₊, q·queue] / τ``: (N, 1 + K) logits, the positive key in column 0 (MoCo ``builder.py``).

    ``q``, ``k`` (N, d) and ``queue`` (K, d) are L2-normalised by the caller.
    """
    pos = (q * k).sum(-1, keepdim=True)
    neg = q @ queue.to(q.dtype).T
    return torch.cat([pos, neg], 1) / tau


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the positive in column 0, averaged over the rows (MoCo Eq. 1)."""
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float() if logits.dtype.itemsize < 4 else logits, target)


def split_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, split_size: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``fn`` on groups of ``split_size`` images (BatchNorm statistics per group, as per GPU).

    With a ``generator``, the batch is shuffled before the split and the outputs are put back
    in the input order (MoCo's ``_batch_shuffle_ddp`` / ``_batch_unshuffle_ddp``).
    """
    if len(x) <= split_size:  # one group: a shuffle would change nothing
        return fn(x)
    perm = torch.randperm(len(x), generator=generator).to(x.device) if generator is not None else None
    xs = x[perm] if perm is not None else x
    out = torch.cat([fn(chunk) for chunk in xs.split(split_size)])
    if perm is None:
        return out
    return out[torch.argsort(perm)]


class KeyQueue(nn.Module):
    """A FIFO queue of ``size`` keys (a registered buffer ``keys`` (size, dim), saved with the model).

    :meth:`enqueue` writes a batch over the oldest keys (a ring buffer; MoCo's
    ``_dequeue_and_enqueue``, which also accepts a batch size that does not divide the queue).
    """

    def __init__(self, initial: torch.Tensor) -> None:
        super().__init__()
        if initial.dim() != 2 or len(initial) < 1:
            raise ValueError(f"KeyQueue needs initial keys of shape (size >= 1, dim), got {tuple(initial.shape)}")
        self.register_buffer("keys", initial.clone())
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return len(self.keys)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the ``len(keys)`` oldest keys by ``keys`` (only the newest ``size`` when more)."""
        keys = keys.detach().to(self.keys.dtype)[-self.size:]
        ptr, n = int(self.ptr), len(keys)
        slots = (ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[slots] = keys
        self.ptr.fill_((ptr + n) % self.size)


def random_unit_keys(size: int, dim: int) -> torch.Tensor:
    """MoCo's initial queue: Gaussian vectors normalised to unit length (``builder.py``)."""
    return F.normalize(torch.randn(size, dim), dim=1)


def check_contrast_config(cfg: Any) -> None:
    """Checks shared by the momentum-contrast configs; a ConfigError names the key and the fix."""
    n = cfg.name
    if cfg.dim < 1:
        raise ConfigError(f"{n}: dim (the head's output size) must be >= 1, got {cfg.dim}")
    if not (math.isfinite(cfg.tau) and cfg.tau > 0):
        raise ConfigError(f"{n}: tau (the temperature) must be > 0, got {cfg.tau}")
    if cfg.queue_size < 1:
        raise ConfigError(f"{n}: queue_size must be >= 1 (the number of negative keys), got {cfg.queue_size}")
    if not 0 <= cfg.momentum < 1:
        raise ConfigError(f"{n}: momentum m of the key encoder must be in [0, 1), got {cfg.momentum}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ConfigError(f"{n}: lr must be > 0, got {cfg.lr}")
    if cfg.lr_batch_size < 1:
        raise ConfigError(f"{n}: lr_batch_size (the batch size lr is given for) must be >= 1, got {cfg.lr_batch_size}")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise ConfigError(f"{n}: weight_decay must be >= 0, got {cfg.weight_decay}")
    if not 0 <= cfg.sgd_momentum < 1:
        raise ConfigError(f"{n}: sgd_momentum must be in [0, 1), got {cfg.sgd_momentum}")
    if cfg.bn_split_size < 2:
        raise ConfigError(f"{n}: bn_split_size must be >= 2 (BatchNorm needs two images per group), "
                          f"got {cfg.bn_split_size}")
    if cfg.embedding not in EMBEDDINGS:
        raise ConfigError(f"{n}: embedding must be one of {', '.join(EMBEDDINGS)}, got {cfg.embedding!r}")
    check_policy(f"{n}: augment", cfg.augment)


class MomentumContrast(Method):
    """Shared body of MoCo-style methods: the MLP head, its momentum copy, the optimiser and schedule.

    Subclasses make their views and loss in ``training_step``, leave the keys to enqueue in
    ``self._pending`` as ``(queue, keys)`` pairs, and get the queue update and momentum step
    in :meth:`after_step`.
    """

    supervised = False

    def __init__(self, cfg: Any, backbone: nn.Module, info: Any) -> None:
        super().__init__(cfg, backbone, info)
        self.proj = mlp_head(info.feat_dim, cfg.dim)
        self.key_encoder = nn.ModuleDict({"backbone": copy.deepcopy(backbone), "proj": copy.deepcopy(self.proj)})
        self.key_encoder.requires_grad_(False)
        self.geometry = EuclideanGeometry()
        self._pending: list[tuple[KeyQueue, torch.Tensor]] = []

    def queue_length(self, n_images: int) -> int:
        """``queue_size``, capped at the number of training images: a longer queue would hold stale
        keys of the query's own image as negatives."""
        if self.cfg.queue_size > n_images:
            warnings.warn(f"{self.cfg.name}: queue_size={self.cfg.queue_size} is more than the {n_images} "
                          f"training images; the queue holds {n_images} keys", stacklevel=3)
            return n_images
        return self.cfg.queue_size

    # -- encoders ------------------------------------------------------------------------
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Head outputs ``g(f(x))`` of the query encoder (not normalised), BatchNorm per group."""
        return self.proj(split_forward(self.backbone, images, self.cfg.bn_split_size))

    @torch.no_grad()
    def key(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Head outputs of the momentum encoder (not normalised), the batch shuffled across groups."""
        enc = self.key_encoder
        return split_forward(lambda x: enc["proj"](enc["backbone"](x)), images, self.cfg.bn_split_size, generator)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        if self.cfg.embedding == "backbone":
            return features
        return F.normalize(self.proj(features), dim=-1)

    # -- loop hooks ------------------------------------------------------------------------
    def after_step(self, state: TrainState) -> None:
        for queue, keys in self._pending:
            queue.enqueue(keys)
        self._pending = []
        momentum_update(self.key_encoder["backbone"], self.backbone, self.cfg.momentum)
        momentum_update(self.key_encoder["proj"], self.proj, self.cfg.momentum)

    def configure_optimizer(self, train: Any) -> torch.optim.Optimizer:
        """SGD (momentum, weight decay) on the query encoder, lr scaled linearly with the batch
        size from ``lr`` at ``lr_batch_size`` (Goyal et al. 2017); ``train.lr`` / ``train.optimizer``
        are not used."""
        params = [p for m in (self.backbone, self.proj) for p in m.parameters() if p.requires_grad]
        lr = self.cfg.lr * train.batch_size / self.cfg.lr_batch_size
        return torch.optim.SGD(params, lr=lr, momentum=self.cfg.sgd_momentum, weight_decay=self.cfg.weight_decay)

    def lr_schedule(self, train: Any) -> Callable[[float], float]:
        """Cosine decay to 0 (``main_moco.py --cos``, there stepped per epoch, here per step)."""
        from harness.schedules import cosine

        return cosine()


class MoCoV2(MomentumContrast):
    """MoCo v2: two ``mocov2`` views, InfoNCE against a momentum key and a queue (asymmetric, as released)."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "mocov2"
        dim: int = 128  # head output (main_moco.py --moco-dim 128)
        tau: float = 0.2  # temperature (MoCo v2 paper §2: 0.2 with the MLP head)
        # Paper: 65,536 keys of 1.28M ImageNet images (5%). The embedded data has a few thousand
        # training images: 1,024 keys hold about a third of an epoch, so no key is older than ~8
        # steps at batch 128 and few are of the query's own image.
        queue_size: int = 1024
        # Paper: 0.999 over ~1M steps. On the CPU preset (~100-300 steps) a key encoder with time
        # constant 1000 steps would stay at its random init; 0.99 is the authors' own choice
        # for small data (colab/moco_cifar10_demo.ipynb, --moco-m 0.99).
        momentum: float = 0.99
        lr: float = 0.03  # main_moco.py --lr 0.03 at batch 256, scaled linearly with train.batch_size
        lr_batch_size: int = 256
        weight_decay: float = 1e-4  # main_moco.py --wd 1e-4
        sgd_momentum: float = 0.9  # main_moco.py --momentum 0.9
        bn_split_size: int = 32  # images per BatchNorm group: 256 over 8 GPUs (MoCo v2)
        embedding: str = "backbone"  # backbone | projection (what the tasks evaluate)
        augment: str = "mocov2"  # the two views' policy (main_moco.py --aug-plus; harness list augmentations)

        def validate(self) -> None:
            check_contrast_config(self)

    def __init__(self, cfg: Config, backbone: nn.Module, info: Any) -> None:
        super().__init__(cfg, backbone, info)
        self.queue = KeyQueue(random_unit_keys(self.queue_length(info.num_train), cfg.dim))

    def training_step(self, batch: Batch, state: TrainState) -> torch.Tensor:
        gen = state.generator
        x_q, x_k = batch.view(self.cfg.augment), batch.view(self.cfg.augment)
        q = F.normalize(self.query(x_q), dim=1)
        k = F.normalize(self.key(x_k, gen), dim=1)
        self._pending = [(self.queue, k)]
        return info_nce(moco_logits(q, k, self.queue.keys, tau=self.cfg.tau))
