"""Inference speed of TS-CAM and TRT against the plain timm DeiT of the same size.

Same batch, same run, same device; prints images/s of `forward` (classification) and
`localize` (maps, attention capture on), the ratio of each method's `forward` time to the
plain model's, and peak memory (CUDA: allocator peak; CPU: growth of the process RSS peak).

    python benchmarks/bench_methods.py [--model deit_small_patch16_224] [--batch 8]
        [--iters 5] [--device cpu]

Targets (issue 4): TRT forward <= 1.10x and TS-CAM forward <= 1.05x the plain model's time.
"""

from __future__ import annotations

import argparse
import resource
import time

import timm
import torch
from wsolbench.methods.trt import TRT, TRTConfig
from wsolbench.methods.tscam import TSCAM, TSCAMConfig


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, images, iters: int, device: torch.device) -> tuple[float, float]:
    """(seconds per batch, peak memory MB) after one warm-up call."""
    with torch.no_grad():
        fn(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / iters, peak_mb(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, 224, 224, device=device)
    labels = torch.zeros(args.batch, dtype=torch.long, device=device)
    plain = timm.create_model(args.model, pretrained=False, num_classes=args.classes)
    tscam = TSCAM(TSCAMConfig(model=args.model, image_size=224, resize_size=256), args.classes)
    trt = TRT(TRTConfig(model=args.model, image_size=224, resize_size=256), args.classes)
    rows = []
    base, base_mem = timed(plain.to(device).eval(), images, args.iters, device)
    rows.append(("plain timm", base, base_mem, None, None))
    for name, model in (("TS-CAM", tscam), ("TRT", trt)):
        model.to(device).eval()
        fwd, fwd_mem = timed(model, images, args.iters, device)
        loc, loc_mem = timed(lambda x, m=model: m.localize(x, labels), images, args.iters,
                             device)
        rows.append((name, fwd, fwd_mem, loc, loc_mem))
    print(f"{args.model}, batch {args.batch}, 224 px, {args.device}, {args.iters} iterations")
    print(f"{'model':<11} {'forward img/s':>14} {'x plain time':>13} {'localize img/s':>15} "
          f"{'process peak MB':>16}")
    for name, fwd, mem, loc, loc_mem in rows:
        loc_s = f"{args.batch / loc:>15.1f}" if loc else f"{'-':>15}"
        print(f"{name:<11} {args.batch / fwd:>14.1f} {fwd / base:>12.2f}x {loc_s} "
              f"{max(mem, loc_mem or 0):>16.0f}")


if __name__ == "__main__":
    main()
