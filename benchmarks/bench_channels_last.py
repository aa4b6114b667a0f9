"""Training throughput of the conv backbones in channels-last (NHWC) against the contiguous NCHW layout.

    python benchmarks/bench_channels_last.py [--backbones conv4_32,resnet18] [--batch-sizes 32,128] [--steps 30]

``train.channels_last=auto`` (the default) puts the backbone and its input batches in NHWC on every
device (``harness.engine.configure_device``); ``train.channels_last=off`` keeps NCHW, the reference
here. One step is the forward and backward pass of a ``(B, 3, 32, 32)`` batch through the backbone
(the embedded data's size), timed after 5 warm-up steps; the best of 3 repeats. Prints images/s of
both layouts, their ratio, and the largest difference of the two layouts' features (they must agree).
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def _images_per_s(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    for _ in range(5):
        model(x).sum().backward()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            model(x).sum().backward()
        best = min(best, time.perf_counter() - start)
    return steps * x.shape[0] / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="conv4_32,resnet18")
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from harness.backbones import build_backbone

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print("| backbone | batch | NCHW img/s | channels-last img/s | ratio | max feature difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.backbones.split(","):
        for batch in map(int, args.batch_sizes.split(",")):
            cfg = {"name": name, "pretrained": None, "small_input_stem": "auto"}
            torch.manual_seed(0)
            nchw, _ = build_backbone(cfg, in_chans=3, img_size=(32, 32))  # resnets: the CIFAR stem at 32 px
            nhwc, _ = build_backbone(cfg, in_chans=3, img_size=(32, 32))
            nhwc.load_state_dict(nchw.state_dict())
            nhwc = nhwc.to(memory_format=torch.channels_last)
            x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
            x_cl = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                diff = (nchw.eval()(x) - nhwc.eval()(x_cl)).abs().max().item()
            ref = _images_per_s(nchw.train(), x, args.steps)
            ours = _images_per_s(nhwc.train(), x_cl, args.steps)
            print(f"| {name} | {batch} | {ref:.0f} | {ours:.0f} | {ours / ref:.2f}× | {diff:.1e} |")


if __name__ == "__main__":
    main()
