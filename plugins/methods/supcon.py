r"""SupCon: Khosla et al., "Supervised Contrastive Learning" (NeurIPS 2020), loss :math:`\mathcal L^{sup}_{out}`.

Two views of every image (policy ``supcon``, the released ``main_supcon.py`` augmentation:
RandomResizedCrop scale 0.2–1, flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8,
grayscale p = 0.2); a projection head ``Linear(D, D) – ReLU – Linear(D, 128)`` on the encoder
output (released ``SupConResNet``, head ``mlp``), L2-normalised to :math:`z`. With the 2N views
of a batch as anchors i, :math:`A(i)` every other view and :math:`P(i)` the views of the same
label (Eq. 2):

.. math::
    \mathcal L^{sup}_{out} = \frac{1}{2N}\sum_i \frac{-1}{|P(i)|}\sum_{p\in P(i)}
        \log\frac{\exp(z_i\cdot z_p/\tau)}{\sum_{a\in A(i)}\exp(z_i\cdot z_a/\tau)}

τ = 0.1 (the paper's setting; released README ``--temp 0.1``). The paper sums over anchors;
the released ``SupConLoss`` averages (used here, a constant factor). The released loss also carries
the factor ``temperature / base_temperature``; ``main_supcon.py`` builds ``SupConLoss(temperature=opt.temp)``
and leaves ``base_temperature`` at 0.07, so its runs at ``--temp 0.1`` scale the loss by
0.1 / 0.07 ≈ 1.43. Here the factor is 1 (the paper's Eq. 2): a loss scale, which Adam (the grid's
default optimiser) all but ignores and which under SGD equals the released lr × 0.7.

Embeddings for tasks: the projection head is discarded after training (paper §3.1) and the
encoder representation r, normalised to the unit sphere (§3.1), is measured with the Euclidean
distance. The optimiser and schedule are the grid's (``train.*``), as for the cross-entropy
baseline the paper compares with (paper: SGD momentum 0.9 / LARS, lr 0.5 at batch 1024, cosine); ``lr`` sets the
optimiser's learning rate for this method alone (``supcon_scratch``: 2e-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError
from harness.geometry import EuclideanGeometry
from harness.geometry._dtype import compute_dtype
from harness.method import Batch, Method, TrainInfo


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, *, tau: float) -> torch.Tensor:
    r""":math:`\mathcal L^{sup}_{out}` (module docstring, paper Eq. 2) of L2-normalised ``features``
    (N images, V views, d) with ``labels`` (N,), averaged over the N·V anchors. Half-precision features
    (AMP) are computed in float32 with autocast off, and the loss is float32 (logits up to 1/τ = 10 need
    more than bf16's 3 digits)."""
    if features.dim() != 3 or features.shape[1] < 2:
        raise ValueError(f"supcon_loss: features must be (N images, V >= 2 views, d), got {tuple(features.shape)}")
    if labels.shape != features.shape[:1]:
        raise ValueError(f"supcon_loss: labels must be ({features.shape[0]},), got {tuple(labels.shape)}")
    with torch.autocast(features.device.type, enabled=False):
        return _supcon_loss(features.to(compute_dtype(features.dtype)), labels, tau)


def _supcon_loss(features: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    n, v, _ = features.shape
    z = torch.cat(features.unbind(1))  # (V·N, d), view-major like the released code
    lab = labels.repeat(v)
    logits = z @ z.T / tau
    self_mask = torch.eye(n * v, dtype=torch.bool, device=z.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, -math.inf), 1, keepdim=True)
    positives = (lab[:, None] == lab[None, :]) & ~self_mask  # never empty: the anchor's other views
    mean_log_prob_pos = torch.where(positives, log_prob, 0.0).sum(1) / positives.sum(1)
    return -mean_log_prob_pos.mean()


class SupCon(Method):
    """Supervised contrastive learning on two views, projection head discarded for evaluation."""

    VERSION = "1"
    #: The augmentation policy of both views (released ``main_supcon.py`` ``train_transform``).
    VIEW = "supcon"

    @dataclass
    class Config:
        name: str = "supcon"
        dim: int = 128  # projection output (paper §3.1 D_P = 128; SupConResNet feat_dim)
        hidden: int = 0  # hidden width of the MLP head; 0 = the encoder's width (SupConResNet: Linear(dim_in, dim_in))
        tau: float = 0.1  # temperature (paper §4; released README --temp 0.1)
        lr: float = 0.0  # learning rate of the grid's optimiser (train.optimizer); 0 = train.lr

        def validate(self) -> None:
            if not (self.tau > 0 and math.isfinite(self.tau)):
                raise ConfigError(f"supcon: tau (the temperature) must be > 0, got {self.tau}")
            if self.dim < 1:
                raise ConfigError(f"supcon: dim (the projection's output size) must be >= 1, got {self.dim}")
            if not (self.lr >= 0 and math.isfinite(self.lr)):
                raise ConfigError(f"supcon: lr must be >= 0 (0 = train.lr), got {self.lr}")
            if self.hidden < 0:
                raise ConfigError(f"supcon: hidden must be >= 1, or 0 for the encoder's width; got {self.hidden}")

    def __init__(self, cfg: Config, backbone: nn.Module, info: TrainInfo) -> None:
        super().__init__(cfg, backbone, info)
        hidden = cfg.hidden or info.feat_dim
        self.projection = nn.Sequential(nn.Linear(info.feat_dim, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, cfg.dim))
        self.geometry = EuclideanGeometry()

    def configure_optimizer(self, train: Any) -> torch.optim.Optimizer | None:
        """``train.optimizer`` at this method's ``lr`` when set (else the engine's default)."""
        if not self.cfg.lr:
            return None
        from harness.engine import make_optimizer

        return make_optimizer([p for p in self.parameters() if p.requires_grad], replace(train, lr=self.cfg.lr))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The normalised encoder representation r (what the tasks measure)."""
        return F.normalize(features, dim=-1)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The training embedding z: the projection head on the encoder output, normalised."""
        return F.normalize(self.projection(features), dim=-1)

    def training_step(self, batch: Batch, state) -> torch.Tensor:
        views = torch.cat([batch.view(self.VIEW), batch.view(self.VIEW)])  # one forward pass for both views
        z = self.project(self.features(views))
        return self.loss(torch.stack(z.chunk(2), 1), batch)

    def loss(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``embeddings``: projections (N, 2 views, dim)."""
        return supcon_loss(embeddings, batch.labels, tau=self.cfg.tau)
