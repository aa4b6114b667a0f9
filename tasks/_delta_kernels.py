"""Compiled (numba) kernels behind :mod:`harness.tasks.delta`.

The work is the max-min matrix product of a Gromov-product matrix ``G`` with
itself, ``(G ⊗ G)[x, y] = max_k min(G[x, k], G[k, y])``, and its excess over
``G``: ``max_{x,y} (G ⊗ G)[x, y] − G[x, y]``. Everything here is float32 and
exact up to the rounding of ``G`` itself: max and min only select values, and
the one subtraction per pair is a single float32 rounding.

Speed comes from three choices, measured on an AVX-512 CPU:

- ``G`` is stored as int32 bit patterns. For non-negative IEEE floats the
  integer order is the float order, and LLVM vectorises integer max/min
  *reductions* (it does not vectorise numba's float ``max``/``min`` reductions),
  which made the kernel ~4× faster.
- ``G`` is symmetric, so ``G[k, y]`` is row ``y`` read along ``k``: each output
  pair is a reduction over two contiguous rows, and a 4×4 block of pairs keeps
  16 accumulators in registers while reading 8 rows once (register tiling).
  Only blocks on or above the diagonal are computed (the excess is symmetric).
- Blocks are skipped when a cheap bound says they cannot beat the running
  maximum (see :func:`max_min_excess`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Rows/columns are padded to a multiple of this (the register block).
BLOCK = 4
#: Padding value in the int32 view: below every non-negative float's bit pattern.
PAD = np.int32(-1)
#: Independent work streams for ``prange`` (interleaved rows balance the triangle).
_STREAMS = 64


@njit(cache=True, parallel=True)
def gromov_rowmax(D, w, members):
    """Row maxima and the minimum of the Gromov products at base ``w`` on ``members``.

    ``G[i, j] = (D[a, w] + D[b, w] − D[a, b]) / 2`` with ``a, b = members[i], members[j]``
    (float64). For a metric ``r[i] = G[i, i] = D[a, w]``; in general ``r`` is the
    bound ``max_k min(G[i, k], G[k, j]) ≤ min(r[i], r[j])`` that the kernel prunes with.
    """
    m = members.shape[0]
    r = np.empty(m)
    lo = np.empty(m)
    for i in prange(m):
        a = members[i]
        da = D[a, w]
        hi_i = -np.inf
        lo_i = np.inf
        for j in range(m):
            b = members[j]
            g = 0.5 * (da + D[b, w] - D[a, b])
            hi_i = max(hi_i, g)
            lo_i = min(lo_i, g)
        r[i] = hi_i
        lo[i] = lo_i
    return r, lo.min()


@njit(cache=True, parallel=True)
def fill_gromov(D, w, rows, shift, Gf):
    """Write ``G + shift`` (float32, clamped at +0.0) for the points ``rows`` into ``Gf[:m, :m]``.

    ``shift ≥ 0`` lifts every product to ≥ 0 so that the int32 view is ordered;
    it cancels in the excess ``(G ⊗ G) − G``. Clamping turns the −0.0 and the
    rounding residue of a metric's zero products into +0.0 (−0.0 would be the
    smallest int32).
    """
    m = rows.shape[0]
    for i in prange(m):
        a = rows[i]
        da = D[a, w]
        for j in range(m):
            b = rows[j]
            g = 0.5 * (da + D[b, w] - D[a, b]) + shift
            Gf[i, j] = np.float32(g) if g > 0.0 else np.float32(0.0)


@njit(cache=True, inline="always")
def _block44(Gi, x0, y0, K):
    """16 accumulators ``max_{k<K} min(G[x0+r, k], G[y0+c, k])`` for a 4×4 block (int32 view)."""
    a0 = Gi[x0]
    a1 = Gi[x0 + 1]
    a2 = Gi[x0 + 2]
    a3 = Gi[x0 + 3]
    b0 = Gi[y0]
    b1 = Gi[y0 + 1]
    b2 = Gi[y0 + 2]
    b3 = Gi[y0 + 3]
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = PAD
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = PAD
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


@njit(cache=True, parallel=True)
def max_min_excess(Gi, r, m, K, best):
    """``max(best, max_{x ≤ y < m} [max_{k < K} min(G[x,k], G[k,y]) − G[x,y]])`` and its (x, y).

    ``Gi``: int32 view of a symmetric non-negative float32 matrix padded to a
    multiple of :data:`BLOCK` with :data:`PAD`; ``r`` (float32, length ≥ m): row
    bounds, ``max_k G[x, k] ≤ r[x]``; ``K ≤ m``: only the first ``K`` columns take
    part in the max-min (the caller orders points so that the ones it may drop
    come last). Returns ``(value, x, y)``; ``x = y = -1`` when nothing beat ``best``.

    Early exit: ``max_k min(G[x,k], G[k,y]) ≤ min(r[x], r[y])``, so a 4×4 block
    whose ``max(min(r[x], r[y]) − G[x, y]) ≤`` the running maximum of its stream
    is skipped without its O(K) loop.
    """
    Gf = Gi.view(np.float32)
    mp = Gi.shape[0]
    nb = mp // BLOCK
    S = _STREAMS
    out_v = np.full(S, best, dtype=np.float32)
    out_x = np.full(S, -1, dtype=np.int64)
    out_y = np.full(S, -1, dtype=np.int64)
    if K <= 0 or m <= 0:
        return best, -1, -1
    for s in prange(S):
        acc = np.empty(16, dtype=np.int32)
        accf = acc.view(np.float32)
        lb = best
        bx = -1
        by = -1
        for xb in range(s, nb, S):
            x0 = xb * BLOCK
            if x0 >= m:
                break
            for yb in range(xb, nb):
                y0 = yb * BLOCK
                if y0 >= m:
                    break
                bound = np.float32(-np.inf)
                for i in range(BLOCK):
                    x = x0 + i
                    if x < m:
                        for j in range(BLOCK):
                            y = y0 + j
                            if y < m:
                                bound = max(bound, min(r[x], r[y]) - Gf[x, y])
                if bound <= lb:
                    continue
                c = _block44(Gi, x0, y0, K)
                acc[0] = c[0]
                acc[1] = c[1]
                acc[2] = c[2]
                acc[3] = c[3]
                acc[4] = c[4]
                acc[5] = c[5]
                acc[6] = c[6]
                acc[7] = c[7]
                acc[8] = c[8]
                acc[9] = c[9]
                acc[10] = c[10]
                acc[11] = c[11]
                acc[12] = c[12]
                acc[13] = c[13]
                acc[14] = c[14]
                acc[15] = c[15]
                for i in range(BLOCK):
                    x = x0 + i
                    if x < m:
                        for j in range(BLOCK):
                            y = y0 + j
                            if y < m:
                                v = accf[i * BLOCK + j] - Gf[x, y]
                                if v > lb:
                                    lb = v
                                    bx = x
                                    by = y
        out_v[s] = lb
        out_x[s] = bx
        out_y[s] = by
    i = np.argmax(out_v)
    if out_x[i] < 0:
        return best, -1, -1
    return out_v[i], out_x[i], out_y[i]


@njit(cache=True, parallel=True)
def triangle_violation(D, tol):
    """Largest ``D[x, y] − min_k (D[x, k] + D[k, y])`` found, stopping early once it exceeds ``tol``.

    O(n³) min-plus product, vectorised along contiguous rows; a result ``≤ tol``
    certifies the triangle inequality (up to ``tol``) for every triple.
    """
    n = D.shape[0]
    S = _STREAMS
    worst = np.zeros(S)
    for s in prange(S):
        acc = np.empty(n)
        wv = 0.0
        for x in range(s, n, S):
            if wv > tol:
                break
            for y in range(n):
                acc[y] = np.inf
            for k in range(n):
                a = D[x, k]
                for y in range(n):
                    acc[y] = min(acc[y], a + D[k, y])
            for y in range(n):
                wv = max(wv, D[x, y] - acc[y])
        worst[s] = wv
    return worst.max()
