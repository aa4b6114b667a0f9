"""Result schema round trip, atomic writes, the Student-t interval."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from harness.results import (SCHEMA_VERSION, ResultSchemaError, atomic_write_text, config_hash, iter_results,
                             read_result, result_path, validate, write_result)
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
    ({"metrics": {}}, "status ok with no metrics"),
    ({"metrics": {"acc": {"value": 0.5, "higher_is_better": True, "ci95": -0.1}}}, "ci95 must be a number ≥ 0"),
    ({"metrics": {"acc": {"value": 0.5, "higher_is_better": True, "bounds": [1, 0]}}}, "low < high"),
    ({"metrics": {"acc": {"value": 0.5, "higher_is_better": True, "bounds": {"low": 0}}}}, r"bounds are \[low, high\]"),
])
def test_schema_violations_are_named(tmp_path, bad, match):
    with pytest.raises(ResultSchemaError, match=match):
        write_result(tmp_path / "r.json", _result(**bad))
    assert not (tmp_path / "r.json").exists()


def test_a_value_edited_past_its_bounds_is_refused_and_left_out_of_the_tables(tmp_path):
    """recall@1 = 1.7 typed into a result file: its stored bounds [0, 1] refuse it, at the edge they admit it."""
    good = _result(metrics={"acc": {"value": 1.0, "higher_is_better": True, "bounds": [0.0, 1.0]},
                            "severity": {"value": 0.0, "higher_is_better": False, "bounds": [0.0, None]}})
    path = result_path(tmp_path, good["cell"])
    write_result(path, good)
    edited = json.loads(path.read_text())
    edited["metrics"]["acc"]["value"] = 1.7
    path.write_text(json.dumps(edited))
    with pytest.raises(ResultSchemaError, match=r"metric 'acc': value 1\.7 is outside its bounds \[0\.0, 1\.0\]"):
        read_result(path)
    with pytest.warns(UserWarning, match="ignoring .*outside its bounds"):
        assert iter_results(tmp_path) == []


def test_nonfinite_numbers_are_stored_as_null_with_their_reason(tmp_path):
    r = _result(metrics={"acc": {"value": float("nan"), "higher_is_better": True}},
                config={"seed": 0, "train": {"lr": float("inf")}}, details={"d": [1.0, float("-inf")]})
    written = write_result(tmp_path / "r.json", r)
    back = read_result(tmp_path / "r.json")
    assert back == written
    assert back["metrics"]["acc"] == {"value": None, "higher_is_better": True,
                                      "reason": "the computed value was NaN or infinite"}
    assert back["config"]["train"]["lr"] is None and back["details"]["d"] == [1.0, None]
    assert back["nonfinite"] == ["config.train.lr", "details.d[1]", "metrics.acc.value"]


@pytest.mark.parametrize("text, match", [
    (b"\xff\xfe not utf-8", "codec can.t decode"),
    (b'{"schema_version": 2, "value": NaN}', "NaN is not valid JSON"),
    (b"[1, 2]", "a result is a JSON object"),
])
def test_unreadable_files_are_rejected_by_name(tmp_path, text, match):
    path = tmp_path / "seed0.json"
    path.write_bytes(text)
    with pytest.raises(ValueError, match=match):
        read_result(path)


@pytest.mark.parametrize("bad, match", [
    ({"metrics": {"acc": {"value": "0.9", "higher_is_better": True}}}, "value must be a number"),
    ({"metrics": {"acc": {"value": True, "higher_is_better": True}}}, "value must be a number"),
    ({"metrics": [1, 2]}, "metrics must be dict"),
    ({"config": "x"}, "config must be dict"),
    ({"cell": {**_result()["cell"], "seed": "0"}}, "cell.seed must be an integer"),
    ({"metrics": {"acc": {"value": 0.5, "higher_is_better": "yes"}}}, "higher_is_better: bool"),
])
def test_schema_checks_types_not_only_keys(tmp_path, bad, match):
    with pytest.raises(ResultSchemaError, match=match):
        validate(_result(**bad))


def test_iter_results_skips_bad_files_with_a_warning_naming_them(tmp_path):
    good = result_path(tmp_path, _result()["cell"])
    write_result(good, _result())
    bad = good.with_name("seed1.json")
    bad.write_text(json.dumps(_result(metrics={"acc": {"value": "0.9", "higher_is_better": True}})))
    with pytest.warns(UserWarning, match="seed1.json.*value must be a number"):
        found = iter_results(tmp_path)
    assert [p for p, _ in found] == [good]
    with pytest.raises(ResultSchemaError, match="seed1.json"):
        iter_results(tmp_path, strict=True)


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("field, name", [("method", "../../x"), ("task", "/abs/path"), ("dataset", ".hidden"),
                                         ("backbone", "a/b")])
def test_names_cannot_escape_the_results_folder(tmp_path, field, name):
    from harness.errors import ConfigError

    cell = {**_result()["cell"], field: name}
    with pytest.raises(ConfigError, match="not allowed"):
        result_path(tmp_path, cell)


def test_a_variant_gets_its_own_folder_under_the_backbone(tmp_path):
    cell = {**_result()["cell"], "variant": "v1a2b3c4d"}
    assert result_path(tmp_path, cell) == tmp_path / "t" / "d" / "m" / "b" / "v1a2b3c4d" / "seed0.json"


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
    assert a == {"seed": 1, "method": {"name": "x", "dim": 3}, "results_dir": "r1",
                 "train": {"epochs": 2, "num_workers": 0}}  # the input is not mutated


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
