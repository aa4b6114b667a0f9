"""A generated two-level image hierarchy (coarse → fine), the harness's embedded default.

Every fine class is a textured shape: its outline is a radial function
``r(θ) = 1 + Σ_k a_k cos(kθ + φ_k)`` and its fill a grating of frequency ``f``
and orientation ``α``. A coarse class draws the outline harmonics and the
grating; its fine classes perturb them by ``fine_spread`` (so siblings differ
subtly, cousins clearly). Nuisance per image: rotation of the whole shape,
scale, translation, foreground / background colours, a distractor blob and
pixel noise. Deterministic: the same config gives the same bytes. Nothing is
downloaded; the tensors are cached after the first generation.

Annotation ``typicality`` (float32 in [0, 1], 1 = most typical): how little
nuisance the generator put into the image. Five atypicalities, each the drawn
strength divided by its largest possible value, so each is in [0, 1] (and
uniform on it where the draw is uniform):

* rotation: ``|angle| / rotation``;
* scale: ``|scale − 0.675| / 0.125`` (distance from the middle of the drawn range [0.55, 0.8]);
* translation: ``‖shift‖ / (0.125 √2)`` (the shift is uniform in a square of half-side 0.125);
* distractor: the blob's largest occlusion of the shape, ``max_pixels(blob · mask)`` (1 when
  the blob's centre lies on the shape, 0 when it is far from it);
* noise: ``(level − 0.5) / 1.0``, where the image's pixel noise has standard deviation
  ``noise · level``, ``level`` uniform in [0.5, 1.5] (mean ``noise``, as in version 1).

``typicality = 1 − mean of the five`` (equal weights: no nuisance is known to
matter more to a model than another). Colours are left out: they are style,
not a strength. A nuisance that is switched off (``rotation: 0``, ``noise: 0``)
counts 0 (:func:`nuisance_typicality`).

Splits: per coarse class, ``novel_per_coarse`` fine classes are held out as
``novel`` (all their images); the other fine classes' images are split into
``train`` and ``test`` (``test_fraction``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from harness.data import DatasetInfo, ImageDataset, cached_tensors
from harness.errors import ConfigError

_HARMONICS = (2, 3, 4, 5, 6)


class SyntheticHierarchy(ImageDataset):
    """Textured radial shapes in a coarse → fine hierarchy."""

    VERSION = "2"

    @dataclass
    class Config:
        name: str = "synthetic_hierarchy"
        n_coarse: int = 12
        fine_per_coarse: int = 8
        novel_per_coarse: int = 2
        images_per_class: int = 60
        test_fraction: float = 0.33
        image_size: int = 32
        fine_spread: float = 0.35  # size of sibling differences relative to cousins'
        noise: float = 0.12  # pixel noise std (in [0, 1] intensity units)
        rotation: float = 30.0  # maximum rotation of the shape, degrees either way
        seed: int = 0

        def validate(self) -> None:
            if self.n_coarse < 1 or self.images_per_class < 1:
                raise ConfigError(f"synthetic_hierarchy: n_coarse and images_per_class must be >= 1, got "
                                  f"{self.n_coarse} and {self.images_per_class}")
            if not 0 < self.novel_per_coarse < self.fine_per_coarse:
                raise ConfigError("synthetic_hierarchy needs 0 < novel_per_coarse < fine_per_coarse "
                                  f"(got {self.novel_per_coarse} and {self.fine_per_coarse})")
            if self.image_size < 8:
                raise ConfigError(f"synthetic_hierarchy: image_size must be at least 8, got {self.image_size}")
            for key in ("fine_spread", "noise", "rotation"):
                if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                    raise ConfigError(f"synthetic_hierarchy: {key} must be a finite number >= 0, got "
                                      f"{getattr(self, key)}")

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        data = cached_tensors("datasets", f"synthetic_hierarchy-{self.fingerprint()}", self._generate)
        self._images = data["images"]
        label, coarse = data["label"].numpy(), data["coarse_label"].numpy()
        self.annotations = {"label": label, "coarse_label": coarse, "typicality": data["typicality"].numpy()}
        n_fine = c.n_coarse * c.fine_per_coarse
        novel_classes = np.array([f for f in range(n_fine) if f % c.fine_per_coarse >= c.fine_per_coarse
                                  - c.novel_per_coarse])
        is_novel = np.isin(label, novel_classes)
        within = np.arange(len(label)) % c.images_per_class  # images are generated class by class
        is_test = ~is_novel & (within >= round(c.images_per_class * (1 - c.test_fraction)))
        self.splits = {"train": np.flatnonzero(~is_novel & ~is_test), "test": np.flatnonzero(is_test),
                       "novel": np.flatnonzero(is_novel)}
        self.info = DatasetInfo(
            image_size=(c.image_size, c.image_size), channels=3,
            class_names=[f"c{f // c.fine_per_coarse:02d}_f{f % c.fine_per_coarse}" for f in range(n_fine)],
            coarse_names=[f"c{k:02d}" for k in range(c.n_coarse)],
            license="generated (MIT, part of the harness)")

    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        return self._images[torch.as_tensor(indices, dtype=torch.long)]

    def _generate(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        g = torch.Generator().manual_seed(c.seed)
        # Class parameters: coarse draws, fine perturbations.
        n_fine = c.n_coarse * c.fine_per_coarse
        parent = torch.arange(n_fine) // c.fine_per_coarse
        amp, phase, freq, orient = perturb_shapes(draw_shapes(c.n_coarse, g), parent, c.fine_spread, g)

        label = torch.arange(n_fine).repeat_interleave(c.images_per_class)
        images, typicality = render_shapes(amp, phase, freq, orient, label, image_size=c.image_size,
                                           rotation=c.rotation, noise=c.noise, generator=g)
        return {"images": images, "label": label, "coarse_label": parent[label], "typicality": typicality}


def draw_shapes(n: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Independent shape parameters of ``n`` classes: outline harmonics' amplitudes and phases,
    grating frequency and orientation."""
    n_h = len(_HARMONICS)
    amp = 0.28 * torch.rand(n, n_h, generator=g) / torch.tensor(_HARMONICS) ** 0.3
    phase = 2 * math.pi * torch.rand(n, n_h, generator=g)
    freq = 1.5 + 3.0 * torch.rand(n, generator=g)
    orient = math.pi * torch.rand(n, generator=g)
    return amp, phase, freq, orient


def perturb_shapes(shapes: tuple[torch.Tensor, ...], parent: torch.Tensor, spread: float,
                   g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Children's shape parameters: the parent's (``parent[i]`` indexes ``shapes``) plus Gaussian steps
    scaled by ``spread``."""
    amp, phase, freq, orient = shapes
    m, n_h = len(parent), amp.shape[1]
    return ((amp[parent] + spread * 0.12 * torch.randn(m, n_h, generator=g)).clamp(min=0),
            phase[parent] + spread * 1.2 * torch.randn(m, n_h, generator=g),
            freq[parent] + spread * 1.2 * torch.randn(m, generator=g),
            orient[parent] + spread * 0.6 * torch.randn(m, generator=g))


def render_shapes(amp: torch.Tensor, phase: torch.Tensor, freq: torch.Tensor, orient: torch.Tensor,
                  label: torch.Tensor, *, image_size: int, rotation: float, noise: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of the classes ``label`` (one per entry) from their shape parameters (per class:
    outline harmonic amplitudes and phases ``(C, 5)``, grating frequency and orientation ``(C,)``),
    with the per-image nuisances of the module docstring; returns uint8 images and their typicality."""
    g, size = generator, image_size
    n = len(label)
    # Per-image nuisance.
    rot = math.radians(rotation) * (2 * torch.rand(n, generator=g) - 1)
    scale = 0.55 + 0.25 * torch.rand(n, generator=g)
    shift = 0.25 * (torch.rand(n, 2, generator=g) - 0.5)
    fg = 0.35 + 0.65 * torch.rand(n, 3, generator=g)
    bg = 0.6 * torch.rand(n, 3, generator=g)
    lin = (torch.arange(size) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    u = (xx[None] - shift[:, 0, None, None]) / scale[:, None, None]
    v = (yy[None] - shift[:, 1, None, None]) / scale[:, None, None]
    cos_r, sin_r = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    u, v = cos_r * u + sin_r * v, -sin_r * u + cos_r * v
    rho, theta = torch.sqrt(u**2 + v**2), torch.atan2(v, u)
    k = torch.tensor(_HARMONICS, dtype=torch.float32)
    radius = 0.7 * (1 + (amp[label][:, :, None, None]
                         * torch.cos(k[None, :, None, None] * theta[:, None] + phase[label][:, :, None, None])
                         ).sum(1))
    mask = torch.sigmoid((radius - rho) * size * 0.6)
    o = orient[label][:, None, None]
    grating = 0.5 + 0.5 * torch.cos(2 * math.pi * freq[label][:, None, None] * (u * torch.cos(o) + v * torch.sin(o)))
    shade = 0.45 + 0.55 * grating
    # A distractor blob of random colour somewhere in the background.
    centre = 1.6 * (torch.rand(n, 2, generator=g) - 0.5)
    blob = torch.exp(-((xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2)
                     / (2 * 0.12**2))
    blob_col = torch.rand(n, 3, generator=g)
    img = bg[:, :, None, None] * (1 - blob[:, None]) + blob_col[:, :, None, None] * blob[:, None]
    img = img * (1 - mask[:, None]) + (fg[:, :, None, None] * shade[:, None]) * mask[:, None]
    pixel_noise = torch.randn(img.shape, generator=g)
    level = 0.5 + torch.rand(n, generator=g)  # per-image noise strength, drawn last: earlier draws unchanged
    img = img + noise * level[:, None, None, None] * pixel_noise
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    typicality = nuisance_typicality(rot, scale, shift, (blob * mask).amax(dim=(1, 2)), level,
                                     rotation_deg=rotation, noise=noise)
    return images, typicality


def nuisance_typicality(rot: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, occlusion: torch.Tensor,
                        noise_level: torch.Tensor, *, rotation_deg: float, noise: float) -> torch.Tensor:
    """Typicality in [0, 1] (1 = most typical) from the drawn nuisances (see the module docstring).

    ``rot`` in radians (drawn in ±``rotation_deg``), ``scale`` in [0.55, 0.8], ``shift`` ``(n, 2)`` in
    ±0.125, ``occlusion`` = the blob's largest value on the shape mask, ``noise_level`` in [0.5, 1.5].
    A nuisance switched off in the config (``rotation_deg = 0``, ``noise = 0``) counts 0.
    """
    n = len(rot)
    atypical = torch.stack([
        rot.abs() / math.radians(rotation_deg) if rotation_deg > 0 else torch.zeros(n),
        (scale - 0.675).abs() / 0.125,
        torch.linalg.vector_norm(shift, dim=1) / (0.125 * math.sqrt(2)),
        occlusion,
        noise_level - 0.5 if noise > 0 else torch.zeros(n),
    ], 1).clamp(0, 1)
    return (1 - atypical.mean(1)).to(torch.float32)
