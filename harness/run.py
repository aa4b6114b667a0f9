"""One cell: (method, backbone, dataset, task, seed) → one result JSON.

The dataset plugin gives images and annotations; the task makes its protocol;
the model is trained by :mod:`harness.engine` or loaded from the cache (keyed
by everything that determines it, so one model serves every task with the same
training split); the task evaluates it; the result is written atomically.
Incompatible cells are ``skipped`` with the reason; any other error marks the
cell ``failed`` with the message and a traceback file, and the caller goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import traceback
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from harness import engine
from harness.data import ImageDataset, hash_indices, save_tensors
from harness.errors import Incompatible
from harness.registry import create, get_registry, make_config
from harness.results import atomic_write_text, config_hash, read_result, result_path, write_result
from harness.task import Embedded, EvalContext, Protocol

_DATASETS: OrderedDict[str, ImageDataset] = OrderedDict()
_MODELS: OrderedDict[str, "TrainedModel"] = OrderedDict()
_KEEP_DATASETS, _KEEP_MODELS = 3, 2


def versions() -> dict[str, Any]:
    """Versions of python, the numeric stack, the harness and every plugin distribution."""
    import geoopt
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "geoopt": geoopt.__version__, "numpy": np.__version__, "harness": harness.__version__,
            "plugins": get_registry().dist_versions()}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _remember(cache: OrderedDict, key: str, value: Any, keep: int) -> Any:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > keep:
        cache.popitem(last=False)
    return value


def load_dataset(cfg: dict[str, Any]) -> ImageDataset:
    """The dataset of a config node, kept in memory across cells of one process."""
    key = json.dumps(cfg, sort_keys=True, default=str)
    if key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    return _remember(_DATASETS, key, create("dataset", cfg), _KEEP_DATASETS)


class TrainedModel:
    """A trained method with its preprocessing and an embedding cache."""

    def __init__(self, method: Any, preprocess: engine.Preprocess, key: str, stats: dict[str, Any]) -> None:
        self.method, self.preprocess, self.key, self.stats = method, preprocess, key, stats
        self._embedded: dict[str, Embedded] = {}

    def embedder(self, dataset: ImageDataset, device: torch.device, tcfg: engine.TrainConfig):
        amp = engine.autocast_dtype(device, tcfg.amp)

        def embed(what: np.ndarray | torch.Tensor) -> Embedded:
            if isinstance(what, torch.Tensor):  # outside images: not cached
                e, f, lg = engine.embed_arrays(self.method, dataset, None, self.preprocess, device, amp,
                                               tcfg.embed_batch_size, images=what)
                return Embedded(e, f, lg)
            key = f"{dataset.fingerprint()}:{hash_indices(what)}"
            if key not in self._embedded:
                e, f, lg = engine.embed_arrays(self.method, dataset, what, self.preprocess, device, amp,
                                               tcfg.embed_batch_size, tcfg.num_workers)
                self._embedded[key] = Embedded(e, f, lg)
            return self._embedded[key]

        return embed


def _norm_stats(dataset: ImageDataset, backbone: torch.nn.Module, pretrained: bool) -> tuple[tuple, tuple]:
    channels = dataset.info.channels
    if pretrained:  # the backbone's own normalisation (ImageNet statistics), averaged for grayscale
        pcfg = getattr(backbone, "pretrained_cfg", None) or {}
        mean, std = tuple(pcfg.get("mean", (0.5,) * 3)), tuple(pcfg.get("std", (0.5,) * 3))
    else:
        mean = tuple(dataset.info.mean or (0.5,) * channels)
        std = tuple(dataset.info.std or (0.5,) * channels)
    if len(mean) != channels:
        mean, std = (float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels
    return mean, std


def model_key(config: dict[str, Any], method_cls: type, dataset: ImageDataset, protocol: Protocol) -> str:
    """Hash of everything that determines a trained model."""
    import geoopt
    import timm

    train = {k: v for k, v in config["train"].items() if k not in ("num_workers", "embed_batch_size")}
    material = {
        "method": config["method"], "method_class": f"{method_cls.__module__}:{method_cls.__qualname__}",
        "method_version": method_cls.VERSION, "backbone": config["backbone"],
        "dataset": dataset.fingerprint(), "train_split": hash_indices(protocol.train),
        # The label values, not the field's name: "label" and "pid" holding the same ids train one model.
        "train_labels": None if protocol.train_label is None
        else hash_indices(dataset.annotations[protocol.train_label][np.asarray(protocol.train)]),
        "seed": config["seed"], "train": train,
        "versions": [harness.__version__, torch.__version__, timm.__version__, geoopt.__version__],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


def trained_model(config: dict[str, Any], dataset: ImageDataset, protocol: Protocol,
                  device: torch.device, progress: bool = True) -> tuple[TrainedModel, bool]:
    """Train the cell's model, or load it from memory or the disk cache; the flag says it was cached."""
    from harness.backbones import build_backbone, input_size
    from harness.method import TrainInfo

    registry = get_registry()
    method_cls = registry.load("method", config["method"]["name"])
    missing = set(method_cls.requires) - set(dataset.provides)
    if missing:
        raise Incompatible(f"method '{config['method']['name']}' needs annotation(s) {sorted(missing)}, "
                           f"which dataset '{dataset.name}' does not have")
    if method_cls.supervised and protocol.train_label is None:
        raise Incompatible(f"method '{config['method']['name']}' needs training labels, "
                           "and this task trains without them")
    key = model_key(config, method_cls, dataset, protocol)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return _MODELS[key], True

    tcfg = engine.TrainConfig(**config["train"])
    seed = int(config["seed"])
    torch.manual_seed(seed)
    train_idx = np.asarray(protocol.train, dtype=np.int64)
    labels = num_classes = None
    if protocol.train_label is not None:
        raw = dataset.annotations[protocol.train_label][train_idx]
        _, labels = np.unique(raw, return_inverse=True)
        num_classes = int(labels.max()) + 1
    extra = {k: v[train_idx] for k, v in dataset.annotations.items()
             if k != protocol.train_label and np.asarray(v).dtype != object}
    size = input_size(config["backbone"], dataset.info.image_size)
    backbone, feat_dim = build_backbone(config["backbone"], in_chans=dataset.info.channels, img_size=size)
    info = TrainInfo(feat_dim=feat_dim, num_classes=num_classes or 0, num_train=len(train_idx),
                     label_field=protocol.train_label, epochs=tcfg.epochs, extra_labels=extra)
    method = method_cls(make_config(method_cls, config["method"]), backbone, info)
    mean, std = _norm_stats(dataset, backbone, bool(config["backbone"].get("pretrained")))
    preprocess = engine.Preprocess(mean, std, size, device)

    cache_file = Path(config["cache_dir"]).expanduser() / "models" / f"{key}.pt"
    meta_file = cache_file.with_suffix(".json")
    if cache_file.exists() and meta_file.exists():
        method.load_state_dict(torch.load(cache_file, map_location="cpu", weights_only=True))
        method.to(device).eval()
        model, cached = TrainedModel(method, preprocess, key, json.loads(meta_file.read_text())), True
    else:
        stats = engine.train(method, dataset=dataset, indices=train_idx, labels=labels, extra=extra, cfg=tcfg,
                             preprocess=preprocess, device=device, seed=seed, progress=progress)
        meta = asdict(stats)
        save_tensors({k: v.detach().cpu() for k, v in method.state_dict().items()}, cache_file)
        atomic_write_text(meta_file, json.dumps(meta, allow_nan=True))
        model, cached = TrainedModel(method, preprocess, key, meta), False
    return _remember(_MODELS, key, model, _KEEP_MODELS), cached


def cell_of(config: dict[str, Any]) -> dict[str, Any]:
    return {"method": config["method"]["name"], "backbone": config["backbone"]["name"],
            "dataset": config["dataset"]["name"], "task": config["task"]["name"], "seed": int(config["seed"])}


def finished(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The existing result at ``path`` if the cell need not run again."""
    if config.get("force") or not path.exists():
        return None
    try:
        prev = read_result(path)
    except Exception:
        return None  # unreadable: run again and overwrite
    if prev.get("config_hash") != config_hash(config):
        return None  # the config changed since
    if prev["status"] == "failed" and config.get("rerun_failed", True):
        return None
    return prev


def run_cell(config: dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Run one cell from a resolved config dict and return its result (also written to disk)."""
    cell = cell_of(config)
    path = result_path(config["results_dir"], cell)
    prev = finished(path, config)
    if prev is not None:
        prev["_resumed"] = True
        return prev
    # Dataset plugins cache their tensors under harness.data.cache_root(): make it follow cache_dir.
    os.environ["HARNESS_CACHE"] = str(Path(config["cache_dir"]).expanduser())
    start = time.perf_counter()
    device = engine.pick_device(config.get("device", "auto"))
    result: dict[str, Any] = {
        "schema_version": 1, "cell": cell, "config": config, "config_hash": config_hash(config),
        "grid": config.get("grid_name", "single"), "metrics": {}, "details": {}, "reason": None,
        "device": describe_device(device), "model_key": None, "protocol": {},
    }
    train_s = eval_s = 0.0
    train_cached = False
    try:
        result["versions"] = versions()
        dataset = load_dataset(config["dataset"])
        task = create("task", config["task"])
        task.check(dataset)
        protocol = task.protocol(dataset)
        result["protocol"] = {"task_version": task.VERSION, "train_label": protocol.train_label,
                              "train_size": int(len(protocol.train)),
                              "eval_sizes": {k: int(len(v)) for k, v in sorted(protocol.eval.items())}}
        model, train_cached = trained_model(config, dataset, protocol, device, progress)
        result["model_key"], train_s = model.key, float(model.stats["seconds"])
        tcfg = engine.TrainConfig(**config["train"])
        t_eval = time.perf_counter()
        ctx = EvalContext(dataset=dataset, protocol=protocol, method=model.method,
                          embed_fn=model.embedder(dataset, device, tcfg), seed=int(config["seed"]),
                          device=device, artifacts_dir=path.with_name(f"seed{cell['seed']}_plots")
                          if config.get("plots") else None)
        metrics = task.evaluate(ctx)
        eval_s = time.perf_counter() - t_eval
        result["metrics"] = {k: m.to_json() for k, m in sorted(metrics.items())}
        result["details"] = {**ctx.details, "convention": task.CONVENTION} if task.CONVENTION else ctx.details
        result["status"] = "ok"
    except Incompatible as exc:
        result.update(status="skipped", reason=str(exc))
    except Exception as exc:  # a crashed cell is recorded and the sweep goes on
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        tb_file = path.with_suffix(".traceback.txt")
        atomic_write_text(tb_file, traceback.format_exc())
        result["traceback_file"] = str(tb_file)
    result.setdefault("versions", {})
    result["timings"] = {"train_s": round(train_s, 3), "eval_s": round(eval_s, 3),
                         "total_s": round(time.perf_counter() - start, 3), "train_cached": train_cached}
    write_result(path, result)
    return result
