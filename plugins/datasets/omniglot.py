"""Omniglot (Lake et al., Science 2015) from its published folders::

    images_background/<Alphabet>/character01/0709_01.png ...   30 alphabets, 964 characters
    images_evaluation/<Alphabet>/character01/...              20 alphabets, 659 characters

(``root`` may also be torchvision's ``omniglot-py`` parent.) ``label`` is the
character (numbered background first, alphabets and characters in sorted order),
``coarse_label`` the alphabet. ``train`` = background, ``novel`` = evaluation:
Lake et al.'s few-shot protocol. The images are black strokes on white;
``invert=True`` gives white strokes on black (like MNIST and ``glyphs``).
"""

from __future__ import annotations

from typing import Any

from dataclasses import dataclass

import numpy as np
import torch

from harness.plugins.datasets._folder import FileImageDataset, find_root

SETS = {"train": "images_background", "novel": "images_evaluation"}


class Omniglot(FileImageDataset):
    """Omniglot: 32,460 handwritten characters (1,623 classes × 20 drawers) from 50 alphabets."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "omniglot"
        root: str = "~/data/omniglot"
        image_size: Any = 28  # an int or [H, W]
        invert: bool = False
        preload: bool = False
        workers: int = 4

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        root = find_root(self.cfg, list(SETS.values()), nested="omniglot-py", marker=SETS["train"],
                         source="https://github.com/brendenlake/omniglot (python/images_background.zip, "
                                "images_evaluation.zip)")
        files, label, coarse, class_names, alphabets, splits = [], [], [], [], [], {}
        for split, folder in SETS.items():
            start = len(files)
            for alphabet in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
                alphabets.append(alphabet.name)
                for char in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                    class_names.append(f"{alphabet.name}/{char.name}")
                    for png in sorted(char.glob("*.png")):
                        files.append(png)
                        label.append(len(class_names) - 1)
                        coarse.append(len(alphabets) - 1)
            splits[split] = np.arange(start, len(files))
        self._set_contents(
            files, splits=splits, channels=1,
            annotations={"label": np.array(label, dtype=np.int64), "coarse_label": np.array(coarse, dtype=np.int64)},
            class_names=class_names, coarse_names=alphabets, license="MIT",
            citation="B. M. Lake, R. Salakhutdinov, J. B. Tenenbaum. Human-level concept learning through "
                     "probabilistic program induction. Science 350(6266), 2015.")

    def _decode(self, idx: np.ndarray, *, evaluating: bool = False) -> torch.Tensor:
        images = super()._decode(idx, evaluating=evaluating)
        return 255 - images if self.cfg.invert else images
