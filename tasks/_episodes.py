"""Batched N-way K-shot episodes: sampling and nearest-prototype accuracy.

One implementation shared by ``few_shot`` and ``fine_from_coarse``. An episode
draws ``n_way`` classes and ``n_shot + n_query`` distinct images of each; the
first ``n_shot`` are the support, the rest the queries. A class prototype is
the geometry's midpoint of its support (arithmetic mean in Euclidean space,
Einstein midpoint in the Poincaré ball, Khrulkov et al. 2020 Eq. 8); a query
is assigned to the prototype at the smallest geometry distance (Snell et al.
2017). Episode accuracy = fraction of correct queries; the reported interval
is CloserLook's (Chen et al. 2019): ``1.96 * np.std(acc) / sqrt(episodes)``
with the population standard deviation (ddof=0).

Every episode of a run is drawn by a few vectorised calls and scored as
batched tensor ops (chunks of episodes bound the memory); no Python loop runs
per episode. Distances are computed in float64 so that a near-tie resolves
the same way whatever the chunk size. Episodes can be restricted to sibling
classes of one group (``sample_episodes(groups=...)``: ``fine_from_coarse``'s
intra-coarse setting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: Random draws per chunk of episodes. A constant, not a config: the episodes a
#: seed draws must not depend on the memory budget.
_SAMPLE_CHUNK_ELEMENTS = 1 << 22
#: Gathered elements per chunk of scored episodes (about 8 MB in float64: cache-friendly).
_SCORE_CHUNK_ELEMENTS = 1 << 20


@dataclass
class ClassPool:
    """Positions of each eligible class's items, padded to one array."""

    classes: np.ndarray  # (C,) class ids
    members: np.ndarray  # (C, max_count) positions into the label array, -1 padded
    counts: np.ndarray  # (C,) items per class


def class_pool(labels: np.ndarray, min_count: int = 1) -> tuple[ClassPool, dict[int, int]]:
    """Group positions by class; classes with fewer than ``min_count`` items are dropped.

    Returns the pool and the dropped classes as ``{class id: item count}``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    dropped = {int(c): int(n) for c, n in zip(classes, counts) if n < min_count}
    keep = counts >= min_count
    order = np.argsort(inverse, kind="stable")  # positions grouped by class, in index order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    max_count = int(counts[keep].max()) if keep.any() else 0
    members = np.full((int(keep.sum()), max_count), -1, dtype=np.int64)
    for row, c in enumerate(np.flatnonzero(keep)):
        members[row, :counts[c]] = order[starts[c]:starts[c] + counts[c]]
    return ClassPool(classes[keep], members, counts[keep].astype(np.int64)), dropped


def sample_episodes(pool: ClassPool, *, n_way: int, n_per_class: int, episodes: int,
                    rng: np.random.Generator, groups: np.ndarray | None = None) -> np.ndarray:
    """Draw ``episodes`` episodes as positions ``(episodes, n_way, n_per_class)``.

    Classes: a uniformly random ``n_way``-subset of the pool in random order
    (argsort of uniform keys). With ``groups`` (a group id per pool class, e.g.
    the coarse class of each fine class), every episode's classes come from one
    group: a group is drawn uniformly among those with at least ``n_way``
    classes in the pool, then a uniformly random ``n_way``-subset of its classes
    (the other classes' keys are pushed past the end); groups with fewer classes
    are never drawn, and no eligible group is an error. Without ``groups`` the
    draws are exactly those of earlier versions. Items: ``n_per_class`` distinct items of each
    class in uniformly random order, drawn either by rejection (i.i.d. uniform
    draws, rows with a repeat are redrawn; used when repeats are rare) or by
    sorting uniform keys over the whole class (when they are not). Draws happen
    in chunks of episodes in a fixed order, so a generator state always gives
    the same episodes.
    """
    num_classes = len(pool.classes)
    if n_way < 1 or n_per_class < 1 or episodes < 1:
        raise ValueError(f"n_way ({n_way}), n_per_class ({n_per_class}) and episodes ({episodes}) "
                         "must all be at least 1")
    if num_classes < n_way:
        raise ValueError(f"{n_way}-way episodes need at least {n_way} classes with {n_per_class} "
                         f"images each; there are {num_classes}")
    short = pool.counts < n_per_class
    if short.any():
        raise ValueError(f"classes {pool.classes[short].tolist()} have fewer than {n_per_class} "
                         "images; drop them first (class_pool(min_count=...))")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != pool.classes.shape:
            raise ValueError(f"groups must give one group per pool class ({len(pool.classes)}), "
                             f"got shape {groups.shape}")
        _, group_of, group_size = np.unique(groups, return_inverse=True, return_counts=True)
        eligible = np.flatnonzero(group_size >= n_way)
        if len(eligible) == 0:
            raise ValueError(f"no group has {n_way} classes with {n_per_class} images each "
                             f"(largest: {int(group_size.max())} classes)")
    max_count = pool.members.shape[1]
    # expected number of repeated pairs in a row of i.i.d. draws from the smallest class
    by_rejection = n_per_class * (n_per_class - 1) / 2 <= 0.5 * pool.counts.min()
    per_episode = n_way * (n_per_class if by_rejection else max_count) + num_classes
    chunk = max(1, _SAMPLE_CHUNK_ELEMENTS // per_episode)
    out = np.empty((episodes, n_way, n_per_class), dtype=np.int64)
    for start in range(0, episodes, chunk):
        b = min(chunk, episodes - start)
        keys = rng.random((b, num_classes))
        if groups is not None:
            chosen = eligible[rng.integers(0, len(eligible), size=b)]  # (b,) one group per episode
            keys[group_of[None, :] != chosen[:, None]] = 2.0  # other groups' classes sort last
        cls = np.argsort(keys, axis=1)[:, :n_way]  # (b, n_way)
        counts = pool.counts[cls][..., None]  # (b, n_way, 1)
        if by_rejection:
            pick = _distinct_draws(counts, n_per_class, rng)
        else:
            pick = _keyed_draws(counts, max_count, n_per_class, rng)
        out[start:start + b] = pool.members[cls[..., None], pick]
    return out


def _distinct_draws(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform ordered draws of ``size`` distinct integers in ``[0, counts)`` per row, by rejection."""
    pick = rng.integers(0, counts, size=(*counts.shape[:-1], size))
    flat, flat_counts = pick.reshape(-1, size), counts.reshape(-1, 1)
    redo = np.arange(len(flat))
    while True:
        s = np.sort(flat[redo], axis=1)
        redo = redo[(s[:, 1:] == s[:, :-1]).any(axis=1)]
        if len(redo) == 0:
            return pick
        flat[redo] = rng.integers(0, flat_counts[redo], size=(len(redo), size))


def _keyed_draws(counts: np.ndarray, max_count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform ordered draws of ``size`` distinct integers in ``[0, counts)`` per row, by sorting keys."""
    keys = rng.random((*counts.shape[:-1], max_count))
    keys[np.arange(max_count) >= counts] = 2.0  # padding sorts last
    if size < max_count:
        pick = np.argpartition(keys, size - 1, axis=-1)[..., :size]
        # argpartition leaves the chosen items in no random order: sort them by key
        return np.take_along_axis(pick, np.argsort(np.take_along_axis(keys, pick, -1), -1), -1)
    return np.argsort(keys, axis=-1)


def check_finite(embeddings: torch.Tensor, what: str = "embeddings") -> None:
    """Raise a clear error if any embedding is NaN or infinite."""
    bad = ~torch.isfinite(embeddings).all(dim=-1)
    if bool(bad.any()):
        raise ValueError(f"{int(bad.sum())} of {len(embeddings)} {what} contain NaN or inf "
                         "(the model diverged or the head overflowed); no metric can be computed")


def episode_accuracies(embeddings: torch.Tensor, episodes: np.ndarray, *, n_shot: int,
                       geometry: Any, device: torch.device | str | None = None) -> np.ndarray:
    """Nearest-prototype accuracy of every episode, as batched tensor ops.

    ``embeddings`` ``(n, d)``; ``episodes`` ``(E, n_way, n_shot + n_query)``
    positions into ``embeddings`` (from :func:`sample_episodes`). Returns ``(E,)``
    float64 accuracies. Ties between prototypes go to the lower way index
    (``torch.argmin``), the same in every chunk.
    """
    episodes = np.asarray(episodes)
    if episodes.ndim != 3:
        raise ValueError(f"episodes must have shape (E, n_way, n_shot + n_query), got {episodes.shape}")
    num_eps, n_way, per_class = episodes.shape
    n_query = per_class - n_shot
    if n_shot < 1 or n_query < 1:
        raise ValueError(f"episodes hold {per_class} images per class: need n_shot >= 1 and "
                         f"n_query >= 1, got n_shot={n_shot}")
    emb = torch.as_tensor(embeddings)
    check_finite(emb)
    device = torch.device(device) if device is not None else emb.device
    emb = emb.to(device=device, dtype=torch.float64)
    dim = emb.shape[-1]
    truth = torch.arange(n_way, device=device).repeat_interleave(n_query)  # (n_way * n_query,)
    per_episode = n_way * per_class * dim + n_way * n_query * n_way
    chunk = max(1, _SCORE_CHUNK_ELEMENTS // per_episode)
    acc = np.empty(num_eps, dtype=np.float64)
    all_idx = torch.as_tensor(episodes, device=device)
    for start in range(0, num_eps, chunk):
        idx = all_idx[start:start + chunk]
        b = len(idx)
        protos = geometry.midpoint(emb[idx[:, :, :n_shot]], dim=-2)  # (b, n_way, d)
        queries = emb[idx[:, :, n_shot:].reshape(b, n_way * n_query)]  # (b, n_way * n_query, d)
        pred = geometry.pairwise_dist(queries, protos).argmin(dim=-1)  # (b, n_way * n_query)
        acc[start:start + b] = (pred == truth).double().mean(dim=-1).cpu().numpy()
    return acc


def mean_ci95(acc: np.ndarray) -> tuple[float, float]:
    """Mean and CloserLook's 95% half-width ``1.96 * std(acc, ddof=0) / sqrt(n)``."""
    acc = np.asarray(acc, dtype=np.float64)
    if acc.size == 0:
        raise ValueError("no episodes to average")
    return float(acc.mean()), float(1.96 * acc.std() / np.sqrt(acc.size))


class EpisodeAccuracy:
    """Torchmetrics-style shell: accumulate per-episode accuracies, compute mean ± ci95.

    ``update(acc)`` appends a batch of episode accuracies; ``compute()`` returns
    ``(mean, ci95, n)`` with :func:`mean_ci95`'s convention.
    """

    higher_is_better = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._acc: list[np.ndarray] = []

    def update(self, acc: np.ndarray) -> None:
        self._acc.append(np.asarray(acc, dtype=np.float64).ravel())

    def compute(self) -> tuple[float, float, int]:
        acc = np.concatenate(self._acc) if self._acc else np.empty(0)
        mean, ci = mean_ci95(acc)
        return mean, ci, int(acc.size)
