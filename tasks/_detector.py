"""Faster / Mask R-CNN with an FPN on the multi-scale maps of a method's trained timm backbone.

The detector of the transfer protocols (MoCo, He et al. CVPR 2020, Sec. 4.2;
DenseCL, Wang et al. CVPR 2021; HCL, Ge et al. CVPR 2023, Table 2): Faster
R-CNN (Ren et al. NeurIPS 2015) or Mask R-CNN (He et al. ICCV 2017) on a
feature pyramid (Lin et al. CVPR 2017) over the backbone's stage outputs, all
fine-tuned. The pyramid's input maps come from timm's
``forward_intermediates(x, indices=…, intermediates_only=True)`` of the SAME
backbone module (:func:`harness.feature_maps.feature_maps`), so the trained
weights are the ones fine-tuned. torchvision builds the rest (:class:`~torchvision.models.detection.FasterRCNN`,
:class:`~torchvision.models.detection.MaskRCNN`).

Backbone options (as in MoCo's / DenseCL's Detectron2 configs):

* ``norm``: ``frozen_bn`` — every BatchNorm becomes a frozen one (fixed
  statistics and affine, timm's ``freeze_batch_norm_2d``, i.e. torchvision's
  ``FrozenBatchNorm2d``); ``bn`` — BatchNorm trained with batch statistics;
  ``sync_bn`` — :class:`torch.nn.SyncBatchNorm` (timm's ``convert_sync_batchnorm``;
  statistics over every process of a distributed run; a single process behaves as ``bn``).
  The option applies to the backbone; the FPN and heads are torchvision's, without norm layers.
* ``frozen_stages``: the first k entries of the backbone's ``feature_info``
  (and every module before them, e.g. the stem) keep ``requires_grad=False``
  — Detectron2's ``FREEZE_AT`` for ResNets (1 = stem, 2 = stem + res2).

Anchors: one size per pyramid level, 8 × the level's stride (torchvision's
32…512 for strides 4…64), aspect ratios 0.5, 1, 2.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError, Incompatible
from harness.feature_maps import FeatureMaps, _feature_info, feature_maps

DETECTORS = ("faster_rcnn", "mask_rcnn")
NORMS = ("frozen_bn", "bn", "sync_bn")


# -- the pyramid on the backbone's multi-scale maps --------------------------------------------------------------
class FeaturePyramidBackbone(nn.Module):
    """:func:`harness.feature_maps.feature_maps` → torchvision :class:`FeaturePyramidNetwork`
    (+ a max-pooled top level, ``"pool"``).

    torchvision's ``BackboneWithFPN`` with timm's ``forward_intermediates`` in
    place of ``IntermediateLayerGetter``. ``out_channels`` is what the R-CNN heads read.
    """

    def __init__(self, body: FeatureMaps, out_channels: int = 256) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.strides = [*body.strides, 2 * body.strides[-1]]  # LastLevelMaxPool: stride-2 pool of the top map

    @property
    def level_names(self) -> list[str]:
        return [*self.body.names, "pool"]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(images))


# -- backbone options -----------------------------------------------------------------------------------------
def set_norm(backbone: nn.Module, norm: str) -> nn.Module:
    """Apply the ``norm`` option (see the module docstring); returns the (possibly new) module."""
    if norm == "frozen_bn":
        from timm.layers import freeze_batch_norm_2d

        return freeze_batch_norm_2d(backbone)
    if norm == "sync_bn":
        from timm.layers import convert_sync_batchnorm  # keeps timm's BatchNormAct2d activations

        return convert_sync_batchnorm(backbone)
    if norm == "bn":
        return backbone
    raise ConfigError(f"detection: norm must be one of {NORMS}, got {norm!r}")


def freeze_stages(backbone: nn.Module, frozen_stages: int) -> list[str]:
    """``requires_grad=False`` on every parameter up to the end of ``feature_info[frozen_stages - 1]``'s module.

    Modules are taken in registration order (the forward order of timm's CNNs),
    so a stem before the first feature level freezes with it. Returns the frozen names.
    """
    if frozen_stages == 0:
        return []
    info = _feature_info(backbone)  # the core's reading of timm's feature_info (errors say what is missing)
    if not 0 <= frozen_stages <= len(info):
        raise ConfigError(f"detection: frozen_stages must be in 0..{len(info)} (the backbone's feature levels), "
                          f"got {frozen_stages}")
    last = info[frozen_stages - 1].get("module")
    names = [n for n, _ in backbone.named_modules()]
    if last not in names:
        raise Incompatible(f"feature_info module {last!r} of {type(backbone).__name__} is not one of its modules: "
                           "frozen_stages cannot tell which parameters come before it")
    # position of the last descendant of `last`: everything registered up to there is frozen
    end = max(i for i, n in enumerate(names) if n == last or n.startswith(last + "."))
    frozen_modules = set(names[:end + 1])
    frozen = []
    for name, p in backbone.named_parameters():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner in frozen_modules:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


# -- the detector -----------------------------------------------------------------------------------------------
def build_detector(backbone: nn.Module, *, num_classes: int, mean: Sequence[float], std: Sequence[float],
                   detector: str = "faster_rcnn", feature_indices: int | Sequence[int] | None = 4,
                   fpn_channels: int = 256, norm: str = "frozen_bn", frozen_stages: int = 0,
                   min_size: int | Sequence[int] = 800, max_size: int = 1333,
                   rpn_pre_nms_top_n_train: int = 2000, rpn_post_nms_top_n_train: int = 2000,
                   rpn_pre_nms_top_n_test: int = 1000, rpn_post_nms_top_n_test: int = 1000,
                   rpn_batch_size_per_image: int = 256, box_batch_size_per_image: int = 512,
                   sampling_ratio: int = 2, box_head_dim: int = 1024, box_score_thresh: float = 0.05,
                   box_detections_per_img: int = 100) -> nn.Module:
    """A torchvision Faster / Mask R-CNN on ``backbone`` (modified in place: norm layers, frozen stages).

    ``num_classes``: object classes, without background (targets' ``labels`` are
    1..num_classes, 0 being background). ``mean`` / ``std``: the normalisation
    the backbone was trained with ([0, 1] units); the detector takes float images
    in [0, 1] of any size and resizes them so the shorter side is ``min_size``
    (a random one of a tuple in training, the last at test) and the longer at most ``max_size``.
    The defaults are torchvision's (= Detectron2's R50-FPN); the ``smoke`` preset
    lowers proposals, samples and the box head (see ``tasks/conf/task/detection.yaml``).
    """
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    if detector not in DETECTORS:
        raise ConfigError(f"detection: detector must be one of {DETECTORS}, got {detector!r}")
    if num_classes < 1:
        raise ConfigError(f"detection: num_classes must be >= 1, got {num_classes}")
    if not callable(getattr(backbone, "forward_intermediates", None)):
        raise Incompatible(f"backbone {type(backbone).__name__} has no multi-scale features (no timm "
                           "forward_intermediates / feature_info), so no detector can be built on it; "
                           "see harness.feature_maps for what to implement, or choose e.g. resnet18 or conv4")
    backbone = set_norm(backbone, norm)
    freeze_stages(backbone, frozen_stages)
    fpn = FeaturePyramidBackbone(feature_maps(backbone, feature_indices), fpn_channels)
    levels = fpn.level_names
    anchors = AnchorGenerator(sizes=tuple((8 * s,) for s in fpn.strides),
                              aspect_ratios=((0.5, 1.0, 2.0),) * len(levels))
    box_pool = MultiScaleRoIAlign(featmap_names=levels[:-1], output_size=7, sampling_ratio=sampling_ratio)
    kwargs: dict[str, Any] = dict(
        min_size=min_size, max_size=max_size, image_mean=list(mean), image_std=list(std),
        rpn_anchor_generator=anchors, box_roi_pool=box_pool, box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
        box_predictor=FastRCNNPredictor(box_head_dim, num_classes + 1),
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=rpn_batch_size_per_image, box_batch_size_per_image=box_batch_size_per_image,
        box_score_thresh=box_score_thresh, box_detections_per_img=box_detections_per_img)
    if detector == "faster_rcnn":
        return FasterRCNN(fpn, **kwargs)
    # torchvision's Mask R-CNN head: 4 conv 3x3 (256) on 14x14 RoIs, a 2x deconv, a 1x1 conv per class
    mask_pool = MultiScaleRoIAlign(featmap_names=levels[:-1], output_size=14, sampling_ratio=sampling_ratio)
    return MaskRCNN(fpn, mask_roi_pool=mask_pool, mask_head=MaskRCNNHeads(fpn_channels, [256] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(256, 256, num_classes + 1), **kwargs)
