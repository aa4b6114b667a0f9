"""The README's plugin-writing examples run as printed: the two-view method and the task train and evaluate."""

import re
import sys
import types
from pathlib import Path

import pytest

from harness import PluginSpec, hookimpl
from harness.registry import get_registry
from tests.test_sweep import TINY

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- readme-example:{name} -->\n```python\n(.*?)```", text, flags=re.S)
    assert match, f"README lost its {name} example"
    return match.group(1)


@pytest.fixture(scope="module")
def readme_plugins():
    module = types.ModuleType("readme_examples")
    sys.modules["readme_examples"] = module
    exec(compile(_example("method") + "\n" + _example("task"), "README.md", "exec"), module.__dict__)

    class Plugin:
        @hookimpl
        def harness_methods(self):
            return [PluginSpec("two_view_proto", "readme_examples:TwoViewProto", "README example")]

        @hookimpl
        def harness_tasks(self):
            return [PluginSpec("proto_accuracy", "readme_examples:ProtoAccuracy", "README example")]

    plugin = Plugin()
    registry = get_registry()
    registry.register(plugin, name="readme_examples", dist="README")
    yield module
    registry.pm.unregister(plugin)
    registry._specs = None
    del sys.modules["readme_examples"]


def test_the_readme_method_and_task_run_a_cell(tmp_path, readme_plugins):
    from harness import plugin_check
    from harness.run import run_cell
    from harness.sweep import compose

    plugin_check.check_method(get_registry().get("method", "two_view_proto"))
    config = compose(["method=two_view_proto", "task=proto_accuracy", *[o for o in TINY if not o.startswith("task.")],
                      f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"])
    result = run_cell(config, progress=False)
    assert result["status"] == "ok", result["reason"]
    assert 0.0 <= result["metrics"]["accuracy"]["value"] <= 1.0
    assert result["geometry"] == {"name": "poincare", "c": 1.0}
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="two_view_proto: c must be > 0"):
        compose(["method=two_view_proto", "method.c=-1"])
