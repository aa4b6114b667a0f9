"""δ-hyperbolicity: harness.tasks.delta against the reference hyptorch ``delta.py``, same points, same run.

The reference (a faithful copy below) builds an n×n×n float64 array for one base point
(7.5 GiB at n = 1000). Goals of issue #6, printed as measured ratios:

- n = 1000: ≥ 100× faster than the reference, same δ on the same sample;
- n = 2000: exact δ_w under 1 s on 2 CPU cores;
- n = 5000: peak RSS under 2 GiB (measured in a fresh subprocess).

Also printed: numba's one-off compile (empty cache) and cache-load times (excluded from the
timings above, which are best-of-repeats after a warm-up), the exact four-point δ at n = 1000,
a bracket at n = 5000, and how far the reference's sampled estimate is from the exact δ.

On a machine with a GPU it also runs the torch path there (same δ_w, its time).

Run: ``python benchmarks/bench_delta.py [--ref-n 1000] [--quick]``. The reference at
n = 1000 needs ~8 GiB of free memory; ``--ref-n 600`` needs 1.7 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
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


def features(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Clustered features (a mixture of 20 Gaussians), like a backbone's penultimate layer."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)) * 2.0
    return centres[rng.integers(0, 20, n)] + rng.normal(size=(n, dim))


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
from harness.tasks.delta import delta_hyperbolicity
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
    args = ap.parse_args()

    import numba
    import torch

    from harness.tasks.delta import delta_hyperbolicity

    print(f"CPU threads: numba {numba.get_num_threads()}, torch {torch.get_num_threads()} "
          f"(os.cpu_count() = {os.cpu_count()})")

    with tempfile.TemporaryDirectory() as cache:
        cold = child(200, env={"NUMBA_CACHE_DIR": cache}, base=0)
        warm = child(200, env={"NUMBA_CACHE_DIR": cache}, base=0)
    print(f"numba compile, empty cache: {cold['compile_seconds']:.2f} s; cache load: "
          f"{warm['compile_seconds']:.2f} s (once per process, excluded from the timings below)")
    delta_hyperbolicity(features(50), base=0)  # warm-up of this process

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
