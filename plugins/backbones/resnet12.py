"""ResNet-12 of the few-shot papers (Oreshkin et al., TADAM, NeurIPS 2018; Lee et al., MetaOptNet, CVPR 2019).

Four residual blocks of widths 64-160-320-640 (MetaOptNet; TADAM used
64-128-256-512). Each block: three conv3×3 → BatchNorm (→ LeakyReLU(0.1) after
the first two), plus a conv1×1 → BatchNorm shortcut, then LeakyReLU(0.1) and a
2×2 max-pool. At 84 px the maps are 42, 21, 10, 5 px; at 32 px 16, 8, 4, 2.
The last map is globally average-pooled to 640 features (as Tian et al. 2020
(RFS) and most later work; MetaOptNet itself flattens the 5×5 map). 12.4 M
parameters (MetaOptNet's count). Registered in timm's registry as ``resnet12``
and ``resnet12_small`` (widths 32-64-128-256, for CPU grids).

Regularisation, off by default (``drop_rate=0``): with ``drop_rate=p``
(MetaOptNet: 0.1) blocks 1-2 end in dropout(p) and blocks 3-4 in DropBlock
(Ghiasi et al., NeurIPS 2018) of size ``drop_block_size`` (5) whose drop
probability rises linearly from 0 to p over ``drop_block_ramp`` training steps
(MetaOptNet: 40 000), as in :class:`DropBlock`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from harness.plugins.backbones._stages import StagedBackbone, entry_kwargs


def drop_block_gamma(drop_prob: float, block_size: int, height: int, width: int) -> float:
    """Seed probability γ of DropBlock (Ghiasi et al. 2018, eq. 1, for an H×W map):

    γ = drop_prob / block_size² · H·W / ((H − block_size + 1)(W − block_size + 1)),

    so that γ·block_size² seeds per valid position drop about ``drop_prob`` of the map.
    """
    return drop_prob / block_size ** 2 * height * width / ((height - block_size + 1) * (width - block_size + 1))


def block_mask(seeds: torch.Tensor, block_size: int) -> torch.Tensor:
    """The dropped region of DropBlock: 1 inside a ``block_size`` square below/right of each seed, else 0.

    ``seeds`` is (N, C, H − b + 1, W − b + 1), one cell per position where a whole b×b block fits
    (Ghiasi et al. 2018, Algorithm 1 and Fig. 2: block centres only where the block lies inside the map);
    the result is (N, C, H, W). Seed (i, j) drops rows i … i+b−1 and columns j … j+b−1.
    """
    pad = block_size - 1
    return F.max_pool2d(F.pad(seeds, (pad, pad, pad, pad)), block_size, stride=1)


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018, Algorithm 1) with its linear schedule ("scheduled DropBlock", sec. 3).

    In training, each channel gets its own mask (Algorithm 1: the per-channel variant the paper
    found better): seeds ~ Bernoulli(γ) (:func:`drop_block_gamma`) at the positions where a whole
    block fits, each seed zeroes a ``block_size`` square (:func:`block_mask`), and the kept
    activations are scaled by count(M) / count_ones(M). The drop probability after t training
    calls is ``drop_prob · min(1, t / ramp_steps)`` (MetaOptNet's schedule; ``ramp_steps=0``:
    constant). The block is clipped to the map (``min(block_size, H, W)``), so a 5×5 block on a
    2×2 map drops the whole map with probability γ = drop_prob. Identity in eval mode.
    """

    def __init__(self, drop_prob: float, block_size: int = 5, ramp_steps: int = 0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0 or block_size < 1 or ramp_steps < 0:
            raise ValueError(f"DropBlock needs 0 <= drop_prob < 1, block_size >= 1, ramp_steps >= 0; got "
                             f"drop_prob={drop_prob}, block_size={block_size}, ramp_steps={ramp_steps}")
        self.drop_prob, self.block_size, self.ramp_steps = drop_prob, block_size, ramp_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training calls so far

    def current_drop_prob(self) -> float:
        if self.ramp_steps == 0:
            return self.drop_prob
        return self.drop_prob * min(1.0, int(self.steps) / self.ramp_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        self.steps += 1
        drop_prob = self.current_drop_prob()
        if drop_prob == 0.0:
            return x
        n, c, h, w = x.shape
        b = min(self.block_size, h, w)
        gamma = drop_block_gamma(drop_prob, b, h, w)
        with torch.no_grad():  # the mask in float32: a bf16 count of kept cells would be off by up to 0.4 %
            seeds = torch.bernoulli(torch.full((n, c, h - b + 1, w - b + 1), min(gamma, 1.0), device=x.device))
            keep = 1.0 - block_mask(seeds, b)
            keep *= keep.numel() / keep.sum().clamp_min(1.0)  # all dropped: zeros, not NaN
        return x * keep.to(x.dtype)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}, ramp_steps={self.ramp_steps}"


class ResNet12Block(nn.Module):
    """conv3×3-BN-LReLU, conv3×3-BN-LReLU, conv3×3-BN, + conv1×1-BN shortcut, LReLU(0.1), max-pool 2×2, drop."""

    def __init__(self, in_chs: int, out_chs: int, drop: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv3 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs))
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.drop(self.pool(self.act(out + self.shortcut(x))))


class ResNet12(StagedBackbone):
    """ResNet-12 with block ``widths``; global average pooling to ``widths[-1]`` features.

    ``drop_rate`` > 0: dropout in blocks 1-2 and :class:`DropBlock` (``drop_block_size``,
    ``drop_block_ramp`` steps) in blocks 3-4, as MetaOptNet.
    """

    def __init__(self, widths: tuple[int, ...] = (64, 160, 320, 640), in_chans: int = 3, num_classes: int = 0,
                 drop_rate: float = 0.0, drop_block_size: int = 5, drop_block_ramp: int = 40_000) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"resnet12 widths must be four positive ints, got {widths}")
        blocks, c_in = [], in_chans
        for i, width in enumerate(widths):
            drop = (nn.Dropout(drop_rate) if i < 2 else DropBlock(drop_rate, drop_block_size, drop_block_ramp)) \
                if drop_rate > 0 else nn.Identity()
            blocks.append(ResNet12Block(c_in, width, drop))
            c_in = width
        self.stages = nn.Sequential(*blocks)
        self._set_feature_info(list(widths))
        self.num_features = widths[-1]
        self.head = nn.Linear(widths[-1], num_classes) if num_classes else nn.Identity()
        for m in self.modules():  # MetaOptNet's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean((2, 3)))


@register_model
def resnet12(pretrained: bool = False, **kwargs) -> ResNet12:
    """ResNet-12, widths 64-160-320-640 (MetaOptNet), 640-d features, 12.4 M parameters."""
    return ResNet12(**{"widths": (64, 160, 320, 640), **entry_kwargs("resnet12", pretrained, kwargs)})


@register_model
def resnet12_small(pretrained: bool = False, **kwargs) -> ResNet12:
    """ResNet-12, widths 32-64-128-256: 256-d features, 2.0 M parameters, for CPU grids."""
    return ResNet12(**{"widths": (32, 64, 128, 256), **entry_kwargs("resnet12_small", pretrained, kwargs)})
