"""One cell: (method, backbone, dataset, task, seed[, variant]) → one result JSON.

The dataset plugin gives images and annotations; the task makes its protocol;
the model is trained by :mod:`harness.engine` or loaded from the cache (keyed
by everything that determines it, so one model serves every task with the same
training data); a task that fine-tunes does so in :mod:`harness.finetune`; the
task evaluates; the result is written atomically. Incompatible cells are
``skipped`` with the reason; any other error marks the cell ``failed`` with
the message and a traceback file, and the caller goes on. A cell being run is
claimed (:mod:`harness.claims`), so a second sweep on the same results skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
import traceback
import warnings
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from harness import engine
from harness.backbones import weights_digest
from harness.claims import Claim, claim_or_wait
from harness.config import TrainConfig, validate, variant_of
from harness.data import ImageDataset, check_contents, hash_indices, save_tensors
from harness.errors import ConfigError, HarnessError, Incompatible
from harness.registry import create, get_registry, make_config
from harness.results import (atomic_write_bytes, atomic_write_text, config_hash, read_result, recorded_versions,
                             result_path, write_result)
from harness.task import Embedded, EvalContext, Protocol, checked_metrics

_DATASETS: OrderedDict[str, ImageDataset] = OrderedDict()
_MODELS: OrderedDict[str, "TrainedModel"] = OrderedDict()
_KEEP_DATASETS, _KEEP_MODELS = 3, 2


class NonFiniteEmbeddings(HarnessError):
    """A trained model produced NaN or infinite embeddings."""


def versions() -> dict[str, Any]:
    """Versions of python, the numeric stack, the harness and every plugin distribution."""
    import geoopt
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "geoopt": geoopt.__version__, "numpy": np.__version__, "harness": harness.__version__,
            "plugins": get_registry().dist_versions()}


def describe_device(device: torch.device) -> str:
    """The device a cell ran on, as its result records it: the GPU's name, or on the CPU its model, the
    vector instruction set PyTorch's kernels use and the thread count. Trained numbers are bit-identical
    only where all three agree: another vector width or thread count rounds differently (README,
    "HACK": a run of HACK moves by up to ±0.1 Recall@1 with it)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return (f"cpu ({cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, "
                f"{torch.get_num_threads()} threads)")
    return str(device)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what :func:`platform.processor` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


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
    dataset = create("dataset", cfg)
    check_contents(dataset)
    return _remember(_DATASETS, key, dataset, _KEEP_DATASETS)


def check_finite_embeddings(emb: torch.Tensor, what: str = "embeddings") -> None:
    """Raise :class:`NonFiniteEmbeddings` naming how many rows are not finite."""
    bad = ~torch.isfinite(emb).all(dim=-1) if emb.dim() > 1 else ~torch.isfinite(emb)
    if bool(bad.any()):
        raise NonFiniteEmbeddings(f"{what} contain NaN (or inf) ({int(bad.sum())} of {len(emb)} rows): "
                                  "the model diverged or its head overflowed; lower train.lr or check the method")


class TrainedModel:
    """A trained method with its viewer (preprocessing) and an embedding cache. ``trained_on``: the
    fingerprint of the dataset it trained on; on any other dataset its logits (over that dataset's
    classes) are withheld (``Embedded.logits`` is None), so no task reads them as this one's classes."""

    def __init__(self, method: Any, viewer: engine.Viewer, key: str, stats: dict[str, Any],
                 mean: tuple, std: tuple, trained_on: str | None = None) -> None:
        self.method, self.viewer, self.key, self.stats = method, viewer, key, stats
        self.mean, self.std, self.trained_on = mean, std, trained_on
        self._embedded: dict[str, Embedded] = {}

    def embedder(self, dataset: ImageDataset, device: torch.device, tcfg: TrainConfig):
        amp = engine.autocast_dtype(device, tcfg.amp)
        own_classes = self.trained_on is None or self.trained_on == dataset.fingerprint()

        def embedded(e: torch.Tensor, f: torch.Tensor, lg: torch.Tensor | None) -> Embedded:
            check_finite_embeddings(e)
            return Embedded(e, f, lg if own_classes else None)

        def embed(what: np.ndarray | torch.Tensor) -> Embedded:
            if isinstance(what, torch.Tensor):  # outside images: not cached
                return embedded(*engine.embed_arrays(self.method, dataset, None, self.viewer, device, amp,
                                                     tcfg.embed_batch_size, images=what))
            key = f"{dataset.fingerprint()}:{hash_indices(what)}"
            if key not in self._embedded:
                self._embedded[key] = embedded(*engine.embed_arrays(self.method, dataset, what, self.viewer, device,
                                                                    amp, tcfg.embed_batch_size, tcfg.num_workers))
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


class TrainingData:
    """What a model trains on: a dataset, a split, the label field (None for label-free methods) and the
    annotations the method requires."""

    def __init__(self, dataset: ImageDataset, indices: np.ndarray, label_field: str | None,
                 requires: frozenset[str]) -> None:
        self.dataset, self.indices, self.label_field = dataset, np.asarray(indices, dtype=np.int64), label_field
        missing = sorted(set(requires) - set(dataset.provides))
        if missing:
            raise Incompatible(f"the method needs annotation(s) {missing}, which dataset '{dataset.name}' "
                               "(its training data) does not have; pre-train it on a dataset that has them "
                               "with train_dataset=NAME (for boxes: the embedded scenes, or coco, voc2007)")
        if label_field is not None and label_field not in dataset.annotations:
            raise Incompatible(f"the task trains on '{label_field}', which dataset '{dataset.name}' does not have")
        self.extra = {k: dataset.annotations[k][self.indices] for k in sorted(requires)}

    def labels(self) -> tuple[np.ndarray | None, int]:
        if self.label_field is None:
            return None, 0
        _, labels = np.unique(self.dataset.annotations[self.label_field][self.indices], return_inverse=True)
        return labels, int(labels.max()) + 1

    def fingerprint(self) -> dict[str, Any]:
        """What of the data determines the model: the dataset, the split, and only what the method reads."""
        out: dict[str, Any] = {"dataset": self.dataset.fingerprint(), "train_split": hash_indices(self.indices)}
        if self.label_field is not None:  # label values, not the field's name: equal ids train one model
            out["train_labels"] = hash_indices(self.labels()[0])
        for k, v in self.extra.items():
            blob = json.dumps([np.asarray(a).tolist() for a in v], default=str) if np.asarray(v).dtype == object \
                else np.ascontiguousarray(v).tobytes().hex()
            out[f"annotation:{k}"] = hashlib.sha256(str(blob).encode()).hexdigest()[:16]
        return out


def training_data(config: dict[str, Any], dataset: ImageDataset, protocol: Protocol,
                  method_cls: type) -> TrainingData:
    """The cell's training data: the task's split of its dataset, or the ``train_dataset``'s ``train`` split."""
    name = config["method"]["name"]
    if method_cls.supervised and protocol.train_label is None:
        raise Incompatible(f"method '{name}' needs training labels, and this task trains without them")
    label = protocol.train_label if method_cls.supervised else None
    if config.get("train_dataset"):
        source = load_dataset(config["train_dataset"])
        return TrainingData(source, source.split("train"), label, method_cls.requires)
    return TrainingData(dataset, protocol.train, label, method_cls.requires)


def model_key(config: dict[str, Any], method_cls: type, data: TrainingData) -> str:
    """Hash of everything that determines a trained model."""
    import geoopt
    import timm

    from harness.config import RUN_LOCAL_TRAIN_KEYS

    train = {k: v for k, v in config["train"].items() if k not in RUN_LOCAL_TRAIN_KEYS}
    material = {
        "method": config["method"], "method_class": f"{method_cls.__module__}:{method_cls.__qualname__}",
        "method_version": method_cls.VERSION, "backbone": config["backbone"], "data": data.fingerprint(),
        "seed": config["seed"], "train": train,
        "versions": [harness.__version__, torch.__version__, timm.__version__, geoopt.__version__],
    }
    digest = weights_digest(config["backbone"].get("pretrained"))
    if digest is not None:  # a checkpoint file: its bytes, not only its path
        material["weights_sha256"] = digest
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _train_top1(model: TrainedModel, data: TrainingData, embed: Any) -> tuple[float | None, str]:
    """Top-1 on the (unaugmented) training split: the classifier's where the method has one, else the
    nearest class prototype's; None for a label-free method."""
    labels, num_classes = data.labels()
    if labels is None:
        return None, "no training labels"
    emb = embed(data.indices)
    truth = torch.as_tensor(labels)
    if emb.logits is not None and emb.logits.shape[1] == num_classes:
        return float((emb.logits.argmax(1) == truth).double().mean()), "classifier"
    geo = model.method.geometry
    protos = geo.class_prototypes(emb.embeddings, truth, num_classes)
    pred = torch.cat([geo.pairwise_dist(emb.embeddings[s:s + 4096], protos).argmin(1)
                      for s in range(0, len(truth), 4096)])
    return float((pred == truth).double().mean()), "nearest_prototype"


def _retrained_in_this_sweep(config: dict[str, Any], meta: dict[str, Any]) -> bool:
    """Whether a model's metadata says this sweep trained it: ``retrain=true`` trains each model once per
    sweep, not once per task cell that uses it (a ``harness run`` has no sweep and always retrains)."""
    sweep = config.get("sweep_id")
    return bool(sweep) and meta.get("sweep_id") == sweep


def untrained(config: dict[str, Any]) -> bool:
    """Whether the cell evaluates a network that takes no training step: a method that never trains
    (``random_init``), or any method at ``train.epochs=0`` (its network at its seeded initialisation,
    read the method's way: the reference its trained rows are compared with on the leaderboards)."""
    return not get_registry().load("method", config["method"]["name"]).TRAINS or config["train"]["epochs"] == 0


def trained_model(config: dict[str, Any], dataset: ImageDataset, protocol: Protocol,
                  device: torch.device, progress: bool = True) -> tuple[TrainedModel, bool]:
    """Train the cell's model, or load it from memory or the disk cache; the flag says it was cached.

    A corrupt cache entry is trained again; ``retrain=true`` ignores the cache, except for a model this
    sweep has already retrained (for another task's cell); two processes that need one model train it
    once (the second waits for the first's)."""
    from harness.backbones import build_backbone, input_size
    from harness.method import TrainInfo, build_method

    method_cls = get_registry().load("method", config["method"]["name"])
    data = training_data(config, dataset, protocol, method_cls)
    key = model_key(config, method_cls, data)
    held = f"{key}@{device}"  # a model in memory serves cells on its own device only
    if held in _MODELS and (not config.get("retrain") or _retrained_in_this_sweep(config, _MODELS[held].stats)):
        _MODELS.move_to_end(held)
        return _MODELS[held], True

    tcfg = TrainConfig(**config["train"])
    seed = int(config["seed"])
    torch.manual_seed(seed)
    labels, num_classes = data.labels()
    source = data.dataset
    size = input_size(config["backbone"], source.info.image_size)
    backbone, feat_dim = build_backbone(config["backbone"], in_chans=source.info.channels, img_size=size)
    info = TrainInfo(feat_dim=feat_dim, num_classes=num_classes, num_train=len(data.indices),
                     label_field=data.label_field, epochs=tcfg.epochs, extra_labels=data.extra, train=tcfg,
                     image_size=tuple(source.info.image_size))
    method = build_method(method_cls, make_config(method_cls, config["method"]), backbone, info)
    mean, std = _norm_stats(source, backbone, bool(config["backbone"].get("pretrained")))
    viewer = engine.Viewer(mean, std, size, device, generator=torch.Generator().manual_seed(seed))
    model = TrainedModel(method, viewer, key, {}, mean, std, trained_on=source.fingerprint())
    embed_train = model.embedder(source, device, tcfg)

    cache_file = Path(config["cache_dir"]).expanduser() / "models" / f"{key}.pt"
    meta_file = cache_file.with_suffix(".json")

    def cached() -> dict[str, Any] | None:
        if not (cache_file.exists() and meta_file.exists()):
            return None
        try:
            meta = json.loads(meta_file.read_text())
            if not isinstance(meta, dict):
                raise ValueError(f"its metadata {meta_file.name} holds {type(meta).__name__}, not a JSON object")
            if config.get("retrain") and not _retrained_in_this_sweep(config, meta):
                return None
            with engine.state_kept_on_failure(method):  # a failed read trains from the fresh initialisation
                method.load_state_dict(torch.load(cache_file, map_location="cpu", weights_only=True))
            return meta
        except Exception as exc:  # noqa: BLE001 - truncated, foreign or stale: train it again
            print(f"  the cached model {cache_file} could not be read ({type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:200] if str(exc) else 'no message'}): training it again",
                  file=sys.stderr)
            cache_file.unlink(missing_ok=True)
            meta_file.unlink(missing_ok=True)
            return None

    def embed_train_now() -> tuple[torch.Tensor, torch.Tensor]:  # state.embed_train: current weights, no cache
        e, f, _ = engine.embed_arrays(method, source, data.indices, viewer, device,
                                      engine.autocast_dtype(device, tcfg.amp), tcfg.embed_batch_size,
                                      tcfg.num_workers)
        return e, f

    if untrained(config):  # a reference evaluated untrained: nothing to train or cache
        model.stats = {"seconds": 0.0, "steps": 0, "final_loss": None, "epoch_loss": [], "images_per_s": None,
                       "train_top1": None,
                       "train_top1_kind": "not trained" if not method_cls.TRAINS else "at initialisation"}
        method.to(device).eval()
        return _remember(_MODELS, held, model, _KEEP_MODELS), False

    claim, meta = claim_or_wait(cache_file.with_suffix(".lock"), cached)
    was_cached = meta is not None
    if claim is not None:
        try:
            ckpt_file = cache_file.with_suffix(".ckpt.pt")
            if config.get("retrain"):
                ckpt_file.unlink(missing_ok=True)
            stats = engine.train(method, dataset=source, indices=data.indices, labels=labels, extra=data.extra,
                                 cfg=tcfg, viewer=viewer, device=device, seed=seed, progress=progress,
                                 embed_train=embed_train_now, checkpoint=ckpt_file, on_checkpoint=claim.refresh)
            meta = asdict(stats)
            top1, kind = _train_top1(model, data, embed_train)
            meta.update(train_top1=top1, train_top1_kind=kind, sweep_id=config.get("sweep_id"))
            save_tensors({k: v.detach().cpu() for k, v in method.state_dict().items()}, cache_file)
            atomic_write_text(meta_file, json.dumps(meta, allow_nan=True))
            ckpt_file.unlink(missing_ok=True)
        finally:
            claim.release()
    method.to(device).eval()
    engine.configure_device(method, device, tcfg, viewer)
    model.stats = meta
    return _remember(_MODELS, held, model, _KEEP_MODELS), was_cached


def cell_of(config: dict[str, Any]) -> dict[str, Any]:
    """The cell's identity: plugin names, seed, variant tag and pre-training dataset."""
    tag, _ = variant_of(config)
    train_ds = config.get("train_dataset")
    return {"method": config["method"]["name"], "backbone": config["backbone"]["name"],
            "dataset": config["dataset"]["name"], "task": config["task"]["name"], "seed": int(config["seed"]),
            "variant": tag, "train_dataset": train_ds["name"] if train_ds else None}


def finished(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The existing result at ``path`` if the cell need not run again."""
    if config.get("force") or config.get("retrain") or not path.exists():
        return None
    try:
        prev = read_result(path)
    except Exception:  # noqa: BLE001 - unreadable: run again and overwrite
        return None
    if prev.get("config_hash") != config_hash(config) or prev.get("cell") != cell_of(config):
        return None  # the config changed since (or the file was edited or moved here by hand)
    if _plugin_version_changed(prev, config):
        return None  # its method's or task's VERSION was bumped since (a changed loss or protocol)
    try:
        digest = weights_digest(config["backbone"].get("pretrained"))
    except OSError:
        digest = None  # unreadable now: the run says so
    if digest is not None and (prev.get("protocol") or {}).get("weights_sha256") != digest:
        return None  # the checkpoint file at backbone.pretrained was replaced since
    if prev["status"] == "failed" and config.get("rerun_failed", True):
        return None
    return prev


def plugin_versions(config: dict[str, Any]) -> dict[str, str]:
    """The ``VERSION`` of the cell's task and method, as a result's ``protocol`` records them."""
    registry = get_registry()
    return {"task_version": str(registry.load("task", config["task"]["name"]).VERSION),
            "method_version": str(registry.load("method", config["method"]["name"]).VERSION)}


def _plugin_version_changed(prev: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether ``prev`` was computed under another VERSION of its task or method than the installed one
    (:func:`~harness.results.recorded_versions`)."""
    recorded = recorded_versions(prev)
    try:
        current = plugin_versions(config)
    except Exception:  # noqa: BLE001 - a plugin that does not load now: the run says so
        return False
    return any(k in recorded and recorded[k] != v for k, v in current.items())


def _kept(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The finished result at ``path`` (:func:`finished`), marked as kept, or None."""
    prev = finished(path, config)
    if prev is not None:
        prev["_resumed"] = True
    return prev


def _owner_text(owner: dict[str, Any] | None) -> str:
    """Who holds a claim, readably: ``host vm, pid 18580, SLURM job 1000_3, since 19:13:53``."""
    if not owner:
        return "by a process that has just finished or is starting"
    parts = [f"host {owner.get('host', '?')}", f"pid {owner.get('pid', '?')}"]
    if owner.get("job"):
        parts.append(f"SLURM job {owner['job']}")
    if isinstance(owner.get("since"), (int, float)):
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["since"])))
    return ", ".join(parts)


def check_writable(directory: str | Path, key: str = "results_dir", option: str | None = None) -> None:
    """Fail before any work if ``directory`` (the config's ``key``: results_dir, cache_dir) cannot take files;
    ``option``: how to choose another (default ``KEY=PATH``)."""
    root = Path(directory).expanduser()
    blocker = next((p for p in (root, *root.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"{key} '{root}' is not writable: {blocker} is a file, not a folder; choose another one "
                          f"with {option or key + '=PATH'}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{key} '{root}' is not writable ({type(exc).__name__}: {exc.strerror or exc}); "
                          f"choose another one with {option or key + '=PATH'}") from exc


def _finetune(task: Any, model: TrainedModel, config: dict[str, Any], dataset: ImageDataset, protocol: Protocol,
              device: torch.device, progress: bool, embed_fn: Any) -> tuple[Any, dict[str, Any] | None]:
    """Run the task's fine-tuning stage if it has one; return (the fine-tuned model, its stats).
    ``embed_fn``: the model's embeddings, the same cached function the evaluation reads."""
    from harness.finetune import FinetuneContext, run_finetune

    amp = engine.autocast_dtype(device, config["train"]["amp"])
    ctx = FinetuneContext(dataset=dataset, protocol=protocol, seed=int(config["seed"]), device=device,
                          cfg=task.cfg, amp_dtype=amp, method=model.method, mean=model.mean, std=model.std,
                          input_size=model.viewer.size, embed_fn=embed_fn)
    with torch.random.fork_rng(devices=[]):  # the head's initialisation: the seed's, whatever ran before
        torch.manual_seed(int(config["seed"]))
        spec = task.finetune(ctx)
    if spec is None:
        return None, None
    material = {"model": model.key, "task": config["task"], "task_class": type(task).__qualname__,
                "task_version": task.VERSION, "seed": config["seed"]}
    key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]
    cache_file = Path(config["cache_dir"]).expanduser() / "finetune" / f"{key}.pt"
    stats = run_finetune(spec, cache_file=cache_file, seed=int(config["seed"]), device=device, amp_dtype=amp,
                         retrain=bool(config.get("retrain")), progress=progress, label=f"{task.name} fine-tune")
    spec.model.eval()
    return spec.model, stats


def _save_embeddings(path: Path, ctx: EvalContext, protocol: Protocol) -> Path:
    """Write every evaluation split's ``<split>_indices`` (positions in the dataset), ``<split>_embeddings``
    and ``<split>_dist0`` (the geometry's distance to the origin: HACK's prototypicality), the geometry the
    embeddings live in (``geometry``: its name, ``geometry_c``: its c, 0-d arrays that ``harness delta``
    reads), and the arrays the task kept with :meth:`EvalContext.save_array`, to one ``.npz``, atomically."""
    import io

    geometry = ctx.geometry.to_json()
    arrays: dict[str, np.ndarray] = {"geometry": np.array(str(geometry["name"])),
                                     "geometry_c": np.array(float(geometry.get("c") or 0.0))}
    for split, idx in protocol.eval.items():
        emb = ctx.embed(idx).embeddings
        with torch.no_grad():
            arrays[f"{split}_dist0"] = ctx.geometry.dist0(emb).detach().cpu().numpy()
        arrays[f"{split}_indices"] = np.asarray(idx)
        arrays[f"{split}_embeddings"] = emb.detach().cpu().numpy()
    if clash := sorted(set(arrays) & set(ctx.arrays)):
        raise ValueError(f"save_array: {', '.join(clash)} is an evaluation split's key or the geometry's; choose "
                         "another name")
    arrays.update(ctx.arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return path


#: A cell whose process died this many times in a row (its claim left behind by a dead pid on this host,
#: outside SLURM) is recorded as failed instead of being run again, so one crashing cell cannot stop a grid.
CRASHES_BEFORE_FAILED = 2


def run_cell(config: dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Run one cell from a resolved config dict and return its result (also written to disk).

    The config is validated first (a :class:`~harness.errors.ConfigError` before any work). A cell that
    another process is running (its claim is live) is not run: the returned dict has status ``claimed``
    and nothing is written.
    """
    config = validate(config)
    cell = cell_of(config)
    path = result_path(config["results_dir"], cell)
    if (prev := _kept(path, config)) is not None:
        _warn_outputs_not_written(config, prev)
        return prev
    check_writable(config["results_dir"])
    check_writable(config["cache_dir"], "cache_dir")
    claim = Claim(path.with_suffix(".claim"))
    if not claim.acquire():
        return {"status": "claimed", "cell": cell, "reason": f"running elsewhere: {_owner_text(claim.owner())}",
                "timings": {}, "_claimed": True}
    try:
        if (prev := _kept(path, config)) is not None:  # finished elsewhere between our check and our claim
            return prev
        if claim.deaths >= CRASHES_BEFORE_FAILED:
            return write_result(path, failed_result(
                config, cell, f"the process running this cell died {claim.deaths} times in a row without writing a "
                "result (out of memory? a crash in native code?); recorded as failed so the grid goes on. Run it "
                "alone (harness run … with this cell's overrides) to see why; launcher=gpu_pool runs each cell in a "
                "process of its own, so a crash fails only its cell"))
        return _run_claimed(config, cell, path, progress)
    finally:
        claim.release()


def _warn_outputs_not_written(config: dict[str, Any], kept: dict[str, Any]) -> None:
    """Say (once) that ``plots=true`` / ``save_embeddings=true`` wrote nothing for a cell kept from an
    earlier run without them: a kept cell is not evaluated again."""
    missing = [key for key, field in (("plots", "figures"), ("save_embeddings", "embeddings_file"))
               if config.get(key) and kept.get("status") == "ok" and not kept.get(field)]
    if missing:
        warnings.warn(f"{' and '.join(f'{k}=true' for k in missing)} wrote nothing for cells kept from an earlier "
                      "run without it (a kept cell is not evaluated again); add force=true to evaluate them again "
                      "(their models are cached, nothing is retrained)", stacklevel=2)


def new_result(config: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any]:
    """A result record of a validated cell config, before anything ran (no metrics, reason None)."""
    _, diff = variant_of(config)
    return {"schema_version": 2, "cell": cell, "config": config, "config_hash": config_hash(config),
            "variant": {"tag": cell["variant"], "diff": diff}, "grid": config.get("grid_name", "single"),
            "metrics": {}, "details": {}, "reason": None, "model_key": None, "protocol": {}}


def failed_result(config: dict[str, Any], cell: dict[str, Any], reason: str) -> dict[str, Any]:
    """The ``failed`` result record of a cell whose own run could not write one (its process died)."""
    return {**new_result(config, cell), "status": "failed", "reason": reason, "versions": {}, "timings": {}}


def _run_claimed(config: dict[str, Any], cell: dict[str, Any], path: Path, progress: bool) -> dict[str, Any]:
    # Dataset plugins cache their tensors under harness.data.cache_root(): make it follow cache_dir.
    os.environ["HARNESS_CACHE"] = str(Path(config["cache_dir"]).expanduser())
    start = time.perf_counter()
    device = engine.pick_device(config.get("device", "auto"))
    result = new_result(config, cell)
    result["device"] = describe_device(device)
    timings: dict[str, Any] = {"train_s": 0.0, "eval_s": 0.0, "train_cached": False}
    tb_file = path.with_suffix(".traceback.txt")
    try:
        result["versions"] = versions()
        dataset = load_dataset(config["dataset"])
        task = create("task", config["task"])
        task.check(dataset)
        protocol = task.protocol(dataset)
        result["protocol"] = {**plugin_versions(config), "train_label": protocol.train_label,
                              "train_size": int(len(protocol.train)),
                              "eval_sizes": {k: int(len(v)) for k, v in sorted(protocol.eval.items())}}
        model, timings["train_cached"] = trained_model(config, dataset, protocol, device, progress)
        result["model_key"], timings["train_s"] = model.key, float(model.stats.get("seconds", 0.0))
        if (digest := weights_digest(config["backbone"].get("pretrained"))) is not None:
            result["protocol"]["weights_sha256"] = digest
        result["geometry"] = model.method.geometry.to_json()
        result["reference"] = untrained(config)  # an untrained reference row (random_init, train.epochs=0)
        result["training"] = {k: model.stats.get(k) for k in ("final_loss", "epoch_loss", "train_top1",
                                                              "train_top1_kind", "steps", "images_per_s")}
        embed_fn = model.embedder(dataset, device, TrainConfig(**config["train"]))
        finetuned, ft_stats = _finetune(task, model, config, dataset, protocol, device, progress, embed_fn)
        if ft_stats is not None:
            timings.update(finetune_s=ft_stats["seconds"], finetune_cached=ft_stats["cached"])
            result["training"]["finetune"] = {k: ft_stats.get(k) for k in ("iterations", "final_loss",
                                                                          "resumed_from")}
        t_eval = time.perf_counter()
        ctx = EvalContext(dataset=dataset, protocol=protocol, method=model.method,
                          embed_fn=embed_fn, seed=int(config["seed"]),
                          device=device, artifacts_dir=path.with_name(f"{path.stem}_plots")
                          if config.get("plots") else None, finetuned=finetuned)
        metrics = checked_metrics(task, task.evaluate(ctx))
        first_split = next(iter(protocol.eval.values()), None)
        if first_split is not None and len(first_split):
            from harness.diagnostics import embedding_diagnostics

            ctx.details["embedding_diagnostics"] = {
                "split": next(iter(protocol.eval)), **embedding_diagnostics(ctx.embed(first_split).embeddings,
                                                                             ctx.geometry)}
        timings["eval_s"] = time.perf_counter() - t_eval
        result["metrics"] = {k: m.to_json() for k, m in sorted(metrics.items())}
        result["details"] = {"convention": task.CONVENTION, **ctx.details} if task.CONVENTION else ctx.details
        root = Path(config["results_dir"]).expanduser().resolve()
        if ctx.artifacts_dir is not None and ctx.artifacts_dir.is_dir():
            result["figures"] = sorted(p.resolve().relative_to(root).as_posix()
                                       for p in ctx.artifacts_dir.glob("*.png"))
        if config.get("save_embeddings"):
            saved = _save_embeddings(path.with_name(f"{path.stem}_embeddings.npz"), ctx, protocol)
            result["embeddings_file"] = saved.resolve().relative_to(root).as_posix()
        result["status"] = "ok"
    except Incompatible as exc:
        result.update(status="skipped", reason=str(exc))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a crashed cell is recorded and the sweep goes on
        # SystemExit too: a plugin (or a library it calls, argparse) that exits must not end the sweep
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SystemExit) else \
            f"SystemExit({exc.code!r}): code in this cell called sys.exit(); a plugin raises an exception instead"
        result.update(status="failed", reason=reason)
        atomic_write_text(tb_file, traceback.format_exc())
        # relative to the results folder, as the other files a result names: it moves with the folder
        result["traceback_file"] = tb_file.resolve().relative_to(
            Path(config["results_dir"]).expanduser().resolve()).as_posix()
    if result["status"] != "failed":
        tb_file.unlink(missing_ok=True)  # a traceback of an earlier failed run no longer applies
    result.setdefault("versions", {})
    timings = {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()}
    result["timings"] = {**timings, "total_s": round(time.perf_counter() - start, 3)}
    return write_result(path, result)
