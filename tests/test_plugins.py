"""Smoke tests parametrised over the registry: every plugin gets them for free.

The checks themselves are :mod:`harness.plugin_check`, which third-party packages run as
``harness check-plugin DIST``.
"""

import pytest

from harness import plugin_check
from harness.registry import get_registry

REG = get_registry()


def _specs(kind):
    return [pytest.param(spec, id=f"{kind}:{name}") for name, spec in REG.specs(kind).items()]


@pytest.mark.parametrize("spec", _specs("method") + _specs("backbone") + _specs("dataset") + _specs("task")
                         + _specs("augmentation"))
def test_plugin_passes_its_smoke_check(spec):
    plugin_check.CHECKS[spec.kind](spec)


@pytest.mark.parametrize("group, name", plugin_check.config_files())
def test_config_file_composes_into_a_valid_config(group, name):
    plugin_check.check_config_file(group, name)


def test_check_plugin_command_reports_every_plugin_of_a_distribution(capsys):
    pytest.importorskip("harness_example", reason="CI installs examples/third_party_plugin")
    from harness.cli import main

    assert main(["check-plugin", "harness-example-plugin"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:3]) for line in out.splitlines()}
    assert {("method", "cosine_ce", "ok"), ("task", "nearest_centroid", "ok")} <= rows
    assert "4 passed, 0 failed" in out
    assert main(["check-plugin", "no-such-dist"]) == 2
    assert "registers no plugins" in capsys.readouterr().err
