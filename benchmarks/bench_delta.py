"""δ-hyperbolicity: harness.tasks.delta against the reference hyptorch ``delta.py``, same points, same run.

The reference (a faithful copy below) builds an n×n×n float64 array for one base point
(7.5 GiB at n = 1000). Goals of issue #6, printed as measured ratios:

- n = 1000: ≥ 100× faster than the reference, same δ on the same sample;
- n = 2000: exact δ_w under 1 s on 2 CPU cores;
- n = 5000: peak RSS under 2 GiB (measured in a fresh subprocess);
- an isotropic 16-d Gaussian cloud, the kernel's worst case (its bounds skip almost no
  block): δ_w at n = 2000 in ≤ 0.5 s on 2 CPU cores. Timed against the previous kernel
  (int32 tiles only, kept below as ``v1_*``) on the same G, same run, with identical
  (value, x, y) asserted, and end to end with the previous kernel swapped in.

Also printed: numba's one-off compile (empty cache) and cache-load times (excluded from the
timings above, which are best-of-repeats after a warm-up), the exact four-point δ at n = 1000,
a bracket at n = 5000, and how far the reference's sampled estimate is from the exact δ.

On a machine with a GPU it also runs the torch path there (same δ_w, its time).

Run: ``python benchmarks/bench_delta.py [--ref-n 1000] [--quick]``. The reference at
n = 1000 needs ~8 GiB of free memory; ``--ref-n 600`` needs 1.7 GiB. ``--iso-only`` runs the
isotropic comparison alone (with ``--quick``: without the exact δ).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np
from numba import njit, prange
from scipy.spatial import distance_matrix


# ---------------------------------------------------------------------------------------------
# Faithful copy of the reference: hyptorch/delta.py from "Hyperbolic Image Embeddings",
# Khrulkov, Mirvakhabova, Ustinova, Oseledets, Lempitsky (CVPR 2020),
# https://github.com/leymir/hyperbolic-image-embeddings, MIT licence. Only the model/loader
# plumbing of get_delta is left out; the arithmetic and the sampling are unchanged.
def delta_hyp(dismat):
    """
    computes delta hyperbolicity value from distance matrix
    """

    p = 0
    row = dismat[p, :][np.newaxis, :]
    col = dismat[:, p][:, np.newaxis]
    XY_p = 0.5 * (row + col - dismat)

    maxmin = np.max(np.minimum(XY_p[:, :, None], XY_p[None, :, :]), axis=1)
    return np.max(maxmin - XY_p)


def batched_delta_hyp(X, n_tries=10, batch_size=1500):
    vals = []
    for i in range(n_tries):
        idx = np.random.choice(len(X), batch_size)
        X_batch = X[idx]
        distmat = distance_matrix(X_batch, X_batch)
        diam = np.max(distmat)
        delta_rel = delta_hyp(distmat) * 2 / diam
        vals.append(delta_rel)
    return np.mean(vals), np.std(vals)


# Faithful copy of the evaluation loop of hyp_metric/delta.py ("Hyperbolic Vision
# Transformers", Ermolov et al., CVPR 2022, https://github.com/htdt/hyp_metric), with the
# torch delta_hyp it uses; the dataset/model plumbing is left out.
def hyp_metric_delta_hyp(dismat):
    import torch

    p = 0
    row = dismat[p, :][None, :]
    col = dismat[:, p][:, None]
    XY_p = 0.5 * (row + col - dismat)
    maxmin = torch.minimum(XY_p[:, :, None], XY_p[None, :, :]).max(1).values
    return (maxmin - XY_p).max()


def hyp_metric_rel_delta(emb, n_tries=100, batch_size=2000):
    import torch

    result = []
    for i in range(n_tries):
        idx = torch.randperm(len(emb))[:batch_size]
        emb_cur = emb[idx]
        dists = torch.cdist(emb_cur, emb_cur)
        delta = hyp_metric_delta_hyp(dists)
        diam = dists.max()
        rel_delta = (2 * delta) / diam
        result.append(rel_delta)
    return torch.tensor(result).mean().item()
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The previous CPU kernel, verbatim but for the ``v1`` names: harness.tasks._delta_kernels as of
# commit 63f7656 (int32 register tiles, panels, the row-bound skip; no 16-bit screen). The
# reference the current kernel is timed against here and compared with bit for bit in
# tests/test_delta.py.
V1_BLOCK = 4
V1_PAD = np.int32(-1)
V1_STREAMS = 64
V1_PANEL = 8


@njit(cache=False)
def v1_prepare_base(D, w, members, buf):
    """Gromov products at base ``w`` on ``members``, sorted by row bound, ready for the kernel.

    ``G[i, j] = (D[a, w] + D[b, w] − D[a, b]) / 2`` (float64, ``a, b = members[i], members[j]``)
    with row maxima ``r`` — for a metric ``r[i] = G[i, i] = D[a, w]`` — so that
    ``max_k min(G[i, k], G[k, j]) ≤ min(r[i], r[j])``, the bound the kernel prunes with.
    Points are ordered by decreasing ``r`` (large products first), written as
    ``float32(G + shift)`` into ``buf`` viewed as an (mp, mp) matrix, mp = m rounded up to
    :data:`V1_BLOCK`, padding :data:`V1_PAD`. ``shift = max(0, −min G)`` lifts every product to ≥ 0
    so that the int32 view is ordered (a metric has G ≥ 0 and shift is 0 up to rounding); it
    cancels in the excess ``(G ⊗ G) − G``. Values are clamped at +0.0 (−0.0 would be the
    smallest int32). Returns ``(gf, rows, r32, shift, d_rows_w)``; ``gf[:m, :m]`` holds G.
    """
    m = members.shape[0]
    r = np.empty(m)
    gmin = np.inf
    for i in range(m):
        a = members[i]
        da = D[a, w]
        hi = -np.inf
        for j in range(m):
            b = members[j]
            g = 0.5 * (da + D[b, w] - D[a, b])
            hi = max(hi, g)
            gmin = min(gmin, g)
        r[i] = hi
    shift = max(0.0, -gmin)
    order = np.argsort(-r, kind="mergesort")
    rows = members[order]
    mp = (m + V1_BLOCK - 1) // V1_BLOCK * V1_BLOCK
    gf = buf[: mp * mp].reshape((mp, mp))
    gi = gf.view(np.int32)
    r32 = np.empty(m, dtype=np.float32)
    dw = np.empty(m)
    for i in range(m):
        a = rows[i]
        da = D[a, w]
        dw[i] = da
        v = r[order[i]] + shift
        r32[i] = np.float32(v) if v > 0.0 else np.float32(0.0)
        for j in range(m):
            b = rows[j]
            g = 0.5 * (da + D[b, w] - D[a, b]) + shift
            gf[i, j] = np.float32(g) if g > 0.0 else np.float32(0.0)
        for j in range(m, mp):
            gi[i, j] = V1_PAD
    for i in range(m, mp):
        for j in range(mp):
            gi[i, j] = V1_PAD
    return gf, rows, r32, shift, dw


@njit(cache=False, inline="always")
def _v1_block44(Gi, x0, y0, K):
    """16 accumulators ``max_{k<K} min(G[x0+r, k], G[y0+c, k])`` for a 4×4 block (int32 view)."""
    a0 = Gi[x0]
    a1 = Gi[x0 + 1]
    a2 = Gi[x0 + 2]
    a3 = Gi[x0 + 3]
    b0 = Gi[y0]
    b1 = Gi[y0 + 1]
    b2 = Gi[y0 + 2]
    b3 = Gi[y0 + 3]
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = V1_PAD
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = V1_PAD
    for k in range(K):
        p0 = a0[k]
        p1 = a1[k]
        p2 = a2[k]
        p3 = a3[k]
        q0 = b0[k]
        q1 = b1[k]
        q2 = b2[k]
        q3 = b3[k]
        c00 = max(c00, min(p0, q0))
        c01 = max(c01, min(p0, q1))
        c02 = max(c02, min(p0, q2))
        c03 = max(c03, min(p0, q3))
        c10 = max(c10, min(p1, q0))
        c11 = max(c11, min(p1, q1))
        c12 = max(c12, min(p1, q2))
        c13 = max(c13, min(p1, q3))
        c20 = max(c20, min(p2, q0))
        c21 = max(c21, min(p2, q1))
        c22 = max(c22, min(p2, q2))
        c23 = max(c23, min(p2, q3))
        c30 = max(c30, min(p3, q0))
        c31 = max(c31, min(p3, q1))
        c32 = max(c32, min(p3, q2))
        c33 = max(c33, min(p3, q3))
    return (c00, c01, c02, c03, c10, c11, c12, c13,
            c20, c21, c22, c23, c30, c31, c32, c33)


@njit(cache=False, inline="always")
def _v1_panel(Gi, Gf, r, m, K, lb, pb):
    """The upper-triangle blocks of the row panel starting at row block ``pb``: the running max
    ``lb`` of the excess and its (x, y) (``-1`` if nothing beat ``lb``).

    A panel is :data:`V1_PANEL` row blocks; each column block is paired with every row block of
    the panel while its rows are in cache, so a large G streams from memory once per panel
    instead of once per row block.
    """
    acc = np.empty(16, dtype=np.int32)
    accf = acc.view(np.float32)
    bx = -1
    by = -1
    nb = Gi.shape[0] // V1_BLOCK
    pe = min(pb + V1_PANEL, nb)
    for yb in range(pb, nb):
        y0 = yb * V1_BLOCK
        if y0 >= m:
            break
        for xb in range(pb, min(pe, yb + 1)):
            x0 = xb * V1_BLOCK
            if x0 >= m:
                break
            bound = np.float32(-np.inf)
            for i in range(V1_BLOCK):
                x = x0 + i
                if x < m:
                    for j in range(V1_BLOCK):
                        y = y0 + j
                        if y < m:
                            bound = max(bound, min(r[x], r[y]) - Gf[x, y])
            if bound <= lb:
                continue
            c = _v1_block44(Gi, x0, y0, K)
            for t in range(16):
                acc[t] = c[t]
            for i in range(V1_BLOCK):
                x = x0 + i
                if x < m:
                    for j in range(V1_BLOCK):
                        y = y0 + j
                        if y < m:
                            v = accf[i * V1_BLOCK + j] - Gf[x, y]
                            if v > lb:
                                lb = v
                                bx = x
                                by = y
    return lb, bx, by


@njit(cache=False, parallel=True)
def v1_max_min_excess(Gi, r, m, K, best):
    """``max(best, max_{x ≤ y < m} [max_{k < K} min(G[x,k], G[k,y]) − G[x,y]])`` and its (x, y).

    ``Gi``: int32 view of a symmetric non-negative float32 matrix padded to a
    multiple of :data:`V1_BLOCK` with :data:`V1_PAD`; ``r`` (float32, length ≥ m): row
    bounds, ``max_k G[x, k] ≤ r[x]``; ``K ≤ m``: only the first ``K`` columns take
    part in the max-min (the caller orders points so that the ones it may drop
    come last). Returns ``(value, x, y)``; ``x = y = -1`` when nothing beat ``best``.

    Early exit: ``max_k min(G[x,k], G[k,y]) ≤ min(r[x], r[y])``, so a 4×4 block
    whose ``max(min(r[x], r[y]) − G[x, y]) ≤`` the running maximum of its panel
    is skipped without its O(K) loop. Parallel over row panels, taken in the order
    first, last, second, second-to-last, … so that the equal contiguous chunks a static
    schedule hands to each thread carry equal shares of the triangle.
    """
    Gf = Gi.view(np.float32)
    nb = (min(m, Gi.shape[0]) + V1_BLOCK - 1) // V1_BLOCK
    npan = (nb + V1_PANEL - 1) // V1_PANEL
    out_v = np.full(max(npan, 1), best, dtype=np.float32)
    out_x = np.full(max(npan, 1), -1, dtype=np.int64)
    out_y = np.full(max(npan, 1), -1, dtype=np.int64)
    if K <= 0 or m <= 0:
        return best, -1, -1
    for q in prange(npan):
        p = q // 2 if q % 2 == 0 else npan - 1 - q // 2
        lb, bx, by = _v1_panel(Gi, Gf, r, m, K, best, p * V1_PANEL)
        out_v[q] = lb
        out_x[q] = bx
        out_y[q] = by
    i = np.argmax(out_v)
    if out_x[i] < 0:
        return best, -1, -1
    return out_v[i], out_x[i], out_y[i]


@njit(cache=False)
def v1_max_min_excess_serial(Gi, r, m, K, best):
    """:func:`v1_max_min_excess` on the calling thread (small problems: no thread wake-up); the
    running maximum carries over from panel to panel."""
    if K <= 0 or m <= 0:
        return best, -1, -1
    Gf = Gi.view(np.float32)
    nb = (min(m, Gi.shape[0]) + V1_BLOCK - 1) // V1_BLOCK
    lb, bx, by = best, -1, -1
    for pb in range(0, nb, V1_PANEL):
        v, x, y = _v1_panel(Gi, Gf, r, m, K, lb, pb)
        if x >= 0:
            lb, bx, by = v, x, y
    if bx < 0:
        return best, -1, -1
    return lb, bx, by


@njit(cache=False)
def _v1_z_prefix(dw, threshold, m):
    """Length of the shortest prefix holding every z with ``dw[z] > threshold``."""
    for i in range(m - 1, -1, -1):
        if dw[i] > threshold:
            return i + 1
    return 0


@njit(cache=False, parallel=True)
def v1_exact_delta(D, order, metric_space):
    """Four-point δ = max_w δ_w, one base point per task, bases interleaved over threads.

    Base ``order[t]`` is examined on the points ``order[t:]`` only: a quadruple is found at the
    first of its points in ``order`` (any of its points, taken as the base, exposes its
    (S1 − S2)/2). In a metric every term at base w is ≤ ½ d(z, w), so z with
    d(z, w) ≤ 2·best is dropped, and so is a base with no point farther than 2·best. ``best`` is
    shared between streams through ``bests`` (a stale read only prunes less).
    Returns ``(value32, x, y, z, w)``, the quadruple in input indices.
    """
    n = D.shape[0]
    S = V1_STREAMS
    bests = np.zeros(S, dtype=np.float32)
    wit = np.full((S, 4), -1, dtype=np.int64)
    for s in prange(S):
        if s < n:
            m0 = n - s
            mp0 = (m0 + V1_BLOCK - 1) // V1_BLOCK * V1_BLOCK
            buf = np.empty(mp0 * mp0, dtype=np.float32)
            for t in range(s, n, S):
                w = order[t]
                members = order[t:]
                best = bests.max()
                if metric_space and best > 0:
                    far = 0.0
                    for a in members:
                        far = max(far, D[a, w])
                    if far <= 2 * best:
                        continue
                gf, rows, r32, shift, dw = v1_prepare_base(D, w, members, buf)
                m = rows.shape[0]
                K = m
                if metric_space and best > 0:
                    K = _v1_z_prefix(dw, 2.0 * best, m)
                v, x, y = v1_max_min_excess_serial(gf.view(np.int32), r32, m, K, np.float32(best))
                if x >= 0 and v > bests[s]:
                    z = 0
                    zv = np.float32(-np.inf)
                    for k in range(K):
                        q = min(gf[x, k], gf[y, k])
                        if q > zv:
                            zv = q
                            z = k
                    bests[s] = v
                    wit[s, 0] = rows[x]
                    wit[s, 1] = rows[y]
                    wit[s, 2] = rows[z]
                    wit[s, 3] = w
    i = np.argmax(bests)
    return bests[i], wit[i, 0], wit[i, 1], wit[i, 2], wit[i, 3]
# ---------------------------------------------------------------------------------------------


def features(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Clustered features (a mixture of 20 Gaussians), like a backbone's penultimate layer."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)) * 2.0
    return centres[rng.integers(0, 20, n)] + rng.normal(size=(n, dim))


def isotropic(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """An isotropic Gaussian cloud: distances concentrate, so the kernel's row bounds skip ~no block."""
    return np.random.default_rng(seed).normal(size=(n, dim))


@contextmanager
def v1_kernels():
    """Run the harness with the previous kernels (the ``v1_*`` copies above) swapped in."""
    from harness.tasks import _delta_kernels as K

    swap = {"prepare_base": v1_prepare_base, "max_min_excess": v1_max_min_excess,
            "max_min_excess_serial": v1_max_min_excess_serial, "exact_delta": v1_exact_delta}
    saved = {name: getattr(K, name) for name in swap}
    for name, fn in swap.items():
        setattr(K, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(K, name, fn)


def kernel_vs_v1(d: np.ndarray, repeats: int) -> dict[str, tuple[float, float]]:
    """δ_w at base 0 of distances ``d``: (v1, current) best-of times of the G preparation and of the
    parallel and serial max-min kernels, on the same G; asserts identical (value, x, y)."""
    from harness.tasks import _delta_kernels as K

    n = len(d)
    members = np.arange(n)
    mp = -(-n // K.BLOCK) * K.BLOCK
    buf = np.empty(mp * mp, dtype=np.float32)
    t_prep_v1, _ = best_of(lambda: v1_prepare_base(d, 0, members, buf), repeats)
    t_prep, (gf, _, r32, _, _) = best_of(lambda: K.prepare_base(d, 0, members, buf), repeats)
    gi = gf.view(np.int32)
    out = {"prepare": (t_prep_v1, t_prep)}
    for name, old, new in (("parallel", v1_max_min_excess, K.max_min_excess),
                           ("serial", v1_max_min_excess_serial, K.max_min_excess_serial)):
        t_old, r_old = best_of(lambda: old(gi, r32, n, n, np.float32(0)), repeats)
        t_new, r_new = best_of(lambda: new(gi, r32, n, n, np.float32(0)), repeats)
        assert r_old == r_new, f"{name} kernel differs from v1: {r_new} vs {r_old}"
        out[name] = (t_old, t_new)
    return out


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


_CHILD = r"""
import json, resource, sys, time
import numpy as np

def peak_rss_gib():
    # VmHWM is this process's own high-water mark; ru_maxrss would carry a big parent's peak
    # across fork + exec on Linux.
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

sys.path.insert(0, {bench_dir!r})
from bench_delta import features
from harness.tasks.delta_estimators import delta_hyperbolicity
x = features({n})
r = delta_hyperbolicity(x, **{kwargs!r})
print(json.dumps({{"seconds": r["seconds"], "compile_seconds": r["compile_seconds"], "delta": r["delta"],
                  "lower": r["lower"], "upper": r["upper"],
                  "peak_rss_gib": peak_rss_gib()}}))
"""


def child(n: int, env: dict | None = None, **kwargs) -> dict:
    """Run delta_hyperbolicity(features(n), **kwargs) in a fresh interpreter; its peak RSS and times."""
    code = _CHILD.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), n=n, kwargs=kwargs)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref-n", type=int, default=1000, help="points for the reference comparison")
    ap.add_argument("--quick", action="store_true", help="skip the exact δ at n = 1000 and the n = 5000 bracket")
    ap.add_argument("--iso-only", action="store_true", help="only the isotropic worst case against the v1 kernel")
    args = ap.parse_args()

    import numba
    import torch

    from harness.tasks.delta_estimators import delta_hyperbolicity

    print(f"CPU threads: numba {numba.get_num_threads()}, torch {torch.get_num_threads()} "
          f"(os.cpu_count() = {os.cpu_count()})")

    with tempfile.TemporaryDirectory() as cache:
        cold = child(200, env={"NUMBA_CACHE_DIR": cache}, base=0)
        warm = child(200, env={"NUMBA_CACHE_DIR": cache}, base=0)
    print(f"numba compile, empty cache: {cold['compile_seconds']:.2f} s; cache load: "
          f"{warm['compile_seconds']:.2f} s (once per process, excluded from the timings below)")
    delta_hyperbolicity(features(50), base=0)  # warm-up of this process
    small = distance_matrix(features(60), features(60))
    kernel_vs_v1(small, 1)  # compile (or load) the v1 copies
    with v1_kernels():
        delta_hyperbolicity(small, metric="precomputed", exact=True)

    # 0. The worst case: an isotropic 16-d Gaussian (pruning skips ~no block), current kernel vs v1.
    print("\n[isotropic 16-d Gaussian] δ_w at base 0; v1 = the previous kernel (int32 tiles only), same G")
    for n_iso in (1000, 2000):
        xi = isotropic(n_iso)
        di = distance_matrix(xi, xi)
        k = kernel_vs_v1(di, 5)
        for name, (t_old, t_new) in k.items():
            what = "G preparation" if name == "prepare" else f"{name} max-min kernel"
            print(f"  n = {n_iso}  {what:24s}: v1 {t_old:7.4f} s   now {t_new:7.4f} s   {t_old / t_new:5.2f}×")
        kw = dict(metric="precomputed", base=0, assume_metric=True)
        with v1_kernels():
            t_e_old, r_old = best_of(lambda: delta_hyperbolicity(di, **kw), 3)
        t_e_new, r_new = best_of(lambda: delta_hyperbolicity(di, **kw), 3)
        t_f, _ = best_of(lambda: delta_hyperbolicity(xi, base=0), 3)
        assert (r_old["delta"], r_old["witness"]) == (r_new["delta"], r_new["witness"])
        goal = "  (goal ≤ 0.5 s)" if n_iso == 2000 else ""
        print(f"  n = {n_iso}  delta_hyperbolicity     : v1 {t_e_old:7.4f} s   now {t_e_new:7.4f} s   "
              f"{t_e_old / t_e_new:5.2f}×; {t_f:.4f} s from the features{goal}; δ_w = {r_new['delta']:.10g} "
              "(identical, same witness)")
    if not args.quick:
        xi = isotropic(1000)
        with v1_kernels():
            t_x_old, r_old = best_of(lambda: delta_hyperbolicity(xi, exact=True), 1)
        t_x_new, r_new = best_of(lambda: delta_hyperbolicity(xi, exact=True), 1)
        assert (r_old["delta"], r_old["witness"]) == (r_new["delta"], r_new["witness"])
        print(f"  n = 1000  exact four-point δ      : v1 {t_x_old:7.3f} s   now {t_x_new:7.3f} s   "
              f"{t_x_old / t_x_new:5.2f}×; δ = {r_new['delta']:.10g} (identical)")
    if args.iso_only:
        return

    # Memory first, in a fresh process (before this one grows with the reference's n³ array).
    m5 = child(5000, base=0)

    # 1. Same sample, same base point: the reference δ_w vs ours.
    n = args.ref_n
    x = features(n)
    d = distance_matrix(x, x)  # the reference's own distances
    t_ref, ref = best_of(lambda: delta_hyp(d), 1)
    t_ours, ours = best_of(lambda: delta_hyperbolicity(d, metric="precomputed", base=0, assume_metric=True), 5)
    t_feat, ours_f = best_of(lambda: delta_hyperbolicity(x, base=0), 5)
    print(f"\n[n = {n}] δ_w at base 0 (what the reference computes per sample)")
    print(f"  reference hyptorch delta_hyp : {t_ref:8.3f} s   δ = {ref:.10g}")
    print(f"  ours, same distance matrix   : {t_ours:8.4f} s   δ = {ours['delta']:.10g}   "
          f"|Δ| = {abs(ours['delta'] - ref):.2e}")
    print(f"  ours, from the features      : {t_feat:8.4f} s   δ = {ours_f['delta']:.10g}")
    print(f"  speed-up: {t_ref / t_ours:.0f}× (goal ≥ 100×), {t_ref / t_feat:.0f}× including distances")
    del ref
    xi = isotropic(n)
    di = distance_matrix(xi, xi)
    t_ref_i, ref_i = best_of(lambda: delta_hyp(di), 1)
    t_ours_i, ours_i = best_of(lambda: delta_hyperbolicity(di, metric="precomputed", base=0, assume_metric=True), 5)
    print(f"  isotropic 16-d: reference {t_ref_i:.3f} s, ours {t_ours_i:.4f} s ({t_ref_i / t_ours_i:.0f}×); "
          f"δ = {ref_i:.10g} vs {ours_i['delta']:.10g}, |Δ| = {abs(ours_i['delta'] - ref_i):.2e}")

    # 2. n = 2000 exact δ_w.
    x2 = features(2000, seed=1)
    d2 = distance_matrix(x2, x2)
    t2, r2 = best_of(lambda: delta_hyperbolicity(d2, metric="precomputed", base=0, assume_metric=True), 3)
    t2f, _ = best_of(lambda: delta_hyperbolicity(x2, base=0), 3)
    print(f"\n[n = 2000] exact δ_w: {t2:.3f} s from distances, {t2f:.3f} s from features "
          f"(goal < 1 s on 2 cores); δ_w = {r2['delta']:.6g}")

    # 3. n = 5000 memory (measured above).
    print(f"\n[n = 5000] δ_w from features in a fresh process: peak RSS {m5['peak_rss_gib']:.2f} GiB "
          f"(goal < 2 GiB, includes the torch import), {m5['seconds']:.2f} s")

    if torch.cuda.is_available():
        # GPU path (tiled torch max-min): same δ_w as the CPU kernel, and its time.
        torch.cuda.synchronize()
        t_g, rg = best_of(lambda: delta_hyperbolicity(d2, metric="precomputed", base=0, assume_metric=True,
                                                      device="cuda"), 3)
        print(f"\n[n = 2000, {torch.cuda.get_device_name()}] δ_w on the GPU: {t_g:.3f} s, "
              f"δ_w = {rg['delta']:.6g} (CPU {r2['delta']:.6g}, |Δ| = {abs(rg['delta'] - r2['delta']):.1e})")
        t_ge, rge = best_of(lambda: delta_hyperbolicity(x, exact=True, device="cuda"), 1)
        print(f"[n = {n}, GPU] exact four-point δ = {rge['delta']:.6g} in {t_ge:.1f} s")

    if not args.quick:
        # 4. What sampling one base point misses: exact four-point δ vs δ_w vs the hyptorch protocol.
        t_ex, ex = best_of(lambda: delta_hyperbolicity(x, exact=True), 1)
        print(f"\n[n = {n}] exact four-point δ: {ex['delta']:.6g} (δ_rel {ex['delta_rel']:.4f}) in {t_ex:.1f} s; "
              f"δ_w at base 0: {ours_f['delta']:.6g} ({ours_f['delta'] / ex['delta'] - 1:+.1%})")
        br = delta_hyperbolicity(x, exact=False)
        print(f"  bracket (8 bases): {br['lower']:.6g} ≤ δ ≤ {br['upper']:.6g} in {br['seconds']:.2f} s")
        x3 = features(3000, seed=2)
        np.random.seed(0)
        t_b, (ref_mean, ref_std) = best_of(lambda: batched_delta_hyp(x3, n_tries=3, batch_size=500), 1)
        hy = delta_hyperbolicity(x3, estimator="hyptorch", draws=3, sample_size=500, seed=0)
        print(f"\n[n = 3000] hyptorch protocol, 3 draws of 500 (1500 needs 27 GiB in the reference):")
        print(f"  reference batched_delta_hyp : δ_rel = {ref_mean:.6f} ± {ref_std:.6f} in {t_b:.2f} s")
        print(f"  ours estimator='hyptorch'   : δ_rel = {hy['delta_rel']:.6f} ± {hy['delta_rel_std']:.6f} "
              f"in {hy['seconds']:.3f} s ({t_b / hy['seconds']:.0f}×)")
        b5 = delta_hyperbolicity(features(5000, seed=3), exact=False)
        print(f"\n[n = 5000] bracket from 8 base points: {b5['lower']:.6g} ≤ δ ≤ {b5['upper']:.6g} "
              f"(δ_rel ≥ {b5['delta_rel']:.4f}) in {b5['seconds']:.1f} s")


if __name__ == "__main__":
    main()
