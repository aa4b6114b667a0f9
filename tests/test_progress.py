"""Progress without a terminal: a line per tenth of the loop, with the rate, ETA and last values."""

import re

import pytest

from harness.progress import Progress, format_seconds


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (5.4, "5s"), (125, "2m05s"), (3725, "1h02m05s")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def _lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("total, expected", [
    (25, [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]),  # ceil(k·25/10), k = 1..10
    (10, list(range(1, 11))),
    (4, [1, 2, 3, 4]),  # fewer steps than tenths: a line per step
])
def test_a_line_at_each_tenth(capsys, total, expected):
    progress = Progress("train x", total, bar=False)
    for _ in range(total):
        progress.update(loss=0.25)
    lines = _lines(capsys)
    assert [int(re.search(r"train x (\d+)/", line).group(1)) for line in lines] == expected
    assert all(f"/{total} steps" in line and "ETA" in line and "loss 0.2500" in line for line in lines)
    assert lines[-1].split("ETA ")[1].startswith("0s")


def test_a_resumed_loop_reports_only_what_is_left(capsys):
    progress = Progress("fine-tune", 100, bar=False, initial=45, unit="it")
    for _ in range(55):
        progress.update()
    done = [int(re.search(r"fine-tune (\d+)/100 its", line).group(1)) for line in _lines(capsys)]
    assert done == [50, 60, 70, 80, 90, 100]


def test_steps_of_several_at_once_print_one_line(capsys):
    progress = Progress("x", 10, bar=False)
    progress.update(7)
    progress.update(3)
    assert [line.split()[1] for line in _lines(capsys)] == ["7/10", "10/10"]


def test_no_line_before_the_total_is_known(capsys):
    progress = Progress("x", None, bar=False)
    progress.update(3)
    assert _lines(capsys) == []
    progress.set_total(6)
    for _ in range(3):
        progress.update()
    assert [line.split()[1] for line in _lines(capsys)] == ["4/6", "5/6", "6/6"]


def test_a_bar_prints_no_lines(capsys):
    progress = Progress("x", 10, bar=True)
    for _ in range(10):
        progress.update(loss=1.0)
    progress.close()
    assert "x 10/10 steps" not in capsys.readouterr().err


def test_the_rate_counts_from_when_the_total_is_known(capsys, monkeypatch):
    clock = iter([0.0, 100.0, 101.0])  # created at 0 s; 100 s of set-up (HACK's packing); one step of 1 s
    monkeypatch.setattr("harness.progress._now", lambda: next(clock))
    progress = Progress("x", None, bar=False)
    progress.set_total(2)
    progress.update()
    assert "1/2 steps, 1.00 step/s, ETA 1s" in capsys.readouterr().err
