"""Cost of HACK's particle packing (plugins/methods/_uniform_packing.py), against the released dense form.

    python benchmarks/bench_hack.py [--n 10000] [--dim 2] [--steps 3] [--ref-n 3000] [--device auto] [--threads 0]

One packing step is the boundary term plus the repulsion energy over all pairs closer than 2r, and
its gradient. Ours: row blocks of at most BLOCK_ELEMENTS pairs, energy and gradient in one pass
(memory O(block·N)). Reference: the released ``hyperbolic_uniform_loss`` (the whole N×N distance
matrix, masked, backward through autograd; memory O(N²)), re-typed in tests/test_method_hack.py.

Prints, for N particles: seconds per step (best of ``--steps``; wall clock and process CPU time, which
a machine shared with other jobs inflates less), the time of the paper's 600 steps,
and the peak memory of one step (CUDA: ``max_memory_allocated``; CPU: the growth of the process's peak
resident set, measured in a fresh process per variant). The reference runs at ``--ref-n`` (the dense
N×N autograd graph of N = 10,000 needs ~10 GB); both run there too and the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _particles(n: int, dim: int, device: torch.device) -> torch.Tensor:
    """Tangent vectors of a half-spread packing: uniform directions, ‖u‖ ~ U(0, 0.9)."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(n, dim, generator=gen)
    u = u / u.norm(dim=1, keepdim=True) * 0.9 * torch.rand(n, 1, generator=gen)
    return u.to(device)


def one_variant(variant: str, n: int, dim: int, steps: int, device: str) -> dict:
    """Time ``steps`` packing steps of one variant in this process; report time and peak memory."""
    import importlib

    from harness.geometry import ToPoincare
    from harness.plugins.methods._uniform_packing import boundary_penalty, particle_radius, repulsion_energy

    dev = torch.device(device)
    to_ball = ToPoincare(c=1.0, clip_r=15.0, riemannian=True)
    radius = particle_radius(n, dim=dim, R=2 * math.tanh(15.0))
    bound = math.tanh(15.0)
    if variant == "reference":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        released = importlib.import_module("tests.test_method_hack").released_hyperbolic_uniform_loss

        def energy(x):
            return released(x, radius, 1.55)
    else:
        def energy(x):
            return repulsion_energy(x, radius=radius, k=1.55)
    u = _particles(n, dim, dev).requires_grad_(True)
    base = _peak_rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    times, cpu = [], []
    for _ in range(steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = 100.0 * boundary_penalty(u, bound=bound, margin=0.1) + energy(to_ball(u))
        loss.backward()
        with torch.no_grad():
            u -= 0.01 * u.grad
        u.grad = None
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = ((torch.cuda.max_memory_allocated(dev) - base_cuda) / 2**20 if dev.type == "cuda"
            else _peak_rss_mb() - base)
    return {"variant": variant, "n": n, "seconds_per_step": min(times), "cpu_seconds_per_step": min(cpu),
            "peak_mb": peak}


def run_fresh(variant: str, n: int, dim: int, steps: int, device: str, threads: int) -> dict:
    """One variant in a fresh interpreter, so that its peak memory is its own."""
    code = (f"import json, torch, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"torch.set_num_threads({threads}) if {threads} else None; import bench_hack; "
            f"print(json.dumps(bench_hack.one_variant({variant!r}, {n}, {dim}, {steps}, {device!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ref-n", type=int, default=3000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(f"HACK packing step, dim {args.dim}, float32, {device}"
          f"{'' if device != 'cpu' else f', {args.threads or torch.get_num_threads()} thread(s)'}")
    ours = run_fresh("ours", args.n, args.dim, args.steps, device, args.threads)
    print(f"ours       N={args.n:>6}: {ours['seconds_per_step']:.3f} s/step ({ours['cpu_seconds_per_step']:.3f} s "
          f"process CPU), 600 steps ≈ {600 * ours['seconds_per_step'] / 60:.1f} min, "
          f"peak memory +{ours['peak_mb']:.0f} MiB")
    small = run_fresh("ours", args.ref_n, args.dim, args.steps, device, args.threads)
    ref = run_fresh("reference", args.ref_n, args.dim, args.steps, device, args.threads)
    for name, r in (("ours", small), ("reference", ref)):
        print(f"{name:<10} N={args.ref_n:>6}: {r['seconds_per_step']:.3f} s/step ({r['cpu_seconds_per_step']:.3f} s "
              f"process CPU), peak memory +{r['peak_mb']:.0f} MiB"
              f"{' (dense N×N, autograd)' if name == 'reference' else ''}")
    print(f"ratio at N={args.ref_n}: {ref['seconds_per_step'] / small['seconds_per_step']:.2f}x faster "
          f"({ref['cpu_seconds_per_step'] / small['cpu_seconds_per_step']:.2f}x in CPU time), "
          f"{ref['peak_mb'] / max(small['peak_mb'], 1e-9):.1f}x less memory")


if __name__ == "__main__":
    main()
