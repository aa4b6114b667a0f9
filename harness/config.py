"""Typed configs: one dataclass per config node is its schema and its defaults.

Hydra composes ``harness run`` / ``harness sweep`` configs from structured nodes
registered here in its ConfigStore: :class:`HarnessConfig` (top-level keys and
``train.*``), :class:`BackboneConfig` for every backbone, and each plugin's own
nested ``Config`` dataclass for ``method/<name>``, ``dataset/<name>`` and
``task/<name>``. A YAML file in a plugin's config group is a named *variant*
(a pretrained backbone, a paper's per-dataset setting); it starts from its
plugin's schema with ``defaults: [<plugin name>, _self_]``.

Wrong types are rejected while composing (``method.dim=abc`` names the key,
the expected type and the value); :func:`validate` then checks values that a
type cannot (``train.epochs`` ≥ 0, a known device) before any work is spent.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import warnings
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Optional

from harness.errors import ConfigError

#: Every plugin name (and so every folder a result is written to) matches this pattern.
NAME_PATTERN = re.compile(r"[a-z0-9_][a-z0-9_.-]*")
#: A grid larger than this asks for ``allow_large_grid=true`` (``harness sweep --yes``).
LARGE_GRID = 10_000
SCHEDULES = ("cosine", "constant", "step", "warmup_cosine")
OPTIMIZERS = ("riemannian_adam", "riemannian_sgd", "adam", "adamw", "sgd")


def check_name(kind: str, name: Any) -> str:
    """``name`` if it is a safe plugin name (it becomes a folder of the results tree), else a ConfigError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{kind} name {name!r} is not allowed: plugin names match "
                          f"{NAME_PATTERN.pattern} (lowercase letters, digits, '_', '.', '-'; "
                          "no '/' and no leading '.'), so that results stay inside results_dir")
    return name


@dataclass
class TrainConfig:
    """The training loop's settings (``train.*``); a method may replace the optimiser and schedule."""

    # 16 epochs of batches of 32 on the embedded data (2,880 training images: 1,440 steps): the
    # baseline's 5-way 1-shot has reached its plateau (euclidean_ce seed 0: 0.753 at 8 epochs, 0.804
    # at 16, 0.806 at 24, 0.822 at 32) and its per-epoch loss changes by < 5% over the last 3 epochs.
    # Batches of 128 at 8 epochs (180 steps) left it at training top-1 0.18 (see the README).
    epochs: int = 16  # 0: the method's network at its initialisation, evaluated untrained (its own reference)
    batch_size: int = 32
    lr: float = 0.005
    weight_decay: float = 0.0005
    optimizer: str = "riemannian_adam"  # riemannian_adam | riemannian_sgd (geoopt) | adam | adamw | sgd
    momentum: float = 0.9  # the SGD optimisers only
    schedule: str = "cosine"  # cosine | constant | step | warmup_cosine
    step_epochs: int = 0  # schedule=step: multiply the lr by step_gamma every step_epochs epochs
    step_gamma: float = 0.5
    warmup_epochs: float = 0.0  # linear warm-up (any schedule)
    augment: str = "crop"  # the default view: an augmentation policy name (harness list augmentations)
    amp: str = "auto"  # auto (bf16/fp16 autocast on CUDA, off on CPU) | off
    channels_last: str = "auto"  # auto (on, CUDA and CPU) | off: NHWC memory format for conv backbones
    tf32: str = "auto"  # auto (on CUDA: TF32 matmuls and convolutions) | off; geometry kernels refine near pairs
    compile: bool = False  # torch.compile the backbone (CUDA or CPU; first steps slower)
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    num_workers: int = 0  # DataLoader workers for datasets read from disk
    embed_batch_size: int = 512
    #: epochs between training checkpoints beside the model cache (a killed training resumes there); 0: none
    checkpoint_every: int = 1

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"train.epochs must be >= 0, got {self.epochs} (0 evaluates the method's network "
                              "at its initialisation)")
        for key in ("batch_size", "embed_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be at least 1, got {getattr(self, key)}")
        if self.batch_size < 2:
            raise ConfigError("train.batch_size must be at least 2: a batch of one image breaks BatchNorm in "
                              "training mode and leaves a pairwise or contrastive loss no pair")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr must be a finite number > 0, got {self.lr} (a model that does not learn is "
                              "the random_init reference)")
        for key in ("weight_decay", "momentum", "grad_clip", "warmup_epochs", "step_gamma"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"train.{key} must be a finite number >= 0, got {value}")
        if self.epochs and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"train.warmup_epochs ({self.warmup_epochs}) must be less than train.epochs "
                              f"({self.epochs}): the learning rate would never finish warming up")
        for key in ("num_workers", "step_epochs", "checkpoint_every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        _choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _choice("train.schedule", self.schedule, SCHEDULES)
        _choice("train.amp", self.amp, ("auto", "off"))
        _choice("train.channels_last", self.channels_last, ("auto", "off"))
        _choice("train.tf32", self.tf32, ("auto", "off"))
        if self.schedule == "step":
            if self.step_epochs < 1:
                raise ConfigError("train.schedule=step needs train.step_epochs >= 1")
            if not 0 < self.step_gamma <= 1:
                raise ConfigError(f"train.step_gamma must be in (0, 1] (the factor the lr is multiplied by every "
                                  f"train.step_epochs epochs), got {self.step_gamma}")
            if self.step_epochs >= self.epochs:
                warnings.warn(f"train.step_epochs ({self.step_epochs}) >= train.epochs ({self.epochs}): the step "
                              "schedule never steps, the lr stays constant", stacklevel=2)


@dataclass
class BackboneConfig:
    """A backbone (``backbone.*``): a timm model by name, optionally pretrained, resized input."""

    name: str = "conv4_32"
    pretrained: Optional[str] = None  # a named offline weight source or a checkpoint path
    img_size: Any = None  # null (the dataset's size), an int or [H, W]
    small_input_stem: str = "auto"  # auto | true | false: the CIFAR stem for timm ResNets on inputs <= 64 px
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model


@dataclass
class HarnessConfig:
    """Top-level keys of ``harness run`` / ``harness sweep`` (the plugin groups are filled by Hydra)."""

    method: Any = None
    backbone: Any = None
    dataset: Any = None
    task: Any = None
    #: Pre-train on another dataset (a name or {name, ...options}); null: the cell's dataset.
    train_dataset: Any = None
    seed: int = 0
    results_dir: str = "runs"
    cache_dir: str = "${oc.env:HARNESS_CACHE,'~/.cache/harness'}"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    force: bool = False  # re-evaluate cells whose result exists (the cached model is reused)
    retrain: bool = False  # train the model again even if the cache holds it
    plots: bool = False  # tasks write PNGs beside the result
    #: Cells write each evaluation split's indices, embeddings and distance to the origin beside the result
    #: (``seed<N>_embeddings.npz``): HACK's per-image prototypicality, or any method's embeddings.
    save_embeddings: bool = False
    rerun_failed: bool = True  # a re-run retries failed cells (false: keeps them, still counted as failed)
    grid_name: str = "single"  # set by `harness sweep`; recorded in results and leaderboards
    leaderboard_dir: Optional[str] = "${results_dir}/leaderboards"  # written at the end of a sweep
    allow_large_grid: bool = False  # a grid above LARGE_GRID cells needs this (or `harness sweep --yes`)
    sweep_id: Optional[str] = None  # set by `harness sweep`: where its jobs report their status
    train: TrainConfig = field(default_factory=TrainConfig)


#: Config keys that change where or how a cell runs but not what it computes.
RUN_LOCAL_KEYS = ("results_dir", "cache_dir", "device", "force", "retrain", "rerun_failed", "grid_name",
                  "plots", "save_embeddings", "leaderboard_dir", "allow_large_grid", "sweep_id")
#: ``train.*`` keys that do not change what is computed.
RUN_LOCAL_TRAIN_KEYS = ("num_workers", "embed_batch_size", "checkpoint_every")


def computed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as far as it decides what a cell computes (what its hash and variant tag read):
    without :data:`RUN_LOCAL_KEYS` and ``train``'s :data:`RUN_LOCAL_TRAIN_KEYS`, and with the
    ``READ_OPTIONS`` of the dataset and ``train_dataset`` (``preload``, ``workers``) at their defaults,
    so that results stored before an option was declared one keep their hash. A mapping of ``task.far``
    counts as its dataset's name, the keys it sets to other than their defaults and its ``split``, so a
    default spelled out or a read option changes nothing; a name stays a name."""
    core = {k: v for k, v in config.items() if k not in RUN_LOCAL_KEYS}
    if isinstance(core.get("train"), dict):
        core["train"] = {k: v for k, v in core["train"].items() if k not in RUN_LOCAL_TRAIN_KEYS}
    for node in ("dataset", "train_dataset"):
        if isinstance(core.get(node), dict):
            core[node] = _read_options_at_defaults(core[node])
    far = core["task"].get("far") if isinstance(core.get("task"), dict) else None
    if isinstance(far, list) and any(isinstance(e, dict) for e in far):
        core["task"] = {**core["task"], "far": [_canonical_far_entry(e) if isinstance(e, dict) else e for e in far]}
    return core


def _canonical_far_entry(entry: dict[str, Any]) -> dict[str, Any] | str:
    """A mapping of ``task.far`` as its dataset's ``name``, the keys it sets to other than their defaults
    (``READ_OPTIONS`` aside) and its ``split``: the plain name when that is all it sets (``{name: x}``
    is the far set ``x``); as stored when its plugin is not installed here or no longer takes one of
    its keys."""
    try:
        node, split = far_dataset(entry, "task.far")
        cls = _dataset_class(node["name"])
    except Exception:  # noqa: BLE001 - a stored result: hashed as stored
        return entry
    defaults = json_ready(plugin_defaults(cls))
    out = {k: v for k, v in node.items()
           if k == "name" or (k not in cls.READ_OPTIONS and defaults.get(k, object()) != v)}
    if split is not None:
        return {**out, "split": split}
    return out["name"] if len(out) == 1 else out


def _read_options_at_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A dataset node with its ``READ_OPTIONS`` at their defaults (as it is when its plugin is not installed)."""
    if not data.get("name"):
        return data
    try:
        cls = _dataset_class(data["name"])
    except Exception:  # noqa: BLE001 - a stored result of a plugin not installed here: as stored
        return data
    defaults = plugin_defaults(cls)
    return {k: (defaults[k] if k in cls.READ_OPTIONS and k in defaults else v) for k, v in data.items()}


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def check_device(spec: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (N < the number of GPUs); a clear error otherwise."""
    if spec in ("auto", "cpu"):
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", str(spec))
    if m is None:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {spec!r}")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"device={spec} asked for, but no CUDA device is available; use device=cpu or auto")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ConfigError(f"device={spec}: there are {torch.cuda.device_count()} CUDA device(s)")


def image_hw(value: Any, *, key: str = "image_size") -> tuple[int, int]:
    """``224`` → ``(224, 224)``; ``[256, 128]`` → ``(256, 128)`` (height, width)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        hw = (int(value), int(value))
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        hw = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{key} must be an int or [height, width], got {value!r}")
    if min(hw) < 1:
        raise ConfigError(f"{key} must be positive, got {value!r}")
    return hw


def check_dataset_config(cfg: Any) -> None:
    """Check a dataset config before any work, with a :class:`~harness.errors.ConfigError` naming the key.

    First the fields datasets share by convention, where the config has them: ``image_size`` (an int
    or [H, W], positive), ``test_fraction`` in [0, 1), ``seed`` and ``workers`` >= 0, ``novel_classes``
    distinct class ids >= 0, below the class count where the ``Config`` declares it (a ``NUM_CLASSES``
    class variable; otherwise when the data loads) and not all of them;
    then the plugin's own ``Config.validate()``. The run calls it for the cell's dataset and
    ``train_dataset``, and :class:`ImageDataset` when it is built."""
    name = getattr(cfg, "name", "") or "dataset"
    if hasattr(cfg, "image_size"):
        image_hw(cfg.image_size, key=f"{name}: image_size")
    fraction = getattr(cfg, "test_fraction", 0.0)
    if not 0 <= fraction < 1:
        raise ConfigError(f"{name}: test_fraction must be in [0, 1), got {fraction}")
    for key in ("seed", "workers"):
        if getattr(cfg, key, 0) < 0:
            raise ConfigError(f"{name}: {key} must be >= 0, got {getattr(cfg, key)}")
    novel = list(getattr(cfg, "novel_classes", []) or [])
    if any(int(c) < 0 for c in novel) or len(set(novel)) < len(novel):
        raise ConfigError(f"{name}: novel_classes must be distinct class ids >= 0, got {novel}")
    n_classes = getattr(type(cfg), "NUM_CLASSES", None)  # a ClassVar: the class count, known before loading
    if novel and isinstance(n_classes, int) and n_classes > 0:
        if max(novel) >= n_classes:
            raise ConfigError(f"{name}: novel_classes {[c for c in novel if c >= n_classes]} out of range: classes "
                              f"are 0..{n_classes - 1}")
        if len(novel) >= n_classes:
            raise ConfigError(f"{name}: novel_classes may not hold every class (nothing would be left to train on)")
    run_validate(cfg)


def run_validate(cfg: Any) -> None:
    """Call the plugin config's ``validate()`` when it has one. A check that raises something other than
    :class:`ConfigError` (an ``assert``, a ``ValueError``) is still a bad value, not a crash: it becomes a
    ConfigError with its message, so the command says what is wrong and exits 2."""
    validate = getattr(cfg, "validate", None)
    if not callable(validate):
        return
    try:
        validate()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's own check, whatever it raises
        name = getattr(cfg, "name", "") or type(cfg).__qualname__
        raise ConfigError(f"{name}: {exc or 'a value is out of range'} ({type(exc).__name__} from "
                          f"{type(cfg).__qualname__}.validate())") from exc


def plugin_defaults(cls: type) -> dict[str, Any]:
    """The defaults of a plugin class's ``Config`` dataclass as plain values (fields without one left out)."""
    none = object()
    return {k: v for k, v in _defaults(cls.Config, missing=none).items() if v is not none}


def register_schemas(store: Any, nodes: dict[tuple[str, str], Any]) -> None:
    """Store the top-level schema and ``{(group, option): node}`` in Hydra's ConfigStore.

    A plugin ``Config`` that OmegaConf cannot type (an annotation it does not know, e.g.
    ``Literal[...]``) is stored as its plain defaults instead: :func:`validate` checks its values
    against the dataclass, and the other plugins are not affected."""
    store.store(name="harness_schema", node=HarnessConfig)
    for (group, option), node in nodes.items():
        try:
            store.store(group=group, name=option, node=node)
        except Exception:  # noqa: BLE001 - omegaconf's ValidationError and friends
            if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
                raise
            store.store(group=group, name=option, node=_defaults(node))


def _defaults(schema: type, missing: Any = "???") -> dict[str, Any]:
    """A Config dataclass's defaults as a plain mapping; a field without a default is ``missing``
    (OmegaConf's ``???`` by default)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = missing
    return out


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check a composed, resolved config before any work is spent; return it with every plugin node
    completed from its schema (so the config hash and the model key see every default).

    Raises :class:`ConfigError` naming the key and the valid values.
    """
    from harness.registry import get_registry, make_config

    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    check_device(str(config.get("device", "auto")))
    for key in ("results_dir", "cache_dir"):
        if key in config and not str(config[key] or "").strip():
            raise ConfigError(f"{key} is empty; give a folder ({key}=PATH): an empty one would be the current "
                              "folder")
    for key in ("results_dir", "cache_dir", "leaderboard_dir"):  # '~/r' (quoted, so no shell expanded it)
        if isinstance(config.get(key), str):
            config[key] = os.path.expanduser(config[key])
    train = TrainConfig(**config["train"])
    train.validate()
    from harness.augment import check_policy

    check_policy("train.augment", train.augment)
    registry = get_registry()
    for kind in ("method", "dataset", "task"):
        node = config[kind]
        check_name(kind, node.get("name"))
        cls = registry.load(kind, node["name"])
        cfg = make_config(cls, node)
        if kind == "dataset":
            check_dataset_config(cfg)
        else:
            run_validate(cfg)
        config[kind] = json_ready(dataclasses.asdict(cfg))
    config["backbone"] = backbone_node(config["backbone"])
    if config.get("train_dataset") is not None:
        config["train_dataset"] = dataset_node(config["train_dataset"])
    return config


def backbone_node(node: dict[str, Any]) -> dict[str, Any]:
    """A backbone config completed from :class:`BackboneConfig`, keys and types checked."""
    from harness.registry import make_config

    check_name("backbone", node.get("name"))

    class _Backbone:  # make_config reads the schema from a class's nested Config
        Config = BackboneConfig

    cfg = make_config(_Backbone, dict(node))
    from harness.backbones import stem_option

    stem_option(cfg.small_input_stem)
    if cfg.img_size is not None:
        image_hw(cfg.img_size, key="backbone.img_size")
    if cfg.kwargs:
        from harness.backbones import check_kwargs

        check_kwargs(cfg.name, dict(cfg.kwargs))
    return json_ready(dataclasses.asdict(cfg))


def dataset_node(value: Any, key: str = "train_dataset") -> dict[str, Any]:
    """A dataset given by name or as a mapping with ``name`` (``train_dataset``, an entry of
    ``task.far``; ``key`` names it in errors) as a complete dataset config."""
    from harness.registry import get_registry, make_config

    from collections.abc import Mapping

    example = ("task.far=[omniglot] or task.far='[{name: omniglot, invert: true, split: novel}]'"
               if key.startswith("task.far") else f"{key}=scenes or {key}='{{name: scenes, n_images: 800}}'")
    if not isinstance(value, (str, Mapping)):
        raise ConfigError(f"{key} takes a dataset name or a mapping with its name, got {value!r} ({example})")
    node = {"name": value} if isinstance(value, str) else dict(value)
    if node.get("name") is None:
        raise ConfigError(f"{key} {value!r} names no dataset: give its name: key ({example})")
    check_name(key, node.get("name"))
    cls = get_registry().load("dataset", node["name"])
    try:
        cfg = make_config(cls, node)
        check_dataset_config(cfg)
    except ConfigError as exc:
        raise type(exc)(f"{key}: {exc}") from exc
    return json_ready(dataclasses.asdict(cfg))


def far_dataset(value: Any, key: str) -> tuple[dict[str, Any], str | None]:
    """An entry of ``task.far`` (``key`` names it in errors): a dataset name, or a mapping with its
    ``name``, any of its config keys and ``split``, the split whose images are the far set (None:
    its ``test`` split, else every image). Returns the complete dataset config and the split."""
    from collections.abc import Mapping

    split = None
    if isinstance(value, Mapping):
        value = dict(value)
        split = value.pop("split", None)
        if split is not None and not isinstance(split, str):
            raise ConfigError(f"{key}: split must be a split name (e.g. novel), got {split!r}")
    return dataset_node(value, key), split


def json_ready(value: Any) -> Any:
    """Tuples to lists, recursively (what a config looks like after a JSON round trip)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def default_config(config: dict[str, Any]) -> dict[str, Any]:
    """What the cell's config would be with every value at its plugins' and the harness's defaults."""
    from harness.registry import get_registry

    registry = get_registry()
    out = json_ready(dataclasses.asdict(HarnessConfig()))
    for kind in ("method", "dataset", "task"):
        out[kind] = json_ready(plugin_defaults(registry.load(kind, config[kind]["name"])))
    out["backbone"] = json_ready(dataclasses.asdict(BackboneConfig(name=config["backbone"]["name"])))
    return out


def variant_of(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(tag, diff)``: the cell's config values that differ from :func:`default_config` (run-local keys,
    the seed and plugin names aside), and a short tag of them ("" when nothing differs)."""
    import hashlib
    import json

    skip = set(RUN_LOCAL_KEYS) | {"seed"}
    config = computed_config(json_ready(config))
    mine = _flatten({k: v for k, v in config.items() if k not in skip and k != "train_dataset"})
    base = _flatten({k: v for k, v in default_config(config).items() if k not in skip and k != "train_dataset"})
    diff = {k: v for k, v in sorted(mine.items()) if not k.endswith(".name") and base.get(k, object()) != v}
    train_ds = config.get("train_dataset")
    if train_ds is not None:
        diff["train_dataset"] = train_ds["name"]
        ds_defaults = _flatten(plugin_defaults(_dataset_class(train_ds["name"])), "train_dataset")
        for k, v in _flatten(train_ds, "train_dataset").items():
            if not k.endswith(".name") and ds_defaults.get(k, object()) != v:
                diff[k] = v
    if not diff:
        return "", {}
    return "v" + hashlib.sha256(json.dumps(diff, sort_keys=True).encode()).hexdigest()[:8], diff


def _dataset_class(name: str) -> type:
    from harness.registry import get_registry

    return get_registry().load("dataset", name)


def dotted_value(config: Any, key: str, missing: Any = None) -> Any:
    """The value at a dotted ``key`` (``task.split``) of a nested config dict, or ``missing``."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def variant_label(diff: dict[str, Any]) -> str:
    """``c=0.5, train.epochs=2``: a variant's differences as a row label (``method.`` is dropped)."""
    def fmt(v: Any) -> str:
        return f"{v:.12g}" if isinstance(v, float) else str(v).replace(" ", "")  # :g (6 digits) merged 0.5 and 0.5000001

    return ", ".join(f"{k.removeprefix('method.')}={fmt(v)}" for k, v in sorted(diff.items()))
