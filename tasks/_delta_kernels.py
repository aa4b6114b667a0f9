"""Compiled (numba) kernels behind :mod:`harness.tasks.delta_estimators`.

The work is the max-min matrix product of a Gromov-product matrix ``G`` with
itself, ``(G ⊗ G)[x, y] = max_k min(G[x, k], G[k, y])``, and its excess over
``G``: ``max_{x,y} (G ⊗ G)[x, y] − G[x, y]``. Everything here is float32 and
exact up to the rounding of ``G`` itself: max and min only select values, and
the one subtraction per pair is a single float32 rounding.

Speed comes from four choices, measured on an AVX-512 CPU:

- ``G`` is stored as int32 bit patterns. For non-negative IEEE floats the
  integer order is the float order, and LLVM vectorises integer max/min
  *reductions* (it does not vectorise numba's float ``max``/``min`` reductions),
  which made the kernel ~4× faster.
- ``G`` is symmetric, so ``G[k, y]`` is row ``y`` read along ``k``: each output
  pair is a reduction over two contiguous rows, and a 4×4 block of pairs keeps
  16 accumulators in registers while reading 8 rows once (register tiling).
  Only blocks on or above the diagonal are computed (the excess is symmetric).
  The loop is bound by the vector min/max units (two instructions per 16 lanes of
  pairs × z): larger register blocks (5×5, 6×4, 8×4) gained 10–20%, fewer bits per lane more:
- Each block is first screened on 16-bit codes of ``G`` (:func:`_code_base`; 32 lanes per
  instruction, 2.4–2.7× the int32 rate, and half the memory traffic). A monotone map commutes
  with max and min, so the screen gives the exact code of ``(G ⊗ G)[x, y]`` and from it an
  upper bound on the excess; only blocks whose bound beats the running maximum are recomputed
  in int32 (:func:`_panel`): 10–40 of 30,000–125,000 blocks on the point clouds measured
  (n = 1000–2000), so δ_w at n = 2000 takes 2.4–2.6× less time.
- Row blocks are grouped in panels so that a large ``G`` streams from memory once
  per panel (2.4× faster at n = 5000), and blocks are skipped when a cheap bound says
  they cannot beat the running maximum (see :func:`max_min_excess`).

The screen changes no result: the running maximum takes exactly the values, and the blocks
exactly the order, of the plain int32 product, so ties resolve to the same (x, y).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Rows/columns are padded to a multiple of this (the register block).
BLOCK = 4
#: Padding value in the int32 view: below every non-negative float's bit pattern.
PAD = np.int32(-1)
#: Independent work streams of :func:`exact_delta` (interleaved base points).
_STREAMS = 64
#: Row blocks per panel (see :func:`_panel`): 8 × 4 rows of a 5000-point G are 640 KB, in L2.
PANEL = 8
#: Low bits of G's int32 pattern dropped by the 16-bit codes: the 65,536 codes cover the 8
#: binades (2^(16 + 10 − 23)) below max G, each bucket 2^10 float32 ulps wide (≤ 2⁻¹³ relative).
CODE_SHIFT = 10
#: Padding / smallest code in the int16 view (the code of 0 and of the bottom bucket).
PAD16 = np.int16(-32768)
#: Blocks are screened from this many z on (below it the screen's per-block work costs about
#: what it saves).
SCREEN_MIN_K = 64


@njit(cache=True)
def prepare_base(D, w, members, buf):
    """Gromov products at base ``w`` on ``members``, sorted by row bound, ready for the kernel.

    ``G[i, j] = (D[a, w] + D[b, w] − D[a, b]) / 2`` (float64, ``a, b = members[i], members[j]``)
    with row maxima ``r`` — for a metric ``r[i] = G[i, i] = D[a, w]`` — so that
    ``max_k min(G[i, k], G[k, j]) ≤ min(r[i], r[j])``, the bound the kernel prunes with.
    Points are ordered by decreasing ``r`` (large products first), written as
    ``float32(G + shift)`` into ``buf`` viewed as an (mp, mp) matrix, mp = m rounded up to
    :data:`BLOCK`, padding :data:`PAD`. ``shift = max(0, −min G)`` lifts every product to ≥ 0
    so that the int32 view is ordered (a metric has G ≥ 0 and shift is 0 up to rounding); it
    cancels in the excess ``(G ⊗ G) − G``. Values are clamped at +0.0 (−0.0 would be the
    smallest int32). Returns ``(gf, rows, r32, shift, d_rows_w)``; ``gf[:m, :m]`` holds G.
    """
    m = members.shape[0]
    # D[b, w] for every member, gathered once (reading it down column w in the inner loops
    # touched one cache line per element).
    dmw = np.empty(m)
    for j in range(m):
        dmw[j] = D[members[j], w]
    r = np.empty(m)
    gmin = np.inf
    for i in range(m):
        a = members[i]
        da = dmw[i]
        hi = -np.inf
        lo = np.inf
        for j in range(m):
            g = 0.5 * (da + dmw[j] - D[a, members[j]])
            hi = max(hi, g)
            lo = min(lo, g)
        r[i] = hi
        gmin = min(gmin, lo)
    shift = max(0.0, -gmin)
    order = np.argsort(-r, kind="mergesort")
    rows = members[order]
    dw = dmw[order]
    mp = (m + BLOCK - 1) // BLOCK * BLOCK
    gf = buf[: mp * mp].reshape((mp, mp))
    gi = gf.view(np.int32)
    r32 = np.empty(m, dtype=np.float32)
    for i in range(m):
        a = rows[i]
        da = dw[i]
        v = r[order[i]] + shift
        r32[i] = np.float32(v) if v > 0.0 else np.float32(0.0)
        for j in range(m):
            g = 0.5 * (da + dw[j] - D[a, rows[j]]) + shift
            gf[i, j] = np.float32(g) if g > 0.0 else np.float32(0.0)
        for j in range(m, mp):
            gi[i, j] = PAD
    for i in range(m, mp):
        for j in range(mp):
            gi[i, j] = PAD
    return gf, rows, r32, shift, dw


@njit(cache=True, inline="always")
def _code_base(r, m):
    """Where the 16-bit codes start: the int32 pattern ``base`` that puts ``max r`` (≥ every G,
    the rows' contract) at the top of the 65,536 buckets.

    Code of a pattern ``b`` (:func:`_code_rows`): ``(max(b − base, 0) >> CODE_SHIFT) − 32768``, a
    non-decreasing map of G (everything below ``base`` shares the bottom code), so
    ``code(max_k min(·)) = max_k min(code(·))`` exactly. Every value with code ``c`` is at most
    the float32 with pattern ``base + ((c + 32769) << CODE_SHIFT) − 1``, the top of its bucket
    (for the top code that is ``max r`` itself, or above it when ``base`` is 0).
    """
    t = np.zeros(1, dtype=np.float32)
    for i in range(m):
        t[0] = max(t[0], r[i])
    top = np.int64(t.view(np.int32)[0])
    return max(np.int64(0), top - (np.int64(65536) << CODE_SHIFT) + 1)


@njit(cache=True, inline="always")
def _code_rows(Gi, Q, base, i0, i1, K):
    """16-bit codes of ``Gi[i0:i1, :K]`` into ``Q`` (padding maps to :data:`PAD16`)."""
    b = np.int32(base)
    for i in range(i0, i1):
        for k in range(K):
            Q[i, k] = np.int16((max(Gi[i, k] - b, np.int32(0)) >> CODE_SHIFT) - 32768)


@njit(cache=True)
def _block44(Gi, x0, y0, K, low):
    """16 accumulators ``max_{k<K} min(G[x0+r, k], G[y0+c, k])`` for a 4×4 block (an int32 view
    of G, or its int16 codes; ``low`` is the dtype's padding, below every value)."""
    a0 = Gi[x0]
    a1 = Gi[x0 + 1]
    a2 = Gi[x0 + 2]
    a3 = Gi[x0 + 3]
    b0 = Gi[y0]
    b1 = Gi[y0 + 1]
    b2 = Gi[y0 + 2]
    b3 = Gi[y0 + 3]
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = low
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = low
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


@njit(cache=True)
def _panel(Gi, Gf, Q, base, r, m, K, lb, pb, screen):
    """The upper-triangle blocks of the row panel starting at row block ``pb``: the running max
    ``lb`` of the excess and its (x, y) (``-1`` if nothing beat ``lb``).

    A panel is :data:`PANEL` row blocks; each column block is paired with every row block of
    the panel while its rows are in cache, so a large G streams from memory once per panel
    instead of once per row block. A block is skipped when ``max(min(r[x], r[y]) − G[x, y])``
    cannot beat ``lb``; with ``screen``, it is first computed on the codes ``Q`` (base
    ``base``, see :func:`_code_base`) and skipped when ``max(hi(code) − G[x, y]) ≤ lb``, ``hi``
    the largest float32 with that code: the exact excess ``fl(P − G)`` is at most
    ``fl(hi − G)`` because ``P ≤ hi`` and a rounded subtraction is monotone.
    """
    acc = np.empty(16, dtype=np.int32)
    accf = acc.view(np.float32)
    hib = np.empty(16, dtype=np.int32)
    hif = hib.view(np.float32)
    bx = -1
    by = -1
    screened = 0
    passed = 0
    nb = Gi.shape[0] // BLOCK
    pe = min(pb + PANEL, nb)
    for yb in range(pb, nb):
        y0 = yb * BLOCK
        if y0 >= m:
            break
        for xb in range(pb, min(pe, yb + 1)):
            x0 = xb * BLOCK
            if x0 >= m:
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
            # Ties at the maximum (δ_w = 0 on a tree: every pair's excess is 0) pass every screen;
            # once a quarter of the blocks pass, the screen only costs, so the panel stops it.
            if screen and (screened < 64 or 4 * passed <= screened):
                screened += 1
                q = _block44(Q, x0, y0, K, PAD16)
                for t in range(16):
                    hib[t] = np.int32(base + ((np.int64(q[t]) + 32769) << CODE_SHIFT) - 1)
                ub = np.float32(-np.inf)
                for i in range(BLOCK):
                    x = x0 + i
                    if x < m:
                        for j in range(BLOCK):
                            y = y0 + j
                            if y < m:
                                ub = max(ub, hif[i * BLOCK + j] - Gf[x, y])
                if ub <= lb:
                    continue
                passed += 1
            c = _block44(Gi, x0, y0, K, PAD)
            for t in range(16):
                acc[t] = c[t]
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
    return lb, bx, by


@njit(cache=True, parallel=True)
def max_min_excess(Gi, r, m, K, best):
    """``max(best, max_{x ≤ y < m} [max_{k < K} min(G[x,k], G[k,y]) − G[x,y]])`` and its (x, y).

    ``Gi``: int32 view of a symmetric non-negative float32 matrix padded to a
    multiple of :data:`BLOCK` with :data:`PAD`; ``r`` (float32, length ≥ m): row
    bounds, ``max_k G[x, k] ≤ r[x]``; ``K ≤ m``: only the first ``K`` columns take
    part in the max-min (the caller orders points so that the ones it may drop
    come last). Returns ``(value, x, y)``; ``x = y = -1`` when nothing beat ``best``.

    Early exit: ``max_k min(G[x,k], G[k,y]) ≤ min(r[x], r[y])``, so a 4×4 block
    whose ``max(min(r[x], r[y]) − G[x, y]) ≤`` the running maximum of its panel
    is skipped without its O(K) loop; from :data:`SCREEN_MIN_K` columns on, the others are
    screened on 16-bit codes first (:func:`_panel`). Parallel over row panels, taken in the
    order first, last, second, second-to-last, … so that the equal contiguous chunks a static
    schedule hands to each thread carry equal shares of the triangle.
    """
    Gf = Gi.view(np.float32)
    rows = Gi.shape[0]
    nb = (min(m, rows) + BLOCK - 1) // BLOCK
    npan = (nb + PANEL - 1) // PANEL
    out_v = np.full(max(npan, 1), best, dtype=np.float32)
    out_x = np.full(max(npan, 1), -1, dtype=np.int64)
    out_y = np.full(max(npan, 1), -1, dtype=np.int64)
    if K <= 0 or m <= 0:
        return best, -1, -1
    screen = K >= SCREEN_MIN_K
    Q = np.empty(Gi.shape if screen else (0, 0), dtype=np.int16)
    base = _code_base(r, m)
    if screen:  # O(m·K), on this thread: a second parallel region would cost more on a busy machine
        _code_rows(Gi, Q, base, 0, rows, K)
    for q in prange(npan):
        p = q // 2 if q % 2 == 0 else npan - 1 - q // 2
        lb, bx, by = _panel(Gi, Gf, Q, base, r, m, K, best, p * PANEL, screen)
        out_v[q] = lb
        out_x[q] = bx
        out_y[q] = by
    i = np.argmax(out_v)
    if out_x[i] < 0:
        return best, -1, -1
    return out_v[i], out_x[i], out_y[i]


@njit(cache=True)
def _excess_serial(Gi, Q, r, m, K, best):
    """:func:`max_min_excess_serial` with a caller-owned code buffer ``Q`` (shape of ``Gi``, int16)."""
    if K <= 0 or m <= 0:
        return best, -1, -1
    Gf = Gi.view(np.float32)
    nb = (min(m, Gi.shape[0]) + BLOCK - 1) // BLOCK
    screen = K >= SCREEN_MIN_K
    base = _code_base(r, m)
    if screen:
        _code_rows(Gi, Q, base, 0, Gi.shape[0], K)
    lb, bx, by = best, -1, -1
    for pb in range(0, nb, PANEL):
        v, x, y = _panel(Gi, Gf, Q, base, r, m, K, lb, pb, screen)
        if x >= 0:
            lb, bx, by = v, x, y
    if bx < 0:
        return best, -1, -1
    return lb, bx, by


@njit(cache=True)
def max_min_excess_serial(Gi, r, m, K, best):
    """:func:`max_min_excess` on the calling thread (small problems: no thread wake-up); the
    running maximum carries over from panel to panel."""
    Q = np.empty(Gi.shape if K >= SCREEN_MIN_K else (0, 0), dtype=np.int16)
    return _excess_serial(Gi, Q, r, m, K, best)


@njit(cache=True)
def _z_prefix(dw, threshold, m):
    """Length of the shortest prefix holding every z with ``dw[z] > threshold``."""
    for i in range(m - 1, -1, -1):
        if dw[i] > threshold:
            return i + 1
    return 0


@njit(cache=True, parallel=True)
def exact_delta(D, order, metric_space):
    """Four-point δ = max_w δ_w, one base point per task, bases interleaved over threads.

    Base ``order[t]`` is examined on the points ``order[t:]`` only: a quadruple is found at the
    first of its points in ``order`` (any of its points, taken as the base, exposes its
    (S1 − S2)/2). In a metric every term at base w is ≤ ½ d(z, w), so z with
    d(z, w) ≤ 2·best is dropped, and so is a base with no point farther than 2·best. ``best`` is
    shared between streams through ``bests`` (a stale read only prunes less).
    Returns ``(value32, x, y, z, w)``, the quadruple in input indices.
    """
    n = D.shape[0]
    S = _STREAMS
    bests = np.zeros(S, dtype=np.float32)
    wit = np.full((S, 4), -1, dtype=np.int64)
    for s in prange(S):
        if s < n:
            m0 = n - s
            mp0 = (m0 + BLOCK - 1) // BLOCK * BLOCK
            buf = np.empty(mp0 * mp0, dtype=np.float32)
            qbuf = np.empty(mp0 * mp0, dtype=np.int16)
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
                gf, rows, r32, shift, dw = prepare_base(D, w, members, buf)
                m = rows.shape[0]
                K = m
                if metric_space and best > 0:
                    K = _z_prefix(dw, 2.0 * best, m)
                mp = gf.shape[0]
                Q = qbuf[: mp * mp].reshape((mp, mp))
                v, x, y = _excess_serial(gf.view(np.int32), Q, r32, m, K, np.float32(best))
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
