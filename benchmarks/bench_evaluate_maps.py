"""`evaluate-maps` at ILSVRC scale: streamed maps vs the in-memory path, same run.

Writes a synthetic wsolevaluation split (box form, 224x224 images) with N float32 224x224
score maps (CAM-like blobs, ~200 KB each: 50,000 maps take ~10 GB of disk), then measures,
each in a fresh process so its peak RSS is its own:

- streaming: `wsolbench.maps.evaluate_maps` over all N maps (read, scored and dropped in
  chunks);
- in-memory (the baseline): the first `--baseline-images` maps loaded into a list first,
  then scored by the same protocol (what `evaluate-maps` did before it streamed); its memory
  for N maps is extrapolated from the growth per map;
- streaming over the same first `--baseline-images` maps, for a per-image time ratio on
  identical work.

    python benchmarks/bench_evaluate_maps.py [--images 50000] [--baseline-images 2000]
        [--step 0.001] [--workers 1] [--workdir DIR] [--keep]

Targets (issue: ILSVRC-size streaming): peak RSS < 1.5 GB for 50,000 maps at step 0.001, and
per-image time within 1.2x of the in-memory path. Timings share the machine with whatever
else runs; compare the two paths of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 224
TEMPLATES = 64


def write_split(root: Path, n: int) -> tuple[Path, Path]:
    """Metadata (box form) and N score maps cycling through CAM-like templates."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    templates, boxes = [], []
    for _ in range(TEMPLATES):
        cx, cy = rng.uniform(40, 184, 2)
        sx, sy = rng.uniform(10, 50, 2)
        blob = np.exp(-((xx - cx) ** 2 / (2 * sx ** 2) + (yy - cy) ** 2 / (2 * sy ** 2)))
        blob += 0.1 * rng.random((SIZE, SIZE))
        templates.append((blob / blob.max()).astype(np.float32))
        x0, y0 = int(max(0, cx - 1.5 * sx)), int(max(0, cy - 1.5 * sy))
        boxes.append((x0, y0, int(min(SIZE - 1, cx + 1.5 * sx)), int(min(SIZE - 1, cy + 1.5 * sy))))
    meta, maps = root / "metadata", root / "maps"
    meta.mkdir(parents=True)
    maps.mkdir()
    ids = [f"img/{i:06d}.jpg" for i in range(n)]
    (maps / "img").mkdir()
    for i, image_id in enumerate(ids):
        np.save(maps / f"{image_id}.npy", templates[i % TEMPLATES])
    (meta / "image_ids.txt").write_text("\n".join(ids))
    (meta / "class_labels.txt").write_text("\n".join(f"{i},0" for i in ids))
    (meta / "image_sizes.txt").write_text("\n".join(f"{i},{SIZE},{SIZE}" for i in ids))
    (meta / "localization.txt").write_text("\n".join(
        f"{image_id},{','.join(map(str, boxes[k % TEMPLATES]))}" for k, image_id in enumerate(ids)))
    return meta, maps


MEASURE = r"""
import json, resource, sys, time
from pathlib import Path
mode, meta, maps, n, step, workers = sys.argv[1:7]
n, step, workers = int(n), float(step), int(workers)
from wsolbench.data.metadata import read_metadata
from wsolbench.evaluation import evaluate
from wsolbench.maps import evaluate_maps, map_files
from wsolbench.registry import get_plugin
import numpy as np
if mode == "stream" and n == 0:
    t = time.perf_counter()
    result = evaluate_maps(Path(maps), Path(meta), cam_curve_interval=step, workers=workers)
    images = result["n_images"]
else:
    records = list(read_metadata(Path(meta), Path(maps)))[:n]
    files = map_files(Path(maps), [r.image_id for r in records], "score")
    metric = get_plugin("protocols", "maxboxacc_v2")(cam_curve_interval=step, scoremaps=True)
    t = time.perf_counter()
    if mode == "memory":
        loaded = [np.load(p) for p in files.paths]  # the whole split first
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        evaluate([metric], records, loaded, chunk=64)
    else:
        evaluate([metric], records, files, chunk=64)
    result, images = metric.compute(), len(records)
seconds = time.perf_counter() - t
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if workers > 1 and mode == "stream":
    peak_kb = max(peak_kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"mode": mode, "images": images, "seconds": seconds,
                  "peak_mb": peak_kb / 1024, "mean": result["mean"]}))
"""


def measure(mode: str, meta: Path, maps: Path, n: int, step: float, workers: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", MEASURE, mode, str(meta), str(maps), str(n),
                           str(step), str(workers)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--baseline-images", type=int, default=2_000)
    parser.add_argument("--step", type=float, default=0.001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="Keep the written maps.")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_evaluate_maps_"))
    try:
        t = time.perf_counter()
        meta, maps = write_split(root / "split", args.images)
        print(f"wrote {args.images} maps in {time.perf_counter() - t:.0f} s under {root}")
        base = min(args.baseline_images, args.images)
        rows = [measure("memory", meta, maps, base, args.step, 1),
                measure("stream-subset", meta, maps, base, args.step, 1),
                measure("stream", meta, maps, 0, args.step, args.workers)]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    memory, subset, full = rows
    assert memory["mean"] == subset["mean"], "streaming changed the counters"
    per_map_mb = (memory["peak_mb"] - subset["peak_mb"]) / base
    print(f"\nstep {args.step}, MaxBoxAccV2, workers {args.workers} (streaming over all)")
    print(f"{'path':<28}{'images':>8}{'ms/image':>10}{'peak RSS MB':>13}")
    for row, name in zip(rows, ("in-memory (baseline)", "streaming, same images",
                                "streaming, all images")):
        print(f"{name:<28}{row['images']:>8}{1000 * row['seconds'] / row['images']:>10.2f}"
              f"{row['peak_mb']:>13.0f}")
    ratio = (subset["seconds"] / subset["images"]) / (memory["seconds"] / memory["images"])
    print(f"\nper-image time, streaming / in-memory on the same {base} maps: {ratio:.2f}x "
          "(target <= 1.2x)")
    print(f"streaming peak RSS over {full['images']} maps: {full['peak_mb']:.0f} MB "
          "(target < 1536 MB)")
    print(f"in-memory growth: {per_map_mb:.3f} MB per map -> "
          f"{memory['peak_mb'] + per_map_mb * (args.images - base):.0f} MB for "
          f"{args.images} maps (extrapolated)")


if __name__ == "__main__":
    main()
