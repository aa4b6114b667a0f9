"""Batched few-shot episodes vs a per-episode loop (CloserLook / ProtoNet style).

Both paths score the same episodes (drawn once by ``sample_episodes``) with the
same geometry; the loop computes one episode's prototypes and distances at a
time, as the reference codebases do. Both times include drawing the episodes.
The batched path is timed best of ``--repeat`` runs after a warm-up (the loop
once: it is long). Prints the time of each, the ratio, and checks that the
per-episode accuracies are identical.

    python benchmarks/bench_few_shot.py [--episodes 10000] [--geometry poincare]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.tasks._episodes import class_pool, episode_accuracies, mean_ci95, sample_episodes


def geometry(name: str):
    from harness.geometry import EuclideanGeometry, PoincareGeometry

    return PoincareGeometry(c=1.0) if name == "poincare" else EuclideanGeometry()


def loop_accuracies(emb: torch.Tensor, episodes: np.ndarray, n_shot: int, geo, device) -> np.ndarray:
    emb = emb.to(device=device, dtype=torch.float64)
    n_way, per_class = episodes.shape[1:]
    truth = torch.arange(n_way, device=device).repeat_interleave(per_class - n_shot)
    out = np.empty(len(episodes))
    for e, ep in enumerate(episodes):
        x = emb[torch.as_tensor(ep, device=device)]
        protos = geo.midpoint(x[:, :n_shot], dim=-2)
        queries = x[:, n_shot:].reshape(-1, x.shape[-1])
        pred = geo.pairwise_dist(queries, protos).argmin(-1)
        out[e] = (pred == truth).double().mean().item()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10000)
    ap.add_argument("--geometry", default="both", choices=["euclidean", "poincare", "both"])
    ap.add_argument("--n-way", type=int, default=5)
    ap.add_argument("--n-query", type=int, default=15)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rng = np.random.default_rng(0)
    # miniImageNet's novel split: 20 classes x 600 images
    labels = np.repeat(np.arange(20), 600)
    # class centres a little apart from the noise: accuracies in the 0.5-0.9 range
    emb = torch.tensor(rng.normal(size=(len(labels), args.dim)) * 0.05, dtype=torch.float32)
    emb += torch.tensor(rng.normal(size=(20, args.dim)) * 0.012, dtype=torch.float32)[labels]
    names = ["euclidean", "poincare"] if args.geometry == "both" else [args.geometry]
    print(f"{args.episodes} episodes, {args.n_way}-way, {args.n_query} queries, dim {args.dim}, "
          f"device {args.device}, {torch.get_num_threads()} threads")
    print(f"{'geometry':10} {'shot':>4} {'batched s':>10} {'loop s':>9} {'ratio':>7} {'accuracy':>16} identical")
    for name in names:
        geo = geometry(name)
        for shot in (1, 5):
            pool, _ = class_pool(labels, shot + args.n_query)

            def batched():
                eps = sample_episodes(pool, n_way=args.n_way, n_per_class=shot + args.n_query,
                                      episodes=args.episodes, rng=np.random.default_rng(1))
                return episode_accuracies(emb, eps, n_shot=shot, geometry=geo, device=args.device)

            batched()  # warm-up
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                ours = batched()
                times.append(time.perf_counter() - t0)
            t_ours = min(times)
            t0 = time.perf_counter()
            eps_ref = sample_episodes(pool, n_way=args.n_way, n_per_class=shot + args.n_query,
                                      episodes=args.episodes, rng=np.random.default_rng(1))
            ref = loop_accuracies(emb, eps_ref, shot, geo, args.device)
            t_ref = time.perf_counter() - t0
            same = np.array_equal(ours, ref)
            m, ci = mean_ci95(ours)
            print(f"{name:10} {shot:>4} {t_ours:>10.3f} {t_ref:>9.3f} {t_ref / t_ours:>6.1f}x "
                  f"{m:>9.4f}±{ci:.4f} {same}")
            if not same:
                raise SystemExit("batched and loop accuracies differ")


if __name__ == "__main__":
    main()
