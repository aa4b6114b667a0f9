"""MetricValue: numbers, nulls with their reason, and the JSON both write."""

from __future__ import annotations

import json
import math

import pytest

from harness.task import MetricValue
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
    assert task.metric("mistake_severity", 3, n=5).to_json() == {"value": 3.0, "higher_is_better": False, "n": 5}
    m = task.metric("cpcc", None, reason="constant")
    assert m.value is None and m.higher_is_better is True and m.reason == "constant"
