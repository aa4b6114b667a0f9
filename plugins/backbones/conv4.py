"""The 4-layer convolutional backbone of the few-shot papers (Vinyals et al. 2016; Snell et al. 2017).

Four blocks of conv3×3 → BatchNorm → ReLU → max-pool 2×2, flattened, as in
ProtoNet and in Khrulkov et al.'s Hyperbolic ProtoNet. Registered in timm's
own registry, so ``timm.create_model("conv4")`` builds it like any timm model.
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn


class Conv4(nn.Module):
    """Conv-4 with ``channels`` filters per block; ``pool="flatten"`` (the papers) or ``"avg"``."""

    def __init__(self, channels: int = 64, in_chans: int = 3, pool: str = "flatten", num_classes: int = 0) -> None:
        super().__init__()
        if pool not in ("flatten", "avg"):
            raise ValueError(f"conv4 pool must be 'flatten' or 'avg', got {pool!r}")
        blocks, c_in = [], in_chans
        for _ in range(4):
            blocks += [nn.Conv2d(c_in, channels, 3, padding=1), nn.BatchNorm2d(channels),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = channels
        self.features = nn.Sequential(*blocks)
        self.pool = pool
        self.head = nn.Linear(channels, num_classes) if num_classes and pool == "avg" else nn.Identity()
        if num_classes and pool == "flatten":
            raise ValueError("conv4 with pool='flatten' has no fixed feature size: use num_classes=0")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = x.flatten(1) if self.pool == "flatten" else x.mean((2, 3))
        return self.head(x)


def _build(channels: int, **kwargs) -> Conv4:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    if kwargs.pop("pretrained", False):
        raise ValueError("conv4 has no pretrained weights; train it (backbone.pretrained=null)")
    return Conv4(channels=channels, **kwargs)


@register_model
def conv4(pretrained: bool = False, **kwargs) -> Conv4:
    """Conv-4, 64 channels (ProtoNet, Hyperbolic ProtoNet)."""
    return _build(64, pretrained=pretrained, **kwargs)


@register_model
def conv4_32(pretrained: bool = False, **kwargs) -> Conv4:
    """Conv-4, 32 channels: about 3× faster on CPU, for the default sweep."""
    return _build(32, pretrained=pretrained, **kwargs)
