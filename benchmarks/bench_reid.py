"""evaluate_reid vs torchreid's eval_market1501 loop at Market-1501 size.

The reference is a faithful re-implementation of ``eval_market1501`` from
torchreid (K. Zhou, https://github.com/KaiyangZhou/deep-person-reid,
``torchreid/metrics/rank.py``, MIT licence): full ``np.argsort`` of the
distance matrix, then a Python loop over queries; mINP added as in Ye et al.'s
AGW code. torchreid's Python AP line is a list comprehension over the whole
gallery (about 100 s at this size on 2 cores); the default reference computes
that line with ``np.arange`` instead, the same numbers at the speed of
torchreid's compiled ``evaluate_cy`` (full argsort + a loop over queries).
``--verbatim`` also times the list-comprehension version. Random features,
3,368 queries x 15,913 gallery, 751 identities, 6 cameras. Prints the times,
the ratios and the largest difference.

    python benchmarks/bench_reid.py [--queries 3368] [--gallery 15913] [--dim 128] [--verbatim]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.references import torchreid_market1501  # noqa: E402
from harness.tasks.reid import evaluate_reid  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=3368)
    ap.add_argument("--gallery", type=int, default=15913)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings of our path")
    ap.add_argument("--verbatim", action="store_true", help="also time torchreid's list-comprehension AP")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 751, args.queries), rng.integers(0, 751, args.gallery)
    q_cams, g_cams = rng.integers(0, 6, args.queries), rng.integers(0, 6, args.gallery)
    centres = rng.normal(size=(751, args.dim))
    qf = torch.tensor(centres[q_pids] + 2.0 * rng.normal(size=(args.queries, args.dim)), dtype=torch.float32)
    gf = torch.tensor(centres[g_pids] + 2.0 * rng.normal(size=(args.gallery, args.dim)), dtype=torch.float32)
    distmat = torch.cdist(qf, gf).numpy()
    print(f"{args.queries} queries x {args.gallery} gallery, {torch.get_num_threads()} threads")

    evaluate_reid(distmat[:8], q_pids[:8], g_pids, q_cams[:8], g_cams)  # numba compile / cache load
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = evaluate_reid(distmat, q_pids, g_pids, q_cams, g_cams)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)
    t0 = time.perf_counter()
    cmc, m_ap, m_inp, _ = torchreid_market1501(distmat, q_pids, g_pids, q_cams, g_cams, verbatim=False)
    t_ref = time.perf_counter() - t0
    rows = [("torchreid loop", t_ref, cmc, m_ap, m_inp)]
    if args.verbatim:
        t0 = time.perf_counter()
        v = torchreid_market1501(distmat, q_pids, g_pids, q_cams, g_cams, verbatim=True)
        rows.append(("torchreid verbatim", time.perf_counter() - t0, *v[:3]))
    rows.append(("ours (numba)", t_ours, ours["cmc"], ours["mAP"], ours["mINP"]))

    print(f"{'':18} {'time s':>8} {'ratio':>7} {'rank-1':>8} {'rank-5':>8} {'mAP':>10} {'mINP':>10}")
    for name, t, c, a, n in rows:
        print(f"{name:18} {t:>8.3f} {t / t_ours:>6.1f}x {c[0]:>8.5f} {c[4]:>8.5f} {a:>10.7f} {n:>10.7f}")
    diff = max(np.abs(ours["cmc"] - cmc).max(), abs(ours["mAP"] - m_ap), abs(ours["mINP"] - m_inp))
    print(f"speed-up over the torchreid loop {t_ref / t_ours:.1f}x, largest difference {diff:.2e}, "
          f"skipped queries {ours['num_skipped']}")
    if torch.cuda.is_available():
        d_gpu = torch.tensor(distmat, device="cuda")
        evaluate_reid(d_gpu[:8], q_pids[:8], g_pids, q_cams[:8], g_cams)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gpu = evaluate_reid(d_gpu, q_pids, g_pids, q_cams, g_cams)
        torch.cuda.synchronize()
        t_gpu = time.perf_counter() - t0
        diff = max(np.abs(gpu["cmc"] - cmc).max(), abs(gpu["mAP"] - m_ap), abs(gpu["mINP"] - m_inp))
        print(f"ours (torch, GPU) {t_gpu:.3f} s, {t_ref / t_gpu:.1f}x, largest difference {diff:.2e}")
    if diff > 1e-6:
        raise SystemExit("results differ from the reference")


if __name__ == "__main__":
    main()
