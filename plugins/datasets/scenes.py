"""Generated scenes: canvases holding several sprites with exact boxes, exportable as COCO.

A scene has a type (``label``) that sets its background family — smooth blotches,
tiles, a gradient sky, oriented stripes, each in a random colour — and
which sprites are likely in it: type ``t`` draws classes ``2t`` and ``2t + 1``
with probability 0.3 each (0.6 together), the other classes share the rest.
Sprites are ``SHAPES`` in a random colour, size, rotation and shading;
thin clutter lines cross the background. Sprites never overlap (their
bounding circles are disjoint), so each box is the exact extent of a fully
visible sprite: the tight box of the pixels whose centres fall inside the
shape (see :mod:`._boxes` for the pixel-edge convention). No blur, so no
colour bleeds outside a box; pixel noise only.

For ``hcl``'s scene and object crops and for detection transfer. Splits:
seeded ``test_fraction`` of the images per scene type is ``test``.
:meth:`Scenes.to_coco` gives the COCO detection dict. Deterministic per
config; generated once and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from harness.data import DatasetInfo, ImageDataset, cached_tensors
from harness.errors import ConfigError
from harness.plugins.datasets._boxes import object_array, to_coco_dict
from harness.plugins.datasets._folder import stratified_split
from harness.plugins.datasets._render import hsv_to_rgb, pixel_centres, smooth_field, to_uint8, uniform

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "hexagon", "ellipse"]
BACKGROUNDS = ["blotches", "tiles", "sky", "stripes"]


def sprite_mask(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test of ``shape`` at unit-radius local coordinates (u, v) (rotation already applied).

    Every shape lies within the unit disc, so sprites whose bounding circles are
    disjoint cannot overlap.
    """
    r = torch.sqrt(u * u + v * v)
    if shape == "circle":
        return r < 0.95
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) < 0.68
    if shape == "triangle":  # equilateral, circumradius 0.95: three half-planes
        inside = torch.ones_like(u, dtype=torch.bool)
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3
            inside &= (u * math.cos(a) + v * math.sin(a)) > -0.475
        return inside
    if shape == "star":  # five points, radius between 0.45 and 0.97
        return r < 0.71 + 0.26 * torch.cos(5 * torch.atan2(v, u))
    if shape == "cross":
        return ((u.abs() < 0.3) & (v.abs() < 0.92)) | ((v.abs() < 0.3) & (u.abs() < 0.92))
    if shape == "ring":
        return (r < 0.95) & (r > 0.55)
    if shape == "hexagon":  # regular, apothem 0.8 (circumradius 0.92)
        inside = torch.ones_like(u, dtype=torch.bool)
        for k in range(6):
            a = math.pi * k / 3
            inside &= (u * math.cos(a) + v * math.sin(a)).abs() < 0.8
        return inside
    if shape == "ellipse":
        return (u / 0.95) ** 2 + (v / 0.5) ** 2 < 1
    raise ValueError(f"unknown shape '{shape}' (expected one of {SHAPES})")


def render_sprite(shape: str, cx: float, cy: float, radius: float, angle: float,
                  hw: tuple[int, int]) -> torch.Tensor:
    """Boolean (H, W) mask of one sprite: pixel (i, j) is in when its centre ``(j + .5, i + .5)`` is."""
    ys, xs = pixel_centres(*hw)
    dx, dy = (xs - cx) / radius, (ys - cy) / radius
    cos, sin = math.cos(angle), math.sin(angle)
    return sprite_mask(shape, cos * dx + sin * dy, -sin * dx + cos * dy)


def sprite_frames(objects: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Local frames of sprites given as float32 rows ``(image, class, cx, cy, radius, angle)``:
    ``dx, dy`` (k, H, W), pixel centres relative to the sprite centre in radii, and ``cos, sin`` (k, 1, 1)
    of its angle. The renderer's own arithmetic, so masks recomputed from stored rows match the painting."""
    ys, xs = pixel_centres(*hw)
    cx, cy, r, ang = objects[:, 2], objects[:, 3], objects[:, 4], objects[:, 5]
    dx = (xs[None] - cx[:, None, None]) / r[:, None, None]
    dy = (ys[None] - cy[:, None, None]) / r[:, None, None]
    return dx, dy, torch.cos(ang)[:, None, None], torch.sin(ang)[:, None, None]


def sprite_masks(shape: str, objects: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Boolean (k, H, W) masks of k sprites of one ``shape`` (float32 rows as in :func:`sprite_frames`)."""
    dx, dy, cos, sin = sprite_frames(objects, hw)
    return sprite_mask(shape, cos * dx + sin * dy, -sin * dx + cos * dy)


def mask_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """Tight pixel-edge box ``(x1, y1, x2, y2)`` of a non-empty boolean (H, W) mask."""
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """:func:`mask_box` of each of (k, H, W) non-empty masks at once: (k, 4) int64."""
    rows, cols = masks.any(2), masks.any(1)  # (k, H), (k, W)
    h, w = rows.shape[1], cols.shape[1]
    y1 = rows.int().argmax(1)
    y2 = h - rows.flip(1).int().argmax(1)
    x1 = cols.int().argmax(1)
    x2 = w - cols.flip(1).int().argmax(1)
    return torch.stack([x1, y1, x2, y2], 1)


class Scenes(ImageDataset):
    """Multi-sprite canvases with exact boxes (``boxes``) and a scene type (``label``)."""

    VERSION = "1"
    instance_masks = True

    @dataclass
    class Config:
        name: str = "scenes"
        n_images: int = 2000
        image_size: int = 64
        n_scene_types: int = 4
        min_objects: int = 1
        max_objects: int = 4
        min_radius: float = 0.08  # sprite radius, as a fraction of image_size
        max_radius: float = 0.2
        test_fraction: float = 0.2
        noise: float = 0.04
        seed: int = 0

        def validate(self) -> None:
            if self.n_images < 1:
                raise ConfigError(f"scenes: n_images must be >= 1, got {self.n_images}")
            if not 1 <= self.n_scene_types <= len(BACKGROUNDS):
                raise ConfigError(f"scenes: n_scene_types must be in 1..{len(BACKGROUNDS)}, got {self.n_scene_types}")
            if not 1 <= self.min_objects <= self.max_objects:
                raise ConfigError(f"scenes: need 1 <= min_objects <= max_objects, got {self.min_objects}, "
                                  f"{self.max_objects}")
            if not 0 < self.min_radius <= self.max_radius <= 0.3:
                raise ConfigError(f"scenes: need 0 < min_radius <= max_radius <= 0.3, got {self.min_radius}, "
                                  f"{self.max_radius}")
            if self.min_radius * self.image_size < 2.5:
                raise ConfigError(f"scenes: sprites of radius {self.min_radius * self.image_size:.1f} px are too "
                                  "small to tell apart; raise min_radius or image_size")
            if not (math.isfinite(self.noise) and self.noise >= 0):
                raise ConfigError(f"scenes: noise must be a finite number >= 0, got {self.noise}")

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        data = cached_tensors("datasets", f"scenes-{self.fingerprint()}", self._generate)
        self._images = data["images"]
        label = data["label"].numpy()
        counts = data["counts"].numpy()
        rows = np.split(data["boxes"].numpy(), np.cumsum(counts)[:-1])
        #: Every sprite: (image index, class, cx, cy, radius, angle), pixels; ``render_sprite`` redraws its mask.
        self.objects = data["objects"].numpy()
        self.annotations = {"label": label, "boxes": object_array(rows)}
        train, test = stratified_split(label, c.test_fraction, c.seed)
        self.splits = {"train": train, "test": test}
        self.info = DatasetInfo(
            image_size=(c.image_size, c.image_size), channels=3,
            class_names=[f"{BACKGROUNDS[t]}_scene" for t in range(c.n_scene_types)],
            license="generated (MIT, part of the harness)")

    @property
    def object_names(self) -> list[str]:
        """Names of the box classes (column 4 of ``boxes``)."""
        return list(SHAPES)

    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        return self._images[torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))]

    def image_list_targets(self, indices: np.ndarray, *, masks: bool = False) -> list[dict]:
        """Boxes, exact mask areas and (``masks=True``) the sprites' masks, redrawn from ``objects``
        with the renderer's arithmetic: each mask is exactly the pixels painted for its sprite."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        first = np.searchsorted(self.objects[:, 0], idx, side="left")  # objects are stored image by image
        last = np.searchsorted(self.objects[:, 0], idx, side="right")
        hw = self.info.image_size
        out = []
        for i, a, b in zip(idx, first, last):
            rows = torch.from_numpy(self.objects[a:b])
            m = torch.zeros((b - a, *hw), dtype=torch.bool)
            for k in range(b - a):
                m[k] = sprite_masks(SHAPES[int(rows[k, 1])], rows[k:k + 1], hw)[0]
            target = {"boxes": np.asarray(self.annotations["boxes"][i], dtype=np.float32),
                      "area": m.flatten(1).sum(1).double().numpy()}
            if masks:
                target["masks"] = m
            out.append(target)
        return out

    def to_coco(self, split: str | None = None) -> dict:
        """The COCO detection dict of the whole dataset or of one split (see :func:`._boxes.to_coco_dict`)."""
        indices = None if split is None else self.split(split)
        return to_coco_dict(self.annotations["boxes"], image_size=self.info.image_size, class_names=SHAPES,
                            indices=indices, supercategories=["shape"] * len(SHAPES))

    # -- generation -----------------------------------------------------------------
    def _place(self, rng: np.random.Generator) -> tuple[np.ndarray, list[list[tuple]]]:
        """Scene types and, per image, non-overlapping sprites (class, cx, cy, radius, angle)."""
        c = self.cfg
        s = c.image_size
        n_cls = len(SHAPES)
        types = rng.integers(c.n_scene_types, size=c.n_images)
        scenes = []
        for t in types:
            probs = np.full(n_cls, 0.4 / (n_cls - 2))
            probs[[2 * t % n_cls, (2 * t + 1) % n_cls]] = 0.3
            want = int(rng.integers(c.min_objects, c.max_objects + 1))
            placed: list[tuple] = []
            for _ in range(50 * want):
                if len(placed) == want:
                    break
                r = rng.uniform(c.min_radius, c.max_radius) * s
                cx, cy = rng.uniform(r, s - r, size=2)
                if all((cx - p[1]) ** 2 + (cy - p[2]) ** 2 > (r + p[3] + 1) ** 2 for p in placed):
                    placed.append((int(rng.choice(n_cls, p=probs)), cx, cy, r, rng.uniform(0, 2 * math.pi)))
            scenes.append(placed)
        return types, scenes

    def _generate(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        rng = np.random.default_rng(c.seed)
        gen = torch.Generator().manual_seed(c.seed)
        types, scenes = self._place(rng)
        n, s = c.n_images, c.image_size
        img = self._backgrounds(torch.from_numpy(types), gen)

        objects = np.array([(i, *o) for i, placed in enumerate(scenes) for o in placed], dtype=np.float64)
        colour = hsv_to_rgb(torch.rand(len(objects), generator=gen), uniform(gen, len(objects), 0.35, 1.0),
                            uniform(gen, len(objects), 0.35, 1.0))
        shade_dir = uniform(gen, len(objects), 0, 2 * math.pi)
        shade_amt = uniform(gen, len(objects), 0.0, 0.35)
        boxes = np.zeros((len(objects), 5), dtype=np.float32)
        painted = torch.zeros(n, s, s)
        paint = torch.zeros(n, 3, s, s)
        for cls, shape in enumerate(SHAPES):  # all sprites of one shape at once
            sel = np.flatnonzero(objects[:, 1] == cls) if len(objects) else np.zeros(0, np.int64)
            if len(sel) == 0:
                continue
            o = torch.from_numpy(objects[sel]).float()
            image = o[:, 0].long()
            dx, dy, cos, sin = sprite_frames(o, (s, s))
            mask = sprite_mask(shape, cos * dx + sin * dy, -sin * dx + cos * dy)
            # Linear shading across the sprite, in a random direction.
            d = torch.cos(shade_dir[sel])[:, None, None] * dx + torch.sin(shade_dir[sel])[:, None, None] * dy
            fill = colour[sel][:, :, None, None] * (1 - shade_amt[sel][:, None, None, None] * (d[:, None] + 1) / 2)
            # Sprites of one image never overlap, so summing their masked fills per image composites them.
            painted.index_add_(0, image, mask.float())
            paint.index_add_(0, image, fill * mask[:, None])
            boxes[sel, :4] = mask_boxes(mask).numpy()
            boxes[sel, 4] = cls
        img = torch.where(painted[:, None] > 0, paint, img)
        img = img + c.noise * torch.randn(img.shape, generator=gen)
        counts = torch.tensor([len(p) for p in scenes])
        return {"images": to_uint8(img), "label": torch.from_numpy(types), "boxes": torch.from_numpy(boxes),
                "counts": counts, "objects": torch.from_numpy(objects).float()}

    def _backgrounds(self, types: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(n, 3, S, S) backgrounds: one family per scene type, in random colours, plus clutter lines."""
        n, s = len(types), self.cfg.image_size
        ys, xs = pixel_centres(s, s)
        yy, xx = ys[None] / s, xs[None] / s
        base = hsv_to_rgb(torch.rand(n, generator=gen), uniform(gen, n, 0.1, 0.6), uniform(gen, n, 0.35, 0.85))
        second = hsv_to_rgb(torch.rand(n, generator=gen), uniform(gen, n, 0.1, 0.6), uniform(gen, n, 0.35, 0.85))
        blotch = torch.sigmoid(3 * smooth_field(gen, n, 1, 6, (s, s))[:, 0])
        period = uniform(gen, n, 0.12, 0.3)[:, None, None]
        tiles = (((xx / period).floor() + (yy / period).floor()) % 2)
        sky = (yy * uniform(gen, n, 0.6, 1.2)[:, None, None]).clamp(0, 1)
        angle = uniform(gen, n, 0, math.pi)[:, None, None]
        stripes = (torch.sin(2 * math.pi * (xx * torch.cos(angle) + yy * torch.sin(angle))
                             / uniform(gen, n, 0.1, 0.25)[:, None, None]) > 0).float()
        mix = torch.stack([blotch, tiles, sky, stripes])[types, torch.arange(n)]  # (n, S, S) in [0, 1]
        mix = 0.75 * mix + 0.25 * blotch  # every family keeps some blotchy texture
        img = base[:, :, None, None] * (1 - mix[:, None]) + second[:, :, None, None] * mix[:, None]
        for _ in range(3):  # clutter: thin lines across the canvas, in about half of the slots
            p0 = uniform(gen, (n, 2), 0, s)
            a = uniform(gen, n, 0, math.pi)
            dist = ((xs[None] - p0[:, 0, None, None]) * torch.sin(a)[:, None, None]
                    - (ys[None] - p0[:, 1, None, None]) * torch.cos(a)[:, None, None]).abs()
            line = (dist < 0.5) & (torch.rand(n, generator=gen) < 0.5)[:, None, None]
            img = torch.where(line[:, None], torch.rand(n, 3, 1, 1, generator=gen), img)
        return img
