"""Backbones are timm models: in-tree and third-party families register in timm's own registry.

A backbone config is ``{name, pretrained, img_size, small_input_stem, kwargs}``:
``name`` is a harness backbone spec (whose module registers models with
``timm.models.register_model``) or any name timm already knows; ``pretrained``
is null, a named offline source or a checkpoint path; ``img_size`` is the input
size ``[H, W]`` images are resized to (null: the dataset's own size);
``small_input_stem`` (``auto`` | ``true`` | ``false``) swaps an ImageNet ResNet
stem for the CIFAR one (:func:`use_small_input_stem`); ``kwargs`` go to
``timm.create_model``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import torch
from torch import nn

from harness.config import BackboneConfig, image_hw
from harness.errors import ConfigError, UnknownPluginError
from harness.registry import get_registry

# Nothing may download at run time: timm must never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The keys of a backbone config: the fields of :class:`harness.config.BackboneConfig`.
BACKBONE_KEYS = {f.name for f in dataclasses.fields(BackboneConfig)}

# auto: the CIFAR stem for inputs whose smaller side is at most this many pixels.
SMALL_INPUT_MAX_PX = 64


def resolve_backbone(name: str) -> str:
    """Make ``name`` known to timm (importing its harness spec if it has one) or raise did-you-mean."""
    import timm

    specs = get_registry().specs("backbone")
    if name in specs:
        specs[name].load()
    if timm.is_model(name):
        return name
    if name in specs:
        raise ConfigError(f"backbone '{name}' ({specs[name].target}, distribution '{specs[name].dist}') was imported "
                          f"but registered no timm model named '{name}': decorate its constructor with "
                          f"@timm.models.register_model and name the function {name}")
    raise UnknownPluginError("backbone", name, [*specs, *timm.list_models()],
                             hint="any timm model name works too: harness list backbones 'resnet*'")


def weight_source(pretrained: str) -> str | None:
    """The weight source that serves ``backbone.pretrained``: the source of that name (hook
    ``harness_weight_sources``), ``checkpoint`` for the path of an existing file, or None."""
    from pathlib import Path

    sources = get_registry().specs("weights")
    if pretrained in sources:
        return pretrained
    if Path(pretrained).expanduser().is_file() and "checkpoint" in sources:
        return "checkpoint"
    return None


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_digest(pretrained: Any) -> str | None:
    """sha256 of the checkpoint file ``backbone.pretrained`` names (None for a named weight source or
    none): a file replaced at the same path gives another model key, and its finished cells run again.
    Remembered per (path, size, mtime), so a sweep reads each file once."""
    from pathlib import Path

    if not pretrained or weight_source(str(pretrained)) != "checkpoint":
        return None
    path = Path(str(pretrained)).expanduser().resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def load_weights(model: nn.Module, timm_name: str, pretrained: str) -> None:
    """Fill ``model`` from the weight source that serves ``pretrained`` (:func:`weight_source`)."""
    sources = get_registry().specs("weights")
    source = weight_source(pretrained)
    if source is None:
        raise UnknownPluginError("weight source", pretrained, [s for s in sources if s != "checkpoint"],
                                 hint="or the path of an existing checkpoint file (harness list weights)")
    sources[source].load()(model, timm_name, pretrained)


def input_size(cfg: Any, dataset_size: tuple[int, int]) -> tuple[int, int]:
    """The size images are resized to before the backbone: ``cfg["img_size"]`` or the dataset's."""
    size = cfg.get("img_size") if hasattr(cfg, "get") else None
    if size is None:
        return tuple(dataset_size)
    return image_hw(size, key="backbone.img_size")


def _stem_conv(model: nn.Module) -> nn.Conv2d | None:
    """The strided first conv of an ImageNet ResNet stem, or None when ``model`` has no such stem.

    timm's ``ResNet`` class (resnet*, resnext*, seresnet*, wide_resnet*, res2net*, …) has a
    ``conv1`` (a 7×7 stride-2 conv, or for the deep stems ``*d`` / ``*s`` / ``*t`` an
    ``nn.Sequential`` of three 3×3 convs, the first with stride 2) followed by a ``maxpool``.
    """
    conv = getattr(model, "conv1", None)
    if isinstance(conv, nn.Sequential):
        conv = next((m for m in conv if isinstance(m, nn.Conv2d)), None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(model, "maxpool") or tuple(conv.stride) != (2, 2):
        return None
    return conv


def has_imagenet_stem(model: nn.Module) -> bool:
    """Whether ``model`` has an ImageNet ResNet stem (strided ``conv1`` + ``maxpool``) for the CIFAR stem to replace."""
    return _stem_conv(model) is not None


def stem_option(value: Any) -> str | bool:
    """``backbone.small_input_stem`` read: ``auto``, True or False (a ConfigError for anything else)."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"backbone.small_input_stem must be auto, true or false, got {value!r}")


def use_small_input_stem(model: nn.Module, option: Any, *, img_size: tuple[int, int], pretrained: str | None,
                         name: str = "") -> bool:
    """Whether to give ``model`` the CIFAR stem (:func:`to_small_input_stem`) under ``option``.

    ``auto``: yes for a model with an ImageNet ResNet stem (:func:`has_imagenet_stem`), inputs
    whose smaller side is at most :data:`SMALL_INPUT_MAX_PX` and no ``pretrained`` weights
    (ImageNet weights hold a 7×7 stem conv, and their later layers saw the ImageNet stem's
    resolution). ``true``: yes; a :class:`ConfigError` for a model without that stem or with a
    named (ImageNet) weight source; with a checkpoint path the checkpoint must hold the 3×3 stem
    (e.g. a model trained here with it), which the strict loader checks. ``false``: no.
    """
    option = stem_option(option)
    if option is False:
        return False
    stem = has_imagenet_stem(model)
    if option == "auto":
        return stem and min(img_size) <= SMALL_INPUT_MAX_PX and not pretrained
    what = f"backbone '{name or type(model).__name__}'"
    if not stem:
        raise ConfigError(f"backbone.small_input_stem=true, but {what} has no ImageNet ResNet stem to replace "
                          "(a stride-2 `conv1` and a `maxpool`, as timm's ResNet family has): "
                          "set backbone.small_input_stem=auto or false")
    if pretrained in get_registry().specs("weights") and pretrained != "checkpoint":
        raise ConfigError(f"backbone.small_input_stem=true replaces the stem conv of {what}, which the "
                          f"'{pretrained}' weights fill with their 7×7 stride-2 conv: set backbone.pretrained=null "
                          "to train the CIFAR stem from scratch, or backbone.small_input_stem=auto/false to keep "
                          "the pretrained stem")
    return True


def to_small_input_stem(model: nn.Module) -> nn.Module:
    """Give a timm ResNet the CIFAR stem of He et al. 2016 (sec. 4.2), in place; return it.

    The ImageNet stem (7×7 stride-2 conv, 3×3 stride-2 max-pool) shrinks a 32×32 image to 8×8
    before the first stage; the CIFAR ResNets (and the SupCon / SimCLR CIFAR code) use a 3×3
    stride-1 conv and no max-pool instead. ``conv1`` becomes a 3×3 stride-1 conv (padding 1, same
    channels, initialised as timm initialises ResNet convs); in a deep stem (three 3×3 convs) the first conv's stride
    becomes 1 and the convs are kept; ``maxpool`` becomes ``nn.Identity``. ``feature_info``
    reductions shrink by 2 (the stem map) and 4 (the stages), so the stage maps have strides
    1, 2, 4, 8. Sets ``model.small_input_stem = True``.
    """
    conv = _stem_conv(model)
    if conv is None:
        raise ConfigError(f"{type(model).__name__} has no ImageNet ResNet stem (stride-2 `conv1` + `maxpool`)")
    if isinstance(model.conv1, nn.Conv2d):
        model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1,
                                bias=conv.bias is not None)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm's ResNet init
    else:
        conv.stride = (1, 1)
    model.maxpool = nn.Identity()
    for info in getattr(model, "feature_info", None) or []:
        # "act1" is the stem's own map (only the conv stride goes); the stages lose the max-pool's too.
        info["reduction"] = max(1, info["reduction"] // (2 if info["module"] == "act1" else 4))
    model.small_input_stem = True
    return model


@functools.lru_cache(maxsize=64)
def _refused_kwargs(name: str, kwargs: str) -> str | None:
    """Why timm refuses ``json.loads(kwargs)`` for model ``name`` (None: it takes them), found by building
    the model on the meta device (no memory, no weights)."""
    import timm

    try:
        with torch.device("meta"):
            timm.create_model(resolve_backbone(name), pretrained=False, num_classes=0, **json.loads(kwargs))
    except TypeError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - anything else (a shape the meta device cannot do) shows when it is built
        return None
    return None


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """A :class:`ConfigError` before any work when ``backbone.kwargs`` has a keyword the timm model does not take."""
    reason = _refused_kwargs(name, json.dumps(kwargs, sort_keys=True))
    if reason:
        raise ConfigError(f"backbone.kwargs {kwargs} are not all accepted by timm's {name}: {reason}; "
                          "see the model's arguments in timm (e.g. drop_rate, drop_path_rate)")


def _create(cfg: Any, *, in_chans: int, img_size: tuple[int, int]) -> tuple[nn.Module, str, str | None]:
    """The untrained model of ``cfg`` (with the CIFAR stem when it gets one), its timm name and its
    ``pretrained`` source (None: none)."""
    import timm

    values = dict(cfg)
    unknown = set(values) - BACKBONE_KEYS
    if unknown:
        raise ConfigError(f"backbone config has unknown key(s) {sorted(unknown)}; valid keys: {sorted(BACKBONE_KEYS)}")
    name = resolve_backbone(values["name"])
    stem = stem_option(values.get("small_input_stem", "auto"))
    kwargs = dict(values.get("kwargs") or {})
    kwargs.update(num_classes=0, in_chans=in_chans)
    try:  # ViTs and friends take the input size; CNNs reject the keyword
        model = timm.create_model(name, pretrained=False, img_size=img_size, **kwargs)
    except TypeError:
        model = timm.create_model(name, pretrained=False, **kwargs)
    pretrained = str(values["pretrained"]) if values.get("pretrained") else None
    if use_small_input_stem(model, stem, img_size=img_size, pretrained=pretrained, name=name):
        to_small_input_stem(model)  # before the weights: a checkpoint of a CIFAR-stem model fits only then
    else:
        model.small_input_stem = False
    return model, name, pretrained


class InputSizeError(ConfigError):
    """A backbone cannot take images of the size it is given (a patch or a stage larger than its map)."""


def _feature_dim(model: nn.Module, name: str, *, in_chans: int, img_size: tuple[int, int]) -> int:
    """The dimension of ``model``'s pooled features, read from two blank images (on the model's device).

    An :class:`InputSizeError` when the images are too small for the model (a patch or a stage larger
    than the map it gets), a :class:`ConfigError` when it does not return pooled features (batch, dim)."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(0)).device
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_chans, *img_size, device=device))
    except (RuntimeError, ValueError) as exc:
        height, width = img_size
        raise InputSizeError(f"backbone '{name}' cannot take {in_chans}-channel {height}×{width} images: "
                          f"{str(exc).splitlines()[0].rstrip('.')}; resize them before the backbone with "
                          "backbone.img_size=[H, W] (e.g. 224 for an ImageNet ViT or ResNet, 84 for Conv4 / "
                          "ResNet-12) or raise dataset.image_size") from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"backbone '{name}' returns {got} for 2 images; a backbone returns pooled features "
                          f"(batch, dim): pool its feature maps (timm: num_classes=0 and global_pool='avg')")
    return int(out.shape[-1])


def build_backbone(cfg: Any, *, in_chans: int, img_size: tuple[int, int]) -> tuple[nn.Module, int]:
    """Build the backbone of ``cfg`` for images of ``in_chans`` × ``img_size``; return it and its feature dim.

    The model's ``small_input_stem`` attribute says whether its stem was swapped for the CIFAR one.
    """
    model, name, pretrained = _create(cfg, in_chans=in_chans, img_size=img_size)
    if pretrained:
        try:
            load_weights(model, name, pretrained)
        except ConfigError as e:
            if model.small_input_stem or not has_imagenet_stem(model) or "conv1" not in str(e):
                raise
            raise ConfigError(f"{e}\n  (weights of a model trained with the CIFAR stem load only with "
                              "backbone.small_input_stem=true)") from e
    return model, _feature_dim(model, name, in_chans=in_chans, img_size=img_size)


def check_input_size(cfg: Any, *, in_chans: int, img_size: tuple[int, int]) -> None:
    """A :class:`ConfigError` before any work when the backbone of ``cfg`` cannot take images of
    ``in_chans`` × ``img_size`` (or returns no pooled features). The model is built and run on the
    meta device: shapes only, no memory, no weights, milliseconds."""
    with torch.device("meta"):
        model, name, _ = _create(cfg, in_chans=in_chans, img_size=img_size)
        _feature_dim(model, name, in_chans=in_chans, img_size=img_size)
