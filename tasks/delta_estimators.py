r"""Gromov δ-hyperbolicity of a point set: the library behind the task ``delta`` and ``harness delta``.

Conventions (those of the reference code, hyptorch ``delta.py`` by Khrulkov et
al., CVPR 2020, so that numbers are comparable with their table):

- Gromov product at base point w: :math:`(x|y)_w = \tfrac12\,(d(x,w) + d(y,w) - d(x,y))`,
  the matrix :math:`G_w`.
- :math:`\delta_w = \max_{x,y}\,[(G_w \otimes G_w)_{xy} - (G_w)_{xy}]` with the max-min
  product :math:`(A \otimes B)_{xy} = \max_z \min(A_{xz}, B_{zy})`: the smallest δ for
  which :math:`(x|y)_w \ge \min((x|z)_w, (y|z)_w) - \delta` holds for all x, y, z.
  This is what the reference computes (for one base point, the first sample).
- The four-point δ is :math:`\delta = \max_{x,y,z,w} (S_1 - S_2)/2`, where
  :math:`S_1 \ge S_2 \ge S_3` are the pair sums :math:`d(x,y)+d(z,w)`,
  :math:`d(x,z)+d(y,w)`, :math:`d(x,w)+d(y,z)`. Writing the term of :math:`\delta_w` for
  one (x, y, z) in distances gives :math:`\tfrac12(A - \max(B, C))` with
  :math:`A = d(x,y)+d(z,w)`, so :math:`\delta = \max_w \delta_w` (no extra factor).
- Gromov's lemma: :math:`\delta_w \le \delta \le 2\,\delta_w` for every w (Gromov,
  *Hyperbolic groups*, 1987, §1.1; Bridson & Haefliger, *Metric spaces of non-positive
  curvature*, III.H.1; the tests check it on random sets). In a metric
  space also :math:`\delta \le \mathrm{diam}/2` (the S₁ pair sum is at most
  :math:`S_2 + \min(d(x,y), d(z,w))`).
- :math:`\delta_{rel} = 2\delta/\mathrm{diam}` (Khrulkov et al. 2020),
  in [0, 1] for a metric; lower is more hyperbolic (a tree has δ = 0; the hyperbolic
  plane of curvature −c has δ = log 2 / √c, Nica & Špakula 2016, Cor. 5.4).

Estimators (``estimator=``; each result records what was computed):

- ``exact``: the four-point δ, max over every base point, O(n⁴/8) work (a quadruple is
  examined only at the first of its points in the processing order); default for
  n ≤ :data:`EXACT_AUTO_MAX_N`. ``delta`` = ``lower`` is the float64 value of the quadruple
  the float32 kernel picks; ``upper`` adds the rounding bound 3u·max G to the float32 maximum,
  in case rounding hid a slightly heavier quadruple (data whose distances are much larger
  than their differences; ``upper`` − ``lower`` ≤ 6u·diam, a relative 4e-7).
- ``bracket``: δ_w at k base points W over all n points. Certified bounds on the set's
  four-point δ: ``lower`` = max over w ∈ W of (S₁ − S₂)/2 of the quadruple attaining δ_w
  (≥ max_W δ_w) ``≤ δ ≤ upper`` = 2·min_W δ_w (Gromov's lemma; plus the float32 rounding
  bound 6u·max G, u = 2⁻²⁴; capped at diam/2 for a metric). ``delta`` reports ``lower``.
  Default above :data:`EXACT_AUTO_MAX_N` points. The factor 2 is inherent: on features
  ``upper`` is typically 1.5–2× ``lower``, while ``lower`` came within 10% of the exact δ on
  the feature sets we measured (``benchmarks/bench_delta.py``).
- ``base``: δ_w at one base point over all points (``base=K``), with the same bounds for
  W = {K}: ``δ_w ≤ lower ≤ δ ≤ 2·δ_w``.
- Published estimators, reproduced draw for draw: ``hyptorch`` (Khrulkov et al.: 10 draws
  of 1,500 points *with replacement* via ``np.random.choice``, δ_w at the first sample,
  mean and std of δ_rel over draws), ``hyp_metric`` (Ermolov et al., CVPR 2022: 100
  draws of 2,000 points without replacement via ``torch.randperm``, base 0, mean),
  ``max_over_draws`` (draws without replacement, base 0, the max over draws). Their
  δ_w is our kernel's (exact on the sample); sampling a subset and one base point
  underestimates δ, which is why the default reports the exact value or a bracket.

The heavy part, the max-min product, runs in compiled numba kernels
(:mod:`._delta_kernels`) on the CPU, in float32 — exact up to the rounding of G
(max/min only select; reported δ values are recomputed in float64 from the
quadruple that attains them) — and as tiled torch on a GPU. Memory is O(n²).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch


#: ``estimator="auto"`` computes the exact δ up to this many points, a bracket above.
EXACT_AUTO_MAX_N = 1000
#: The exact δ is refused above this many points (O(n⁴)): use a bracket.
EXACT_MAX_N = 2500
#: Largest point set for the full-set estimators (an n×n float64 matrix is kept).
MAX_N = 20000
METRIC_CHOICES = ("euclidean", "poincare", "lorentz", "precomputed")
ESTIMATORS = ("auto", "exact", "bracket", "base", "hyptorch", "hyp_metric", "max_over_draws")
#: Base points of a bracket unless told otherwise.
DEFAULT_N_BASES = 8
_U32 = 2.0 ** -24  # float32 unit roundoff
_PARALLEL_WORK = 1 << 24  # m²·K above which the max-min kernel runs on all threads


@dataclass(frozen=True)
class SampledEstimator:
    """A published sampling protocol: ``draws`` subsets of ``sample_size`` points, δ_w at the
    subset's first point, δ_rel = 2δ_w/diam of the subset, reduced over draws by ``reduce``."""

    name: str
    draws: int
    sample_size: int
    replace: bool
    sampler: str  # "numpy_legacy" | "torch_randperm" | "numpy"
    reduce: str  # "mean" | "max"
    source: str


SAMPLED_ESTIMATORS: dict[str, SampledEstimator] = {
    "hyptorch": SampledEstimator(
        "hyptorch", 10, 1500, True, "numpy_legacy", "mean",
        "hyptorch delta.py batched_delta_hyp (Khrulkov et al., CVPR 2020; MIT): "
        "np.random.choice(n, 1500) with replacement, base = first sample, mean/std of δ_rel over 10 draws"),
    "hyp_metric": SampledEstimator(
        "hyp_metric", 100, 2000, False, "torch_randperm", "mean",
        "hyp_metric delta.py (Ermolov et al., CVPR 2022): torch.randperm(n)[:2000], base 0, "
        "mean δ_rel over 100 draws"),
    "max_over_draws": SampledEstimator(
        "max_over_draws", 10, 1500, False, "numpy", "max",
        "draws without replacement (numpy default_rng(seed).choice), base 0, max δ_rel over draws"),
}


# ----------------------------------------------------------------------------- inputs
def _as_float64(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a numeric array, got {type(x).__name__}: {exc}") from exc
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-D, got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{what} has {int(bad.sum())} NaN/inf entries (first at [{i}, {j}] = {a[i, j]}); "
                         "remove or fix those points first")
    return a


def available_memory() -> int | None:
    """Bytes of physical memory available now (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


#: Bytes per n² entry the full-set estimators keep at once (the float64 distances, the float32
#: Gromov products, their 16-bit codes, and a float64 copy while a matrix is cleaned).
BYTES_PER_ENTRY = 8 + 8 + 4 + 2


def check_size(n: int, estimator: str) -> None:
    """Refuse a full-set estimator before any n×n matrix is built when n or the memory does not allow it."""
    if n > MAX_N:
        raise ValueError(f"{n:,} points: the {estimator!r} estimator keeps n×n matrices and is limited to "
                         f"{MAX_N:,}; subsample, or use a sampled estimator ({', '.join(SAMPLED_ESTIMATORS)})")
    need, have = BYTES_PER_ENTRY * n * n, available_memory()
    if have is not None and need > 0.8 * have:
        raise MemoryError(f"{n:,} points need about {need / 2**30:.1f} GiB for the n×n matrices and "
                          f"{have / 2**30:.1f} GiB are available; subsample or use a sampled estimator "
                          f"({', '.join(SAMPLED_ESTIMATORS)})")


def _check_n(n: int, what: str) -> None:
    if n < 4:
        raise ValueError(f"δ-hyperbolicity needs at least 4 points (it is defined by quadruples); {what} has {n}")


def check_distance_matrix(d: Any, *, rtol: float = 1e-5) -> np.ndarray:
    """Validate a precomputed distance matrix and return it cleaned (float64, symmetric, zero diagonal).

    Checks: square, finite, at least 4 points, non-negative, zero diagonal and symmetric,
    each up to ``rtol × max|D|`` (rounding of a float32 distance computation); rounding-level
    asymmetry is averaged away and the diagonal set to 0. Raises ``ValueError`` naming the
    worst offending entry otherwise.
    """
    a = _as_float64(d, "the distance matrix")
    n, m = a.shape
    if n != m:
        raise ValueError(f"a distance matrix must be square, got shape {a.shape}; pass features with "
                         "metric='euclidean' or 'poincare' instead")
    _check_n(n, "the distance matrix")
    tol = rtol * float(np.abs(a).max()) + 1e-300
    neg = a.min()
    if neg < -tol:
        i, j = np.unravel_index(np.argmin(a), a.shape)
        raise ValueError(f"distances must be non-negative; D[{i}, {j}] = {neg:.6g}")
    diag = np.abs(np.diagonal(a))
    if diag.max() > tol:
        i = int(np.argmax(diag))
        raise ValueError(f"a distance matrix has a zero diagonal; D[{i}, {i}] = {a[i, i]:.6g} "
                         "(if this is rounding, set it with np.fill_diagonal(D, 0))")
    asym = np.abs(a - a.T)
    if asym.max() > tol:
        i, j = np.unravel_index(np.argmax(asym), a.shape)
        raise ValueError(f"a distance matrix must be symmetric; D[{i}, {j}] = {a[i, j]:.6g} but "
                         f"D[{j}, {i}] = {a[j, i]:.6g} (symmetrise with (D + D.T) / 2 if that is rounding)")
    del asym
    a = 0.5 * (a + a.T)
    np.fill_diagonal(a, 0.0)
    np.maximum(a, 0.0, out=a)
    return a


def feature_distances(x: Any, *, metric: str = "euclidean", c: float = 1.0) -> np.ndarray:
    r"""The (n, n) float64 distance matrix of features ``x`` (n, d), exactly symmetric, zero diagonal.

    ``euclidean``: L2 from one Gram matrix of the mean-centred points,
    :math:`\|x_i\|^2 + \|x_j\|^2 - 2\langle x_i, x_j\rangle` in float64: the absolute error of
    a squared distance is about :math:`\sqrt{d}\,\varepsilon_{64}(\|x_i\|^2+\|x_j\|^2)`, so at
    worst ~1e-8 of the data's scale on a distance (near pairs), below the float32 rounding of
    the Gromov products. ``poincare``: the distance of the Poincaré ball of curvature −c, radius
    1/√c (:func:`harness.geometry.pairwise_dist`, Ganea et al. 2018 Eq. 2, accurate for near
    pairs and near the boundary). ``lorentz``: points (n, d+1) on the hyperboloid
    :math:`\langle x, x\rangle_L = -1/c` (time coordinate first), read through the isometry to
    that ball (:func:`harness.geometry.lorentz_to_poincare`), which keeps every distance.
    """
    a = _as_float64(x, "the feature matrix")
    _check_n(a.shape[0], "the feature matrix")
    if a.shape[1] < 1:
        raise ValueError("features must have at least one dimension")
    if metric == "euclidean":
        a = a - a.mean(0)
        sq = np.einsum("ij,ij->i", a, a)
        d = a @ a.T  # numpy computes x @ x.T with syrk: exactly symmetric
        d *= -2.0
        step = max(1, (1 << 22) // len(a))
        for i in range(0, len(a), step):  # (sq_i + sq_j) is symmetric, (d + s) then is too
            d[i:i + step] += sq[i:i + step, None] + sq[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        np.fill_diagonal(d, 0.0)
        return d
    if metric not in ("poincare", "lorentz"):
        raise ValueError(f"unknown metric {metric!r} for features; choose 'euclidean', 'poincare' or 'lorentz'")
    from harness.geometry import lorentz_to_poincare, pairwise_dist

    if isinstance(c, bool) or not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
        raise ValueError(f"the curvature c must be a positive number, got {c!r}")
    points = torch.from_numpy(a)
    with torch.no_grad():
        if metric == "lorentz":
            points = lorentz_to_poincare(points, c=float(c))
        else:
            sq = np.einsum("ij,ij->i", a, a)
            outside = sq * float(c) >= 1.0
            if outside.any():
                largest = float(np.sqrt(sq.max()))
                raise ValueError(f"{int(outside.sum())} of {len(a)} points lie on or outside the Poincaré ball of "
                                 f"c = {c:g} (radius {float(c) ** -0.5:.4g}; the largest norm is {largest:.4g}); "
                                 "hyperboloid points are metric 'lorentz', unbounded features 'euclidean'")
        return pairwise_dist(points, c=float(c)).numpy()


def four_point(d: np.ndarray, x: int, y: int, z: int, w: int) -> float:
    """(S₁ − S₂)/2 of one quadruple (float64)."""
    s = sorted((d[x, y] + d[z, w], d[x, z] + d[y, w], d[x, w] + d[y, z]))
    return 0.5 * (s[2] - s[1])


def _base_term(d: np.ndarray, x: int, y: int, z: int, w: int) -> float:
    """min((x|z)_w, (z|y)_w) − (x|y)_w in float64: one term of δ_w."""
    g = lambda a, b: 0.5 * (d[a, w] + d[b, w] - d[a, b])  # noqa: E731
    return min(g(x, z), g(z, y)) - g(x, y)


# ----------------------------------------------------------------------------- solvers
@dataclass
class _BaseOutcome:
    value: float  # max(best, float32 δ_w over the members), kernel precision
    witness: tuple[int, int, int] | None  # (x, y, z) attaining it, in input indices
    g_scale: float  # largest |Gromov product| involved (for the rounding bound)


_COMPILE: dict[str, float] = {}


def _numba_warm() -> float:
    """Compile (or load from numba's cache) every kernel once per process; return the seconds it took."""
    if "numba" in _COMPILE:
        return 0.0
    from harness.tasks import _delta_kernels as K

    t0 = time.perf_counter()
    d = np.array([[0, 1, 2, 3, 2], [1, 0, 1, 2, 3], [2, 1, 0, 1, 2], [3, 2, 1, 0, 1], [2, 3, 2, 1, 0]], float)
    solver = _NumbaSolver(d)
    solver.base(0, np.arange(5), 0.0, None)
    solver.exact(True)
    K.max_min_excess(np.zeros((4, 4), np.int32), np.zeros(4, np.float32), 4, 4, np.float32(0))
    K.triangle_violation(d, 1e-9)
    _COMPILE["numba"] = time.perf_counter() - t0
    return _COMPILE["numba"]


@contextmanager
def _numba_threads(work: int):
    """One thread for small work: waking numba's pool costs more than the work (and up to
    ~10 ms per parallel region on a busy machine)."""
    import numba

    before = numba.get_num_threads()
    if work < _PARALLEL_WORK:
        numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


class _NumbaSolver:
    """δ_w on the CPU with the compiled max-min kernel."""

    backend = "numba"
    device = "cpu"

    def __init__(self, d: np.ndarray) -> None:
        self.d = np.ascontiguousarray(d, dtype=np.float64)

    def base(self, w: int, members: np.ndarray, best: float, z_threshold: float | None) -> _BaseOutcome:
        """δ_w restricted to ``members`` (which must contain every x, y, z considered).

        ``best``: a value already reached (pruning; the result is ``max(best, …)``).
        ``z_threshold``: drop z with ``d(z, w) ≤ z_threshold`` (valid in a metric with
        ``z_threshold = 2·best``: every term with that z is ≤ ½ d(z, w)).
        """
        from harness.tasks import _delta_kernels as K

        members = np.ascontiguousarray(members, dtype=np.int64)
        m = len(members)
        mp = -(-m // K.BLOCK) * K.BLOCK
        gf, rows, r32, _, dw = K.prepare_base(self.d, int(w), members, np.empty(mp * mp, dtype=np.float32))
        kk = _prefix(dw, z_threshold, m)
        g_scale = float(r32[0]) if m else 0.0
        if kk == 0:
            return _BaseOutcome(best, None, g_scale)
        # Waking threads costs more than the work on small problems (and much more on a busy machine).
        kernel = K.max_min_excess if m * m * kk >= _PARALLEL_WORK else K.max_min_excess_serial
        v, xi, yi = kernel(gf.view(np.int32), r32, m, kk, np.float32(best))
        if xi < 0:
            return _BaseOutcome(float(best), None, g_scale)
        zi = int(np.argmax(np.minimum(gf[xi, :kk], gf[yi, :kk])))
        return _BaseOutcome(float(v), (int(rows[xi]), int(rows[yi]), int(rows[zi])), g_scale)

    def exact(self, metric_space: bool) -> tuple[float, list[int] | None]:
        """Four-point δ in one compiled call (:func:`._delta_kernels.exact_delta`)."""
        from harness.tasks import _delta_kernels as K

        order = np.argsort(-self.d.max(1), kind="stable")  # far points first: a large δ early prunes more
        n = len(order)
        with _numba_threads(n ** 4 // 8):
            v, x, y, z, w = K.exact_delta(self.d, order, bool(metric_space))
        return float(v), ([int(x), int(y), int(z), int(w)] if x >= 0 else None)


class _TorchSolver:
    """δ_w as a tiled torch max-min product (GPU path; also runs on the CPU for tests)."""

    backend = "torch"

    def __init__(self, d: np.ndarray, device: torch.device, budget_bytes: int | None = None) -> None:
        self.device = torch.device(device)
        self.d = torch.as_tensor(d, dtype=torch.float64, device=self.device)
        self.budget = budget_bytes or ((1 << 30) if self.device.type == "cuda" else (1 << 26))

    def base(self, w: int, members: np.ndarray, best: float, z_threshold: float | None) -> _BaseOutcome:
        dev = self.device
        mem = torch.as_tensor(np.asarray(members, dtype=np.int64), device=dev)
        dw = self.d[mem, w]
        g = 0.5 * (dw[:, None] + dw[None, :] - self.d[mem][:, mem])
        r = g.amax(1)
        order = torch.argsort(-r, stable=True)
        g = g[order][:, order]
        r = r[order]
        rows = mem[order].cpu().numpy()
        m = len(rows)
        shift = max(0.0, -float(g.min()))
        kk = _prefix(self.d[mem[order], w].cpu().numpy(), z_threshold, m)
        g_scale = float(r[0]) + shift
        if kk == 0:
            return _BaseOutcome(best, None, g_scale)
        g32 = (g + shift).clamp_min(0).float()
        r32 = (r + shift).clamp_min(0).float()
        del g
        block = max(1, self.budget // (4 * kk * m))
        lb, bx, by = float(best), -1, -1
        for i0 in range(0, m, block):
            gi = g32[i0:i0 + block]
            bound = float((torch.minimum(r32[i0:i0 + block, None], r32[None, :]) - gi).max())
            if bound <= lb:
                continue
            mm = torch.minimum(gi[:, :kk, None], g32[None, :kk, :]).amax(1)
            e = mm - gi
            v = float(e.max())
            if v > lb:
                flat = int(torch.argmax(e))
                lb, bx, by = v, i0 + flat // m, flat % m
        if bx < 0:
            return _BaseOutcome(float(best), None, g_scale)
        bz = int(torch.argmax(torch.minimum(g32[bx, :kk], g32[by, :kk])))
        return _BaseOutcome(lb, (int(rows[bx]), int(rows[by]), int(rows[bz])), g_scale)


def _prefix(dz: np.ndarray, threshold: float | None, m: int) -> int:
    """Length of the shortest prefix holding every z with ``dz > threshold`` (all if no threshold)."""
    if threshold is None:
        return m
    keep = np.flatnonzero(dz > threshold)
    return int(keep[-1]) + 1 if len(keep) else 0


def _solver(d: np.ndarray, device: Any, backend: str) -> Any:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but no CUDA GPU is available; use device='cpu'")
    if backend == "auto":
        backend = "torch" if dev.type != "cpu" else "numba"
    if backend == "numba":
        if dev.type != "cpu":
            raise ValueError(f"backend 'numba' runs on the CPU only, not on device '{dev}'")
        return _NumbaSolver(d)
    if backend == "torch":
        return _TorchSolver(d, dev)
    raise ValueError(f"unknown backend {backend!r}; choose 'auto', 'numba' or 'torch'")


# ----------------------------------------------------------------------------- algorithms
def _exact(d: np.ndarray, solver: Any, metric_space: bool) -> tuple[float, list[int] | None, float]:
    """Four-point δ = max_w δ_w, a quadruple [x, y, z, w] attaining it (float64 value) and a
    certified upper bound on δ.

    A quadruple is examined only at the first of its points in the processing order (the
    others are the 'remaining' members), so step t costs (n−t)³. The numba solver runs the
    whole loop in one compiled call; this Python loop drives the torch (GPU) solver. Both
    compare in float32: the quadruple picked is the float32 maximum, which rounding can make
    another than the float64 one, so the upper bound adds the rounding bound 3u·max|G| to the
    float32 maximum (a Gromov product is at most diam, 1.5·max d off a metric).
    """
    if isinstance(solver, _NumbaSolver):
        v32, witness = solver.exact(metric_space)
    else:
        v32, witness = _exact_loop(d, solver, metric_space)
    value = four_point(d, *witness) if witness else 0.0
    g_max = (1.0 if metric_space else 1.5) * float(d.max(initial=0.0))
    return value, witness, max(value, v32 + 3 * _U32 * g_max)


def _exact_loop(d: np.ndarray, solver: Any, metric_space: bool) -> tuple[float, list[int] | None]:
    """:func:`_exact` base by base (the torch solver): the float32 maximum and its quadruple."""
    n = len(d)
    order = np.argsort(-d.max(1), kind="stable")  # far points first: a large δ early prunes more
    remaining = np.ones(n, dtype=bool)
    best, witness = 0.0, None
    for w in order:
        members = np.flatnonzero(remaining)
        # In a metric every term with base w is ≤ ½ d(z, w): a base whose remaining points are all
        # within 2·best, and any z with d(z, w) ≤ 2·best, cannot raise the maximum.
        if metric_space and best > 0 and d[w, members].max() <= 2 * best:
            remaining[w] = False
            continue
        out = solver.base(int(w), members, best, 2 * best if metric_space and best > 0 else None)
        if out.witness is not None and out.value > best:
            best, witness = out.value, [*out.witness, int(w)]
        remaining[w] = False
    return best, witness


def _bracket(d: np.ndarray, solver: Any, bases: Sequence[int] | int, metric_space: bool,
             diam: float) -> dict[str, Any]:
    """δ_w at each base point over all points; lower/upper bounds on δ (see the module docstring).

    ``bases``: explicit indices, or a count, then chosen adaptively: a point of largest
    eccentricity (far points sit in the extreme quadruples), the medoid, the far end of a
    diametral pair, then alternately a not-yet-used point of the best quadruple found so far
    (a point of a heavy quadruple often lies in a heavier one: raises ``lower``) and the next
    most central point by mean distance (central base points tend to have the smallest δ_w on
    features: lowers ``upper``). Deterministic.
    """
    n = len(d)
    members = np.arange(n)
    adaptive = isinstance(bases, (int, np.integer))
    k = min(int(bases), n) if adaptive else len(bases)
    central = list(np.argsort(d.mean(1), kind="stable"))
    chase: list[int] = []
    if adaptive:
        a = int(np.argmax(d.max(1)))
        todo = [a, int(central[0]), int(np.argmax(d[a]))]
    else:
        todo = [int(b) for b in bases]
    used: list[int] = []
    per: list[float] = []
    lower, witness, worst_upper = 0.0, None, math.inf
    while len(used) < k:
        if todo:
            w = todo.pop(0)
        elif chase and (len(used) % 2 == 1 or not central):
            w = chase.pop(0)
        else:
            w = int(central.pop(0))
        if adaptive and w in used:
            continue
        used.append(w)
        out = solver.base(w, members, 0.0, None)
        err = 3 * _U32 * out.g_scale  # |float32 δ_w − δ_w| ≤ 3u·max|G| (each of G, G⊗G, the difference)
        worst_upper = min(worst_upper, 2 * (out.value + err))
        per.append(_base_term(d, *out.witness, w) if out.witness else 0.0)
        if out.witness:
            q = four_point(d, *out.witness, w)
            if q > lower:
                lower, witness = q, [*out.witness, w]
                if adaptive:
                    chase = [p for p in out.witness if p not in used] + chase
    upper = min(worst_upper, diam / 2) if metric_space else worst_upper
    return {"lower": lower, "upper": max(upper, lower), "witness": witness, "base_deltas": per, "bases": used}


def _index(i: Any, n: int, what: str) -> int:
    if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not -n <= int(i) < n:
        raise ValueError(f"{what} {i!r} is not an index of the {n} points")
    return int(i) % n


def _draw_indices(est: SampledEstimator, n: int, size: int, draws: int, seed: int) -> list[np.ndarray]:
    if est.sampler == "numpy_legacy":  # = np.random.seed(seed); np.random.choice(n, size) per draw
        rs = np.random.RandomState(seed)
        return [rs.choice(n, size, replace=est.replace) for _ in range(draws)]
    if est.sampler == "torch_randperm":  # = torch.manual_seed(seed); torch.randperm(n)[:size] per draw
        g = torch.Generator().manual_seed(seed)
        return [torch.randperm(n, generator=g)[:size].numpy() for _ in range(draws)]
    gen = np.random.default_rng(seed)
    return [gen.choice(n, size, replace=est.replace) for _ in range(draws)]


# ----------------------------------------------------------------------------- public API
def delta_hyperbolicity(x: Any, *, metric: str = "euclidean", c: float = 1.0, estimator: str = "auto",
                        exact: bool | None = None, base: int | None = None,
                        n_bases: int | Sequence[int] = DEFAULT_N_BASES, sample_size: int | None = None,
                        draws: int | None = None, seed: int = 0, assume_metric: bool | None = None,
                        device: Any = None, backend: str = "auto") -> dict[str, Any]:
    r"""Gromov δ-hyperbolicity of a point set (conventions in the module docstring).

    Args:
        x: features (n, d) for ``metric="euclidean"`` / ``"poincare"`` (ball of curvature
            −c), hyperboloid points (n, d+1) for ``"lorentz"``, or an (n, n) distance matrix for ``metric="precomputed"`` (validated by
            :func:`check_distance_matrix`). numpy or torch.
        estimator: ``"auto"`` (exact for n ≤ :data:`EXACT_AUTO_MAX_N`, else bracket),
            ``"exact"``, ``"bracket"``, ``"base"``, or a published one from
            :data:`SAMPLED_ESTIMATORS` (``"hyptorch"``, ``"hyp_metric"``, ``"max_over_draws"``).
        exact: ``True`` = ``estimator="exact"`` (refused above :data:`EXACT_MAX_N` points),
            ``False`` = ``"bracket"``.
        base: δ_w at this base point alone (= ``estimator="base"``), what the reference
            computes for one sample.
        n_bases: bracket base points: a count (chosen adaptively, see :func:`_bracket`) or explicit indices.
        sample_size, draws: override a sampled estimator's protocol.
        seed: seeds the sampled estimators' draws (the bracket's base choice is deterministic).
        assume_metric: whether the distances satisfy the triangle inequality (enables the
            pruning and the diam/2 cap). ``None``: true for features; checked in O(n³) for a
            precomputed matrix used by the exact/bracket/base estimators.
        device, backend: ``None`` = CUDA if available; on the CPU the numba kernel
            (``backend="torch"`` forces the tiled torch path, e.g. to test it).

    Returns:
        A JSON-ready dict: ``delta``, ``delta_rel`` (= 2·delta/diameter; ``None`` when every point
        coincides, diameter 0), ``diameter``,
        ``exact`` (bool), ``lower``/``upper`` (certified bounds on the four-point δ of the whole
        set; ``None`` for sampled estimators), ``n``, ``seconds`` (excluding numba's one-off
        compile/cache load, reported as ``compile_seconds``), ``estimator``, ``metric``, ``c``,
        ``base``, ``bases``, ``base_deltas``, ``witness`` ([x, y, z, w] attaining ``delta``),
        ``sample_size``, ``draws``, ``seed``, ``replace``, ``delta_std``, ``delta_rel_std``,
        ``draw_delta_rel``, ``metric_space``, ``device``, ``backend``, ``source``.
    """
    if metric not in METRIC_CHOICES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_CHOICES)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if exact is not None:
        want = "exact" if exact else "bracket"
        if estimator not in ("auto", want):
            raise ValueError(f"exact={exact} contradicts estimator={estimator!r}")
        estimator = want
    if base is not None:
        if estimator not in ("auto", "base"):
            raise ValueError(f"base={base} computes δ at one base point; it contradicts estimator={estimator!r}")
        estimator = "base"
    sampled = SAMPLED_ESTIMATORS.get(estimator)
    if sampled is None and (sample_size is not None or draws is not None):
        raise ValueError("sample_size and draws apply to the sampled estimators "
                         f"({', '.join(SAMPLED_ESTIMATORS)}), not to {estimator!r}")

    n = int(x.shape[0]) if hasattr(x, "shape") and len(x.shape) >= 1 else len(x)
    result: dict[str, Any] = {
        "delta": None, "delta_rel": None, "diameter": None, "exact": False, "lower": None, "upper": None,
        "n": n, "seconds": None, "estimator": estimator, "metric": metric,
        "c": float(c) if metric in ("poincare", "lorentz") else None, "base": None, "bases": None, "base_deltas": None,
        "witness": None, "sample_size": None, "draws": None, "seed": int(seed), "replace": None,
        "delta_std": None, "delta_rel_std": None, "draw_delta_rel": None, "metric_space": None,
        "device": None, "backend": None, "source": None, "compile_seconds": 0.0,
    }

    if sampled is not None:
        return _run_sampled(x, sampled, metric, c, sample_size, draws, seed, device, backend, result)
    check_size(n, estimator)

    t_warm = 0.0
    t0 = time.perf_counter()
    if metric == "precomputed":
        d = check_distance_matrix(x)
    else:
        d = feature_distances(x, metric=metric, c=c)
    n = len(d)
    result["n"] = n
    if n > MAX_N:
        raise ValueError(f"{n} points: the {estimator!r} estimator keeps an n×n matrix and is limited to "
                         f"{MAX_N}; subsample, or use a sampled estimator ({', '.join(SAMPLED_ESTIMATORS)})")
    if estimator == "auto":
        estimator = "exact" if n <= EXACT_AUTO_MAX_N else "bracket"
    if estimator == "exact" and n > EXACT_MAX_N:
        raise ValueError(f"the exact δ costs O(n⁴) and is refused above {EXACT_MAX_N} points (n = {n}); "
                         "use estimator='bracket' (certified lower/upper bounds) or subsample")
    if base is not None:
        base = _index(base, n, "base point")
    solver = _solver(d, device, backend)
    if solver.backend == "numba":
        t1 = time.perf_counter()
        t_warm = _numba_warm()
        t0 += time.perf_counter() - t1
    if assume_metric is None:
        if metric == "precomputed":
            from harness.tasks import _delta_kernels as K

            tol = 1e-9 * float(d.max())
            with _numba_threads(n ** 3):
                assume_metric = bool(K.triangle_violation(d, tol) <= tol)
        else:
            assume_metric = True
    diam = float(d.max())
    result.update(estimator=estimator, n=n, diameter=diam, metric_space=bool(assume_metric),
                  device=str(solver.device), backend=solver.backend, compile_seconds=t_warm)

    if estimator == "exact":
        value, witness, upper = _exact(d, solver, bool(assume_metric))
        result.update(delta=value, exact=True, lower=value, upper=upper, witness=witness)
    elif estimator == "bracket":
        if isinstance(n_bases, (int, np.integer)):
            if n_bases < 1:
                raise ValueError(f"a bracket needs at least one base point, got n_bases={n_bases}")
            bases: Any = int(n_bases)
        else:
            bases = [_index(b, n, "base point") for b in n_bases]
            if not bases:
                raise ValueError("a bracket needs at least one base point")
        br = _bracket(d, solver, bases, bool(assume_metric), diam)
        result.update(delta=br["lower"], lower=br["lower"], upper=br["upper"], witness=br["witness"],
                      bases=br["bases"], base_deltas=br["base_deltas"])
        if br["upper"] - br["lower"] <= 1e-12 * max(diam, 1e-300):
            result["exact"] = True
    else:  # one base point
        if base is None:
            raise ValueError("estimator='base' computes δ at one base point: give its index, base=K")
        w = int(base)
        br = _bracket(d, solver, [w], bool(assume_metric), diam)
        dw = br["base_deltas"][0]
        result.update(delta=dw, lower=max(dw, br["lower"]), upper=br["upper"], base=w, bases=[w],
                      base_deltas=[dw], witness=br["witness"])
    result["delta_rel"] = 2 * result["delta"] / diam if diam > 0 else None  # all points coincide
    result["seconds"] = time.perf_counter() - t0
    return result


def _run_sampled(x: Any, est: SampledEstimator, metric: str, c: float, sample_size: int | None,
                 draws: int | None, seed: int, device: Any, backend: str, result: dict[str, Any]) -> dict[str, Any]:
    draws = est.draws if draws is None else int(draws)
    size = est.sample_size if sample_size is None else int(sample_size)
    if draws < 1 or size < 4:
        raise ValueError(f"a sampled estimator needs draws ≥ 1 and sample_size ≥ 4, got {draws} and {size}")
    t_warm = 0.0
    t0 = time.perf_counter()
    if metric == "precomputed":
        full = check_distance_matrix(x)
        n = len(full)
    else:
        full = _as_float64(x, "the feature matrix")
        n = len(full)
        _check_n(n, "the feature matrix")
    if not est.replace:
        size = min(size, n)
    deltas, diams, rels = [], [], []
    dev_name, backend_name = "cpu", backend
    for idx in _draw_indices(est, n, size, draws, seed):
        d = full[np.ix_(idx, idx)] if metric == "precomputed" else feature_distances(full[idx], metric=metric, c=c)
        solver = _solver(d, device, backend)
        if solver.backend == "numba" and "numba" not in _COMPILE:
            t1 = time.perf_counter()
            t_warm = _numba_warm()
            t0 += time.perf_counter() - t1
        dev_name, backend_name = str(solver.device), solver.backend
        out = solver.base(0, np.arange(len(d)), 0.0, None)
        dw = _base_term(d, *out.witness, 0) if out.witness else 0.0
        diam = float(d.max())
        deltas.append(dw)
        diams.append(diam)
        rels.append(2 * dw / diam if diam > 0 else float("nan"))
    rel = np.asarray(rels)
    if est.reduce == "mean":
        delta, delta_rel, diameter = float(np.mean(deltas)), float(np.mean(rel)), float(np.mean(diams))
    else:
        i = int(np.nanargmax(rel))
        delta, delta_rel, diameter = deltas[i], float(rel[i]), diams[i]
    result.update(delta=delta, delta_rel=delta_rel, diameter=diameter, n=n, sample_size=size, draws=draws,
                  replace=est.replace, delta_std=float(np.std(deltas)), delta_rel_std=float(np.std(rel)),
                  draw_delta_rel=[float(v) for v in rel], base=0, device=dev_name, backend=backend_name,
                  source=est.source, compile_seconds=t_warm, seconds=time.perf_counter() - t0)
    return result


# ----------------------------------------------------------------------------- task plugin
