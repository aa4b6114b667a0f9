"""The example third-party package registers a method and a task (with config groups) through entry points."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sweep import TINY
from tests.test_sweep import _harness as _run_harness
from harness.results import iter_results

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "third_party_plugin"


@pytest.fixture(scope="module", autouse=True)
def example_path(tmp_path_factory):
    """CI installs the example; elsewhere it is installed into a temporary folder the subprocesses see
    (never into the environment running the tests)."""
    if importlib.util.find_spec("harness_example") is not None:
        yield None
        return
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True)
    yield target


def _harness(args, tmp_path, example_path):
    env = {"PYTHONPATH": str(example_path)} if example_path else None
    return _run_harness(args, tmp_path, env_extra=env)


def test_listed_with_its_distribution(tmp_path, example_path):
    out = _harness(["list"], tmp_path, example_path).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "harness-example-plugin" in rows["cosine_ce"]
    assert "harness-example-plugin" in rows["nearest_centroid"]


def test_runs_a_cell_with_its_method_and_task(tmp_path, example_path):
    tiny = [o for o in TINY if not o.startswith("task.")]
    proc = _harness(["run", "method=cosine_ce", "task=nearest_centroid", "method.scale=10", *tiny,
                     f"results_dir={tmp_path / 'res'}"], tmp_path, example_path)
    assert proc.returncode == 0, proc.stderr
    [(_, result)] = iter_results(tmp_path / "res")
    assert result["status"] == "ok", result.get("reason")
    assert result["config"]["method"] == {"name": "cosine_ce", "dim": 64, "scale": 10.0}
    assert 0.0 <= result["metrics"]["accuracy"]["value"] <= 1.0
    assert "harness-example-plugin" in result["versions"]["plugins"]
