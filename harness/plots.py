"""PNG figures where a picture says more than a table (score and norm histograms, Poincaré disks, CMC curves,
scatter plots)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _save(fig: object, path: Path, *, dpi: int) -> Path:
    """Lay out, write and close a figure (the folder is made as needed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_histograms(path: Path, panels: Mapping[str, Mapping[str, np.ndarray]], *, xlabel: str = "",
                    bins: int = 50) -> Path:
    """One panel per ``panels`` key, overlaid density histograms of its named series; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items()):
        for label, values in series.items():
            ax.hist(np.asarray(values, dtype=np.float64), bins=bins, alpha=0.5, density=True, label=label)
        ax.set_title(title, fontsize=9)
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    return _save(fig, path, dpi=80)


def _hyperbolic(geometry: object) -> bool:
    """A geometry drawn in the Poincaré disk: curved, with a log map at the origin."""
    return getattr(geometry, "name", "euclidean") != "euclidean" and callable(getattr(geometry, "logmap0", None))


def disk_coordinates(embeddings: np.ndarray, *, geometry: object) -> np.ndarray:
    """2-D coordinates of embeddings for a picture.

    Hyperbolic geometry (Poincaré ball, hyperboloid): directions are the 2-D PCA of the log map at the origin,
    and each point keeps its hyperbolic distance r to the origin, placed at
    radius tanh(√c·r/2) in the unit disk (the Poincaré disk of curvature −1
    after scaling by √c), so the picture shows what the norms mean. Euclidean
    geometry: a plain 2-D PCA of the centred embeddings.
    """
    import torch

    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    if not _hyperbolic(geometry):
        centred = x - x.mean(0)
        return (centred @ torch.linalg.svd(centred, full_matrices=False)[2][:2].T).numpy()
    c = float(geometry.c)
    tangent = geometry.logmap0(x)
    xy = (tangent @ torch.linalg.svd(tangent, full_matrices=False)[2][:2].T).numpy()
    radius = np.tanh(np.sqrt(c) * geometry.dist0(x).numpy() / 2)
    return xy / np.maximum(np.linalg.norm(xy, axis=1, keepdims=True), 1e-300) * radius[:, None]


def save_disk(path: Path, embeddings: np.ndarray, labels: np.ndarray, *, geometry: object, title: str = "") -> Path:
    """Embeddings drawn by :func:`disk_coordinates` (in the unit disk for Poincaré), coloured by ``labels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    poincare = _hyperbolic(geometry)
    xy = disk_coordinates(embeddings, geometry=geometry)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if poincare:
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.4", lw=0.8))
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
    ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(labels), cmap="tab20", s=4, alpha=0.8)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or ("Poincaré disk" if poincare else "PCA"), fontsize=9)
    return _save(fig, path, dpi=100)


def save_scatter(path: Path, x: np.ndarray, y: np.ndarray, *, xlabel: str, ylabel: str, title: str = "",
                 groups: np.ndarray | None = None) -> Path:
    """``y`` against ``x``, one point per item, coloured by ``groups`` when given; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    colours = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    ax.scatter(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), c=colours, cmap="tab20", s=4,
               alpha=0.7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi=100)


def cmc_points(cmc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of a CMC curve: ranks ``r = 1 … len(cmc)`` and ``CMC@r = cmc[r − 1]``.

    ``cmc`` is the vector :func:`harness.tasks.reid.evaluate_reid` returns
    (torchreid's convention: entry ``r − 1`` is the fraction of valid queries
    whose first true match is within the top ``r``), so it is non-decreasing
    and inside [0, 1]; anything else is not a CMC and is an error.
    """
    values = np.asarray(cmc, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"a CMC curve is a non-empty 1-D array (CMC@1 … CMC@max_rank), got shape {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError("CMC values must be finite fractions in [0, 1] (pass evaluate_reid(...)['cmc'])")
    if (np.diff(values) < 0).any():
        raise ValueError("CMC values must be non-decreasing in the rank (pass the cumulative curve, "
                         "not the per-rank hit rates)")
    return np.arange(1, len(values) + 1), values


def save_cmc(path: Path, cmc: np.ndarray, *, title: str = "") -> Path:
    """The CMC curve of :func:`cmc_points` (rank 1 … max_rank against CMC@r), ranks 1 / 5 / 10 marked; a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks, values = cmc_points(cmc)
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(ranks, values, drawstyle="steps-post", lw=1.2, color="C0")
    marked = [r for r in (1, 5, 10) if r <= len(ranks)]
    ax.plot(marked, values[np.array(marked) - 1], "o", ms=4, color="C1",
            label=", ".join(f"rank-{r} {values[r - 1]:.3f}" for r in marked))
    ax.set_xlim(0.5, len(ranks) + 0.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("rank r")
    ax.set_ylabel("CMC@r")
    ax.set_title(title or "CMC curve", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path, dpi=80)
