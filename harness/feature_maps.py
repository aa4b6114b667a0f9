"""Multi-scale feature maps of a trained backbone, for detectors (FPN-style necks) on the same weights.

Every timm model with a ``forward_intermediates(x, indices=…, intermediates_only=True)``
method and a ``feature_info`` list (one dict per map: ``num_chs``, ``reduction``,
``module``; timm ≥ 1.0) gives its intermediate maps this way, and so do the in-tree
backbones (Conv-4, ResNet-12). :func:`feature_maps` wraps the **same module
instance**: the maps come from the weights the method trained (including a
swapped CIFAR stem), and gradients of a detection loss reach them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError


def _feature_info(backbone: nn.Module) -> list[dict[str, Any]]:
    info = getattr(backbone, "feature_info", None)
    if hasattr(info, "get_dicts"):  # timm's FeatureInfo (features_only models)
        info = info.get_dicts()
    what = type(backbone).__name__
    how = ("implement forward_intermediates(x, indices=None, intermediates_only=False) returning the maps "
           "(see timm's ResNet.forward_intermediates) and set feature_info = [dict(num_chs=…, reduction=…, "
           "module=…), …], one dict per map")
    if not callable(getattr(backbone, "forward_intermediates", None)):
        raise ConfigError(f"backbone {what} has no multi-scale features (no forward_intermediates method): {how}")
    if not isinstance(info, (list, tuple)) or not info or \
            not all(isinstance(d, dict) and {"num_chs", "reduction"} <= set(d) for d in info):
        raise ConfigError(f"backbone {what} has forward_intermediates but no usable feature_info "
                          f"(got {info!r}): {how}")
    return list(info)


def _take(indices: int | list[int] | None, n: int) -> list[int]:
    """timm's index convention: None all maps, an int the last n, a list those maps (negative from the end)."""
    from timm.models._features import feature_take_indices  # what timm's own forward_intermediates use

    try:
        take, _ = feature_take_indices(n, indices)
    except (AssertionError, IndexError, TypeError) as e:
        raise ConfigError(f"feature_maps indices={indices!r} do not pick among the backbone's {n} maps "
                          f"(None: all, an int 1..{n}: the last n, a list of 0..{n - 1} or negatives): {e}") from e
    take = [int(i) for i in take]
    if take != sorted(set(take)) or not all(0 <= i < n for i in take):
        raise ConfigError(f"feature_maps indices={indices!r} must be distinct maps of 0..{n - 1} (or negatives), "
                          "shallow to deep")
    return take


class FeatureMaps(nn.Module):
    """Images → ``OrderedDict`` name → map (N, ``channels[i]``, H / ``strides[i]``, W / ``strides[i]``).

    ``backbone`` is held, not copied: the maps share its weights. Names are the ``module`` of
    ``feature_info`` (``layer1`` … for a timm ResNet, ``stages.0`` … in-tree).
    """

    def __init__(self, backbone: nn.Module, indices: int | list[int] | None = None) -> None:
        super().__init__()
        info = _feature_info(backbone)
        self.backbone = backbone
        self.indices = _take(indices, len(info))
        picked = [info[i] for i in self.indices]
        self.names = [str(d.get("module", f"map{i}")) for d, i in zip(picked, self.indices)]
        self.channels = [int(d["num_chs"]) for d in picked]
        self.strides = [int(d["reduction"]) for d in picked]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.backbone.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        if len(maps) != len(self.names):
            raise RuntimeError(f"{type(self.backbone).__name__}.forward_intermediates gave {len(maps)} maps for "
                               f"indices {self.indices}; its feature_info lists {len(self.names)} of them")
        return OrderedDict(zip(self.names, maps))


def feature_maps(backbone: nn.Module, indices: int | list[int] | None = None) -> FeatureMaps:
    """A module mapping images to ``backbone``'s multi-scale maps (an ``OrderedDict``), with ``channels`` and
    ``strides`` lists; built on ``backbone.forward_intermediates`` of the same instance (shared weights).

    ``indices`` picks maps in ``feature_info`` order (timm's convention: None all, an int the last n,
    a list those). A timm ResNet has five: the stem (stride 2, or 1 with the CIFAR stem) and the
    four stages. Raises :class:`ConfigError` for a backbone without multi-scale features.
    """
    return FeatureMaps(backbone, indices)
