"""Faithful copies of reference implementations, shared by the benchmarks and the tests.

Each is credited to its source; the harness's own code never imports this module.
"""

from __future__ import annotations

import numpy as np


def torchreid_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, *,
                         sort_kind="quicksort", verbatim=True):
    """``torchreid.metrics.rank.eval_market1501`` (K. Zhou, deep-person-reid, MIT licence), the same numpy
    operations, with mINP as in Ye et al.'s AGW ``eval_func`` (INP = matches / (index of last match + 1)).

    ``sort_kind="stable"`` gives the stable-sort reference used for ties. ``verbatim=False`` computes
    torchreid's AP list comprehension with ``np.arange`` instead: the same numbers at the speed of its
    compiled ``evaluate_cy``. Returns ``(cmc, mAP, mINP, num_valid_queries)``.
    """
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
    indices = np.argsort(distmat, axis=1, kind=sort_kind)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp, num_valid_q = [], [], [], 0.0
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last = np.where(raw_cmc == 1)[0].max()
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        if verbatim:
            tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * raw_cmc
        else:
            tmp_cmc = tmp_cmc / np.arange(1.0, len(tmp_cmc) + 1.0) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    assert num_valid_q > 0, "Error: all query identities do not appear in gallery"
    all_cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q
    return all_cmc, float(np.mean(all_ap)), float(np.mean(all_inp)), int(num_valid_q)
