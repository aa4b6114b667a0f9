"""The core's fine-tuning stage: a task that must train (detection) does it here, not in evaluate().

A task returns a :class:`Finetune` from ``Task.finetune(ctx)``; the core runs it
with :func:`run_finetune`: cached under its own key (the method's model key +
the task's name, version and config + the seed), checkpointed every
``checkpoint_every`` iterations so an interrupted fine-tune resumes, with a
progress bar (iterations/s, ETA) or, without a terminal, a line every 10%,
AMP on CUDA, and its own timing in the result (``timings.finetune_s``). The
batch of iteration ``i`` is drawn from ``numpy.random.default_rng([seed, i])``,
so a resumed run sees the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.engine import deterministic_on_cpu, load_optimizer_state, state_kept_on_failure
from harness.errors import HarnessError
from harness.progress import Progress


@dataclass
class Finetune:
    """What a task fine-tunes and how."""

    model: nn.Module  # trained in place by the core loop
    batch: Callable[[int, np.random.Generator], Any]  # the training batch of iteration i
    loss: Callable[[nn.Module, Any], torch.Tensor]  # scalar loss of one batch, model in train mode
    optimizer: torch.optim.Optimizer
    iterations: int
    schedule: Callable[[float], float] | None = None  # lr multiplier by fraction of iterations done
    warmup_iterations: int = 0  # linear warm-up (multiplies the schedule)
    grad_clip: float = 0.0
    checkpoint_every: int = 100


class FinetuneContext:
    """What ``Task.finetune`` receives: the trained method (shared: never modify it) and the cell's facts."""

    def __init__(self, *, dataset: Any, protocol: Any, seed: int, device: torch.device, cfg: Any,
                 amp_dtype: torch.dtype | None, method: Any, mean: tuple[float, ...], std: tuple[float, ...],
                 input_size: tuple[int, int] | None = None, embed_fn: Callable[[np.ndarray], Any] | None = None
                 ) -> None:
        self.dataset, self.protocol, self.seed, self.device, self.cfg = dataset, protocol, seed, device, cfg
        self.amp_dtype, self.method, self.mean, self.std = amp_dtype, method, tuple(mean), tuple(std)
        #: (H, W) the backbone sees (the dataset's images are resized to it)
        self.input_size = tuple(input_size) if input_size is not None else tuple(dataset.info.image_size)
        self._embed_fn = embed_fn

    def embed(self, indices: np.ndarray) -> Any:
        """The trained method's :class:`harness.task.Embedded` of the images at ``indices`` (as
        :meth:`harness.task.EvalContext.embed`: cached, shared with the evaluation)."""
        if self._embed_fn is None:
            raise HarnessError("this fine-tuning context was built without the method's embeddings (embed_fn)")
        return self._embed_fn(np.asarray(indices, dtype=np.int64))

    def backbone_copy(self) -> nn.Module:
        """A deep copy of the trained backbone (its weights as the model cache holds them)."""
        return copy.deepcopy(self.method.backbone).to(self.device)


def run_finetune(spec: Finetune, *, cache_file: Path, seed: int, device: torch.device,
                 amp_dtype: torch.dtype | None, retrain: bool = False, progress: bool = True,
                 label: str = "finetune") -> dict[str, Any]:
    """Train ``spec.model`` (or load it from ``cache_file``); return ``{seconds, iterations, final_loss,
    cached, resumed_from}``. A checkpoint beside the cache file makes an interrupted run resume."""
    from harness.claims import claim_or_wait

    if spec.iterations < 1:
        raise HarnessError(f"{label}: iterations must be >= 1, got {spec.iterations}")
    meta_file = cache_file.with_suffix(".json")
    ckpt_file = cache_file.with_suffix(".ckpt.pt")
    model = spec.model.to(device)

    def load_final() -> dict[str, Any] | None:
        if retrain or not (cache_file.exists() and meta_file.exists()):
            return None
        try:
            with state_kept_on_failure(model):  # a failed read fine-tunes from the seeded initialisation
                model.load_state_dict(torch.load(cache_file, map_location="cpu", weights_only=True))
            model.eval()  # as a model fine-tuned now is returned
            return {**json.loads(meta_file.read_text()), "cached": True}
        except Exception:  # noqa: BLE001 - a truncated or foreign file: fine-tune again
            cache_file.unlink(missing_ok=True)
            meta_file.unlink(missing_ok=True)
            return None

    claim, done = claim_or_wait(cache_file.with_suffix(".lock"), load_final, poll=2.0)
    if done is not None:
        return done
    try:
        with deterministic_on_cpu(device):  # as the method's own training
            return _train(spec, model, cache_file, meta_file, ckpt_file, seed, device, amp_dtype, progress, label,
                          claim)
    finally:
        claim.release()


def _train(spec: Finetune, model: nn.Module, cache_file: Path, meta_file: Path, ckpt_file: Path, seed: int,
           device: torch.device, amp_dtype: torch.dtype | None, progress: bool, label: str,
           claim: Any) -> dict[str, Any]:
    from harness.data import save_tensors
    from harness.results import atomic_write_text

    opt = spec.optimizer
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    start_it = 0
    if ckpt_file.exists():
        try:
            state = torch.load(ckpt_file, map_location="cpu", weights_only=True)
            with state_kept_on_failure(model):  # a failed read starts over from the seeded initialisation
                model.load_state_dict(state["model"])
                load_optimizer_state(opt, state["optimizer"])
                start_it = int(state["iteration"])
        except Exception:  # noqa: BLE001 - a torn checkpoint: start over
            start_it = 0
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    params = [p for g in opt.param_groups for p in g["params"]]
    total = spec.iterations
    bar = Progress(label, total, bar=progress, initial=start_it, unit="it")
    t0 = time.perf_counter()
    loss_value = float("nan")
    model.train()
    for it in range(start_it, total):
        factor = spec.schedule(it / total) if spec.schedule else 1.0
        if spec.warmup_iterations:
            factor *= min(1.0, (it + 1) / spec.warmup_iterations)
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor
        batch = spec.batch(it, np.random.default_rng([seed, it]))
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = spec.loss(model, batch)
        if not torch.isfinite(loss.detach()).all():
            raise HarnessError(f"{label}: loss became NaN at iteration {it}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if spec.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
        scaler.step(opt)
        scaler.update()
        loss_value = float(loss.detach())
        bar.update(1, loss=loss_value)
        done_now = it + 1
        if done_now % spec.checkpoint_every == 0 and done_now < total:
            save_tensors({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                          "optimizer": opt.state_dict(), "iteration": torch.tensor(done_now)}, ckpt_file)
            claim.refresh()
    bar.close()
    seconds = time.perf_counter() - t0
    meta = {"seconds": round(seconds, 3), "iterations": total, "resumed_from": start_it,
            "final_loss": loss_value if math.isfinite(loss_value) else None}
    save_tensors({k: v.detach().cpu() for k, v in model.state_dict().items()}, cache_file)
    atomic_write_text(meta_file, json.dumps(meta))
    ckpt_file.unlink(missing_ok=True)
    model.eval()
    return {**meta, "cached": False}
