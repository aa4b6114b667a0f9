"""Backbones are timm models: in-tree and third-party families register in timm's own registry.

A backbone config is ``{name, pretrained, img_size, kwargs}``: ``name`` is a
harness backbone spec (whose module registers models with
``timm.models.register_model``) or any name timm already knows; ``pretrained``
is null, a named offline source or a checkpoint path; ``img_size`` is the input
size ``[H, W]`` images are resized to (null: the dataset's own size);
``kwargs`` go to ``timm.create_model``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError, UnknownPluginError
from harness.registry import get_registry

# Nothing may download at run time: timm must never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BACKBONE_KEYS = {"name", "pretrained", "img_size", "kwargs"}


def resolve_backbone(name: str) -> str:
    """Make ``name`` known to timm (importing its harness spec if it has one) or raise did-you-mean."""
    import timm

    specs = get_registry().specs("backbone")
    if name in specs:
        specs[name].load()
    if timm.is_model(name):
        return name
    raise UnknownPluginError("backbone", name, [*specs, *timm.list_models()],
                             hint="any timm model name works too: harness list backbones 'resnet*'")


def load_weights(model: nn.Module, timm_name: str, pretrained: str) -> None:
    """Fill ``model`` from the weight source named ``pretrained`` (hook ``harness_weight_sources``), or
    from a checkpoint file through the source named ``checkpoint``."""
    from pathlib import Path

    sources = get_registry().specs("weights")
    if pretrained in sources:
        loader = sources[pretrained].load()
    elif Path(pretrained).expanduser().is_file() and "checkpoint" in sources:
        loader = sources["checkpoint"].load()
    else:
        raise UnknownPluginError("weight source", pretrained, [s for s in sources if s != "checkpoint"],
                                 hint="or the path of an existing checkpoint file (harness list weights)")
    loader(model, timm_name, pretrained)


def input_size(cfg: Any, dataset_size: tuple[int, int]) -> tuple[int, int]:
    """The size images are resized to before the backbone: ``cfg["img_size"]`` or the dataset's."""
    size = cfg.get("img_size") if hasattr(cfg, "get") else None
    if size is None:
        return tuple(dataset_size)
    size = [size, size] if isinstance(size, int) else list(size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"backbone.img_size must be null, an int or [H, W], got {size}")
    return int(size[0]), int(size[1])


def build_backbone(cfg: Any, *, in_chans: int, img_size: tuple[int, int]) -> tuple[nn.Module, int]:
    """Build the backbone of ``cfg`` for images of ``in_chans`` × ``img_size``; return it and its feature dim."""
    import timm

    values = dict(cfg)
    unknown = set(values) - BACKBONE_KEYS
    if unknown:
        raise ConfigError(f"backbone config has unknown key(s) {sorted(unknown)}; valid keys: {sorted(BACKBONE_KEYS)}")
    name = resolve_backbone(values["name"])
    kwargs = dict(values.get("kwargs") or {})
    kwargs.update(num_classes=0, in_chans=in_chans)
    try:  # ViTs and friends take the input size; CNNs reject the keyword
        model = timm.create_model(name, pretrained=False, img_size=img_size, **kwargs)
    except TypeError:
        model = timm.create_model(name, pretrained=False, **kwargs)
    if values.get("pretrained"):
        load_weights(model, name, str(values["pretrained"]))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        feat_dim = int(model(torch.zeros(2, in_chans, *img_size)).shape[-1])
    model.train(was_training)
    return model, feat_dim
