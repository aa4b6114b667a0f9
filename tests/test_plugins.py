"""Smoke tests parametrised over the registry: every plugin gets them for free."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from harness.method import Batch, TrainInfo, TrainState
from harness.registry import get_registry
from harness.sweep import _has_yaml, _yaml_file

REG = get_registry()
SEARCHPATH = REG.config_searchpath()


def _specs(kind):
    return [pytest.param(spec, id=f"{kind}:{name}") for name, spec in REG.specs(kind).items()]


def _yaml(kind, name):
    path = _yaml_file(SEARCHPATH, kind, name)
    assert path is not None, f"no config file {kind}/{name}.yaml on the search path {SEARCHPATH}"
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("spec", _specs("method") + _specs("dataset") + _specs("task"))
def test_config_file_matches_the_schema(spec):
    cls = spec.load()
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(cls.Config)}
    assert defaults["name"] == spec.name, "Config.name must default to the plugin name"
    defaults = json.loads(json.dumps(defaults))  # yaml has lists where Python may have tuples
    assert _yaml(spec.kind, spec.name) == defaults, "the yaml config group must equal the Config defaults"


@pytest.mark.parametrize("spec", _specs("backbone"))
def test_backbone_registers_in_timm(spec):
    import timm

    from harness.backbones import build_backbone

    spec.load()
    assert timm.is_model(spec.name)
    assert _has_yaml(SEARCHPATH, "backbone", spec.name)
    model, dim = build_backbone({"name": spec.name, "pretrained": None, "kwargs": {}}, in_chans=3, img_size=(32, 32))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, dim)


@pytest.mark.parametrize("spec", _specs("backbone"))
def test_backbone_config_file_has_the_backbone_keys(spec):
    from harness.backbones import BACKBONE_KEYS

    cfg = _yaml("backbone", spec.name)
    assert set(cfg) == BACKBONE_KEYS and cfg["name"] == spec.name


@pytest.mark.parametrize("spec", _specs("backbone"))
def test_backbone_gives_multi_scale_maps(spec):
    """Detection transfer takes the trained backbone's maps: each map's size is the input's over its stride."""
    from harness.backbones import build_backbone
    from harness.feature_maps import feature_maps

    model, _ = build_backbone(_yaml("backbone", spec.name), in_chans=3, img_size=(48, 64))
    fm = feature_maps(model)
    maps = fm(torch.zeros(2, 3, 48, 64))
    expected = [(2, c, 48 // s, 64 // s) for c, s in zip(fm.channels, fm.strides)]
    assert [tuple(t.shape) for t in maps.values()] == expected


@pytest.mark.parametrize("spec", _specs("method"))
def test_method_trains_a_step_and_embeds(spec):
    from harness.backbones import build_backbone

    cls = spec.load()
    torch.manual_seed(0)
    backbone, dim = build_backbone({"name": "conv4_32", "pretrained": None, "kwargs": {}}, in_chans=3,
                                   img_size=(16, 16))
    n, classes = 20, 4
    labels = np.arange(n) % classes
    info = TrainInfo(feat_dim=dim, num_classes=classes, num_train=n, label_field="label", epochs=1,
                     extra_labels={"coarse_label": labels // 2})
    method = cls(cls.Config(), backbone, info)
    images = torch.randn(n, 3, 16, 16)
    state = TrainState(epoch=0, epochs=1, step=0, device=torch.device("cpu"), rng=np.random.default_rng(0),
                       embed_train=lambda: (method.embed(images).detach(), method.features(images).detach()),
                       labels=labels)
    method.on_epoch_start(state)
    plan = method.batch_indices(labels, 10, np.random.default_rng(0))
    pos = torch.as_tensor(next(iter(plan)) if plan is not None else np.arange(10))
    batch = Batch(images=images[pos], labels=torch.as_tensor(labels)[pos], indices=pos,
                  annotations={"coarse_label": torch.as_tensor(labels // 2)[pos]})
    loss = method.training_step(batch, state)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    emb = method.embed(images).detach()
    assert emb.shape[0] == n and torch.isfinite(emb).all()
    d = method.geometry.pairwise_dist(emb[:5], emb)
    assert d.shape == (5, n) and torch.allclose(torch.diagonal(d[:, :5]), torch.zeros(5), atol=1e-3)
