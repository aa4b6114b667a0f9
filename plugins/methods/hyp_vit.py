r"""Hyp-ViT: Ermolov et al., "Hyperbolic Vision Transformers: Combining Improvements in Metric
Learning" (CVPR 2022), and its sphere control.

Head: a bias-free linear projection to ``dim`` = 128 (orthogonal init), feature clipping
:math:`x \mapsto \min(1, r/\|x\|)\,x` with r = 2.3 (Guo et al. 2022) and the exponential map
at the origin onto the Poincaré ball of curvature -c, c = 0.1 (:class:`ToPoincare`, no
Riemannian gradient rescaling). Sphere mode (``hyp_vit_sphere``, c = 0): the projection is
L2-normalised instead.

Loss (paper §3, "pairwise cross-entropy"; released ``contrastive_loss`` and its call in
github.com/htdt/hyp_metric ``train.py``): a batch holds K classes × m images. For each ordered
pair (i, j), i ≠ j, of the m sample slots and each class a, the positive of :math:`z_{a,i}` is
:math:`z_{a,j}` and the negatives are the other classes' samples in slot j and in slot i:

.. math::
    \ell_{ij}(a) = -\log\frac{e^{-D(z_{a,i}, z_{a,j})/\tau}}
        {\sum_{b} e^{-D(z_{a,i}, z_{b,j})/\tau} + \sum_{b\ne a} e^{-D(z_{a,i}, z_{b,i})/\tau}},\qquad
    L = \sum_{i\ne j}\ \frac1K\sum_a \ell_{ij}(a)

with D the Poincaré distance (τ = 0.2), or in the sphere mode the cosine distance
:math:`1 - \langle z, z'\rangle` (τ = 0.1; the released code's logits
:math:`\langle z, z'\rangle/\tau` differ by a constant per row, which the softmax ignores).
m = 2 for SOP / In-Shop (the released default ``num_samples``), 9 for CUB / Cars
(``method=hyp_vit_cub``). Each image is seen once per batch under the released augmentation
(policy ``hyp_vit``: RandomResizedCrop scale 0.2–1 + flip): the "views" i and j of a pair
are two different images of one class.

Optimiser (paper §4, ``train.py``): AdamW, lr 3e-5 for ViT-S (1e-5 for DINO:
``method=hyp_vit_dino``), torch's default weight decay 0.01, gradient norm clipped to 3,
constant learning rate, the patch embedding frozen (``model.py`` ``freeze(body, 0)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import schedules
from harness.errors import ConfigError
from harness.geometry import EuclideanGeometry, PoincareGeometry, ToPoincare, pairwise_dist
from harness.geometry._dtype import compute_dtype
from harness.method import Batch, Method, TrainInfo

from ._balanced import class_balanced_batches

Distance = Callable[[torch.Tensor], torch.Tensor]


def cosine_distance(z: torch.Tensor) -> torch.Tensor:
    """``1 - z zᵀ`` of L2-normalised rows ``z`` (n, d) -> (n, n)."""
    return 1 - z @ z.T


def pairwise_cross_entropy(z: torch.Tensor, distance: Distance, *, tau: float) -> torch.Tensor:
    r"""Hyp-ViT's loss (module docstring) of embeddings ``z`` (K classes, m slots, d), summed over the
    m(m-1) ordered slot pairs and averaged over the K classes. ``distance`` maps (n, d) rows to their
    (n, n) distance matrix. All K·m distances are computed once and every pair's logits read from them:
    ``E[i, a, j, b] = -D(z[a, i], z[b, j]) / τ``, the denominator is ``logaddexp`` of the slot-j row and
    the slot-i row with the anchor itself masked. Half-precision embeddings (AMP) are computed in
    float32 with autocast off, and the loss is float32: logits ``D/τ`` of a few tens would lose their
    second digit in bf16.
    """
    if z.dim() != 3 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(f"pairwise_cross_entropy: z must be (K >= 2 classes, m >= 2 slots, d), got {tuple(z.shape)}")
    with torch.autocast(z.device.type, enabled=False):
        return _pairwise_cross_entropy(z.to(compute_dtype(z.dtype)), distance, tau)


def _pairwise_cross_entropy(z: torch.Tensor, distance: Distance, tau: float) -> torch.Tensor:
    k, m, d = z.shape
    e = -distance(z.reshape(k * m, d)).reshape(k, m, k, m).permute(1, 0, 3, 2) / tau  # (i, a, j, b)
    eye = torch.eye(k, dtype=torch.bool, device=z.device)
    slots = torch.arange(m, device=z.device)
    same_slot = e[slots, :, slots].masked_fill(eye, -math.inf)  # (i, a, b): slot i's row, self masked
    denom = torch.logaddexp(torch.logsumexp(e, -1), torch.logsumexp(same_slot, -1)[:, :, None])  # (i, a, j)
    positive = torch.diagonal(e, dim1=1, dim2=3)  # (i, j, a): E[i, a, j, a]
    per_pair = (denom - positive.transpose(1, 2)).mean(1)  # (i, j): mean over the K classes
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=z.device)
    return per_pair[off_diagonal].sum()


def freeze_patch_embedding(backbone: nn.Module) -> int:
    """Freeze ``backbone.patch_embed`` (timm ViTs; Hyp-ViT ``model.py`` ``freeze``, after MoCo v3) and return
    how many parameters were frozen; a backbone without one (a CNN) is left as it is (0)."""
    patch = getattr(backbone, "patch_embed", None)
    if not isinstance(patch, nn.Module):
        return 0
    params = list(patch.parameters())
    for p in params:
        p.requires_grad_(False)
    return sum(p.numel() for p in params)


def _clip_grad_norm_before_step(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the gradient norm of the optimiser's parameters right before each of its steps (Hyp-ViT's
    ``clip_grad_norm_(…, 3)``). A step pre-hook runs inside ``GradScaler.step`` after unscaling, so
    the norm is that of the true gradient under fp16 too."""
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def clip(opt, args, kwargs) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    optimizer.register_step_pre_hook(clip)


class HypViT(Method):
    """Poincaré embeddings trained with the pairwise cross-entropy on class-balanced batches."""

    VERSION = "1"
    #: The augmentation policy of the training view (released ``train.py`` ``train_tr``).
    VIEW = "hyp_vit"

    @dataclass
    class Config:
        name: str = "hyp_vit"
        dim: int = 128  # embedding size (paper §4; train.py Config.emb)
        c: float = 0.1  # curvature of the ball (paper §4; train.py hyp_c); 0 = sphere mode (hyp_vit_sphere)
        tau: float = 0.2  # temperature (paper §4; train.py t)
        clip_r: float = 2.3  # feature clipping radius before the exp map (train.py clip_r); 0 disables
        m: int = 2  # images per class in a batch (train.py num_samples: SOP / In-Shop 2, CUB / Cars 9)
        lr: float = 3e-5  # AdamW learning rate for ViT-S (paper §4; DINO 1e-5)
        weight_decay: float = 0.01  # torch AdamW default (train.py: optim.AdamW(params, lr=cfg.lr))
        grad_clip: float = 3.0  # max gradient norm (train.py clip_grad_norm_(…, 3)); 0 disables
        freeze_patch_embed: bool = True  # train.py freeze=0: only the patch embedding is frozen

        def validate(self) -> None:
            _validate(self, hyperbolic=True)

    def __init__(self, cfg: Config, backbone: nn.Module, info: TrainInfo) -> None:
        super().__init__(cfg, backbone, info)
        self.proj = nn.Linear(info.feat_dim, cfg.dim, bias=False)
        nn.init.orthogonal_(self.proj.weight)  # model.py init_model
        if cfg.c > 0:
            self.to_ball = ToPoincare(c=cfg.c, clip_r=cfg.clip_r or None, riemannian=False)
            self.geometry = PoincareGeometry(c=cfg.c)
        else:  # sphere mode: L2-normalised embeddings (model.py NormLayer), compared by the L2 distance
            self.to_ball = None
            self.geometry = EuclideanGeometry()
        self.frozen_params = freeze_patch_embedding(backbone) if cfg.freeze_patch_embed else 0

    def head(self, features: torch.Tensor) -> torch.Tensor:
        x = self.proj(features)
        return self.to_ball(x) if self.to_ball is not None else F.normalize(x, dim=-1)

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        """The loss's distance matrix of embedding rows: Poincaré, or cosine in the sphere mode."""
        return pairwise_dist(z, c=self.cfg.c) if self.cfg.c > 0 else cosine_distance(z)

    def batch_indices(self, labels: np.ndarray | None, batch_size: int,
                      rng: np.random.Generator) -> Iterable[np.ndarray]:
        return class_balanced_batches(labels, batch_size, self.cfg.m, rng, who=self.cfg.name)

    def training_step(self, batch: Batch, state) -> torch.Tensor:
        return self.loss(self.embed(batch.view(self.VIEW)), batch)

    def loss(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        m = self.cfg.m
        labels = batch.labels
        if labels is None or len(labels) % m or len(labels) < 2 * m:
            raise ValueError(f"{self.cfg.name}: a batch must hold K >= 2 classes x m={m} images "
                             f"(HypViT.batch_indices plans them); got {0 if labels is None else len(labels)} labels")
        rows = labels.reshape(-1, m)
        if not bool((rows == rows[:, :1]).all()) or len(torch.unique(rows[:, 0])) != len(rows):
            raise ValueError(f"{self.cfg.name}: the batch is not laid out as K distinct classes x m={m} consecutive "
                             "images (the plan of HypViT.batch_indices)")
        return pairwise_cross_entropy(embeddings.reshape(len(rows), m, -1), self.distance, tau=self.cfg.tau)

    def configure_optimizer(self, train) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]  # the frozen patch embedding left out
        optimizer = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        if self.cfg.grad_clip > 0:
            _clip_grad_norm_before_step(optimizer, self.cfg.grad_clip)
        return optimizer

    def lr_schedule(self, train):
        return schedules.constant()  # train.py sets no scheduler


class HypViTSphere(HypViT):
    """Hyp-ViT's Euclidean control: the same loss on L2-normalised embeddings with the cosine distance."""

    @dataclass
    class Config(HypViT.Config):
        name: str = "hyp_vit_sphere"
        c: float = 0.0  # sphere mode (train.py: hyp_c 0 "enables sphere mode"); must stay 0
        tau: float = 0.1  # the sphere's temperature (paper §4)

        def validate(self) -> None:
            _validate(self, hyperbolic=False)


def _validate(cfg: HypViT.Config, *, hyperbolic: bool) -> None:
    name = cfg.name
    if hyperbolic and not (cfg.c > 0 and math.isfinite(cfg.c)):
        raise ConfigError(f"{name}: c must be > 0 (the ball has radius 1/sqrt(c)), got {cfg.c}; "
                          "the sphere mode (c = 0) is method=hyp_vit_sphere")
    if not hyperbolic and cfg.c != 0:
        raise ConfigError(f"{name}: c must be 0 (this is the sphere control), got {cfg.c}; "
                          "for hyperbolic embeddings use method=hyp_vit")
    if not (cfg.tau > 0 and math.isfinite(cfg.tau)):
        raise ConfigError(f"{name}: tau (the temperature) must be > 0, got {cfg.tau}")
    if cfg.dim < 1:
        raise ConfigError(f"{name}: dim must be >= 1, got {cfg.dim}")
    if cfg.m < 2:
        raise ConfigError(f"{name}: m (images per class in a batch) must be >= 2 to form a positive pair, got {cfg.m}")
    if not (cfg.clip_r >= 0 and math.isfinite(cfg.clip_r)):
        raise ConfigError(f"{name}: clip_r must be >= 0 (0 disables feature clipping), got {cfg.clip_r}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"{name}: lr must be > 0, got {cfg.lr}")
    for key in ("weight_decay", "grad_clip"):
        value = getattr(cfg, key)
        if not (value >= 0 and math.isfinite(value)):
            raise ConfigError(f"{name}: {key} must be >= 0 (0 disables it), got {value}")
