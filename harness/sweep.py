"""Running cells through Hydra: ``harness run`` (one cell) and ``harness sweep`` (a grid).

A sweep is a Hydra multirun. Its grid is a config group (``grid=default``,
``grid=smoke``) that sets ``hydra.sweeper.params``; command-line overrides
such as ``method=a,b seed=0,1,2`` replace axes. The default launcher runs every
cell in this process (one interpreter start, models cached in memory);
``hydra/launcher=…`` (e.g. ``submitit_slurm``) sends cells elsewhere. A
re-run skips finished cells, a failing cell is recorded and the sweep goes on,
and a line per cell shows elapsed time and ETA.
"""

from __future__ import annotations

import importlib.resources
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.errors import UnknownPluginError
from harness.registry import get_registry
from harness.specs import KINDS


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _value(metric: dict[str, Any]) -> str:
    if metric.get("value") is None:
        return "n/a"
    ci = metric.get("ci95")
    return f"{metric['value']:.4f}" + (f" ± {ci:.4f}" if ci is not None else "")


def count_cells(config: DictConfig) -> int:
    """Number of jobs the basic sweeper will launch (grid params merged with command-line overrides)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))


class SweepProgress(Callback):
    """One line per cell: position, status, cell, its time, elapsed and ETA; leaderboards at the end."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = self.ran = 0
        self.ran_seconds = 0.0
        self.start = time.perf_counter()
        self.counts: dict[str, int] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.perf_counter()
        try:
            self.total = count_cells(config)
        except Exception:  # a launcher or sweeper we cannot count for: no ETA
            self.total = None
        print(f"harness sweep: {self.total if self.total is not None else '?'} cells "
              f"-> {config.results_dir}", flush=True)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        try:
            result = job_return.return_value
        except Exception as exc:  # the job itself crashed outside run_cell
            result = {"status": "failed", "reason": str(exc), "cell": {}, "timings": {}}
        if not isinstance(result, dict):
            return
        self.done += 1
        resumed = bool(result.get("_resumed"))
        status = "kept" if resumed else result.get("status", "?")
        self.counts[status] = self.counts.get(status, 0) + 1
        took = float(result.get("timings", {}).get("total_s", 0.0))
        if not resumed:
            self.ran += 1
            self.ran_seconds += took
        cell = result.get("cell", {})
        name = "/".join(str(cell.get(k, "?")) for k in ("task", "dataset", "method", "backbone")) \
            + f"/seed{cell.get('seed', '?')}"
        elapsed = time.perf_counter() - self.start
        if self.total is not None:
            left = max(self.total - self.done, 0)
            eta = _fmt_s(left * self.ran_seconds / self.ran) if self.ran else "?"
            pos = f"[{self.done:>{len(str(self.total))}}/{self.total}]"
        else:
            eta, pos = "?", f"[{self.done}]"
        single = str(config.hydra.mode) == "RunMode.RUN"
        line = (f"{status} {name}  {took:.1f}s" if single
                else f"{pos} {status:<7} {name}  {took:.1f}s | elapsed {_fmt_s(elapsed)} | ETA {eta}")
        if result.get("status") in ("failed", "skipped") and not resumed:
            line += f"\n        {str(result.get('reason', ''))[:300]}"
        elif single:  # `harness run`: show what the cell measured
            line += "\n" + "\n".join(f"        {k} = {_value(m)}" for k, m in result.get("metrics", {}).items())
        print(line, flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items())) or \
            "cells ran in the launcher's own processes: their lines are in its logs"
        print(f"harness sweep: finished in {_fmt_s(time.perf_counter() - self.start)} ({summary})", flush=True)
        out = config.get("leaderboard_dir")
        if out:
            from harness.leaderboard import write_all

            for path in write_all(config.results_dir, out):
                print(f"leaderboard: {path}", flush=True)


def _yaml_file(searchpath: list[str], group: str, name: str) -> Any:
    """The config file ``<group>/<name>.yaml`` on the plugins' search path, or None."""
    for entry in searchpath:
        if entry.startswith("pkg://"):
            try:
                path = importlib.resources.files(entry[len("pkg://"):]) / group / f"{name}.yaml"
            except ModuleNotFoundError:
                continue
        else:
            path = Path(entry.removeprefix("file://")) / group / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def _has_yaml(searchpath: list[str], group: str, name: str) -> bool:
    return _yaml_file(searchpath, group, name) is not None


def _grid_axes(searchpath: list[str], overrides: list[str]) -> list[str]:
    """The plugin axes of the selected grid as overrides (``method=a,b``), so they are checked too."""
    grid = next((o.split("=", 1)[1] for o in overrides if o.startswith("grid=")), None)
    path = _yaml_file(searchpath, "grid", grid) if grid else None
    if path is None:
        return []
    params = (OmegaConf.create(path.read_text()).get("hydra") or {}).get("sweeper", {}).get("params") or {}
    return [f"{k}={v}" for k, v in params.items() if k in KINDS]


def prepare(overrides: list[str]) -> list[str]:
    """Validate plugin names in ``overrides`` (did-you-mean), register config nodes for plugins without a
    yaml file (and for timm backbones named on the command line), and add the plugins' search path."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.override_parser.overrides_parser import OverridesParser

    registry = get_registry()
    searchpath = registry.config_searchpath()
    store = ConfigStore.instance()
    for kind in KINDS:
        for name in registry.specs(kind):
            if not _has_yaml(searchpath, kind, name):
                store.store(group=kind, name=name, node=_default_node(kind, name))
    for ov in OverridesParser.create().parse_overrides(_grid_axes(searchpath, overrides) + overrides):
        key = ov.get_key_element()
        if key not in KINDS:
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.value()]
        for value in values:
            value = str(value)
            if value in registry.specs(key):
                continue
            if key == "backbone":
                from harness.backbones import resolve_backbone

                resolve_backbone(value)  # a timm name, or did-you-mean
                if not _has_yaml(searchpath, key, value):
                    store.store(group=key, name=value, node=_default_node(key, value))
                continue
            raise UnknownPluginError(key, value, registry.specs(key))
    quoted = ",".join(f"'{p}'" for p in searchpath)
    return [*overrides, f"hydra.searchpath=[{quoted}]"]


def _default_node(kind: str, name: str) -> dict[str, Any]:
    return ({"name": name, "pretrained": None, "img_size": None, "small_input_stem": "auto", "kwargs": {}}
            if kind == "backbone" else {"name": name})


def _job(cfg: DictConfig) -> dict[str, Any]:
    import torch
    from hydra.core.hydra_config import HydraConfig

    from harness.run import run_cell

    config = OmegaConf.to_container(cfg, resolve=True)
    gpus = torch.cuda.device_count()
    if config.get("device", "auto") == "auto" and gpus > 1:
        # Parallel launchers (joblib, submitit) run several cells at once: spread them over the GPUs.
        config["device"] = f"cuda:{HydraConfig.get().job.num % gpus}"
    return run_cell(config, progress=sys.stderr.isatty())


def launch(overrides: list[str], *, multirun: bool) -> None:
    """Run the Hydra app with ``overrides`` (what ``harness run`` / ``harness sweep`` do)."""
    import hydra

    if multirun and not any(a.startswith("grid=") for a in overrides):
        overrides = ["grid=default", *overrides]
    args = prepare(overrides)
    app = hydra.main(version_base="1.3", config_path="conf", config_name="config")(_job)
    argv = sys.argv
    sys.argv = ["harness", *(["--multirun"] if multirun else []), *args]
    try:
        app()
    finally:
        sys.argv = argv


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved config of one cell, as ``harness run`` would build it (for the Python API and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    args = prepare(list(overrides or []))
    with initialize_config_module(config_module="harness.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=args)
    return OmegaConf.to_container(cfg, resolve=True)
