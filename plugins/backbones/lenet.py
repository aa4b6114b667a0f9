"""The LeNet-style MNIST nets of the hyperbolic papers' released code, in timm's registry.

Two unpadded 5×5 convolutions, each followed by ReLU and a 2×2 max-pool (20 and 50
channels), then linear layers on the flattened map:

``lenet`` (Khrulkov et al., Hyperbolic Image Embeddings, CVPR 2020; hyptorch
``examples/mnist.py``, ``Net``): linear 500 + ReLU, **500-d** features. Their
``fc2`` (500 → the ball's dimension) is the method's projection.

``lenet_hack`` (Guo et al., HACK; released ``model.py``, ``feature_Net``): linear
100 + ReLU, 100 + ReLU, 64 with no ReLU, the **64-d** unnormalised features the
released projection head maps to the ball.

The convolutions are unpadded as released, so the first linear layer's input
depends on the input size: 50·4·4 = 800 at 28 px (MNIST), 50·⌊(⌊(H−4)/2⌋−4)/2⌋² in
general (square or not), fixed by ``img_size`` when the net is built (at least 16 px).
An unpadded map is not the input's size over a stride, so these nets give no
multi-scale maps (``multi_scale_maps = False``): detection transfer refuses them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from harness.plugins.backbones._stages import entry_kwargs

MIN_SIDE = 16


def _side(n: int) -> int:
    """A side after conv 5 → pool 2 → conv 5 → pool 2, all unpadded."""
    return ((n - 4) // 2 - 4) // 2


class LeNet(nn.Module):
    """conv(20, 5) → ReLU → pool → conv(50, 5) → ReLU → pool → flatten → ``widths`` linear layers.

    ReLU after every linear layer but the last, and after the last too when ``last_relu``.
    """

    multi_scale_maps = False

    def __init__(self, widths: tuple[int, ...] = (500,), last_relu: bool = True, in_chans: int = 1,
                 img_size: Any = 28, num_classes: int = 0) -> None:
        super().__init__()
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        self.img_size = (h, w)
        self.conv1 = nn.Conv2d(in_chans, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        # too small an input is refused by forward_features, as the other in-tree nets refuse it
        sizes = [50 * max(_side(h), 1) * max(_side(w), 1), *widths]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.last_relu = last_relu
        self.num_features = widths[-1]
        self.head = nn.Linear(widths[-1], num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"LeNet takes images of at least {MIN_SIDE}×{MIN_SIDE} px (two unpadded 5×5 "
                             f"convolutions and two 2×2 pools), got shape {tuple(x.shape)}: set backbone.img_size larger")
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"LeNet was built for {self.img_size[0]}×{self.img_size[1]} images (its first linear "
                             f"layer reads the unpadded map of that size), got shape {tuple(x.shape)}: "
                             "set backbone.img_size to the images' size")
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = x.flatten(1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1 or self.last_relu:
                x = F.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model
def lenet(pretrained: bool = False, **kwargs) -> LeNet:
    """Khrulkov et al.'s MNIST net (hyptorch examples/mnist.py): 500-d features after ReLU."""
    return LeNet(**{"widths": (500,), "last_relu": True, **entry_kwargs("lenet", pretrained, kwargs)})


@register_model
def lenet_hack(pretrained: bool = False, **kwargs) -> LeNet:
    """HACK's released feature_Net (model.py): linear 100, 100, 64; 64-d features, no final ReLU."""
    return LeNet(**{"widths": (100, 100, 64), "last_relu": False, **entry_kwargs("lenet_hack", pretrained, kwargs)})
