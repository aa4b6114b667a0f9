"""``harness report RESULTS_DIR --out DIR``: one markdown page with the tables and the plots of a sweep.

``DIR/report.md`` holds every task's leaderboard (the same tables as
``harness leaderboard``, with its significance mark (†) where the best value's
lead over the runner-up is not significant over seeds: a paired t-test,
``scipy.stats.ttest_rel``), and below each dataset the figures the cells wrote
(run the sweep with ``plots=true``: Poincaré-disk views of the embeddings, norm
and OOD-score histograms, CMC curves), copied into ``DIR/figures/`` and linked
relatively, so the folder can be moved or published as it is.
"""

from __future__ import annotations

import argparse
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.leaderboard import check_results_dir, current_results, render_task
from harness.results import atomic_write_text


def write_report(results_dir: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` and copy the cells' figures under ``out_dir/figures``; return the page."""
    check_results_dir(results_dir)
    root, out = Path(results_dir), Path(out_dir)
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in current_results(root):  # as the leaderboards read them: no stale seed, no copied result
        by_task[r["cell"]["task"]].append(r)
    copied = 0
    for results in by_task.values():
        for r in results:
            for rel in r.get("figures", []):
                src, dst = root / rel, out / "figures" / rel
                if src.is_file():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
                    copied += 1
    grids = sorted({r.get("grid", "single") for rs in by_task.values() for r in rs})
    lines = [f"# Report: {root}", "", f"Grids: {', '.join(grids)}. Tasks: {', '.join(sorted(by_task))}. "
             f"{sum(len(rs) for rs in by_task.values())} result files, {copied} figures.", ""]
    for task, results in sorted(by_task.items()):
        page = render_task(task, results, figure_root="figures")
        lines += ["#" + line if line.startswith("#") else line for line in page.splitlines()] + [""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness report",
                                     description="one markdown page with the tables and plots of a sweep")
    parser.add_argument("results_dir")
    parser.add_argument("--out", required=True, help="folder for report.md and its figures/")
    args = parser.parse_args(argv)
    from harness.run import check_writable

    check_results_dir(args.results_dir)
    check_writable(args.out, "the output folder", "--out PATH")
    print(f"wrote {write_report(args.results_dir, args.out)}")
    return 0
