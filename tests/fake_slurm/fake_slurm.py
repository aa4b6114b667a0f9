#!/usr/bin/env python3
"""A local stand-in for SLURM's sbatch / srun / sacct / scancel, enough for submitit's SLURM executor.

Installed by the tests as four executables on PATH (each a copy of this script under the command's
name). ``sbatch FILE`` reads the ``#SBATCH`` lines (``--array=0-N%P``, ``--output``, ``--error``),
prints ``Submitted batch job ID`` and runs the array's tasks in a background process, at most P at
a time, each with the environment SLURM gives a job (SLURM_JOB_ID, SLURM_ARRAY_JOB_ID,
SLURM_ARRAY_TASK_ID, SLURM_PROCID…). ``srun`` runs its command with ``--output`` / ``--error``
appended to. ``sacct`` reports each task's state (PENDING, RUNNING, COMPLETED, FAILED) from the state
folder ``$FAKE_SLURM_STATE``; ``scancel`` kills a task's process group.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_STATE", "/tmp/fake_slurm"))


def _next_id() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    counter = STATE / "counter"
    value = int(counter.read_text()) + 1 if counter.exists() else 1000
    counter.write_text(str(value))
    return value


def _set(task: str, state: str, pid: int | None = None) -> None:
    (STATE / f"{task}.json").write_text(json.dumps({"state": state, "pid": pid}))


def sbatch(argv: list[str]) -> int:
    script = Path(argv[-1])
    text = script.read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)", text, flags=re.M))
    job = _next_id()
    m = re.fullmatch(r"(\d+)-(\d+)(?:%(\d+))?", flags.get("array", ""))
    tasks = list(range(int(m.group(1)), int(m.group(2)) + 1)) if m else [None]
    parallel = int(m.group(3)) if m and m.group(3) else len(tasks)
    for t in tasks:
        _set(f"{job}" if t is None else f"{job}_{t}", "PENDING")
    driver = [sys.executable, __file__, "__drive__", str(job), str(script), str(parallel), *map(str, tasks)]
    subprocess.Popen(driver, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job}")
    return 0


def _drive(argv: list[str]) -> int:
    job, script, parallel, tasks = argv[0], argv[1], int(argv[2]), argv[3:]
    running: dict[str, subprocess.Popen] = {}
    queue = [None if t == "None" else int(t) for t in tasks]
    while queue or running:
        while queue and len(running) < parallel:
            t = queue.pop(0)
            name = job if t is None else f"{job}_{t}"
            env = {**os.environ, "SLURM_JOB_ID": str(_next_id()) if t is not None else job, "SLURM_NTASKS": "1",
                   "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
                   "SLURM_JOB_NODELIST": "localhost", "SLURM_ARRAY_JOB_ID": job,
                   "SLURM_ARRAY_TASK_ID": "" if t is None else str(t), "FAKE_SLURM_TASK": name}
            if t is None:
                env.pop("SLURM_ARRAY_JOB_ID")
                env.pop("SLURM_ARRAY_TASK_ID")
            proc = subprocess.Popen(["bash", script], env=env, start_new_session=True)
            running[name] = proc
            _set(name, "RUNNING", proc.pid)
        time.sleep(0.2)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                _set(name, "COMPLETED" if proc.returncode == 0 else "FAILED")
                del running[name]
    return 0


def srun(argv: list[str]) -> int:
    out = err = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("--output", "--error"):
            task = os.environ.get("FAKE_SLURM_TASK", "0")
            array_job, _, array_task = task.partition("_")
            path = (argv[i + 1].replace("%A", array_job).replace("%a", array_task)
                    .replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", "0"))
            out, err = (path, err) if argv[i] == "--output" else (out, path)
            i += 2
        else:
            i += 1
    with open(out or os.devnull, "a") as o, open(err or out or os.devnull, "a") as e:
        return subprocess.call(argv[i:], stdout=o, stderr=e)


def sacct(argv: list[str]) -> int:
    wanted = {argv[i + 1] for i, a in enumerate(argv) if a == "-j"}
    print("JobID|State|NodeList")
    for path in sorted(STATE.glob("*.json")):
        task = path.stem
        if task.split("_")[0] in wanted:
            print(f"{task}|{json.loads(path.read_text())['state']}|localhost")
    return 0


def scancel(argv: list[str]) -> int:
    for task in (a for a in argv if not a.startswith("-")):
        path = STATE / f"{task}.json"
        if path.exists() and json.loads(path.read_text()).get("pid"):
            try:
                os.killpg(json.loads(path.read_text())["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
            _set(task, "CANCELLED")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "__drive__":
        sys.exit(_drive(sys.argv[2:]))
    command = Path(sys.argv[0]).name
    sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel}[command](sys.argv[1:]))
