"""Result files: one JSON per cell, schema'd, written atomically (temp file + rename). No pickles.

Schema (``schema_version`` 1), top-level keys:

``schema_version``  int, this module's :data:`SCHEMA_VERSION`
``status``          ``"ok"`` | ``"failed"`` | ``"skipped"``
``reason``          why a cell failed or was skipped (null when ok)
``cell``            ``{method, backbone, dataset, task, seed}``: the plugin names of the cell
``metrics``         name → ``{value, higher_is_better, ci95?, n?}`` (values in natural units, e.g. [0, 1])
``details``         task facts that are not metrics (episode count, conventions, skipped queries…)
``protocol``        ``{task_version, train_label, train_size, eval_sizes}``
``config``          the full resolved config of the cell
``config_hash``     sha256 of the config without run-local keys (results_dir, cache_dir, device…)
``model_key``       the trained-model cache key
``grid``            the grid the cell ran in (``grid_name``)
``versions``        python, torch, timm, geoopt, harness, and every plugin distribution
``device``          e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``
``timings``         ``{train_s, eval_s, total_s, train_cached}``
``traceback_file``  path of the saved traceback (failed cells only)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")
REQUIRED_KEYS = ("schema_version", "status", "cell", "metrics", "config", "config_hash", "versions", "timings")
CELL_KEYS = ("method", "backbone", "dataset", "task", "seed")
#: Config keys that change where or how a cell runs but not what it computes.
RUN_LOCAL_KEYS = ("results_dir", "cache_dir", "device", "force", "rerun_failed", "grid_name", "plots",
                  "leaderboard_dir")


class ResultSchemaError(ValueError):
    """A result file does not follow the schema."""


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the config with run-local keys removed (key order does not matter)."""
    core = {k: v for k, v in config.items() if k not in RUN_LOCAL_KEYS}
    if isinstance(core.get("train"), dict):  # loader workers do not change what is computed
        core["train"] = {k: v for k, v in core["train"].items() if k != "num_workers"}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()


def result_path(results_dir: str | Path, cell: dict[str, Any]) -> Path:
    """``<results_dir>/<task>/<dataset>/<method>/<backbone>/seed<seed>.json``."""
    return (Path(results_dir) / str(cell["task"]) / str(cell["dataset"]) / str(cell["method"])
            / str(cell["backbone"]) / f"seed{cell['seed']}.json")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate(result: dict[str, Any]) -> dict[str, Any]:
    """Check a result dict against the schema; return it unchanged or raise :class:`ResultSchemaError`."""
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ResultSchemaError(f"result lacks key(s) {missing}")
    if result["schema_version"] != SCHEMA_VERSION:
        raise ResultSchemaError(f"schema_version {result['schema_version']} is not {SCHEMA_VERSION}; "
                                "re-run the cell with this harness version")
    if result["status"] not in STATUSES:
        raise ResultSchemaError(f"status {result['status']!r} is not one of {STATUSES}")
    missing_cell = [k for k in CELL_KEYS if k not in result["cell"]]
    if missing_cell:
        raise ResultSchemaError(f"cell lacks key(s) {missing_cell}")
    for name, m in result["metrics"].items():
        if not isinstance(m, dict) or "value" not in m or "higher_is_better" not in m:
            raise ResultSchemaError(f"metric {name!r} must be {{value, higher_is_better, ...}}, got {m!r}")
    return result


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Validate and atomically write one result file (sorted keys: same result, same bytes)."""
    validate(result)
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_result(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return validate(json.load(fh))


def iter_results(results_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every valid result under ``results_dir``, sorted by path (unreadable files are reported, not fatal)."""
    import warnings

    out = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(results_dir).parts):
            continue
        try:
            out.append((path, read_result(path)))
        except (ResultSchemaError, json.JSONDecodeError, OSError) as exc:
            warnings.warn(f"ignoring {path}: {exc}", stacklevel=2)
    return out
