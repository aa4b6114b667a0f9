"""The method plugin API: a head, a loss and a geometry on top of a backbone.

A method never writes a training loop. The engine (:mod:`harness.engine`)
runs, per epoch: :meth:`Method.on_epoch_start` (pseudo-labels, Hungarian
re-assignment, re-clustering…), then that epoch's plan
:meth:`Method.batch_indices` (episodes, class-balanced batches; it may use what
``on_epoch_start`` computed), then per batch :meth:`Method.training_step` (the
loss), the optimiser step and :meth:`Method.after_step` (momentum encoders,
queues). A method may own its optimiser (:meth:`Method.configure_optimizer`)
and its learning-rate schedule (:meth:`Method.lr_schedule`), and its views of
the raw images (``batch.view(policy)``). Tasks read :meth:`Method.embed`,
:meth:`Method.logits` and :attr:`Method.geometry`.

Model key: the method's class, ``VERSION`` and full config are part of the key
of the trained-model cache, so bump ``VERSION`` when the loss or the head
changes what training produces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    label_field: str | None  # annotation used as training label ("label", "coarse_label"…), None unlabelled
    epochs: int
    #: The annotations of the training split the method declared in ``requires`` (e.g. coarse labels, boxes).
    extra_labels: dict[str, Any] = field(default_factory=dict)
    #: The training settings (``train.*``), for methods that derive their optimiser or schedule from them.
    train: Any = None
    #: (H, W) of the training images as the dataset stores them: the frame of box annotations.
    image_size: tuple[int, int] | None = None


class Batch:
    """One training batch on the training device.

    ``raw``: the uint8 images ``(B, C, H, W)`` as the dataset stores them;
    ``view(policy)``: a normalised float view of them at the backbone's input
    size, augmented by the named policy (``harness list augmentations``), one
    random draw per image; ``images``: the default view (policy
    ``train.augment``), made once on first use.
    """

    def __init__(self, *, raw: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 indices: torch.Tensor | None = None, annotations: dict[str, Any] | None = None,
                 viewer: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
                 default_policy: str = "none", images: torch.Tensor | None = None) -> None:
        if raw is None and images is None:
            raise ValueError("a Batch needs raw images or an already made view (images=)")
        self.raw = raw
        self.labels = labels  # training labels (B,), or None for unlabelled training
        self.indices = indices  # positions in the training split (B,), for per-sample state
        self.annotations = annotations or {}  # the annotations the method requires, per image
        self._viewer = viewer
        self.default_policy = default_policy
        self._images = images

    def view(self, policy: str) -> torch.Tensor:
        """A normalised float view ``(B, C, H, W)`` of the raw images under augmentation ``policy``."""
        if self._viewer is None or self.raw is None:
            raise ValueError("this batch has no raw images to make views from")
        return self._viewer(self.raw, policy)

    def view_of(self, images: torch.Tensor, policy: str) -> torch.Tensor:
        """A view of other uint8 images ``(B, C, h, w)`` made from this batch (e.g. box crops of
        :attr:`raw` by :func:`harness.augment.crop_resize`), with the same resizing, channel
        conformance, policy and normalisation as :meth:`view`."""
        if self._viewer is None:
            raise ValueError("this batch has no viewer to make views with")
        return self._viewer(images, policy)

    @property
    def images(self) -> torch.Tensor:
        """The default view (``train.augment``), made once."""
        if self._images is None:
            self._images = self.view(self.default_policy)
        return self._images

    def __len__(self) -> int:
        return len(self.raw if self.raw is not None else self._images)


@dataclass
class TrainState:
    """Progress and services the engine offers a method (at epoch boundaries and after each step)."""

    epoch: int
    epochs: int
    step: int
    device: torch.device
    rng: np.random.Generator
    #: Embeds the whole training split in eval mode: returns (embeddings, features) on CPU.
    embed_train: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    labels: np.ndarray | None  # training labels of the whole split (None for label-free methods)
    progress: float = 0.0  # fraction of training done, in [0, 1)
    optimizer: torch.optim.Optimizer | None = None
    loss: float | None = None  # the last step's loss (in after_step)
    #: A generator for the method's own random draws on the CPU (views use the engine's own).
    generator: torch.Generator | None = None


#: What the tasks call on a method's ``geometry`` (:mod:`harness.geometry.spaces`).
GEOMETRY_INTERFACE = ("pairwise_dist", "dist", "dist0", "midpoint", "class_prototypes", "logmap0", "to_json")


def build_method(cls: type, cfg: Any, backbone: nn.Module, info: TrainInfo) -> nn.Module:
    """``cls(cfg, backbone, info)``, checked (:func:`check_geometry`). An ``__init__`` that sets modules
    before calling ``super().__init__`` fails inside torch ("cannot assign module before Module.__init__()
    call", "no attribute '_modules'"); that is said as what to do."""
    try:
        method = cls(cfg, backbone, info)
    except AttributeError as exc:
        if not any(sign in str(exc) for sign in ("_modules", "_parameters", "before Module.__init__")):
            raise
        from harness.errors import PluginLoadError

        raise PluginLoadError(f"method {cls.__name__}: its __init__ must call super().__init__(cfg, backbone, info) "
                              f"before it sets any module or parameter ({exc})") from exc
    check_geometry(method)
    return method


def check_geometry(method: nn.Module) -> None:
    """A :class:`~harness.errors.PluginLoadError` when a constructed method has no ``geometry`` with the
    geometry interface: found when the model is built, not when the first task reads it after training."""
    from harness.errors import PluginLoadError

    geometry = getattr(method, "geometry", None)
    missing = [name for name in GEOMETRY_INTERFACE if not callable(getattr(geometry, name, None))]
    if missing:
        what = "sets no self.geometry" if geometry is None else \
            f"has a geometry {type(geometry).__name__} without {', '.join(missing)}"
        raise PluginLoadError(f"method {type(method).__name__} {what}: set it in __init__ to a harness.geometry "
                              "geometry (EuclideanGeometry(), PoincareGeometry(c), LorentzGeometry(c)), the space "
                              "the tasks measure its embeddings in")


class Method(nn.Module):
    """Base class of method plugins (subclass it, set ``geometry``, override :meth:`loss`).

    ``self.backbone`` maps images to pooled features ``(B, feat_dim)``;
    :meth:`head` maps features to embeddings in ``self.geometry``.
    Constructed as ``Method(cfg, backbone, info)`` with ``cfg`` an instance of
    the nested :class:`Config`, ``backbone`` a timm model and ``info`` a :class:`TrainInfo`.
    """

    VERSION: ClassVar[str] = "1"
    #: False for a reference that is evaluated untrained (``random_init``): the engine takes no step.
    TRAINS: ClassVar[bool] = True
    #: Another method whose network at initialisation is this one's (the same encoder, seeded the same
    #: way; ``hack_per_class``: ``hack``): where this method has no ``train.epochs=0`` row, the leaderboard
    #: reads its trained rows against that method's, so a grid evaluates the one untrained network once.
    UNTRAINED_AS: ClassVar[str | None] = None
    #: Reads training labels (a task without a label field skips it). A method that reads none
    #: is trained once per (dataset split, seed, config), whatever the task's label field.
    supervised: ClassVar[bool] = True
    #: Annotations the method reads besides the training label (e.g. ``{"coarse_label"}``, ``{"boxes"}``).
    requires: ClassVar[frozenset[str]] = frozenset()

    @dataclass
    class Config:
        name: str = ""

    geometry: Any  # a harness.geometry geometry object (EuclideanGeometry / PoincareGeometry / LorentzGeometry)

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
        raise NotImplementedError(f"{type(self).__name__} must implement loss() or training_step()")

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        """Class scores ``(B, num_classes)`` over the training classes; None if no classifier."""
        return None

    # -- optional hooks ------------------------------------------------------------
    def training_step(self, batch: Batch, state: TrainState) -> torch.Tensor:
        """Loss of one batch. Override for several views (``batch.view(policy)``), queues, momentum encoders."""
        return self.loss(self.embed(batch.images), batch)

    def on_epoch_start(self, state: TrainState) -> None:
        """Called before each epoch's plan is drawn (re-clustering, pseudo-labels, re-assignment)."""

    def batch_indices(self, labels: np.ndarray | None, batch_size: int,
                      rng: np.random.Generator) -> Iterable[np.ndarray] | None:
        """This epoch's batches as index arrays into the train split (called after
        :meth:`on_epoch_start`); None = shuffled batches of ``batch_size``."""
        return None

    def after_step(self, state: TrainState) -> None:
        """Called right after each optimiser step (momentum encoders, queues)."""

    def configure_optimizer(self, train: Any) -> torch.optim.Optimizer | None:
        """The optimiser (parameter groups, per-group lr; frozen parameters left out); None = the
        engine's default from ``train.*`` over every parameter that requires a gradient."""
        return None

    def lr_schedule(self, train: Any) -> Callable[[float], float] | None:
        """The learning-rate multiplier as a function of the fraction of training done (applied to
        every group's initial lr); None = ``train.schedule``. See :mod:`harness.schedules`."""
        return None

    # -- shared behaviour ---------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, feat_dim)`` (through the compiled backbone when ``train.compile`` is set)."""
        return self.__dict__.get("_compiled_backbone", self.backbone)(images)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images → embeddings in :attr:`geometry`."""
        return self.head(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)
