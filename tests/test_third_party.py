"""The example third-party package registers a method and a task (with config groups) through entry points."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sweep import TINY, _harness
from harness.results import iter_results

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "third_party_plugin"


@pytest.fixture(scope="module", autouse=True)
def installed_example():
    if importlib.util.find_spec("harness_example") is None:  # CI installs it; install it here otherwise
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "-e", str(EXAMPLE)], check=True)


def test_listed_with_its_distribution(tmp_path):
    out = _harness(["list"], tmp_path).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "harness-example-plugin" in rows["cosine_ce"]
    assert "harness-example-plugin" in rows["nearest_centroid"]


def test_runs_a_cell_with_its_method_and_task(tmp_path):
    tiny = [o for o in TINY if not o.startswith("task.")]
    proc = _harness(["run", "method=cosine_ce", "task=nearest_centroid", "method.scale=10", *tiny,
                     f"results_dir={tmp_path / 'res'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    [(_, result)] = iter_results(tmp_path / "res")
    assert result["status"] == "ok", result.get("reason")
    assert result["config"]["method"] == {"name": "cosine_ce", "dim": 64, "scale": 10.0}
    assert 0.0 <= result["metrics"]["accuracy"]["value"] <= 1.0
    assert "harness-example-plugin" in result["versions"]["plugins"]
