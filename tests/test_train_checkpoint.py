"""A method's training is checkpointed every ``train.checkpoint_every`` epochs beside the model cache; a
training killed after a checkpoint resumes there and ends with the weights, buffers and loss record
of an uninterrupted run, bit for bit on the CPU (random streams, optimiser moments, queues, HACK's
particles and HCM's non-persistent pseudo-labels included)."""

import json

import pytest
import torch

import harness.run
from harness.progress import Progress
from harness.run import run_cell
from harness.sweep import compose
from tests.test_sweep import TINY

CASES = {
    "euclidean_ce": [],  # Riemannian Adam, crop views
    "mocov2_colour": ["task=retrieval"],  # momentum encoder, key queue, two random views per image
    "hcm": ["task=retrieval", "method.recluster_every=2"],  # pseudo-labels kept across an epoch boundary
    "hack": ["task=retrieval", "method.pack_steps=5"],  # packed particles and assignment buffers, SGD
}


@pytest.fixture(autouse=True)
def _no_models_in_memory():
    harness.run._MODELS.clear()  # each run trains into its own cache_dir
    yield
    harness.run._MODELS.clear()


DATA = [k for k in TINY if not k.startswith("task.")]


def _config(tmp_path, tag, method, *extra):
    return compose([f"method={method}", *CASES[method], "seed=0", *DATA, "train.epochs=4", *extra,
                    f"results_dir={tmp_path / tag}", f"cache_dir={tmp_path / tag / 'cache'}"])


def _model(tmp_path, tag):
    (path,) = (tmp_path / tag / "cache" / "models").glob("*[0-9a-f].pt")
    return torch.load(path, map_location="cpu")


@pytest.mark.parametrize("method", sorted(CASES))
def test_a_killed_training_resumes_at_its_checkpoint_and_ends_bit_identical(method, tmp_path, monkeypatch, capsys):
    straight = run_cell(_config(tmp_path, "straight", method), progress=False)
    assert straight["status"] == "ok", straight.get("reason")
    assert not list((tmp_path / "straight" / "cache" / "models").glob("*.ckpt.pt"))  # removed once stored

    update = Progress.update
    killed = []

    def dies_in_epoch_3(self, n=1, **postfix):  # after a step of epoch 3, mid-epoch
        if postfix.get("epoch") == 3 and not killed:
            killed.append(1)
            raise KeyboardInterrupt("killed")
        return update(self, n, **postfix)

    monkeypatch.setattr(Progress, "update", dies_in_epoch_3)
    harness.run._MODELS.clear()
    with pytest.raises(KeyboardInterrupt):
        run_cell(_config(tmp_path, "killed", method), progress=False)
    (ckpt,) = (tmp_path / "killed" / "cache" / "models").glob("*.ckpt.pt")
    assert torch.load(ckpt, map_location="cpu")["epoch"] == 3
    monkeypatch.setattr(Progress, "update", update)
    resumed = run_cell(_config(tmp_path, "killed", method), progress=False)
    assert resumed["status"] == "ok", resumed.get("reason")
    assert "resumed from its checkpoint after epoch 3 of 4" in capsys.readouterr().err
    (meta,) = (tmp_path / "killed" / "cache" / "models").glob("*[0-9a-f].json")
    assert json.loads(meta.read_text())["resumed_from_epoch"] == 3
    assert resumed["training"]["epoch_loss"] == straight["training"]["epoch_loss"]
    assert resumed["training"]["steps"] == straight["training"]["steps"]
    assert resumed["metrics"] == straight["metrics"]
    a, b = _model(tmp_path, "straight"), _model(tmp_path, "killed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not list((tmp_path / "killed" / "cache" / "models").glob("*.ckpt.pt"))


def test_a_torn_checkpoint_is_ignored_and_checkpoint_every_0_writes_none(tmp_path, capsys):
    config = _config(tmp_path, "torn", "euclidean_ce")
    models = tmp_path / "torn" / "cache" / "models"
    models.mkdir(parents=True)
    first = run_cell(_config(tmp_path, "every0", "euclidean_ce", "train.checkpoint_every=0"), progress=False)
    # the same model key: checkpoint_every does not change what is trained
    (model_file,) = (tmp_path / "every0" / "cache" / "models").glob("*[0-9a-f].pt")
    (models / model_file.name).with_suffix(".ckpt.pt").write_bytes(b"torn")
    harness.run._MODELS.clear()
    capsys.readouterr()
    again = run_cell(config, progress=False)
    assert again["status"] == "ok" and again["training"]["epoch_loss"] == first["training"]["epoch_loss"]
    assert "could not be read (" in (err := capsys.readouterr().err) and "training starts from the first epoch" in err
    assert not list(models.glob("*.ckpt.pt"))


def test_a_checkpoint_written_for_another_version_of_the_method_is_ignored(tmp_path, monkeypatch, capsys):
    """A method edited without a VERSION bump leaves a checkpoint with other parameters: training starts over
    (as from a torn one), ending where an uninterrupted run ends, instead of failing the cell on every run."""
    straight = run_cell(_config(tmp_path, "straight", "euclidean_ce"), progress=False)
    update = Progress.update

    def dies_in_epoch_2(self, n=1, **postfix):
        if postfix.get("epoch") == 2:
            raise KeyboardInterrupt("killed")
        return update(self, n, **postfix)

    monkeypatch.setattr(Progress, "update", dies_in_epoch_2)
    harness.run._MODELS.clear()
    with pytest.raises(KeyboardInterrupt):
        run_cell(_config(tmp_path, "edited", "euclidean_ce"), progress=False)
    monkeypatch.setattr(Progress, "update", update)
    (ckpt,) = (tmp_path / "edited" / "cache" / "models").glob("*.ckpt.pt")
    state = torch.load(ckpt, map_location="cpu")
    dropped = sorted(state["tensors"])[0]
    del state["tensors"][dropped]
    torch.save(state, ckpt)
    harness.run._MODELS.clear()
    capsys.readouterr()
    again = run_cell(_config(tmp_path, "edited", "euclidean_ce"), progress=False)
    err = capsys.readouterr().err
    assert again["status"] == "ok", again.get("reason")
    assert f"was written for another version of the method (1 parameters or buffers differ, e.g. {dropped})" in err
    assert "training starts from the first epoch" in err and "resumed from" not in err
    assert again["training"]["epoch_loss"] == straight["training"]["epoch_loss"]
    assert again["metrics"] == straight["metrics"]
