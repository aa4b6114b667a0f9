"""Exercise the GPU paths on a machine with CUDA (CI has none): run with `python benchmarks/gpu_check.py`.

Checks, each against the CPU path in the same run:
1. a tiny cell trains and evaluates on CUDA with bf16/fp16 autocast (device=auto, amp=auto);
2. Poincaré kernels under autocast and in bf16 stay finite and inside the ball;
3. δ-hyperbolicity: the torch (GPU) max-min path equals the numba CPU kernel;
4. re-ID: the torch (GPU) ranking path equals the numba CPU kernel.
Without CUDA it runs the same checks on the CPU and says so.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"[{'ok' if ok else 'FAIL'}] {name} {detail}", flush=True)
    return ok


def main() -> int:
    from harness.geometry import PoincareGeometry, pairwise_dist
    from harness.run import run_cell
    from harness.sweep import compose
    from harness.tasks.delta_estimators import delta_hyperbolicity
    from harness.tasks.reid import evaluate_reid

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'no CUDA device: checking CPU paths only'}")
    results = []

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        config = compose(["method=poincare_mlr", "task=few_shot", "train.epochs=1", "task.episodes=100",
                          f"results_dir={tmp}/res", f"cache_dir={tmp}/cache"])
        result = run_cell(config, progress=False)
        results.append(check("cell on " + result["device"], result["status"] == "ok" and
                             result["device"].startswith(device.type),
                             f"{result.get('reason') or result['metrics']} in {time.perf_counter() - start:.1f}s"))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 64, generator=g)
    x = 0.999 * x / x.norm(dim=-1, keepdim=True) * torch.rand(4000, 1, generator=g)
    ref = pairwise_dist(x.double(), c=1.0)
    with torch.autocast(device.type, dtype=torch.bfloat16 if cuda else torch.bfloat16):
        d = pairwise_dist(x.to(device), c=1.0)
    results.append(check("pairwise_dist under autocast", torch.isfinite(d).all().item() and
                         (d.double().cpu() - ref).abs().max().item() < 1e-3,
                         f"max err {(d.double().cpu() - ref).abs().max().item():.2e}"))
    xb = PoincareGeometry(c=1.0).midpoint(x[:200].view(10, 20, 64).to(device, torch.bfloat16))
    results.append(check("bf16 midpoint inside the ball", bool((xb.float().norm(dim=-1) < 1).all())))

    feats = np.random.default_rng(0).normal(size=(1500, 32)).astype(np.float32)
    cpu = delta_hyperbolicity(feats, base=0, backend="numba")
    dev = delta_hyperbolicity(feats, base=0, device=device, backend="torch")
    results.append(check("delta torch vs numba", abs(cpu["delta"] - dev["delta"]) < 1e-4 * max(1.0, cpu["delta"]),
                         f"{cpu['delta']:.6f} vs {dev['delta']:.6f}"))

    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 300, 800), rng.integers(0, 300, 4000)
    q_cam, g_cam = rng.integers(0, 6, 800), rng.integers(0, 6, 4000)
    dist = torch.cdist(torch.randn(800, 32), torch.randn(4000, 32))
    a = evaluate_reid(dist.numpy(), q_pids, g_pids, q_cam, g_cam, backend="numba")
    b = evaluate_reid(dist.to(device), q_pids, g_pids, q_cam, g_cam, backend="torch")
    results.append(check("reid torch vs numba", abs(a["mAP"] - b["mAP"]) < 1e-6 and
                         np.allclose(a["cmc"], b["cmc"]), f"mAP {a['mAP']:.6f} vs {b['mAP']:.6f}"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
