"""MetricValue: numbers, nulls with their reason, and the JSON both write."""

from __future__ import annotations

import json
import math

import pytest

from harness.registry import get_registry
from harness.task import NON_NEGATIVE, SIGNED_UNIT, UNIT, MetricValue, Task, checked_metrics
from harness.tasks.hierarchy import Hierarchy


def test_number_json_keeps_its_keys() -> None:
    m = MetricValue(0.25, True, ci95=0.01, n=40)
    assert m.to_json() == {"value": 0.25, "higher_is_better": True, "ci95": 0.01, "n": 40}


def test_null_needs_and_writes_a_reason() -> None:
    m = MetricValue.undefined("the score is constant", False, n=12)
    assert m.to_json() == {"value": None, "reason": "the score is constant", "higher_is_better": False, "n": 12}
    assert json.loads(json.dumps(m.to_json(), allow_nan=False))["value"] is None
    with pytest.raises(ValueError, match="needs a reason"):
        MetricValue(None, True)
    with pytest.raises(ValueError, match="takes no reason"):
        MetricValue(0.5, True, reason="why")


def test_non_finite_numbers_become_null_with_a_reason() -> None:
    m = MetricValue(math.nan, True, ci95=0.1)
    assert m.value is None and m.ci95 is None and "non-finite" in m.reason
    assert m.to_json()["value"] is None and "reason" in m.to_json()


def test_task_metric_takes_its_direction_and_a_reason() -> None:
    task = Hierarchy()
    assert task.metric("mistake_severity", 3, n=5).to_json() == {"value": 3.0, "higher_is_better": False, "n": 5,
                                                               "bounds": [0.0, None]}
    m = task.metric("cpcc", None, reason="constant")
    assert m.value is None and m.higher_is_better is True and m.reason == "constant"


def test_bounds_are_written_and_checked_with_float_rounding_moved_onto_the_bound() -> None:
    task = Hierarchy()
    assert task.metric("cpcc", 0.5).to_json() == {"value": 0.5, "higher_is_better": True, "bounds": [-1.0, 1.0]}
    assert task.metric("mistake_severity", 2.0).to_json()["bounds"] == [0.0, None]
    over = {"cpcc": task.metric("cpcc", 1 + 1e-12), "top1": task.metric("top1", -3e-10)}
    assert {k: m.value for k, m in checked_metrics(task, over).items()} == {"cpcc": 1.0, "top1": 0.0}
    with pytest.raises(ValueError, match=r"metric 'top1': value 1\.5 is outside its bounds \[0, 1\]"):
        checked_metrics(task, {"top1": task.metric("top1", 1.5)})
    with pytest.raises(ValueError, match=r"metric 'mistake_severity': value -0\.1 is outside its bounds \[0, inf\]"):
        checked_metrics(task, {"mistake_severity": task.metric("mistake_severity", -0.1)})
    assert checked_metrics(task, {"top1": task.metric("top1", None, reason="collapsed")})["top1"].value is None


@pytest.mark.parametrize("bounds", [(1, 0), (0, math.inf), "01", (0, 1, 2), (None, "x")])
def test_malformed_bounds_are_refused(bounds) -> None:
    with pytest.raises(ValueError, match="bounds"):
        MetricValue(0.5, True, bounds=bounds)


def test_the_family_of_a_grouped_metric_name_gives_its_bounds() -> None:
    class Grouped(Task):
        BOUNDS = {"auroc": UNIT, "auroc/special": SIGNED_UNIT}

    assert Grouped.bounds_of("auroc/dist0/far") == UNIT
    assert Grouped.bounds_of("auroc/special") == SIGNED_UNIT
    assert Grouped.bounds_of("aupr/dist0/far") is None


def test_every_built_in_task_bounds_every_metric_it_declares() -> None:
    """What the leaderboards hold is checked against a range: a built-in metric without bounds is an omission."""
    from harness.tasks.instance_selection import InstanceSelection

    registry = get_registry()
    tasks = {spec.name: registry.load("task", spec.name) for spec in registry.list("task")
             if spec.target.startswith("harness.tasks.")}
    assert len(tasks) >= 10
    for name, cls in tasks.items():
        names = list(cls.METRICS) or ["acc/typical/10%", "gain/atypical/50%"]
        assert cls is not InstanceSelection or not cls.METRICS
        missing = [m for m in names if cls.bounds_of(m) is None]
        assert not missing, f"task {name}: no bounds for {missing}"
    assert {cls.bounds_of("delta_rel") for n, cls in tasks.items() if n == "delta"} == {NON_NEGATIVE}
