"""The committed leaderboards and the README's tables are what the committed results give."""

from pathlib import Path

from harness import leaderboard
from harness.results import iter_results

ROOT = Path(__file__).resolve().parents[1]


def test_committed_results_follow_the_schema():
    results = iter_results(ROOT / "results", strict=True)  # any unreadable or invalid file fails
    assert results, "results/ holds the default grid's result files"
    assert {r["grid"] for _, r in results} >= {"default"}


def test_committed_leaderboards_are_current():
    assert leaderboard.check(ROOT / "results", ROOT / "leaderboards") == [], \
        "regenerate: harness leaderboard results --readme README.md"


def test_readme_tables_are_current():
    assert leaderboard.update_readme(ROOT / "README.md", ROOT / "results", write=False), \
        "regenerate: harness leaderboard results --readme README.md"
