"""The one training loop. Methods supply a loss and hooks; they never write a loop.

Per epoch: ``method.on_epoch_start(state)``, then for every batch (shuffled, or
the method's own ``batch_indices``, e.g. episodes): preprocess on the device,
``loss = method.training_step(batch, state)``, a non-finite loss fails the cell
("loss became NaN at step k"), backward, optional clipping, a geoopt
Riemannian optimiser step (plain parameters behave as with Adam/SGD,
``ManifoldParameter`` s stay on their manifold).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ConfigError, HarnessError
from harness.method import Batch, Method, TrainState


class NonFiniteLoss(HarnessError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.005
    weight_decay: float = 0.0005
    optimizer: str = "riemannian_adam"
    momentum: float = 0.9
    schedule: str = "cosine"
    augment: str = "crop"
    amp: str = "auto"
    grad_clip: float = 0.0
    num_workers: int = 0
    embed_batch_size: int = 512


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={spec} asked for, but no CUDA device is available; use device=cpu or auto")
    return device


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (no autocast) on CPU or with amp=off."""
    if amp not in ("auto", "off"):
        raise ConfigError(f"train.amp must be 'auto' or 'off', got {amp!r}")
    if amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Preprocess:
    """uint8 ``(B, C, H, W)`` → float, resized to the backbone size, normalised; optional augmentation."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], size: tuple[int, int],
                 device: torch.device) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.size, self.device = tuple(size), device

    def __call__(self, images: torch.Tensor, augment: str = "none",
                 generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if augment != "none":
            x = random_crop(x, pad=4, generator=generator)
            if augment == "crop_flip":
                flip = torch.rand(x.shape[0], generator=generator).to(x.device) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            elif augment != "crop":
                raise ConfigError(f"train.augment must be crop, crop_flip or none, got {augment!r}")
        return (x - self.mean) / self.std


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop of the reflect-padded batch (the CIFAR pad-4 crop), vectorised."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device)[None] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None] + dx[:, None])[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


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
    """geoopt's Riemannian Adam / SGD: Euclidean parameters get the usual update."""
    import geoopt

    if cfg.optimizer == "riemannian_adam":
        return geoopt.optim.RiemannianAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, stabilize=10)
    if cfg.optimizer == "riemannian_sgd":
        return geoopt.optim.RiemannianSGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                          weight_decay=cfg.weight_decay, stabilize=10)
    raise ConfigError(f"train.optimizer must be riemannian_adam or riemannian_sgd, got {cfg.optimizer!r}")


@dataclass
class TrainStats:
    steps: int
    seconds: float
    images_per_s: float
    final_loss: float


def train(method: Method, *, dataset: Any, indices: np.ndarray, labels: np.ndarray | None,
          extra: dict[str, np.ndarray], cfg: TrainConfig, preprocess: Preprocess, device: torch.device,
          seed: int, progress: bool = True) -> TrainStats:
    """Train ``method`` (backbone + head) on ``dataset[indices]`` in place and return statistics."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    torch_gen = torch.Generator().manual_seed(seed)
    method.to(device).train()
    optimizer = make_optimizer(method.parameters(), cfg)
    amp_dtype = autocast_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    labels_t = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    extra_t = {k: torch.as_tensor(v) for k, v in extra.items() if np.asarray(v).dtype != object}

    def embed_train() -> tuple[torch.Tensor, torch.Tensor]:
        return embed_arrays(method, dataset, indices, preprocess, device, amp_dtype, cfg.embed_batch_size,
                            cfg.num_workers)[:2]

    epoch_batches = []
    total_steps = 0
    for _ in range(cfg.epochs):  # the batch plan is drawn up front so the LR schedule knows its length
        plan = method.batch_indices(labels, cfg.batch_size, rng)
        plan = list(plan if plan is not None else shuffled_batches(len(indices), cfg.batch_size, rng))
        epoch_batches.append(plan)
        total_steps += len(plan)
    if cfg.schedule not in ("cosine", "constant"):
        raise ConfigError(f"train.schedule must be cosine or constant, got {cfg.schedule!r}")
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
                 if cfg.schedule == "cosine" else None)

    step, seen, last_loss, start = 0, 0, float("nan"), time.perf_counter()
    bar = tqdm(total=total_steps, disable=not progress, leave=False, unit="step", desc="train")
    for epoch, plan in enumerate(epoch_batches):
        state = TrainState(epoch=epoch, epochs=cfg.epochs, step=step, device=device, rng=rng,
                           embed_train=embed_train, labels=labels)
        method.on_epoch_start(state)
        method.train()
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=[indices[b].tolist() for b in plan], collate_fn=_collate,
            num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
        for batch_pos, images in zip(plan, loader):
            pos = torch.as_tensor(batch_pos)
            batch = Batch(
                images=preprocess(images, cfg.augment, torch_gen),
                labels=None if labels_t is None else labels_t[pos].to(device),
                indices=pos.to(device),
                annotations={k: v[pos].to(device) for k, v in extra_t.items()},
            )
            state.step = step
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = method.training_step(batch, state)
            if not torch.isfinite(loss.detach()).all():
                raise NonFiniteLoss(f"loss became NaN at step {step} (epoch {epoch}); "
                                    "lower train.lr or check the method's numerics")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            step += 1
            seen += len(batch_pos)
            last_loss = float(loss.detach())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{last_loss:.4f}", refresh=False)
    bar.close()
    method.eval()
    seconds = time.perf_counter() - start
    return TrainStats(steps=step, seconds=seconds, images_per_s=seen / max(seconds, 1e-9),
                      final_loss=last_loss if math.isfinite(last_loss) else float("nan"))


@torch.no_grad()
def embed_arrays(method: Method, dataset: Any, indices: np.ndarray | None, preprocess: Preprocess,
                 device: torch.device, amp_dtype: torch.dtype | None, batch_size: int,
                 num_workers: int = 0, images: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Embeddings, backbone features and logits (float32, CPU) of ``dataset[indices]`` or of ``images``."""
    was_training = method.training
    method.eval()
    embs, feats, logits = [], [], []
    if images is not None:
        chunks: Any = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    else:
        chunks = torch.utils.data.DataLoader(
            dataset, batch_sampler=[indices[i:i + batch_size].tolist() for i in range(0, len(indices), batch_size)],
            collate_fn=_collate, num_workers=num_workers)
    for chunk in chunks:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            f = method.features(preprocess(chunk))
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
