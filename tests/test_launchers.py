"""Sweeps at scale: the gpu_pool launcher on CPU workers (a worker killed mid-cell) and the SLURM
launcher end to end against a fake sbatch / srun / sacct / scancel."""

import os
import shutil
import stat
from pathlib import Path

import pytest

from harness.results import iter_results
from tests.test_sweep import TINY, _harness, fake_dist, method_plugin

KILLER = method_plugin("killer", "dies by SIGKILL for seed 2 while $KILL_MARKER exists", """
if os.path.exists(os.environ.get("KILL_MARKER", "/nonexistent")) and torch.initial_seed() == 2:
    os.kill(os.getpid(), signal.SIGKILL)
""", imports="import os\nimport signal\n\nimport torch")


def _killer_sweep(tmp_path, seeds, launcher_args, env=None):
    """A sweep of the ``killer`` method (seed 2 dies by SIGKILL while the marker exists): its args, the
    environment, the marker, the results folder and the finished process."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    fake_dist(site, "killer_dist", "killer_mod", KILLER)
    marker = tmp_path / "kill"
    marker.write_text("")
    res = tmp_path / "res"
    args = ["sweep", "grid=smoke", "task=few_shot", "method=killer", f"seed={seeds}", *launcher_args, *TINY,
            f"results_dir={res}"]
    env = {**(env or {}), "PYTHONPATH": str(site), "KILL_MARKER": str(marker)}
    return args, env, marker, res, _harness(args, tmp_path, env_extra=env)


def test_gpu_pool_on_cpu_workers_survives_a_killed_worker_and_a_rerun_completes_it(tmp_path):
    # seed 2's worker dies while the other worker runs seed 1; seed 3 takes the freed slot
    args, env, marker, res, proc = _killer_sweep(tmp_path, "1,2,3",
                                                 ["launcher=gpu_pool", "hydra.launcher.n_workers=2"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = {r["cell"]["seed"]: r for _, r in iter_results(res)}
    assert sorted(results) == [1, 2, 3]
    assert [results[s]["status"] for s in (1, 2, 3)] == ["ok", "failed", "ok"]
    assert "the job's process died" in results[2]["reason"]
    assert "running" in proc.stdout and "(1 failed, 2 ok)" in proc.stdout
    marker.unlink()
    again = _harness(args, tmp_path, env_extra=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(2 kept, 1 ok)" in again.stdout
    assert [r["status"] for _, r in iter_results(res)] == ["ok"] * 3
    # no worker was started for a kept cell: only the failed cell's job folder is new
    assert len([line for line in again.stdout.splitlines() if " kept " in line]) == 2
    assert len([d for d in (res / ".sweep" / "hydra" / ".submitit").iterdir() if d.name.isdigit()]) == 3 + 1


@pytest.fixture
def fake_slurm(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    source = Path(__file__).with_name("fake_slurm") / "fake_slurm.py"
    for command in ("sbatch", "srun", "sacct", "scancel"):
        shutil.copy(source, bin_dir / command)
        (bin_dir / command).chmod((bin_dir / command).stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_STATE": str(tmp_path / "slurm")}


def test_a_sweep_through_the_slurm_launcher_runs_every_cell_and_resumes(tmp_path, fake_slurm):
    res = tmp_path / "res"
    args = ["sweep", "grid=smoke", "task=few_shot", "seed=0,1", "launcher=slurm", "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=0", "hydra.launcher.array_parallelism=2", "hydra.launcher.mem_gb=4", *TINY,
            f"results_dir={res}"]
    proc = _harness(args, tmp_path, env_extra=fake_slurm)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    statuses = sorted((r["cell"]["method"], r["cell"]["seed"], r["status"]) for _, r in iter_results(res))
    assert statuses == [("euclidean_ce", 0, "ok"), ("euclidean_ce", 1, "ok"), ("poincare_mlr", 0, "ok"),
                        ("poincare_mlr", 1, "ok")]
    assert "(4 ok)" in proc.stdout and (res / "leaderboards" / "few_shot.md").exists()
    submission = next((res / ".sweep").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --partition=gpu" in submission and "#SBATCH --array=0-3%2" in submission
    assert "#SBATCH --mem=4GB" in submission  # the README's way to ask for memory
    # the login node names the array and prints a line per cell with the ETA
    assert "harness sweep: submitted 4 SLURM job(s), array " in proc.stdout
    logs = proc.stdout.split("logs: ", 1)[1].splitlines()[0]  # the folder with the array's id, not submitit's %j
    assert "%j" not in logs and Path(logs.replace("<task>", "0")).is_dir(), logs
    assert len([line for line in proc.stdout.splitlines() if line.startswith("[") and "ETA" in line]) == 4
    for path, _ in iter_results(res):  # one cell to run again: the re-run submits it alone
        path.unlink()
        break
    again = _harness(args, tmp_path, env_extra=fake_slurm)
    assert again.returncode == 0 and "(3 kept, 1 ok)" in again.stdout, again.stdout + again.stderr
    assert "3 cell(s) finished earlier are kept; submitting 1" in again.stdout
    assert "harness sweep: submitted 1 SLURM job(s)" in again.stdout
    assert [r["status"] for _, r in iter_results(res)] == ["ok"] * 4


def test_a_slurm_job_that_dies_is_a_failed_cell_and_the_sweep_finishes(tmp_path, fake_slurm):
    *_, res, proc = _killer_sweep(tmp_path, "1,2", ["launcher=slurm", "hydra.launcher.gpus_per_node=0",
                                                    "hydra.launcher.max_num_timeout=0"], env=fake_slurm)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = {r["cell"]["seed"]: r for _, r in iter_results(res)}
    assert results[1]["status"] == "ok" and results[2]["status"] == "failed"
    assert "the job's process died" in results[2]["reason"]
    assert "(1 failed, 1 ok)" in proc.stdout and (res / "leaderboards" / "few_shot.md").exists()


def test_launcher_shortcuts_name_their_extra_when_it_is_missing(monkeypatch):
    import importlib.util

    from harness.errors import ConfigError, UnknownPluginError
    from harness.sweep import _launcher_override

    assert _launcher_override("launcher=gpu_pool") == "hydra/launcher=gpu_pool"
    assert _launcher_override("method=x") == "method=x"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith(
        "hydra_plugins.hydra_") else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"launcher=ray needs hydra-ray-launcher: pip install 'hyperbolic-harness\[ray\]'"):
        _launcher_override("launcher=ray")
    with pytest.raises(ConfigError, match=r"hyperbolic-harness\[slurm\]"):
        _launcher_override("launcher=slurm")
    with pytest.raises(UnknownPluginError, match="ray"):
        _launcher_override("launcher=rya")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert _launcher_override("launcher=ray") == "hydra/launcher=ray"


@pytest.mark.slow  # starts a local Ray (seconds) and two cells in Ray worker processes
def test_a_sweep_through_the_ray_launcher_runs_every_cell_and_resumes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")  # the `ray` extra
    res = tmp_path / "res"
    args = ["sweep", "grid=smoke", "task=few_shot", "seed=0", "launcher=ray", *TINY, f"results_dir={res}"]
    proc = _harness(args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    statuses = sorted((r["cell"]["method"], r["cell"]["seed"], r["status"]) for _, r in iter_results(res))
    assert statuses == [("euclidean_ce", 0, "ok"), ("poincare_mlr", 0, "ok")]
    # the cells ran in Ray's worker processes: their statuses reached the sweep through the results folder
    assert "(2 ok)" in proc.stdout and (res / "leaderboards" / "few_shot.md").exists()
    again = _harness(args, tmp_path)
    assert again.returncode == 0 and "(2 kept)" in again.stdout, again.stdout + again.stderr


SLEEPER = method_plugin("sleeper", "0.2 s a step; once it trains, $MARK_DIR/<pid> holds its OMP_NUM_THREADS", """
mark = os.path.join(os.environ["MARK_DIR"], str(os.getpid()))
if not os.path.exists(mark):
    with open(mark + ".tmp", "w") as f:
        f.write(os.environ.get("OMP_NUM_THREADS", ""))
    os.replace(mark + ".tmp", mark)
time.sleep(0.2)
""", imports="import os\nimport time")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.parametrize("command, workers, sigint_ignored", [("run", 0, False), ("sweep", 2, False),
                                                              ("sweep", 2, True)])
def test_sigterm_stops_the_command_releases_its_claims_and_leaves_no_worker(command, workers, sigint_ignored,
                                                                             tmp_path):
    """A SLURM time limit or `kill` ends `harness run` / a gpu_pool sweep as Ctrl-C does (exit 130): the
    running cells release their claims and write no result, and the workers stop, also when the sweep was
    started with SIGINT ignored (a background job of a script), which its workers inherit."""
    import signal
    import subprocess
    import sys
    import time

    site, marks, res = tmp_path / "site", tmp_path / "marks", tmp_path / "res"
    site.mkdir()
    marks.mkdir()
    fake_dist(site, "sleeper_dist", "sleeper_mod", SLEEPER)
    cells = ["grid=smoke", "seed=0,1", "launcher=gpu_pool", f"hydra.launcher.n_workers={workers}"] if workers else []
    args = [command, "method=sleeper", "task=few_shot", *TINY, "train.epochs=50", *cells, f"results_dir={res}"]
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(site), "MARK_DIR": str(marks)}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored
                            else None)
    deadline = time.time() + 120
    while len(list(marks.glob("[0-9]*[0-9]"))) < max(1, workers) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    if len(list(marks.glob("[0-9]*[0-9]"))) < max(1, workers):
        proc.kill()
        raise AssertionError("training never started: " + "".join(proc.communicate()))
    assert list(res.rglob("*.claim"))
    if workers:  # each worker gets its share of the cores
        assert {p.read_text() for p in marks.glob("[0-9]*[0-9]")} == {str(max(1, (os.cpu_count() or 1) // workers))}
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"harness {command}: interrupted. Finished cells are kept" in err
    time.sleep(1)
    assert not list(res.rglob("*.claim")) and not list(res.rglob("seed*.json"))
    assert not any(_alive(int(p.name)) for p in marks.glob("[0-9]*[0-9]"))


def test_a_second_ctrl_c_after_the_first_was_handled_exits_at_once_without_a_traceback(tmp_path):
    """The first Ctrl-C ends the sweep (exit 130); a second, arriving while the interpreter runs its exit
    handlers, ends the process with 130 instead of Python's "Exception ignored in atexit" traceback."""
    import subprocess
    import sys

    script = tmp_path / "interrupt.py"
    script.write_text(
        "import atexit, os, signal, sys, time\n"
        "import harness.sweep\n"
        "from harness.cli import main\n"
        "def launch(*args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        "harness.sweep.launch = launch\n"
        "def slow_exit_handler():\n"  # e.g. a worker pool being joined
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "    print('exit handler finished', file=sys.stderr)\n"
        "atexit.register(slow_exit_handler)\n"
        "sys.exit(main(['sweep', 'grid=smoke']))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60, env={**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 130, proc.stderr
    assert "harness sweep: interrupted." in proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    assert "exit handler finished" not in proc.stderr


def test_gpu_pool_gives_each_job_one_of_the_gpus_this_process_was_given(monkeypatch):
    from harness.errors import ConfigError
    from hydra_plugins.hyperbolic_harness.launchers import physical_gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert physical_gpus([0, 1]) == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # e.g. a SLURM allocation: cuda:0 is GPU 2
    assert physical_gpus([0, 1]) == [2, 3] and physical_gpus([1]) == [3]
    with pytest.raises(ConfigError, match="GPU 2 is not visible here"):
        physical_gpus([2])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f6c2a1e")
    with pytest.raises(ConfigError, match="set CUDA_VISIBLE_DEVICES to GPU numbers"):
        physical_gpus([0])
