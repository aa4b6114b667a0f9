"""``train.compile=true`` (torch.compile of the backbone) on the CPU: the same training up to float
rounding, and a cached model whose state dict has the backbone's own keys (the compiled module is not
registered), so it loads into an uncompiled run. Slow: Inductor compiles C++ kernels (~25 s)."""

import pytest
import torch

from harness.run import run_cell
from harness.sweep import compose
from tests.test_sweep import TINY

pytestmark = pytest.mark.slow


def _train(tmp_path, tag, *extra):
    config = compose(["method=protonet", "task=few_shot", "seed=0", *TINY, *extra,
                      f"results_dir={tmp_path / tag}", f"cache_dir={tmp_path / tag / 'cache'}"])
    result = run_cell(config, progress=False)
    models = sorted((tmp_path / tag / "cache" / "models").rglob("*.pt"))
    return result, models


def test_compiled_backbone_trains_as_the_eager_one_and_caches_its_own_keys(tmp_path, monkeypatch):
    compiled_modules = []
    compile_ = torch.compile

    def recording_compile(module, *args, **kwargs):
        compiled_modules.append(type(module).__name__)
        return compile_(module, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    eager, eager_models = _train(tmp_path, "eager")
    assert compiled_modules == []
    compiled, compiled_models = _train(tmp_path, "compiled", "train.compile=true")
    assert eager["status"] == compiled["status"] == "ok"
    assert len(compiled_modules) == 1  # the backbone, once
    assert compiled["training"]["epoch_loss"] == pytest.approx(eager["training"]["epoch_loss"], rel=1e-3)
    for key, metric in eager["metrics"].items():
        assert compiled["metrics"][key]["value"] == pytest.approx(metric["value"], abs=0.02), key
    assert eager_models and compiled_models
    eager_keys = set(torch.load(eager_models[0], map_location="cpu"))
    compiled_keys = set(torch.load(compiled_models[0], map_location="cpu"))
    assert compiled_keys == eager_keys
    assert not any("_orig_mod" in k or "_compiled" in k for k in compiled_keys)
