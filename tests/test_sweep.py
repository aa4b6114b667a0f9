"""A real tiny sweep end to end: cells, results, resume after kill -9, failures, leaderboards."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from harness.results import iter_results

TINY = ["dataset.n_coarse=3", "dataset.fine_per_coarse=4", "dataset.novel_per_coarse=2",
        "dataset.images_per_class=24", "dataset.image_size=16", "train.epochs=1", "train.batch_size=32",
        "task.episodes=20", "task.n_query=5"]


def _harness(args, tmp_path, env_extra=None, **kw):
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, **kw)


def _statuses(results_dir):
    return sorted((r["cell"]["method"], r["cell"]["seed"], r["status"]) for _, r in iter_results(results_dir))


def test_sweep_runs_grid_writes_results_and_leaderboards_and_resumes(tmp_path):
    args = ["sweep", "grid=smoke", "seed=0,1", "task=few_shot", *TINY, f"results_dir={tmp_path / 'res'}",
            f"leaderboard_dir={tmp_path / 'boards'}"]
    proc = _harness(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "harness sweep: 4 cells" in proc.stdout
    assert proc.stdout.count("ETA") == 4
    assert _statuses(tmp_path / "res") == [("euclidean_ce", 0, "ok"), ("euclidean_ce", 1, "ok"),
                                           ("poincare_mlr", 0, "ok"), ("poincare_mlr", 1, "ok")]
    board = (tmp_path / "boards" / "few_shot.md").read_text()
    assert "| poincare_mlr" in board and "| euclidean_ce" in board
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("seed*.json")}
    again = _harness(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" kept ") == 4
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "res").rglob("seed*.json")} == mtimes


def method_plugin(name: str, summary: str, before_loss: str = "", imports: str = "") -> str:
    """Source of a plugin module ``{name}_mod`` with one method ``name``: a linear classifier on the
    backbone whose ``loss(emb, batch)`` first runs ``before_loss`` (code at the method body's indent)."""
    body = "\n".join(f"        {line}" for line in before_loss.strip().splitlines())
    cls = name.capitalize()
    return f"""{imports}
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from harness import PluginSpec, hookimpl
from harness.geometry import EuclideanGeometry
from harness.method import Method


class {cls}(Method):
    @dataclass
    class Config:
        name: str = "{name}"

    def __init__(self, cfg, backbone, info):
        super().__init__(cfg, backbone, info)
        self.geometry = EuclideanGeometry()
        self.fc = nn.Linear(info.feat_dim, info.num_classes)

    def loss(self, emb, batch):
{body}
        return F.cross_entropy(self.fc(emb), batch.labels)


@hookimpl
def harness_methods():
    return [PluginSpec("{name}", "{name}_mod:{cls}", {summary!r})]
"""


CRASHY = method_plugin("crashy", "raises in training", 'raise RuntimeError("boom")')


def fake_dist(root, dist, module, source):
    """A minimal installed distribution: a module plus a dist-info with a `harness` entry point."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{dist} = {module}\n")


def test_failing_cell_is_recorded_the_sweep_goes_on_and_exits_1(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    fake_dist(site, "crashy_dist", "crashy_mod", CRASHY)
    args = ["sweep", "grid=smoke", "task=few_shot", "method=crashy,euclidean_ce", *TINY,
            f"results_dir={tmp_path / 'res'}", "leaderboard_dir=null"]
    proc = _harness(args, tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert proc.returncode == 1, proc.stderr
    results = {r["cell"]["method"]: r for _, r in iter_results(tmp_path / "res")}
    assert results["euclidean_ce"]["status"] == "ok"
    assert results["crashy"]["status"] == "failed"
    assert results["crashy"]["reason"] == "RuntimeError: boom"
    assert (tmp_path / "res" / results["crashy"]["traceback_file"]).read_text().startswith("Traceback")
    assert "(1 failed, 1 ok)" in proc.stdout
    assert "1 cell(s) failed" in proc.stderr
    # kept, not retried: the grid is still incomplete, so it is counted and the sweep exits 1 again
    kept = _harness([*args, "rerun_failed=false"], tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert kept.returncode == 1, kept.stdout + kept.stderr
    assert "(1 failed, 1 kept)" in kept.stdout
    assert "kept from an earlier run (rerun_failed=false): RuntimeError: boom" in kept.stdout


def test_cells_whose_combined_settings_fail_their_checks_are_each_counted(tmp_path):
    # warmup_epochs=2 with epochs=1 is refused by the cell's own checks, after the sweep started
    args = ["sweep", "launcher=gpu_pool", "method=random_init", "task=retrieval", "dataset=synthetic_hierarchy",
            "backbone=conv4_32", "train_dataset=null", "seed=0", "train.epochs=5,1", "train.warmup_epochs=0,2,3",
            *TINY[:5],
            f"results_dir={tmp_path / 'res'}", "leaderboard_dir=null"]
    proc = _harness(args, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "(2 failed, 4 ok)" in proc.stdout and "2 cell(s) failed" in proc.stderr
    failed = [line for line in proc.stdout.splitlines() if " failed  " in line]
    assert len(failed) == 2 and all("random_init/conv4_32/v" in line for line in failed)  # each named
    assert len({line.split()[2] for line in failed}) == 2


def test_glob_expands_plugin_names_and_is_refused_elsewhere():
    from harness.errors import ConfigError
    from harness.registry import get_registry
    from harness.sweep import _expand_glob

    searchpath = get_registry().config_searchpath()
    assert _expand_glob("method=glob(random*)", searchpath) == "method=random_init"
    assert _expand_glob("task=glob([ret*,del*])", searchpath) == "task=delta,retrieval"
    assert _expand_glob("method=glob(hyp*,exclude=*scratch)", searchpath).split("=")[1].split(",") == [
        "hyp_vit", "hyp_vit_cub", "hyp_vit_dino", "hyp_vit_sphere", "hyperbolic_protonet",
        "hyperbolic_protonet_cub_1shot", "hyperbolic_protonet_cub_5shot", "hyperbolic_protonet_mini_1shot",
        "hyperbolic_protonet_mini_5shot"]
    assert _expand_glob("seed=0,1", searchpath) == "seed=0,1"
    with pytest.raises(ConfigError, match=r"glob\(\) expands plugin names .* for seed list the values"):
        _expand_glob("seed=glob(*)", searchpath)
    with pytest.raises(ConfigError, match="matches no method"):
        _expand_glob("method=glob(zz*)", searchpath)


def test_a_parallel_sweeps_eta_is_wall_time_per_cell_to_its_last_cell(monkeypatch, capsys):
    from types import SimpleNamespace

    from harness import sweep

    clock = iter([0.0, 100.0])
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: next(clock))
    grid = sweep.GridProgress(4)  # 4 cells of 100 s each on 2 workers: 2 done after 100 s
    cell = {"task": "t", "dataset": "d", "method": "m", "backbone": "b", "seed": 0}
    done = SimpleNamespace(return_value={"status": "ok", "cell": cell, "timings": {"total_s": 100.0}})
    grid.done = grid.ran = 1  # one cell ran before
    grid.job_done(done, running=0)  # the other worker is idle now
    assert capsys.readouterr().out.rstrip().endswith("ETA 1m40s")  # 2 left × 50 s of wall time per cell
    # a re-run: a kept cell took no time, so it does not shorten the ETA
    clock = iter([0.0, 0.0, 100.0])
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: next(clock))
    grid = sweep.GridProgress(4)
    kept = SimpleNamespace(return_value={**done.return_value, "_resumed": True})
    grid.job_done(kept, running=1)
    assert capsys.readouterr().out.rstrip().endswith("ETA ?")  # nothing has run yet
    grid.job_done(done, running=0)
    assert capsys.readouterr().out.rstrip().endswith("ETA 3m20s")  # 2 left × 100 s per cell run


def test_a_results_dir_under_home_is_one_folder(tmp_path):
    # quoted, so no shell expands it: the cells, the leaderboard and Hydra's own files all go to $HOME/r
    args = ["sweep", "method=random_init", "task=retrieval", "dataset=synthetic_hierarchy", "backbone=conv4_32",
            "train_dataset=null", "seed=0", *TINY[:5], "results_dir='~/r'"]
    proc = _harness(args, tmp_path, env_extra={"HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    home = tmp_path / "home" / "r"
    assert len(list(home.rglob("seed0.json"))) == 1 and (home / "leaderboards" / "retrieval.md").is_file()
    assert (home / ".sweep" / "hydra" / "multirun.yaml").is_file() and not (tmp_path / "~").exists()


def test_nan_loss_fails_the_cell_with_its_step(tmp_path, monkeypatch):
    import torch

    from harness.plugins.methods.euclidean_ce import EuclideanCE
    from harness.run import run_cell
    from harness.sweep import compose

    monkeypatch.setattr(EuclideanCE, "loss", lambda self, emb, batch: emb.sum() * torch.tensor(float("nan")))
    # retrain: a model of this config trained by an earlier test may still be in memory
    config = compose(["method=euclidean_ce", "task=few_shot", *TINY, f"results_dir={tmp_path}",
                      f"cache_dir={tmp_path / 'cache'}", "retrain=true"])
    result = run_cell(config, progress=False)
    assert result["status"] == "failed"
    assert result["reason"].startswith("NonFiniteLoss: loss became NaN at step 0")


def test_killed_sweep_loses_nothing_finished_and_duplicates_nothing(tmp_path):
    res = tmp_path / "res"
    args = ["sweep", "grid=smoke", "seed=0,1,2", "task=few_shot", "method=euclidean_ce", *TINY,
            f"results_dir={res}", "leaderboard_dir=null"]
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(res.rglob("seed*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p: json.loads(p.read_text())["timings"]["total_s"] for p in res.rglob("seed*.json")}
    assert 1 <= len(done_before) < 3
    proc = _harness(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" kept ") == len(done_before)
    assert proc.stdout.count(" ok ") == 3 - len(done_before)
    files = sorted(res.rglob("seed*.json"))
    assert [p.name for p in files] == ["seed0.json", "seed1.json", "seed2.json"]
    for p, total in done_before.items():
        assert json.loads(p.read_text())["timings"]["total_s"] == total  # finished cells were not redone


def test_unknown_plugin_on_the_command_line_answers_did_you_mean(tmp_path):
    proc = _harness(["run", "method=poincare_mrl"], tmp_path)
    assert proc.returncode == 2
    assert "unknown method 'poincare_mrl'; did you mean 'poincare_mlr'?" in proc.stderr


def _run(overrides, tmp_path, name):
    from harness.run import run_cell
    from harness.sweep import compose

    config = compose([*overrides, *TINY, f"results_dir={tmp_path / name}", f"cache_dir={tmp_path / name / 'c'}"])
    return run_cell(config, progress=False)


def test_training_is_deterministic_on_cpu(tmp_path):
    import harness.run

    a = _run(["method=poincare_mlr", "task=few_shot"], tmp_path, "a")
    harness.run._MODELS.clear()  # force a second training, not a cache hit
    b = _run(["method=poincare_mlr", "task=few_shot"], tmp_path, "b")
    assert a["status"] == b["status"] == "ok"
    assert not b["timings"]["train_cached"]
    assert a["metrics"] == b["metrics"]
    assert a["model_key"] == b["model_key"]
    # the result names what bit-identity holds for: the CPU, its kernels' instruction set, the threads
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), None) if cpuinfo.exists() else None
    capability, threads = torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()
    assert a["device"] == b["device"] == f"cpu ({model or harness.run.cpu_model()}, {capability}, {threads} threads)"


def test_model_is_trained_once_and_shared_by_tasks_with_the_same_training_split(tmp_path):
    first = _run(["method=euclidean_ce", "task=few_shot"], tmp_path, "s")
    import harness.run

    harness.run._MODELS.clear()  # the disk cache must serve it too
    second = _run(["method=euclidean_ce", "task=few_shot", "task.n_way=4"], tmp_path, "s")
    assert first["model_key"] == second["model_key"]
    assert second["timings"]["train_cached"] and not first["timings"]["train_cached"]


def test_incompatible_cell_is_skipped_with_its_reason(tmp_path):
    result = _run(["method=euclidean_ce", "task=few_shot", "task.split=query"], tmp_path, "k")
    assert result["status"] == "skipped"
    assert "has no split 'query'" in result["reason"]
    assert result["timings"]["train_s"] == 0.0


def test_grid_values_override_defaults_and_the_command_line_overrides_the_grid():
    from harness.sweep import compose

    assert compose([])["train"]["epochs"] == 16
    assert compose(["grid=smoke"])["train"]["epochs"] == 2
    assert compose(["grid=smoke", "train.epochs=5"])["train"]["epochs"] == 5
    assert compose(["grid=smoke"])["grid_name"] == "smoke"


def test_sweep_through_a_process_launcher_writes_every_cell(tmp_path):
    # Hydra's submitit launcher (the SLURM one, here in its local flavour): cells run in other processes.
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = ["sweep", "grid=smoke", "task=few_shot", *TINY, "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5", f"results_dir={tmp_path / 'res'}", f"leaderboard_dir={tmp_path / 'lb'}"]
    proc = _harness(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _statuses(tmp_path / "res") == [("euclidean_ce", 0, "ok"), ("poincare_mlr", 0, "ok")]
    assert (tmp_path / "lb" / "few_shot.md").exists()


def test_misspelt_plugin_in_a_grid_file_answers_did_you_mean(tmp_path, monkeypatch):
    from harness.errors import UnknownPluginError
    from harness.registry import get_registry
    from harness.sweep import prepare

    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "typo.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      method: euclidean_ce,poincare_mrl\n")
    registry = get_registry()
    paths = registry.config_searchpath()
    monkeypatch.setattr(registry, "config_searchpath", lambda: [*paths, f"file://{tmp_path}"])
    with pytest.raises(UnknownPluginError, match="unknown method 'poincare_mrl'; did you mean 'poincare_mlr'"):
        prepare(["grid=typo"])
    assert prepare(["grid=smoke"])[-1].startswith("hydra.searchpath=")


def test_exclude_rules_drop_cells_like_a_ci_matrix():
    from harness.sweep import check_exclude_rules, drop_excluded

    jobs = [[f"dataset={d}", f"task={t}", "seed=0"] for d in ("hier", "reid") for t in ("few_shot", "reid", "ood")]
    rules = check_exclude_rules([{"dataset": "reid", "task": "!reid"}, {"dataset": "hier", "task": "reid"}])
    assert drop_excluded(jobs, rules) == [["dataset=hier", "task=few_shot", "seed=0"],
                                          ["dataset=hier", "task=ood", "seed=0"],
                                          ["dataset=reid", "task=reid", "seed=0"]]
    # a list of values matches any of them; a rule naming an axis the job lacks never matches
    assert len(drop_excluded(jobs, check_exclude_rules([{"task": ["ood", "reid"]}]))) == 2
    with pytest.warns(UserWarning, match=r"names \['backbone'\], which no cell of this sweep sets"):
        assert drop_excluded(jobs, check_exclude_rules([{"backbone": "x"}])) == jobs
    with pytest.raises(Exception, match="hydra.sweeper.exclude must be a list of non-empty mappings"):
        check_exclude_rules({"dataset": "reid"})


def test_exclude_rules_read_values_as_hydra_does():
    from harness.sweep import check_exclude_rules, drop_excluded

    jobs = [["train_dataset=null", "task=reid"], ["train_dataset=scenes", "task=reid"],
            ["++dataset=d2", "task='reid'"], ["dataset=d2", "task=few_shot"], ["plots=true", "task=ood"]]
    # YAML's null (unquoted) and "null" (quoted) both match the override null
    for null in (None, "null"):
        assert drop_excluded(jobs, check_exclude_rules([{"train_dataset": null}])) == jobs[1:]
    # a forced key (++) and a quoted value are the key and the value Hydra reads
    assert drop_excluded(jobs, check_exclude_rules([{"dataset": "d2", "task": "!reid"}])) == jobs[:3] + jobs[4:]
    assert drop_excluded(jobs, check_exclude_rules([{"dataset": "d2", "task": "reid"}])) == jobs[:2] + jobs[3:]
    assert drop_excluded(jobs, check_exclude_rules([{"plots": True}])) == jobs[:4]  # YAML's true


def test_the_default_grid_runs_each_task_on_its_data_only():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from harness.registry import get_registry
    from harness.config_files import yaml_file
    from hydra_plugins.hyperbolic_harness.sweeper import HarnessSweeper

    grid = OmegaConf.load(yaml_file(get_registry().config_searchpath(), "grid", "default"))
    sweeper = HarnessSweeper(max_batch_size=None, params=dict(grid.hydra.sweeper.params),
                             exclude=grid.hydra.sweeper.exclude)
    params = [f"{k}={v}" for k, v in grid.hydra.sweeper.params.items()]
    [jobs] = sweeper.basic.split_arguments(OverridesParser.create().parse_overrides(params), None)
    pairs = {(dict(o.split("=") for o in job)["dataset"], dict(o.split("=") for o in job)["task"]) for job in jobs}
    n_methods = len(grid.hydra.sweeper.params.method.split(","))
    label_free = {"simclr_colour", "mocov2_colour", "hcl_colour", "hcl_euclidean_only_colour", "uhml_released_colour",
                  "uhml_euclidean_released_colour", "hack", "hack_per_class"}
    # every method × 3 seeds × 8 tasks; no re-ID for hcm / hcm_euclidean (they split classes) nor the label-free
    # methods; HACK also at its initialisation (train.epochs=0), the reference of both HACK rows
    assert len(jobs) == n_methods * 3 * 8 - (2 + len(label_free)) * 3 + 3 * 7
    untrained = {dict(o.split("=") for o in job)["method"] for job in jobs if "train.epochs=0" in job}
    assert untrained == {"hack"}
    assert {t for d, t in pairs if d == "reid_synthetic"} == {"reid"}
    assert "reid" not in {t for d, t in pairs if d == "synthetic_hierarchy"}
    # HCL and its ablation pre-train on the scenes (they need boxes), every other method on the data it is scored on
    trained_on = {(dict(o.split("=") for o in job)["method"], dict(o.split("=") for o in job)["train_dataset"])
                  for job in jobs}
    assert {m for m, t in trained_on if t == "scenes"} == {"hcl_colour", "hcl_euclidean_only_colour"}
    assert {m for m, t in trained_on if t == "null"} == set(grid.hydra.sweeper.params.method.split(",")) - {
        "hcl_colour", "hcl_euclidean_only_colour"}
    assert label_free < set(grid.hydra.sweeper.params.method.split(","))


@pytest.mark.parametrize("grid", sorted(p.stem for p in (Path(__file__).parents[1] / "plugins" / "conf" / "grid").glob(
    "*.yaml") if not p.stem.startswith("paper_")))
def test_every_in_tree_grid_composes_for_every_axis_value(grid):
    # what `harness sweep grid=...` checks before its first cell: every plugin name and value on every axis
    from harness.registry import get_registry
    from harness.sweep import _axes, _check_axes, prepare

    overrides = [f"grid={grid}"]
    prepare(overrides)
    axes, singles = _axes(overrides, get_registry().config_searchpath())
    assert axes, f"grid {grid} has no sweep axes"
    config = _check_axes(overrides, axes, singles)
    assert config["grid_name"] == grid


def test_a_mistake_inside_a_config_file_names_the_file_and_the_key(tmp_path, monkeypatch, capsys):
    from harness.cli import main
    from harness.registry import get_registry

    (tmp_path / "grid").mkdir()
    (tmp_path / "method").mkdir()
    (tmp_path / "grid" / "no_header.yaml").write_text("hydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    (tmp_path / "method" / "typo.yaml").write_text("defaults:\n  - poincare_mlr\nname: poincare_mlr\ncc: 0.1\n")
    registry = get_registry()
    paths = registry.config_searchpath()
    monkeypatch.setattr(registry, "config_searchpath", lambda: [*paths, f"file://{tmp_path}"])
    assert main(["run", "method=typo", "--cfg"]) == 2
    assert ("harness run: method/typo.yaml: Key 'cc' not in 'Config' (method.cc; not in the schema: did you mean "
            "'method.c'?") in capsys.readouterr().err
    assert main(["sweep", "grid=no_header", f"results_dir={tmp_path / 'r'}"]) == 2
    assert ("grid/no_header.yaml: Key 'grid' not in 'HarnessConfig': a grid file sets global keys, so its first "
            "line must be `# @package _global_`") in capsys.readouterr().err
    # a config variant is a choice did-you-mean offers, and `harness list` shows variants and grids
    assert main(["run", "method=typp"]) == 2
    assert "unknown method 'typp'; did you mean 'typo'?" in capsys.readouterr().err
    assert main(["list", "methods", "ty*"]) == 0
    assert "+ config variants (method=NAME, a config file over a plugin's defaults): typo" in capsys.readouterr().out
    assert main(["list", "grids", "s*"]) == 0
    out = capsys.readouterr().out
    assert "smoke   A handful of cells that finishes in about a minute on CPU" in out
    assert "no_header" not in out and "default" not in out


def test_a_reader_that_stops_early_ends_the_listing_quietly():
    proc = subprocess.run(f"{sys.executable} -m harness.cli list | head -1", shell=True, capture_output=True,
                          text=True, executable="/bin/bash")
    assert proc.stdout == "methods:\n" and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_only_cells_the_exclude_rules_keep_are_checked_before_the_sweep():
    from harness.sweep import _cells_to_check, check_exclude_rules

    axes = {"dataset": ["hier", "reid"], "task": ["few_shot", "reid"], "seed": ["0", "1"]}
    rules = check_exclude_rules([{"dataset": "reid", "task": "!reid"}, {"dataset": "hier", "task": "reid"}])
    combos = _cells_to_check(axes, rules)
    assert combos == [{"dataset": "hier", "task": "few_shot", "seed": "0"},
                      {"dataset": "hier", "task": "few_shot", "seed": "1"},
                      {"dataset": "reid", "task": "reid", "seed": "0"}]
    # a single value the rules read: with task=few_shot alone, no reid cell is kept
    assert _cells_to_check({"dataset": ["hier", "reid"]}, rules, ["task=few_shot"]) == [{"dataset": "hier"}]
    # without rules: the first cell and one cell per other value (the earlier behaviour)
    assert len(_cells_to_check(axes, [])) == 1 + 1 + 1 + 1


def test_grid_file_mistakes_and_rules_that_match_nothing_are_said_before_anything_runs(tmp_path, monkeypatch, capsys):
    from harness.cli import main
    from harness.registry import get_registry

    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "bad_yaml.yaml").write_text("# @package _global_\nhydra:\n  sweeper:\n    params: [a\n")
    (tmp_path / "grid" / "bad_exclude.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      seed: 0,1\n    exclude:\n      - notamapping\n")
    registry = get_registry()
    paths = registry.config_searchpath()
    monkeypatch.setattr(registry, "config_searchpath", lambda: [*paths, f"file://{tmp_path}"])
    res = tmp_path / "res"
    assert main(["sweep", "grid=bad_yaml", f"results_dir={res}"]) == 2
    err = capsys.readouterr().err
    assert f"grid file {tmp_path / 'grid' / 'bad_yaml.yaml'} is not valid YAML (line 5, column 1" in err
    assert main(["sweep", "grid=bad_exclude", "method=euclidean_ce", f"results_dir={res}"]) == 2
    assert "hydra.sweeper.exclude must be a list of non-empty mappings" in capsys.readouterr().err
    assert not res.exists()  # nothing written, not even the leaderboards folder
    # a key the only kept task lacks is still named, with the cells that have it
    assert main(["sweep", "method=euclidean_ce", "dataset=synthetic_hierarchy", "task=few_shot,retrieval",
                 "task.episodes=20", f"results_dir={res}"]) == 2
    assert "in the cells with task=retrieval: Could not override 'task.episodes'" in capsys.readouterr().err


def test_an_exclude_value_no_cell_has_is_a_warning_with_did_you_mean():
    from harness.sweep import check_exclude_rules, drop_excluded

    jobs = [["method=poincare_mlr", "seed=0"], ["method=euclidean_ce", "seed=0"]]
    with pytest.warns(UserWarning, match=r"method=poincare_mrl is no method \(did you mean "
                                         r"'poincare_mlr'\?\): that part of the rule matches nothing"):
        assert drop_excluded(jobs, check_exclude_rules([{"method": "poincare_mrl"}])) == jobs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a real plugin no cell has (an axis narrowed on the command line): silent
        assert drop_excluded(jobs, check_exclude_rules([{"method": "hcl"}])) == jobs
