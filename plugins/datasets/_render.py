"""Batched rendering helpers of the generated datasets (torch, CPU, deterministic given a Generator).

Coordinates: ``grid_sample`` grids are in ``[-1, 1]`` with ``align_corners=False``
(−1 and 1 are the outer pixel edges). Pixel-space helpers put pixel ``i`` at
its centre ``i + 0.5``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def uniform(gen: torch.Generator, n: int | tuple[int, ...], low: float, high: float) -> torch.Tensor:
    shape = (n,) if isinstance(n, int) else n
    return low + (high - low) * torch.rand(shape, generator=gen)


def pixel_centres(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) float grids of pixel centres ``i + 0.5``, each of shape (h, w)."""
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    return torch.meshgrid(ys, xs, indexing="ij")


def affine_grid(rot: torch.Tensor, scale_x: torch.Tensor, scale_y: torch.Tensor, shear: torch.Tensor,
                shift: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Sampling grid (n, H, W, 2) that rotates by ``rot``, shears, scales and shifts the source.

    The source point sampled for output point ``p`` is ``A p + t`` with
    ``A = Sh(−shear) R(−rot) / diag(scale_x, scale_y)``: a scale above 1 enlarges the content.
    """
    n = rot.shape[0]
    cos, sin = torch.cos(rot), torch.sin(rot)
    r_inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-rot)
    sh = torch.zeros(n, 2, 2)
    sh[:, 0, 0] = 1
    sh[:, 1, 1] = 1
    sh[:, 0, 1] = -shear
    a = sh @ r_inv / torch.stack([scale_x, scale_y], -1)[:, :, None]
    h, w = out_hw
    ys = (2 * torch.arange(h, dtype=torch.float32) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=torch.float32) + 1) / w - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, h * w, 2)  # (x, y) per pixel
    # What F.affine_grid computes, as one batched matmul (its CPU kernel is several times slower).
    return (torch.baddbmm(shift[:, None, :], base.expand(n, -1, -1), a.transpose(1, 2))).view(n, h, w, 2)


def smooth_field(gen: torch.Generator, n: int, channels: int, cells: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """Smooth random field (n, channels, H, W): standard normals on a ``cells × cells`` lattice,
    bilinearly upsampled."""
    coarse = torch.randn(n, channels, cells, cells, generator=gen)
    return F.interpolate(coarse, size=out_hw, mode="bilinear", align_corners=False)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, C, H, W) float images with reflect padding; ``sigma`` in pixels."""
    if sigma <= 0:
        return images
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] → RGB in [0, 1], shape (..., 3) (the standard hexcone formula)."""
    k = torch.tensor([5.0, 3.0, 1.0])
    t = (k + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(t, 4.0 - t), 0.0, 1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats → uint8, rounding to nearest."""
    return (images.clamp(0, 1) * 255.0).round().to(torch.uint8)
