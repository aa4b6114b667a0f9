"""Shared base of the in-tree backbones: a stack of stages that each halve the input, with timm's feature API.

timm's models expose their multi-scale maps through ``forward_intermediates``
(timm ≥ 1.0) and describe them in ``feature_info`` (one dict per map:
``num_chs``, ``reduction`` = stride w.r.t. the input, ``module``). The conv
nets of the few-shot papers (Conv-4, ResNet-12) are a plain chain of stages,
each ending in a 2×2 max-pool, so one base class gives them that API.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models._features import feature_take_indices  # what timm's own models use
from torch import nn

# Keyword arguments timm.create_model hands every entry point; our families have no pretrained configs.
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def entry_kwargs(family: str, pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The constructor keywords of an in-tree family's timm entry point (timm's own keys dropped).

    There are no published weights for these families: ``pretrained=True`` is an error.
    """
    if pretrained:
        raise ValueError(f"{family} has no pretrained weights; train it (backbone.pretrained=null) "
                         "or give a checkpoint path as backbone.pretrained")
    return {k: v for k, v in kwargs.items() if k not in _TIMM_ONLY}


class StagedBackbone(nn.Module):
    """A chain of ``self.stages`` (an ``nn.Sequential``), stage ``i`` downsampling the input by ``2**(i+1)``.

    Subclasses build ``self.stages`` and call :meth:`_set_feature_info` with the stage widths; they
    own the pooling of the last map (``forward``). ``forward_intermediates`` follows timm 1.0's API
    (``indices``: ``None`` all stages, an int the last n, a list those stages).
    """

    stages: nn.Sequential
    feature_info: list[dict[str, Any]]

    def _set_feature_info(self, widths: list[int]) -> None:
        self.feature_info = [dict(num_chs=w, reduction=2 ** (i + 1), module=f"stages.{i}")
                             for i, w in enumerate(widths)]

    def _check_input(self, x: torch.Tensor) -> None:
        smallest = 2 ** len(self.stages)
        if x.ndim != 4 or min(x.shape[-2:]) < smallest:
            raise ValueError(f"{type(self).__name__} takes images (N, C, H, W) of at least {smallest}×{smallest} px "
                             f"({len(self.stages)} stages halve the size), got shape {tuple(x.shape)}: "
                             "set backbone.img_size larger")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, C, H / 2^k, W / 2^k)."""
        self._check_input(x)
        return self.stages(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The stage outputs picked by ``indices`` (and the last map unless ``intermediates_only``).

        ``norm`` is accepted for timm's API and does nothing: these nets have no final norm layer.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__} gives NCHW feature maps only, got output_fmt={output_fmt!r}")
        self._check_input(x)
        take, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early or intermediates_only else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)
