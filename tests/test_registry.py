"""Entry-point loading, conflicts, strict mode, did-you-mean, lazy listing."""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from harness.errors import PluginConflictError, PluginLoadError, UnknownPluginError
from harness.registry import PluginWarning, Registry


def _fake_dist(root, dist, module, source):
    """A minimal installed distribution: a module plus a dist-info with a `harness` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{dist} = {module}\n")


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_broken_distribution_is_a_warning_naming_it(fake_site):
    _fake_dist(fake_site, "broken_dist", "broken_mod", "raise ImportError('no such thing')\n")
    with pytest.warns(PluginWarning, match="broken_dist.*ImportError: no such thing"):
        reg = Registry()
    assert "euclidean_ce" in reg.specs("method")  # everything else still works
    assert any("broken_dist" in e for e in reg.load_errors)


def test_broken_distribution_is_an_error_in_strict_mode(fake_site, monkeypatch):
    _fake_dist(fake_site, "broken_dist", "broken_mod", "raise ImportError('no such thing')\n")
    with pytest.raises(PluginLoadError, match="broken_dist"):
        Registry(strict=True)
    monkeypatch.setenv("HARNESS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError):
        Registry()


def test_two_distributions_claiming_one_name_is_an_error_naming_both(fake_site):
    _fake_dist(fake_site, "clash_dist", "clash_mod", """
        from harness import PluginSpec, hookimpl

        @hookimpl
        def harness_methods():
            return [PluginSpec("euclidean_ce", "clash_mod:X", "an impostor")]
    """)
    reg = Registry()
    with pytest.raises(PluginConflictError, match="hyperbolic-harness.*clash_dist|clash_dist.*hyperbolic-harness"):
        reg.specs("method")


def test_unknown_hook_implementation_is_caught(fake_site):
    _fake_dist(fake_site, "typo_dist", "typo_mod", """
        from harness import hookimpl

        @hookimpl
        def harness_method():
            return []
    """)
    with pytest.warns(PluginWarning, match="typo_dist.*harness_method"):
        Registry()


def test_unknown_name_answers_did_you_mean_with_choices():
    reg = Registry()
    with pytest.raises(UnknownPluginError) as info:
        reg.get("method", "poincare_mrl")
    msg = str(info.value)
    assert msg.startswith("unknown method 'poincare_mrl'; did you mean 'poincare_mlr'?")
    assert "choices:" in msg and "euclidean_ce" in msg


def test_unknown_kind():
    with pytest.raises(UnknownPluginError, match="unknown plugin kind 'metod'; did you mean 'method'"):
        Registry().specs("metod")


def test_builtins_register_through_the_entry_point_group():
    reg = Registry()
    assert {s.dist for kind in ("method", "backbone", "dataset", "task") for s in reg.specs(kind).values()} \
        >= {"hyperbolic-harness"}
    assert reg.get("method", "poincare_mlr").target.endswith(":PoincareMLR")


def test_list_imports_no_model_code():
    # (its speed is a benchmark: benchmarks/bench_list.py)
    code = ("import sys; from harness.cli import main; main(['list']); "
            "print('MODS', 'torch' in sys.modules, 'timm' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("MODS")[1].split() == ["False", "False", "False"]
    assert "poincare_mlr" in out and "few_shot" in out


def test_list_backbones_with_a_pattern_lists_timm_names(capsys):
    from harness.cli import main

    assert main(["list", "backbones", "resnet1*"]) == 0
    out = capsys.readouterr().out
    assert "timm models matching 'resnet1*'" in out
    assert " resnet18 " in f" {out.split(':')[-1]} "
    assert "conv4" not in out  # the in-tree conv4 does not match the pattern


def test_list_unknown_kind_is_a_clear_error(capsys):
    from harness.cli import main

    assert main(["list", "metods"]) == 2
    assert "did you mean 'methods'?" in capsys.readouterr().err


def test_list_with_a_pattern_that_matches_nothing_says_so(capsys):
    from harness.cli import main

    assert main(["list", "methods", "zz*"]) == 0
    assert "methods:\n  (none matches 'zz*'; `harness list methods` shows them all)" in capsys.readouterr().out


# ------------------------------------------------------------------- mistakes a plugin author makes
_TWO_METHODS = """
    from dataclasses import dataclass
    from harness import PluginSpec, hookimpl
    from harness.plugins.methods.euclidean_ce import EuclideanCE

    class Copied(EuclideanCE):
        @dataclass
        class Config(EuclideanCE.Config):  # copied from another plugin: its name default is 'euclidean_ce'
            pass

    class Nameless(EuclideanCE):
        @dataclass
        class Config:
            dim: int = 4

    @hookimpl
    def harness_methods():
        return [PluginSpec("copied", "author_mod:Copied", "stale Config.name"),
                PluginSpec("nameless", "author_mod:Nameless", "no name field"),
                PluginSpec("missing_dep", "not_a_real_package_xyz:M", "fails to import")]
"""


def test_a_config_name_other_than_the_spec_name_is_an_error_not_another_plugin(fake_site):
    _fake_dist(fake_site, "author_dist", "author_mod", _TWO_METHODS)
    reg = Registry()
    with pytest.raises(PluginLoadError, match="Config has name defaulting to 'euclidean_ce'.*name: str = 'copied'"):
        reg.load("method", "copied")
    with pytest.raises(PluginLoadError, match="Config has no name field.*name: str = 'nameless'"):
        reg.load("method", "nameless")


def test_selecting_a_plugin_that_fails_to_load_reports_its_error_not_could_not_find(fake_site, tmp_path):
    from harness.registry import set_registry
    from harness.sweep import compose

    _fake_dist(fake_site, "author_dist", "author_mod", _TWO_METHODS)
    set_registry(Registry())
    try:
        for name, why in (("missing_dep", "No module named 'not_a_real_package_xyz'"),
                          ("copied", "name defaulting to 'euclidean_ce'")):
            with pytest.raises(PluginLoadError, match=why):
                from harness.config import validate

                validate(compose([f"method={name}", f"results_dir={tmp_path}"]))
    finally:
        set_registry(None)


def test_a_hook_returning_the_wrong_type_is_a_warning_naming_the_distribution(fake_site):
    _fake_dist(fake_site, "bad_hook_dist", "bad_hook_mod", """
        from harness import PluginSpec, hookimpl

        @hookimpl
        def harness_tasks():
            return PluginSpec("lonely", "bad_hook_mod:T", "not in a list")
    """)
    reg = Registry()
    with pytest.warns(PluginWarning, match="bad_hook_dist.*harness_tasks\\(\\) must return a list.*got PluginSpec"):
        tasks = reg.specs("task")
    assert "retrieval" in tasks  # everything else still works


def test_one_distribution_registering_a_name_twice_is_an_error(fake_site):
    _fake_dist(fake_site, "twice_dist", "twice_mod", """
        from harness import PluginSpec, hookimpl

        @hookimpl
        def harness_methods():
            return [PluginSpec("twin", "twice_mod:A", "a"), PluginSpec("twin", "twice_mod:B", "b")]
    """)
    with pytest.raises(PluginConflictError, match="twice_dist' registers method 'twin' twice"):
        Registry().specs("method")


def test_help_with_a_plugin_conflict_prints_the_usage_and_the_error(fake_site, capsys):
    from harness.cli import main
    from harness.registry import set_registry

    _fake_dist(fake_site, "clash_dist", "clash_mod", """
        from harness import PluginSpec, hookimpl

        @hookimpl
        def harness_methods():
            return [PluginSpec("euclidean_ce", "clash_mod:X", "an impostor")]
    """)
    set_registry(Registry())
    try:
        assert main(["--help"]) == 2
    finally:
        set_registry(None)
    out, err = capsys.readouterr()
    assert "usage: harness" in out and "registered by both" in err and "Traceback" not in err


def test_a_config_that_omegaconf_cannot_type_does_not_break_other_runs_and_still_validates():
    """A Literal[...] field: stored as plain defaults, checked by validate, the other plugins unaffected."""
    from dataclasses import dataclass
    from typing import Literal

    from hydra.core.config_store import ConfigStore

    from harness.config import register_schemas

    @dataclass
    class Config:
        name: str = "literal_task"
        mode: Literal["fast", "exact"] = "fast"

    store = ConfigStore.instance()
    register_schemas(store, {("task", "literal_task"): Config})
    assert store.load("task/literal_task.yaml").node == {"name": "literal_task", "mode": "fast"}


def test_a_config_field_without_default_names_the_override_to_give():
    from dataclasses import dataclass

    from harness.errors import ConfigError
    from harness.plugins.methods.euclidean_ce import EuclideanCE
    from harness.registry import make_config

    class NoDefault(EuclideanCE):
        @dataclass(kw_only=True)
        class Config:
            name: str = "no_default"
            width: int

    with pytest.raises(ConfigError, match=r"width has no default and no value.*method\.width=VALUE"):
        make_config(NoDefault, {"name": "no_default"})
    with pytest.raises(ConfigError, match=r"width has no default"):
        make_config(NoDefault, {"name": "no_default", "width": "???"})  # omegaconf's missing marker


def test_a_broken_plugin_is_one_warning_line_on_the_command_line(tmp_path):
    _fake_dist(tmp_path, "broken_dist", "broken_mod", "raise ImportError('no such thing')\n")
    code = "import sys; from harness.cli import main; sys.exit(main(['list', 'tasks']))"
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "few_shot" in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["harness: warning: plugin 'broken_dist' from distribution 'broken_dist' failed to load: "
                     "ImportError: no such thing (skipped; set HARNESS_STRICT_PLUGINS=1 to make this an error)"]


# ------------------------------------------------------------------- a plugin author's review (session 12)
_AUTHOR_PLUGINS = """
    from dataclasses import dataclass
    import numpy as np
    import torch
    from harness import PluginSpec, hookimpl
    from harness.data import DatasetInfo, ImageDataset
    from harness.plugins.methods.euclidean_ce import EuclideanCE

    class NoGeometry(EuclideanCE):
        @dataclass
        class Config(EuclideanCE.Config):
            name: str = "no_geometry"

        def __init__(self, cfg, backbone, info):
            super().__init__(cfg, backbone, info)
            del self.geometry

    class Asserting(EuclideanCE):
        @dataclass
        class Config(EuclideanCE.Config):
            name: str = "asserting"
            k: int = 1

            def validate(self):
                assert self.k > 0, "k must be positive"

    class Listed(ImageDataset):
        @dataclass
        class Config:
            name: str = "listed"
            stop: int = 6

        def __init__(self, cfg=None):
            super().__init__(cfg)
            self.annotations = {"label": [0, 1, 0, 1, 0, 1], "boxes": [[[0, 0, 2, 2, 1]]] * 6}
            self.splits = {"train": list(range(self.cfg.stop))}
            self.info = DatasetInfo(image_size=(8, 8), channels=1, class_names=["a", "b"])

        def load_images(self, indices):
            return torch.zeros(len(indices), 1, 8, 8, dtype=torch.uint8)

    class Rooted(Listed):
        @dataclass
        class Config:
            root: str
            name: str = "rooted"
            stop: int = 6

    @hookimpl
    def harness_methods():
        return [PluginSpec("no_geometry", "reviewed_mod:NoGeometry", "forgot self.geometry"),
                PluginSpec("asserting", "reviewed_mod:Asserting", "validate() asserts")]

    @hookimpl
    def harness_datasets():
        return [PluginSpec("listed", "reviewed_mod:Listed", "lists, not arrays"),
                PluginSpec("rooted", "reviewed_mod:Rooted", "a root without a default")]

    @hookimpl
    def harness_config_searchpath():
        return ["pkg://reviewed_mod_conf_not_shipped"]
"""


@pytest.fixture
def author_registry(fake_site, monkeypatch):
    from harness import registry
    from harness.registry import set_registry

    monkeypatch.setattr(registry, "_WARNED_PATHS", set())  # each test sees the warning

    _fake_dist(fake_site, "reviewed_dist", "reviewed_mod", _AUTHOR_PLUGINS)
    reg = Registry()
    set_registry(reg)
    with pytest.warns(PluginWarning, match="pkg://reviewed_mod_conf_not_shipped cannot be imported.*__init__.py"):
        reg.config_searchpath()
    yield reg
    set_registry(None)


def test_a_config_path_that_was_not_shipped_is_a_warning_and_a_failed_check(author_registry, capsys):
    from harness.cli import main

    assert "pkg://reviewed_mod_conf_not_shipped" not in author_registry.config_searchpath()  # Hydra is not given it
    assert main(["check-plugin", "reviewed_dist", "--set", "rooted.root=/nowhere"]) == 1
    out = capsys.readouterr().out
    def row(name):
        return next(line for line in out.splitlines() if f" {name} " in line)

    assert "PluginLoadError: the plugin config path pkg://reviewed_mod_conf_not_shipped cannot be imported" in \
        row("pkg://reviewed_mod_conf_not_shipped")
    assert "PluginLoadError: method NoGeometry sets no self.geometry" in row("no_geometry")
    assert all(row(name).rstrip().endswith(" ok") for name in ("listed", "rooted", "asserting"))
    assert out.rstrip().endswith("3 passed, 2 failed")


def test_plugin_mistakes_are_found_before_training(author_registry, tmp_path, capsys):
    from harness.cli import main
    from harness.data import check_contents
    from harness.method import check_geometry

    # validate() raising AssertionError: a ConfigError with its message, exit 2, no traceback
    assert main(["run", "method=asserting", "method.k=0", f"results_dir={tmp_path}", "--cfg"]) == 2
    err = capsys.readouterr().err
    assert "asserting: k must be positive (AssertionError from Asserting.Config.validate())" in err
    assert "Traceback" not in err
    # a method without self.geometry: found when it is built, not after training
    method_cls = author_registry.load("method", "no_geometry")
    from harness.registry import make_config
    from harness.method import TrainInfo

    method = method_cls(make_config(method_cls, {}), torch.nn.Flatten(),
                        TrainInfo(feat_dim=4, num_classes=2, num_train=4, label_field="label", epochs=1))
    with pytest.raises(PluginLoadError, match="NoGeometry sets no self.geometry: set it in __init__"):
        check_geometry(method)
    # lists become arrays (labels int64, boxes an object array of (k, 5)); a split past the end is an error
    ds = author_registry.load("dataset", "listed")()
    check_contents(ds)
    assert ds.annotations["label"].dtype == np.int64 and ds.annotations["boxes"].dtype == object
    assert ds.annotations["boxes"][5].shape == (1, 5) and ds.splits["train"].dtype == np.int64
    ds = author_registry.load("dataset", "listed")(make_config(author_registry.load("dataset", "listed"), {"stop": 8}))
    with pytest.raises(PluginLoadError, match=r"split 'train' holds 2 indices outside 0\.\.5 \(e\.g\. \[6, 7\]\)"):
        check_contents(ds)


def test_check_plugin_reports_what_it_cannot_check_and_takes_values(author_registry):
    from harness import plugin_check

    spec = author_registry.specs("dataset")["rooted"]
    plugin_check._GIVEN.clear()
    with pytest.raises(plugin_check.NotChecked, match=r"Rooted: root has no default and no value: give it with "
                                                      r"--set rooted\.KEY=VALUE"):
        plugin_check.check_dataset(spec)
    plugin_check._GIVEN["rooted"] = {"root": "/nowhere"}
    try:
        plugin_check.check_dataset(spec)  # this dataset reads no files: checked with the value given
    finally:
        plugin_check._GIVEN.clear()


def test_a_misspelt_hook_and_a_distribution_that_failed_to_import_say_what_is_wrong(fake_site, capsys):
    from harness import hookimpl
    from harness.cli import main
    from harness.registry import set_registry

    class Misspelt:
        @hookimpl
        def harness_method(self):
            return []

    with pytest.raises(PluginLoadError, match=r"unknown hook 'harness_method'.*\(did you mean 'harness_methods'\?\)"):
        Registry().register(Misspelt(), name="misspelt", dist="d")
    _fake_dist(fake_site, "import_broken_dist", "import_broken_mod", "import not_a_module_xyz\n")
    with pytest.warns(PluginWarning):
        set_registry(Registry())
    try:
        assert main(["check-plugin", "import_broken_dist"]) == 1
        err = capsys.readouterr().err
        assert "distribution 'import_broken_dist' is installed, but plugin 'import_broken_dist' from distribution " \
               "'import_broken_dist' failed to load: ModuleNotFoundError: No module named 'not_a_module_xyz'" in err
    finally:
        set_registry(None)


def test_a_hook_without_hookimpl_and_an_entry_point_in_another_group_are_warnings(fake_site):
    _fake_dist(fake_site, "unmarked_dist", "unmarked_mod",
               "def harness_methods():\n    return []\n")
    info = fake_site / "grouped_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: grouped_dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.plugins]\ngrouped = unmarked_mod\n")
    with pytest.warns(PluginWarning) as record:
        Registry()
    messages = [str(w.message) for w in record]
    assert any("plugin 'unmarked_dist' from distribution 'unmarked_dist' defines harness_methods without @hookimpl"
               in m for m in messages)
    assert any("entry point(s) grouped (grouped_dist) are in the group 'harness.plugins'; the harness reads "
               "plugins from the group 'harness' only" in m for m in messages)


def test_a_method_that_sets_modules_before_super_init_is_told_to_call_it_first():
    from harness.method import TrainInfo, build_method
    from harness.plugins.methods.euclidean_ce import EuclideanCE

    class NoSuper(EuclideanCE):
        def __init__(self, cfg, backbone, info):
            self.proj = torch.nn.Linear(4, 2)  # before super().__init__: torch has no _modules yet
            super().__init__(cfg, backbone, info)

    info = TrainInfo(feat_dim=4, num_classes=2, num_train=4, label_field="label", epochs=1)
    with pytest.raises(PluginLoadError, match=r"method NoSuper: its __init__ must call "
                                              r"super\(\)\.__init__\(cfg, backbone, info\) before it sets any module"):
        build_method(NoSuper, EuclideanCE.Config(), torch.nn.Flatten(), info)


def test_a_plugin_without_a_config_of_its_own_is_told_it_inherits_one():
    from harness import PluginSpec
    from harness.method import Method
    from harness.registry import check_contract

    class Bare(Method):
        pass

    with pytest.raises(PluginLoadError, match=r"its Config has name defaulting to '' \(it is Method\.Config, "
                                              r"inherited: .*Bare declares none\); it needs the field name: str = 'bare'"):
        check_contract("method", PluginSpec("bare", "x:Bare", ""), Bare)


def test_the_harness_records_its_own_version_not_a_stale_editable_install_s(monkeypatch):
    """An editable install keeps the metadata of the version it was installed at: results recorded
    harness 0.2.0 beside plugins hyperbolic-harness 0.1.0. The own distribution is read from the code."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    import harness
    from harness.registry import OWN_DISTRIBUTION, get_registry

    project = tomllib.loads((Path(harness.__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert (project["name"], project["version"]) == (OWN_DISTRIBUTION, harness.__version__)
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "0.0.1-stale")
    versions = get_registry().dist_versions()
    assert versions[OWN_DISTRIBUTION] == harness.__version__
    assert set(versions.values()) - {harness.__version__} <= {"0.0.1-stale"}


@pytest.mark.parametrize("bounds, message", [
    ({"accuracy": (0, 1), "acc": (0, 1)}, None),  # a metric, and the family of acc/typical/10%
    ({"acc/typical": (0, 1)}, r"BOUNDS names .acc/typical., which is no metric"),  # bounds_of never reads it
    ({"accuracyy": (0, 1)}, r"BOUNDS names 'accuracyy', which is no metric of its METRICS \(did you mean 'accuracy'\?\)"),
    ({"accuracy": (1, 0)}, r"BOUNDS\['accuracy'\]: metric bounds \(1, 0\) are not finite with low < high"),
])
def test_a_task_s_bounds_are_checked_when_it_loads(bounds, message):
    """A misspelt BOUNDS key would leave its metric unchecked without a word."""
    from dataclasses import dataclass

    from harness import PluginSpec
    from harness.registry import check_contract
    from harness.task import Task

    class Acc(Task):
        METRICS = {"accuracy": True, "acc/typical/10%": True}
        BOUNDS = bounds

        @dataclass
        class Config:
            name: str = "acc"

    if message is None:
        check_contract("task", PluginSpec("acc", "x:Acc", ""), Acc)
        return
    with pytest.raises(PluginLoadError, match=message):
        check_contract("task", PluginSpec("acc", "x:Acc", ""), Acc)
