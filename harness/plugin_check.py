"""Smoke checks every plugin gets for free: ``harness check-plugin DIST`` and ``tests/test_plugins.py``.

A third-party package runs ``harness check-plugin my-dist`` in its own CI; the
harness's test suite runs the same checks over its whole registry. Per kind:

* method — the class follows the contract (``Method(cfg, backbone, info)``), its
  ``Config`` defaults validate, one training step on a tiny batch gives a finite
  scalar loss and finite gradients, embeddings are finite and the geometry's
  distances are zero on the diagonal;
* backbone — builds through timm and maps a batch to ``(B, feat_dim)``;
* dataset — the class follows the contract; built with its defaults it has
  annotation arrays of one length, splits inside it and uint8 images of the
  declared size — or, for data read from disk, a missing root raises
  :class:`~harness.errors.DatasetNotFoundError` naming what goes where;
* task — the class follows the contract and its ``Config`` defaults validate;
* augmentation — maps a float batch to one of the same shape and range;
* config files — every YAML variant in the plugin's config groups composes
  into a valid config.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np


class NotChecked(Exception):
    """A plugin that cannot be checked here (a config value only the user can give, data not on this
    machine): reported as ``not checked`` with the reason, not as a failure."""


#: Config values given with ``--set NAME.KEY=VALUE``, by plugin name.
_GIVEN: dict[str, dict[str, Any]] = {}


def _defaults(cls: type) -> Any:
    """The plugin's config from its defaults and the ``--set`` values given for it, validated."""
    from harness.config import run_validate
    from harness.errors import MissingConfigValue
    from harness.registry import make_config

    plugin = getattr(cls.Config, "name", "") or cls.__name__
    try:
        cfg = make_config(cls, dict(_GIVEN.get(plugin, {})))
    except MissingConfigValue as exc:
        raise NotChecked(f"{exc}".split(";")[0] + f": give it with --set {plugin}.KEY=VALUE") from exc
    run_validate(cfg)
    return cfg


def check_method(spec: Any) -> None:
    import torch

    from harness.backbones import build_backbone
    from harness.config import TrainConfig
    from harness.engine import Viewer
    from harness.method import Batch, TrainInfo, TrainState, build_method
    from harness.registry import get_registry

    cls = get_registry().load("method", spec.name)
    cfg = _defaults(cls)
    torch.manual_seed(0)
    backbone, dim = build_backbone({"name": "conv4_32", "pretrained": None, "img_size": None, "kwargs": {}},
                                   in_chans=3, img_size=(16, 16))
    # 12 images per class: room for per-class clustering (e.g. hcm: k-means with 12 clusters per class)
    n, classes = 48, 4
    labels = np.arange(n) % classes
    boxes = np.empty(n, dtype=object)
    for i in range(n):
        boxes[i] = np.array([[1, 1, 9, 9, i % classes], [6, 4, 15, 12, (i + 1) % classes]], np.float32)
    extra_all = {"coarse_label": labels // 2, "label": labels, "boxes": boxes, "typicality": np.linspace(0, 1, n)}
    extra = {k: extra_all[k] for k in cls.requires if k in extra_all}
    train = TrainConfig(epochs=1, batch_size=12)
    info = TrainInfo(feat_dim=dim, num_classes=classes if cls.supervised else 0, num_train=n,
                     label_field="label" if cls.supervised else None, epochs=1, extra_labels=extra, train=train,
                     image_size=(16, 16))
    method = build_method(cls, cfg, backbone, info)
    raw = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8)
    viewer = Viewer((0.5,) * 3, (0.5,) * 3, (16, 16), torch.device("cpu"), torch.Generator().manual_seed(0))
    state = TrainState(epoch=0, epochs=1, step=0, device=torch.device("cpu"), rng=np.random.default_rng(0),
                       embed_train=lambda: (method.embed(viewer(raw)).detach(), method.features(viewer(raw)).detach()),
                       labels=labels if cls.supervised else None, generator=torch.Generator().manual_seed(1))
    emb = method.embed(viewer(raw)).detach()
    if not (emb.shape[0] == n and torch.isfinite(emb).all()):
        raise AssertionError(f"embeddings of shape {tuple(emb.shape)} are not (n, dim) and finite")
    d = method.geometry.pairwise_dist(emb[:5], emb)
    if d.shape != (5, n) or not torch.allclose(torch.diagonal(d[:, :5]), torch.zeros(5), atol=1e-3):
        raise AssertionError("the geometry's distance of a point to itself is not 0")
    if not cls.TRAINS:
        return
    method.train()
    method.on_epoch_start(state)
    plan = method.batch_indices(state.labels, 12, np.random.default_rng(0))
    pos = torch.as_tensor(next(iter(plan)) if plan is not None else np.arange(12))
    batch = Batch(raw=raw[pos], labels=torch.as_tensor(labels)[pos] if cls.supervised else None, indices=pos,
                  annotations={k: (torch.as_tensor(v)[pos] if np.asarray(v).dtype != object
                                   else [v[int(j)] for j in pos]) for k, v in extra.items()},
                  viewer=lambda x, policy: viewer(x, policy), default_policy="crop")
    loss = method.training_step(batch, state)
    if not (loss.ndim == 0 and torch.isfinite(loss)):
        raise AssertionError(f"training_step returned {loss!r}, not a finite scalar")
    loss.backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    if not grads or not all(torch.isfinite(g).all() for g in grads):
        raise AssertionError("no gradient, or a non-finite one, after one step")


def check_backbone(spec: Any) -> None:
    import timm
    import torch

    from harness.backbones import build_backbone

    spec.load()
    if not timm.is_model(spec.name):
        raise AssertionError(f"importing {spec.target} did not register '{spec.name}' in timm's registry")
    model, dim = build_backbone({"name": spec.name, "pretrained": None, "img_size": None, "kwargs": {}},
                                in_chans=3, img_size=(32, 32))
    out = model.eval()(torch.zeros(2, 3, 32, 32))
    if tuple(out.shape) != (2, dim):
        raise AssertionError(f"output shape {tuple(out.shape)} is not (2, {dim})")


def check_dataset(spec: Any) -> None:
    import torch

    from harness.data import check_contents
    from harness.errors import DatasetNotFoundError
    from harness.registry import get_registry

    cls = get_registry().load("dataset", spec.name)
    cfg = _defaults(cls)
    try:
        ds = cls(cfg)
    except DatasetNotFoundError as exc:
        if "root" not in str(exc).lower() and "/" not in str(exc):
            raise AssertionError(f"DatasetNotFoundError does not say where the files go: {exc}") from exc
        raise NotChecked(f"its files are not here ({str(exc).splitlines()[0]}); the message says where they "
                         f"go. To check it, give its folder: --set {spec.name}.root=PATH") from exc
    check_contents(ds)
    ds.load_images(np.arange(min(2, len(ds))))  # checked by ImageDataset against its info (check_image_batch)


def check_task(spec: Any) -> None:
    from harness.registry import get_registry

    cls = get_registry().load("task", spec.name)
    cls(_defaults(cls))


def check_augmentation(spec: Any) -> None:
    import torch

    policy = spec.load()
    x = torch.rand(4, 3, 16, 16)
    y = policy(x, torch.Generator().manual_seed(0))
    if y.shape != x.shape or not torch.isfinite(y).all() or y.min() < -1e-5 or y.max() > 1 + 1e-5:
        raise AssertionError(f"policy output {tuple(y.shape)} is not a batch of the input's shape in [0, 1]")


def check_config_file(kind: str, name: str) -> None:
    from harness.registry import config_root
    from harness.sweep import compose

    if kind == "config path":
        config_root(name)  # raises: it cannot be imported
        return
    compose([f"{kind}={name}"])


CHECKS: dict[str, Callable[[Any], None]] = {"method": check_method, "backbone": check_backbone,
                                            "dataset": check_dataset, "task": check_task,
                                            "augmentation": check_augmentation}


def config_files(dist: str | None = None) -> list[tuple[str, str]]:
    """(group, option) of every YAML config file on the plugins' search path (of one distribution); a
    search-path entry that cannot be imported is ``("config path", entry)``."""
    from harness.errors import PluginLoadError
    from harness.registry import config_root, get_registry

    registry = get_registry()
    out = []
    for impl in registry.pm.hook.harness_config_searchpath.get_hookimpls():
        if dist is not None and registry._dist_of.get(id(impl.plugin)) != dist:
            continue
        for entry in impl.function() or []:
            try:
                root = config_root(entry)
            except PluginLoadError:
                out.append(("config path", entry))
                continue
            for group in ("method", "backbone", "dataset", "task"):
                folder = root / group
                if folder.is_dir():
                    out += [(group, f.name[:-5]) for f in folder.iterdir() if f.name.endswith(".yaml")]
    return sorted(out)


def _normalized(dist: str | None) -> str:
    return re.sub(r"[-_.]+", "-", dist or "").lower()


def main(argv: list[str]) -> int:
    from tabulate import tabulate

    from harness.registry import get_registry

    parser = argparse.ArgumentParser(prog="harness check-plugin",
                                     description="run the registry's smoke checks on every plugin of a distribution")
    parser.add_argument("dist", help="distribution name as `harness list` shows it (e.g. harness-example-plugin)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of each failed check")
    parser.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="a config value for plugin NAME (a field without a default, a dataset's root); "
                             "VALUE is read as YAML; repeatable")
    args = parser.parse_args(argv)
    import yaml

    _GIVEN.clear()
    for item in args.set:
        key, sep, value = item.partition("=")
        plugin, dot, field = key.partition(".")
        if not (sep and dot and plugin and field):
            parser.error(f"--set {item}: expected NAME.KEY=VALUE (e.g. --set my_dataset.root=/data/x)")
        _GIVEN.setdefault(plugin, {})[field] = yaml.safe_load(value)
    registry = get_registry()
    rows, failed = [], 0
    # as pip compares names (PEP 503): harness_example_plugin is harness-example-plugin
    args.dist = next((s.dist for kind in CHECKS for s in registry.specs(kind).values()
                      if _normalized(s.dist) == _normalized(args.dist)), args.dist)
    specs = [s for kind in CHECKS for s in registry.specs(kind).values() if s.dist == args.dist]
    files = config_files(args.dist)
    if not specs and not files:
        failed_import = [e for e in registry.load_errors
                         if _normalized(f"distribution '{args.dist}'") in _normalized(e)]
        if failed_import:
            print(f"harness check-plugin: distribution '{args.dist}' is installed, but {failed_import[0]}. Fix that "
                  "import (run `python -c \"import <its module>\"` to see the whole traceback)", file=sys.stderr)
            return 1
        dists = sorted({s.dist for kind in CHECKS for s in registry.specs(kind).values()})
        print(f"harness check-plugin: distribution '{args.dist}' registers no plugins. Check that it is installed "
              "(pip show), that its entry point is in the group 'harness' ([project.entry-points.harness] in "
              "pyproject.toml) and that its hook functions carry @hookimpl. Distributions with plugins: "
              f"{', '.join(dists)}", file=sys.stderr)
        return 2
    jobs = [(s.kind, s.name, lambda s=s: CHECKS[s.kind](s)) for s in specs]
    jobs += [(g if g == "config path" else f"{g} config", n, lambda g=g, n=n: check_config_file(g, n))
             for g, n in files]
    for kind, name, job in jobs:
        try:
            job()
            rows.append([kind, name, "ok", ""])
        except NotChecked as exc:
            rows.append([kind, name, "not checked", str(exc)])
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the others still run
            failed += 1
            rows.append([kind, name, "FAILED", f"{type(exc).__name__}: {exc}".splitlines()[0][:160]])
            if args.verbose:
                traceback.print_exc()
    print(tabulate(rows, headers=["kind", "name", "check", "reason"], tablefmt="simple"))
    unchecked = sum(row[2] == "not checked" for row in rows)
    print(f"{len(rows) - failed - unchecked} passed, {failed} failed" + (f", {unchecked} not checked" if unchecked else ""))
    return 1 if failed else 0


__all__ = ["CHECKS", "check_config_file", "config_files", "main", *(f"check_{k}" for k in CHECKS)]
