"""`harness list` start-up against `python -c "import torch"` (the registry is lazy: no model code loads).

Run: python benchmarks/bench_list.py [repeats]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def best_of(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ours = best_of([sys.executable, "-m", "harness.cli", "list"], repeats)
    torch = best_of([sys.executable, "-c", "import torch"], repeats)
    heavy = best_of([sys.executable, "-c", "import torch, timm, torchvision, geoopt"], repeats)
    print(f"harness list                          best {ours[0]:.3f} s  median {ours[1]:.3f} s")
    print(f"python -c 'import torch'              best {torch[0]:.3f} s  median {torch[1]:.3f} s")
    print(f"python -c 'import torch, timm, ...'   best {heavy[0]:.3f} s  median {heavy[1]:.3f} s")
    print(f"ratio import-torch / harness-list: {torch[0] / ours[0]:.1f}x")


if __name__ == "__main__":
    main()
