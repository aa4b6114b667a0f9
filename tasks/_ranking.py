"""Per-query ranking statistics of re-ID evaluation without sorting the gallery.

For query ``i`` the gallery splits into positives (same identity, other
camera), junk (same identity, same camera: removed, as in torchreid's
``eval_market1501``) and negatives (other identities). Every metric of the
Market-1501 protocol needs only the ranks of the positives in the junk-free
ranking: with the ``m`` positives sorted, ``rank(p_k) = k + #{negatives
before p_k}``, so

* CMC uses ``rank(p_1)`` (rank of the first true match),
* AP = ``(1/m) Σ_k k / rank(p_k)`` (torchreid's AP, no interpolation),
* INP = ``m / rank(p_m)`` (Ye et al. 2021: ``|G_i| / R_i^hard``).

The CPU kernel (numba, parallel over queries) never sorts a row: per query it
sorts the few positive distances, gathers the items no farther than the last
positive (one pass), and counts for every positive the items strictly closer
and exactly as close (one vectorised comparison pass per positive; a query
with many positives sorts the gathered items and binary-searches instead).
The torch kernel (GPU tensors) sorts each chunk of rows, which is cheap on a
GPU. A NaN or infinite distance in the row of a query that has a true match
is an error.

Ties: both kernels order the gallery by ``(distance, gallery index)``, i.e.
exactly as a *stable* sort of each row does. torchreid uses ``np.argsort``
(quicksort, not stable), whose order among equal distances is arbitrary; on
tie-free data both give identical rankings.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange


@njit(cache=True, fastmath=True)
def _count_below(values, n, thresholds, lt, eq):
    """``lt[k] = #{values < t_k}``, ``eq[k] = #{values == t_k}`` over ``values[:n]`` (all finite:
    fastmath assumes so, and the caller checks it). One vectorised pass per threshold."""
    for k in range(len(thresholds)):
        t = thresholds[k]
        c = 0
        e = 0
        for j in range(n):
            x = values[j]
            c += x < t
            e += x == t
        lt[k] = c
        eq[k] = e


@njit(cache=True)
def _precedes(d, j, pd, pj):
    return d < pd or (d == pd and j < pj)


@njit(parallel=True, cache=True)
def _stats_kernel(distmat, q_camids, g_camids, pid_start, pid_members, q_slot, sort_above,
                  first_rank, ap, inp, num_pos, bad):
    num_q, num_g = distmat.shape
    for i in prange(num_q):
        row = distmat[i]
        slot = q_slot[i]
        first_rank[i], ap[i], inp[i], num_pos[i], bad[i] = 0, 0.0, 0.0, 0, 0
        if slot < 0:
            continue  # the query's identity is not in the gallery
        same = pid_members[pid_start[slot]:pid_start[slot + 1]]  # gallery items of its identity
        m = 0
        for j in same:
            if g_camids[j] != q_camids[i]:
                m += 1
        num_pos[i] = m
        if m == 0:
            continue
        pos_d = np.empty(m, dtype=distmat.dtype)
        pos_j = np.empty(m, dtype=np.int64)
        junk_j = np.empty(len(same) - m, dtype=np.int64)
        k = 0
        u = 0
        for j in same:
            if g_camids[j] != q_camids[i]:
                pos_d[k] = row[j]
                pos_j[k] = j
                k += 1
            else:
                junk_j[u] = j
                u += 1
        order = np.argsort(pos_d, kind="mergesort")  # stable: (distance, gallery index) order
        pos_d = pos_d[order]
        pos_j = pos_j[order]
        last_d = pos_d[m - 1]
        if not (np.isfinite(last_d) and np.isfinite(pos_d[0])):
            bad[i] = 1
            continue
        # the items that can precede a positive: distance <= the last positive's
        buf = np.empty(num_g + 1, dtype=distmat.dtype)
        n = 0
        nonfinite = 0
        for j in range(num_g):  # branch-free: store always, advance only when kept
            x = row[j]
            buf[n] = x
            n += x <= last_d
            nonfinite += (x - x) != 0  # NaN or +-inf
        if nonfinite:
            bad[i] = 1
            continue
        lt = np.empty(m, dtype=np.int64)
        eq = np.empty(m, dtype=np.int64)
        if m <= sort_above:
            _count_below(buf, n, pos_d, lt, eq)
        else:
            vals = np.sort(buf[:n])
            lt[:] = np.searchsorted(vals, pos_d, side="left")
            eq[:] = np.searchsorted(vals, pos_d, side="right") - lt
        total = 0.0
        rank = 0
        for k in range(m):
            before = lt[k]  # items strictly closer than positive k
            if eq[k] > 1:  # other items at exactly its distance: those with a smaller index precede it
                for j in range(pos_j[k]):
                    if row[j] == pos_d[k]:
                        before += 1
            for j in junk_j:
                if _precedes(row[j], j, pos_d[k], pos_j[k]):
                    before -= 1
            rank = before + 1
            total += (k + 1) / rank
            if k == 0:
                first_rank[i] = rank
        ap[i] = total / m
        inp[i] = m / rank


def query_stats_numba(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray,
                      q_camids: np.ndarray, g_camids: np.ndarray,
                      sort_above: int = 64) -> tuple[np.ndarray, ...]:
    """``(first_rank, ap, inp, num_pos)`` per query; ``num_pos == 0`` marks a query with no valid match.

    A query with at most ``sort_above`` positives counts the items below each
    positive by vectorised comparison passes; one with more sorts the items
    that can precede its last positive and binary-searches them.
    """
    distmat = np.ascontiguousarray(distmat)
    if distmat.dtype not in (np.float32, np.float64):
        distmat = distmat.astype(np.float64)
    num_q = distmat.shape[0]
    first_rank = np.empty(num_q, dtype=np.int64)
    ap = np.empty(num_q, dtype=np.float64)
    inp = np.empty(num_q, dtype=np.float64)
    num_pos = np.empty(num_q, dtype=np.int64)
    bad = np.empty(num_q, dtype=np.uint8)
    g_pids = np.asarray(g_pids, dtype=np.int64)
    # gallery items grouped by identity (CSR), and each query's identity slot (-1: absent)
    pids, inverse = np.unique(g_pids, return_inverse=True)
    pid_members = np.argsort(inverse, kind="stable").astype(np.int64)
    pid_start = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(pids)))]).astype(np.int64)
    q_pids = np.asarray(q_pids, dtype=np.int64)
    slot = np.searchsorted(pids, q_pids)
    slot = np.where((slot < len(pids)) & (pids[np.minimum(slot, len(pids) - 1)] == q_pids), slot, -1)
    _stats_kernel(distmat, np.ascontiguousarray(q_camids, dtype=np.int64),
                  np.ascontiguousarray(g_camids, dtype=np.int64), pid_start, pid_members,
                  slot.astype(np.int64), int(sort_above), first_rank, ap, inp, num_pos, bad)
    if bad.any():
        raise ValueError(f"distmat contains NaN or inf in {int(bad.sum())} of {num_q} query rows "
                         "(check the embeddings)")
    return first_rank, ap, inp, num_pos


def query_stats_torch(distmat: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor,
                      q_camids: torch.Tensor, g_camids: torch.Tensor,
                      chunk: int = 1024) -> tuple[np.ndarray, ...]:
    """Same as :func:`query_stats_numba` with a stable sort of each chunk of rows (GPU path)."""
    dev = distmat.device
    g_pids, g_camids = g_pids.to(dev), g_camids.to(dev)
    outs: list[tuple[torch.Tensor, ...]] = []
    for s in range(0, distmat.shape[0], chunk):
        d = distmat[s:s + chunk]
        qp, qc = q_pids[s:s + chunk].to(dev)[:, None], q_camids[s:s + chunk].to(dev)[:, None]
        order = torch.sort(d, dim=1, stable=True).indices
        gp, gc = g_pids[order], g_camids[order]
        pos = (gp == qp) & (gc != qc)
        keep = ~((gp == qp) & (gc == qc))
        kept_rank = keep.cumsum(1)  # 1-based rank among kept items (valid where keep)
        pos_count = pos.cumsum(1)
        m = pos.sum(1)
        big = torch.iinfo(kept_rank.dtype).max
        first = torch.where(pos, kept_rank, big).min(1).values
        last = torch.where(pos, kept_rank, 0).max(1).values
        prec = torch.where(pos, pos_count.double() / kept_rank.clamp_min(1).double(), 0.0).sum(1)
        valid = m > 0
        mf = m.clamp_min(1).double()
        outs.append((torch.where(valid, first, 0), torch.where(valid, prec / mf, 0.0),
                     torch.where(valid, mf / last.clamp_min(1).double(), 0.0), m))
    return tuple(torch.cat(parts).cpu().numpy() for parts in zip(*outs))
