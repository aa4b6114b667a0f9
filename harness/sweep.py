"""Running cells through Hydra: ``harness run`` (one cell) and ``harness sweep`` (a grid).

A sweep is a Hydra multirun. Its grid is a config group (``grid=default``,
``grid=quick``) that sets ``hydra.sweeper.params``; command-line overrides
such as ``method=a,b seed=0,1,2`` replace axes. Before anything runs, every
plugin name and every axis value is checked (did-you-mean, types, ranges), the
results folder is checked for writing and the grid's size against
:data:`harness.config.LARGE_GRID`. The default launcher runs every cell in this
process (one interpreter start, models cached in memory); ``hydra/launcher=…``
(``gpu_pool``, ``slurm``, ``ray``, ``submitit_local``) sends cells elsewhere. Every job
reports its status to ``<results_dir>/.sweep/<sweep id>/``, so the summary,
the progress line and the exit status cover cells run in other processes.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.config import LARGE_GRID, BackboneConfig, check_name
from harness.config_files import config_names, yaml_file
from harness.errors import ConfigError, HarnessError, UnknownPluginError
from harness.progress import format_seconds
from harness.registry import get_registry
from harness.specs import KINDS

#: What went wrong around the cells of the last ``launch`` (no cell to run, leaderboards not written):
#: raised once Hydra returns, since Hydra turns a callback's exception into a warning.
SWEEP_PROBLEMS: list[str] = []
#: Cells that failed in the last ``launch`` of this process (the CLI's exit status).
LAST_SWEEP: dict[str, int] = {}

# ``${harness_expanduser:${results_dir}}``: Hydra's own files (hydra.sweep.dir) follow a results_dir given
# as '~/r' (quoted, so no shell expanded it) to where the cells write, not to a folder named '~'
if not OmegaConf.has_resolver("harness_expanduser"):
    OmegaConf.register_new_resolver("harness_expanduser", lambda path: os.path.expanduser(str(path)))


def _value(metric: dict[str, Any]) -> str:
    if metric.get("value") is None:
        return f"null ({metric['reason']})" if metric.get("reason") else "null"
    ci = metric.get("ci95")
    return f"{metric['value']:.4f}" + (f" ± {ci:.4f}" if ci is not None else "")


def _plain(value: Any) -> str:
    """A config value as the override grammar writes it: ``null``, ``true``/``false``, else ``str``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_exclude_rules(rules: Any) -> list[dict[str, list[str]]]:
    """``hydra.sweeper.exclude`` as a list of ``{axis: [values]}`` (see the ``harness`` sweeper); values
    as the override grammar writes them (``null``, ``true``), a leading ``!`` negating."""
    if rules is None:
        return []
    if OmegaConf.is_config(rules):
        rules = OmegaConf.to_container(rules, resolve=True)
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r for r in rules):
        raise ConfigError("hydra.sweeper.exclude must be a list of non-empty mappings {axis: value or [values]}, "
                          f"e.g. [{{dataset: reid_synthetic, task: '!reid'}}]; got {rules!r}")
    return [{str(k): [_plain(x) for x in (v if isinstance(v, list) else [v])] for k, v in r.items()} for r in rules]


def _matches(value: str | None, allowed: list[str]) -> bool:
    if value is None:
        return False
    negated = [a[1:] for a in allowed if a.startswith("!")]
    if negated:
        return value not in negated
    return value in allowed


def _override_value(override: str, parser: Any) -> tuple[str, str] | None:
    """``(key, value)`` of one override as Hydra reads it: ``+``/``++`` prefixes off the key, quotes off
    a string, ``null`` / booleans in the grammar's spelling."""
    try:
        (ov,) = parser.parse_overrides([override])
        return ov.key_or_group, _plain(ov.value())
    except Exception:  # noqa: BLE001 - not one plain override: compare it as written
        if "=" not in override:
            return None
        key, value = override.split("=", 1)
        return key.lstrip("+~"), value


def drop_excluded(jobs: list[list[str]], rules: list[dict[str, list[str]]]) -> list[list[str]]:
    """The jobs (override lists ``key=value``) that match no exclude rule. A rule key that no job has
    (a misspelt axis) is named in a warning: such a rule never drops anything."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = {o: _override_value(o, parser) for o in {o for job in jobs for o in job}}
    values = [dict(kv for o in job if (kv := parsed[o]) is not None) for job in jobs]
    keys = set().union(*values) if values else set()
    options: dict[str, list[str]] = {}  # per plugin axis a rule names: every name it accepts
    # stacklevel 1: one location, so the sweep's count and its sweeper say each rule's warning once
    for rule in rules:
        unknown = sorted(k for k in rule if k not in keys)
        if unknown and jobs:
            warnings.warn(f"hydra.sweeper.exclude rule {rule} names {unknown}, which no cell of this sweep sets "
                          f"(its keys: {', '.join(sorted(keys))}): the rule drops nothing", stacklevel=1)
        for key in (k for k in rule if k in keys and k in KINDS):
            if key not in options:
                options[key] = _group_options(get_registry().config_searchpath(), key)
            for value in (a.lstrip("!") for a in rule[key]):
                if value not in options[key]:  # a misspelt plugin (an axis narrowed on the command line is no typo)
                    close = difflib.get_close_matches(value, options[key], n=1, cutoff=0.6)
                    warnings.warn(f"hydra.sweeper.exclude rule {rule}: {key}={value} is no {key}"
                                  + (f" (did you mean '{close[0]}'?)" if close else "")
                                  + ": that part of the rule matches nothing", stacklevel=1)
    return [job for job, v in zip(jobs, values)
            if not any(all(_matches(v.get(k), allowed) for k, allowed in rule.items()) for rule in rules)]


def _sweep_params(config: DictConfig | dict[str, Any], task_overrides: list[str]) -> list[list[str]]:
    """The override lists of every job the sweeper launches (grid params + command line, less excluded cells)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = (config.get("hydra", {}) or {}).get("sweeper", {}) or {}
    params = sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(task_overrides)
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return drop_excluded(jobs, check_exclude_rules(sweeper.get("exclude")))


def count_cells(config: DictConfig) -> int:
    """Number of jobs the basic sweeper will launch (grid params merged with command-line overrides)."""
    return len(_sweep_params(OmegaConf.to_container(config, resolve=False), list(config.hydra.overrides.task)))


def status_dir(results_dir: str, sweep_id: str) -> Path:
    return Path(results_dir).expanduser() / ".sweep" / sweep_id


def _cell_name(cell: dict[str, Any]) -> str:
    name = "/".join(str(cell.get(k, "?")) for k in ("task", "dataset", "method", "backbone"))
    if cell.get("variant"):
        name += f"/{cell['variant']}"
    return name + f"/seed{cell.get('seed', '?')}"


class GridProgress:
    """One line per finished cell: position, status, cell, its time, the grid's counts, elapsed and ETA.
    ``parallel``: cells run at once elsewhere (SLURM jobs), so the ETA is wall time per cell run."""

    def __init__(self, total: int | None, *, parallel: bool = False) -> None:
        self.total, self.parallel = total, parallel
        self.done = self.ran = 0
        self.ran_seconds = 0.0
        self.start = time.perf_counter()
        self.counts: dict[str, int] = {}

    def job_done(self, job_return: Any, *, running: int | None = None, single: bool = False) -> None:
        try:
            result = job_return.return_value
        except Exception as exc:  # noqa: BLE001 - the job itself crashed outside run_cell
            result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "cell": {}, "timings": {}}
        if not isinstance(result, dict):
            return
        self.done += 1
        resumed = bool(result.get("_resumed"))
        status = status_word(result)
        self.counts[status] = self.counts.get(status, 0) + 1
        took = float(result.get("timings", {}).get("total_s", 0.0) or 0.0)
        if not resumed and status != "claimed":
            self.ran += 1
            self.ran_seconds += took
        name = _cell_name(result.get("cell", {}))
        elapsed = time.perf_counter() - self.start
        if self.total is not None:
            left = max(self.total - self.done, 0)
            # a parallel launcher (it reports running, 0 included): wall time per cell run (cells a re-run
            # kept took no time)
            per_cell = (elapsed / self.ran if self.ran else None) if running is not None or self.parallel else (
                self.ran_seconds / self.ran if self.ran else None)
            eta = format_seconds(left * per_cell) if per_cell else "?"
            pos = f"[{self.done:>{len(str(self.total))}}/{self.total}]"
        else:
            eta, pos = "?", f"[{self.done}]"
        if single:
            line = f"{status} {name}  {took:.1f}s"
        else:
            counts = f" | running {running}, failed {self.counts.get('failed', 0)}" if running is not None else ""
            line = f"{pos} {status:<7} {name}  {took:.1f}s{counts} | elapsed {format_seconds(elapsed)} | ETA {eta}"
        if result.get("status") in ("failed", "skipped", "claimed") and not resumed:
            line += f"\n        {str(result.get('reason', ''))[:300]}"
        elif status == "failed":  # kept from an earlier run (rerun_failed=false)
            line += f"\n        kept from an earlier run (rerun_failed=false): {str(result.get('reason', ''))[:300]}"
        elif single:  # `harness run`: show what the cell measured
            line += "\n" + "\n".join(f"        {k} = {_value(m)}" for k, m in result.get("metrics", {}).items())
        print(line, flush=True)


def status_word(result: dict[str, Any]) -> str:
    """A cell's status in the progress line, the summary and the exit status: its result's ``status``,
    or ``kept`` for a finished cell a re-run skipped. A failed cell kept by ``rerun_failed=false`` stays
    ``failed``: the grid is not complete, and the sweep exits 1."""
    status = str(result.get("status", "?"))
    return "kept" if result.get("_resumed") and status != "failed" else status


class SweepProgress(Callback):
    """Hydra callback: a :class:`GridProgress` line per cell run in this process; a summary, the exit
    status and the leaderboards at the end (cells run in other processes are read from their status files)."""

    def __init__(self) -> None:
        self.grid = GridProgress(None)
        self.pid = os.getpid()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            total = count_cells(config)
        except Exception:  # noqa: BLE001 - a sweeper we cannot count for: no ETA
            total = None
        self.grid, self.pid = GridProgress(total), os.getpid()
        print(f"harness sweep: {total if total is not None else '?'} cells -> {config.results_dir}", flush=True)
        if total == 0:
            SWEEP_PROBLEMS.append(f"this sweep has no cell to run: the exclude rules of grid={config.get('grid_name')} "
                                  "drop every combination of its axes with the command line's (its file lists "
                                  "them); change the axes, or start from grid=smoke")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # in a launcher's job process (a SLURM job, a gpu_pool worker) this is a copy of the sweep's callback:
        # its position, elapsed time and ETA are the sweep's process's to tell, so the job's log gets the
        # cell's own line only
        elsewhere = os.getpid() != self.pid
        self.grid.job_done(job_return, single=elsewhere or str(config.hydra.mode) == "RunMode.RUN")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        counts = dict(self.grid.counts)
        if not counts and config.get("sweep_id"):  # cells ran in the launcher's own processes
            counts = read_statuses(config.results_dir, config.sweep_id)
        LAST_SWEEP.clear()
        LAST_SWEEP.update(counts)
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no cell reported back"
        print(f"harness sweep: finished in {format_seconds(time.perf_counter() - self.grid.start)} ({summary})",
              flush=True)
        out = config.get("leaderboard_dir")
        if out and counts:  # no cell reported back: nothing new to render (and maybe no result at all)
            from harness.leaderboard import write_all

            try:
                for path in write_all(config.results_dir, out):
                    print(f"leaderboard: {path}", flush=True)
            except Exception as exc:  # noqa: BLE001 - the cells are safe; say why their tables are not
                SWEEP_PROBLEMS.append(f"the leaderboards could not be written to {out} ({type(exc).__name__}: "
                                      f"{exc}); the results are in {config.results_dir}: render them with "
                                      f"`harness leaderboard {config.results_dir} --out PATH`")


def read_statuses(results_dir: str, sweep_id: str) -> dict[str, int]:
    """Status counts of the jobs of one sweep, from their status files."""
    counts: dict[str, int] = {}
    folder = status_dir(results_dir, sweep_id)
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            status = json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
        counts[status] = counts.get(status, 0) + 1
    return counts


def _grid_of(overrides: list[str]) -> str | None:
    """The grid an override list names (``grid=NAME``), or None."""
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("grid=")), None)


def _has_yaml(searchpath: list[str], group: str, name: str) -> bool:
    return yaml_file(searchpath, group, name) is not None


def _grid_params(searchpath: list[str], overrides: list[str]) -> dict[str, Any]:
    grid = _grid_of(overrides)
    return _grid_file_params(searchpath, grid) if grid else {}


def _read_grid_file(path: Any) -> DictConfig:
    """A grid file's YAML; a file that is not YAML is a :class:`ConfigError` naming it and the line."""
    import yaml

    try:
        return OmegaConf.create(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"grid file {path} is not valid YAML ({where}{problem}); a grid file looks like "
                          "the built-in ones (`harness list grids`)") from None


def _grid_file_sweeper(searchpath: list[str], grid: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Any]:
    """``hydra.sweeper.params`` and ``hydra.sweeper.exclude`` of a grid file, after those of the grids its
    defaults list names (a smoke grid ``defaults: [paper_x, _self_]`` extends ``paper_x``), in Hydra's
    merge order (params merge by key; an ``exclude`` list replaces the one before)."""
    path = yaml_file(searchpath, "grid", grid)
    if path is None or grid in seen:
        return {}, None
    node = _read_grid_file(path)
    params: dict[str, Any] = {}
    exclude = None
    for entry in node.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            inherited, inherited_exclude = _grid_file_sweeper(searchpath, entry, (*seen, grid))
            params.update(inherited)
            exclude = inherited_exclude if inherited_exclude is not None else exclude
    sweeper = (node.get("hydra") or {}).get("sweeper", {}) or {}
    params.update(dict(sweeper.get("params") or {}))
    if sweeper.get("exclude") is not None:
        exclude = OmegaConf.to_container(sweeper["exclude"], resolve=True)
    return params, exclude


def _grid_file_params(searchpath: list[str], grid: str) -> dict[str, Any]:
    """``hydra.sweeper.params`` of a grid file (:func:`_grid_file_sweeper`)."""
    return _grid_file_sweeper(searchpath, grid)[0]


def _exclude_rules(searchpath: list[str], overrides: list[str]) -> list[dict[str, list[str]]]:
    """The sweep's exclude rules, checked: the grid file's, or those of ``hydra.sweeper.exclude=…`` on the
    command line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    grid = _grid_of(overrides)
    rules = _grid_file_sweeper(searchpath, grid)[1] if grid else None
    for override in overrides:
        if override.lstrip("+").startswith("hydra.sweeper.exclude="):
            rules = OverridesParser.create().parse_overrides([override])[0].value()
    return check_exclude_rules(rules)


def _grid_axes(searchpath: list[str], overrides: list[str]) -> list[str]:
    """The plugin axes of the selected grid as overrides (``method=a,b``), so they are checked too."""
    return [f"{k}={v}" for k, v in _grid_params(searchpath, overrides).items() if k in KINDS]


def _store_schemas(searchpath: list[str], extra_backbones: set[str]) -> None:
    """Typed nodes in Hydra's ConfigStore: the top-level schema and every plugin's Config dataclass
    (a plugin whose config file has its own name keeps the file). A plugin that fails to import or
    breaks its contract gets a bare node, so that selecting it reaches :func:`harness.config.validate`,
    which reports the error (instead of Hydra's "Could not find")."""
    from hydra.core.config_store import ConfigStore

    from harness.config import register_schemas

    registry = get_registry()
    nodes: dict[tuple[str, str], Any] = {}
    for kind in ("method", "dataset", "task"):
        for name in registry.specs(kind):
            if _has_yaml(searchpath, kind, name):
                continue
            try:
                nodes[(kind, name)] = registry.load(kind, name).Config
            except Exception:  # noqa: BLE001 - reported when the plugin is selected
                nodes[(kind, name)] = {"name": name}
    for name in {*registry.specs("backbone"), *extra_backbones}:
        if not _has_yaml(searchpath, "backbone", name):
            nodes[("backbone", name)] = BackboneConfig(name=name)
    register_schemas(ConfigStore.instance(), nodes)


#: Config keys that hold a free-form mapping: Hydra's struct mode refuses a new key in them unless the
#: override is forced (``++``), which the user should not have to know.
OPEN_MAPPINGS = ("backbone.kwargs",)


def _open_mapping_override(override: str) -> str:
    """``backbone.kwargs={drop_rate: 0.1}`` or ``backbone.kwargs.drop_rate=0.1`` → the forced ``++`` form."""
    key = override.split("=", 1)[0]
    if any(key == k or key.startswith(k + ".") for k in OPEN_MAPPINGS):
        return "++" + override
    return override


def prepare(overrides: list[str]) -> list[str]:
    """Validate plugin names in ``overrides`` and the grid (safe names, did-you-mean), register the typed
    config nodes, and add the plugins' search path."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra.core.plugins import Plugins

    from hydra_plugins.hyperbolic_harness.launchers import GpuPoolLauncher  # stores launcher=gpu_pool / slurm
    from hydra_plugins.hyperbolic_harness.sweeper import HarnessSweeper  # stores hydra/sweeper=harness

    # an editable install hides the modules from Hydra's package scan: register the classes by hand
    Plugins.instance().register(GpuPoolLauncher)
    Plugins.instance().register(HarnessSweeper)
    from hydra_plugins.hyperbolic_harness import launchers

    if hasattr(launchers, "HarnessSlurmLauncher"):  # with the `slurm` extra
        Plugins.instance().register(launchers.HarnessSlurmLauncher)
    overrides = [_open_mapping_override(_launcher_override(o)) for o in overrides]
    registry = get_registry()
    searchpath = registry.config_searchpath()
    overrides = [_expand_glob(o, searchpath) for o in overrides]
    grid = _grid_of(overrides)
    if grid is not None and not _has_yaml(searchpath, "grid", grid):
        raise UnknownPluginError("grid", grid, sorted(config_names(searchpath, "grid")))
    timm_backbones: set[str] = set()
    grid_params = [f"{k}={v}" for k, v in _grid_params(searchpath, overrides).items()]
    for ov in OverridesParser.create().parse_overrides(_grid_axes(searchpath, overrides) + overrides
                                                       + _appended_choices(searchpath, grid_params + overrides)):
        key = ov.get_key_element()
        if key not in KINDS:
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.value()]
        for value in values:
            value = check_name(key, value)
            if value in registry.specs(key) or _has_yaml(searchpath, key, value):
                continue
            if key == "backbone":
                from harness.backbones import resolve_backbone

                resolve_backbone(value)  # a timm name, or did-you-mean
                timm_backbones.add(value)
                continue
            raise UnknownPluginError(key, value, _group_options(searchpath, key), preferred=registry.specs(key))
    _store_schemas(searchpath, timm_backbones)
    quoted = ",".join(f"'{p}'" for p in searchpath)
    return [*overrides, f"hydra.searchpath=[{quoted}]"]


def _group_options(searchpath: list[str], kind: str) -> list[str]:
    """Every name ``kind=NAME`` accepts: the registered plugins, the group's config files and, for
    backbones, every timm model."""
    names = set(get_registry().specs(kind)) | config_names(searchpath, kind)
    if kind == "backbone":
        import timm

        names |= set(timm.list_models())
    return sorted(names)


def _expand_glob(override: str, searchpath: list[str]) -> str:
    """``method=glob(h*,exclude=hack*)`` → ``method=hcl,hcm,…``: Hydra lists a group's options only through
    its config loader, which a sweep's overrides are checked without; the plugin kinds are expanded here
    from what they accept, and a glob on any other key says to list the values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    if "glob(" not in override:
        return override
    try:
        (ov,) = OverridesParser.create().parse_overrides([override])
    except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself, with its grammar
        return override
    if ov.value_type != ValueType.GLOB_CHOICE_SWEEP:
        return override
    key = ov.key_or_group
    if key not in KINDS:
        raise ConfigError(f"{override}: glob() expands plugin names ({', '.join(KINDS)}); for {key} list the "
                          f"values instead ({key}=a,b,c)")
    matched = ov.value().filter(_group_options(searchpath, key))
    if not matched:
        raise ConfigError(f"{override} matches no {key}; `harness list {key}s` lists them")
    return f"{override.split('=', 1)[0]}={','.join(matched)}"


def _appended_choices(searchpath: list[str], overrides: list[str]) -> list[str]:
    """The plugin choices (``override /backbone: resnet34``) of the configs appended with ``+group=a,b``
    (a paper grid's settings), as overrides, so they are checked and their schemas stored too."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for ov in OverridesParser.create().parse_overrides([o for o in overrides if o.startswith("+")]):
        group = ov.get_key_element().lstrip("+")
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.value()]
        for value in values:
            path = yaml_file(searchpath, group, str(value))
            for entry in (OmegaConf.create(path.read_text()).get("defaults") or []) if path else []:
                if isinstance(entry, DictConfig):
                    for k, v in entry.items():
                        kind = str(k).removeprefix("override ").strip().lstrip("/")
                        if kind in KINDS:
                            out.append(f"{kind}={v}")
    return out


LAUNCHERS = {"gpu_pool": "every GPU of this machine, or local worker processes without GPUs",
             "slurm": "a SLURM cluster (pip install hyperbolic-harness[slurm])",
             "ray": "Ray tasks: a local Ray or a running cluster (pip install hyperbolic-harness[ray])",
             "submitit_local": "local processes through submitit", "basic": "this process (the default)"}
#: launchers that live in an optional extra: name -> (the Hydra plugin's module, its distribution, the extra)
_EXTRA_LAUNCHERS = {"slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
                    "ray": ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher", "ray")}


def _launcher_override(override: str) -> str:
    """``launcher=NAME`` is the short form of ``hydra/launcher=NAME``."""
    if not override.startswith("launcher="):
        return override
    name = override.split("=", 1)[1]
    if name not in LAUNCHERS:
        raise UnknownPluginError("launcher", name, LAUNCHERS)
    if name in _EXTRA_LAUNCHERS:
        import importlib.util

        module, dist, extra = _EXTRA_LAUNCHERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"launcher={name} needs {dist}: pip install 'hyperbolic-harness[{extra}]'")
    if name == "slurm":
        import shutil

        missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
        if missing:
            raise ConfigError(f"launcher=slurm submits with SLURM's {' and '.join(missing)}, which this machine does "
                              "not have on its PATH; start the sweep on the cluster's login node (launcher=gpu_pool "
                              "runs on the GPUs of this machine)")
    return f"hydra/launcher={name}"


def _job(cfg: DictConfig) -> dict[str, Any]:
    import torch
    from hydra.core.hydra_config import HydraConfig

    from harness.run import run_cell

    config = OmegaConf.to_container(cfg, resolve=True)
    gpus = torch.cuda.device_count()
    parallel = HydraConfig.get().runtime.choices.get("hydra/launcher") not in (None, "basic")
    if config.get("device", "auto") == "auto" and gpus > 1 and parallel:
        # Parallel launchers that leave a job every GPU (Ray, joblib) run several cells at once: spread them
        # over the GPUs. The basic launcher runs one cell at a time, on cuda:0 as `device=auto` says.
        config["device"] = f"cuda:{HydraConfig.get().job.num % gpus}"
    try:
        result = run_cell(config, progress=sys.stderr.isatty())
    except Exception as exc:  # noqa: BLE001 - a config error of this cell: report it, the sweep goes on
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "cell": _cell_guess(config),
                  "timings": {}}
    _LAST_RUN["failed"] = int(result.get("status") == "failed")
    _LAST_RUN["claimed"] = int(result.get("status") == "claimed")
    report_status(config, result)
    return result


def _cell_guess(config: dict[str, Any]) -> dict[str, Any]:
    """The cell of a config that failed its checks: its identity where it can be read, else the plugin
    names, the seed and the job's number (a failed cell's status file must not take another's name)."""
    from harness.run import cell_of

    try:
        return cell_of(config)
    except Exception:  # noqa: BLE001 - the config is what failed: name what can be named
        from hydra.core.hydra_config import HydraConfig

        names = {k: config[k].get("name", "?") if isinstance(config.get(k), dict) else "?"
                 for k in ("method", "backbone", "dataset", "task")}
        job = HydraConfig.get().job.num if HydraConfig.initialized() else "?"
        return {**names, "seed": config.get("seed", "?"), "variant": f"job{job}"}


def report_status(config: dict[str, Any], result: dict[str, Any]) -> None:
    """Write a job's status where the sweep's process reads it (``<results_dir>/.sweep/<sweep id>/``)."""
    from harness.results import atomic_write_text

    if not config.get("sweep_id"):
        return

    status = status_word(result)
    name = _cell_name(result.get("cell", {})).replace("/", "__")
    atomic_write_text(status_dir(config["results_dir"], config["sweep_id"]) / f"{name}.json",
                      json.dumps({"status": status, "reason": result.get("reason")}))


def _close_key(exc: BaseException) -> str | None:
    """The full key closest to one a config dataclass does not have (``method.dim`` for ``method.dimm``),
    from the OmegaConf error in ``exc``'s chain that names the dataclass (``object_type``); else None."""
    import dataclasses

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        schema, key = getattr(exc, "object_type", None), getattr(exc, "key", None)
        if dataclasses.is_dataclass(schema) and isinstance(key, str):
            fields = [f.name for f in dataclasses.fields(schema)]
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            full = str(getattr(exc, "full_key", "") or key)
            return f"{full[:len(full) - len(key)]}{close[0]}" if close else None
        exc = exc.__cause__ or exc.__context__
    return None


def _spelling(exc: BaseException) -> str:
    """``did you mean 'method.dim'?`` for a key the schema lacks (:func:`_close_key`), else
    ``check its spelling;``."""
    close = _close_key(exc)
    return f"did you mean '{close}'?" if close else "check its spelling;"


def _format_compose_error(exc: BaseException) -> str:
    """Hydra's composition errors as one line naming the key, the expected type and the value."""
    cause = exc.__cause__ or exc
    text = str(cause)
    key = getattr(cause, "full_key", None)
    first = text.splitlines()[0] if text else type(cause).__name__
    if in_file := re.match(r"In '([^']+)': \w+ raised while composing config:$", first):
        # an error inside a config file: Hydra puts what is wrong on the lines below
        lines = text.splitlines()[1:]
        what = next((ln.strip() for ln in lines if ln.strip()), "")
        full_key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.strip().startswith("full_key:")), None)
        where = in_file.group(1)
        if full_key == "grid" and where.startswith("grid/"):
            return (f"{where}.yaml: {what}: a grid file sets global keys, so its first line must be "
                    "`# @package _global_` (see any built-in grid, `harness list grids`)")
        hint = f"not in the schema: {_spelling(exc)} `harness run --cfg` prints every key" if "not in" in what else ""
        detail = "; ".join(filter(None, (full_key, hint)))
        return f"{where}.yaml: {what}" + (f" ({detail})" if detail else "")
    if type(cause).__name__ == "MissingMandatoryValue" or "Missing mandatory value" in text:
        return (f"{key or first}: this setting needs a value that only you can give (e.g. a checkpoint "
                f"path); add {key or 'KEY'}=... on the command line (the grid's setting file says what)")
    if "To append to your config use" in str(exc) or type(cause).__name__ == "ConfigAttributeError":
        if str(key or "").startswith("train_dataset."):
            return (f"{str(exc).splitlines()[0]} (train_dataset takes its dataset's options in one mapping: "
                    "train_dataset='{name: scenes, n_images: 800}')")
        return f"{str(exc).splitlines()[0]} (that key is not in the schema: {_spelling(exc)} " \
               "`harness run --cfg` prints every key)"
    return f"{key}: {first}" if key else first


#: Non-plugin axes longer than this are checked on this many values spread over the axis.
AXIS_CHECK_LIMIT = 64


def _axes(overrides: list[str], searchpath: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The sweep axes (key -> values, grid params overridden by the command line) and the single overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = _grid_params(searchpath, overrides)
    cli = [o for o in overrides if not o.startswith(("hydra", "grid="))]
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + cli)
    axes: dict[str, list[str]] = {}
    singles: list[str] = []
    for ov in parsed:
        key = ov.get_key_element()
        if ov.is_sweep_override():
            axes[key] = [str(v) for v in ov.sweep_string_iterator()]
            singles = [o for o in singles if _key(o) != key]
        else:
            singles = [o for o in singles if _key(o) != key] + [ov.input_line]
            axes.pop(key, None)
    return axes, singles


def _key(override: str) -> str:
    """The key of an override as the parser gives it (``+paper_smoke=x`` → ``+paper_smoke``)."""
    return override.split("=", 1)[0]


def _check_axes(overrides: list[str], axes: dict[str, list[str]], singles: list[str]) -> dict[str, Any]:
    """Compose the config once per value of every sweep axis, so a bad value anywhere in the grid is an
    error before the first cell runs (one composition per value, not per cell); return the first cell's."""
    return _compose_axes(overrides, axes, singles)[0]


def _compose_axes(overrides: list[str], axes: dict[str, list[str]], singles: list[str]) -> list[dict[str, Any]]:
    """The configs :func:`_check_axes` composes (the first cell's first). Overrides keep the grid's order,
    as the sweeper gives them: an appended config (``+paper_smoke=…``) after another overrides it."""
    grid = [o for o in overrides if o.startswith("grid=")]
    rank = {k: i for i, k in enumerate(_grid_params(get_registry().config_searchpath(), overrides))}
    singles_by_key = {_key(o): o for o in singles}
    # stable sort: keys the grid does not set (command line) keep their order, after the grid's
    order = sorted([*singles_by_key, *axes], key=lambda k: rank.get(k, len(rank)))
    empty = [k for k, v in axes.items() if not v]
    if empty:
        raise ConfigError(f"{empty[0]}: the sweep lists no value for it (e.g. range(0,0) is empty); give at least one")
    rules = _exclude_rules(get_registry().config_searchpath(), overrides)
    try:
        combos = _cells_to_check(axes, rules, singles)
    except _EveryCellExcluded as exc:
        raise ConfigError(f"the exclude rules of grid={_grid_of(overrides) or 'default'} drop every cell of this "
                          f"sweep: {exc}. Change the axes, or run the cells in a grid without those rules "
                          "(grid=smoke)") from None
    out = []
    for combo in combos:
        cell = {**singles_by_key, **{k: f"{k}={v}" for k, v in combo.items()}}
        try:
            out.append(compose([*grid, *(cell[k] for k in order)]))
        except ConfigError as exc:
            if not out or len(combos) < 2:
                raise
            where = ", ".join(f"{k}={v}" for k, v in combo.items() if v != combos[0][k])
            raise ConfigError(f"in the cells with {where}: {exc}") from exc
    return out


class _EveryCellExcluded(Exception):
    """The exclude rules keep no cell (the message names one cell and the rule that drops it)."""


#: A grid with more cells than this has its exclude rules left out of the pre-check (it composes the
#: first cell and one cell per axis value, some of which the rules may drop).
EXCLUDE_CHECK_LIMIT = 200_000


def _cells_to_check(axes: dict[str, list[str]], rules: list[dict[str, list[str]]],
                    singles: list[str] = ()) -> list[dict[str, str]]:
    """The cells whose configs are composed before anything runs: the first cell the exclude rules keep and,
    for every value of every axis (at most :data:`AXIS_CHECK_LIMIT` spread over a long non-plugin axis),
    a kept cell with it. A value only excluded cells have is not checked: no cell runs with it, so a key it
    lacks (``task.episodes`` with an excluded ``task=retrieval``) is no error."""
    import itertools

    sampled = {}
    for key, values in axes.items():
        if key not in KINDS and len(values) > AXIS_CHECK_LIMIT:
            step = len(values) / AXIS_CHECK_LIMIT
            values = [values[int(i * step)] for i in range(AXIS_CHECK_LIMIT)] + [values[-1]]
        sampled[key] = values
    keys = list(axes)
    first = {k: v[0] for k, v in axes.items()}
    total = 1
    for values in axes.values():
        total *= len(values)
    if not rules or total > EXCLUDE_CHECK_LIMIT:
        return [first, *({**first, k: v} for k, values in sampled.items() for v in values[1:])]
    # the rules also read the single values (task=few_shot against a rule on task), as the sweeper's jobs hold them
    jobs = [[*singles, *(f"{k}={v}" for k, v in zip(keys, values))] for values in itertools.product(*axes.values())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sweeper warns about the rules once, when it runs them
        kept = drop_excluded(jobs, rules)
        if jobs and not kept:
            rule = next(r for r in rules if not drop_excluded(jobs[:1], [r]))
            named = [o for o in jobs[0] if _key(o).lstrip("+~") in rule]  # what the rule reads of the first cell
            raise _EveryCellExcluded(f"e.g. the cell with {' '.join(named)} by the rule {rule}")
    wanted = {(k, v) for k, values in sampled.items() for v in values}
    combos: list[dict[str, str]] = []
    for job in kept:
        combo = dict(o.split("=", 1) for o in job[len(singles):])
        found = wanted & set(combo.items())
        if found or not combos:
            combos.append(combo)
            wanted -= found
        if not wanted:
            break
    return combos or [first]


def _check_backbone_input(config: dict[str, Any], problems: dict[str, str], checked: set[str]) -> None:
    """Record in ``problems`` when the cell's backbone cannot take its training images (too small for
    its patches or stages), as the cell would find at its first model build. A training dataset that
    does not load is left to the dataset check."""
    from harness.backbones import InputSizeError, check_input_size, input_size
    from harness.run import load_dataset

    node = config.get("train_dataset") or config["dataset"]
    try:
        info = load_dataset(node).info
        size = input_size(config["backbone"], info.image_size)
    except Exception:  # noqa: BLE001 - a dataset that does not load is the dataset check's to report
        return
    key = f"input:{json.dumps([config['backbone'], info.channels, size], sort_keys=True, default=str)}"
    if key in checked:
        return
    checked.add(key)
    try:
        check_input_size(config["backbone"], in_chans=info.channels, img_size=size)
    except InputSizeError as exc:
        problems[key] = f"dataset '{node['name']}': {exc}"
    except ConfigError as exc:  # a backbone that does not build at all
        problems[key] = str(exc)


def _note_task_split(config: dict[str, Any], uses: dict[tuple[str, str], dict[str, set[str]]]) -> None:
    """Record, for a ``task.split`` set to other than its task's default, the splits of the dataset it is
    used with (a typo in it makes every cell ``skipped``; a default split that a dataset lacks is the
    usual skip of a grid over datasets, not a mistake)."""
    from harness.config import plugin_defaults
    from harness.run import load_dataset

    task = config["task"]
    split = task.get("split")
    if not isinstance(split, str):
        return
    try:
        if split == plugin_defaults(get_registry().load("task", task["name"])).get("split"):
            return
        dataset = load_dataset(config["dataset"])
    except Exception:  # noqa: BLE001 - a task or dataset that does not load is reported by its own check
        return
    uses.setdefault((task["name"], split), {})[dataset.name] = set(dataset.splits)


def _source_cannot_fill(source: str, backbone: str, pretrained: str) -> str | None:
    """What the named weight ``source`` says, before any work, about filling ``backbone`` (its loader's
    optional ``check``; see the hook ``harness_weight_sources``), or None."""
    from harness.backbones import resolve_backbone

    if source == "checkpoint":
        return None
    check = getattr(get_registry().specs("weights")[source].load(), "check", None)
    try:
        return check(resolve_backbone(backbone), pretrained) if callable(check) else None
    except HarnessError:  # an unknown backbone is reported by the name check
        return None


def _not_a_checkpoint(path: str) -> str | None:
    """Why the file at ``path`` cannot be a PyTorch checkpoint (empty; neither ``torch.save``'s zip
    nor a pickle), read from its first bytes; None when it may be one."""
    with Path(path).expanduser().open("rb") as fh:
        head = fh.read(4)
    if not head:
        return "is an empty file: copy the weights file again"
    if head.startswith(b"PK") or head[:1] == b"\x80":  # torch.save's zip archive; the legacy pickle format
        return None
    return ("is not a PyTorch checkpoint (torch.save writes a zip archive, this file starts with "
            f"{head!r}): name the .pth / .pt file the weights were saved to")


def _check_far_split(node: dict[str, Any], split: str, where: str, problems: dict[str, str], checked: set[str]) -> None:
    """The split a ``task.far`` entry names exists in its dataset and holds images (generated datasets too:
    building them is cheap). A dataset that cannot be read is left to its own problem (above) or its cell."""
    from harness.data import far_images
    from harness.run import load_dataset

    key = repr(sorted(node.items()))
    if f"{key}:{split}" in checked or key in problems:
        return
    checked.add(f"{key}:{split}")
    try:
        dataset = load_dataset(node)
    except Exception:  # noqa: BLE001 - reported as the dataset's own problem, or by the cell that reads it
        return
    try:
        far_images(dataset, split, where)
    except ConfigError as exc:
        problems[f"{key}:{split}"] = str(exc)


def check_requirements(configs: list[dict[str, Any]], what: str = "grid") -> None:
    """Before any cell runs: every dataset read from a local root is there, every checkpoint path
    named by ``backbone.pretrained`` is a file, and every backbone can take its training images
    (:func:`harness.backbones.check_input_size`). One :class:`ConfigError` lists everything missing,
    with what each needs and where to get it (the dataset loaders' own messages)."""
    from harness.backbones import weight_source
    from harness.config import far_dataset
    from harness.errors import DatasetFormatError, DatasetNotFoundError
    from harness.registry import get_registry
    from harness.run import load_dataset

    problems: dict[str, str] = {}
    checked: set[str] = set()
    split_uses: dict[tuple[str, str], dict[str, set[str]]] = {}
    sources = set(get_registry().specs("weights"))
    for config in configs:
        far_splits = [far_dataset(entry, f"task.far[{i}]") for i, entry in enumerate(config["task"].get("far") or [])]
        far = [node for node, _ in far_splits]
        for node in (config["dataset"], config.get("train_dataset"), *far):
            if not isinstance(node, dict) or "root" not in node:
                continue
            key = repr(sorted(node.items()))
            if key in checked:
                continue
            checked.add(key)
            where = f"dataset '{node['name']}' under {node['root'] or 'its default root'}"
            try:
                dataset = load_dataset(node)  # kept in memory: the first cells reuse it
            except DatasetNotFoundError as exc:
                problems[key] = str(exc)
                if any(node is f for f in far):
                    problems[key] += (f"\n(it is a far OOD set of task.far: dataset.root names the evaluated dataset's "
                                      f"folder, not this one's; a far set's folder is the root key of its entry, "
                                      f"task.far='[{{name: {node['name']}, root: /path}}]', or HARNESS_DATA=<dir> "
                                      f"moves every default root, or leave {node['name']} out of task.far)")
                continue
            except DatasetFormatError as exc:  # the loader names the file and what is wrong in it
                problems[key] = f"{where}: {exc}"
                continue
            except Exception as exc:  # noqa: BLE001 - files there but unreadable (truncated, wrong format)
                problems[key] = (f"{where} could not be read: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''} "
                                 "(a truncated or wrongly formatted file? the dataset's documentation in "
                                 "`harness list datasets` says which files it reads)")
                continue
            if len(dataset) == 0:
                problems[key] = (f"{where} holds no images: none is listed in its index files or found in its "
                                 "image folders (another name or extension than the published ones?); put the "
                                 "dataset's files there (or point dataset.root / HARNESS_DATA at them)")
            elif found := dataset.file_problems():
                problems[key] = f"{where}:\n" + "\n".join(f"- {p}" for p in found)
        for i, (node, split) in enumerate(far_splits):
            if split is not None:
                _check_far_split(node, split, f"task.far[{i}]", problems, checked)
        _check_backbone_input(config, problems, checked)
        _note_task_split(config, split_uses)
        pretrained = config["backbone"].get("pretrained")
        source = weight_source(str(pretrained)) if pretrained else None
        if pretrained and source is None:
            close = difflib.get_close_matches(str(pretrained), sorted(sources), n=1, cutoff=0.6)
            problems[f"pretrained:{pretrained}"] = (
                f"backbone.pretrained={pretrained} is neither a weight source ({', '.join(sorted(sources))}) "
                "nor a checkpoint file" + (f" (did you mean '{close[0]}'?)" if close else "")
                + ": give the path of the weights file, backbone.pretrained=/path/to/weights.pth "
                "on the command line (a paper grid's header says which weights)")
        elif source == "checkpoint" and (why := _not_a_checkpoint(pretrained)):
            problems[f"pretrained:{pretrained}"] = f"backbone.pretrained={pretrained} {why}"
        elif source and (why := _source_cannot_fill(source, config["backbone"]["name"], str(pretrained))):
            problems[f"pretrained:{pretrained}:{config['backbone']['name']}"] = why
    for (task, split), datasets in split_uses.items():
        there = sorted(set().union(*datasets.values()))
        if split not in there:
            close = difflib.get_close_matches(split, there, n=1, cutoff=0.6)
            problems[f"split:{task}:{split}"] = (
                f"task.split={split}: no dataset of this {what} has that split (the splits of "
                f"{', '.join(sorted(datasets))}: {', '.join(there) or 'none'}), so every {task} cell would be skipped"
                + (f"; did you mean task.split={close[0]}?" if close else ""))
    if problems:
        raise ConfigError(f"this {what} cannot start: {len(problems)} problem(s) with what it needs (nothing ran):\n\n"
                          + "\n\n".join(problems.values()))


def launch(overrides: list[str], *, multirun: bool, yes: bool = False) -> int:
    """Run the Hydra app with ``overrides`` (what ``harness run`` / ``harness sweep`` do); return the
    number of failed cells."""
    import hydra

    launcher = next((o for o in overrides if o.startswith(("launcher=", "hydra/launcher="))), None)
    if launcher and not multirun:
        raise ConfigError(f"{launcher} applies to `harness sweep`; `harness run` runs its one cell in this process. "
                          f"Use `harness sweep {launcher} ...` (e.g. with seed=0 for one cell)")
    searchpath = get_registry().config_searchpath()
    overrides = [_expand_glob(_launcher_override(o), searchpath) for o in overrides]
    check_launcher_options(overrides)
    explicit_grid = any(a.startswith("grid=") for a in overrides)
    if multirun and not explicit_grid:
        overrides = ["grid=default", *overrides]
    args = prepare(overrides)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from harness.run import check_writable

    _check_sweep_syntax(overrides, searchpath, multirun)
    if multirun:
        axes, singles = _axes(overrides, searchpath)
        n = 1
        for values in axes.values():
            n *= len(values)
        parser = OverridesParser.create()
        allowed = ("allow_large_grid", "true") in [_override_value(o, parser) for o in singles]
        if n > LARGE_GRID and not (yes or allowed):
            raise ConfigError(f"this grid has {n:,} cells before its exclude rules (more than {LARGE_GRID:,}); add "
                              "--yes or allow_large_grid=true to run it")
        configs = _compose_axes(overrides, axes, singles)  # types and values of every axis, before anything runs
    else:
        configs = [compose(overrides)]
    base = configs[0]
    check_writable(base["results_dir"])
    check_writable(base["cache_dir"], "cache_dir")
    # the datasets check_requirements reads cache their decoded files where the cells will
    os.environ["HARNESS_CACHE"] = str(Path(base["cache_dir"]).expanduser())
    check_requirements(configs, "grid" if multirun else "run")
    if multirun and base.get("leaderboard_dir"):
        check_writable(base["leaderboard_dir"], "leaderboard_dir")
    if multirun:
        grid = _grid_of(overrides)
        cli_sweeps, cli_singles = _axes([o for o in overrides if not o.startswith("grid=")], [])
        # the command line's own axes, and its single values that replace one of the grid's axes
        grid_axes = set(_grid_params(searchpath, overrides))
        cli_axes = sorted({*cli_sweeps, *(k for k in map(_key, cli_singles) if k in grid_axes)})
        name = f"{grid} + command-line axes {'/'.join(cli_axes)}" if cli_axes else grid
        args = [*args, f"grid_name='{name}'", f"sweep_id={time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"]
    app = hydra.main(version_base="1.3", config_path="conf", config_name="config")(_job)
    argv = sys.argv
    sys.argv = ["harness", *(["--multirun"] if multirun else []), *args]
    LAST_SWEEP.clear()
    SWEEP_PROBLEMS.clear()
    try:
        app()
    finally:
        sys.argv = argv
    if SWEEP_PROBLEMS:
        raise HarnessError("; ".join(SWEEP_PROBLEMS))
    if not multirun:
        return int(_LAST_RUN.get("failed", 0))
    return int(LAST_SWEEP.get("failed", 0))


_LAST_RUN: dict[str, int] = {}

#: Keys that name where a sweep writes: one value per sweep, never an axis.
_FOLDER_KEYS = ("results_dir", "cache_dir", "leaderboard_dir")


def _check_sweep_syntax(overrides: list[str], searchpath: list[str], multirun: bool) -> None:
    """``harness run`` takes one value per key (``method=a,b`` is a sweep's axis), and a sweep does not
    sweep its folders (``results_dir=/a,/b``: a path with a comma, unquoted)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    grid = _grid_of(overrides)
    if not multirun and grid and (axes := sorted(_grid_params(searchpath, overrides))):
        warnings.warn(f"grid={grid}: `harness run` takes the grid's settings for its one cell, not its axes "
                      f"({', '.join(axes)}); `harness sweep grid={grid}` runs them", stacklevel=2)
    cli = [o for o in overrides if not o.startswith(("hydra", "grid="))]
    for ov in OverridesParser.create().parse_overrides(cli):
        if not ov.is_sweep_override():
            continue
        key = ov.get_key_element()
        if not multirun:
            raise ConfigError(f"{ov.input_line}: `harness run` runs one cell, and this lists several values (a "
                              f"sweep's axis): run them with `harness sweep {ov.input_line} …`; a value holding a "
                              f"comma is quoted: \"{key}='a,b'\"")
        if key in _FOLDER_KEYS:
            raise ConfigError(f"{ov.input_line}: {key} is where the sweep writes, one folder, not an axis; a path "
                              f"holding a comma is quoted: \"{key}='{ov.input_line.split('=', 1)[1]}'\"")


def claimed_cells(multirun: bool) -> int:
    """How many cells of the last ``launch`` were left to another process that is running them."""
    return int((LAST_SWEEP if multirun else _LAST_RUN).get("claimed", 0))


def check_launcher_options(overrides: list[str]) -> None:
    """Before anything starts: every ``hydra.launcher.KEY=…`` of the command line names an option of the
    launcher it chose (did-you-mean; Hydra's own answer suggests ``+hydra.launcher.KEY``, which the
    launcher then ignores), and ``launcher=gpu_pool``'s GPUs are there."""
    chosen = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra/launcher=")), None)
    given = {m.group(1): o for o in overrides if (m := re.match(r"^\+{0,2}hydra\.launcher\.(\w+)\S*?=", o))}
    if chosen is None:
        if given:
            raise ConfigError(f"{next(iter(given.values()))}: hydra.launcher options apply to a launcher chosen on "
                              "the command line (launcher=gpu_pool or launcher=slurm); the default launcher runs "
                              "the cells in this process and takes none")
        return
    from hydra_plugins.hyperbolic_harness import launchers

    options = launchers.launcher_options(chosen)
    for key, override in given.items():
        if options is not None and key not in options:
            close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
            raise ConfigError(f"launcher={chosen} has no option '{key}' ({override})"
                              + (f"; did you mean '{close[0]}'?" if close else "")
                              + f"\nits options: {', '.join(options)}")
    if chosen == "gpu_pool" and "gpus" in given:
        import yaml

        gpus = yaml.safe_load(given["gpus"].split("=", 1)[1])
        if gpus is not None and not (isinstance(gpus, list) and all(isinstance(g, int) for g in gpus)):
            raise ConfigError(f"{given['gpus']}: hydra.launcher.gpus is a list of GPU numbers, e.g. [0,1], or null")
        launchers.gpu_slots(gpus, 1)


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved, validated config of one cell, as ``harness run`` would build it (Python API, tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException

    from harness.config import validate

    args = prepare(list(overrides or []))
    try:
        with initialize_config_module(config_module="harness.conf", version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=args)
    except HydraException as exc:
        raise ConfigError(_format_compose_error(exc)) from exc
    config = OmegaConf.to_container(cfg, resolve=True)
    return validate(config)
