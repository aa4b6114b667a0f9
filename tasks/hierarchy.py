"""Task ``hierarchy``: how well the embedding reflects the label tree root → coarse → fine.

No reference codebase reports these together; the definitions:

* ``cpcc`` — Cophenetic Correlation Coefficient as in HypStructure (Sinha et
  al., NeurIPS 2024): Pearson correlation, over all pairs of fine classes, of
  the geometry distance between the class prototypes (geometry midpoints of
  the eval split's embeddings of each class) and their tree distance in the
  two-level tree (2 = same coarse class, 4 = different coarse classes;
  edge counts). Computed on class prototypes, not on samples. ``null`` if the
  prototype distances are degenerate (:mod:`harness.diagnostics`) or every pair
  has the same tree distance.
* ``top1`` — accuracy of the predictor whose mistakes ``mistake_severity``
  grades: the method's classifier (argmax of its logits, which cover the
  training split's fine classes, the same classes as the eval split) where it
  has one, else the nearest class prototype of the ``train`` split by the
  geometry's distance. ``details["top1/predictor"]`` says which; the other
  one's accuracy is in ``details`` too.
* ``mistake_severity`` — among the WRONG predictions of that predictor on the
  eval images, the mean tree distance between true and predicted class: 2
  (same coarse class) or 4 (different). In [2, 4]; lower is better (Bertinetto
  et al. CVPR 2020, "Making Better Mistakes", with the tree distance in edges
  instead of LCA height = distance / 2). It must be read with ``top1``: a
  classifier at chance makes mistakes of the chance severity, the expected
  tree distance of a uniformly random wrong prediction
  (:func:`harness.tasks._tree.chance_severity`, closed form from the class
  counts), given in ``details["mistake_severity/chance"]`` (with
  ``details["top1/chance"]``). ``n`` = number of mistakes; ``null`` if there is
  none.
* ``dist0_angle_spearman`` — does an image's distance to the origin follow how
  typical it is of its class? Per fine class of the eval split, the Spearman
  correlation between each image's distance to the origin and its angle at the
  origin to the class direction (the direction of the class prototype of the
  ``train`` split), then the unweighted mean over classes (each class one unit;
  ``ci95`` = 1.96 · std / sqrt(classes) across classes; classes where it is
  undefined are listed in ``details``). Positive = images close to their class
  direction (typical) lie nearer the origin, HACK's prototypicality (Zhao et
  al., "Unsupervised Feature Learning with Emergent Data-Driven
  Prototypicality"); Khrulkov et al. (CVPR 2020) find ambiguous images near
  the centre, which gives a negative value. Why the angle: the typicality
  measure must not depend on the radius it is compared with. The distance to
  the class prototype does: on random embeddings centred at the origin the
  prototype sits at the origin and that correlation is ≈ +1, measuring
  nothing. For an isotropic distribution the direction is independent of the
  norm, and the train prototype is independent of the eval image, so the
  expected value on random embeddings is exactly 0. The angle at the origin is
  the Riemannian angle there for the Euclidean space and the Poincaré ball
  (conformal, geodesics through the origin are straight), so it is computed
  from the coordinates. ``null`` where the distances to the origin are
  degenerate (e.g. every embedding on one sphere, as feature clipping does).

  This replaces ``depth_spearman`` (task version 1), the Spearman correlation of
  the distance to the origin with the depth over the pooled coarse prototypes,
  fine prototypes and images. That measured that averaging shrinks prototypes
  towards the origin, which any embedding shows (random Gaussian embeddings
  scored 0.395–0.444), and on one-sphere embeddings it ranked float rounding.

The eval split is ``test`` (held-out images of the training classes), so the
trained model's classes, prototypes and mistakes are defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.diagnostics import MIN_DISTINCT, collapsed_reason
from harness.errors import Incompatible
from harness.task import NON_NEGATIVE, SIGNED_UNIT, UNIT, EvalContext, MetricValue, Protocol, Task
from harness.tasks._correlation import correlation_or_reason, pearson, per_group_spearman, spearman
from harness.tasks._tree import Tree, chance_severity, fine_to_coarse, tree_distance

__all__ = ["Hierarchy", "MistakeSeverity", "angle_to", "chance_severity", "cpcc", "cpcc_or_reason",
           "fine_to_coarse", "pearson", "spearman", "tree_distance"]

#: Geometries whose angle at the origin is the angle between the coordinate vectors.
_CONFORMAL_AT_ORIGIN = ("euclidean", "poincare")


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def cpcc(prototype_dist: Any, classes: np.ndarray, parent: Tree | dict[int, int]) -> float:
    """Pearson correlation of prototype distances ``(C, C)`` with tree distances, upper triangle."""
    d = _as_numpy(prototype_dist)
    iu = np.triu_indices(len(classes), k=1)
    return pearson(d[iu], tree_distance(classes[iu[0]], classes[iu[1]], parent))


def cpcc_or_reason(prototype_dist: Any, classes: np.ndarray, parent: Tree | dict[int, int]) -> tuple[float | None, str | None]:
    """:func:`cpcc`, or ``(None, reason)`` when the prototype distances are degenerate or the
    tree distances constant. With fewer class pairs than
    :data:`~harness.diagnostics.MIN_DISTINCT` (3 classes: 3 pairs), the pairs' distances are
    degenerate only when two of them coincide."""
    d = _as_numpy(prototype_dist)
    iu = np.triu_indices(len(classes), k=1)
    return correlation_or_reason(d[iu], tree_distance(classes[iu[0]], classes[iu[1]], parent), method="pearson",
                                 x_what="the distance between class prototypes",
                                 y_what="the tree distance between the eval classes",
                                 x_min_distinct=min(MIN_DISTINCT, len(iu[0])), y_min_distinct=2)


def angle_to(x: torch.Tensor, directions: torch.Tensor) -> np.ndarray:
    """Angle in radians, in [0, π], between each row of ``x`` and the matching row of ``directions``.

    Computed as ``2·atan2(‖x̂ − d̂‖, ‖x̂ + d̂‖)`` of the unit vectors (Kahan's formula, accurate
    for small and large angles alike, unlike ``arccos`` of the cosine). A zero row has no
    direction: its angle is NaN.
    """
    x, d = x.detach().double(), directions.detach().double()
    xn, dn = torch.linalg.vector_norm(x, dim=-1, keepdim=True), torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    xu, du = x / xn, d / dn
    ang = 2 * torch.atan2(torch.linalg.vector_norm(xu - du, dim=-1), torch.linalg.vector_norm(xu + du, dim=-1))
    ang[(xn.squeeze(-1) == 0) | (dn.squeeze(-1) == 0)] = float("nan")
    return ang.cpu().numpy()


class MistakeSeverity:
    """Torchmetrics-style shell: ``update(pred, target)`` with fine class ids, ``compute()``
    = mean tree distance over the wrong predictions (``nan`` if none) and the mistake count."""

    higher_is_better = False

    def __init__(self, parent: Tree | dict[int, int]) -> None:
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
    """CPCC, top-1 with mistake severity, and the radius–angle Spearman correlation on the ``test`` split."""

    VERSION = "2"
    requires = frozenset({"label", "coarse_label"})
    METRICS = {"cpcc": True, "top1": True, "mistake_severity": False, "dist0_angle_spearman": True}
    BOUNDS = {"cpcc": SIGNED_UNIT, "top1": UNIT, "mistake_severity": NON_NEGATIVE, "dist0_angle_spearman": SIGNED_UNIT}
    CONVENTION = ("tree root → coarse → fine (distances 0/2/4; a dataset's deeper lineage gives 0, 2, …, 2L): CPCC = Pearson correlation of fine-prototype "
                  "distances with tree distances; top1 and mistake severity (mean tree distance of the wrong "
                  "predictions, Bertinetto et al. 2020) of one predictor: the classifier where the method has "
                  "one, else the nearest train prototype; a predictor at chance has the chance severity of the "
                  "result's details; dist0_angle_spearman = per-class Spearman of the distance to the origin "
                  "with the angle to the class direction, averaged over classes (positive = typical images "
                  "nearer the origin; 0 on random embeddings); null = undefined, with the reason")

    @dataclass
    class Config:
        name: str = "hierarchy"
        split: str = "test"

    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        idx = dataset.split(self.cfg.split)
        try:
            tree = Tree.from_annotations(dataset.annotations)
        except ValueError as exc:
            raise Incompatible(f"dataset '{dataset.name}': {exc}") from exc
        if len(tree.top_level()) < 2:
            raise Incompatible(f"dataset '{dataset.name}' has a single coarse class: tree distances are constant")
        if len(np.unique(dataset.annotations["label"][idx])) < 3:
            raise Incompatible(f"split '{self.cfg.split}' of dataset '{dataset.name}' has fewer than 3 fine classes")
        return Protocol(train=dataset.split("train"), train_label="label", eval={self.cfg.split: idx},
                        description=f"CPCC, top-1 and mistake severity, radius–angle Spearman on split "
                                    f"'{self.cfg.split}'")

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        geo = ctx.geometry
        idx, train = ctx.protocol.eval[self.cfg.split], ctx.protocol.train
        fine, coarse = ctx.annotation("label", idx), ctx.annotation("coarse_label", idx)
        parent = Tree.from_annotations(ctx.dataset.annotations)
        ev = ctx.embed(idx)
        emb = ev.embeddings.to(ctx.device)
        tr_emb = ctx.embed(train).embeddings.to(ctx.device)
        for what, e in (("eval", emb), ("train", tr_emb)):
            bad = int((~torch.isfinite(e).all(-1)).sum())
            if bad:
                raise ValueError(f"{bad} of {len(e)} {what} embeddings contain NaN or inf")
        out: dict[str, MetricValue] = {}

        classes, inv = np.unique(fine, return_inverse=True)
        protos = geo.class_prototypes(emb, torch.as_tensor(inv, device=emb.device), len(classes))
        value, reason = cpcc_or_reason(geo.pairwise_dist(protos), classes, parent)
        out["cpcc"] = self.metric("cpcc", value, reason=reason, n=len(classes))

        tr_classes, tr_inv = np.unique(ctx.annotation("label", train), return_inverse=True)
        tr_protos = geo.class_prototypes(tr_emb, torch.as_tensor(tr_inv, device=tr_emb.device), len(tr_classes))
        out.update(self._predictions(ctx, ev.logits, emb, tr_emb, tr_protos, tr_classes, fine, parent))
        out["dist0_angle_spearman"] = self._radius_angle(ctx, emb, tr_protos, tr_classes, fine)

        ctx.details.update(num_fine_classes=len(classes), num_coarse_classes=len(np.unique(coarse)),
                           tree_depth=parent.depth)
        if ctx.artifacts_dir is not None:
            self._histogram(ctx, geo.dist0(emb).cpu().numpy())
            from harness.plots import save_disk

            disk = save_disk(ctx.artifacts_dir / "embeddings_disk.png", emb.cpu().numpy(), coarse,
                             geometry=geo, title=f"{ctx.dataset.name}: {len(emb)} images by coarse class")
            ctx.details["disk"] = disk.name
        return out

    def _predictions(self, ctx: EvalContext, logits: torch.Tensor | None, emb: torch.Tensor, tr_emb: torch.Tensor,
                     tr_protos: torch.Tensor, tr_classes: np.ndarray, fine: np.ndarray,
                     parent: Tree) -> dict[str, MetricValue]:
        """``top1`` and ``mistake_severity`` of one predictor (the classifier, else the nearest train prototype)."""
        geo = ctx.geometry
        collapsed = collapsed_reason(emb, "eval embeddings") or collapsed_reason(tr_protos, "train prototypes")
        proto_pred = None
        if collapsed is None:
            proto_pred = tr_classes[geo.pairwise_dist(emb, tr_protos).argmin(-1).cpu().numpy()]
            ctx.details["nearest_prototype_accuracy"] = float((proto_pred == fine).mean())
        # The engine's logit k is the k-th sorted training label: the columns are ``tr_classes``.
        if logits is not None and logits.shape[-1] == len(tr_classes):
            pred = tr_classes[logits.argmax(-1).cpu().numpy()]
            ctx.details["classifier_accuracy"] = float((pred == fine).mean())
            ctx.details["top1/predictor"] = (f"the method's classifier (argmax of its logits over the "
                                             f"{len(tr_classes)} training classes)")
        else:
            pred = proto_pred
            ctx.details["top1/predictor"] = ("nearest class prototype of the train split (geometry distance)"
                                             + ("" if logits is None else
                                                f"; the logits have {logits.shape[-1]} columns, not one per "
                                                f"training class ({len(tr_classes)})"))
        ctx.details["top1/chance"] = float(np.isin(fine, tr_classes).mean() / len(tr_classes))
        ctx.details["mistake_severity/chance"] = chance_severity(fine, tr_classes, parent)
        if pred is None:
            return {"top1": self.metric("top1", None, reason=collapsed, n=len(fine)),
                    "mistake_severity": self.metric("mistake_severity", None, reason=collapsed)}
        meter = MistakeSeverity(parent)
        meter.update(pred, fine)
        severity, n_wrong = meter.compute()
        out = {"top1": self.metric("top1", float((pred == fine).mean()), n=len(fine))}
        out["mistake_severity"] = (self.metric("mistake_severity", severity, n=n_wrong) if n_wrong else
                                   self.metric("mistake_severity", None, n=0,
                                               reason="no mistakes (top1 = 1): severity is undefined"))
        return out

    def _radius_angle(self, ctx: EvalContext, emb: torch.Tensor, tr_protos: torch.Tensor, tr_classes: np.ndarray,
                      fine: np.ndarray) -> MetricValue:
        geo = ctx.geometry
        # directions at the origin: the coordinates where the model is conformal there (no rounding from a
        # log map), else the geometry's log map (the hyperboloid's space parts)
        dirs, proto_dirs = emb, tr_protos
        if geo.name not in _CONFORMAL_AT_ORIGIN:
            if not callable(getattr(geo, "logmap0", None)):
                return self.metric("dist0_angle_spearman", None, reason=f"geometry '{geo.name}' has no logmap0, "
                                   "so the angle at the origin is not defined for it")
            dirs, proto_dirs = geo.logmap0(emb), geo.logmap0(tr_protos)
        known = np.isin(fine, tr_classes)
        if not known.any():
            return self.metric("dist0_angle_spearman", None, reason="no eval class has train images (no prototype)")
        rows = np.searchsorted(tr_classes, fine[known])
        angle = angle_to(dirs[torch.as_tensor(np.flatnonzero(known), device=dirs.device)],
                         proto_dirs[torch.as_tensor(rows, device=proto_dirs.device)])
        radius = geo.dist0(emb).detach().cpu().double().numpy()[known]
        has_dir = np.isfinite(angle)  # an image or prototype at the origin has no direction
        res = per_group_spearman(radius[has_dir], angle[has_dir], fine[known][has_dir],
                                 x_what="the distance to the origin", y_what="the angle to the class direction")
        ctx.details["dist0_angle_spearman/skipped_classes"] = res["skipped"]
        ctx.details["dist0_angle_spearman/averaging"] = ("unweighted mean over classes of the per-class Spearman "
                                                         "correlation; ci95 = 1.96 std / sqrt(classes)")
        if res["mean"] is None:
            return self.metric("dist0_angle_spearman", None, reason=res["reason"], n=0)
        return self.metric("dist0_angle_spearman", res["mean"], ci95=res["ci95"], n=res["n"])

    @staticmethod
    def _histogram(ctx: EvalContext, radius: np.ndarray) -> None:
        from harness.plots import save_histograms

        path = save_histograms(ctx.artifacts_dir / "hierarchy_dist0.png",
                               {"distance to the origin": {"eval images": radius}}, bins=40)
        ctx.details["histogram"] = path.name
