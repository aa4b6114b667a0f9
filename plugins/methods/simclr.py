r"""SimCLR: contrastive learning from two views and in-batch negatives (Chen et al., ICML 2020).

Released code: google-research/simclr (``objective.py`` ``add_contrastive_loss``,
``model_util.py`` ``projection_head``, ``lars_optimizer.py``). Two ``simclr`` views of every
image (policy ``simclr_cifar`` by default) go through the backbone f and the projection head g (2 layers as in the paper, §2.1:
Linear → BN → ReLU → Linear → BN, as the code's ``nonlinear`` head with ``num_proj_layers=2``;
no bias before a BN). With :math:`z` the L2-normalised head outputs of the 2N views and
:math:`s_{ij} = z_i\cdot z_j`, NT-Xent (paper Eq. 1) is

.. math:: \ell_{i,j} = -\log\frac{\exp(s_{ij}/\tau)}{\sum_{k\ne i}\exp(s_{ik}/\tau)},\qquad
          \mathcal L = \frac{1}{N}\sum_{k=1}^{N}\big(\ell_{2k-1,2k} + \ell_{2k,2k-1}\big)

the released ``add_contrastive_loss``'s ``loss_a + loss_b`` (the mean over each direction, summed):
twice the paper's 1/(2N) form (:func:`nt_xent`). The scale matters under LARS: the BatchNorm
parameters and biases are not adapted, so their step is lr × gradient.

Optimiser: LARS (You et al. 2017, as ``lars_optimizer.py``: classic momentum, trust ratio
η‖w‖/‖g + λw‖ with η = 0.001, BatchNorm parameters and biases excluded from weight decay and
adaptation), linear warm-up then cosine decay. Defaults are the released CIFAR-10 command
(README: lr 1.0 × B/256, weight decay 1e-4, τ = 0.5; 10 warm-up epochs of 1,000, here 1% of
training); the views are that command's (``simclr_cifar``: colour strength 0.5, no blur; the paper's
ImageNet views are the policy ``simclr``). The tasks see the backbone features (``embedding=backbone``, what SimCLR transfers)
or the normalised head output (``projection``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import check_policy
from harness.errors import ConfigError
from harness.geometry import EuclideanGeometry
from harness.method import Batch, Method, TrainState
from harness.plugins.methods.moco import EMBEDDINGS


def simclr_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's 2-layer projection head: Linear → BN → ReLU → Linear → BN (no bias before a BN; the
    last BN has no shift, as ``linear_layer(..., use_bias=False, use_bn=True)``)."""
    last_bn = nn.BatchNorm1d(out_dim)
    last_bn.bias.requires_grad_(False)  # center=False: no β on the output
    return nn.Sequential(nn.Linear(in_dim, in_dim, bias=False), nn.BatchNorm1d(in_dim), nn.ReLU(inplace=True),
                         nn.Linear(in_dim, out_dim, bias=False), last_bn)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, tau: float) -> torch.Tensor:
    """NT-Xent (SimCLR Eq. 1) of two views ``(N, d)`` each (normalised here), averaged over the 2N views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim.float() if sim.dtype.itemsize < 4 else sim, target)


class LARS(torch.optim.Optimizer):
    r"""Layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017), as SimCLR's ``LARSOptimizer``
    with classic momentum: per parameter tensor, ``g ← ∇ + λw`` (if decayed),
    ``r = η‖w‖/‖g‖`` (1 if either norm is 0, or if not adapted), ``v ← m v + lr·r·g``, ``w ← w − v``.

    Param groups carry ``weight_decay`` and ``adapt`` (False for BatchNorm parameters and biases,
    which the released code excludes from both).
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta,
                                  "adapt": True})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                ratio = 1.0
                if group["adapt"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                state = self.state[p]
                v = state.get("momentum_buffer")
                if v is None:
                    v = state["momentum_buffer"] = torch.zeros_like(p)
                v.mul_(group["momentum"]).add_(g * (group["lr"] * ratio))
                p.sub_(v)
        return loss


def lars_param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights (decayed and adapted), and BatchNorm parameters and biases (neither)."""
    plain, excluded = [], []
    for module in modules:
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                norm_layer = isinstance(sub, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
                (excluded if norm_layer or name == "bias" else plain).append(p)
    return [{"params": plain, "weight_decay": weight_decay, "adapt": True},
            {"params": excluded, "weight_decay": 0.0, "adapt": False}]


class SimCLR(Method):
    """SimCLR: NT-Xent between two ``simclr`` views, in-batch negatives, LARS."""

    VERSION = "2"  # 2: the released loss scale (loss_a + loss_b) and the CIFAR-10 command's views
    supervised = False

    @dataclass
    class Config:
        name: str = "simclr"
        dim: int = 128  # head output (paper §B.9 / README: proj_out_dim 128)
        tau: float = 0.5  # temperature (README CIFAR-10 command: --temperature=0.5)
        lr: float = 1.0  # README CIFAR-10: --learning_rate=1.0, scaled by train.batch_size / 256
        weight_decay: float = 1e-4  # README CIFAR-10: --weight_decay=1e-4
        momentum: float = 0.9  # run.py --momentum
        warmup: float = 0.01  # fraction of training: 10 warm-up epochs of the README's 1,000
        embedding: str = "backbone"  # backbone | projection
        # the two views' augmentation policy (harness list augmentations): the README's CIFAR-10 command
        # (--color_jitter_strength=0.5 --use_blur=False: crop 8-100% + resize, flip, colour distortion 0.5);
        # "simclr" is the paper's ImageNet view (App. A, adds blur, strength 1)
        augment: str = "simclr_cifar"

        def validate(self) -> None:
            if self.dim < 1:
                raise ConfigError(f"simclr: dim (the head's output size) must be >= 1, got {self.dim}")
            if not (math.isfinite(self.tau) and self.tau > 0):
                raise ConfigError(f"simclr: tau (the temperature) must be > 0, got {self.tau}")
            if not (math.isfinite(self.lr) and self.lr > 0):
                raise ConfigError(f"simclr: lr must be > 0, got {self.lr}")
            if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
                raise ConfigError(f"simclr: weight_decay must be >= 0, got {self.weight_decay}")
            if not 0 <= self.momentum < 1:
                raise ConfigError(f"simclr: momentum must be in [0, 1), got {self.momentum}")
            if not 0 <= self.warmup < 1:
                raise ConfigError(f"simclr: warmup (a fraction of training) must be in [0, 1), got {self.warmup}")
            check_policy("simclr: augment", self.augment)
            if self.embedding not in EMBEDDINGS:
                raise ConfigError(f"simclr: embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")

    def __init__(self, cfg: Config, backbone: nn.Module, info: Any) -> None:
        super().__init__(cfg, backbone, info)
        self.proj = simclr_head(info.feat_dim, cfg.dim)
        self.geometry = EuclideanGeometry()

    def head(self, features: torch.Tensor) -> torch.Tensor:
        if self.cfg.embedding == "backbone":
            return features
        return F.normalize(self.proj(features), dim=-1)

    def training_step(self, batch: Batch, state: TrainState) -> torch.Tensor:
        x1, x2 = batch.view(self.cfg.augment), batch.view(self.cfg.augment)
        z = self.proj(self.backbone(torch.cat([x1, x2])))  # one BN batch of 2N views (the code's global BN)
        return 2 * nt_xent(z[: len(x1)], z[len(x1):], tau=self.cfg.tau)  # released loss_a + loss_b

    def configure_optimizer(self, train: Any) -> torch.optim.Optimizer:
        """LARS over backbone and head, lr = ``lr`` × batch / 256 (``learning_rate_scaling=linear``)."""
        lr = self.cfg.lr * train.batch_size / 256
        return LARS(lars_param_groups([self.backbone, self.proj], self.cfg.weight_decay), lr=lr,
                    momentum=self.cfg.momentum)

    def lr_schedule(self, train: Any) -> Callable[[float], float]:
        """Linear warm-up over ``warmup`` of training, then cosine decay over the rest (``model_util.py``)."""
        w = self.cfg.warmup

        def schedule(t: float) -> float:
            if t < w:
                return t / w
            return 0.5 * (1 + math.cos(math.pi * (t - w) / (1 - w)))

        return schedule
