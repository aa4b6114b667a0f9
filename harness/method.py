"""The method plugin API: a head, a loss and a geometry on top of a backbone.

A method never writes a training loop. The engine (:mod:`harness.engine`)
calls, per epoch, :meth:`Method.on_epoch_start` (pseudo-labels, Hungarian
re-assignment, re-clustering…), then per batch :meth:`Method.training_step`,
which returns the loss. Episodic methods (ProtoNet) choose their batches with
:meth:`Method.batch_indices`. Tasks read :meth:`Method.embed`,
:meth:`Method.logits` and :attr:`Method.geometry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


@dataclass
class TrainInfo:
    """What the engine tells a method before it is built."""

    feat_dim: int  # backbone output dimension
    num_classes: int  # classes of the training labels (0 for unlabelled training)
    num_train: int  # number of training images
    label_field: str | None  # annotation used as training label ("label", "coarse_label"…)
    epochs: int
    extra_labels: dict[str, np.ndarray] = field(default_factory=dict)  # other annotations of the train split


@dataclass
class Batch:
    """One training batch, already on the training device."""

    images: torch.Tensor  # float, normalised, (B, C, H, W)
    labels: torch.Tensor | None  # training labels (B,), or None for unlabelled training
    indices: torch.Tensor  # positions in the training split (B,), for per-sample state
    annotations: dict[str, torch.Tensor] = field(default_factory=dict)  # other numeric annotations


@dataclass
class TrainState:
    """Progress and services the engine offers a method at epoch boundaries."""

    epoch: int
    epochs: int
    step: int
    device: torch.device
    rng: np.random.Generator
    #: Embeds the whole training split in eval mode: returns (embeddings, features) on CPU.
    embed_train: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    labels: np.ndarray | None  # training labels of the whole split


class Method(nn.Module):
    """Base class of method plugins (subclass it, set ``geometry``, override :meth:`loss`).

    ``self.backbone`` maps images to pooled features ``(B, feat_dim)``;
    :meth:`head` maps features to embeddings in ``self.geometry``.
    """

    VERSION: ClassVar[str] = "1"
    #: Needs training labels (a task without a label field skips it).
    supervised: ClassVar[bool] = True
    #: Annotations the method needs besides the training label (e.g. ``{"coarse_label"}``).
    requires: ClassVar[frozenset[str]] = frozenset()

    @dataclass
    class Config:
        name: str = ""

    geometry: Any  # a harness.geometry geometry object (EuclideanGeometry / PoincareGeometry)

    def __init__(self, cfg: Any, backbone: nn.Module, info: TrainInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.info = info

    # -- what subclasses implement ----------------------------------------------
    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(B, feat_dim)`` → embeddings in :attr:`geometry` ``(B, dim)``."""
        return features

    def loss(self, embeddings: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The training loss of one batch of embeddings."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss()")

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        """Class scores ``(B, num_classes)`` for OOD scores (MSP, energy); None if no classifier."""
        return None

    # -- optional hooks ------------------------------------------------------------
    def training_step(self, batch: Batch, state: TrainState) -> torch.Tensor:
        """Loss of one batch. Override for several views, queues, momentum encoders."""
        return self.loss(self.embed(batch.images), batch)

    def on_epoch_start(self, state: TrainState) -> None:
        """Called before each epoch (re-clustering, pseudo-labels, re-assignment)."""

    def batch_indices(self, labels: np.ndarray | None, batch_size: int,
                      rng: np.random.Generator) -> Iterator[np.ndarray] | None:
        """Batches of one epoch as index arrays into the train split; None = shuffled batches."""
        return None

    # -- shared behaviour ---------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, feat_dim)``."""
        return self.backbone(images)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images → embeddings in :attr:`geometry`."""
        return self.head(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)
