"""The task plugin API: a split protocol and metrics, measured in the method's geometry.

A task plugin subclasses :class:`Task`: :meth:`Task.protocol` turns a dataset
into a :class:`Protocol` (which images train the model, which evaluate it),
and :meth:`Task.evaluate` turns an :class:`EvalContext` into metrics. The
engine trains the model once per (method, backbone, training data, seed), and
every task with the same training data shares it. A task that must train on
top of it (a detector) returns a :class:`harness.finetune.Finetune` from
:meth:`Task.finetune`; the core runs, caches and resumes that stage, and
``ctx.finetuned`` holds the result in :meth:`Task.evaluate`.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.bounds import NON_NEGATIVE, SIGNED_UNIT, UNIT, check_bounds, within_bounds
from harness.errors import Incompatible


@dataclass
class MetricValue:
    """One metric of one cell.

    ``ci95`` is the task's own per-run interval half-width (e.g. over few-shot
    episodes); the leaderboard's interval is over seeds and is computed there.

    A metric that is undefined for this cell (a constant score, a correlation
    with a constant side, a severity without mistakes, ...) has ``value=None``
    and a ``reason`` saying why: it is never replaced by a number that only
    reflects the degenerate input (an AUROC of 0.5 for a constant score). Build
    one with :meth:`undefined`. JSON: ``{"value": null, "reason": "...",
    "higher_is_better": ...}``; a number has no ``reason`` key.
    """

    value: float | None
    higher_is_better: bool
    ci95: float | None = None
    n: int | None = None
    reason: str | None = None
    #: ``(low, high)``: the values the metric can take (``None`` for an open side), e.g. :data:`UNIT` for a
    #: rate. A value outside fails the cell (:func:`checked_metrics`: a bug in the task) and is refused in
    #: a result file (edited by hand).
    bounds: tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        if self.bounds is not None:
            self.bounds = check_bounds(self.bounds)
        if self.value is None:
            if not self.reason:
                raise ValueError("a metric without a value needs a reason (MetricValue.undefined(reason, ...))")
            self.ci95 = None
            return
        if self.reason is not None:
            raise ValueError(f"a metric with a value ({self.value}) takes no reason; put notes in the "
                             "task's details")
        v = self.value
        scalar = v.ndim == 0 if isinstance(v, (np.ndarray, torch.Tensor)) else (
            isinstance(v, numbers.Real) and not isinstance(v, bool))
        if not scalar:
            raise TypeError(f"a metric's value is a real number (or None with a reason), got "
                            f"{type(v).__name__} {str(v)[:60]}")
        self.value = float(v)
        if not math.isfinite(self.value):
            # NaN / inf would be written as null without a word: name it instead
            self.reason = f"the computation gave a non-finite value ({self.value})"
            self.value = None
            self.ci95 = None

    @classmethod
    def undefined(cls, reason: str, higher_is_better: bool, *, n: int | None = None,
                  bounds: tuple[float | None, float | None] | None = None) -> MetricValue:
        """A metric that has no value for this cell, with the reason."""
        return cls(None, higher_is_better, n=n, reason=reason, bounds=bounds)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": None if self.value is None else _finite(self.value),
                               "higher_is_better": self.higher_is_better}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.ci95 is not None:
            out["ci95"] = _finite(self.ci95)
        if self.n is not None:
            out["n"] = int(self.n)
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        return out


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class Protocol:
    """How a task uses a dataset.

    ``train``: indices of the training images; ``train_label``: the annotation
    the model trains on (``None`` trains without labels, so only
    unsupervised methods make sense); ``eval``: named index sets the task
    evaluates on. Two tasks with equal ``train`` and ``train_label`` share one
    trained model.
    """

    train: np.ndarray
    train_label: str | None = "label"
    eval: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""


@dataclass
class Embedded:
    """A set of images seen through a trained model (all on CPU)."""

    embeddings: torch.Tensor  # (n, dim) in the method's geometry
    features: torch.Tensor  # (n, feat_dim) raw backbone features
    logits: torch.Tensor | None  # (n, classes) or None


class EvalContext:
    """What a task sees of a trained model. Embeddings are computed once and cached."""

    def __init__(self, *, dataset: Any, protocol: Protocol, method: Any, embed_fn: Any,
                 seed: int, device: torch.device, artifacts_dir: Path | None = None,
                 finetuned: Any = None) -> None:
        self.dataset = dataset
        self.protocol = protocol
        self.method = method
        self.geometry = method.geometry
        self.seed = seed
        self.device = device
        self.artifacts_dir = artifacts_dir
        self.details: dict[str, Any] = {}  # non-metric facts written to the result JSON
        #: Arrays beside the evaluation splits' embeddings in the cell's ``.npz`` (``save_embeddings=true``).
        self.arrays: dict[str, np.ndarray] = {}
        #: The model the task fine-tuned in its :meth:`Task.finetune` stage (eval mode), else None.
        self.finetuned = finetuned
        self._embed_fn = embed_fn

    def embed(self, indices: np.ndarray) -> Embedded:
        """Embeddings, backbone features and logits of the images at ``indices``."""
        return self._embed_fn(np.asarray(indices, dtype=np.int64))

    def embed_images(self, images: torch.Tensor) -> Embedded:
        """Embed uint8 images from outside the dataset (e.g. an OOD set), not cached.

        Convert them first with :func:`harness.data.conform_images` to the
        dataset's channels and size (``ctx.dataset.info``).
        """
        return self._embed_fn(images)

    def save_array(self, name: str, array: Any) -> None:
        """Keep ``array`` for the cell's ``.npz`` (written only with ``save_embeddings=true``), so what the
        metrics were computed from can be recomputed: e.g. OOD's far sets, which are not dataset splits.
        ``name`` is the key in the file: letters, digits, ``_``, ``-`` and ``.``."""
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ValueError(f"save_array: name {name!r} may hold only letters, digits, '_', '-' and '.'")
        if name in self.arrays:
            raise ValueError(f"save_array: {name!r} was already saved by this evaluation")
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        self.arrays[name] = np.asarray(array)

    def annotation(self, name: str, indices: np.ndarray) -> np.ndarray:
        """One annotation array restricted to ``indices``."""
        if name not in self.dataset.annotations:
            raise Incompatible(f"dataset '{self.dataset.name}' has no '{name}' annotation")
        return self.dataset.annotations[name][np.asarray(indices, dtype=np.int64)]

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded by the cell's seed (and ``salt``), identical across runs."""
        return np.random.default_rng([self.seed, *salt.encode()])


class Task:
    """Base class of task plugins.

    ``requires``: annotations the dataset must have (else the cell is skipped);
    ``METRICS``: metric name → higher is better (for the leaderboard arrows);
    ``BOUNDS``: metric name (or the part of a name before its first ``/``) → the values it can take,
    ``(low, high)`` with ``None`` for an open side (:data:`UNIT`, :data:`SIGNED_UNIT`,
    :data:`NON_NEGATIVE`); a value outside fails the cell, and is refused in a result file;
    ``UNRANKED``: metric name → why it is never bolded as best (values not comparable
    across rows; ``unranked_reason(name)`` for names that depend on the config); ``metric_header(name, details)``: a column's header given the results'
    details (e.g. ``delta_rel [exact]``). Bump ``VERSION`` whenever the protocol or a
    metric changes.
    """

    VERSION: ClassVar[str] = "1"
    requires: ClassVar[frozenset[str]] = frozenset({"label"})
    METRICS: ClassVar[dict[str, bool]] = {}
    BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
    #: One sentence on the protocol and metric conventions (a leaderboard footnote, stored in the result's
    #: ``details.convention``; a ``convention`` the task writes into ``ctx.details`` itself takes its place).
    CONVENTION: ClassVar[str] = ""
    #: Metrics shown but never bolded as "best", with the reason (a footnote): values that are not
    #: comparable across rows, e.g. in each geometry's own units.
    UNRANKED: ClassVar[dict[str, str]] = {}

    @classmethod
    def unranked_reason(cls, name: str) -> str | None:
        """Why the leaderboard never bolds metric ``name`` as best (None: it is ranked); by default
        ``UNRANKED``'s entry. Override for metric names that depend on the task's config."""
        return cls.UNRANKED.get(name)

    @classmethod
    def bounds_of(cls, name: str) -> tuple[float | None, float | None] | None:
        """The bounds of metric ``name`` in ``BOUNDS``: its own entry, else its family's (the part before the
        first ``/``: ``auroc`` for ``auroc/dist0/far``); None when neither is declared."""
        return cls.BOUNDS.get(name, cls.BOUNDS.get(name.split("/", 1)[0]))

    @classmethod
    def metric_header(cls, name: str, details: list[dict[str, Any]]) -> str:
        """The column header of ``name`` in a leaderboard, given the ``details`` of its results (e.g. to
        name the estimator that produced it)."""
        return name

    @dataclass
    class Config:
        name: str = ""

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
        from harness.config import run_validate

        run_validate(self.cfg)  # a task's Config.validate() checks its values (the run also does, before any work)

    @property
    def name(self) -> str:
        return str(getattr(self.cfg, "name", "")) or type(self).__name__

    def check(self, dataset: Any) -> None:
        """Raise :class:`Incompatible` if the dataset lacks what the task needs."""
        missing = set(self.requires) - set(dataset.provides)
        if missing:
            raise Incompatible(f"task '{self.name}' needs annotation(s) {sorted(missing)}, "
                               f"which dataset '{dataset.name}' does not have")

    def protocol(self, dataset: Any) -> Protocol:
        """The task's splits of ``dataset``; raise :class:`Incompatible` where it cannot run."""
        raise NotImplementedError

    def finetune(self, ctx: Any) -> Any:
        """The task's fine-tuning stage (:class:`harness.finetune.Finetune`) given a
        :class:`harness.finetune.FinetuneContext`, or None (the default: the task only evaluates)."""
        return None

    def evaluate(self, ctx: EvalContext) -> dict[str, MetricValue]:
        """Metrics of one trained model."""
        raise NotImplementedError

    def metric(self, name: str, value: float | None, *, reason: str | None = None, **kw: Any) -> MetricValue:
        """A :class:`MetricValue` whose direction comes from ``METRICS`` and bounds from ``BOUNDS``;
        ``value=None`` needs a ``reason``."""
        if name not in self.METRICS:
            raise KeyError(f"{type(self).__name__}.metric({name!r}): {name!r} is not in {type(self).__name__}.METRICS "
                           f"({', '.join(self.METRICS) or 'empty'}); add it there with its direction "
                           "(name: higher_is_better), or build MetricValue(value, higher_is_better) yourself")
        kw.setdefault("bounds", self.bounds_of(name))
        return MetricValue(None if value is None else value, self.METRICS[name], reason=reason, **kw)


def checked_metrics(task: Any, metrics: Any) -> dict[str, MetricValue]:
    """What ``task.evaluate`` returned, checked: a non-empty ``{name: MetricValue}`` mapping, each value
    within its ``bounds`` (the error names the task and what it returned instead)."""
    where = f"task '{getattr(getattr(task, 'cfg', None), 'name', type(task).__name__)}': evaluate()"
    if not isinstance(metrics, dict):
        raise TypeError(f"{where} returned {type(metrics).__name__}, not a dict {{name: MetricValue}} "
                        "(build each value with self.metric(name, value))")
    if not metrics:
        raise ValueError(f"{where} returned no metrics; a task that cannot run on a dataset raises "
                         "harness.errors.Incompatible in protocol() instead")
    bad = {k: type(v).__name__ for k, v in metrics.items() if not isinstance(k, str) or not isinstance(v, MetricValue)}
    if bad:
        raise TypeError(f"{where} returned values that are not MetricValue: {bad} (build each with "
                        "self.metric(name, value), or MetricValue.undefined(reason, higher_is_better))")
    for name, m in metrics.items():
        if m.value is not None and m.bounds is not None:
            m.value = within_bounds(m.value, m.bounds, f"{where} metric {name!r}")
    return metrics
