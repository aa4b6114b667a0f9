"""Task ``ood``: out-of-distribution detection with scores from the method's geometry and head.

In-distribution (ID) = the dataset's ``test`` split (model trained on
``train``); OOD sets: ``near`` = the dataset's ``novel`` classes (when it has
that split), far = other datasets listed in ``far``: each a dataset name (its default config; its
``test`` split, else every image) or, as ``train_dataset`` takes one, a mapping with its ``name``, any
of its config keys and ``split``, the split read (Khrulkov et al.'s Omniglot:
``{name: omniglot, invert: true, split: novel}``, the evaluation alphabets with MNIST's background);
conformed to the ID images' channels and size, subsampled to ``max_far_images``. A far set is named
by its dataset, so two entries of one dataset are an error. A far dataset whose files are missing is an error before
any work (the sweep's requirement check lists where they go), as is a name no
plugin has; one that still fails to build when the cell evaluates (its plugin
breaks) is skipped with a note in ``details``.

Scores (higher = more in-distribution, for every score):

* ``dist0`` — geometry distance to the origin. Khrulkov et al. (CVPR 2020,
  Sec. 5 / Fig. 5: MNIST in, Omniglot out) find OOD and ambiguous images
  embedded near the centre of the Poincaré ball, so the score is ``+d(0, x)``;
* ``msp`` — maximum softmax probability of the method's logits (Hendrycks &
  Gimpel 2017; for a hyperbolic MLR head, its class probabilities);
* ``energy`` — ``logsumexp`` of the logits, i.e. the negative free energy at
  T = 1 (Liu et al. NeurIPS 2020);
* ``proto`` — ``-min_c d(x, p_c)``, the distance to the nearest class
  prototype (geometry's class prototypes of the ``train`` embeddings).

``msp`` and ``energy`` need logits; a method without a classifier skips them
(noted in ``details``). Metrics per (metric, score, set) are named
``{metric}/{score}/{set}``, e.g. ``auroc/energy/near``; see :func:`ood_metrics`.

A score that is degenerate over the pooled ID and OOD images (constant, or
float rounding only: :func:`harness.diagnostics.degenerate_reason`), or on which
more than half of the (ID, OOD) pairs tie
(:func:`harness.diagnostics.tied_pairs_reason`), gives
``null`` metrics with the reason, not the AUROC 0.5 / FPR 1.0 that ties
produce by construction (``dist0`` of clipped ``poincare_mlr``, whose
embeddings all lie on one sphere, is such a score).

``id_top1`` is the in-distribution accuracy beside every OOD number, as
OpenOOD reports it: a detector is only worth reading next to the classifier it
comes with. It is the top-1 accuracy on the ID ``test`` images of the
method's classifier (argmax of the logits, whose columns are the training
classes), or, for a method without one, of the nearest class prototype of the
``train`` split; ``details["id_top1/predictor"]`` says which, and
``details["id_top1/chance"]`` gives 1 / classes.

With ``save_embeddings=true`` the cell's ``.npz`` also holds what every score is computed from:
``train_indices`` / ``train_embeddings`` (the prototypes' split), ``far_<name>_indices`` (positions in
that dataset of the images read: its split, subsampled; ``details["far/<name>/split"]`` names the split,
``all`` for every image) / ``far_<name>_embeddings``, and ``<set>_logits`` (``id``, ``near``,
``far_<name>``) for a method with a classifier.

AUROCs far below 0.5 are real, not a bug: the OOD images then score as MORE
in-distribution than the ID ones. Far-OOD sets of high-contrast images
(glyphs: white strokes on black) give ReLU features of larger norm, hence
larger distances to the origin, logits and energies, the far-from-data
overconfidence of ReLU networks (Hein et al., CVPR 2019).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.config import far_dataset
from harness.diagnostics import collapsed_reason, degenerate_reason, tied_pairs_reason
from harness.errors import ConfigError, HarnessError, Incompatible, UnknownPluginError
from harness.task import UNIT, EvalContext, MetricValue, Protocol, Task

#: metric -> higher is better
OOD_METRICS = {"auroc": True, "aupr_in": True, "aupr_out": True,
               "fpr95_ood_positive": False, "fpr95_id_positive": False}
SCORES = ("dist0", "msp", "energy", "proto")
_IMAGE_CHUNK = 1024


def _binary_curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True/false positive counts at each distinct threshold, highest first (scikit-learn's
    ``_binary_clf_curve``: a sample is predicted positive when its score >= threshold)."""
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(is_pos)[last_of_group]
    fps = last_of_group + 1 - tps
    return tps, fps


def _fpr_at_tpr(pos: np.ndarray, neg: np.ndarray, tpr_level: float) -> float:
    """OpenOOD's ``fpr_list[np.argmax(tpr_list >= level)]`` on ``sklearn.metrics.roc_curve``
    (defaults, ``drop_intermediate=True``, replicated here): the FPR of the first ROC
    operating point, from the highest threshold down, whose TPR reaches ``tpr_level``."""
    tps, fps = _binary_curve(pos, neg)
    if len(fps) > 2:  # roc_curve drops points collinear with both neighbours
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps = tps[keep], fps[keep]
    tpr = np.r_[0, tps] / len(pos)
    fpr = np.r_[0, fps] / len(neg)
    return float(fpr[np.argmax(tpr >= tpr_level)])


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """scikit-learn's ``average_precision_score``: ``Σ_n (R_n - R_{n-1}) P_n`` over distinct
    thresholds (step-wise, no interpolation)."""
    tps, fps = _binary_curve(pos, neg)
    precision = tps / (tps + fps)
    recall = tps / len(pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos n_neg) with average ranks for ties (= ``roc_auc_score``)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def ood_metrics(id_scores: Any, ood_scores: Any, *, tpr_level: float = 0.95) -> dict[str, float]:
    """OOD detection metrics of scores where HIGHER means MORE in-distribution.

    * ``auroc`` — area under the ROC curve (ID vs OOD; the same for either as positive);
    * ``aupr_in`` — average precision with ID as positive and the score as is;
    * ``aupr_out`` — average precision with OOD as positive and the negated score
      (both scikit-learn's ``average_precision_score``, as in Hendrycks et al.'s
      Outlier Exposure code; OpenOOD integrates the PR curve by trapezoids instead);
    * ``fpr95_ood_positive`` — OpenOOD's FPR@95: OOD is the positive class; the fraction
      of ID samples flagged as OOD at the first threshold where 95% of OOD samples are flagged;
    * ``fpr95_id_positive`` — the classic FPR@95%TPR (Liang et al. 2018, ODIN): ID is the
      positive class; the fraction of OOD samples accepted as ID at the first threshold
      (from the top) where 95% of ID samples are accepted.

    Both FPRs take the first operating point of ``sklearn.metrics.roc_curve`` (default
    settings) whose TPR is >= ``tpr_level``, as OpenOOD does. Values in [0, 1].
    """
    if not 0 < tpr_level <= 1:
        raise ValueError(f"tpr_level is a true-positive rate in (0, 1], got {tpr_level}")
    pos = _as_scores(id_scores, "id_scores")
    neg = _as_scores(ood_scores, "ood_scores")
    return {
        "auroc": _auroc(pos, neg),
        "aupr_in": _average_precision(pos, neg),
        "aupr_out": _average_precision(-neg, -pos),
        "fpr95_ood_positive": _fpr_at_tpr(-neg, -pos, tpr_level),
        "fpr95_id_positive": _fpr_at_tpr(pos, neg, tpr_level),
    }


def _as_scores(x: Any, what: str) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: {int((~np.isfinite(arr)).sum())} of {arr.size} scores are NaN or inf")
    return arr


class OODMetrics:
    """Torchmetrics-style shell: ``update(scores, is_ood)`` accumulates, ``compute()`` returns
    :func:`ood_metrics`. ``higher_is_better`` per metric is :data:`OOD_METRICS`."""

    higher_is_better = OOD_METRICS

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._is_ood: list[np.ndarray] = []

    def update(self, scores: Any, is_ood: Any) -> None:
        s = scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
        o = is_ood.detach().cpu().numpy() if isinstance(is_ood, torch.Tensor) else np.asarray(is_ood)
        if s.shape != o.shape:
            raise ValueError(f"scores {s.shape} and is_ood {o.shape} differ in shape")
        self._scores.append(s.ravel())
        self._is_ood.append(o.astype(bool).ravel())

    def compute(self) -> dict[str, float]:
        s = np.concatenate(self._scores) if self._scores else np.empty(0)
        o = np.concatenate(self._is_ood) if self._is_ood else np.empty(0, bool)
        return ood_metrics(s[~o], s[o])


def ood_scores(names: list[str], embeddings: torch.Tensor, logits: torch.Tensor | None, geometry: Any,
               prototypes: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The requested scores (higher = more in-distribution) of one embedded set; a score whose
    input is missing (no logits) is left out."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "dist0":
            out[name] = geometry.dist0(embeddings)
        elif name in ("msp", "energy") and logits is not None:
            lg = logits.double()
            out[name] = lg.softmax(-1).amax(-1) if name == "msp" else torch.logsumexp(lg, -1)
        elif name == "proto" and prototypes is not None:
            out[name] = -geometry.pairwise_dist(embeddings, prototypes.to(embeddings)).amin(-1)
    return out


class OOD(Task):
    """ID ``test`` split vs near (``novel``) and far (other datasets) OOD sets."""

    VERSION = "2"
    requires = frozenset({"label"})
    METRICS = {**OOD_METRICS, "id_top1": True}
    BOUNDS = dict.fromkeys(METRICS, UNIT)  # auroc/<score>/<set> takes auroc's
    CONVENTION = ("scores are higher for in-distribution: dist0 = distance to the origin (Khrulkov et al.), "
                  "msp, energy, proto = −distance to the nearest class prototype; metric/score/set names; "
                  "fpr95_ood_positive = OpenOOD (OOD positive), fpr95_id_positive = classic (ID positive); "
                  "id_top1 = ID test accuracy of the classifier (nearest train prototype without one), to read "
                  "every OOD number with (OpenOOD); null = a score constant over ID and OOD images (AUROC 0.5 "
                  "by construction); AUROC far below 0.5 is real: OOD images score as more in-distribution, "
                  "e.g. high-contrast glyphs give ReLU features of larger norm (Hein et al. CVPR 2019)")

    @dataclass
    class Config:
        name: str = "ood"
        scores: list[str] = field(default_factory=lambda: list(SCORES))
        metrics: list[str] = field(default_factory=lambda: ["auroc", "fpr95_ood_positive", "fpr95_id_positive"])
        near: bool = True
        far: list[Any] = field(default_factory=lambda: ["glyphs"])  # names, or mappings (module docstring)
        max_far_images: int = 2000

        def validate(self) -> None:  # before any work (harness.config.validate)
            bad_s = [s for s in self.scores if s not in SCORES]
            bad_m = [m for m in self.metrics if m not in OOD_METRICS]
            if bad_s or bad_m or not self.scores or not self.metrics:
                raise ConfigError(f"ood: unknown or empty scores {bad_s or self.scores} / metrics "
                                  f"{bad_m or self.metrics}; scores are {list(SCORES)}, metrics {list(OOD_METRICS)}")
            if self.max_far_images < 1:
                raise ConfigError(f"ood: max_far_images must be >= 1, got {self.max_far_images}")
            from harness.registry import get_registry

            known = get_registry().specs("dataset")
            names = []
            for i, entry in enumerate(self.far):  # a typo is an error here; missing files, before any work (sweep)
                name = entry.get("name") if isinstance(entry, Mapping) else entry
                if isinstance(name, str) and name not in known:
                    raise UnknownPluginError("dataset", name, known, hint="(task.far names far OOD datasets)")
                names.append(far_dataset(entry, f"task.far[{i}]")[0]["name"])
            if twice := sorted({n for n in names if names.count(n) > 1}):
                raise ConfigError(f"ood: task.far lists {', '.join(twice)} more than once; a far set is named by its "
                                  "dataset, so list each dataset once")

    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        ev = {"id": dataset.split("test")}
        if self.cfg.near and "novel" in dataset.splits and len(dataset.splits["novel"]):
            ev["near"] = dataset.split("novel")
        if len(ev) == 1 and not self.cfg.far:
            raise Incompatible(f"dataset '{dataset.name}' has no 'novel' split (near OOD) and no far OOD "
                               "dataset is configured (task.far)")
        return Protocol(train=dataset.split("train"), train_label="label", eval=ev,
                        description="ID test split vs " + ", ".join(
                            [*(["near (novel classes)"] if "near" in ev else []),
                             *(e["name"] if isinstance(e, Mapping) else e for e in self.cfg.far)]))

    def _far_sets(self, ctx: EvalContext) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        from harness.data import conform_images, far_images
        from harness.registry import create

        out: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        skipped: dict[str, str] = {}
        info = ctx.dataset.info
        for i, entry in enumerate(self.cfg.far):
            node, split = far_dataset(entry, f"task.far[{i}]")
            name = node["name"]
            if name == ctx.dataset.name:
                skipped[name] = "it is the in-distribution dataset"
                continue
            try:
                far = create("dataset", node)
            except (HarnessError, FileNotFoundError, ImportError) as exc:
                skipped[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                continue
            idx, ctx.details[f"far/{name}/split"] = far_images(far, split, f"task.far[{i}]")
            if len(idx) > self.cfg.max_far_images:
                idx = np.sort(ctx.rng(f"ood/far/{name}").choice(idx, self.cfg.max_far_images, replace=False))
            emb, logits = [], []
            with far.reading_for_evaluation():
                for s in range(0, len(idx), _IMAGE_CHUNK):
                    images = conform_images(far.load_images(idx[s:s + _IMAGE_CHUNK]), channels=info.channels,
                                            size=tuple(info.image_size))
                    e = ctx.embed_images(images)
                    emb.append(e.embeddings)
                    logits.append(e.logits)
            out[name] = (torch.cat(emb), None if logits[0] is None else torch.cat(logits))
            ctx.details[f"far/{name}/num_images"] = len(idx)
            ctx.save_array(f"far_{name}_indices", idx)
            ctx.save_array(f"far_{name}_embeddings", out[name][0])
        if skipped:
            ctx.details["far_skipped"] = skipped
        return out

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        cfg = self.cfg
        geo = ctx.geometry
        ev = ctx.protocol.eval
        sets: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for key in ev:
            e = ctx.embed(ev[key])
            sets[key] = (e.embeddings, e.logits)
        sets.update(self._far_sets(ctx))
        if len(sets) == 1:
            raise Incompatible(f"no OOD set could be built: {ctx.details.get('far_skipped', {})}")
        for name, (emb, _) in sets.items():
            bad = int((~torch.isfinite(emb).all(-1)).sum())
            if bad:
                raise ValueError(f"{bad} of {len(emb)} embeddings of the '{name}' set contain NaN or inf")
        train = ctx.protocol.train
        tr_classes, labels = np.unique(ctx.annotation("label", train), return_inverse=True)
        tr = ctx.embed(train).embeddings
        # with save_embeddings=true, the .npz holds everything the scores below are computed from
        ctx.save_array("train_indices", train)
        ctx.save_array("train_embeddings", tr)
        for name, (_, lg) in sets.items():
            if lg is not None:
                ctx.save_array(f"{name if name in ev else f'far_{name}'}_logits", lg)
        prototypes = geo.class_prototypes(tr, torch.as_tensor(labels).to(tr.device), len(tr_classes))
        out: dict[str, MetricValue] = {"id_top1": self._id_top1(ctx, sets["id"], prototypes, tr_classes)}
        scores = {name: ood_scores(list(cfg.scores), emb, lg, geo, prototypes if "proto" in cfg.scores else None)
                  for name, (emb, lg) in sets.items()}
        missing = [s for s in cfg.scores if s not in scores["id"]]
        if missing:
            ctx.details["scores_skipped"] = {s: "the method has no logits" for s in missing}
        for set_name in sets:
            if set_name == "id":
                continue
            for score, id_s in scores["id"].items():
                if score not in scores[set_name]:
                    continue  # e.g. logits missing for outside images
                ood_s = scores[set_name][score]
                n = len(ood_s)
                what = f"the {score} score over the ID and '{set_name}' images"
                reason = degenerate_reason(torch.cat([id_s, ood_s]), what) or tied_pairs_reason(id_s, ood_s, what)
                if reason is not None:
                    for m in cfg.metrics:
                        out[f"{m}/{score}/{set_name}"] = MetricValue.undefined(reason, OOD_METRICS[m], n=n,
                                                                                bounds=self.bounds_of(m))
                    continue
                res = ood_metrics(id_s, ood_s)
                for m in cfg.metrics:
                    out[f"{m}/{score}/{set_name}"] = MetricValue(res[m], OOD_METRICS[m], n=n, bounds=self.bounds_of(m))
        ctx.details.update(num_id=len(ev["id"]), ood_sets={k: ("near" if k == "near" else "far")
                                                           for k in sets if k != "id"},
                           score_direction="higher = more in-distribution; dist0 = +distance to the origin",
                           fpr95="first roc_curve point with TPR >= 0.95; ood_positive = OpenOOD, "
                                 "id_positive = classic (ODIN)")
        if ctx.artifacts_dir is not None:
            self._histograms(ctx, scores)
        return out

    def _id_top1(self, ctx: EvalContext, id_set: tuple[torch.Tensor, torch.Tensor | None],
                 prototypes: torch.Tensor, tr_classes: np.ndarray) -> MetricValue:
        """ID test accuracy of the classifier (its logit k is the k-th sorted training class), else of the
        nearest train prototype."""
        emb, logits = id_set
        truth = ctx.annotation("label", ctx.protocol.eval["id"])
        ctx.details["id_top1/chance"] = 1.0 / len(tr_classes)
        if logits is not None and logits.shape[-1] == len(tr_classes):
            pred = tr_classes[logits.argmax(-1).cpu().numpy()]
            ctx.details["id_top1/predictor"] = (f"the method's classifier (argmax of its logits over the "
                                                f"{len(tr_classes)} training classes)")
        else:
            ctx.details["id_top1/predictor"] = ("nearest class prototype of the train split (geometry distance)"
                                                + ("" if logits is None else
                                                   f"; the logits have {logits.shape[-1]} columns, not one per "
                                                   f"training class ({len(tr_classes)})"))
            collapsed = collapsed_reason(emb, "ID embeddings") or collapsed_reason(prototypes, "train prototypes")
            if collapsed is not None:
                return MetricValue.undefined(collapsed, True, n=len(truth))
            dist = ctx.geometry.pairwise_dist(emb, prototypes.to(emb))
            pred = tr_classes[dist.argmin(-1).cpu().numpy()]
        return self.metric("id_top1", float((pred == truth).mean()), n=len(truth))

    @staticmethod
    def _histograms(ctx: EvalContext, scores: dict[str, dict[str, torch.Tensor]]) -> None:
        from harness.plots import save_histograms

        panels = {score: {set_name: per[score].cpu().numpy() for set_name, per in scores.items() if score in per}
                  for score in scores["id"]}
        path = save_histograms(ctx.artifacts_dir / "ood_scores.png", panels, xlabel="score (higher = ID)")
        ctx.details["histogram"] = path.name
