"""No result lost, no file outside its folder, every bad input a clear answer (one test per behaviour)."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.errors import ConfigError
from harness.results import iter_results, read_result, result_path, write_result
from tests.test_sweep import TINY, _harness, fake_dist

TINY_RUN = [o for o in TINY]


def _compose(tmp_path, *overrides):
    from harness.sweep import compose

    episodic = not any(o.startswith("task=") and o != "task=few_shot" for o in overrides)
    tiny = [o for o in TINY if episodic or not o.startswith("task.")]
    return compose([*overrides, *tiny, f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"])


def _run(tmp_path, *overrides, **kw):
    import harness.run
    from harness.run import run_cell

    harness.run._MODELS.clear()  # every test trains into its own cache_dir
    return run_cell(_compose(tmp_path, *overrides), progress=False, **kw)


# -- results are never lost, never overwritten, never written outside -------------------------------------
def test_config_variants_keep_their_own_result_resume_per_variant_and_get_named_rows(tmp_path):
    from harness import leaderboard

    a = _run(tmp_path, "method=poincare_mlr", "method.c=0.5")
    b = _run(tmp_path, "method=poincare_mlr", "method.c=1.0")
    assert a["status"] == b["status"] == "ok"
    paths = sorted(p for p, _ in iter_results(tmp_path / "res"))
    assert len(paths) == 2 and paths[0].parent != paths[1].parent
    assert a["variant"]["diff"]["method.c"] == 0.5 and "method.c" not in b["variant"]["diff"]
    again = _run(tmp_path, "method=poincare_mlr", "method.c=0.5")
    assert again.get("_resumed") and again["timings"] == a["timings"]
    board = leaderboard.render_task("few_shot", [r for _, r in iter_results(tmp_path / "res")])
    assert "| poincare_mlr (c=0.5) |" in board and "| poincare_mlr         |" in board  # the default: its name alone


def test_a_result_from_another_config_or_a_torn_file_is_run_again_not_kept(tmp_path):
    from harness.results import config_hash, result_path
    from harness.run import cell_of

    first = _run(tmp_path, "method=poincare_mlr")
    path = result_path(tmp_path / "res", cell_of(_compose(tmp_path, "method=poincare_mlr")))
    assert first["status"] == "ok" and path.exists()
    stored = json.loads(path.read_text())
    stored["config_hash"] = "0" * len(stored["config_hash"])  # written under other defaults (an older version)
    path.write_text(json.dumps(stored))
    again = _run(tmp_path, "method=poincare_mlr")
    assert again["status"] == "ok" and not again.get("_resumed")
    assert json.loads(path.read_text())["config_hash"] == config_hash(_compose(tmp_path, "method=poincare_mlr"))
    path.write_text(path.read_text()[:50])  # a copy cut short
    third = _run(tmp_path, "method=poincare_mlr")
    assert third["status"] == "ok" and not third.get("_resumed")
    assert _run(tmp_path, "method=poincare_mlr").get("_resumed")  # and now it is kept


def test_a_method_whose_annotations_the_data_lacks_is_skipped_with_the_fix(tmp_path):
    result = _run(tmp_path, "method=hcl")  # HCL needs boxes; the hierarchy has none
    assert result["status"] == "skipped"
    assert result["reason"] == ("the method needs annotation(s) ['boxes'], which dataset 'synthetic_hierarchy' "
                                "(its training data) does not have; pre-train it on a dataset that has them with "
                                "train_dataset=NAME (for boxes: the embedded scenes, or coco, voc2007)")
    assert not list((tmp_path / "cache").rglob("models/*.pt"))  # nothing was trained


def test_the_default_config_keeps_the_plain_layout():
    from harness.run import cell_of
    from harness.sweep import compose

    cell = cell_of(compose([]))
    assert cell["variant"] == "" and cell["train_dataset"] is None


@pytest.mark.parametrize("override", ["method.name=../../x", "task.name=/abs/path", "dataset.name=.hidden"])
def test_names_cannot_escape_the_results_folder(override):
    from harness.sweep import compose

    with pytest.raises(ConfigError, match="not allowed"):
        compose([override])


def test_a_plugin_registering_an_unsafe_name_is_a_warning_and_left_out(tmp_path, monkeypatch):
    from harness.registry import PluginWarning, Registry

    fake_dist(tmp_path, "escape_dist", "escape_mod",
              "from harness import PluginSpec, hookimpl\n\n@hookimpl\ndef harness_methods():\n"
              "    return [PluginSpec('../escaped', 'escape_mod:X', 'bad')]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    with pytest.warns(PluginWarning, match="escape_dist.*'../escaped' is not allowed"):
        names = reg.specs("method")
    assert "../escaped" not in names and "euclidean_ce" in names


def test_nonfinite_config_values_are_rejected_before_training(tmp_path):
    with pytest.raises(ConfigError, match="train.lr must be a finite number"):
        _compose(tmp_path, "train.lr=nan")


def test_a_nonfinite_metric_is_stored_as_null_and_the_cell_is_ok(tmp_path, monkeypatch):
    from harness.task import MetricValue
    from harness.tasks.few_shot import FewShot

    monkeypatch.setattr(FewShot, "evaluate", lambda self, ctx: {"acc_1shot": MetricValue(float("nan"), True)})
    result = _run(tmp_path, "task=few_shot")
    assert result["status"] == "ok"
    stored = read_result(next(p for p, _ in iter_results(tmp_path / "res")))
    assert stored["metrics"]["acc_1shot"] == {"value": None, "higher_is_better": True,
                                              "reason": "the computation gave a non-finite value (nan)"}


def test_bad_result_files_never_break_a_leaderboard(tmp_path):
    from harness import leaderboard
    from tests.test_leaderboard import RESULTS, _write

    res = _write(tmp_path, RESULTS[:2])
    folder = next(p for p, _ in iter_results(res)).parent
    good = json.loads(next(folder.glob("seed0.json")).read_text())
    bad = {
        "seed10.json": b"\xff\xfe\x00 not utf-8",
        "seed11.json": json.dumps({**good, "metrics": {"acc": {"value": "0.9", "higher_is_better": True}}}).encode(),
        "seed12.json": json.dumps({**good, "metrics": [1, 2]}).encode(),
        "seed13.json": json.dumps({**good, "config": "x"}).encode(),
        "seed14.json": json.dumps({**good, "metrics": {"acc": {"value": True, "higher_is_better": True}}}).encode(),
        "seed15.json": json.dumps({**good, "metrics": {"acc": {"value": float("nan"),
                                                              "higher_is_better": True}}}).encode(),
        "seed16.json": json.dumps({**good, "metrics": {"acc": {"value": float("inf"),
                                                              "higher_is_better": True}}}).encode(),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rendered = leaderboard.render_all(res)
    warned = " ".join(str(w.message) for w in caught)
    assert all(name in warned for name in bad), warned
    assert "| 0.600 ± 1.271 " in rendered["t.md"]  # the two good files still render


@pytest.mark.parametrize("corruption", ["truncated", "foreign", "record"])
def test_a_corrupt_model_cache_is_trained_again_from_scratch(tmp_path, capsys, corruption):
    import harness.run
    from harness.data import save_tensors

    first = _run(tmp_path, "task=few_shot")
    model_file = tmp_path / "cache" / "models" / f"{first['model_key']}.pt"
    if corruption == "truncated":
        model_file.write_bytes(model_file.read_bytes()[:100])
    elif corruption == "foreign":  # matching keys (copied before load_state_dict raises) plus one it lacks
        state = torch.load(model_file, weights_only=True)
        save_tensors({**{k: v * 2 if v.is_floating_point() else v for k, v in state.items()},
                      "bogus": torch.zeros(1)}, model_file)
    else:  # the weights are fine, their record is torn
        model_file.with_suffix(".json").write_text('{"steps": ')
    harness.run._MODELS.clear()
    capsys.readouterr()
    again = _run(tmp_path, "task=few_shot", "force=true")
    assert again["status"] == "ok" and not again["timings"]["train_cached"]
    assert "could not be read" in capsys.readouterr().err
    # deterministic retraining from the fresh initialisation, not from the weights the failed read left
    assert again["metrics"] == first["metrics"]


def test_force_reuses_the_model_and_retrain_trains_again(tmp_path):
    import harness.run

    first = _run(tmp_path, "task=few_shot")
    harness.run._MODELS.clear()
    assert _run(tmp_path, "task=few_shot", "force=true")["timings"]["train_cached"]
    assert not _run(tmp_path, "task=few_shot", "retrain=true")["timings"]["train_cached"]
    assert first["status"] == "ok"


def test_a_fresh_clone_sweep_runs_and_leaves_the_committed_files_alone(tmp_path):
    repo = tmp_path / "clone"
    (repo / "results" / "few_shot").mkdir(parents=True)
    (repo / "results" / "few_shot" / "seed0.json").write_text("{}")  # stands for the committed results
    (repo / "leaderboards").mkdir()
    (repo / "leaderboards" / "few_shot.md").write_text("committed\n")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    args = ["sweep", "grid=smoke", "task=few_shot", "method=euclidean_ce", *TINY]
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=repo,
                          env={**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "ETA" in proc.stdout and " ok " in proc.stdout
    assert {p: p.read_bytes() for p in before} == before  # committed files untouched
    assert len(iter_results(repo / "runs")) == 1
    assert (repo / "runs" / "leaderboards" / "few_shot.md").exists()


def test_a_cell_claimed_by_a_live_process_is_skipped_and_a_stale_claim_is_taken_over(tmp_path):
    from harness.claims import Claim
    from harness.results import result_path
    from harness.run import cell_of, run_cell

    config = _compose(tmp_path, "task=few_shot")
    path = result_path(config["results_dir"], cell_of(config))
    live = Claim(path.with_suffix(".claim"))
    assert live.acquire()  # this process is alive: the claim holds
    result = run_cell(config, progress=False)
    assert result["status"] == "claimed" and not path.exists()
    assert result["reason"].startswith(f"running elsewhere: host {os.uname().nodename}, pid {os.getpid()}, since ")
    assert "token" not in result["reason"]
    live.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.with_suffix(".claim").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout),
                                                      "since": 0}))
    assert run_cell(config, progress=False)["status"] == "ok"
    assert not path.with_suffix(".claim").exists()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_grid_left_to_another_process_exits_3_not_0(tmp_path, capsys, command):
    """A script `harness sweep … && next` must not go on while a claimed cell is still running elsewhere."""
    from harness.claims import Claim
    from harness.results import result_path
    from harness.run import cell_of

    args = ["task=few_shot", *TINY, f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"]
    config = _compose(tmp_path, "task=few_shot")
    live = Claim(result_path(config["results_dir"], cell_of(config)).with_suffix(".claim"))
    assert live.acquire()
    try:
        cells = ["grid=smoke", "method=euclidean_ce", "seed=0"] if command == "sweep" else []
        assert main([command, *cells, *args]) == 3
    finally:
        live.release()
    err = capsys.readouterr().err
    assert f"harness {command}: 1 cell(s) are being run by another process (claimed)" in err
    assert main([command, *cells, *args]) == 0  # released: this time it runs


def test_launcher_options_are_checked_before_anything_starts(tmp_path, capsys):
    common = ["grid=smoke", f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"]
    for extra, message in [
        (["launcher=gpu_pool", "hydra.launcher.n_worker=2"],
         "launcher=gpu_pool has no option 'n_worker' (hydra.launcher.n_worker=2); did you mean 'n_workers'?"),
        (["launcher=gpu_pool", "+hydra.launcher.n_worker=2"], "did you mean 'n_workers'?"),  # Hydra's own advice
        (["hydra.launcher.n_workers=2"], "hydra launcher options apply to a launcher chosen on the command line"),
        (["launcher=gpu_pool", "hydra.launcher.gpus=abc"], "hydra.launcher.gpus is a list of GPU numbers"),
    ]:
        assert main(["sweep", *common, *extra]) == 2, extra
        assert message.replace("hydra launcher", "hydra.launcher") in capsys.readouterr().err
    assert not (tmp_path / "res").exists()  # nothing ran


def test_gpu_pool_refuses_gpus_that_are_not_there(monkeypatch):
    from harness.errors import ConfigError
    from hydra_plugins.hyperbolic_harness.launchers import gpu_slots

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert gpu_slots(None, 4) == ([0, 1], True) and gpu_slots([1], 4) == ([1], True)
    with pytest.raises(ConfigError, match=r"gpus=\[5\] names GPU\(s\) \[5\], but torch sees 2 GPU\(s\) here"):
        gpu_slots([5], 4)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert gpu_slots(None, 3) == ([None] * 3, False) and gpu_slots([], 3) == ([None] * 3, False)
    with pytest.raises(ConfigError, match=r"\(no CUDA device\)"):
        gpu_slots([0], 3)


def test_a_cell_finished_elsewhere_while_we_claimed_it_is_not_run_again(tmp_path, monkeypatch):
    import harness.run
    from harness.run import run_cell

    config = _compose(tmp_path, "task=few_shot")
    first = run_cell(config, progress=False)
    real, calls = harness.run.finished, []

    def finished(path, cfg):  # the first look comes before the other process wrote its result
        calls.append(path)
        return None if len(calls) == 1 else real(path, cfg)

    def boom(*_a, **_k):
        raise AssertionError("ran a cell that was finished")

    monkeypatch.setattr(harness.run, "finished", finished)
    monkeypatch.setattr(harness.run, "_run_claimed", boom)
    again = run_cell(config, progress=False)
    assert again["_resumed"] and again["metrics"] == first["metrics"] and len(calls) == 2


def test_a_checkpoint_replaced_at_the_same_path_runs_its_cells_again(tmp_path):
    import dataclasses

    import torch

    import harness.run
    from harness.backbones import build_backbone
    from harness.config import BackboneConfig
    from harness.run import run_cell

    path = tmp_path / "weights.pt"

    def save(seed):
        torch.manual_seed(seed)
        model, _ = build_backbone(dataclasses.asdict(BackboneConfig(name="conv4_32")), in_chans=3, img_size=(32, 32))
        torch.save(model.state_dict(), path)

    save(0)
    config = _compose(tmp_path, "task=retrieval", "method=random_init", f"backbone.pretrained={path}")
    first = run_cell(config, progress=False)
    assert first["status"] == "ok" and len(first["protocol"]["weights_sha256"]) == 64
    assert run_cell(config, progress=False).get("_resumed")  # the same file: finished
    save(1)  # other weights, same path
    harness.run._MODELS.clear()
    again = run_cell(config, progress=False)
    assert not again.get("_resumed") and again["model_key"] != first["model_key"]
    assert again["protocol"]["weights_sha256"] != first["protocol"]["weights_sha256"]
    assert again["metrics"] != first["metrics"]


def test_a_classifier_trained_on_another_dataset_is_not_read_as_this_ones(tmp_path):
    from harness.run import run_cell

    # the same generator with another seed: 6 training classes both, but other images for each id
    other = ("train_dataset={name: synthetic_hierarchy, seed: 1, n_coarse: 3, fine_per_coarse: 4, "
             "novel_per_coarse: 2, images_per_class: 24, image_size: 16}")
    own = run_cell(_compose(tmp_path, "task=hierarchy", "method=euclidean_ce"), progress=False)
    assert own["details"]["top1/predictor"].startswith("the method's classifier")
    moved = run_cell(_compose(tmp_path, "task=hierarchy", "method=euclidean_ce", other), progress=False)
    assert moved["status"] == "ok"
    assert moved["details"]["top1/predictor"].startswith("nearest class prototype")


def test_a_train_dataset_option_alone_says_how_to_give_it(tmp_path):
    with pytest.raises(ConfigError, match=r"train_dataset takes its dataset's options in one mapping"):
        _compose(tmp_path, "train_dataset=scenes", "train_dataset.n_images=800")


# -- every bad input gets a clear answer before work is spent ---------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["task.n_way=1"], "few_shot: n_way must be at least 2, got 1"),
    (["task=fine_from_coarse", "task.shots=[]"], "fine_from_coarse: shots must be a non-empty list"),
    (["task=retrieval", "task.ks=[3]"], "retrieval: ks [3] are not supported; choose from 1, 2, 4, 8, 16, 32"),
    (["task=retrieval", "task.kmeans_iters=0"], "retrieval: kmeans_iters must be >= 1 (the NMI's k-means), got 0"),
    (["task=ood", "task.scores=[msp,energie]"], "ood: unknown or empty scores ['energie']"),
    (["task=ood", "task.far=[glyphz]"], "unknown dataset 'glyphz'; did you mean 'glyphs'?"),
    (["task=delta", "task.max_points=3"], "delta: max_points must be at least 4, got 3"),
    (["task=instance_selection", "task.fractions=[0.5,0.5]"], "fractions must be distinct numbers in (0, 1]"),
    (["task=detection", "task.detector=yolo"], "task.detector must be one of"),
    # dataset values: the shared fields (harness.config.check_dataset_config), then the dataset's own
    (["dataset.n_coarse=-2"], "synthetic_hierarchy: n_coarse and images_per_class must be >= 1, got -2"),
    (["dataset.novel_per_coarse=8"], "synthetic_hierarchy needs 0 < novel_per_coarse < fine_per_coarse"),
    (["dataset.test_fraction=1.5"], "synthetic_hierarchy: test_fraction must be in [0, 1), got 1.5"),
    (["dataset=glyphs", "dataset.n_scripts=99"], "glyphs: n_scripts must be in 1..19, got 99"),
    (["dataset=digits", "dataset.image_size=[3]"], "digits: image_size must be an int or [height, width]"),
    (["dataset=digits", "dataset.novel_classes=[1,1]"], "digits: novel_classes must be distinct class ids"),
    (["dataset=digits", "dataset.novel_classes=[3,10]"], "digits: novel_classes [10] out of range: classes are 0..9"),
    (["dataset=digits", "dataset.novel_classes=[0,1,2,3,4,5,6,7,8,9]"], "digits: novel_classes may not hold every"),
    (["dataset=cub200", "dataset.protocol=retreival"], "cub200: protocol must be one of"),
    (["dataset=coco", "dataset.train_set=", "dataset.test_set="], "coco: train_set and test_set are both empty"),
    (["dataset=reid_synthetic", "task=reid", "dataset.min_cameras=1"], "reid_synthetic: need 2 <= min_cameras"),
    (["train_dataset={name:scenes,n_images:0}"], "scenes: n_images must be >= 1, got 0"),
    (["dataset=synthetic_tree", "dataset.image_size=4"], "synthetic_tree: images_per_class must be >= 1 and "
                                                         "image_size >= 8"),
])
def test_bad_task_and_dataset_values_are_refused_before_any_work(overrides, message, capsys, tmp_path):
    """A task's and a dataset's Config.validate run with the method's, before the data is loaded or
    generated: a sweep with a bad value stops at once instead of recording every cell as failed."""
    assert main(["sweep", *overrides, "seed=0,1", f"results_dir={tmp_path / 'res'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("seed*.json"))


@pytest.mark.parametrize("override, message", [
    ("seed=abc", "seed: Value 'abc' of type 'str' could not be converted to Integer"),
    ("device=foo", "device must be auto, cpu, cuda or cuda:N; got 'foo'"),
    ("train.epochs=-1", "train.epochs must be >= 0, got -1 (0 evaluates the method's network at its initialisation)"),
    ("train.batch_size=-1", "train.batch_size must be at least 1, got -1"),
    ("train.batch_size=1", "train.batch_size must be at least 2: a batch of one image breaks BatchNorm"),
    ("method.dim=abc", "method.dim: Value 'abc' of type 'str' could not be converted to Integer"),
    ("train.epochs=x", "train.epochs: Value 'x' of type 'str' could not be converted to Integer"),
    ("method.no_such_key=3", "Could not override 'method.no_such_key'"),
    ("seed=-1", "seed must be an integer >= 0, got -1"),
    ("method.dim=-1", "euclidean_ce: dim must be >= 0 (0 keeps the backbone features), got -1"),
    ("method.label_smoothing=1.5", "euclidean_ce: label_smoothing must be in [0, 1), got 1.5"),
    ("launcher=slurm", "launcher=slurm applies to `harness sweep`; `harness run` runs its one cell in this process"),
    ("backbone.kwargs.bogus=1", "backbone.kwargs {'bogus': 1} are not all accepted by timm's conv4_32: "
                                "Conv4.__init__() got an unexpected keyword argument 'bogus'"),
    ("backbone.img_size=[0,0]", "backbone.img_size must be positive, got [0, 0]"),
    ("backbone.img_size=[32]", "backbone.img_size must be an int or [height, width], got [32]"),
    ("train.warmup_epochs=16", "train.warmup_epochs (16.0) must be less than train.epochs (16)"),
    ("backbone.pretrained=imagenet_ofline", "is neither a weight source (checkpoint, imagenet_offline) nor a "
                                           "checkpoint file (did you mean 'imagenet_offline'?)"),
    ("backbone.pretrained=/no/such/weights.pth", "backbone.pretrained=/no/such/weights.pth is neither a weight"),
    ("backbone.small_input_stem=maybe", "backbone.small_input_stem must be auto, true or false, got 'maybe'"),
    ("train_dataset=[scenes]", "train_dataset takes a dataset name or a mapping with its name, got ['scenes']"),
    ("train_dataset=5", "train_dataset takes a dataset name or a mapping with its name, got 5"),
    ("train_dataset={n_images: 5}", "train_dataset {'n_images': 5} names no dataset: give its name: key"),
])
def test_bad_values_are_one_line_errors_before_any_work(override, message, capsys, tmp_path):
    assert main(["run", override, f"results_dir={tmp_path / 'res'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("seed*.json"))


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("argv, message", [
    (["foo"], "cannot read the override 'foo': Error parsing override 'foo' missing EQUAL at '<EOF>'"),
    (["method=[a"], "cannot read the override 'method=[a': no viable alternative at input '[a'"),
    (["train.augment=crp"], "train.augment: unknown augmentation 'crp'; did you mean 'crop'?"),
    (["method=hcm", "method.views=flp"], "hcm: views: unknown augmentation 'flp'; did you mean 'flip'?"),
])
def test_unreadable_overrides_are_one_line_errors(command, argv, message, capsys, tmp_path):
    assert main([command, *argv, f"results_dir={tmp_path / 'res'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("key", ["results_dir", "cache_dir"])
def test_an_empty_results_or_cache_dir_is_refused_not_read_as_the_current_folder(key, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", f"{key}="]) == 2
    assert f"{key} is empty; give a folder ({key}=PATH)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("job", [[], ["job"]])
def test_run_cfg_prints_every_key_of_the_cell_and_runs_nothing(job, capsys, tmp_path):
    """The hint of an unknown key points here: `harness run --cfg` (Hydra's `--cfg job`)."""
    import yaml

    assert main(["run", "method=hack", "method.dim=3", "--cfg", *job, f"results_dir={tmp_path / 'res'}"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["method"]["dim"] == 3 and config["method"]["k"] == 1.55  # set, and a default
    assert config["dataset"]["n_coarse"] == 12 and config["train"]["epochs"] == 16
    assert config["results_dir"] == str(tmp_path / "res") and not (tmp_path / "res").exists()
    assert main(["run", "method.dimm=3", "--cfg"]) == 2
    assert "`harness run --cfg` prints every key" in capsys.readouterr().err
    assert main(["sweep", "--cfg"]) == 2
    assert "--cfg prints one cell's config: use `harness run KEY=VALUE ... --cfg`" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["backbone.kwargs={drop_rate: 0.1}", "backbone.kwargs.drop_rate=0.1"])
def test_backbone_kwargs_are_set_without_hydras_plus_syntax(override):
    """backbone.kwargs is a free-form mapping: Hydra's struct mode refused a new key in it
    ("Could not override 'backbone.kwargs'") unless written as ++backbone.kwargs."""
    from harness.sweep import compose

    assert compose(["backbone=resnet18", override])["backbone"]["kwargs"] == {"drop_rate": 0.1}


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_help_describes_the_overrides_instead_of_parsing_them(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: harness {command} [KEY=VALUE ...]") and "method.KEY=VALUE" in out
    assert ("grid=default" in out) == (command == "sweep")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main(["run", "device=cuda"]) == 2
    assert "no CUDA device is available; use device=cpu or auto" in capsys.readouterr().err


def test_an_unwritable_results_dir_is_found_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["run", *TINY, f"results_dir={blocker / 'res'}", f"cache_dir={tmp_path / 'cache'}"]) == 2
    assert f"results_dir '{blocker / 'res'}' is not writable" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "models").exists()  # nothing was trained


def test_a_run_on_a_dataset_whose_files_are_missing_is_refused_with_where_they_go(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "no-data"))
    assert main(["run", "dataset=mnist", f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'c'}"]) == 2
    err = capsys.readouterr().err
    assert "this run cannot start: 1 problem(s) with what it needs (nothing ran)" in err
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "no-data") in err and "Traceback" not in err
    assert not list((tmp_path / "res").rglob("seed*.json"))


def test_images_too_small_for_a_backbone_are_found_before_any_cell(tmp_path, capsys):
    """A sweep whose ViT cells get 8-px images stops before its first cell (the conv4_32 cells could
    run) and says how to resize; before, every ViT cell failed at its model build with torch's text."""
    args = ["sweep", "method=random_init", "task=few_shot", "dataset=synthetic_hierarchy", "dataset.image_size=8",
            "backbone=vit_tiny_patch16_224,conv4_32", "seed=0", f"results_dir={tmp_path / 'res'}",
            f"cache_dir={tmp_path / 'c'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "this grid cannot start: 2 problem(s) with what it needs (nothing ran)" in err
    assert "dataset 'synthetic_hierarchy': backbone 'vit_tiny_patch16_224' cannot take 3-channel 8×8 images" in err
    assert "'conv4_32' cannot take 3-channel 8×8" in err and "backbone.img_size=[H, W]" in err
    assert "Traceback" not in err and not list((tmp_path / "res").rglob("seed*.json"))


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_an_unwritable_cache_dir_is_found_before_training(command, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cells = ["seed=0,1"] if command == "sweep" else TINY  # the sweep: the default grid
    assert main([command, *cells, f"results_dir={tmp_path / 'res'}", f"cache_dir={blocker / 'cache'}"]) == 2
    assert f"cache_dir '{blocker / 'cache'}' is not writable" in capsys.readouterr().err
    assert not list((tmp_path / "res").rglob("seed*.json"))


def test_a_grid_above_the_limit_asks_for_yes(tmp_path, capsys):
    grid = ["sweep", "grid=smoke", "task=few_shot", "method=euclidean_ce", "seed=range(0,10001)"]
    assert main(grid) == 2
    assert "this grid has 10,001 cells before its exclude rules (more than 10,000); add --yes or allow_large_grid=true" \
        in capsys.readouterr().err
    blocker = tmp_path / "a_file"  # stops the sweep at the next check, before any cell runs
    blocker.write_text("")
    for spelling in ("True",):  # as Hydra reads the value (the check matched the text "true" only)
        assert main([*grid, f"allow_large_grid={spelling}", f"cache_dir={blocker / 'c'}"]) == 2
        err = capsys.readouterr().err
        assert "is not writable" in err and "this grid has" not in err


def test_leaderboard_on_a_missing_or_empty_folder_says_so(tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", str(tmp_path / "empty")]) == 2
    assert "holds no result files" in capsys.readouterr().err
    assert main(["leaderboard", str(tmp_path / "nowhere"), "--check"]) == 2


def test_check_fails_on_a_leaderboard_no_result_backs(tmp_path, capsys):
    from tests.test_leaderboard import RESULTS, _write

    res = _write(tmp_path, RESULTS)
    out = tmp_path / "boards"
    assert main(["leaderboard", str(res), "--out", str(out)]) == 0
    # a generated board whose task's results were all deleted; a file of the user's own beside them
    (out / "orphan.md").write_text((out / "t.md").read_text())
    (out / "notes.md").write_text("# my notes\n")
    assert main(["leaderboard", str(res), "--out", str(out), "--check"]) == 1
    assert "orphan.md (no result backs it; regenerating removes it)" in capsys.readouterr().err
    assert main(["leaderboard", str(res), "--out", str(out)]) == 0  # the command --check suggests clears it
    assert not (out / "orphan.md").exists() and (out / "notes.md").read_text() == "# my notes\n"
    assert main(["leaderboard", str(res), "--out", str(out), "--check"]) == 0


def test_readme_without_markers_is_an_error_before_anything_is_written(tmp_path, capsys):
    from tests.test_leaderboard import RESULTS, _write

    res = _write(tmp_path, RESULTS)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main(["leaderboard", str(res), "--out", str(tmp_path / "boards"), "--readme", str(readme)]) == 2
    assert "<!-- leaderboards:start" in capsys.readouterr().err
    assert not (tmp_path / "boards").exists() and readme.read_text() == "# no markers\n"


@pytest.mark.parametrize("exc", ["SystemExit(3)", "KeyboardInterruptLike()"])
def test_a_plugin_raising_a_base_exception_at_import_is_a_broken_plugin(tmp_path, monkeypatch, exc):
    from harness.registry import PluginWarning, Registry

    fake_dist(tmp_path, "exit_dist", "exit_mod",
              f"class KeyboardInterruptLike(BaseException):\n    pass\n\nraise {exc}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning, match="exit_dist"):
        reg = Registry()
    assert "euclidean_ce" in reg.specs("method")


def test_nan_embeddings_fail_the_cell_with_the_row_count(tmp_path, monkeypatch):
    from harness.plugins.methods.euclidean_ce import EuclideanCE

    original = EuclideanCE.head

    def head(self, features):
        out = original(self, features)
        return out if self.training else torch.where(torch.arange(len(out))[:, None] % 4 == 0, float("nan"), out)

    monkeypatch.setattr(EuclideanCE, "head", head)
    for task in ("few_shot", "delta"):
        result = _run(tmp_path, f"task={task}")
        assert result["status"] == "failed", result["reason"]
        assert "embeddings contain NaN" in result["reason"] and "rows)" in result["reason"]


def test_euclidean_distances_of_a_nan_row_raise_instead_of_reading_zero():
    from harness.geometry import EuclideanGeometry, PoincareGeometry

    x = torch.randn(6, 3) * 0.1
    x[2, 1] = float("nan")
    for geometry in (EuclideanGeometry(), PoincareGeometry(1.0)):
        for call in (lambda: geometry.pairwise_dist(x), lambda: geometry.dist0(x), lambda: geometry.midpoint(x),
                     lambda: geometry.class_prototypes(x, torch.zeros(6, dtype=torch.long), 1)):
            with pytest.raises(ValueError, match=r"embeddings contain NaN or inf \(1 of 6 rows\)"):
                call()


def test_nan_loss_of_a_hyperbolic_method_fails_with_the_documented_message(tmp_path, monkeypatch):
    from harness.plugins.methods.poincare_mlr import PoincareMLR

    def poison(self, state):
        with torch.no_grad():
            self.proj.weight.fill_(float("nan"))

    monkeypatch.setattr(PoincareMLR, "after_step", poison)
    result = _run(tmp_path, "method=poincare_mlr", "task=few_shot")
    assert result["status"] == "failed"
    assert result["reason"].startswith("NonFiniteLoss: loss became NaN at step 1")


def test_run_exits_0_on_a_skipped_cell(tmp_path):
    proc = _harness(["run", "task=reid", *[o for o in TINY if not o.startswith("task.")],
                     f"results_dir={tmp_path / 'res'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped" in proc.stdout


def test_a_stale_traceback_is_removed_when_the_cell_later_succeeds(tmp_path, monkeypatch):
    from harness.plugins.methods.euclidean_ce import EuclideanCE

    with monkeypatch.context() as m:
        m.setattr(EuclideanCE, "loss", lambda self, e, b: (_ for _ in ()).throw(RuntimeError("boom")))
        failed = _run(tmp_path, "task=few_shot")
    traceback_file = tmp_path / "res" / failed["traceback_file"]  # relative to the results folder
    assert failed["status"] == "failed" and traceback_file.read_text().startswith("Traceback")
    ok = _run(tmp_path, "task=few_shot")
    assert ok["status"] == "ok" and not traceback_file.exists()


def test_the_provenance_names_command_line_axes(tmp_path):
    res = tmp_path / "res"
    proc = _harness(["sweep", "method=euclidean_ce,random_init", "task=few_shot", "backbone=conv4_32",
                     "dataset=synthetic_hierarchy", "seed=0", *TINY, f"results_dir={res}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    grids = {r["grid"] for _, r in iter_results(res)}
    # the method axis, and the single values that replace the default grid's axes (TINY's
    # train.epochs replaces the default grid's trained/at-initialisation axis)
    axes = "backbone/dataset/method/seed/task/train.epochs"
    assert grids == {f"default + command-line axes {axes}"}
    assert f"grid: default + command-line axes {axes}" in \
        (res / "leaderboards" / "few_shot.md").read_text()
    shutil.rmtree(res)


def test_save_embeddings_writes_each_split_and_its_distance_to_the_origin(tmp_path):
    import numpy as np

    from harness.geometry import dist0
    from harness.results import config_hash

    result = _run(tmp_path, "method=poincare_mlr", "task=retrieval", "save_embeddings=true")
    assert result["status"] == "ok", result["reason"]
    path = tmp_path / "res" / result["embeddings_file"]
    assert path.name == "seed0_embeddings.npz"
    with np.load(path) as saved:
        [split] = result["protocol"]["eval_sizes"]
        assert sorted(saved.files) == sorted([f"{split}_{k}" for k in ("dist0", "embeddings", "indices")]
                                             + ["geometry", "geometry_c"])
        assert (str(saved["geometry"]), float(saved["geometry_c"])) == ("poincare", result["geometry"]["c"])
        emb = saved[f"{split}_embeddings"]
        assert len(emb) == len(saved[f"{split}_indices"]) == result["protocol"]["eval_sizes"][split]
        np.testing.assert_allclose(saved[f"{split}_dist0"],
                                   dist0(torch.as_tensor(emb), c=result["geometry"]["c"]).numpy(), rtol=1e-5)
        assert len(np.unique(saved[f"{split}_indices"])) == len(emb)
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no leftovers
    # a run-local key: the same cell, variant and hash as without it
    assert config_hash(_compose(tmp_path, "method=poincare_mlr", "task=retrieval", "save_embeddings=true")) == \
        config_hash(_compose(tmp_path, "method=poincare_mlr", "task=retrieval"))


def test_save_embeddings_of_ood_holds_what_every_score_is_computed_from(tmp_path):
    """The far set, the prototypes' train split and the logits are in the .npz: the far AUROCs recomputed
    from the file alone (scikit-learn) are the result's."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from harness.geometry import PoincareGeometry
    from harness.registry import create

    result = _run(tmp_path, "method=poincare_mlr", "task=ood", "task.far=[digits]", "task.max_far_images=40",
                  "save_embeddings=true")
    assert result["status"] == "ok", result["reason"]
    saved = np.load(tmp_path / "res" / result["embeddings_file"])
    assert {"train_indices", "train_embeddings", "far_digits_indices", "far_digits_embeddings", "id_logits",
            "near_logits", "far_digits_logits"} <= set(saved.files)
    assert len(saved["far_digits_embeddings"]) == len(saved["far_digits_indices"]) == 40
    geo = PoincareGeometry(c=result["geometry"]["c"])
    dataset = create("dataset", {"name": "synthetic_hierarchy", **{
        o.split("=")[0].removeprefix("dataset."): int(o.split("=")[1]) for o in TINY if o.startswith("dataset.")}})
    classes, labels = np.unique(dataset.annotations["label"][saved["train_indices"]], return_inverse=True)
    protos = geo.class_prototypes(torch.as_tensor(saved["train_embeddings"]), torch.as_tensor(labels), len(classes))

    def scores(emb, logits):
        emb = torch.as_tensor(emb)
        return {"dist0": geo.dist0(emb).numpy(), "msp": torch.softmax(torch.as_tensor(logits), -1).amax(-1).numpy(),
                "proto": -geo.pairwise_dist(emb, protos).amin(-1).numpy()}

    id_s = scores(saved["id_embeddings"], saved["id_logits"])
    far_s = scores(saved["far_digits_embeddings"], saved["far_digits_logits"])
    for score in ("dist0", "msp", "proto"):
        expected = roc_auc_score(np.r_[np.ones(len(id_s[score])), np.zeros(len(far_s[score]))],
                                 np.r_[id_s[score], far_s[score]])
        assert result["metrics"][f"auroc/{score}/digits"]["value"] == pytest.approx(expected, abs=1e-6), score


def test_the_task_class_convention_is_recorded_unless_the_evaluation_wrote_its_own(tmp_path, monkeypatch):
    from harness.tasks.retrieval import Retrieval

    result = _run(tmp_path, "task=retrieval")
    assert result["details"]["convention"] == Retrieval.CONVENTION
    original = Retrieval.evaluate

    def evaluate(self, ctx):
        ctx.details["convention"] = "this cell's own protocol text"
        return original(self, ctx)

    monkeypatch.setattr(Retrieval, "evaluate", evaluate)
    again = _run(tmp_path, "task=retrieval", "force=true")
    assert again["details"]["convention"] == "this cell's own protocol text"


def test_a_per_sample_loss_fails_the_cell_saying_to_return_a_scalar(tmp_path, monkeypatch):
    from harness.plugins.methods.euclidean_ce import EuclideanCE

    original = EuclideanCE.loss
    monkeypatch.setattr(EuclideanCE, "loss", lambda self, e, b: original(self, e, b).expand(len(e)))
    result = _run(tmp_path, "task=few_shot")
    assert result["status"] == "failed"
    assert "training_step returned shape (" in result["reason"] and "loss.mean()" in result["reason"]


def test_a_plugin_that_calls_sys_exit_fails_its_cell_not_the_sweep(tmp_path, monkeypatch):
    from harness.plugins.methods.euclidean_ce import EuclideanCE

    monkeypatch.setattr(EuclideanCE, "loss", lambda self, e, b: sys.exit(0))
    result = _run(tmp_path, "task=few_shot")
    assert result["status"] == "failed" and result["reason"].startswith("SystemExit(0): code in this cell called "
                                                                        "sys.exit()")


def test_a_cell_whose_process_died_twice_is_recorded_failed_and_the_grid_goes_on(tmp_path):
    """A dead process (out of memory, a segfault) leaves its claim; the re-run that takes it over counts the
    death, and at the second death in a row the cell is failed without running, so the grid can pass it."""
    import json
    import socket

    from harness.results import result_path
    from harness.run import cell_of, run_cell

    config = _compose(tmp_path, "task=few_shot")
    claim = result_path(config["results_dir"], cell_of(config)).with_suffix(".claim")
    claim.parent.mkdir(parents=True, exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"host": socket.gethostname(), "pid": int(dead.stdout), "job": "", "restart": 0, "since": 0.0,
              "token": "x", "deaths": 1}  # the first death was counted by the run it killed's successor
    claim.write_text(json.dumps(record))
    result = run_cell(config, progress=False)
    assert result["status"] == "failed" and "died 2 times in a row" in result["reason"]
    assert not claim.exists()  # released: the next re-run runs the cell again
    # a SLURM job's stale claim (a requeue after a preemption) is not a crash of the cell
    from harness.claims import _deaths_after

    assert _deaths_after(json.dumps({**record, "job": "77"}).encode()) == 0
    assert _deaths_after(json.dumps({**record, "deaths": 0}).encode()) == 1


@pytest.mark.parametrize("returned, message", [
    (0.5, "evaluate() returned float, not a dict"),
    ({}, "returned no metrics"),
    ({"acc": 0.5}, "values that are not MetricValue: {'acc': 'float'}"),
    ({"acc_1shot": "outside"}, "task 'few_shot': evaluate() metric 'acc_1shot': value 1.7 is outside its bounds [0, 1]"),
])
def test_a_task_returning_something_else_than_metric_values_fails_the_cell_clearly(tmp_path, monkeypatch,
                                                                                   returned, message):
    from harness.tasks.few_shot import FewShot

    if returned == {"acc_1shot": "outside"}:  # an accuracy of 1.7: a bug in the task, not a result
        returned = {"acc_1shot": FewShot(FewShot.Config()).metric("acc_1shot", 1.7)}
    monkeypatch.setattr(FewShot, "evaluate", lambda self, ctx: returned)
    result = _run(tmp_path, "task=few_shot")
    assert result["status"] == "failed" and message in result["reason"], result["reason"]


def test_a_metric_value_must_be_a_number_and_its_name_declared():
    from harness.task import MetricValue
    from harness.tasks.few_shot import FewShot

    with pytest.raises(TypeError, match="real number"):
        MetricValue("0.5", True)
    assert MetricValue(torch.tensor(0.25), True).value == 0.25
    with pytest.raises(KeyError, match="'other' is not in FewShot.METRICS"):
        FewShot(FewShot.Config()).metric("other", 0.5)


def test_dataset_images_are_checked_against_the_contract_on_every_load():
    import numpy as np

    from harness.data import DatasetInfo, ImageDataset

    class Tiny(ImageDataset):
        def __init__(self, images):
            super().__init__()
            self.images = images
            self.info = DatasetInfo(image_size=(4, 5), channels=3)

        def load_images(self, indices):
            return self.images[: len(indices)]

    ok = torch.zeros(3, 3, 4, 5, dtype=torch.uint8)
    assert torch.equal(Tiny(ok).load_images(np.arange(3)), ok)
    for images, message in ((ok.float() / 255, "torch.float32 images; it returns uint8"),
                            (ok.permute(0, 2, 3, 1), r"shape \(3, 4, 5, 3\) .* x.permute\(0, 3, 1, 2\)"),
                            (ok.numpy(), "returned ndarray"), (ok[:2], r"shape \(2, 3, 4, 5\) for 3 images")):
        with pytest.raises((TypeError, ValueError), match=message):
            Tiny(images).load_images(np.arange(3))


def test_an_unknown_grid_answers_did_you_mean(capsys):
    assert main(["sweep", "grid=quik"]) == 2
    err = capsys.readouterr().err
    assert "unknown grid 'quik'; did you mean 'quick'?" in err and "hack_prototypicality" in err


def test_a_far_ood_dataset_without_files_an_empty_or_an_unreadable_root_are_refused_before_work(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "no-data"))
    common = [f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'c'}"]
    # a far-OOD set named on the command line: refused, not silently dropped from an `ok` result
    assert main(["run", "task=ood", "task.far=[cub200]", *common]) == 2
    err = capsys.readouterr().err
    assert "this run cannot start" in err and "images.txt" in err and "Traceback" not in err
    cub = tmp_path / "cub"
    (cub / "images").mkdir(parents=True)
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"):
        (cub / name).write_text("")
    assert main(["run", "dataset=cub200", f"dataset.root={cub}", *common]) == 2  # index files that list nothing
    assert f"dataset 'cub200' under {cub} holds no images" in capsys.readouterr().err
    (cub / "images.txt").write_text("x 001.Bird/a.jpg\n")  # an id that is not a number
    import harness.run

    harness.run._DATASETS.clear()  # the empty dataset read above is kept in this process
    assert main(["run", "dataset=cub200", f"dataset.root={cub}", *common]) == 2
    err = capsys.readouterr().err
    assert f"dataset 'cub200' under {cub}: {cub / 'images.txt'} could not be read as a CUB index file" in err
    assert "ValueError: invalid literal" in err and "Traceback" not in err
    assert not list((tmp_path / "res").rglob("seed*.json"))


def test_a_dataset_whose_listed_images_are_missing_is_refused_before_training(tmp_path, capsys):
    from tests.test_datasets_real import _cub_tree

    root = _cub_tree(tmp_path)
    (root / "images" / "004.Bunting" / "b_6.jpg").unlink()
    assert main(["run", "dataset=cub200", f"dataset.root={root}", "dataset.image_size=16", "task=retrieval",
                 f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'c'}"]) == 2
    err = capsys.readouterr().err
    assert f"dataset 'cub200' under {root}:\n- 1 of the 6 image files it lists are missing" in err
    assert "Traceback" not in err and not (tmp_path / "c" / "models").exists()  # nothing was trained


def test_sweeps_with_no_cell_an_empty_axis_or_an_unwritable_leaderboard_are_errors(tmp_path, capsys):
    res = [f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'c'}"]
    # the default grid's exclude rules drop retrieval on the re-ID data: nothing would run
    assert main(["sweep", "method=euclidean_ce", "dataset=reid_synthetic", "task=retrieval", "seed=0", *res]) == 2
    assert ("the exclude rules of grid=default drop every cell of this sweep: e.g. the cell with "
            "dataset=reid_synthetic task=retrieval by the rule {'dataset': ['reid_synthetic'], 'task': ['!reid']}"
            in capsys.readouterr().err)
    # what HCL's skip reason advises (train_dataset=scenes), on a method the default grid pre-trains only as
    # hcl_colour: the rule is named before anything runs, and grid=smoke offered
    assert main(["sweep", "method=hcl", "train_dataset=scenes", "task=few_shot", "seed=0", *res]) == 2
    err = capsys.readouterr().err
    assert "e.g. the cell with method=hcl train_dataset=scenes by the rule {'train_dataset': ['scenes']" in err
    assert "(grid=smoke)" in err and not (tmp_path / "res").exists()
    assert main(["sweep", "method=euclidean_ce", "task=retrieval", "seed=range(0,0)", *res]) == 2
    assert "seed: the sweep lists no value for it" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["sweep", "grid=smoke", f"leaderboard_dir={blocker}", *res]) == 2
    assert f"leaderboard_dir '{blocker}' is not writable" in capsys.readouterr().err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("seed*.json"))


def test_leaderboard_and_report_refuse_a_file_as_folder_or_output(tmp_path, capsys):
    from tests.test_leaderboard import _r

    res = tmp_path / "res"
    write_result(result_path(res, _r("m", 0, 0.5, 1.0)["cell"]), _r("m", 0, 0.5, 1.0))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["leaderboard", str(blocker)]) == 2
    assert f"results folder '{blocker}' is a file" in capsys.readouterr().err
    torn = tmp_path / "torn" / "t" / "seed0.json"
    torn.parent.mkdir(parents=True)
    torn.write_text('{"status": ')
    with pytest.warns(UserWarning, match="seed0.json"):
        assert main(["leaderboard", str(tmp_path / "torn")]) == 2
    assert "holds no readable result file" in capsys.readouterr().err
    for command in ("leaderboard", "report"):
        assert main([command, str(res), "--out", str(blocker / "out")]) == 2
        err = capsys.readouterr().err
        assert "the output folder" in err and "is not writable" in err and "--out PATH" in err
        assert "Traceback" not in err



def test_the_slurm_launcher_without_slurm_on_the_path_says_where_to_start_the_sweep(tmp_path, capsys, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    assert main(["sweep", "grid=smoke", "launcher=slurm", f"results_dir={tmp_path / 'res'}"]) == 2
    err = capsys.readouterr().err
    assert "launcher=slurm submits with SLURM's sbatch and srun" in err and "login node" in err


def test_a_task_split_no_dataset_has_and_a_file_that_is_no_checkpoint_are_refused_before_any_work(tmp_path, capsys):
    res = [f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'c'}"]
    assert main(["run", *TINY, "task.split=novle", *res]) == 2
    assert ("task.split=novle: no dataset of this run has that split (the splits of synthetic_hierarchy: novel, "
            "test, train), so every few_shot cell would be skipped; did you mean task.split=novel?") in \
        capsys.readouterr().err
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "notes.pth").write_text("hello")
    assert main(["run", *TINY, f"backbone.pretrained={tmp_path / 'empty.pth'}", *res]) == 2
    assert "empty.pth is an empty file" in capsys.readouterr().err
    assert main(["run", *TINY, f"backbone.pretrained={tmp_path / 'notes.pth'}", *res]) == 2
    assert "notes.pth is not a PyTorch checkpoint (torch.save writes a zip archive" in capsys.readouterr().err
    # a named source without weights for this backbone (its loader's check, asked before any work)
    assert main(["run", *TINY, "backbone.pretrained=imagenet_offline", *res]) == 2
    assert ("pretrained source 'imagenet_offline' has weights for ['mobilenetv2_100', 'tf_efficientnet_lite0'], "
            "not 'conv4_32'") in capsys.readouterr().err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("seed*.json"))


def test_sweep_syntax_in_a_run_a_swept_folder_and_an_unquoted_path_say_what_to_write(tmp_path, capsys):
    assert main(["run", "method=euclidean_ce,poincare_mlr", f"results_dir={tmp_path}"]) == 2
    assert ("`harness run` runs one cell, and this lists several values (a sweep's axis): run them with "
            "`harness sweep method=euclidean_ce,poincare_mlr …`") in capsys.readouterr().err
    assert main(["sweep", "grid=smoke", f"results_dir={tmp_path}/a,{tmp_path}/b"]) == 2
    assert "results_dir is where the sweep writes, one folder, not an axis; a path holding a comma is quoted: " \
           f"\"results_dir='{tmp_path}/a,{tmp_path}/b'\"" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(["run", "dataset=cub200", "dataset.root=~/x"]) == 2
    assert "quote the value for Hydra, inside the shell's quotes: \"dataset.root='~/x'\"" in capsys.readouterr().err
    from harness.registry import get_registry
    from harness.sweep import _check_sweep_syntax

    with pytest.warns(UserWarning, match=r"grid=smoke: `harness run` takes the grid's settings for its one cell, not "
                                         r"its axes \(.*method.*\); `harness sweep grid=smoke` runs them"):
        _check_sweep_syntax(["grid=smoke"], get_registry().config_searchpath(), multirun=False)


def test_plots_asked_for_on_a_kept_cell_say_that_nothing_was_written(tmp_path):
    assert _run(tmp_path, "task=few_shot")["status"] == "ok"
    with pytest.warns(UserWarning, match=r"plots=true wrote nothing for cells kept from an earlier run .*force=true"):
        assert "figures" not in _run(tmp_path, "task=few_shot", "plots=true")


def test_a_misspelt_config_key_gets_did_you_mean(capsys):
    assert main(["run", "method=poincare_mlr", "method.dimm=3", "--cfg"]) == 2
    assert ("Could not override 'method.dimm'. (that key is not in the schema: did you mean 'method.dim'? "
            "`harness run --cfg` prints every key)") in capsys.readouterr().err
    assert main(["run", "train.epoch=3", "--cfg"]) == 2
    assert "did you mean 'train.epochs'?" in capsys.readouterr().err


def test_a_full_disk_when_the_sweep_writes_its_own_files_is_one_line(monkeypatch, capsys):
    import errno

    import harness.sweep

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/shared/res/.sweep/hydra/multirun.yaml")

    monkeypatch.setattr(harness.sweep, "launch", full)
    assert main(["sweep", "grid=smoke"]) == 2
    err = capsys.readouterr().err
    assert ("cannot write /shared/res/.sweep/hydra/multirun.yaml: No space left on device; free space there or "
            "choose another folder with results_dir=PATH") in err and "Traceback" not in err


def test_a_result_file_whose_cell_was_edited_is_not_kept(tmp_path):
    first = _run(tmp_path, "task=few_shot")
    path = next((tmp_path / "res").rglob("seed0.json"))
    record = json.loads(path.read_text())
    record["cell"]["method"] = "../../etc"
    path.write_text(json.dumps(record))
    again = _run(tmp_path, "task=few_shot")
    assert not again.get("_resumed") and again["cell"] == first["cell"]
    assert json.loads(path.read_text())["cell"]["method"] == first["cell"]["method"]


def test_a_bumped_method_or_task_version_runs_its_cells_again(tmp_path, monkeypatch):
    """The README's advice after changing a loss is to bump VERSION: the results computed before are not kept
    (they were, silently, and pooled with the new seeds into one row)."""
    from harness.plugins.methods.euclidean_ce import EuclideanCE
    from harness.tasks.few_shot import FewShot

    first = _run(tmp_path, "task=few_shot")
    assert first["protocol"]["method_version"] == EuclideanCE.VERSION
    assert first["protocol"]["task_version"] == FewShot.VERSION
    assert _run(tmp_path, "task=few_shot").get("_resumed")  # nothing changed: kept
    monkeypatch.setattr(EuclideanCE, "VERSION", EuclideanCE.VERSION + ".1")
    bumped = _run(tmp_path, "task=few_shot")
    assert not bumped.get("_resumed") and bumped["protocol"]["method_version"] == EuclideanCE.VERSION
    assert bumped["model_key"] != first["model_key"] and bumped["timings"]["train_cached"] is False
    monkeypatch.setattr(FewShot, "VERSION", FewShot.VERSION + ".1")
    assert not _run(tmp_path, "task=few_shot").get("_resumed")


def test_a_result_written_before_versions_were_recorded_counts_as_version_1(tmp_path, monkeypatch):
    """A result whose protocol records no VERSION may predate a bump: under a plugin at VERSION 1 it is kept,
    under one bumped since it runs again (it was kept forever, whatever the bump)."""
    import json

    from harness.plugins.methods.euclidean_ce import EuclideanCE

    monkeypatch.setattr(EuclideanCE, "VERSION", "1")
    _run(tmp_path, "task=few_shot")
    [path] = (tmp_path / "res").rglob("seed0.json")
    record = json.loads(path.read_text())
    del record["protocol"]["method_version"]
    path.write_text(json.dumps(record))
    assert _run(tmp_path, "task=few_shot").get("_resumed")
    path.write_text(json.dumps(record))  # the same file again, now under VERSION 2
    monkeypatch.setattr(EuclideanCE, "VERSION", "2")
    again = _run(tmp_path, "task=few_shot")
    assert not again.get("_resumed") and again["protocol"]["method_version"] == "2"


def test_the_leaderboard_leaves_out_a_seed_computed_under_another_version(tmp_path):
    import json
    import os
    import warnings

    from harness import leaderboard

    for seed in (0, 1):
        _run(tmp_path, "task=few_shot", f"seed={seed}")
    (old, new) = sorted((tmp_path / "res").rglob("seed*.json"))
    record = json.loads(old.read_text())
    record["protocol"]["method_version"] = "0"  # seed 0 ran before the method's VERSION was bumped
    old.write_text(json.dumps(record))
    os.utime(old, (1, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = leaderboard.current_results(tmp_path / "res")
    assert [r["cell"]["seed"] for r in kept] == [1]
    from harness.plugins.methods.euclidean_ce import EuclideanCE

    assert any(f"leaving out {old}: its method VERSION 0 ({EuclideanCE.VERSION} there) differs from {new.name}"
               in str(w.message) for w in caught)
    del record["protocol"]["method_version"]  # written before versions were recorded: VERSION 1
    old.write_text(json.dumps(record))
    os.utime(old, (1, 1))
    newer = json.loads(new.read_text())
    newer["protocol"]["method_version"] = "2"
    new.write_text(json.dumps(newer))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [r["cell"]["seed"] for r in leaderboard.current_results(tmp_path / "res")] == [1]
    assert any("its method VERSION 1 (2 there)" in str(w.message) for w in caught)


@pytest.mark.parametrize("metadata", ["null", "[1, 2]"])
def test_a_model_cache_entry_whose_metadata_is_no_record_is_trained_again_from_scratch(tmp_path, capsys, metadata):
    first = _run(tmp_path, "task=few_shot")
    (meta,) = (tmp_path / "cache" / "models").glob("*[0-9a-f].json")
    meta.write_text(metadata)
    capsys.readouterr()
    again = _run(tmp_path, "task=few_shot", "force=true")
    assert again["status"] == "ok", again.get("reason")
    assert again["timings"]["train_cached"] is False and again["metrics"] == first["metrics"]  # from fresh weights
    assert f"its metadata {meta.name} holds" in capsys.readouterr().err
    assert isinstance(json.loads(meta.read_text()), dict)


def test_a_dataset_cache_entry_with_other_contents_is_built_again(tmp_path, monkeypatch, capsys):
    from harness.data import cached_tensors

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    built = []

    def build():
        built.append(1)
        return {"images": torch.arange(6, dtype=torch.uint8)}

    path = tmp_path / "datasets" / "toy-abc.pt"
    path.parent.mkdir(parents=True)
    torch.save({"weights": torch.zeros(3)}, path)  # a valid tensor file, written for something else
    assert torch.equal(cached_tensors("datasets", "toy-abc", build)["images"], torch.arange(6, dtype=torch.uint8))
    assert "could not be read (ValueError: it was not written for this entry): building it again" in \
        capsys.readouterr().err
    assert list(cached_tensors("datasets", "toy-abc", build)) == ["images"] and built == [1]  # read back, as built
    path.rename(path.with_name("toy-xyz.pt"))  # an entry under another key's name is foreign too
    cached_tensors("datasets", "toy-xyz", build)
    assert built == [1, 1] and not list(path.parent.glob(".*.tmp"))


def test_retrain_trains_each_model_once_per_sweep(tmp_path):
    """retrain=true in a sweep: the second task's cell uses the model the first retrained (it trained the
    model again for every task cell); a later sweep, or harness run, retrains again."""
    first = _run(tmp_path, "task=few_shot", "retrain=true", "sweep_id=s1")
    second = _run(tmp_path, "task=retrieval", "retrain=true", "sweep_id=s1")
    assert first["timings"]["train_cached"] is False and second["timings"]["train_cached"] is True
    assert first["model_key"] == second["model_key"]
    import harness.run

    harness.run._MODELS.clear()  # another process of the same sweep reads the disk cache's record
    assert _run(tmp_path, "task=ood", "retrain=true", "sweep_id=s1")["timings"]["train_cached"] is True
    assert _run(tmp_path, "task=few_shot", "retrain=true", "sweep_id=s2")["timings"]["train_cached"] is False
    assert _run(tmp_path, "task=few_shot", "retrain=true")["timings"]["train_cached"] is False
