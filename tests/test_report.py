"""`harness report` and the leaderboards: tables with a paired significance mark, figures copied and linked; leaderboards link figures."""

from pathlib import Path

from scipy.stats import ttest_rel

from harness.cli import main
from harness.leaderboard import render_all
from tests.test_leaderboard import _r, _write


def _results(a_vals, b_vals):
    out = []
    for seed, (a, b) in enumerate(zip(a_vals, b_vals)):
        ra, rb = _r("a", seed, a, 1.0), _r("b", seed, b, 1.0)
        out += [ra, rb]
    return out


def test_a_lead_that_is_not_significant_is_marked_and_a_significant_one_is_not(tmp_path):
    close = ([0.60, 0.70, 0.50], [0.61, 0.62, 0.55])   # a leads on average, not consistently
    clear = ([0.90, 0.91, 0.92], [0.60, 0.62, 0.59])
    assert ttest_rel(*close).pvalue > 0.05 and ttest_rel(*clear).pvalue < 0.05
    for (a, b), marked in ((close, True), (clear, False)):
        res = _write(tmp_path / str(marked), _results(a, b))
        out = tmp_path / f"report-{marked}"
        assert main(["report", str(res), "--out", str(out)]) == 0
        text = (out / "report.md").read_text()
        row_a = next(line for line in text.splitlines() if line.startswith("| a "))
        acc = row_a.split("|")[3].strip()
        assert acc.startswith("**") and acc.endswith("†") == marked, row_a
        assert "scipy.stats.ttest_rel" in text
        board = render_all(res)["t.md"]  # the leaderboards mark it as the report does
        assert next(line for line in board.splitlines() if line.startswith("| a ")) == row_a


def test_figures_are_copied_into_the_report_and_linked_from_leaderboards(tmp_path):
    results = _results([0.6, 0.7], [0.5, 0.55])
    results[0]["figures"] = ["t/d/a/b/seed0_plots/embeddings_disk.png"]
    res = _write(tmp_path, results)
    png = res / "t" / "d" / "a" / "b" / "seed0_plots" / "embeddings_disk.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG fake")
    out = tmp_path / "report"
    assert main(["report", str(res), "--out", str(out)]) == 0
    assert (out / "figures" / "t" / "d" / "a" / "b" / "seed0_plots" / "embeddings_disk.png").read_bytes() == \
        png.read_bytes()
    assert "[embeddings_disk](figures/t/d/a/b/seed0_plots/embeddings_disk.png)" in (out / "report.md").read_text()
    board = render_all(res, tmp_path / "boards")["t.md"]
    link = "[embeddings_disk](../res/t/d/a/b/seed0_plots/embeddings_disk.png)"
    assert link in board
    assert Path(tmp_path / "boards" / "../res/t/d/a/b/seed0_plots/embeddings_disk.png").resolve() == png.resolve()


def test_the_report_reads_the_results_as_the_leaderboards_do(tmp_path):
    import os
    import shutil
    import warnings

    res = _write(tmp_path, _results([0.6, 0.7, 0.5], [0.5, 0.55, 0.52]))
    shutil.copytree(res, tmp_path / "copy")
    shutil.move(tmp_path / "copy", res / "backup")  # a copy of the results inside them
    for path in (res / "backup").rglob("*.json"):
        os.utime(path, (0, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["report", str(res), "--out", str(tmp_path / "out")]) == 0
        board = render_all(res)["t.md"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "6 result files" in text  # not 12: each seed once
    row = next(line for line in board.splitlines() if line.startswith("| a "))
    assert row.split("|")[3].strip().strip("*") in next(line for line in text.splitlines() if line.startswith("| a "))
