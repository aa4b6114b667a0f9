"""The random-init reference: the untrained backbone, evaluated by the same task as every method.

No training step is taken (``TRAINS = False``): the backbone keeps its seeded
initialisation (timm's default init; or the ``backbone.pretrained`` weights,
which makes it the "pretrained features, no fine-tuning" reference), the
embeddings are its pooled features and the geometry is Euclidean. A leaderboard
row within this row's interval shows no learning signal.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.geometry import EuclideanGeometry
from harness.method import Method


class RandomInit(Method):
    """Backbone features of the untrained network; no loss, no training."""

    VERSION = "1"
    TRAINS = False
    supervised = False

    @dataclass
    class Config:
        name: str = "random_init"

    def __init__(self, cfg: Config, backbone, info) -> None:
        super().__init__(cfg, backbone, info)
        self.geometry = EuclideanGeometry()
