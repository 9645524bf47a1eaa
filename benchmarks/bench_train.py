"""Training throughput: wsolbench's step against the official recipe's step, same run.

For each method, one training step (forward, loss, backward, optimizer step) on a fixed
random batch is timed in two variants, each in its own fresh subprocess so peak memory is
its own:

- `official`: what the TS-CAM / TRT repositories run per GPU — fp32, every timm attention
  block unfused (`fused_attn = False`, as their copied ViT code computes attention), NCHW
  tensors, the plain module (their `DataParallel` on one device adds nothing but a call);
- `wsolbench`: the engine's step — `--precision` autocast (default bf16 on CUDA, fp32 on
  CPU), fused attention (PyTorch SDPA) in every block, channels-last for CNN backbones on
  CUDA.

Prints images/s, peak memory (CUDA: allocator peak; CPU: process RSS peak) and the ratio.

    python benchmarks/bench_train.py [--methods cam,tscam,trt] [--batch 16] [--size 224]
        [--vit deit_small_patch16_224] [--cnn vgg16] [--steps 5] [--device cpu]
        [--precision bf16] [--markdown OUT.md]

Target (issue 7): TRT DeiT-B at 224 px on a CUDA GPU >= 1.5x the official images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method_name: str, variant: str, args) -> dict:
    """Images/s and peak memory of one (method, variant) in this process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch import nn

    from wsolbench.engine import Speed, _make_optimizer, _memory_format
    from wsolbench.resolve import build_method

    device = torch.device(args.device)
    torch.manual_seed(0)
    vit = method_name in ("tscam", "trt")
    overrides = {"image_size": str(args.size), "resize_size": str(args.size)}
    overrides["model" if vit else "backbone"] = args.vit if vit else args.cnn
    method, _ = build_method(method_name, "cub", "cub", overrides, args.classes)
    stage = method.stages()[0]
    params = list(method.begin_stage(stage))
    optimizer, _ = _make_optimizer(method, params, method.stage_config(stage))
    official = variant == "official"
    precision = "fp32" if official else args.precision
    speed = Speed(precision=precision, channels_last=not official)
    for module in method.modules():  # timm Attention blocks
        if hasattr(module, "fused_attn"):
            module.fused_attn = not official
    fmt = torch.contiguous_format if official else _memory_format(method, speed, device)
    method.to(device=device, memory_format=fmt)
    method.set_train_mode(stage)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).to(
        memory_format=fmt)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        with speed.autocast(device):
            loss = criterion(method.training_logits(images, stage).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - t0) / args.steps
    return {"method": method_name, "variant": variant, "precision": precision,
            "images_per_s": args.batch / seconds, "peak_mb": _peak_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="cam,tscam,trt")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--vit", default="deit_small_patch16_224")
    parser.add_argument("--cnn", default="vgg16")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                        help="wsolbench variant (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.one:
        print(json.dumps(measure(*args.one, args)))
        return
    rows = []
    passthrough = [a for a in sys.argv[1:] if a]
    for method in args.methods.split(","):
        pair = {}
        for variant in ("official", "wsolbench"):
            out = subprocess.run([sys.executable, __file__, *passthrough, "--one", method,
                                  variant], capture_output=True, text=True, check=True)
            pair[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        backbone = args.vit if method in ("tscam", "trt") else args.cnn
        rows.append((method, backbone, pair))
    lines = [f"Training step, batch {args.batch}, {args.size} px, device {args.device}, "
             f"{args.steps} timed steps after {args.warmup} warm-up",
             "", "| method | backbone | official img/s | wsolbench img/s (precision) | ratio "
             "| official peak MB | wsolbench peak MB |", "|---|---|---|---|---|---|---|"]
    for method, backbone, pair in rows:
        o, w = pair["official"], pair["wsolbench"]
        lines.append(f"| {method} | {backbone} | {o['images_per_s']:.2f} | "
                     f"{w['images_per_s']:.2f} ({w['precision']}) | "
                     f"{w['images_per_s'] / o['images_per_s']:.2f}x | {o['peak_mb']:.0f} | "
                     f"{w['peak_mb']:.0f} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
