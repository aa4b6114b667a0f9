"""Exercise the GPU paths on a machine with CUDA (CI has none): run with `python benchmarks/gpu_check.py`.

Checks, each against the CPU path in the same run:
1. a tiny cell trains and evaluates on CUDA with bf16/fp16 autocast (device=auto, amp=auto);
2. Poincaré kernels under autocast and in bf16 stay finite and inside the ball;
3. δ-hyperbolicity: the torch (GPU) max-min path equals the numba CPU kernel;
4. re-ID: the torch (GPU) ranking path equals the numba CPU kernel;
5. a ``launcher=gpu_pool`` sweep of 4 cells (2 methods x 2 seeds, ``train.amp=auto``) over 2 GPUs: prints
   images/s per cell (read back from the cells' result JSONs, ``training.images_per_s``) and per-GPU
   utilisation, sampled every 0.25 s by a background thread while the sweep runs (``torch.cuda.utilization``,
   i.e. NVML; ``nvidia-smi`` where pynvml is missing).
Without CUDA it runs the same checks on the CPU and says so; the pool then runs on what exists
(1 GPU, or 2 CPU worker processes). ``--pool-only`` runs check 5 alone; ``--gpus 0,1`` picks the GPUs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"[{'ok' if ok else 'FAIL'}] {name} {detail}", flush=True)
    return ok


class UtilisationSampler(threading.Thread):
    """Samples the utilisation (%) of each GPU in ``gpus`` every ``period_s`` until :meth:`stop`.

    The source is ``torch.cuda.utilization`` (NVML through pynvml; it counts the share of time a kernel
    ran, from any process) and, where pynvml is not installed, ``nvidia-smi --query-gpu=utilization.gpu``.
    """

    def __init__(self, gpus: list[int], period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.gpus, self.period_s = gpus, period_s
        self.samples: dict[int, list[float]] = {g: [] for g in gpus}
        self.source = self._pick_source()
        self._halt = threading.Event()

    def _pick_source(self) -> str:
        try:
            torch.cuda.utilization(self.gpus[0])
            return "torch.cuda.utilization (NVML)"
        except Exception:  # noqa: BLE001 - pynvml missing or NVML unusable: try the CLI
            try:
                self._smi()
                return "nvidia-smi"
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                raise RuntimeError(f"no way to read GPU utilisation (install nvidia-ml-py): {exc}") from exc

    def _smi(self) -> dict[int, float]:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
        # nvidia-smi numbers GPUs physically; CUDA_VISIBLE_DEVICES renumbers them for torch
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        physical = [int(v) for v in visible.split(",")] if visible else None
        util = {int(i): float(u) for i, u in (line.split(",") for line in out.strip().splitlines())}
        return {g: util[physical[g] if physical else g] for g in self.gpus}

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            now = ({g: float(torch.cuda.utilization(g)) for g in self.gpus} if self.source.startswith("torch")
                   else self._smi())
            for g, u in now.items():
                self.samples[g].append(u)

    def stop(self) -> dict[int, list[float]]:
        self._halt.set()
        self.join()
        return self.samples


def pool_sweep_check(tmp: str, gpus: list[int] | None) -> bool:
    """A 4-cell ``launcher=gpu_pool`` sweep (AMP on); prints images/s per cell and utilisation per GPU."""
    from harness.engine import autocast_dtype
    from harness.results import iter_results

    available = list(range(torch.cuda.device_count()))
    gpus = available[:2] if gpus is None else gpus
    if len(gpus) >= 2:
        where = f"GPUs {gpus}"
    elif gpus:
        where = f"only 1 GPU ({gpus[0]}): the pool runs its cells one after another on it"
    else:
        where = "no GPU: the pool runs 2 CPU worker processes (no AMP, no utilisation to sample)"
    amp = autocast_dtype(torch.device("cuda" if gpus else "cpu"), "auto")
    print(f"pool sweep on {where}; train.amp=auto -> {amp or 'off'}", flush=True)
    res = Path(tmp) / "pool_res"
    size = ([] if gpus else  # a GPU gets the default dataset; the CPU a tiny one so the check stays short
            ["dataset.n_coarse=3", "dataset.fine_per_coarse=4", "dataset.images_per_class=24",
             "dataset.image_size=16", "task.episodes=20", "task.n_query=5"])
    args = [sys.executable, "-m", "harness.cli", "sweep", "grid=smoke", "task=few_shot",
            "method=euclidean_ce,poincare_mlr", "seed=0,1", "launcher=gpu_pool", "train.amp=auto",
            f"train.epochs={3 if gpus else 1}", *size, f"results_dir={res}", f"cache_dir={tmp}/pool_cache",
            "leaderboard_dir=null", (f"hydra.launcher.gpus=[{','.join(map(str, gpus))}]" if gpus
                                     else "hydra.launcher.n_workers=2")]
    sampler = UtilisationSampler(gpus) if gpus else None
    if sampler is not None:
        print(f"utilisation source: {sampler.source}, every {sampler.period_s} s", flush=True)
        sampler.start()
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp,
                          env={**os.environ, "HARNESS_CACHE": f"{tmp}/pool_cache"})
    wall = time.perf_counter() - start
    samples = sampler.stop() if sampler is not None else {}
    for line in proc.stdout.splitlines():
        print("  |", line)
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
    results = [r for _, r in iter_results(res)]
    print(f"{'cell':<28} {'status':<7} {'device':<34} {'images/s':>9} {'train_s':>8}")
    for r in sorted(results, key=lambda r: (r["cell"]["method"], r["cell"]["seed"])):
        ips = (r.get("training") or {}).get("images_per_s")
        print(f"{r['cell']['method'] + ' seed ' + str(r['cell']['seed']):<28} {r['status']:<7} "
              f"{r.get('device', '?'):<34} {ips if ips is None else f'{ips:9.0f}':>9} "
              f"{r['timings'].get('train_s', float('nan')):8.1f}")
    for g, values in samples.items():
        v = np.asarray(values) if values else np.zeros(1)
        print(f"GPU {g}: utilisation mean {v.mean():5.1f}%  max {v.max():5.1f}%  busy (>0%) in "
              f"{(v > 0).mean():4.0%} of {len(values)} samples over {wall:.1f} s")
    ok = (proc.returncode == 0 and len(results) == 4 and all(r["status"] == "ok" for r in results)
          and all((r.get("training") or {}).get("images_per_s") for r in results)
          and all(r["device"].startswith("cuda" if gpus else "cpu") for r in results))
    if len(gpus) >= 2:  # both GPUs took work
        ok = ok and all(max(v, default=0.0) > 0 for v in samples.values())
    return check(f"gpu_pool sweep of 4 cells on {len(gpus) or 'no'} GPU(s)", ok, f"in {wall:.1f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-only", action="store_true", help="run the gpu_pool sweep check alone")
    parser.add_argument("--gpus", help="GPU ids for the pool sweep, e.g. 0,1 (default: the first two)")
    opts = parser.parse_args()
    gpus = None if opts.gpus is None else [int(g) for g in opts.gpus.split(",") if g.strip()]
    if gpus and max(gpus) >= torch.cuda.device_count():
        parser.error(f"--gpus {opts.gpus}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if opts.pool_only:
        with tempfile.TemporaryDirectory() as tmp:
            return 0 if pool_sweep_check(tmp, gpus) else 1

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

    with tempfile.TemporaryDirectory() as tmp:
        results.append(pool_sweep_check(tmp, gpus))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
