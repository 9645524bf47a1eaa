"""A run's evaluation suite with and without MaxBoxAcc v1 (`--skip-protocol maxboxacc`).

Every `wsolbench run` evaluates its test and train-fullsup maps under the paper protocol,
MaxBoxAccV2, MaxBoxAcc v1 and PxAP. v1 keeps the largest contour per threshold, which only an
OpenCV trace gives, at wsolevaluation's 224-px frame and 0.001 step: about 256 traces per
image. None of Tables 1-3 reads it, so the default workflow skips it (config/config.yaml,
docs/benchmark.md rows 64-65). This times `wsolbench.suite.evaluate_split` on the same records
and maps both ways, in one process on one core, and checks that every other protocol's
numbers are the same.

    python benchmarks/bench_eval_suite.py [--per-class 100] [--repeats 3]

    python benchmarks/bench_eval_suite.py --predictions RUN/predictions_test.npz

Records are a generated synth-cub test split (boxes and masks, so PxAP runs too); the maps
are `bench_maxboxacc.make_maps`' CAM-like blobs (its 224-px noise maps left out), or a
trained run's saved maps with `--predictions`; the class scores are random.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from bench_maxboxacc import make_maps  # noqa: E402

from wsolbench.config import apply_overrides  # noqa: E402
from wsolbench.data.synth import SynthCUBDataset  # noqa: E402
from wsolbench.options import RunOptions  # noqa: E402
from wsolbench.suite import evaluate_split  # noqa: E402


def time_suite(records, preds, cfg, opts: RunOptions, repeats: int
               ) -> tuple[float, dict[str, dict]]:
    """Median seconds of `evaluate_split` over `repeats`, and the protocols' results."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        protocols = evaluate_split(records, preds, cfg, opts)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), {k: p.compute() for k, p in protocols.items()}


def cam_like_maps(n: int, predictions: Path | None) -> list[np.ndarray]:
    """n maps: a trained run's (cycled if it has fewer), or make_maps' blobs without the
    uniform-noise maps (those cost v1 several times a trained map's traces)."""
    if predictions is not None:
        saved = list(np.load(predictions, allow_pickle=True)["maps"])
        return [saved[i % len(saved)] for i in range(n)]
    blobs, _ = make_maps(2 * n)
    return [m for m in blobs if m.shape[0] < 224][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=100, help="test images per class")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predictions", type=Path, default=None,
                        help="a run's predictions_test.npz: its maps instead of blobs")
    args = parser.parse_args()

    synth = apply_overrides(SynthCUBDataset.config_class(), {
        "num_classes": "5", "train_per_class": "1", "test_per_class": str(args.per_class),
        "fullsup_per_class": "1"})
    with tempfile.TemporaryDirectory() as tmp:
        records = SynthCUBDataset.load(Path(tmp), config=synth, workers=1).test
        maps = cam_like_maps(len(records), args.predictions)
        logits = np.random.default_rng(0).normal(size=(len(records), synth.num_classes))
        preds = SimpleNamespace(maps=maps, logits=logits)
        cfg = SimpleNamespace(cam_threshold=0.2, image_size=synth.image_size)
        full = RunOptions(method="cam", dataset="synth-cub", eval_workers=1)
        lean = RunOptions(method="cam", dataset="synth-cub", eval_workers=1,
                          skip_protocols=("maxboxacc",))
        # One untimed pass first: numba loads its compiled kernels on first use.
        time_suite(records[:8], SimpleNamespace(maps=maps[:8], logits=logits[:8]), cfg, full, 1)
        full_s, full_results = time_suite(records, preds, cfg, full, args.repeats)
        lean_s, lean_results = time_suite(records, preds, cfg, lean, args.repeats)

    assert "maxboxacc" in full_results and "maxboxacc" not in lean_results
    for name, result in lean_results.items():
        assert result == full_results[name], f"{name} differs without maxboxacc"
    n = len(records)
    print(f"{n} images, median of {args.repeats}: full suite {full_s / n * 1e3:.1f} ms/image, "
          f"without MaxBoxAcc v1 {lean_s / n * 1e3:.1f} ms/image: "
          f"{full_s / lean_s:.2f}x faster; every other protocol's numbers identical")


if __name__ == "__main__":
    main()
