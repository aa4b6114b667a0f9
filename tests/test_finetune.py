"""The core's fine-tuning stage on a toy regression: an interrupted run resumes from its checkpoint and
ends where an uninterrupted one does, a finished one is served from the cache, a torn cache file is
fine-tuned again, and a diverging loss stops with the iteration."""

import numpy as np
import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from harness.finetune import Finetune, run_finetune

TRUE_W = torch.tensor([[2.0, -1.0, 0.5]])


class Interrupted(Exception):
    pass


def _spec(*, iterations=12, stop_at=None, calls=None, loss_scale=1.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1), nn.BatchNorm1d(1))  # BatchNorm: train/eval mode shows

    def batch(i, rng):
        x = torch.as_tensor(rng.standard_normal((8, 3)), dtype=torch.float32)
        return x, x @ TRUE_W.T

    def loss(m, b):
        if calls is not None:
            calls.append(1)
        if stop_at is not None and len(calls) > stop_at:
            raise Interrupted  # the job is killed while iteration stop_at runs
        x, y = b
        return ((m(x) - y) ** 2).mean() * loss_scale

    opt = torch.optim.Adam(model.parameters(), lr=0.05)  # Adam: its moments must resume too
    return Finetune(model=model, batch=batch, loss=loss, optimizer=opt, iterations=iterations,
                    schedule=lambda t: 1.0 - t, checkpoint_every=5)


def _run(spec, path, **kw):
    return run_finetune(spec, cache_file=path, seed=3, device=torch.device("cpu"), amp_dtype=None,
                        progress=False, **kw)


def _weights(spec):
    return {k: v.clone() for k, v in spec.model.state_dict().items()}


def test_an_interrupted_fine_tune_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path):
    whole = _spec()
    stats = _run(whole, tmp_path / "whole.pt")
    assert stats["resumed_from"] == 0 and not stats["cached"] and stats["iterations"] == 12

    path = tmp_path / "cut.pt"
    with pytest.raises(Interrupted):
        _run(_spec(stop_at=7, calls=[]), path)
    assert path.with_suffix(".ckpt.pt").exists() and not path.exists()  # checkpoint at 5, no final model
    calls = []
    resumed = _spec(calls=calls)
    stats = _run(resumed, path)
    assert stats["resumed_from"] == 5 and len(calls) == 7  # iterations 5..11 only
    assert not path.with_suffix(".ckpt.pt").exists()
    for key, value in _weights(whole).items():
        assert torch.equal(_weights(resumed)[key], value), key


def test_a_finished_fine_tune_is_served_from_the_cache_in_eval_mode(tmp_path):
    first = _spec()
    _run(first, tmp_path / "m.pt")
    assert not first.model.training
    calls = []
    again = _spec(calls=calls)
    stats = _run(again, tmp_path / "m.pt")
    assert stats["cached"] and calls == [] and not again.model.training
    assert all(torch.equal(a, b) for a, b in zip(_weights(first).values(), _weights(again).values()))
    calls = []
    stats = _run(_spec(calls=calls), tmp_path / "m.pt", retrain=True)
    assert not stats["cached"] and len(calls) == 12


def test_a_torn_cache_file_is_fine_tuned_again(tmp_path):
    path = tmp_path / "m.pt"
    _run(_spec(), path)
    path.write_bytes(path.read_bytes()[:40])  # a copy cut short
    calls = []
    stats = _run(_spec(calls=calls), path)
    assert not stats["cached"] and len(calls) == 12
    assert _run(_spec(), path)["cached"]


@pytest.mark.parametrize("stored", ["checkpoint", "model"])
def test_a_foreign_file_leaves_no_tensor_of_its_own_in_the_model(tmp_path, stored):
    """torch's load_state_dict copies the matching tensors before it raises on the missing ones: a checkpoint
    or cached model written for another model (here: one tensor of the right name, the rest missing) must not
    leave that tensor in the model it then fine-tunes from the start."""
    whole = _spec()
    _run(whole, tmp_path / "whole.pt")
    path = tmp_path / "foreign.pt"
    foreign = {"0.weight": torch.full((1, 3), 7.0)}
    if stored == "checkpoint":
        torch.save({"model": foreign, "optimizer": {}, "iteration": torch.tensor(5)}, path.with_suffix(".ckpt.pt"))
    else:
        torch.save(foreign, path)
        path.with_suffix(".json").write_text("{}")
    calls = []
    again = _spec(calls=calls)
    stats = _run(again, path)
    assert not stats["cached"] and stats["resumed_from"] == 0 and len(calls) == 12
    for key, value in _weights(whole).items():
        assert torch.equal(_weights(again)[key], value), key


def test_a_diverging_loss_stops_naming_the_iteration(tmp_path):
    with pytest.raises(HarnessError, match="loss became NaN at iteration 0; lower the learning rate"):
        _run(_spec(loss_scale=float("nan")), tmp_path / "m.pt")


def test_no_iterations_is_refused(tmp_path):
    with pytest.raises(HarnessError, match="iterations must be >= 1, got 0"):
        _run(_spec(iterations=0), tmp_path / "m.pt")


def test_the_batches_depend_only_on_the_seed_and_the_iteration(tmp_path):
    seen = []
    spec = _spec(iterations=3)
    original = spec.batch
    spec.batch = lambda i, rng: seen.append(rng.standard_normal()) or original(i, np.random.default_rng([3, i]))
    _run(spec, tmp_path / "m.pt")
    assert seen == [np.random.default_rng([3, i]).standard_normal() for i in range(3)]


def test_the_fine_tuned_model_is_initialised_from_the_seed_whatever_ran_before(tmp_path):
    from types import SimpleNamespace

    from harness.run import _finetune

    heads = []

    class Task:
        cfg, name, VERSION = None, "t", "1"

        def finetune(self, ctx):
            heads.append(nn.Linear(4, 2).weight.detach().clone())  # a new head, from the global stream
            return None

    model = SimpleNamespace(method=None, mean=(0.5,), std=(0.5,), viewer=SimpleNamespace(size=(8, 8)), key="k")
    config = {"train": {"amp": "off"}, "seed": 3, "task": {"name": "t"}, "cache_dir": str(tmp_path)}
    for before in (0, 1):  # e.g. a model trained in this process, or one read from the cache
        torch.manual_seed(before)
        torch.rand(before * 7 + 1)
        state = torch.get_rng_state()
        _finetune(Task(), model, config, None, None, torch.device("cpu"), False, None)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is left as it was
    assert torch.equal(heads[0], heads[1])
