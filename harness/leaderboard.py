"""Leaderboards: one generated markdown file per task, rendered from result files (and ``papers.md``,
the published numbers beside ours, when results of a paper grid are present: :mod:`harness.published`).

Rows are (method, backbone) — with the variant's differences in the name where
one pair was run with several configs (``poincare_mlr (c=0.5)``) — columns are
metrics with ↑ / ↓, cells are ``mean ± half-width`` of the 95% Student-t
interval over seeds, the best mean of each column in bold. A metric that is
undefined (null, with a reason) shows ``null`` and its reason in a footnote.
Failed and skipped cells are listed with their reason. The same results always
give the same bytes.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.config import dotted_value, variant_label
from harness.errors import HarnessError
from harness.results import VERSION_KEYS, config_hash, iter_results, recorded_versions
from harness.stats import mean_ci95

CI_FOOTNOTE = ("± is the half-width of the 95% Student-t confidence interval over seeds, "
               "t₀.₉₇₅,ₙ₋₁·s/√n with s the sample standard deviation; n is the number of seeds "
               "(no interval when n = 1; a value that rests on fewer seeds than its row says so: (n=2)). A task's own per-run interval (e.g. few-shot accuracy over "
               "episodes) stays in the result JSON. ↑ higher is better, ↓ lower is better; "
               "the best mean of each column is in bold (every row that shows it, to 3 decimals).")


def _variant(r: dict[str, Any]) -> str:
    """What a cell computes apart from its seed (rows with the same key pool their seeds)."""
    if isinstance(r.get("variant"), dict):
        return str(r["variant"].get("tag", ""))
    return config_hash({k: v for k, v in r["config"].items() if k != "seed"})[:6]


#: The pseudo-setting that stands for a result written before variants were recorded: its config hash
#: tells its rows apart, but it is no setting to name in a label.
_OLD_RESULT_KEY = "config"


def _diff(r: dict[str, Any]) -> dict[str, Any]:
    """A cell's settings that differ from the defaults (older results without them: their config hash)."""
    if isinstance(r.get("variant"), dict):
        return r["variant"].get("diff") or {}
    return {_OLD_RESULT_KEY: _variant(r)}


def _failed_label(r: dict[str, Any]) -> str:
    """A failed cell's settings that differ from the defaults (it has no row to take a label from)."""
    return variant_label({k: v for k, v in _diff(r).items() if k != _OLD_RESULT_KEY})


def _labels(variants: dict[str, dict[str, Any]], configs: dict[str, dict[str, Any]] | None = None,
            shared: set[str] = frozenset()) -> dict[str, str]:
    """Row labels of one (method, backbone)'s variants.

    Several variants: each names the settings it sets among those not shared by all; of those it
    leaves at the default, a ``task.*`` / ``dataset.*`` setting shows the value it was evaluated with
    (read from ``configs[tag]``: ``task.split=test``), and ``train_dataset`` shows ``same`` for a model
    trained on the data it is evaluated on; a method's or the training's setting is left out. A
    variant that sets nothing beyond the grid-wide settings is the method's name alone; one whose
    settings are all shared by the others names the others' settings as ``default`` (``lr=default``).
    One variant: its method settings that differ from the plugin's defaults, and
    any other setting of its that not every row of the table shares (``shared``: a grid-wide
    setting such as ``train.epochs`` belongs to the provenance line, not to a row; one row's own
    ``train.epochs=2`` is named). Either way, pre-training on another dataset is always named
    (``train_dataset=scenes``)."""
    if len(variants) < 2:
        return {tag: variant_label({k: v for k, v in diff.items()
                                    if k.startswith("method.") or k == "train_dataset"
                                    or (k not in shared and k != _OLD_RESULT_KEY)})
                for tag, diff in variants.items()}
    configs = configs or {}
    keys = sorted({k for diff in variants.values() for k in diff})
    varying = [k for k in keys if len({repr(d.get(k)) for d in variants.values()}) > 1 or k == "train_dataset"]

    def missing(tag: str, key: str) -> Any:
        """What a variant that leaves ``key`` at its default shows; None: nothing (a method's or the
        training's setting)."""
        if key == "train_dataset":
            return "same"
        if not key.startswith(("task.", "dataset.")):
            return None
        value = dotted_value(configs.get(tag), key)
        return "default" if value is None else value

    out = {}
    for tag, diff in variants.items():
        shown = {k: diff[k] for k in varying if k in diff}
        shown.update({k: value for k in varying if k not in diff and (value := missing(tag, k)) is not None})
        label = variant_label(shown)
        if not label and varying:
            own = [k for k in diff if k not in shared]
            label = variant_label({k: "default" for k in varying}) if own else ""
        out[tag] = label if label or varying else tag
    return out


def _fmt(mean: float, half: float | None) -> str:
    return f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}"


def _one_line(text: str | None, limit: int = 140) -> str:
    text = " ".join(str(text or "").split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_task(task: str, results: list[dict[str, Any]], *, figure_root: str | None = None) -> str:
    """The markdown leaderboard of one task from its result dicts.

    ``figure_root``: the results folder as seen from the leaderboard's folder; cells' PNGs are linked
    through it (no links when None)."""
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_dataset[r["cell"]["dataset"]].append(r)
    versions = sorted({r.get("versions", {}).get("harness", "?") for r in results})
    grids = sorted({r.get("grid", "single") for r in results})
    protocols = sorted({str(r.get("protocol", {}).get("task_version", "?")) for r in results if r.get("protocol")})
    lines = [f"# Leaderboard: `{task}`", "",
             f"Generated by harness {', '.join(versions)} from {len(results)} result files "
             f"(grid: {', '.join(grids)}; task protocol version: {', '.join(protocols) or '?'}). "
             + GENERATED_MARK, ""]
    conventions = sorted({r["details"]["convention"] for r in results
                          if r["status"] == "ok" and isinstance(r.get("details", {}).get("convention"), str)})
    for dataset in sorted(by_dataset):
        lines += _dataset_section(dataset, by_dataset[dataset], figure_root=figure_root)
    lines += ["---", "", f"{CI_FOOTNOTE}", ""]
    lines += [f"Protocol ({task}): {c}" for c in conventions] + ([""] if conventions else [])
    return "\n".join(lines)


def _plugin_class(kind: str, name: str) -> Any:
    """The plugin's class (a task's ``UNRANKED`` metrics and column headers, a method's ``supervised``
    flag), or None when it is not installed here: results are readable without their plugins."""
    from harness.registry import get_registry

    try:
        return get_registry().load(kind, name)
    except Exception:  # noqa: BLE001 - any failure to load the plugin falls back to the plain table
        return None


def _labels_read(results: list[dict[str, Any]]) -> str:
    """The annotation a row's models trained on (``label``, ``coarse_label``), or ``none`` for a label-free
    method or an untrained reference (from the method plugin's ``supervised`` flag)."""
    r = results[0]
    if r.get("reference"):
        return "none"
    # a method not installed here: say what the protocol offered
    supervised = bool(getattr(_plugin_class("method", r["cell"]["method"]), "supervised", True))
    label = (r.get("protocol") or {}).get("train_label")
    return str(label) if supervised and label else "none"


def _dataset_section(dataset: str, results: list[dict[str, Any]], level: int = 2,
                     brief: bool = False, figure_root: str | None = None) -> list[str]:
    """Tables of one dataset; ``brief`` leaves out the failed / skipped lists (the README's view)."""
    ok = [r for r in results if r["status"] == "ok"]
    from harness.task import Task

    task_cls = (_plugin_class("task", results[0]["cell"]["task"]) if results else None) or Task
    details = [r.get("details") or {} for r in ok]
    diffs: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    configs: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in ok:
        pair = (r["cell"]["method"], r["cell"]["backbone"])
        diffs[pair][_variant(r)] = _diff(r)
        configs[pair][_variant(r)] = r.get("config")
    # settings every result of the task has, with one value: the grid's (the provenance line names them)
    all_diffs = [d for v in diffs.values() for d in v.values()]
    shared = {k for k in set().union(*all_diffs) if all(k in d for d in all_diffs)
              and len({repr(d[k]) for d in all_diffs}) == 1} if all_diffs else set()
    labels = {pair: _labels(v, configs[pair], shared) for pair, v in diffs.items()}
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        pair = (r["cell"]["method"], r["cell"]["backbone"])
        groups[(*pair, labels[pair][_variant(r)])].append(r)
    directions: dict[str, bool] = {}
    for r in ok:
        for name, m in r["metrics"].items():
            directions.setdefault(name, bool(m["higher_is_better"]))
    metrics = sorted(directions)
    unranked = {name: reason for name in metrics if (reason := task_cls.unranked_reason(name))}
    geometry = {key: _geometry(rs) for key, rs in groups.items()}
    labels_read = {key: _labels_read(rs) for key, rs in groups.items()}
    if len(set(labels_read.values())) < 2:
        labels_read = {}  # one kind of row: the column would say nothing
    out = [f"{'#' * level} {dataset}", ""]
    notes: dict[str, int] = {}
    if groups:
        summary: dict[tuple[str, str, str], dict[str, Any]] = {}
        for key, rs in groups.items():
            summary[key] = {}
            for name in metrics:
                ms = [r["metrics"][name] for r in rs if name in r["metrics"]]
                nulls = sorted({str(m.get("reason") or "undefined") for m in ms if m["value"] is None})
                if nulls:
                    summary[key][name] = ("null", nulls)
                elif ms:
                    summary[key][name] = mean_ci95([m["value"] for m in ms])
        for title, names in _metric_tables(metrics):
            if title:
                out += [f"{'#' * (level + 1)} {title}", ""]
            headers = {name: task_cls.metric_header(name, details) for name in names}
            out += [_table(groups, summary, names, directions, geometry, notes,
                           strip=f"{title}/" if title else "", unranked=set(unranked), headers=headers,
                           labels_read=labels_read), ""]
        for mark, footnote in (("°", REFERENCE_FOOTNOTE), (ONE_SEED_REFERENCE, ONE_SEED_REFERENCE),
                               ("†", SIGNIFICANCE_FOOTNOTE)):
            if notes.pop(mark, None) is not None:
                out += [footnote, ""]
        if not any(r.get("reference") for r in ok):
            out += [NO_REFERENCE_NOTE, ""]
        shown_unranked = sorted(n for n in unranked if n in directions)
        for reason in sorted({unranked[n] for n in shown_unranked}):
            out += [f"Not ranked ({', '.join(n for n in shown_unranked if unranked[n] == reason)}): {reason}.", ""]
        chance = _chance_values(ok, metrics)
        if chance:
            out += ["Chance (a predictor at chance level, from the tasks' details): "
                    + ", ".join(f"{name} = {value}" for name, value in chance.items()), ""]
        if notes:
            out += [f"null{_sup(i)}: {reason}" for reason, i in sorted(notes.items(), key=lambda kv: kv[1])] + [""]
    if brief:
        return out if groups else []
    if figure_root is not None:
        figures = [(key, r) for key, rs in sorted(groups.items()) for r in rs[:1] if r.get("figures")]
        if figures:
            out += ["Figures (first seed of each row):", ""]
            for (method, backbone, label), r in figures:
                links = ", ".join(f"[{Path(f).stem}]({figure_root}/{f})" for f in r["figures"])
                out.append(f"- {method}{f' ({label})' if label else ''} / {backbone} / seed {r['cell']['seed']}: "
                           f"{links}")
            out.append("")
    failed = sorted((r for r in results if r["status"] == "failed"),
                    key=lambda r: (r["cell"]["method"], r["cell"]["backbone"], r["cell"]["seed"]))
    if failed:
        out += ["Failed cells:", ""]
        out += [f"- {r['cell']['method']}{f' ({label})' if (label := _failed_label(r)) else ''} / "
                f"{r['cell']['backbone']} / seed {r['cell']['seed']}: {_one_line(r.get('reason'))}" for r in failed]
        out.append("")
    skipped: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r["status"] == "skipped":
            skipped[_one_line(r.get("reason"))].append(r["cell"]["method"])
    if skipped:
        out += ["Skipped cells:", ""]
        out += [f"- {len(ms)} cell(s) ({', '.join(sorted(set(ms)))}): {reason}"
                for reason, ms in sorted(skipped.items())]
        out.append("")
    if not groups and not failed and not skipped:
        out += ["No results.", ""]
    return out


def _chance_values(results: list[dict[str, Any]], metrics: list[str]) -> dict[str, str]:
    """``details["<metric>/chance"]`` of the results, where all agree (e.g. the tree's chance severity)."""
    out = {}
    for name in metrics:
        values = {r.get("details", {}).get(f"{name}/chance") for r in results} - {None}
        if len(values) == 1:
            value = values.pop()
            out[name] = f"{value:.3f}" if isinstance(value, float) else str(value)
    return out


_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _sup(i: int) -> str:
    return str(i).translate(_SUPERSCRIPTS)


def _geometry(results: list[dict[str, Any]]) -> str:
    names = sorted({str((r.get("geometry") or {}).get("name", "")) for r in results})
    return "/".join(n for n in names if n)


def _metric_tables(metrics: list[str]) -> list[tuple[str, list[str]]]:
    """Plain metrics in one table; ``group/rest`` metrics (e.g. ``auroc/energy/near``) in one table per group."""
    plain = [m for m in metrics if "/" not in m]
    grouped: dict[str, list[str]] = defaultdict(list)
    for m in metrics:
        if "/" in m:
            grouped[m.split("/", 1)[0]].append(m)
    return ([("", plain)] if plain else []) + sorted(grouped.items())


REFERENCE_FOOTNOTE = ("° not better than the 95% interval of the reference row (the untrained network, e.g. "
                      "random_init, on the same backbone and weights, evaluated the same way; for a method with a "
                      "row at train.epochs=0, that row: its own network at initialisation, read its way, or the one it "
                      "shares, e.g. hack's for hack_per_class): inside "
                      "it, or past it on the worse side; no learning signal shown on that metric.")
ONE_SEED_REFERENCE = ("° against a reference row of one seed compares with its value: it has no interval, so "
                      "a row just above it may still be inside the interval more seeds would give.")
_MARKS = ("°", "†", ONE_SEED_REFERENCE)  # notes keys of the marks (their footnotes), beside the numbered null reasons
NO_REFERENCE_NOTE = ("No reference row: no untrained network was evaluated the same way (add method=random_init "
                     "to the sweep), so no row is checked for a learning signal (°).")
SIGNIFICANCE_FOOTNOTE = ("† the best value's lead over the runner-up is not significant: two-sided paired "
                         "t-test over the seeds both rows ran (scipy.stats.ttest_rel), p ≥ 0.05, or fewer than "
                         "2 shared seeds, or a tie to 3 decimals (a difference that is the same on every seed is "
                         "significant).")


def _lead_not_significant(groups: dict, summary: dict, name: str, higher: bool) -> set:
    """Keys of the best row of ``name`` whose lead over the runner-up is not significant over seeds."""
    from scipy.stats import ttest_rel

    ranked = sorted((s[name][0], key) for key, s in summary.items() if name in s and s[name][0] != "null")
    if len(ranked) < 2:
        return set()
    if higher:
        ranked = ranked[::-1]
    (_, best), (_, second) = ranked[0], ranked[1]

    def by_seed(key: tuple) -> dict[int, float]:
        return {r["cell"]["seed"]: r["metrics"][name]["value"] for r in groups[key]
                if name in r["metrics"] and r["metrics"][name]["value"] is not None}

    a, b = by_seed(best), by_seed(second)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return {best}
    diffs = [a[s] - b[s] for s in seeds]
    if all(d == diffs[0] for d in diffs):  # a constant difference: the t-test is undefined, the lead is exact
        return set() if diffs[0] != 0 else {best}
    p = float(ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    return {best} if not p < 0.05 else set()


def _protocol(results: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """How a row's cells were evaluated beyond the grid's defaults: their ``task.*``, ``dataset.*`` and
    ``backbone.*`` settings. A row is compared with the reference row evaluated the same way (e.g. the
    untrained network on the same split, with the same pretrained weights and input size), never with
    one evaluated on other data or another network."""
    return tuple(sorted((k, repr(v)) for k, v in _diff(results[0]).items()
                        if k.startswith(("task.", "dataset.", "backbone."))))


def _at_initialisation(results: list[dict[str, Any]]) -> bool:
    """Whether a row is a method's network at its initialisation (``train.epochs=0``, untrained)."""
    r = results[0]
    return bool(r.get("reference")) and ((r.get("config") or {}).get("train") or {}).get("epochs") == 0


def _untrained_settings(results: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """A row's settings that an untrained network reads: all but ``train.*`` and ``train_dataset`` (the
    settings of a training that a network at its initialisation did not do)."""
    return tuple(sorted((k, repr(v)) for k, v in _diff(results[0]).items()
                        if not k.startswith("train.") and k != "train_dataset"))


def _untrained_as(method: str) -> str | None:
    """The method whose network at initialisation is ``method``'s (its ``UNTRAINED_AS``), if any."""
    return getattr(_plugin_class("method", method), "UNTRAINED_AS", None)


def _references(groups: dict) -> Callable[[tuple], tuple | None]:
    """Each row's reference row: the same method's row at ``train.epochs=0`` with the same settings
    otherwise (its network at initialisation, read the method's way) where the table has one, else that
    of the method whose untrained network it shares (``Method.UNTRAINED_AS``), else the untrained
    network (``random_init``) on the same backbone evaluated the same way (:func:`_protocol`)."""
    own = {(key[0], key[1], _untrained_settings(rs)): key for key, rs in groups.items() if _at_initialisation(rs)}
    shared = {(key[1], _protocol(rs)): key for key, rs in groups.items()
              if any(r.get("reference") for r in rs) and not _at_initialisation(rs)}

    def reference(key: tuple) -> tuple | None:
        settings = _untrained_settings(groups[key])
        alias = _untrained_as(key[0])
        return (own.get((key[0], key[1], settings)) or (alias and own.get((alias, key[1], settings)))
                or shared.get((key[1], _protocol(groups[key]))))

    return reference


def _table(groups: dict, summary: dict, names: list[str], directions: dict[str, bool], geometry: dict,
           notes: dict[str, int], strip: str, unranked: set[str] = frozenset(),
           headers: dict[str, str] | None = None, labels_read: dict | None = None) -> str:
    best: dict[str, float] = {}
    headers = headers or {}
    for name in names:
        if name in unranked:
            continue
        means = [s[name][0] for s in summary.values() if name in s and s[name][0] != "null"]
        if means:
            best[name] = max(means) if directions[name] else min(means)
    weak = {name: _lead_not_significant(groups, summary, name, directions[name]) for name in names}
    reference_of = _references(groups)
    with_geometry = any(geometry.values())
    labels_read = labels_read or {}
    columns = (["method", "backbone"] + (["geometry"] if with_geometry else []) + (["labels"] if labels_read else [])
               + [f"{headers.get(m, m).removeprefix(strip)} {'↑' if directions[m] else '↓'}" for m in names] + ["n"])
    rows = []
    for key in sorted(groups, key=lambda k: (geometry[k], k)):
        method, backbone, label = key
        row = ([f"{method} ({label})" if label else method, backbone] + ([geometry[key]] if with_geometry else [])
               + ([labels_read[key]] if labels_read else []))
        ref = reference_of(key)
        seeds = len({r["cell"]["seed"] for r in groups[key]})
        for name in names:
            if name not in summary[key]:
                row.append("—")
                continue
            if summary[key][name][0] == "null":
                marks = "·".join(_sup(notes.setdefault(reason, 1 + sum(k not in _MARKS for k in notes)))
                                 for reason in summary[key][name][1])
                row.append(f"null{marks}")
                continue
            mean, half, n = summary[key][name]
            cell = _fmt(mean, half)
            # bold as shown: rows that read the same to 3 decimals are tied, whatever their 4th decimal
            if name in best and _fmt(mean, None) == _fmt(best[name], None) and len(summary) > 1:
                cell = f"**{cell}**"
                if key in weak[name] or mean != best[name]:  # a tie's lead is not significant either
                    cell += "†"
                    notes.setdefault("†", 0)
            # an unranked metric (in each row's own units) is not read against the reference either
            if (ref is not None and ref != key and name not in unranked and name in summary[ref]
                    and summary[ref][name][0] != "null"):
                ref_mean, ref_half, _ = summary[ref][name]
                # not above the reference's interval (its value when it ran one seed), in the metric's direction
                reach = ref_half if ref_half is not None else 0.0
                if mean <= ref_mean + reach if directions[name] else mean >= ref_mean - reach:
                    cell += "°"
                    notes.setdefault("°", 0)
                    if ref_half is None:
                        notes.setdefault(ONE_SEED_REFERENCE, 0)
            if n < seeds:
                cell += f" (n={n})"
            row.append(cell)
        row.append(str(seeds))
        rows.append(row)
    return tabulate(rows, headers=columns, tablefmt="github", disable_numparse=True)


def _misplaced(path: Path, result: dict[str, Any]) -> str | None:
    """Why a result file is not where its own cell puts it (:func:`~harness.results.result_path`, under
    any folder: a results folder copied into another still renders), or None."""
    from harness.results import result_path

    try:
        where = result_path("", result["cell"]).as_posix()
    except (HarnessError, KeyError, TypeError, ValueError) as exc:
        return f"its cell names no result path ({exc})"
    if not path.as_posix().endswith("/" + where):
        return f"its cell's result belongs at …/{where}"
    return None


def _other_versions(result: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """The plugin VERSIONs of ``result`` that differ from ``reference``'s (``method VERSION 1 (2 there)``;
    :func:`~harness.results.recorded_versions`)."""
    mine, theirs = recorded_versions(result), recorded_versions(reference)
    return [f"{key.split('_')[0]} VERSION {mine[key]} ({theirs[key]} there)" for key in sorted(VERSION_KEYS)
            if key in mine and key in theirs and mine[key] != theirs[key]]


def current_results(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every valid result under ``results_dir`` (:func:`~harness.results.iter_results`), except seeds
    computed under another config than the newest file of their folder (a folder is one row's cell:
    task, dataset, method, backbone, variant), or under another ``VERSION`` of its method or task than
    the newest that records one. A variant tag names the settings that differ from the defaults in force
    when it ran, so a seed left from a sweep under older defaults (or before a VERSION bump) lands in the
    same folder as the seeds run since; it is left out with a warning naming it, not pooled into the row."""
    import warnings

    by_folder: dict[Path, list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    for path, r in iter_results(results_dir):
        if (misplaced := _misplaced(path, r)) is not None:
            warnings.warn(f"leaving out {path}: {misplaced} (a file moved, copied or edited by hand?)", stacklevel=2)
            continue
        by_folder[path.parent].append((path, r))
    kept: list[tuple[Path, dict[str, Any]]] = []
    for entries in by_folder.values():
        computed = {path: config_hash({k: v for k, v in r["config"].items() if k != "seed"}) for path, r in entries}
        by_age = sorted(entries, key=lambda e: (e[0].stat().st_mtime, e[0].name), reverse=True)
        newest = by_age[0][0]
        versioned = next((e for e in by_age if set(VERSION_KEYS) & set(e[1].get("protocol") or {})), by_age[0])
        for path, r in entries:
            if computed[path] != computed[newest]:
                warnings.warn(f"leaving out {path}: computed under another config than {newest.name} beside it "
                              "(older defaults?); re-run the sweep to redo it, or delete it", stacklevel=2)
            elif changed := _other_versions(r, versioned[1]):
                warnings.warn(f"leaving out {path}: its {' and '.join(changed)} differs from {versioned[0].name} "
                              "beside it (bumped since?); re-run the sweep to redo it, or delete it", stacklevel=2)
            else:
                kept.append((path, r))
    # one result per cell and seed: a copied file or a copy of a results folder inside another would
    # otherwise count as more seeds (an interval over copies of one number)
    by_cell: dict[tuple[Any, ...], list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    for path, r in kept:
        c = r["cell"]
        by_cell[(c["task"], c["dataset"], c["method"], c["backbone"], _variant(r), c["seed"])].append((path, r))
    out = []
    for copies in by_cell.values():
        newest_path, newest = max(copies, key=lambda e: (e[0].stat().st_mtime, str(e[0])))
        out.append(newest)
        for path, _ in copies:
            if path != newest_path:
                warnings.warn(f"leaving out {path}: another result of the same cell and seed, {newest_path}, is "
                              "newer (a copied file or results folder?); delete the copy", stacklevel=2)
    return out


def render_all(results_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, str]:
    """``{file name: markdown}`` for every task with results under ``results_dir`` (figures linked
    relative to ``out_dir`` when given)."""
    import os

    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in current_results(results_dir):
        by_task[r["cell"]["task"]].append(r)
    root = None if out_dir is None else Path(os.path.relpath(Path(results_dir).resolve(),
                                                             Path(out_dir).resolve())).as_posix()
    out = {f"{task}.md": render_task(task, rs, figure_root=root) for task, rs in sorted(by_task.items())}
    from harness.published import PAPERS_FILE, render_papers

    papers = render_papers([r for rs in by_task.values() for r in rs])
    if papers is not None:  # results of a paper grid (grid=paper_<id>): published numbers beside ours
        out[PAPERS_FILE] = papers
    return out


README_START = ("<!-- leaderboards:start (generated by `harness leaderboard results --out leaderboards --readme "
                "README.md`; do not edit) -->")
README_END = "<!-- leaderboards:end -->"


def render_readme_section(results_dir: str | Path) -> str:
    """The README's view of every leaderboard: the tables only, between the two markers."""
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in current_results(results_dir):
        by_task[r["cell"]["task"]][r["cell"]["dataset"]].append(r)
    lines = [README_START, ""]
    for task, datasets in sorted(by_task.items()):
        lines += [f"### `{task}` ([full leaderboard](leaderboards/{task}.md))", ""]
        for dataset in sorted(datasets):
            lines += _dataset_section(dataset, datasets[dataset], level=4, brief=True)
    lines += [CI_FOOTNOTE, "", README_END]
    return "\n".join(lines)


def check_results_dir(results_dir: str | Path) -> None:
    """A results folder that is missing or holds no result file is an error (nothing to render)."""
    root = Path(results_dir)
    if root.exists() and not root.is_dir():
        raise HarnessError(f"results folder '{root}' is a file; name the folder that holds the result files")
    if not root.is_dir():
        raise HarnessError(f"results folder '{root}' does not exist; run `harness sweep results_dir={root}` "
                           "first or name the folder that holds the result files")
    if not any(p.name.startswith("seed") for p in root.rglob("*.json")):
        raise HarnessError(f"results folder '{root}' holds no result files (seed*.json); nothing to render")


def check_readme_markers(readme: str | Path) -> None:
    """The README must have both markers before anything is written."""
    path = Path(readme)
    if not path.is_file():
        raise HarnessError(f"README '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise HarnessError(f"{path} has no leaderboard markers; add these two lines where the tables "
                           f"should go:\n{README_START}\n{README_END}")


def update_readme(readme: str | Path, results_dir: str | Path, *, write: bool = True) -> bool:
    """Replace the marked section of ``readme``; return True if it was already current."""
    check_readme_markers(readme)
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    new = head + render_readme_section(results_dir) + tail
    if write and new != text:
        from harness.results import atomic_write_text

        atomic_write_text(path, new)
    return new == text


#: The line every generated leaderboard file holds (a file without it is the user's, never removed).
GENERATED_MARK = "Do not edit: regenerate with `harness leaderboard RESULTS_DIR`."


def _orphans(out_dir: Path, rendered: dict[str, str]) -> list[Path]:
    """Generated leaderboard files in ``out_dir`` that no result backs any more (their task's results
    were deleted or moved)."""
    if not out_dir.is_dir():
        return []
    return [p for p in sorted(out_dir.glob("*.md")) if p.name not in rendered
            and GENERATED_MARK in p.read_text(encoding="utf-8", errors="replace")]


def write_all(results_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Render and write every leaderboard, and remove the generated ones no result backs any more (so
    ``--check`` passes after a regeneration); return the written paths."""
    from harness.results import atomic_write_text

    results_dir, out_dir = Path(results_dir).expanduser(), Path(out_dir).expanduser()
    rendered = render_all(results_dir, out_dir)
    written = []
    for name, text in rendered.items():
        path = out_dir / name
        atomic_write_text(path, text)
        written.append(path)
    for orphan in _orphans(out_dir, rendered):
        orphan.unlink()
        print(f"removed {orphan}: no result backs it any more", file=sys.stderr)
    return written


def check(results_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Names of leaderboard files that differ from what the results give, and of leaderboards in
    ``out_dir`` that no result backs (empty: up to date)."""
    check_results_dir(results_dir)
    stale = []
    rendered = render_all(results_dir, out_dir)
    for name, text in rendered.items():
        path = Path(out_dir) / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    stale += [f"{p.name} (no result backs it; regenerating removes it)" for p in _orphans(Path(out_dir), rendered)]
    return stale
