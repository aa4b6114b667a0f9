"""Learning-rate schedules as multipliers of the initial learning rate, driven by the fraction of
training done ``t`` in [0, 1) (per step: ``t = (epoch + i / steps_in_epoch) / epochs``), so a plan
drawn epoch by epoch needs no step count up front."""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[float], float]


def constant() -> Schedule:
    return lambda t: 1.0


def cosine() -> Schedule:
    """Cosine annealing to 0 (Loshchilov & Hutter 2017, without restarts): ``½(1 + cos πt)``."""
    return lambda t: 0.5 * (1.0 + math.cos(math.pi * t))


def step(epochs: int, step_epochs: int, gamma: float) -> Schedule:
    """Step decay: ``gamma ** ⌊epoch / step_epochs⌋`` (PyTorch's StepLR stepped once per epoch)."""
    if step_epochs < 1:
        raise ValueError(f"step decay needs step_epochs >= 1, got {step_epochs}")
    return lambda t: gamma ** math.floor(t * epochs / step_epochs + 1e-9)


def with_warmup(schedule: Schedule, warmup_fraction: float) -> Schedule:
    """Linear warm-up from 0 over the first ``warmup_fraction`` of training, times ``schedule``."""
    if warmup_fraction <= 0:
        return schedule
    return lambda t: min(1.0, (t + 1e-12) / warmup_fraction) * schedule(t)


def from_train(train) -> Schedule:
    """The schedule ``train.schedule`` names, with ``train.warmup_epochs`` of linear warm-up."""
    name = train.schedule
    if name == "constant":
        base = constant()
    elif name in ("cosine", "warmup_cosine"):
        base = cosine()
    elif name == "step":
        base = step(train.epochs, train.step_epochs, train.step_gamma)
    else:
        raise ValueError(f"unknown schedule {name!r}")
    warm = train.warmup_epochs or (0.1 * train.epochs if name == "warmup_cosine" else 0.0)
    return with_warmup(base, warm / train.epochs)
