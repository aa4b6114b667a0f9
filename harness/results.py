"""Result files: one JSON per cell, schema'd, written atomically (temp file + rename). No pickles.

Schema (``schema_version`` 2), top-level keys and their types:

``schema_version``  int, this module's :data:`SCHEMA_VERSION`
``status``          ``"ok"`` | ``"failed"`` | ``"skipped"``
``reason``          str | null: why a cell failed or was skipped
``cell``            ``{method, backbone, dataset, task: str, seed: int, variant: str, train_dataset: str|null}``:
                    the plugin names of the cell; ``variant`` is "" for the default config, else a short
                    tag of what differs from it (``variant`` below)
``variant``         ``{tag: str, diff: {dotted key: value}}``: the cell's config minus the defaults of
                    its plugins (what an ablation changed)
``metrics``         name → ``{value: number|null, higher_is_better: bool, ci95?: number ≥ 0, n?: int ≥ 0,
                    reason?: str, bounds?: [low|null, high|null]}`` (values in natural units, e.g. [0, 1],
                    inside ``bounds`` when given; null with a reason when undefined)
``details``         dict: task facts that are not metrics (episode count, conventions, diagnostics…)
``protocol``        dict: ``{task_version, method_version, train_label, train_size, eval_sizes}`` (the two
                    plugins' ``VERSION``: a result under another is run again, and left out of a row
                    whose newer seeds ran under the installed one)
``training``        dict: ``{final_loss, epoch_loss, train_top1, train_top1_kind, steps, images_per_s}``
``config``          dict: the full resolved config of the cell
``config_hash``     str: sha256 of the config without run-local keys (results_dir, cache_dir, device…)
``model_key``       str | null: the trained-model cache key
``grid``            str: the grid the cell ran in (``grid_name``)
``geometry``        dict: the method's geometry ``{name, c}``
``reference``       bool: an untrained reference row (the method does not train, e.g. ``random_init``)
``versions``        dict: python, torch, timm, geoopt, harness, and every plugin distribution
``device``          str: e.g. ``"cuda:0 (NVIDIA H100)"``, or ``"cpu (<model>, AVX512, 2 threads)"``: the CPU's
                    model, PyTorch's vector instruction set and its thread count (older results: ``"cpu"``)
``timings``         dict: ``{train_s, eval_s, total_s, train_cached, finetune_s?}``
``figures``         list of PNG paths relative to the results folder (cells run with ``plots=true``)
``embeddings_file`` str: the cell's ``.npz`` of embeddings relative to the results folder (``save_embeddings=true``):
                    per evaluation split ``<split>_indices``, ``<split>_embeddings``, ``<split>_dist0``; the
                    embeddings' ``geometry`` (name) and ``geometry_c``; and the arrays the task kept
                    (``EvalContext.save_array``)
``nonfinite``       list of dotted paths whose NaN/inf value was stored as null (absent when none)
``traceback_file``  str: the saved traceback relative to the results folder (failed cells only)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from harness.bounds import check_bounds
from harness.config import computed_config

SCHEMA_VERSION = 2
STATUSES = ("ok", "failed", "skipped")
#: key -> the JSON types it may hold
SCHEMA: dict[str, tuple[type, ...]] = {
    "schema_version": (int,), "status": (str,), "cell": (dict,), "metrics": (dict,), "config": (dict,),
    "config_hash": (str,), "versions": (dict,), "timings": (dict,),
}
OPTIONAL: dict[str, tuple[type, ...]] = {
    "reason": (str, type(None)), "details": (dict,), "protocol": (dict,), "grid": (str,),
    "model_key": (str, type(None)), "device": (str,), "traceback_file": (str,), "variant": (dict,),
    "training": (dict,), "nonfinite": (list,), "geometry": (dict,), "figures": (list,),
    "reference": (bool,), "embeddings_file": (str,),
}
CELL_KEYS = ("method", "backbone", "dataset", "task", "seed")


class ResultSchemaError(ValueError):
    """A result file does not follow the schema."""


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of :func:`harness.config.computed_config` (run-local keys and the dataset's read options
    aside; key order does not matter)."""
    core = computed_config(config)
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()


def result_path(results_dir: str | Path, cell: dict[str, Any]) -> Path:
    """``<results_dir>/<task>/<dataset>/<method>/<backbone>[/<variant>]/seed<seed>.json``.

    Every part is a checked plugin name or a hex tag, so the path stays inside ``results_dir``.
    """
    from harness.config import check_name

    parts = [check_name(k, str(cell[k])) for k in ("task", "dataset", "method", "backbone")]
    variant = str(cell.get("variant") or "")
    if variant:
        parts.append(check_name("variant", variant))
    return Path(results_dir).expanduser().joinpath(*parts) / f"seed{int(cell['seed'])}.json"


def _chmod_umask(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) as :func:`atomic_write_bytes` does."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the new one, never a torn one; the file gets
    the user's umask (``mkstemp`` would leave it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _chmod_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate(result: Any) -> dict[str, Any]:
    """Check a result dict against the schema (keys AND types); return it or raise :class:`ResultSchemaError`."""
    if not isinstance(result, dict):
        raise ResultSchemaError(f"a result is a JSON object, got {type(result).__name__}")
    missing = [k for k in SCHEMA if k not in result]
    if missing:
        raise ResultSchemaError(f"result lacks key(s) {missing}")
    for key, types in {**SCHEMA, **OPTIONAL}.items():
        if key in result and (not isinstance(result[key], types)
                              or isinstance(result[key], bool) and bool not in types):
            raise ResultSchemaError(f"{key} must be {' or '.join(t.__name__ for t in types)}, "
                                    f"got {type(result[key]).__name__} {result[key]!r:.60}")
    if result["schema_version"] != SCHEMA_VERSION:
        raise ResultSchemaError(f"schema_version {result['schema_version']} is not {SCHEMA_VERSION}; "
                                "re-run the cell with this harness version")
    if result["status"] not in STATUSES:
        raise ResultSchemaError(f"status {result['status']!r} is not one of {STATUSES}")
    cell = result["cell"]
    missing_cell = [k for k in CELL_KEYS if k not in cell]
    if missing_cell:
        raise ResultSchemaError(f"cell lacks key(s) {missing_cell}")
    for k in ("method", "backbone", "dataset", "task"):
        if not isinstance(cell[k], str):
            raise ResultSchemaError(f"cell.{k} must be a string, got {cell[k]!r}")
    if not isinstance(cell["seed"], int) or isinstance(cell["seed"], bool):
        raise ResultSchemaError(f"cell.seed must be an integer, got {cell['seed']!r}")
    if result["status"] == "ok" and not result["metrics"]:
        raise ResultSchemaError("status ok with no metrics (a cell that ran records at least one)")
    for name, m in result["metrics"].items():
        if not isinstance(m, dict) or "value" not in m or not isinstance(m.get("higher_is_better"), bool):
            raise ResultSchemaError(f"metric {name!r} must be {{value, higher_is_better: bool, ...}}, got {m!r}")
        if m["value"] is not None and not _is_number(m["value"]):
            raise ResultSchemaError(f"metric {name!r}: value must be a number or null, got {m['value']!r}")
        if m["value"] is not None and not math.isfinite(m["value"]):
            raise ResultSchemaError(f"metric {name!r}: value {m['value']} is not finite (store null with a reason)")
        for opt in ("ci95", "n"):
            if m.get(opt) is not None and not (_is_number(m[opt]) and m[opt] >= 0):
                raise ResultSchemaError(f"metric {name!r}: {opt} must be a number ≥ 0, got {m[opt]!r}")
        if m.get("bounds") is not None:
            _check_metric_bounds(name, m)
    return result


def _check_metric_bounds(name: str, metric: dict[str, Any]) -> None:
    """A stored value is inside its bounds exactly (the run moved rounding overshoots onto the bound)."""
    bounds = metric["bounds"]
    try:
        if not isinstance(bounds, list):
            raise ValueError(f"metric bounds are [low, high] (numbers or null), got {bounds!r}")
        low, high = check_bounds(bounds)
    except ValueError as exc:
        raise ResultSchemaError(f"metric {name!r}: {exc}") from None
    value = metric["value"]
    if value is not None and (low is not None and value < low or high is not None and value > high):
        raise ResultSchemaError(f"metric {name!r}: value {value!r} is outside its bounds {bounds} (a result "
                                "edited by hand? re-run the cell)")


def sanitize(value: Any, path: str = "", found: list[str] | None = None) -> Any:
    """A copy of ``value`` with every NaN/inf float replaced by None; their dotted paths go to ``found``."""
    if isinstance(value, float) and not math.isfinite(value):
        if found is not None:
            found.append(path or "<root>")
        return None
    if isinstance(value, dict):
        return {k: sanitize(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


def write_result(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Validate and atomically write one result file (sorted keys: same result, same bytes).

    NaN / inf anywhere (a config value, a metric, a detail) are stored as null, their paths listed
    under ``nonfinite`` and, for a metric, a ``reason``; returns the result as written.
    """
    found: list[str] = []
    clean = sanitize(result, found=found)
    if found:
        clean["nonfinite"] = sorted(set(clean.get("nonfinite", [])) | set(found))
        for p in found:
            parts = p.split(".")
            if len(parts) >= 3 and parts[0] == "metrics" and parts[-1] == "value":
                metric = clean["metrics"][".".join(parts[1:-1])]
                metric.setdefault("reason", "the computed value was NaN or infinite")
    validate(clean)
    atomic_write_text(path, json.dumps(clean, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return clean


#: ``protocol`` keys of the plugins' ``VERSION``s (a result under another is run again / left out of its row).
VERSION_KEYS = ("method_version", "task_version")


def recorded_versions(result: dict[str, Any]) -> dict[str, str]:
    """The method's and task's ``VERSION`` a result was computed under, from its ``protocol``. A result
    with a protocol that does not record one was written before versions were recorded, and counts as
    ``"1"`` (every plugin's first): a result that may predate a bump is run again rather than kept.
    A result without a protocol (a failure before evaluation) records nothing."""
    protocol = result.get("protocol")
    if not isinstance(protocol, dict):
        return {}
    return {key: str(protocol.get(key, "1")) for key in VERSION_KEYS}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_result(path: str | Path) -> dict[str, Any]:
    """Read and validate one result file (strict JSON: NaN / Infinity literals are rejected)."""
    with open(path, encoding="utf-8") as fh:
        return validate(json.load(fh, parse_constant=_reject_constant))


def iter_results(results_dir: str | Path, *, strict: bool = False) -> list[tuple[Path, dict[str, Any]]]:
    """Every valid result under ``results_dir``, sorted by path. A file that cannot be read or does not
    follow the schema is skipped with a warning naming it and why (``strict``: raised instead)."""
    import warnings

    out = []
    root = Path(results_dir).expanduser()
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or not path.name.startswith("seed"):
            continue
        try:
            out.append((path, read_result(path)))
        except (ResultSchemaError, ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
            if strict:
                raise ResultSchemaError(f"{path}: {exc}") from exc
            warnings.warn(f"ignoring {path}: {type(exc).__name__}: {exc}", stacklevel=2)
    return out
