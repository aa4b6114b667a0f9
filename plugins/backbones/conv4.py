"""The 4-layer convolutional backbone of the few-shot papers, in its two readouts.

Four blocks of conv3×3 (padding 1) → BatchNorm → ReLU → max-pool 2×2
(Vinyals et al. 2016; Snell et al. 2017), registered in timm's own registry, so
``timm.create_model("conv4")`` builds it like any timm model.

``conv4`` / ``conv4_32`` (Snell et al. 2017, ProtoNet): 64 (32) channels per
block and the last map **flattened**, so the feature size depends on the input:
``C·⌊H/16⌋·⌊W/16⌋`` = 64·5·5 = 1600 at 84 px (miniImageNet), 64·2·2 = 256 at
32 px, 64·1·1 = 64 at 28 px; inputs must be at least 16 px.

``conv4_1600`` (Khrulkov et al., Hyperbolic Image Embeddings, CVPR 2020, the
"4 Conv" of their few-shot tables 4-5): their code (hyptorch,
``examples/fewshot/networks/convnet.py``, run with ``--dim 1600``) widens the
**last block to 1600 channels** and max-pools its 5×5 map at 84 px to a
1600-d vector. We take the global max over the last map, which is the same at
84 px and works for any input size (≥ 16 px). The paper text itself names the
backbone only as "4 Conv" (Table 4, Table 5).

The four stage outputs (strides 2, 4, 8, 16) are available through timm's
``forward_intermediates`` (see :class:`~harness.plugins.backbones._stages.StagedBackbone`).
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

from harness.plugins.backbones._stages import StagedBackbone, entry_kwargs

POOLS = ("flatten", "avg", "max")


class Conv4(StagedBackbone):
    """Conv-4 with ``channels`` filters in blocks 1-3 and ``last_channels`` (default ``channels``) in block 4.

    ``pool``: ``"flatten"`` (ProtoNet: C·h·w features), ``"avg"`` or ``"max"`` (global pooling: C features).
    """

    def __init__(self, channels: int = 64, in_chans: int = 3, pool: str = "flatten", last_channels: int | None = None,
                 num_classes: int = 0) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"conv4 pool must be one of {POOLS}, got {pool!r}")
        if num_classes and pool == "flatten":
            raise ValueError("conv4 with pool='flatten' has no fixed feature size: use num_classes=0")
        widths = [channels] * 3 + [last_channels or channels]
        stages, c_in = [], in_chans
        for width in widths:
            stages.append(nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width),
                                        nn.ReLU(inplace=True), nn.MaxPool2d(2)))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self._set_feature_info(widths)
        self.pool = pool
        self.num_features = widths[-1]
        self.head = nn.Linear(widths[-1], num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if self.pool == "flatten":
            return self.head(x.flatten(1))
        x = x.mean((2, 3)) if self.pool == "avg" else x.amax((2, 3))
        return self.head(x)


def _build(pretrained: bool, kwargs: dict, **defaults) -> Conv4:
    return Conv4(**{**defaults, **entry_kwargs("conv4", pretrained, kwargs)})


@register_model
def conv4(pretrained: bool = False, **kwargs) -> Conv4:
    """Conv-4, 64 channels, flattened (ProtoNet): 1600-d at 84 px, 256-d at 32 px."""
    return _build(pretrained, kwargs, channels=64)


@register_model
def conv4_32(pretrained: bool = False, **kwargs) -> Conv4:
    """Conv-4, 32 channels, flattened: about 3× faster on CPU, for the default sweep."""
    return _build(pretrained, kwargs, channels=32)


@register_model
def conv4_1600(pretrained: bool = False, **kwargs) -> Conv4:
    """Conv-4 with a 1600-channel last block and global max-pooling: 1600-d at any input size (Khrulkov et al.)."""
    return _build(pretrained, kwargs, channels=64, last_channels=1600, pool="max")
