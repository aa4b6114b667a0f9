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
    try:
        plugin_check.CHECKS[spec.kind](spec)
    except plugin_check.NotChecked as exc:  # data not on this machine: its not-found message was checked
        assert spec.kind == "dataset" and f"--set {spec.name}.root=PATH" in str(exc)


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


@pytest.mark.parametrize("spec", _specs("backbone"))
def test_backbone_gives_multi_scale_maps(spec):
    """Detection transfer takes the trained backbone's maps: each map's size is the input's over its stride
    (a backbone that declares ``multi_scale_maps = False`` is refused with the reason)."""
    from harness.backbones import build_backbone
    from harness.config import BackboneConfig
    from harness.feature_maps import feature_maps
    import dataclasses
    import torch

    from harness.errors import ConfigError

    model, _ = build_backbone(dataclasses.asdict(BackboneConfig(name=spec.name)), in_chans=3, img_size=(48, 64))
    if getattr(model, "multi_scale_maps", True) is False:  # declared (LeNet's unpadded maps): refused clearly
        with pytest.raises(ConfigError, match="has no multi-scale features"):
            feature_maps(model)
        return
    fm = feature_maps(model)
    maps = fm(torch.zeros(2, 3, 48, 64))
    expected = [(2, c, 48 // s, 64 // s) for c, s in zip(fm.channels, fm.strides)]
    assert [tuple(t.shape) for t in maps.values()] == expected
