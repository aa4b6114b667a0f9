"""Progress of a long loop (method training, a task's fine-tuning, a method's own long step).

On a terminal: a tqdm bar (rate, ETA). Without one (a log file, a SLURM job, CI): a line on stderr
each time another tenth of the loop is done, with the rate, the ETA and the last values given to
:meth:`Progress.update` (e.g. the loss), so a long cell is never silent for minutes.
"""

from __future__ import annotations

import sys
import time
from typing import Any


_now = time.perf_counter


def format_seconds(seconds: float) -> str:
    """``3h02m05s``, ``2m05s`` or ``5s``."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """``total`` steps of a loop named ``label``, counted from ``initial`` (a resumed loop).

    ``bar``: a tqdm bar (True), lines (False), or a bar exactly when stderr is a terminal (None).
    ``total`` may be None until :meth:`set_total` (a loop that learns its length late); no line is
    printed before it is known.
    """

    def __init__(self, label: str, total: int | None, *, bar: bool | None = None, initial: int = 0,
                 unit: str = "step") -> None:
        self.label, self.unit = label, unit
        self.done = self.start = initial
        self.total: int | None = None
        self._t0 = 0.0
        self._bar = None
        self._next = 1  # the next line is printed at ceil(next·total/10) steps done, next = 1..10
        if bar is None:
            bar = sys.stderr.isatty()
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, leave=False, unit=unit, desc=label)
        self.set_total(total)

    def set_total(self, total: int | None) -> None:
        if self.done == self.start:  # the rate counts from here: not the set-up before the first step
            self._t0 = _now()
        self.total = total
        if self._bar is not None:
            self._bar.total = total
        self._next = 1
        self._passed()

    def _passed(self) -> bool:
        """Whether ``done`` reached the next line's step count; moves ``_next`` past ``done``."""
        passed = False
        while self.total and self._next <= 10 and -(-self._next * self.total // 10) <= self.done:
            self._next += 1
            passed = True
        return passed

    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more steps done; ``postfix`` (e.g. ``loss=0.25``) is shown with the bar or line."""
        self.done += n
        shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in postfix.items()}
        if self._bar is not None:
            self._bar.update(n)
            if shown:
                self._bar.set_postfix(shown, refresh=False)
            return
        if not self._passed():
            return
        rate = (self.done - self.start) / max(_now() - self._t0, 1e-9)
        eta = format_seconds((self.total - self.done) / rate) if rate > 0 else "?"
        extra = "".join(f", {k} {v}" for k, v in shown.items())
        print(f"  {self.label} {self.done}/{self.total} {self.unit}s, {rate:.2f} {self.unit}/s, ETA {eta}{extra}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
