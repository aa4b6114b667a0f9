"""A generated deep label tree (depth ``L``, branching ``B``): the leaves are the classes.

The positive control of the harness: a tree embeds in the hyperbolic plane with
low distortion and not in a Euclidean space of low dimension (Sarkar 2011; Nickel
& Kiela 2017), so a correctly trained hyperbolic head at embedding dimension
2–8 should order these classes by the tree better than its Euclidean control.

The shapes are those of ``synthetic_hierarchy`` (radial outline harmonics, a
grating, per-image nuisances: :func:`render_shapes`). The top-level nodes draw
their shape parameters independently; every node below perturbs its parent's
by a step that shrinks by ``spread`` per level (level ``l`` ≥ 2: ``spread**(l−1)``
times the top-level spread of ``synthetic_hierarchy``'s fine classes), so two
leaves look the more alike the deeper their last common ancestor.

Annotations: ``label`` (leaf id), ``coarse_label`` (top-level ancestor),
``lineage`` (``(n, L)``: ancestor ids from the top level down, the leaf last;
node ids are unique per level), ``typicality``. Splits: under each parent of
leaves, the last ``novel_per_parent`` leaves are ``novel``; the others' images
are split into ``train`` and ``test``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.data import DatasetInfo, ImageDataset, cached_tensors
from harness.errors import ConfigError
from harness.plugins.datasets.synthetic_hierarchy import draw_shapes, perturb_shapes, render_shapes


class SyntheticTree(ImageDataset):
    """Textured radial shapes whose similarity follows a deep tree (leaves = classes)."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "synthetic_tree"
        depth: int = 4  # levels below the root; the leaves are at this depth
        branching: int = 3  # children per node: branching**depth classes
        novel_per_parent: int = 1  # leaves held out as `novel` under each parent of leaves
        images_per_class: int = 30
        test_fraction: float = 0.33
        image_size: int = 32
        spread: float = 0.7  # a level's perturbation relative to the level above
        noise: float = 0.12
        rotation: float = 30.0
        seed: int = 0

        def validate(self) -> None:
            if self.depth < 2 or self.branching < 2:
                raise ConfigError(f"synthetic_tree needs depth >= 2 and branching >= 2, got {self.depth}, "
                                  f"{self.branching}")
            if not 0 <= self.novel_per_parent < self.branching:
                raise ConfigError(f"synthetic_tree: novel_per_parent must be in [0, branching), got "
                                  f"{self.novel_per_parent}")
            if not 0 < self.spread <= 1:
                raise ConfigError(f"synthetic_tree: spread must be in (0, 1], got {self.spread}")
            if self.images_per_class < 1 or self.image_size < 8:
                raise ConfigError(f"synthetic_tree: images_per_class must be >= 1 and image_size >= 8, got "
                                  f"{self.images_per_class} and {self.image_size}")
            if not (self.noise >= 0 and self.rotation >= 0):
                raise ConfigError(f"synthetic_tree: noise and rotation must be >= 0, got {self.noise} and "
                                  f"{self.rotation}")

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        data = cached_tensors("datasets", f"synthetic_tree-{self.fingerprint()}", self._generate)
        self._images = data["images"]
        label = data["label"].numpy()
        lineage = data["lineage"].numpy()
        self.annotations = {"label": label, "coarse_label": lineage[:, 0].copy(), "lineage": lineage,
                            "typicality": data["typicality"].numpy()}
        n_leaves = c.branching ** c.depth
        is_novel = (label % c.branching) >= c.branching - c.novel_per_parent
        within = np.arange(len(label)) % c.images_per_class  # generated class by class
        is_test = ~is_novel & (within >= round(c.images_per_class * (1 - c.test_fraction)))
        self.splits = {"train": np.flatnonzero(~is_novel & ~is_test), "test": np.flatnonzero(is_test),
                       "novel": np.flatnonzero(is_novel)}
        self.info = DatasetInfo(image_size=(c.image_size, c.image_size), channels=3,
                                class_names=[_path_name(leaf, c.branching, c.depth) for leaf in range(n_leaves)],
                                coarse_names=[f"n{k}" for k in range(c.branching)],
                                license="generated (MIT, part of the harness)")

    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        return self._images[torch.as_tensor(indices, dtype=torch.long)]

    def _generate(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        g = torch.Generator().manual_seed(c.seed)
        # top level: independent draws, as synthetic_hierarchy's coarse classes
        shapes = draw_shapes(c.branching, g)
        step = 0.35  # synthetic_hierarchy's fine_spread: the perturbation of level 2
        for _ in range(1, c.depth):
            shapes = perturb_shapes(shapes, torch.arange(len(shapes[0]) * c.branching) // c.branching, step, g)
            step *= c.spread
        amp, phase, freq, orient = shapes
        n_leaves = len(amp)
        label = torch.arange(n_leaves).repeat_interleave(c.images_per_class)
        images, typicality = render_shapes(amp, phase, freq, orient, label, image_size=c.image_size,
                                           rotation=c.rotation, noise=c.noise, generator=g)
        levels = [label // c.branching ** (c.depth - 1 - level) for level in range(c.depth)]
        return {"images": images, "label": label, "lineage": torch.stack(levels, 1), "typicality": typicality}


def _path_name(leaf: int, branching: int, depth: int) -> str:
    digits = [(leaf // branching ** (depth - 1 - level)) % branching for level in range(depth)]
    return "n" + ".".join(map(str, digits))
