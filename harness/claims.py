"""Claims: lock files that keep two processes from doing the same work at once.

A claim is a file created atomically (``O_CREAT | O_EXCL``) holding the owner's
host, pid, batch-job id and start time. It is released by deleting it. While it
is held, a daemon thread touches it every :data:`HEARTBEAT` seconds. A claim is
*stale* when its owner cannot still hold it: on the same host, its pid is gone;
on another host (a shared file system), its file has not been touched for
``stale_after`` seconds; or it was taken by the same SLURM job, now requeued
after a preemption. A stale claim is taken over. Two sweeps on one ``results_dir`` claim each cell before
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
from pathlib import Path
from typing import Any

#: A claim from another host whose file has not been touched for this long (seconds) is taken over.
STALE_AFTER = 300.0
#: How often a held claim is touched (seconds).
HEARTBEAT = 30.0


def _batch_job() -> str:
    return os.environ.get("SLURM_JOB_ID", "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Claim:
    """A lock file at ``path``; :meth:`acquire` returns False while another live owner holds it."""

    def __init__(self, path: Path, stale_after: float = STALE_AFTER) -> None:
        self.path = Path(path)
        self.stale_after = stale_after
        self.held = False
        self._stop: threading.Event | None = None

    def owner(self) -> dict[str, Any] | None:
        """The current owner's record, or None if unclaimed (or unreadable: being written)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_stale(self) -> bool:
        owner = self.owner()
        if owner is None:
            try:  # a claim file that stays unreadable for a while was left half-written
                return time.time() - self.path.stat().st_mtime > 60
            except OSError:
                return True
        if owner.get("job") and owner.get("job") == _batch_job():
            return True  # our own batch job, requeued after a preemption
        if owner.get("host") == socket.gethostname():
            return not _pid_alive(int(owner.get("pid", -1)))
        try:
            return time.time() - self.path.stat().st_mtime > self.stale_after
        except OSError:
            return True

    def acquire(self) -> bool:
        """Take the claim (taking over a stale one); False if a live owner holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if not self.is_stale():
                    return False
                self.path.unlink(missing_ok=True)  # stale: take it over
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "job": _batch_job(),
                           "since": time.time()}, fh)
            self.held = True
            self._stop = threading.Event()
            threading.Thread(target=self._beat, args=(self._stop,), daemon=True).start()
            return True
        return False

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
