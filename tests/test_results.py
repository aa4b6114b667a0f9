"""Result schema round trip, atomic writes, the Student-t interval."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from harness.results import (SCHEMA_VERSION, ResultSchemaError, atomic_write_text, config_hash, read_result,
                             result_path, write_result)
from harness.stats import mean_ci95


def _result(**over):
    r = {"schema_version": SCHEMA_VERSION, "status": "ok", "reason": None,
         "cell": {"method": "m", "backbone": "b", "dataset": "d", "task": "t", "seed": 0},
         "metrics": {"acc": {"value": 0.5, "higher_is_better": True, "ci95": 0.01, "n": 600}},
         "config": {"seed": 0, "results_dir": "x"}, "config_hash": "h", "versions": {"torch": "2"},
         "timings": {"train_s": 1.0, "eval_s": 0.5, "total_s": 1.5, "train_cached": False}}
    r.update(over)
    return r


def test_schema_round_trip_is_byte_stable(tmp_path):
    path = result_path(tmp_path, _result()["cell"])
    assert path == tmp_path / "t" / "d" / "m" / "b" / "seed0.json"
    write_result(path, _result())
    first = path.read_bytes()
    assert read_result(path) == _result()
    write_result(path, read_result(path))
    assert path.read_bytes() == first


@pytest.mark.parametrize("bad, match", [
    ({"status": "done"}, "status 'done'"),
    ({"schema_version": 0}, "schema_version 0"),
    ({"metrics": {"acc": 0.5}}, "metric 'acc'"),
    ({"cell": {"method": "m"}}, "cell lacks"),
])
def test_schema_violations_are_named(tmp_path, bad, match):
    with pytest.raises(ResultSchemaError, match=match):
        write_result(tmp_path / "r.json", _result(**bad))
    assert not (tmp_path / "r.json").exists()


def test_nan_metric_cannot_be_written(tmp_path):
    with pytest.raises(ValueError):
        write_result(tmp_path / "r.json", _result(metrics={"acc": {"value": float("nan"), "higher_is_better": True}}))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_config_hash_ignores_run_local_keys_and_key_order():
    a = {"seed": 1, "method": {"name": "x", "dim": 3}, "results_dir": "r1", "train": {"epochs": 2, "num_workers": 0}}
    b = {"train": {"num_workers": 4, "epochs": 2}, "results_dir": "r2", "method": {"dim": 3, "name": "x"}, "seed": 1}
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "seed": 2})
    assert json.dumps(a)  # inputs are not mutated into something unserialisable
    assert a["train"] == {"epochs": 2, "num_workers": 0}


@pytest.mark.parametrize("values", [[0.5, 0.7], [0.61, 0.64, 0.58], list(np.linspace(0, 1, 7))])
def test_ci95_matches_scipy_student_t(values):
    mean, half, n = mean_ci95(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert n == len(values)
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_ci95_of_one_value_has_no_interval():
    assert mean_ci95([0.3]) == (0.3, None, 1)
    with pytest.raises(ValueError):
        mean_ci95([])
