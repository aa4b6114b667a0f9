"""Hydra launchers: ``gpu_pool`` (every GPU of a box, or CPU worker processes) and ``slurm``.

``gpu_pool`` runs each cell in its own process through submitit's local
executor, one cell per GPU at a time (each job sees only its GPU:
``visible_gpus=[g]``, so ``device=auto`` is ``cuda:0`` in it), queueing the rest
as GPUs free up; on a machine without GPUs it runs ``n_workers`` processes at
once. Cells that share a model are scheduled so the model is trained once: the
first cell of each (method, backbone, dataset, seed, training config) group
trains, the group's other tasks start after it and find the model in the
cache. A job that dies (SIGKILL, out of memory, a crash outside the cell) is
written as a ``failed`` result with the reason, and the sweep goes on; a
re-run retries failed and missing cells only. The launcher prints a line per
finished cell with the counts done / running / failed and the ETA.

``slurm`` is hydra-submitit-launcher's SLURM launcher with the harness's
defaults (one GPU per cell, requeue on preemption, job arrays of at most
``array_parallelism`` cells at once), and a job that dies written as a failed
cell, as ``gpu_pool`` does; results and the model cache must be on a file
system every node sees.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict


def physical_gpus(indices: list[int]) -> list[int]:
    """The ids a job's ``CUDA_VISIBLE_DEVICES`` must name for this process's devices ``cuda:N``: N itself,
    or the N-th entry of this process's own ``CUDA_VISIBLE_DEVICES`` (a SLURM allocation, a shared box),
    so each job gets one of the GPUs this process was given and no other."""
    from harness.errors import ConfigError

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return indices
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    out = []
    for g in indices:
        if not 0 <= g < len(entries):
            raise ConfigError(f"launcher=gpu_pool: GPU {g} is not visible here (CUDA_VISIBLE_DEVICES={visible!r} "
                              f"shows {len(entries)}); hydra.launcher.gpus counts from 0 over the visible GPUs")
        if not entries[g].isdigit():
            raise ConfigError(f"launcher=gpu_pool: CUDA_VISIBLE_DEVICES={visible!r} names GPU {g} as "
                              f"{entries[g]!r}; the jobs' GPUs are passed on by number: set CUDA_VISIBLE_DEVICES "
                              "to GPU numbers (nvidia-smi -L lists them)")
        out.append(int(entries[g]))
    return out


def gpu_slots(gpus: list[int] | None, n_workers: int) -> tuple[list[int | None], bool]:
    """The worker slots of ``launcher=gpu_pool`` and whether they are GPUs: the GPUs ``gpus`` names (null:
    every visible GPU), else ``n_workers`` CPU processes. A GPU that is not there is an error, not a
    silent run on the CPU."""
    from harness.errors import ConfigError

    import torch

    count = torch.cuda.device_count()
    if gpus is None:
        gpus = list(range(count))
    elif gpus:
        if missing := [g for g in gpus if not 0 <= int(g) < count]:
            raise ConfigError(f"launcher=gpu_pool: hydra.launcher.gpus={list(gpus)} names GPU(s) {missing}, but "
                              f"torch sees {count} GPU(s) here" + (" (no CUDA device)" if count == 0 else "")
                              + "; leave hydra.launcher.gpus out to use every visible GPU, or CPU workers "
                              "(hydra.launcher.n_workers) on a machine without one")
    if gpus:
        return physical_gpus([int(g) for g in gpus]), True
    return [None] * max(1, int(n_workers)), False


def launcher_options(name: str) -> list[str] | None:
    """The ``hydra.launcher.*`` options of a launcher the harness configures (None: not one of them)."""
    import dataclasses

    conf = {"gpu_pool": GpuPoolConf, "slurm": globals().get("HarnessSlurmConf")}.get(name)
    if conf is None:
        return None
    return sorted(f.name for f in dataclasses.fields(conf) if not f.name.startswith("_"))


@dataclass
class GpuPoolConf:
    _target_: str = "hydra_plugins.hyperbolic_harness.launchers.GpuPoolLauncher"
    gpus: Optional[list[int]] = None  # GPU indices as this process sees them (cuda:N); null: every visible GPU
    n_workers: int = 2  # without GPUs: cells run at once as local processes
    timeout_min: int = 24 * 60  # per cell
    poll_s: float = 0.5
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"


ConfigStore.instance().store(group="hydra/launcher", name="gpu_pool", node=GpuPoolConf, provider="hyperbolic-harness")

try:  # the SLURM launcher needs the `slurm` extra (hydra-submitit-launcher)
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    class HarnessSlurmLauncher(SlurmLauncher):
        """hydra-submitit-launcher's SLURM launcher, except that a job that dies (out of memory, out of
        requeues after timeouts, a node failure) is written as a ``failed`` result for its cell and the
        sweep goes on to its summary and leaderboards; the stock launcher re-raised the first such
        job's error from ``results()`` and the sweep stopped there."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            import submitit

            launcher, submit_array = self, submitit.AutoExecutor.map_array

            from harness.sweep import GridProgress

            progress = GridProgress(len(job_overrides), parallel=True)

            def map_array(executor: Any, fn: Any, *iterables: Any) -> list[Any]:
                jobs = submit_array(executor, fn, *iterables)
                if jobs:
                    array = str(jobs[0].job_id).split("_")[0]
                    # submitit names an array task's folder by its job id, <array>_<task>, in place of %j
                    logs = str(executor.folder).replace("%j", f"{array}_<task>")
                    print(f"harness sweep: submitted {len(jobs)} SLURM job(s), array {array} (squeue shows them, "
                          f"scancel stops them); logs: {logs}", flush=True)
                return [_SurvivingJob(launcher, job, list(o), progress) for job, o in zip(jobs, iterables[0])]

            kept = _finished_cells(self.hydra_context, self.config, job_overrides)
            for job_return in kept.values():
                progress.job_done(job_return)
            todo = [list(o) for i, o in enumerate(job_overrides) if i not in kept]
            if kept:
                print(f"harness sweep: {len(kept)} cell(s) finished earlier are kept; submitting {len(todo)}",
                      flush=True)
            submitit.AutoExecutor.map_array = map_array  # type: ignore[method-assign]
            try:
                ran = iter(super().launch(todo, initial_job_idx) if todo else [])
            finally:
                submitit.AutoExecutor.map_array = submit_array  # type: ignore[method-assign]
            return [kept[i] if i in kept else next(ran) for i in range(len(job_overrides))]

    @dataclass
    class HarnessSlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.hyperbolic_harness.launchers.HarnessSlurmLauncher"
        submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
        timeout_min: int = 60  # per cell
        gpus_per_node: Optional[int] = 1
        cpus_per_task: Optional[int] = 8
        max_num_timeout: int = 3  # requeue after a timeout up to 3 times (preemptions always requeue)
        array_parallelism: int = 64

    ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=HarnessSlurmConf,
                                 provider="hyperbolic-harness")
except ImportError:  # pragma: no cover - without the extra, `launcher=slurm` says what to install
    pass


class _SurvivingJob:
    """A submitted job whose ``results()`` turns the job's death into a failed result for its cell, and
    prints the cell's progress line on the sweep's process (the login node)."""

    def __init__(self, launcher: Any, job: Any, overrides: list[str], progress: Any) -> None:
        self.launcher, self.job, self.overrides, self.progress = launcher, job, overrides, progress

    def results(self) -> list[JobReturn]:
        try:
            returns = self.job.results()
        except Exception as exc:  # noqa: BLE001 - the job died: record its cell as failed
            returns = [_died(self.launcher.hydra_context, self.launcher.config, self.overrides, exc)]
        for job_return in returns:
            self.progress.job_done(job_return)
        return returns


def _finished_cells(hydra_context: Any, config: DictConfig,
                    job_overrides: Sequence[Sequence[str]]) -> dict[int, JobReturn]:
    """The jobs whose cell finished in an earlier run (kept by a re-run): their returns, read here so that
    no job (a SLURM allocation, a worker process) is started just to say ``kept``. A job whose config
    cannot be read here is left to run and say what is wrong."""
    from harness.results import result_path
    from harness.run import _kept, cell_of
    from harness.sweep import report_status

    out: dict[int, JobReturn] = {}
    for i, overrides in enumerate(job_overrides):
        try:
            cell_config = _cell_config(hydra_context, config, list(overrides))
            result = _kept(result_path(cell_config["results_dir"], cell_of(cell_config)), cell_config)
        except Exception:  # noqa: BLE001 - the job reports its own config error
            continue
        if result is not None:
            report_status(cell_config, result)
            out[i] = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=result)
    return out


def _died(hydra_context: Any, config: DictConfig, overrides: list[str], exc: BaseException) -> JobReturn:
    """The return of a job whose process died: a failed result written for its cell. COMPLETED, because
    Hydra's sweeper re-raises a FAILED job's exception and stops the sweep."""
    # the end of the job's error stream says what killed it (its start is the training's progress lines)
    text = " ".join(str(exc).split())
    reason = f"the job's process died ({type(exc).__name__}): " + (text if len(text) <= 600 else
                                                                      f"{text[:200]} … {text[-400:]}")
    result = _write_failed(hydra_context, config, overrides, reason)
    return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=result)


def _group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """Cells whose overrides differ only in the task share a model (usually: a task that trains on
    another label field trains its own, and then waits for nobody)."""
    return tuple(sorted(o for o in overrides if not (o.startswith("task=") or o.startswith("task."))))


class GpuPoolLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        from harness.errors import ConfigError

        if unknown := sorted(set(params) - set(launcher_options("gpu_pool") or ())):
            raise ConfigError(f"launcher=gpu_pool has no option(s) {unknown}; its options: "
                              f"{', '.join(launcher_options('gpu_pool') or ())}")
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    # -- in the job's process --------------------------------------------------------------------------
    def __call__(self, overrides: list[str], job_num: int, singleton_state: dict) -> JobReturn:
        _interrupt_once()
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.num = job_num
            sweep_config.hydra.job.id = f"gpu_pool_{job_num}"
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    # -- in the sweep's process --------------------------------------------------------------------------
    def _slots(self) -> tuple[list[int | None], bool]:
        return gpu_slots(self.params.get("gpus"), int(self.params.get("n_workers", 2)))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from harness.sweep import GridProgress

        slots, on_gpus = self._slots()
        threads = max(1, (os.cpu_count() or 1) // len(slots))
        folder = str(self.params.get("submitit_folder", "${hydra.sweep.dir}/.submitit/%j")).replace(
            "${hydra.sweep.dir}", str(self.config.hydra.sweep.dir))
        executor = submitit.LocalExecutor(folder=folder)
        overrides = [list(o) for o in job_overrides]
        progress = GridProgress(len(overrides))
        returns: dict[int, JobReturn] = _finished_cells(self.hydra_context, self.config, overrides)
        for job_return in returns.values():  # no worker is started for a kept cell
            progress.job_done(job_return, running=0)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, o in enumerate(overrides):
            if i not in returns:
                groups.setdefault(_group_key(o), []).append(i)
        leaders = [members[0] for members in groups.values()]
        followers_of = {members[0]: members[1:] for members in groups.values()}
        ready: list[int] = []  # followers whose model is trained (or whose leader finished anyway)
        queue = list(leaders)
        running: dict[int, tuple[int | None, Any]] = {}  # job index -> (slot, submitit job)
        free = list(range(len(slots)))
        singleton_state = Singleton.get_state()
        poll = float(self.params.get("poll_s", 0.5))
        try:
            while queue or ready or running:
                while free and (ready or queue):
                    i = ready.pop(0) if ready else queue.pop(0)
                    slot = free.pop(0)
                    gpu = slots[slot]
                    executor.update_parameters(timeout_min=int(self.params.get("timeout_min", 1440)),
                                               gpus_per_node=1 if on_gpus else 0,
                                               visible_gpus=[gpu] if on_gpus else ())
                    with _environment(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)), \
                            _sigint_not_ignored():
                        running[i] = (slot, executor.submit(self, overrides[i], initial_job_idx + i, singleton_state))
                time.sleep(poll)
                for i, (slot, job) in list(running.items()):
                    if not job.done():
                        continue
                    del running[i]
                    free.append(slot)
                    free.sort()
                    returns[i] = self._collect(job, overrides[i])
                    ready.extend(followers_of.pop(i, []))
                    progress.job_done(returns[i], running=len(running))
        except BaseException:  # Ctrl-C or SIGTERM (harness.cli): stop the workers; their cells release claims
            for _, job in running.values():
                job.cancel(check=False)
            raise
        return [returns[i] for i in range(len(overrides))]

    def _collect(self, job: Any, overrides: list[str]) -> JobReturn:
        """The job's return, or — when the process died — a failed result written for its cell."""
        try:
            return job.result()
        except Exception as exc:  # noqa: BLE001 - the process died: record the cell as failed
            return _died(self.hydra_context, self.config, overrides, exc)


def _interrupt_once() -> None:
    """In a worker: the first SIGINT (the sweep's cancel) stops the cell as Ctrl-C does, and later ones
    (the terminal's, submitit's) are ignored, so the cell's cleanup (claims, the model lock) is not cut
    short. (That the cancel reaches the worker at all, when the sweep was started with SIGINT ignored, is
    :func:`_sigint_not_ignored`'s part.)"""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """While a worker is started: SIGINT handled in this process, so the worker does not inherit an ignored
    SIGINT (a sweep started as a background job of a script), which would leave the SIGINT that cancels
    it without effect. A handled signal is reset to its default in a new program; an ignored one stays
    ignored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables while a worker is started (it copies this process's environment). Not
    submitit's ``setup`` lines: they start the worker through a shell, which does not pass on the SIGINT
    that cancels it, so a cancelled worker ran on."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cell_config(hydra_context: Any, config: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The validated config of the cell a job's ``overrides`` make, composed in the sweep's process."""
    from harness.config import validate

    cell_config = OmegaConf.to_container(hydra_context.config_loader.load_sweep_config(config, overrides),
                                         resolve=True)
    cell_config.pop("hydra", None)
    return validate(cell_config)


def _write_failed(hydra_context: Any, config: DictConfig, overrides: list[str], reason: str) -> dict[str, Any]:
    """Write a ``failed`` result for the cell of ``overrides`` (its process could not)."""
    from harness.results import result_path, write_result
    from harness.run import cell_of, failed_result
    from harness.sweep import report_status

    cell_config = _cell_config(hydra_context, config, overrides)
    cell = cell_of(cell_config)
    result = failed_result(cell_config, cell, reason)
    path = result_path(cell_config["results_dir"], cell)
    written = write_result(path, result)
    Path(path).with_suffix(".claim").unlink(missing_ok=True)  # the dead process cannot release it
    report_status(cell_config, written)
    return written
