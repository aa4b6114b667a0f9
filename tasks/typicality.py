"""Task ``typicality``: do typical images lie nearer the origin?

HACK (Guo et al., "Unsupervised Feature Learning with Emergent Data-Driven
Prototypicality") finds prototypical images near the origin of the Poincaré
ball and atypical ones near its boundary; Khrulkov et al. (CVPR 2020, Sec. 5)
find ambiguous images near the centre, the opposite. This task measures which
a trained model does, against a ground truth: the per-image ``typicality``
annotation of the generated datasets (how little nuisance the generator put
into each image; see ``synthetic_hierarchy`` and ``glyphs``).

Protocol: the model trains on the ``train`` split with fine labels; the
images of the ``split`` split (``test``: held-out images of the training
classes) are embedded. With atypicality ``a = 1 − typicality`` and ``d(0, x)``
the geometry's distance to the origin:

* ``spearman_per_class`` (the headline) — per fine class, the Spearman
  correlation between ``d(0, x)`` and ``a``; the unweighted mean over classes
  (each class one unit), ``ci95 = 1.96 · std / sqrt(classes)`` across classes;
  classes where it is undefined are listed in ``details``;
* ``spearman_pooled`` — one Spearman correlation over all eval images.

Positive = typical images lie nearer the origin (HACK's claim); 0 on random
embeddings. The per-class value is the headline because the pooled one also
ranks classes against each other: a class the model places farther out
(e.g. one it is surer of) shifts every image of that class, whatever their
typicality. A correlation whose side is degenerate (every embedding on one
sphere; :func:`harness.diagnostics.degenerate_reason`) is ``null`` with the
reason. Datasets without ``typicality`` are skipped. With ``plots=true`` the
cell draws the distance to the origin against the atypicality
(``dist0_vs_atypicality.png``, one colour per class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.task import SIGNED_UNIT, EvalContext, MetricValue, Protocol, Task
from harness.tasks._correlation import correlation_or_reason, per_group_spearman


class Typicality(Task):
    """Spearman correlation of the distance to the origin with atypicality, per class and pooled."""

    VERSION = "1"
    requires = frozenset({"label", "typicality"})
    METRICS = {"spearman_per_class": True, "spearman_pooled": True}
    BOUNDS = dict.fromkeys(METRICS, SIGNED_UNIT)
    CONVENTION = ("Spearman correlation of the distance to the origin with atypicality = 1 − the dataset's "
                  "per-image typicality (from the generator's nuisance strengths); positive = typical images "
                  "nearer the origin (HACK); per class, unweighted mean over classes (the headline), and pooled; "
                  "0 on random embeddings; null = undefined (e.g. every embedding on one sphere), with the reason")

    @dataclass
    class Config:
        name: str = "typicality"
        split: str = "test"

    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        idx = dataset.split(self.cfg.split)
        return Protocol(train=dataset.split("train"), train_label="label", eval={self.cfg.split: idx},
                        description=f"Spearman of the distance to the origin with atypicality on split "
                                    f"'{self.cfg.split}'")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        idx = ctx.protocol.eval[self.cfg.split]
        emb = ctx.embed(idx).embeddings
        bad = int((~torch.isfinite(emb).all(-1)).sum())
        if bad:
            raise ValueError(f"{bad} of {len(emb)} embeddings contain NaN or inf")
        with torch.no_grad():
            radius = ctx.geometry.dist0(emb).detach().cpu().double().numpy()
        atypicality = 1.0 - ctx.annotation("typicality", idx).astype(np.float64)
        labels = ctx.annotation("label", idx)
        res = per_group_spearman(radius, atypicality, labels, x_what="the distance to the origin",
                                 y_what="the atypicality")
        ctx.details.update({"spearman_per_class/skipped_classes": res["skipped"],
                            "spearman_per_class/averaging": "unweighted mean over classes of the per-class "
                                                            "Spearman correlation; ci95 = 1.96 std / sqrt(classes)",
                            "sign": "positive = typical images nearer the origin"})
        out = {"spearman_per_class": (self.metric("spearman_per_class", None, reason=res["reason"], n=0)
                                      if res["mean"] is None else
                                      self.metric("spearman_per_class", res["mean"], ci95=res["ci95"], n=res["n"]))}
        value, reason = correlation_or_reason(radius, atypicality, method="spearman",
                                              x_what="the distance to the origin", y_what="the atypicality")
        out["spearman_pooled"] = self.metric("spearman_pooled", value, reason=reason, n=len(idx))
        if ctx.artifacts_dir is not None:
            from harness.plots import save_scatter

            pooled = "null" if value is None else f"{value:.3f}"
            png = save_scatter(ctx.artifacts_dir / "dist0_vs_atypicality.png", atypicality, radius,
                               xlabel="atypicality (1 − typicality)", ylabel="distance to the origin",
                               groups=labels, title=f"{ctx.dataset.name}, {self.cfg.split} split\npooled Spearman "
                                                    f"{pooled} (n = {len(idx)})")
            ctx.details["scatter"] = png.name
        return out
