"""Claims: lock files that keep two processes from doing the same work at once.

A claim is a file created atomically (``O_CREAT | O_EXCL``) holding the owner's
host, pid, batch-job id and start time. It is released by deleting it. While it
is held, a daemon thread touches it every :data:`HEARTBEAT` seconds. A claim is
*stale* when its owner cannot still hold it: on the same host, its pid is gone;
on any host, its file has not been touched for ``stale_after`` seconds (on a shared
file system, another host's pid cannot be asked; on this one, a pid may have been
reused after a reboot or a container restart); or it was taken by an earlier run of the same SLURM job,
now requeued after a preemption (a lower ``SLURM_RESTART_COUNT``; processes of one
run of a job, such as ``gpu_pool`` workers inside one allocation, are told apart by
host and pid like any others). A stale claim is taken over: it is first moved
aside, and kept only if it is still the file judged stale, so two processes that
both judged it stale cannot both take it. A claim is released only by its owner
(a token in the file): a process whose claim was taken over deletes nothing. Two sweeps on one ``results_dir`` claim each cell before
running it, so the second skips cells the first is running; two jobs that need
one model claim the model's cache entry, so the second waits for the first's
model instead of training its own.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

#: A claim from another host whose file has not been touched for this long (seconds) is taken over.
STALE_AFTER = 300.0
#: How often a held claim is touched (seconds).
HEARTBEAT = 30.0


def _batch_job() -> str:
    return os.environ.get("SLURM_JOB_ID", "")


def _restart_count() -> int:
    """How often SLURM requeued this job (``SLURM_RESTART_COUNT``, 0 outside SLURM or on the first run)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill would ask about a process group, or every process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _as_int(value: Any, default: int = 0) -> int:
    """A claim record's number, or ``default`` when it holds something else (a foreign file)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _deaths_after(stale: bytes) -> int:
    """The death count a claim taking over ``stale`` (a stale claim's file) carries on: one more than its
    own when its owner died on this host outside a batch job (a requeued SLURM job or another host's
    silence is not a crash of this cell), else 0."""
    try:
        owner = json.loads(stale.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return 0
    if not isinstance(owner, dict) or owner.get("job") or owner.get("host") != socket.gethostname():
        return 0
    try:
        return int(owner.get("deaths", 0)) + 1
    except (TypeError, ValueError):
        return 1


class Claim:
    """A lock file at ``path``; :meth:`acquire` returns False while another live owner holds it."""

    def __init__(self, path: Path, stale_after: float = STALE_AFTER) -> None:
        self.path = Path(path)
        self.stale_after = stale_after
        self.held = False
        self._stop: threading.Event | None = None
        self._token = uuid.uuid4().hex
        #: How many owners in a row died holding this claim on this host outside a batch job (their
        #: process gone without releasing it), counted when :meth:`acquire` takes a stale claim over.
        self.deaths = 0

    def owner(self) -> dict[str, Any] | None:
        """The current owner's record, or None if unclaimed (or unreadable: being written, or not a
        claim's record)."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _untouched_for(self) -> float:
        """Seconds since the claim file was last touched (its owner's heartbeat); inf when it is gone."""
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return float("inf")

    def is_stale(self) -> bool:
        owner = self.owner()
        if owner is None:  # a claim file that stays unreadable for a while was left half-written
            return self._untouched_for() > 60
        if owner.get("job") and owner.get("job") == _batch_job() and _as_int(owner.get("restart")) < _restart_count():
            return True  # an earlier run of our own batch job, requeued after a preemption
        if self._untouched_for() > self.stale_after:
            return True  # no heartbeat: its owner is gone, whatever now runs under its pid
        pid = _as_int(owner.get("pid"), -1)
        return owner.get("host") == socket.gethostname() and not _pid_alive(pid)

    def acquire(self) -> bool:
        """Take the claim (taking over a stale one); False if a live owner holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                try:
                    judged = self.path.read_bytes()
                except OSError:
                    continue  # released meanwhile
                if not self.is_stale():
                    return False
                self.deaths = _deaths_after(judged)
                self._discard(judged)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "job": _batch_job(),
                           "restart": _restart_count(), "since": time.time(), "token": self._token,
                           "deaths": self.deaths}, fh)
            self.held = True
            self._stop = threading.Event()
            threading.Thread(target=self._beat, args=(self._stop,), daemon=True).start()
            return True
        return False

    def _discard(self, judged: bytes) -> None:
        """Remove the stale claim file (whose content was ``judged``). It is moved aside first (an
        atomic rename): if what was moved is not that claim (every claim's record holds its own token),
        another process took the stale claim over meanwhile, and its fresh claim is put back."""
        aside = self.path.with_name(f"{self.path.name}.{self._token}.stale")
        try:
            os.rename(self.path, aside)
        except OSError:
            return  # gone already
        try:
            if aside.read_bytes() != judged:
                try:
                    os.link(aside, self.path)  # put the fresh claim back, unless a newer one is there
                except OSError:
                    pass
        finally:
            aside.unlink(missing_ok=True)

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                return

    def wait(self, poll: float = 1.0, timeout: float | None = None, done: Any = None) -> bool:
        """Block until the claim is ours (True) or ``done()`` says the work was finished by its owner
        (False); raise TimeoutError after ``timeout`` seconds."""
        start = time.monotonic()
        while True:
            if done is not None and done():
                return False
            if self.acquire():
                return True
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"{self.path} is still claimed by {self.owner()} after {timeout:.0f} s")
            time.sleep(poll)

    def refresh(self) -> None:
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            if self._stop is not None:
                self._stop.set()
            owner = self.owner()
            if owner is not None and owner.get("token") == self._token:  # not taken over meanwhile
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim_or_wait(path: Path, ready: Any, poll: float = 1.0) -> tuple[Claim | None, Any]:
    """Either ``(claim, None)``: the claim at ``path`` is ours and ``ready()`` is still None (do the
    work, then release), or ``(None, value)``: ``ready()`` returned a value, perhaps after waiting
    for another owner to finish the work."""
    claim = Claim(path)
    while True:
        value = ready()
        if value is not None:
            return None, value
        if claim.acquire():
            value = ready()
            if value is not None:
                claim.release()
                return None, value
            return claim, None
        time.sleep(poll)
