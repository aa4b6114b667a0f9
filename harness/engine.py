"""The one training loop. Methods supply a loss and hooks; they never write a loop.

Per epoch: ``method.on_epoch_start(state)``, then that epoch's plan
(``method.batch_indices`` or shuffled batches), then per batch: the raw uint8
images go to the device, ``loss = method.training_step(batch, state)`` (the
method makes the views it needs with ``batch.view(policy)``), a non-finite loss
fails the cell ("loss became NaN at step k"), backward, optional clipping, the
optimiser step (the method's own, or geoopt's Riemannian Adam/SGD from
``train.*``: plain parameters behave as with Adam/SGD, ``ManifoldParameter`` s
stay on their manifold), the learning rate set from the schedule at the
fraction of training done, and ``method.after_step(state)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import TrainConfig
from harness.errors import ConfigError, HarnessError
from harness.method import Batch, Method, TrainState
from harness.progress import Progress

__all__ = ["NonFiniteLoss", "TrainConfig", "TrainStats", "Viewer", "autocast_dtype", "configure_device",
           "deterministic_on_cpu", "embed_arrays", "make_optimizer", "pick_device", "train"]


class NonFiniteLoss(HarnessError):
    """The loss became NaN or infinite."""


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    from harness.config import check_device

    check_device(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (no autocast) on CPU or with amp=off."""
    if amp not in ("auto", "off"):
        raise ConfigError(f"train.amp must be 'auto' or 'off', got {amp!r}")
    if amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def configure_device(method: Method, device: torch.device, cfg: TrainConfig, viewer: Viewer | None = None) -> None:
    """Device settings of ``train.*``: TF32 (CUDA), channels-last (CUDA and CPU) and ``torch.compile``.
    Hyperbolic kernels still compute in float32 or above (:mod:`harness.geometry._dtype`), and their
    error bound accounts for TF32 matmuls.

    Channels-last is on on the CPU as well: oneDNN's NHWC max-pool and convolutions train conv4_32
    1.5-2.2× and the CIFAR-stem ResNet-18 1.1-1.4× faster than NCHW on 2 cores, with the same
    features up to float rounding (``benchmarks/bench_channels_last.py``); a ViT only changes the
    layout of its patch-embedding weight."""
    if device.type == "cuda" and cfg.tf32 == "auto":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.channels_last == "auto":
        method.backbone.to(memory_format=torch.channels_last)
        if viewer is not None:
            viewer.memory_format = torch.channels_last
    if cfg.compile and "_compiled_backbone" not in method.__dict__:
        # not registered as a submodule: the state dict keeps the backbone's own keys
        object.__setattr__(method, "_compiled_backbone", torch.compile(method.backbone))


class Viewer:
    """uint8 ``(B, C, H, W)`` → float in [0, 1], resized to the backbone size, augmented by a named
    policy, normalised. ``viewer(raw, policy)`` is what ``batch.view(policy)`` calls."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], size: tuple[int, int],
                 device: torch.device, generator: torch.Generator | None = None) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.size, self.device = tuple(size), device
        self.channels = len(mean)
        self.generator = generator
        self.memory_format = torch.contiguous_format
        self._policies: dict[str, Any] = {}

    def policy(self, name: str) -> Any:
        if name not in self._policies:
            from harness.augment import resolve_policy

            self._policies[name] = resolve_policy(name)
        return self._policies[name]

    def __call__(self, images: torch.Tensor, policy: str = "none") -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        if x.shape[1] != self.channels:  # a model pre-trained on other data: conform the channels
            from harness.data import conform_images

            x = conform_images((x * 255).round().to(torch.uint8), channels=self.channels,
                               size=tuple(x.shape[-2:])).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if policy != "none":
            y = self.policy(policy)(x, self.generator)
            if not (isinstance(y, torch.Tensor) and y.dtype == x.dtype and y.shape == x.shape):
                got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
                raise TypeError(f"augmentation '{policy}' returned {got} for {x.dtype} {tuple(x.shape)}; a policy "
                                "maps a float batch in [0, 1] to one of the same shape and dtype")
            x = y
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of shuffled batches; the last partial batch is dropped when smaller than half
    a batch (a batch of 1 breaks BatchNorm)."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        chunk = order[start:start + batch_size]
        if len(chunk) >= max(2, batch_size // 2) or start == 0:
            yield chunk


def _collate(batch: Any) -> Any:
    return batch


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The default optimiser of ``train.optimizer``: geoopt's Riemannian Adam / SGD (Euclidean
    parameters get the usual update, manifold parameters stay on their manifold), or torch's."""
    import geoopt

    kind = cfg.optimizer
    if kind == "riemannian_adam":
        return geoopt.optim.RiemannianAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, stabilize=10)
    if kind == "riemannian_sgd":
        return geoopt.optim.RiemannianSGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                          weight_decay=cfg.weight_decay, stabilize=10)
    if kind == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"train.optimizer must be riemannian_adam, riemannian_sgd, adam, adamw or sgd, got {kind!r}")


def _check_manifold_params(method: Method, optimizer: torch.optim.Optimizer) -> None:
    """A method's own optimiser must be Riemannian if it trains manifold parameters."""
    import geoopt

    manifold = any(isinstance(p, geoopt.ManifoldParameter) and p.requires_grad for p in method.parameters())
    if manifold and not isinstance(optimizer, (geoopt.optim.RiemannianAdam, geoopt.optim.RiemannianSGD)):
        raise ConfigError(f"{type(method).__name__} has geoopt ManifoldParameters but its optimiser is "
                          f"{type(optimizer).__name__}: use geoopt.optim.RiemannianAdam / RiemannianSGD")


@dataclass
class TrainStats:
    steps: int
    seconds: float
    images_per_s: float
    final_loss: float
    epoch_loss: list[float] = field(default_factory=list)  # mean loss of each epoch
    resumed_from_epoch: int = 0  # epochs a training checkpoint had done (0: trained from the start)


def _nonfinite_parameters(method: Method) -> int:
    return sum(int((~torch.isfinite(p.detach())).any()) for p in method.parameters())


@contextlib.contextmanager
def state_kept_on_failure(module: torch.nn.Module) -> Iterator[None]:
    """Loading into ``module`` inside this block either succeeds or leaves the module as it was: torch's
    ``load_state_dict`` copies the matching tensors of a foreign file before it raises on the others, so
    a failed read would otherwise train on from a mix of the two. The error propagates."""
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        yield
    except BaseException:
        module.load_state_dict(initial)
        raise


@contextlib.contextmanager
def deterministic_on_cpu(device: torch.device) -> Iterator[None]:
    """PyTorch's deterministic algorithms (``warn_only``) while training on the CPU; the previous
    setting comes back after.

    By default the CPU backward of advanced indexing (``x[idx]`` with tensor indices, an
    ``index_put`` with ``accumulate=True``) adds in the order the threads run. The exact path of
    the Poincaré ``pairwise_dist`` goes through it, so hyperbolic ProtoNet, HCL and UHML trained
    differently from one process to the next on 2 cores (UHML, one seed: retrieval R@1 0.165 and
    0.202), while the methods that never take that path reproduced bit for bit. The sorted,
    deterministic variant costs no measurable time here. On CUDA the setting stays the user's
    (cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG``, and some kernels slow down).
    """
    if device.type != "cpu":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def train(method: Method, *, dataset: Any, indices: np.ndarray, labels: np.ndarray | None,
          extra: dict[str, Any], cfg: TrainConfig, viewer: Viewer, device: torch.device,
          seed: int, progress: bool = True, embed_train: Callable[[], tuple[torch.Tensor, torch.Tensor]]
          | None = None, checkpoint: Path | None = None, on_checkpoint: Callable[[], None] | None = None
          ) -> TrainStats:
    """Train ``method`` (backbone + head) on ``dataset[indices]`` in place and return statistics.

    ``labels``: training labels (None for a label-free method); ``extra``: the per-image
    annotations the method requires (numeric arrays become tensors, others stay lists). On the
    CPU the run is bit-for-bit reproducible for a given thread count (:func:`deterministic_on_cpu`).

    ``checkpoint``: a file written every ``cfg.checkpoint_every`` epochs (:class:`TrainCheckpoint`); when it
    exists, training resumes after its epoch and ends as an uninterrupted run would (bit for bit on the
    CPU). ``on_checkpoint`` is called after each write (the caller refreshes its claim). The caller
    removes the file once the trained model is stored.
    """
    with deterministic_on_cpu(device):
        return _train(method, dataset=dataset, indices=indices, labels=labels, extra=extra, cfg=cfg,
                      viewer=viewer, device=device, seed=seed, progress=progress, embed_train=embed_train,
                      checkpoint=checkpoint, on_checkpoint=on_checkpoint)


@dataclass
class TrainCheckpoint:
    """What an epoch boundary of :func:`train` needs to go on as if never stopped: every parameter and
    buffer of the method (non-persistent buffers too: training-only state such as HCM's pseudo-labels),
    the optimiser and grad-scaler states, every random stream (the batch plan's numpy generator, the
    method's and the views' torch generators, torch's global CPU and CUDA states), and the record so far."""

    epoch: int  # epochs done
    step: int
    seen: int
    seconds: float
    epoch_loss: list[float]
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    rng: str  # json of the numpy generator's bit_generator.state
    generators: dict[str, torch.Tensor]

    @staticmethod
    def tensors_of(method: Method) -> dict[str, torch.Tensor]:
        """Copies of every parameter and buffer of ``method``, keyed ``param:NAME`` / ``buffer:NAME``."""
        out = {f"param:{k}": v.detach().cpu().clone() for k, v in method.named_parameters()}
        out.update({f"buffer:{k}": v.detach().cpu().clone() for k, v in method.named_buffers()})
        return out

    def save(self, path: Path) -> None:
        from harness.data import save_tensors

        save_tensors({"epoch": self.epoch, "step": self.step, "seen": self.seen, "seconds": self.seconds,
                      "epoch_loss": list(self.epoch_loss), "tensors": self.tensors, "optimizer": self.optimizer,
                      "scaler": self.scaler, "rng": self.rng, "generators": self.generators}, path)

    @classmethod
    def load(cls, path: Path) -> TrainCheckpoint | None:
        """The checkpoint at ``path``, or None when there is none or it is torn (training starts over)."""
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})
        except Exception as exc:  # noqa: BLE001 - torn or foreign: start over
            print(f"  the training checkpoint {path} could not be read ({type(exc).__name__}): training starts "
                  "from the first epoch", file=sys.stderr)
            return None

    def mismatch(self, method: Method, optimizer: torch.optim.Optimizer) -> str | None:
        """Why this checkpoint cannot resume ``method`` and ``optimizer`` (written for another version of the
        method: other parameters, shapes or optimiser groups), or None; checked before anything is restored."""
        current = self.tensors_of(method)
        if set(self.tensors) != set(current):
            return (f"{len(set(self.tensors) ^ set(current))} parameters or buffers differ, e.g. "
                    f"{sorted(set(self.tensors) ^ set(current))[0]}")
        shapes = [k for k, v in current.items() if tuple(self.tensors[k].shape) != tuple(v.shape)]
        if shapes:
            return f"{shapes[0]} has shape {tuple(self.tensors[shapes[0]].shape)}, not {tuple(current[shapes[0]].shape)}"
        saved = [len(g.get("params", ())) for g in self.optimizer.get("param_groups", ())]
        if saved != [len(g["params"]) for g in optimizer.param_groups]:
            return "its optimiser has other parameter groups"
        return None

    def restore(self, method: Method) -> None:
        """Copy the checkpoint's tensors into ``method`` (one :meth:`mismatch` found none)."""
        params, buffers = dict(method.named_parameters()), dict(method.named_buffers())
        with torch.no_grad():
            for key, value in self.tensors.items():
                kind, name = key.split(":", 1)
                (params if kind == "param" else buffers)[name].copy_(value)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(saved)``, keeping plain-number state entries plain: torch turns them
    into float32 tensors, and geoopt's Riemannian Adam then computes its bias correction from a float32
    ``step`` instead of an int, which changes the weights in the last bits."""
    optimizer.load_state_dict(saved)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [i for group in saved["param_groups"] for i in group["params"]]
    for param, i in zip(params, ids, strict=True):
        for key, value in saved["state"].get(i, {}).items():
            if isinstance(value, (int, float)):
                optimizer.state[param][key] = value


def _train(method: Method, *, dataset: Any, indices: np.ndarray, labels: np.ndarray | None,
           extra: dict[str, Any], cfg: TrainConfig, viewer: Viewer, device: torch.device,
           seed: int, progress: bool, embed_train: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None,
           checkpoint: Path | None = None, on_checkpoint: Callable[[], None] | None = None) -> TrainStats:
    from harness import schedules

    rng = np.random.default_rng(seed)
    method.to(device).train()
    configure_device(method, device, cfg, viewer)
    optimizer = method.configure_optimizer(cfg)
    if optimizer is None:
        optimizer = make_optimizer([p for p in method.parameters() if p.requires_grad], cfg)
    _check_manifold_params(method, optimizer)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    schedule = method.lr_schedule(cfg) or schedules.from_train(cfg)
    amp_dtype = autocast_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    labels_t = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    numeric = {k: torch.as_tensor(v) for k, v in extra.items() if np.asarray(v).dtype != object}
    objects = {k: v for k, v in extra.items() if k not in numeric}
    method_gen = torch.Generator().manual_seed(seed + 1)

    def view(raw: torch.Tensor, policy: str) -> torch.Tensor:
        return viewer(raw, policy)

    def generators() -> dict[str, torch.Tensor]:
        out = {"method": method_gen.get_state(), "torch": torch.get_rng_state()}
        if viewer.generator is not None:
            out["views"] = viewer.generator.get_state()
        if device.type == "cuda":
            out["cuda"] = torch.cuda.get_rng_state(device)
        return out

    step, seen, last_loss, start, before = 0, 0, float("nan"), time.perf_counter(), 0.0
    epoch_loss: list[float] = []
    first_epoch = 0
    resumed = TrainCheckpoint.load(checkpoint) if checkpoint is not None else None
    if resumed is not None and (why := resumed.mismatch(method, optimizer)) is not None:
        print(f"  the training checkpoint {checkpoint} was written for another version of the method ({why}): "
              "training starts from the first epoch", file=sys.stderr)
        resumed = None
    if resumed is not None and resumed.epoch < cfg.epochs:
        resumed.restore(method)
        load_optimizer_state(optimizer, resumed.optimizer)
        scaler.load_state_dict(resumed.scaler)
        rng.bit_generator.state = json.loads(resumed.rng)
        method_gen.set_state(resumed.generators["method"])
        torch.set_rng_state(resumed.generators["torch"])
        if viewer.generator is not None and "views" in resumed.generators:
            viewer.generator.set_state(resumed.generators["views"])
        if device.type == "cuda" and "cuda" in resumed.generators:
            torch.cuda.set_rng_state(resumed.generators["cuda"], device)
        first_epoch, step, seen, before = resumed.epoch, resumed.step, resumed.seen, resumed.seconds
        epoch_loss = list(resumed.epoch_loss)
    label = f"train {getattr(method.cfg, 'name', None) or type(method).__name__}"
    if first_epoch:
        print(f"  {label}: resumed from its checkpoint after epoch {first_epoch} of {cfg.epochs} ({checkpoint})",
              file=sys.stderr)
    bar = Progress(label, None, bar=progress, initial=step)
    for epoch in range(first_epoch, cfg.epochs):
        state = TrainState(epoch=epoch, epochs=cfg.epochs, step=step, device=device, rng=rng,
                           embed_train=embed_train or (lambda: (_ for _ in ()).throw(
                               HarnessError("embed_train is not available here"))),
                           labels=labels, progress=epoch / cfg.epochs, optimizer=optimizer,
                           generator=method_gen)
        method.on_epoch_start(state)
        method.train()
        plan = method.batch_indices(labels, cfg.batch_size, rng)
        plan = list(plan if plan is not None else shuffled_batches(len(indices), cfg.batch_size, rng))
        if not plan:
            raise HarnessError(f"{type(method).__name__} planned no batches for epoch {epoch}")
        if bar.total is None:
            bar.set_total(len(plan) * cfg.epochs)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=[indices[b].tolist() for b in plan], collate_fn=_collate,
            num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
        losses = []
        for i, (batch_pos, raw) in enumerate(zip(plan, loader)):
            pos = torch.as_tensor(batch_pos)
            batch = Batch(raw=raw.to(device, non_blocking=True),
                          labels=None if labels_t is None else labels_t[pos].to(device),
                          indices=pos.to(device),
                          annotations={**{k: v[pos].to(device) for k, v in numeric.items()},
                                       **{k: [v[j] for j in batch_pos] for k, v in objects.items()}},
                          viewer=view, default_policy=cfg.augment)
            state.step, state.progress = step, (epoch + i / len(plan)) / cfg.epochs
            factor = schedule(state.progress)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            try:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = method.training_step(batch, state)
            except (ValueError, RuntimeError) as exc:
                bad = _nonfinite_parameters(method)
                if bad:  # the parameters diverged at the previous step and the forward broke on it
                    raise NonFiniteLoss(f"loss became NaN at step {step} (epoch {epoch}): {bad} parameter "
                                        f"tensor(s) are not finite ({type(exc).__name__} in the forward); "
                                        "lower train.lr or check the method's numerics") from exc
                raise
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
                raise TypeError(f"{type(method).__name__}.training_step returned {got}; it returns the batch's "
                                "loss as a scalar tensor (e.g. the mean of per-sample losses: loss.mean())")
            if not torch.isfinite(loss.detach()).all():
                raise NonFiniteLoss(f"loss became NaN at step {step} (epoch {epoch}); "
                                    "lower train.lr or check the method's numerics")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                               cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            seen += len(batch_pos)
            last_loss = float(loss.detach())
            losses.append(last_loss)
            state.loss = last_loss
            method.after_step(state)
            bar.update(1, epoch=epoch, loss=last_loss)
        epoch_loss.append(float(np.mean(losses)))
        done = epoch + 1
        if checkpoint is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 \
                and done < cfg.epochs:
            TrainCheckpoint(epoch=done, step=step, seen=seen, seconds=before + time.perf_counter() - start,
                            epoch_loss=epoch_loss, tensors=TrainCheckpoint.tensors_of(method),
                            optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                            rng=json.dumps(rng.bit_generator.state), generators=generators()).save(checkpoint)
            if on_checkpoint is not None:
                on_checkpoint()
    bar.close()
    method.eval()
    seconds = before + time.perf_counter() - start
    return TrainStats(steps=step, seconds=seconds, images_per_s=seen / max(seconds, 1e-9),
                      final_loss=last_loss if math.isfinite(last_loss) else float("nan"),
                      epoch_loss=epoch_loss, resumed_from_epoch=first_epoch)


@torch.no_grad()
def embed_arrays(method: Method, dataset: Any, indices: np.ndarray | None, viewer: Viewer,
                 device: torch.device, amp_dtype: torch.dtype | None, batch_size: int,
                 num_workers: int = 0, images: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Embeddings, backbone features and logits (float32, CPU) of ``dataset[indices]`` or of ``images``;
    the dataset is read :meth:`~harness.data.ImageDataset.reading_for_evaluation`."""
    was_training = method.training
    method.eval()
    embs, feats, logits = [], [], []
    if images is not None:
        chunks: Any = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    else:
        chunks = torch.utils.data.DataLoader(
            dataset, batch_sampler=[indices[i:i + batch_size].tolist() for i in range(0, len(indices), batch_size)],
            collate_fn=_collate, num_workers=num_workers)
    with dataset.reading_for_evaluation():
        for chunk in chunks:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                f = method.features(viewer(chunk))
                e = method.head(f)
                lg = method.logits(e)
            feats.append(f.float().cpu())
            embs.append(e.float().cpu())
            if lg is not None:
                logits.append(lg.float().cpu())
    method.train(was_training)
    if not embs:
        raise HarnessError("nothing to embed: the index set is empty")
    return torch.cat(embs), torch.cat(feats), (torch.cat(logits) if logits else None)
