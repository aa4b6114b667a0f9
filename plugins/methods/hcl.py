r"""HCL: Hyperbolic Contrastive Learning for visual representations beyond objects.

Ge, Mishra, Kornblith, Li & Jacobs, CVPR 2023 (arXiv 2212.00653); released code
github.com/shlokk/HCL (``moco/builder_hcl.py``, ``main_hcl.py`` and the loader
``openimages_dataset_hierarchy_diff_crop_gtbbox.py``), a MoCo v2 fork (:mod:`.moco`).

Per image with at least two boxes (the released loader redraws images with fewer), counting only
boxes of at least ``min_box`` × the longer image side squared (the loader skips boxes under 56 × 56 px):

* an **object** box ``o``, one of the image's boxes at random;
* a **scene** box, the union of 2 to ``min(n, 6) − 1`` random boxes of the image (at
  least 2) plus ``o`` if they missed it — so the scene contains the object;
* a **base** box: ``o`` enlarged at random on each side by up to ``S − side`` when
  ``o`` is smaller than ``S × S`` (``jitter_and_resize``; S = ``context`` × the image's
  longer side), else ``o``.

Euclidean loss (paper Eq. 1): two ``mocov2`` views (resized crop, jitter, grey, blur,
flip) of the base box, MoCo's InfoNCE on L2-normalised head outputs, symmetrised as the
released code does — view 1 queries the momentum key of view 2 against a queue of view-2
keys and vice versa (two queues), one cross-entropy over the 2N rows.

Hyperbolic loss (paper Eq. 2): the scene crop goes through the query encoder, the object
crop through the momentum encoder; both head outputs are mapped to the Poincaré ball of
curvature −c by ``exp_0`` (hyptorch ``ToPoincare``, with its Riemannian gradient scaling, as
released). Negatives are a queue of earlier object keys; logits are negative distances:

.. math:: \mathcal L_{hyp} = -\log\frac{\exp(-d_{\mathbb D}(z_s, z_o)/\tau)}
          {\exp(-d_{\mathbb D}(z_s, z_o)/\tau) + \sum_n \exp(-d_{\mathbb D}(z_s, z_n)/\tau)},
   \qquad d_{\mathbb D}(x, y) = \tfrac{2}{\sqrt c}\operatorname{artanh}(\sqrt c\,\|-x\oplus_c y\|)

Distances are exact. The release's hyptorch ``dist`` clamps artanh's argument at 1 − 1e-5, which caps a
distance at (2/√c)·artanh(1 − 1e-5) ≈ 54.6 for c = 0.05 (its gradient still flows, rescaled); the two
differ only once head outputs pass a norm of about 14 (``hyperbolic_protonet`` reproduces the clamp:
:func:`.protonet.hyptorch_clamped_dist`).

Both crops are resized to the input size and get jitter, grey, blur and flip
(``mocov2_nocrop``; no resized crop, as the loader's ``transform``). The total is
``L = L_euc + λ·L_hyp`` (paper Eq. 3). ``hcl_euclidean_only`` is λ = 0 on the same crops
(the paper's "HCL w/o L_hyp" ablation), the Euclidean control.

Queues are registered buffers (saved with the model). The momentum update and the
queue updates run in ``after_step`` (see :mod:`.moco`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import check_policy, crop_resize
from harness.errors import ConfigError, Incompatible
from harness.geometry import PoincareGeometry, ToPoincare, dist, pairwise_dist, project
from harness.method import Batch, TrainState
from harness.plugins.methods.moco import (
    KeyQueue,
    MomentumContrast,
    check_contrast_config,
    info_nce,
    moco_logits,
    random_unit_keys,
)


def hyperbolic_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, *, c: float,
                      tau: float) -> torch.Tensor:
    """``[−d(q, k₊), −d(q, queue)] / τ``: (N, 1 + K) logits on the ball, the positive in column 0
    (HCL ``builder_hcl.py``: ``-hyperbolic_dis`` over the temperature)."""
    pos = -dist(q, k, c=c).unsqueeze(1)
    neg = -pairwise_dist(q, queue.to(q.dtype), c=c)
    return torch.cat([pos, neg], 1) / tau


def hyperbolic_contrastive_loss(z_scene: torch.Tensor, z_obj: torch.Tensor, queue: torch.Tensor, *, c: float,
                                tau: float) -> torch.Tensor:
    """L_hyp (paper Eq. 2): cross-entropy of :func:`hyperbolic_logits` with the object key at index 0."""
    return info_nce(hyperbolic_logits(z_scene, z_obj, queue, c=c, tau=tau))


def symmetric_moco_loss(q_p: torch.Tensor, q_c: torch.Tensor, k_p: torch.Tensor, k_c: torch.Tensor,
                        queue_p: torch.Tensor, queue_c: torch.Tensor, *, tau: float) -> torch.Tensor:
    """L_euc as released (``builder_hcl.py``): view p's query against view c's key and queue, view c's
    query against view p's key and queue, one cross-entropy over the 2N rows (all L2-normalised)."""
    return info_nce(torch.cat([moco_logits(q_p, k_c, queue_c, tau=tau), moco_logits(q_c, k_p, queue_p, tau=tau)]))


def usable_boxes(boxes: np.ndarray, min_side: float = 0.0) -> np.ndarray:
    """The rows of a (k, 5) box array with a positive width and height and an area of at least
    ``min_side``² (released ``get_all_gt_bbox``: ``if (h2 - h1) * (w2 - w1) < 56 * 56: continue``)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[(w > 0) & (h > 0) & (w.astype(np.float64) * h >= min_side * min_side)]


def draw_scene_members(counts: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The released loader's box draws for images with ``counts[i] >= 2`` boxes, all images at once.

    Returns the object box of each image (an index into its boxes, uniform) and a mask over the
    concatenated boxes of all images: the scene's members — ``m`` boxes drawn without
    replacement, ``m`` uniform in ``{2, …, max(min(n, 6), 3) − 1}`` (``torch.randint(2, …)``),
    plus the object box if it was not drawn. A uniform random order per image comes from
    sorting one uniform key per box.
    """
    counts = np.asarray(counts, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    owner = np.repeat(np.arange(len(counts)), counts)
    u = torch.rand(len(counts), 2, generator=generator, dtype=torch.float64).numpy()
    keys = torch.rand(int(counts.sum()), generator=generator, dtype=torch.float64).numpy()
    obj = np.minimum((u[:, 0] * counts).astype(np.int64), counts - 1)
    top = np.maximum(np.minimum(counts, 6), 3)
    drawn = 2 + np.minimum((u[:, 1] * (top - 2)).astype(np.int64), top - 3)
    order = np.lexsort((keys, owner))  # by image, then by key: a random order of each image's boxes
    rank = np.empty(len(owner), dtype=np.int64)
    rank[order] = np.arange(len(owner)) - start[owner[order]]
    member = (rank < drawn[owner]) | (np.arange(len(owner)) == (start + obj)[owner])
    return obj, member


def sample_crop_boxes(boxes: Sequence[np.ndarray], image_hw: tuple[int, int], generator: torch.Generator,
                      *, context: float, min_box: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Object, base and scene boxes ``(B, 4)`` (x1, y1, x2, y2, pixels) of each image, drawn as the
    released loader does (see the module docstring and :func:`draw_scene_members`) from the boxes of
    at least ``(min_box × the longer image side)²`` pixels; every image needs two of them."""
    h, w = image_hw
    per = [usable_boxes(b, min_box * max(h, w))[:, :4].astype(np.float64) for b in boxes]
    counts = np.array([len(b) for b in per], dtype=np.int64)
    if (counts < 2).any():
        i = int(np.argmax(counts < 2))
        raise ValueError(f"image {i} of the batch has {counts[i]} usable box(es); HCL's scene crop needs at least 2")
    flat = np.concatenate(per)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    obj_idx, member = draw_scene_members(counts, generator)
    lo = np.where(member[:, None], flat[:, :2], np.inf)
    hi = np.where(member[:, None], flat[:, 2:], -np.inf)
    scene = np.concatenate([np.minimum.reduceat(lo, start), np.maximum.reduceat(hi, start)], 1)
    obj = flat[start + obj_idx]
    # jitter_and_resize: an object smaller than S × S gets each side moved out by U(0, S − its side),
    # within the image. (The released code bounds y2 with the width's margin, a typo; the height's is used.)
    side = context * max(h, w)
    size = obj[:, 2:] - obj[:, :2]
    margin = np.maximum(0.0, side - size)
    u = torch.rand(len(obj), 4, generator=generator, dtype=torch.float64).numpy()
    lo_edge = np.maximum(obj[:, :2] - margin, 0.0)
    hi_edge = np.minimum(obj[:, 2:] + margin, [float(w), float(h)])
    jittered = np.concatenate([lo_edge + u[:, :2] * (obj[:, :2] - lo_edge),
                               obj[:, 2:] + u[:, 2:] * (hi_edge - obj[:, 2:])], 1)
    small = size.prod(1) < side * side
    base = np.where(small[:, None], jittered, obj)
    return tuple(torch.from_numpy(b).float() for b in (obj, base, scene))  # type: ignore[return-value]


def box_crops(raw: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """uint8 crops of ``raw`` (B, C, H, W) to ``boxes`` (B, 4), each resized to H × W (ROI-align)."""
    out = crop_resize(raw.float(), boxes.to(raw.device), tuple(raw.shape[-2:]))
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _check_hcl_config(cfg: Any) -> None:
    check_contrast_config(cfg)
    if not (math.isfinite(cfg.c) and cfg.c > 0):
        raise ConfigError(f"{cfg.name}: c (the ball's curvature is -c) must be > 0, got {cfg.c}")
    check_policy(f"{cfg.name}: crop_augment", cfg.crop_augment)
    if not 0 < cfg.context <= 1:
        raise ConfigError(f"{cfg.name}: context (the base crop's side, a fraction of the longer image side) "
                          f"must be in (0, 1], got {cfg.context}")
    if not 0 <= cfg.min_box < 1:
        raise ConfigError(f"{cfg.name}: min_box (the smallest box side kept, a fraction of the longer image side) "
                          f"must be in [0, 1), got {cfg.min_box}")


def _eligible(info: Any, name: str, min_box: float) -> np.ndarray:
    boxes = info.extra_labels.get("boxes")
    if boxes is None:
        raise Incompatible(f"{name} needs box annotations ('boxes') of its training images")
    if info.image_size is None:
        raise ValueError(f"{name}: TrainInfo.image_size is not set (the frame of the box annotations)")
    min_side = min_box * max(info.image_size)
    keep = np.flatnonzero([len(usable_boxes(b, min_side)) >= 2 for b in boxes])
    if len(keep) == 0:
        raise Incompatible(f"{name}: no training image has two or more boxes of at least {min_side:.3g} px a side "
                           f"(method.min_box={min_box:.4g} of the longer image side); a scene crop is the union "
                           "of 2-5 object boxes (pre-train on a multi-object dataset, e.g. train_dataset=scenes)")
    return keep


class HCL(MomentumContrast):
    """Euclidean MoCo loss on object crops + λ × hyperbolic contrastive loss between scene and object crops."""

    VERSION = "1"
    supervised = False
    requires = frozenset({"boxes"})

    @dataclass
    class Config:
        name: str = "hcl"
        dim: int = 128  # head output (HCL readme: --moco-dim 128 --mlp)
        tau: float = 0.2  # temperature of both losses (readme: --moco-t 0.2)
        c: float = 0.05  # curvature of the ball (readme: --c 0.05)
        lam: float = 0.1  # λ, weight of L_hyp (readme: --theta-hyperbolic 0.1)
        # Released: 65,536 (main_hcl.py --moco-k). The embedded scenes pre-training set has ~1,200
        # multi-object images: 1,024 keys per queue is under one epoch of keys (see mocov2).
        queue_size: int = 1024
        # Released: 0.999 (MoCo) over ~1M steps; the CPU preset's few hundred steps need a key
        # encoder that moves: 0.99 as MoCo's authors use on small data (see mocov2).
        momentum: float = 0.99
        lr: float = 0.15  # readme: --lr 0.15 --batch-size 128, scaled linearly with train.batch_size
        lr_batch_size: int = 128
        weight_decay: float = 1e-4  # main_hcl.py --wd 1e-4
        sgd_momentum: float = 0.9  # main_hcl.py --momentum 0.9
        # Objects smaller than S × S get context up to S = context × the longer image side: the
        # loader's 256 px of a 640-px COCO image.
        context: float = 0.4
        # Boxes with an area under (min_box × the longer image side)² are not drawn: the loader's
        # 56 × 56 px of a 640-px COCO image (``get_all_gt_bbox``); 0 keeps every box.
        min_box: float = 56 / 640
        bn_split_size: int = 32  # images per BatchNorm group: 128 over 4 GPUs (the paper's runs)
        embedding: str = "backbone"  # backbone | projection (the ball points z = exp_0(g(f(x))))
        augment: str = "mocov2"  # the two views of the base crop (the loader's MoCo v2 transform)
        crop_augment: str = "mocov2_nocrop"  # the scene and object crops' view (the loader's `transform`)

        def validate(self) -> None:
            if not (math.isfinite(self.lam) and self.lam > 0):
                raise ConfigError(f"hcl: lam (λ, the weight of the hyperbolic loss) must be > 0, got {self.lam}; "
                                  "λ = 0 is the Euclidean-only ablation: use method=hcl_euclidean_only")
            _check_hcl_config(self)

    def __init__(self, cfg: Config, backbone: nn.Module, info: Any) -> None:
        super().__init__(cfg, backbone, info)
        self._eligible = _eligible(info, cfg.name, cfg.min_box)
        size = self.queue_length(len(self._eligible))
        self.to_ball = ToPoincare(c=cfg.c, riemannian=True)  # hyptorch's default, as released
        self.queue_p = KeyQueue(random_unit_keys(size, cfg.dim))  # keys of euclidean view 1
        self.queue_c = KeyQueue(random_unit_keys(size, cfg.dim))  # keys of euclidean view 2
        if cfg.lam > 0:  # object keys on the ball (the released code's unit vectors, inside for c < 1)
            self.queue_hyp = KeyQueue(project(random_unit_keys(size, cfg.dim), c=cfg.c))
        if cfg.embedding == "projection":
            self.geometry = PoincareGeometry(c=cfg.c)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        if self.cfg.embedding == "backbone":
            return features
        return self.to_ball(self.proj(features))

    def batch_indices(self, labels: Any, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Shuffled batches of the images with two or more boxes (labels are not read)."""
        from harness.engine import shuffled_batches

        return (self._eligible[b] for b in shuffled_batches(len(self._eligible), batch_size, rng))

    def training_step(self, batch: Batch, state: TrainState) -> torch.Tensor:
        cfg, gen = self.cfg, state.generator
        obj, base, scene = sample_crop_boxes(batch.annotations["boxes"], tuple(batch.raw.shape[-2:]), gen,
                                             context=cfg.context, min_box=cfg.min_box)
        base_u8 = box_crops(batch.raw, base)
        x_p, x_c = batch.view_of(base_u8, cfg.augment), batch.view_of(base_u8, cfg.augment)
        q_p, q_c = F.normalize(self.query(x_p), dim=1), F.normalize(self.query(x_c), dim=1)
        k_p, k_c = F.normalize(self.key(x_p, gen), dim=1), F.normalize(self.key(x_c, gen), dim=1)
        loss = symmetric_moco_loss(q_p, q_c, k_p, k_c, self.queue_p.keys, self.queue_c.keys, tau=cfg.tau)
        self._pending = [(self.queue_p, k_p), (self.queue_c, k_c)]
        if cfg.lam > 0:
            z_scene = self.to_ball(self.query(batch.view_of(box_crops(batch.raw, scene), cfg.crop_augment)))
            z_obj = self.to_ball(self.key(batch.view_of(box_crops(batch.raw, obj), cfg.crop_augment), gen))
            loss = loss + cfg.lam * hyperbolic_contrastive_loss(z_scene, z_obj, self.queue_hyp.keys, c=cfg.c,
                                                                tau=cfg.tau)
            self._pending.append((self.queue_hyp, z_obj))
        return loss


class HCLEuclideanOnly(HCL):
    """HCL without L_hyp (λ = 0): the Euclidean loss on the same object crops (the paper's ablation)."""

    VERSION = "1"

    @dataclass
    class Config(HCL.Config):
        name: str = "hcl_euclidean_only"
        lam: float = 0.0  # the ablation: no hyperbolic loss

        def validate(self) -> None:
            if self.lam != 0:
                raise ConfigError(f"hcl_euclidean_only: lam must be 0 (it is HCL's λ = 0 ablation), got {self.lam}; "
                                  "use method=hcl for λ > 0")
            _check_hcl_config(self)


__all__ = ["HCL", "HCLEuclideanOnly", "box_crops", "draw_scene_members", "hyperbolic_contrastive_loss",
           "hyperbolic_logits", "sample_crop_boxes", "symmetric_moco_loss", "usable_boxes"]
