"""Paper protocols: a paper's published numbers beside ours (``papers.md``).

A *paper grid* (``grid=paper_<id>``) runs a seed paper's own setting; its
published numbers live in a data file ``published/paper_<id>.yaml`` on the
plugins' config search path (in-tree: ``plugins/conf/published/``), never in
code. A data file holds the paper, the grid's cost and one entry per published
number::

    paper: "..."            # authors, title, venue
    cost: {gpu_hours: float, basis: str}
    rows:
      - label: "miniImageNet 5-way 1-shot"
        match: {dataset.name: mini_imagenet, task.shots: [1]}   # dotted config keys of the cells
        metric: acc_1shot   # the result's metric
        scale: 100          # published units per result unit (percent: 100)
        published: 54.43    # null where the number is not available (then ``missing`` says why)
        ci95: 0.20          # the paper's ± (null where none is given)
        table: "Table 4, Hyperbolic ProtoNet, 4 Conv"
        source: "..."

Ours is the mean over seeds with the half-width of the 95% Student-t interval
(:func:`harness.stats.mean_ci95`), in the published units. The mark compares
our mean with the published interval ``[v − ci, v + ci]``: ``inside``,
``above`` or ``below``; where the paper gives no interval, ``inside`` means
within :data:`NO_CI_TOLERANCE` points of the published value. A smoke run of a
grid (``paper_<id>_smoke``) is listed under its paper, labelled as such.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.config import dotted_value
from harness.errors import HarnessError
from harness.stats import mean_ci95

#: Without a published interval, ours is "inside" within this many points (published units) of the value.
NO_CI_TOLERANCE = 1.0
SMOKE_SUFFIX = "_smoke"
PAPERS_FILE = "papers.md"
ROW_KEYS = {"label", "match", "metric", "published", "ci95", "scale", "table", "source", "missing"}


def base_grid(grid: str) -> str:
    """The grid a result ran in without command-line axes (``paper_x + command-line axes seed`` → ``paper_x``)."""
    return str(grid).split(" + ", 1)[0].strip()


def paper_of(grid: str) -> tuple[str, bool]:
    """``(paper grid, is smoke run)`` of a grid name."""
    name = base_grid(grid)
    return (name[: -len(SMOKE_SUFFIX)], True) if name.endswith(SMOKE_SUFFIX) else (name, False)


def published_file(grid: str) -> Path | None:
    """The data file ``published/<grid>.yaml`` on the plugins' config search path, or None."""
    from harness.registry import get_registry
    from harness.config_files import yaml_file

    return yaml_file(get_registry().config_searchpath(), "published", grid)


def load_published(grid: str) -> dict[str, Any] | None:
    """The published numbers of a paper grid (checked), or None when the grid has no data file."""
    import yaml

    path = published_file(grid)
    if path is None:
        return None
    data = yaml.safe_load(Path(str(path)).read_text(encoding="utf-8"))
    return check_published(data, where=str(path))


def check_published(data: Any, where: str = "published data") -> dict[str, Any]:
    """Check the shape of a published-numbers file; a :class:`HarnessError` says what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise HarnessError(f"{where}: expected a mapping with 'paper', 'cost' and a non-empty list 'rows'")
    for key in ("paper", "cost"):
        if key not in data:
            raise HarnessError(f"{where}: '{key}' is missing")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise HarnessError(f"{where}: rows[{i}] must be a mapping")
        unknown = sorted(set(row) - ROW_KEYS)
        if unknown:
            raise HarnessError(f"{where}: rows[{i}] has unknown key(s) {unknown}; allowed: {sorted(ROW_KEYS)}")
        for key in ("label", "match", "metric", "table", "source"):
            if not row.get(key):
                raise HarnessError(f"{where}: rows[{i}] ({row.get('label', '?')}) lacks '{key}'")
        if row.get("published") is None and not row.get("missing"):
            raise HarnessError(f"{where}: rows[{i}] ({row['label']}) has no published value; say why in 'missing'")
    return data


_MISSING = object()


def matches(result: dict[str, Any], match: dict[str, Any]) -> bool:
    """Whether a result's config has every ``dotted key: value`` of ``match``."""
    return all(dotted_value(result.get("config", {}), k, _MISSING) == v for k, v in match.items())


def mark(ours: float, published: float, ci95: float | None, *, tolerance: float = NO_CI_TOLERANCE) -> str:
    """``inside`` / ``above`` / ``below`` the published interval ``[v − ci95, v + ci95]`` (``ci95`` None:
    ``[v − tolerance, v + tolerance]``); the bounds count as inside."""
    half = tolerance if ci95 is None else float(ci95)
    if ours > published + half:
        return "above"
    if ours < published - half:
        return "below"
    return "inside"


def _fmt(value: float, half: float | None) -> str:
    return f"{value:.2f}" if half is None else f"{value:.2f} ± {half:.2f}"


def _row_cells(row: dict[str, Any], results: list[dict[str, Any]]) -> tuple[str, str, str, str]:
    """(published, ours, n, mark) of one published row from the ok results of its grid."""
    scale = float(row.get("scale", 1))
    published = row.get("published")
    pub = "—" if published is None else _fmt(float(published), row.get("ci95"))
    found = [r["metrics"][row["metric"]] for r in results
             if matches(r, row["match"]) and row["metric"] in r.get("metrics", {})]
    if not found:
        return pub, "not run", "0", "—"
    nulls = sorted({" ".join(str(m.get("reason") or "undefined").split()) for m in found if m.get("value") is None})
    if nulls:  # as on the leaderboards: a seed without a value makes the row null, with its reason
        return pub, "null", str(len(found)), "null: " + "; ".join(nulls)[:200]
    mean, half, n = mean_ci95([m["value"] * scale for m in found])
    if published is None:
        return pub, _fmt(mean, half), str(n), "no published value"
    return pub, _fmt(mean, half), str(n), mark(mean, float(published), row.get("ci95"))


def render_paper(grid: str, data: dict[str, Any], results: list[dict[str, Any]], *, smoke: bool = False) -> list[str]:
    """The markdown section of one paper grid (``smoke``: results of its smoke grid, labelled as such)."""
    ok = [r for r in results if r["status"] == "ok"]
    title = f"## `{grid}{SMOKE_SUFFIX if smoke else ''}`: {data['paper']}"
    out = [title, ""]
    if smoke:
        out += ["Smoke run (embedded data, tiny schedule): checks the protocol code; the numbers are not "
                "comparable to the paper's.", ""]
    cost = data["cost"]
    out += [f"Cost of the full grid: about {cost['gpu_hours']:g} GPU hours ({cost['basis']}).", ""]
    rows, notes = [], []
    for row in data["rows"]:
        pub, ours, n, flag = _row_cells(row, ok)
        rows.append([row["label"], row["metric"], pub, ours, n, flag, row["table"]])
        if row.get("published") is None:
            notes.append(f"- {row['label']}: {row['missing']}")
    out.append(tabulate(rows, headers=["setting", "metric", "published", "ours (mean ± 95% CI)", "n", "mark",
                                       "table"], tablefmt="github", disable_numparse=True))
    out.append("")
    sources = sorted({row["source"] for row in data["rows"]})
    out += ["Sources: " + "; ".join(sources), ""]
    if notes:
        out += ["No published value:", "", *notes, ""]
    failed = sorted(f"{r['cell']['method']} / {r['cell']['dataset']} / seed {r['cell']['seed']}: "
                    f"{' '.join(str(r.get('reason') or '').split())[:200]}"
                    for r in results if r["status"] in ("failed", "skipped"))
    if failed:
        out += ["Failed or skipped cells:", "", *(f"- {line}" for line in failed), ""]
    return out


FOOTNOTE = ("published: the paper's value ± its interval where it gives one. ours: mean over seeds ± the "
            "half-width of the 95% Student-t interval (none with one seed), in the paper's units. mark: our "
            "mean inside / above / below the published interval, or within "
            f"{NO_CI_TOLERANCE:g} point of the value where the paper gives no interval.")


def render_papers(results: list[dict[str, Any]]) -> str | None:
    """``papers.md`` from result dicts: one section per paper grid (and smoke grid) with results and a
    published-numbers file; None when no result ran in such a grid."""
    by_grid: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_grid[paper_of(r.get("grid", "single"))].append(r)
    sections: list[str] = []
    for (grid, smoke), rs in sorted(by_grid.items()):
        data = load_published(grid)
        if data is not None:
            sections += render_paper(grid, data, rs, smoke=smoke)
    if not sections:
        return None
    head = ["# Paper protocols: published numbers beside ours", "",
            "Do not edit: regenerate with `harness leaderboard RESULTS_DIR`. Run a paper with "
            "`harness sweep grid=paper_<id>` (its data under `$HARNESS_DATA`).", ""]
    return "\n".join(head + sections + ["---", "", FOOTNOTE, ""])
