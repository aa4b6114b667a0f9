"""Task ``hierarchy``: how well the embedding reflects the label tree root → coarse → fine.

No reference codebase reports these together; the definitions:

* ``cpcc`` — Cophenetic Correlation Coefficient as in HypStructure (Sinha et
  al., NeurIPS 2024): Pearson correlation, over all pairs of fine classes, of
  the geometry distance between the class prototypes (geometry midpoints of
  the eval split's embeddings of each class) and their tree distance in the
  two-level tree (2 = same coarse class, 4 = different coarse classes;
  edge counts). Computed on class prototypes, not on samples.
* ``mistake_severity`` — among the WRONG nearest-prototype predictions of the
  eval images (prototypes of the fine classes from the ``train`` split), the
  mean tree distance between true and predicted class: 2 (same coarse class)
  or 4 (different). In [2, 4]; lower is better (Bertinetto et al. CVPR 2020,
  "Making Better Mistakes", with the tree distance in edges instead of LCA
  height = distance / 2). Reported with ``n`` = number of mistakes; absent if
  there is none.
* ``depth_spearman`` — Spearman rank correlation between the distance to the
  origin and the tree depth over one pooled set of points: the coarse class
  prototypes (depth 1), the fine class prototypes (depth 2) and the eval
  images (depth 3), all from the eval split. Positive = more specific points
  lie farther from the origin, the behaviour hyperbolic embeddings are
  expected to show (Khrulkov et al. 2020; HACK, 2023).

The eval split is ``test`` (held-out images of the training classes), so the
trained model's classes, prototypes and mistakes are defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.errors import Incompatible
from harness.task import EvalContext, MetricValue, Protocol, Task


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation of two 1-D arrays (float64); an error if either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"pearson needs two 1-D arrays of equal length >= 2, got {x.shape} and {y.shape}")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    if den == 0:
        raise ValueError("correlation is undefined: one of the arrays is constant")
    return float((xc * yc).sum() / den)


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks (ties get average ranks)."""
    from scipy.stats import rankdata

    return pearson(rankdata(np.asarray(x, dtype=np.float64)), rankdata(np.asarray(y, dtype=np.float64)))


def fine_to_coarse(fine: np.ndarray, coarse: np.ndarray) -> dict[int, int]:
    """The parent of each fine class; an error if a fine class has two parents (not a tree)."""
    pairs = np.unique(np.stack([np.asarray(fine), np.asarray(coarse)], 1), axis=0)
    parents: dict[int, int] = {}
    for f, c in pairs:
        if int(f) in parents:
            raise ValueError(f"fine class {int(f)} has coarse labels {parents[int(f)]} and {int(c)}: "
                             "the labels do not form a tree")
        parents[int(f)] = int(c)
    return parents


def tree_distance(a: np.ndarray, b: np.ndarray, parent: dict[int, int]) -> np.ndarray:
    """Edges between fine classes in root → coarse → fine: 0 same, 2 same parent, 4 otherwise."""
    a, b = np.asarray(a), np.asarray(b)
    pa = np.vectorize(parent.__getitem__, otypes=[np.int64])(a) if a.size else a
    pb = np.vectorize(parent.__getitem__, otypes=[np.int64])(b) if b.size else b
    return np.where(a == b, 0, np.where(pa == pb, 2, 4))


def cpcc(prototype_dist: Any, classes: np.ndarray, parent: dict[int, int]) -> float:
    """Pearson correlation of prototype distances ``(C, C)`` with tree distances, upper triangle."""
    d = prototype_dist.detach().cpu().double().numpy() if isinstance(prototype_dist, torch.Tensor) \
        else np.asarray(prototype_dist, dtype=np.float64)
    iu = np.triu_indices(len(classes), k=1)
    return pearson(d[iu], tree_distance(classes[iu[0]], classes[iu[1]], parent))


class MistakeSeverity:
    """Torchmetrics-style shell: ``update(pred, target)`` with fine class ids, ``compute()``
    = mean tree distance over the wrong predictions (``nan`` if none) and the mistake count."""

    higher_is_better = False

    def __init__(self, parent: dict[int, int]) -> None:
        self.parent = parent
        self.reset()

    def reset(self) -> None:
        self._sum, self._n = 0.0, 0

    def update(self, pred: Any, target: Any) -> None:
        pred, target = np.asarray(pred), np.asarray(target)
        wrong = pred != target
        self._sum += float(tree_distance(pred[wrong], target[wrong], self.parent).sum())
        self._n += int(wrong.sum())

    def compute(self) -> tuple[float, int]:
        return (self._sum / self._n if self._n else float("nan")), self._n


class Hierarchy(Task):
    """CPCC, mistake severity and depth–norm Spearman correlation on the ``test`` split."""

    VERSION = "1"
    requires = frozenset({"label", "coarse_label"})
    METRICS = {"cpcc": True, "mistake_severity": False, "depth_spearman": True}
    CONVENTION = ("tree root → coarse → fine (distances 0/2/4): CPCC = Pearson correlation of fine-prototype "
                  "distances with tree distances; mistake severity = mean tree distance of wrong nearest-prototype "
                  "predictions; depth_spearman = Spearman of distance to the origin with depth")

    @dataclass
    class Config:
        name: str = "hierarchy"
        split: str = "test"

    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        idx = dataset.split(self.cfg.split)
        try:
            parent = fine_to_coarse(dataset.annotations["label"], dataset.annotations["coarse_label"])
        except ValueError as exc:
            raise Incompatible(f"dataset '{dataset.name}': {exc}") from exc
        if len(set(parent.values())) < 2:
            raise Incompatible(f"dataset '{dataset.name}' has a single coarse class: tree distances are constant")
        if len(np.unique(dataset.annotations["label"][idx])) < 3:
            raise Incompatible(f"split '{self.cfg.split}' of dataset '{dataset.name}' has fewer than 3 fine classes")
        return Protocol(train=dataset.split("train"), train_label="label", eval={self.cfg.split: idx},
                        description=f"CPCC, mistake severity, depth Spearman on split '{self.cfg.split}'")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        geo = ctx.geometry
        idx, train = ctx.protocol.eval[self.cfg.split], ctx.protocol.train
        fine, coarse = ctx.annotation("label", idx), ctx.annotation("coarse_label", idx)
        parent = fine_to_coarse(ctx.dataset.annotations["label"], ctx.dataset.annotations["coarse_label"])
        emb = ctx.embed(idx).embeddings.to(ctx.device)
        tr_emb = ctx.embed(train).embeddings.to(ctx.device)
        for what, e in (("eval", emb), ("train", tr_emb)):
            bad = int((~torch.isfinite(e).all(-1)).sum())
            if bad:
                raise ValueError(f"{bad} of {len(e)} {what} embeddings contain NaN or inf")
        out: dict[str, MetricValue] = {}

        classes, inv = np.unique(fine, return_inverse=True)
        protos = geo.class_prototypes(emb, torch.as_tensor(inv, device=emb.device), len(classes))
        out["cpcc"] = self.metric("cpcc", cpcc(geo.pairwise_dist(protos), classes, parent), n=len(classes))

        tr_classes, tr_inv = np.unique(ctx.annotation("label", train), return_inverse=True)
        tr_protos = geo.class_prototypes(tr_emb, torch.as_tensor(tr_inv, device=tr_emb.device), len(tr_classes))
        meter = MistakeSeverity(parent)
        pred = tr_classes[geo.pairwise_dist(emb, tr_protos).argmin(-1).cpu().numpy()]
        meter.update(pred, fine)
        severity, n_wrong = meter.compute()
        if n_wrong:
            out["mistake_severity"] = self.metric("mistake_severity", severity, n=n_wrong)
        else:
            ctx.details["mistake_severity"] = "no mistakes: severity undefined"

        c_classes, c_inv = np.unique(coarse, return_inverse=True)
        c_protos = geo.class_prototypes(emb, torch.as_tensor(c_inv, device=emb.device), len(c_classes))
        norms = [geo.dist0(p).cpu().numpy() for p in (c_protos, protos, emb)]
        depth = np.concatenate([np.full(len(n), level) for level, n in zip((1, 2, 3), norms)])
        out["depth_spearman"] = self.metric("depth_spearman", spearman(np.concatenate(norms), depth),
                                            n=len(depth))
        ctx.details.update(num_fine_classes=len(classes), num_coarse_classes=len(c_classes),
                           nearest_prototype_accuracy=float((pred == fine).mean()))
        if ctx.artifacts_dir is not None:
            self._histogram(ctx, norms)
            from harness.plots import save_disk

            disk = save_disk(ctx.artifacts_dir / "embeddings_disk.png", emb.cpu().numpy(), coarse,
                             geometry=geo, title=f"{ctx.dataset.name}: {len(emb)} images by coarse class")
            ctx.details["disk"] = disk.name
        return out

    @staticmethod
    def _histogram(ctx: EvalContext, norms: list[np.ndarray]) -> None:
        from harness.plots import save_histograms

        series = dict(zip(("coarse prototypes", "fine prototypes", "images"), norms))
        path = save_histograms(ctx.artifacts_dir / "hierarchy_dist0.png", {"distance to the origin": series},
                               bins=40)
        ctx.details["histogram"] = path.name
