"""Batched image augmentations: the building blocks of the views a method asks for.

Every op takes a float batch ``x`` of shape ``(B, C, H, W)`` with values in
[0, 1] on any device and a CPU ``torch.Generator``; random parameters are
drawn per image on the CPU (so a seed gives the same views on every device)
and applied to the whole batch with tensor ops — no Python loop over images.
Named policies (``batch.view("mocov2")``, ``train.augment=crop``) are plugins
of kind ``augmentation`` (hook ``harness_augmentations``); the in-tree ones are
in :mod:`harness.plugins.augmentations`.

The ops follow torchvision's definitions (``RandomResizedCrop``,
``ColorJitter``, ``RandomGrayscale``, ``GaussianBlur``, ``RandomHorizontalFlip``)
with one draw per image instead of one per call. Two choices differ and are
stated where they are made: the crop is resampled with bilinear ROI-align
(``torchvision.ops.roi_align``, averaging 2×2 samples per output pixel, a mild
antialias), and the four colour-jitter ops run in one random order per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Policy = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]

#: ITU-R 601 luma weights (torchvision's rgb_to_grayscale).
_LUMA = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def _coin(n: int, p: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def hflip(x: torch.Tensor, gen: torch.Generator | None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = _coin(len(x), p, gen).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop(x: torch.Tensor, gen: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    """The CIFAR crop: reflect-pad by ``pad`` and take a random crop of the original size."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (torch.arange(h, device=x.device)[None] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None] + dx[:, None])[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def resized_crop_boxes(b: int, h: int, w: int, gen: torch.Generator | None, scale: tuple[float, float],
                       ratio: tuple[float, float], attempts: int = 10) -> torch.Tensor:
    """Per-image crop boxes ``(b, 4)`` = x1, y1, x2, y2 in pixels, drawn as torchvision's
    ``RandomResizedCrop.get_params``: area fraction ~ U(scale), log aspect ratio ~ U(log ratio),
    the first of ``attempts`` draws that fits, else the central crop at the clamped ratio."""
    area = h * w
    frac = _uniform(b * attempts, *scale, gen).view(b, attempts)
    log_r = _uniform(b * attempts, math.log(ratio[0]), math.log(ratio[1]), gen).view(b, attempts)
    r = log_r.exp()
    cw = (area * frac * r).sqrt().round()
    ch = (area * frac / r).sqrt().round()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    rows = torch.arange(b)
    cw_pick, ch_pick = cw[rows, first.clamp_min(0)], ch[rows, first.clamp_min(0)]
    # fallback (torchvision): the whole image cropped to the ratio range
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = float(w), round(w / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(h * ratio[1]), float(h)
    else:
        fw, fh = float(w), float(h)
    fallback = first < 0
    cw_pick = torch.where(fallback, torch.full_like(cw_pick, fw), cw_pick)
    ch_pick = torch.where(fallback, torch.full_like(ch_pick, fh), ch_pick)
    top = (torch.rand(b, generator=gen, dtype=torch.float64) * (h - ch_pick + 1)).floor()
    left = (torch.rand(b, generator=gen, dtype=torch.float64) * (w - cw_pick + 1)).floor()
    top = torch.where(fallback, ((h - ch_pick) / 2).round(), top)
    left = torch.where(fallback, ((w - cw_pick) / 2).round(), left)
    return torch.stack([left, top, left + cw_pick, top + ch_pick], 1).float()


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop each image to its box ``(B, 4)`` (x1, y1, x2, y2 in pixels) and resize to ``size``,
    all at once with bilinear ROI-align (2×2 samples averaged per output pixel)."""
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(len(x), dtype=torch.float32)[:, None], boxes.float()], 1).to(x.device, x.dtype)
    return roi_align(x, rois, output_size=tuple(size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def random_resized_crop(x: torch.Tensor, gen: torch.Generator | None, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """``RandomResizedCrop`` to the input size, one crop per image."""
    b, _, h, w = x.shape
    return crop_resize(x, resized_crop_boxes(b, h, w, gen, scale, ratio), (h, w))


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of each image, repeated over its channels (a 1-channel image is returned as is)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def random_grayscale(x: torch.Tensor, gen: torch.Generator | None, p: float = 0.2) -> torch.Tensor:
    pick = _coin(len(x), p, gen).to(x.device)
    return torch.where(pick.view(-1, 1, 1, 1), grayscale(x), x)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = torch.stack([torch.stack(c, 1) for c in
                           ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 0)
    return choices.gather(0, i[None, :, None].expand(1, -1, 3, *i.shape[1:])).squeeze(0)


def color_jitter(x: torch.Tensor, gen: torch.Generator | None, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1, p: float = 0.8) -> torch.Tensor:
    """``ColorJitter`` with probability ``p`` per image: factors ~ U(1 ± strength) (hue ~ U(±hue)),
    applied in one random order per batch. Grayscale images get brightness and contrast only."""
    b = len(x)
    dev, dt = x.device, x.dtype
    apply = _coin(b, p, gen).to(dev).view(-1, 1, 1, 1)
    factors = {
        "brightness": _uniform(b, max(0.0, 1 - brightness), 1 + brightness, gen),
        "contrast": _uniform(b, max(0.0, 1 - contrast), 1 + contrast, gen),
        "saturation": _uniform(b, max(0.0, 1 - saturation), 1 + saturation, gen),
        "hue": _uniform(b, -hue, hue, gen),
    }
    order = torch.randperm(4, generator=gen).tolist()
    y = x
    for op in [("brightness", "contrast", "saturation", "hue")[i] for i in order]:
        f = factors[op].to(dev, dt).view(-1, 1, 1, 1)
        if op == "brightness" and brightness:
            y = (y * f).clamp(0, 1)
        elif op == "contrast" and contrast:
            mean = grayscale(y).mean((1, 2, 3), keepdim=True)
            y = (f * y + (1 - f) * mean).clamp(0, 1)
        elif op == "saturation" and saturation and y.shape[1] == 3:
            y = (f * y + (1 - f) * grayscale(y)).clamp(0, 1)
        elif op == "hue" and hue and y.shape[1] == 3:
            hsv = _rgb_to_hsv(y)
            hsv = torch.cat([(hsv[:, :1] + f) % 1.0, hsv[:, 1:]], 1)
            y = _hsv_to_rgb(hsv)
    return torch.where(apply, y, x)


def gaussian_blur(x: torch.Tensor, gen: torch.Generator | None, sigma: tuple[float, float] = (0.1, 2.0),
                  p: float = 0.5, kernel_frac: float = 0.1) -> torch.Tensor:
    """``GaussianBlur`` with probability ``p``: σ ~ U(sigma) per image, odd kernel ≈ ``kernel_frac`` of the
    image side (SimCLR: 10%), reflect padding; a separable grouped convolution over the whole batch."""
    b, c, h, w = x.shape
    k = max(3, int(kernel_frac * min(h, w)) // 2 * 2 + 1)
    s = _uniform(b, *sigma, gen).to(x.device, x.dtype)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(r[None] ** 2) / (2 * s[:, None] ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (b*c, k)
    y = F.pad(x.reshape(1, b * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, kern.view(b * c, 1, k, 1), groups=b * c)
    y = F.conv2d(y, kern.view(b * c, 1, 1, k), groups=b * c).view(b, c, h, w)
    apply = _coin(b, p, gen).to(x.device).view(-1, 1, 1, 1)
    return torch.where(apply, y, x)


def resolve_policy(name: str) -> Policy:
    """The augmentation policy registered as ``name`` (did-you-mean on a typo)."""
    from harness.registry import get_registry

    return get_registry().load("augmentation", name)


def check_policy(key: str, name: str) -> None:
    """A :class:`~harness.errors.ConfigError` naming the config ``key`` when ``name`` is not a
    registered augmentation policy (did-you-mean and the choices), so a typo fails before any work."""
    from harness.errors import ConfigError, UnknownPluginError

    try:
        resolve_policy(name)
    except UnknownPluginError as e:
        raise ConfigError(f"{key}: {e}") from e
