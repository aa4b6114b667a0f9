"""Speed and accuracy of harness.geometry against geoopt, timed in the same run.

    python benchmarks/bench_geometry.py [--n 2000] [--d 64] [--c 1.0] [--threads 1]

1. Pairwise Poincaré distances, n points, float32, CPU: ours vs
   ``geoopt.PoincareBall(c).dist(x[:, None], x[None])`` and vs the bare matmul form; error
   against a float64 arccosh reference computed from explicit differences. The point set
   mixes interior points, points at norm 0.999/sqrt(c) and near-duplicate pairs; a second
   set is one tight cluster near the boundary (every pair is a near pair).
   Goal: ≥ 30x faster than geoopt, max abs error ≤ 1e-4.
2. Midpoints of 100 classes x 20 points (d = 64): ours (batched, and grouped by labels)
   vs a Python loop of geoopt ``weighted_midpoint`` calls. Goal: faster, same values to 1e-5.
"""

from __future__ import annotations

import argparse
import time
import warnings

import geoopt
import torch

from harness.geometry import class_midpoints, einstein_midpoint, pairwise_dist

warnings.filterwarnings("ignore", category=FutureWarning)


def timeit(fn, repeat: int) -> float:
    """Best of ``repeat`` runs after a warm-up (the minimum is the least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_points(n: int, d: int, c: float, gen: torch.Generator) -> torch.Tensor:
    """n points: 50% uniform directions with radius ~ U(0, 0.95), 25% at norm 0.999,
    25% near-duplicates (1e-4 perturbations) of the others."""
    r = c**-0.5
    dirs = torch.randn(n, d, generator=gen, dtype=torch.float64)
    dirs /= dirs.norm(dim=-1, keepdim=True)
    radius = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 0.95
    radius[n // 2 : 3 * n // 4] = 0.999
    x = dirs * radius * r
    q = n // 4
    src = torch.randint(0, n - q, (q,), generator=gen)
    dup = x[src] + 1e-4 * r * torch.randn(q, d, generator=gen, dtype=torch.float64) / d**0.5
    dup *= torch.clamp(0.999 * r / dup.norm(dim=-1, keepdim=True), max=1.0)
    x[n - q :] = dup
    return x.float()


def make_cluster(n: int, d: int, c: float, gen: torch.Generator) -> torch.Tensor:
    """n points in a tight cluster (spread 2e-3/√c) around a point at norm 0.995/√c."""
    r = c**-0.5
    centre = torch.randn(1, d, generator=gen, dtype=torch.float64)
    centre = centre / centre.norm() * 0.995 * r
    x = centre + 2e-3 * r * torch.randn(n, d, generator=gen, dtype=torch.float64) / d**0.5
    return (x * torch.clamp(0.999 * r / x.norm(dim=-1, keepdim=True), max=1.0)).float()


def reference_f64(x: torch.Tensor, c: float, chunk: int = 100) -> torch.Tensor:
    """d = arcosh(1 + 2c‖x-y‖²/((1-c‖x‖²)(1-c‖y‖²)))/√c in float64, explicit differences."""
    x = x.double()
    g = 1 - c * x.pow(2).sum(-1)
    rows = []
    for s in range(0, x.shape[0], chunk):
        diff2 = (x[s : s + chunk, None] - x[None]).pow(2).sum(-1)
        rows.append(torch.acosh(1 + 2 * c * diff2 / (g[s : s + chunk, None] * g[None])) / c**0.5)
    return torch.cat(rows)


def naive_matmul(x: torch.Tensor, c: float) -> torch.Tensor:
    s = x.pow(2).sum(-1)
    d2 = (s[:, None] + s[None] - 2 * x @ x.T).clamp_min(0)
    g = 1 - c * s
    return torch.acosh(1 + 2 * c * d2 / (g[:, None] * g[None])) / c**0.5


def bench_pairwise(n: int, d: int, c: float, clustered: bool = False) -> None:
    gen = torch.Generator().manual_seed(0)
    x = make_cluster(n, d, c, gen) if clustered else make_points(n, d, c, gen)
    ball = geoopt.PoincareBall(c=c)
    ref = reference_f64(x, c)

    t_ours = timeit(lambda: pairwise_dist(x, c=c), repeat=7)
    with torch.no_grad():
        t_geo = timeit(lambda: ball.dist(x[:, None], x[None]), repeat=2)
        t_naive = timeit(lambda: naive_matmul(x, c), repeat=7)
        ours = pairwise_dist(x, c=c).double()
        geo = ball.dist(x[:, None], x[None]).double()
        naive = naive_matmul(x, c).double()

    def err(a: torch.Tensor) -> tuple[float, float, float]:
        e = (a - ref).abs()
        near = ref < 0.5
        return e.max().item(), e.diagonal().max().item(), e[near].max().item()

    kind = "one tight cluster at norm 0.995" if clustered else "mixed interior / boundary / near-duplicate set"
    print(f"## pairwise Poincaré distance: n={n}, d={d}, c={c}, float32, CPU, {torch.get_num_threads()} threads")
    print(f"   points: {kind}")
    print(f"{'impl':<26}{'time [ms]':>11}{'speed-up':>10}{'max err':>11}{'diag err':>11}{'near err':>11}")
    for name, t, a in [
        ("geoopt dist(x[:,None],x[None])", t_geo, geo),
        ("matmul arccosh (naive)", t_naive, naive),
        ("harness pairwise_dist", t_ours, ours),
    ]:
        m, dg, nr = err(a)
        print(f"{name:<26}{t * 1e3:>11.1f}{t_geo / t:>9.1f}x{m:>11.2e}{dg:>11.2e}{nr:>11.2e}")
    print("(errors: max |d - d_ref| vs float64 arccosh of explicit differences; 'near' = pairs with d_ref < 0.5)\n")


def bench_midpoints(classes: int, per_class: int, d: int, c: float) -> None:
    gen = torch.Generator().manual_seed(1)
    ball = geoopt.PoincareBall(c=c)
    u = torch.randn(classes, per_class, d, generator=gen) * 0.5 / d**0.5 * 4
    x = ball.expmap0(u)
    w = torch.rand(classes, per_class, generator=gen) + 0.1
    labels = torch.arange(classes).repeat_interleave(per_class)

    def geo_loop(xs: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        return torch.stack([ball.weighted_midpoint(xs[k], ws[k], reducedim=[0]) for k in range(classes)])

    t_loop = timeit(lambda: geo_loop(x, w), repeat=7)
    t_geo_batched = timeit(lambda: ball.weighted_midpoint(x, w, reducedim=[1]), repeat=7)
    t_ours = timeit(lambda: einstein_midpoint(x, w, c=c), repeat=7)
    t_grouped = timeit(lambda: class_midpoints(x.reshape(-1, d), labels, classes, c=c, weights=w.reshape(-1)), repeat=7)
    ref = geo_loop(x.double(), w.double())
    e_ours = (einstein_midpoint(x, w, c=c).double() - ref).abs().max().item()
    e_grouped = (class_midpoints(x.reshape(-1, d), labels, classes, c=c, weights=w.reshape(-1)).double() - ref).abs()
    e_ours64 = (einstein_midpoint(x.double(), w.double(), c=c) - ref).abs().max().item()
    e_geo32 = (geo_loop(x, w).double() - ref).abs().max().item()
    print(f"## weighted midpoints: {classes} classes x {per_class} points, d={d}, c={c}, float32, CPU, "
          f"{torch.get_num_threads()} threads")
    print(f"{'impl':<34}{'time [ms]':>11}{'speed-up':>10}{'max err vs geoopt f64':>24}")
    print(f"{'geoopt weighted_midpoint, loop':<34}{t_loop * 1e3:>11.2f}{1:>9.1f}x{e_geo32:>24.2e}")
    print(f"{'geoopt weighted_midpoint, batched':<34}{t_geo_batched * 1e3:>11.2f}{t_loop / t_geo_batched:>9.1f}x{'':>24}")
    print(f"{'harness einstein_midpoint':<34}{t_ours * 1e3:>11.2f}{t_loop / t_ours:>9.1f}x{e_ours:>24.2e}")
    print(f"{'harness class_midpoints (labels)':<34}{t_grouped * 1e3:>11.2f}{t_loop / t_grouped:>9.1f}x"
          f"{e_grouped.max().item():>24.2e}")
    print(f"(float64 inputs: harness vs geoopt loop max err {e_ours64:.2e})\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--c", type=float, default=1.0)
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: on a shared machine OpenMP barrier stalls dominate multi-threaded "
        "timings of ms-scale kernels; 0 = torch default)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_pairwise(args.n, args.d, args.c)
    bench_pairwise(args.n, args.d, args.c, clustered=True)
    bench_midpoints(100, 20, args.d, args.c)


if __name__ == "__main__":
    main()
