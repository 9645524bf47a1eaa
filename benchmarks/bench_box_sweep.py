"""Largest-contour threshold sweep: the straightforward per-level code vs wsolbench's.

The paper protocol (Top-1/GT-known Loc over the tau grid, the fair tau search) and
MaxBoxAcc v1 keep one box per threshold, the contour of largest polygon area, which only an
OpenCV trace gives: every distinct integer level of every map is binarized and traced once.
This measures the per-level cost around that trace (`wsolbench.boxes.best_iou_per_threshold`)
against the straightforward version written here (numpy binarization, every contour's rect,
numpy IoU matrix), and against the same sweep tracing the whole map at every level (the
code before each trace was narrowed to the rectangle of the level's foreground), on the same
maps in the same process, and checks that all three give the same IoUs bit for bit.

    python benchmarks/bench_box_sweep.py [--images 150] [--repeats 5]
    python benchmarks/bench_box_sweep.py --predictions results/runs/.../predictions_test.npz

`--predictions`: a trained run's maps (its boxes are not stored there: random GT boxes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from bench_maxboxacc import make_maps  # noqa: E402
from wsolbench.protocols.loc_acc import LocAcc  # noqa: E402

from wsolbench.boxes import (  # noqa: E402
    EMPTY_BOX_OFFICIAL,
    best_iou_per_threshold,
    contour_boxes,
    fixed_box_ious,
    iou_matrix,
    scale_boxes_official,
)
from wsolbench.thresholds import integer_thresholds  # noqa: E402


def straightforward_best_ious(u8: np.ndarray, thresholds: np.ndarray, gt: np.ndarray
                              ) -> np.ndarray:
    """Per distinct level: numpy mask, all rects, the largest contour's box, IoU matrix."""
    distinct, inverse = np.unique(thresholds, return_inverse=True)
    best = np.empty(len(distinct))
    for i, t in enumerate(distinct):
        mask = (u8 > t).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
            box = np.array([[x, y, x + w, y + h]])
        else:
            box = np.array([EMPTY_BOX_OFFICIAL])
        best[i] = iou_matrix(box, gt).max()
    return best[inverse]


def whole_map_best_ious(u8: np.ndarray, thresholds: np.ndarray, gt: np.ndarray
                        ) -> np.ndarray:
    """wsolbench's sweep with every level traced on the whole map (no window)."""
    distinct, inverse = np.unique(thresholds, return_inverse=True)
    empty = np.array([EMPTY_BOX_OFFICIAL])
    best = np.empty(len(distinct))
    for i, t in enumerate(distinct):
        boxes = contour_boxes(u8, int(t), largest_only=True, clip=False)
        best[i] = fixed_box_ious(boxes if len(boxes) else empty, gt).max()
    return best[inverse]


def sweep(maps, boxes, size, protocol: LocAcc, best_ious) -> list[np.ndarray]:
    out = []
    for raw, b in zip(maps, boxes):
        u8 = protocol.score_u8(raw)
        thresholds = integer_thresholds(protocol.thresholds, int(u8.max()))
        out.append(best_ious(u8, thresholds, scale_boxes_official(b, size)))
    return out


def fast_best_ious(u8: np.ndarray, thresholds: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return best_iou_per_threshold(u8, thresholds, gt, largest_only=True, clip=False,
                                  empty_box=EMPTY_BOX_OFFICIAL)


def timed(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, list[np.ndarray]]]:
    """Median seconds of `repeats` calls of each function, and each one's last result. The
    calls interleave (one of each per round), so a drift in the machine's speed (a shared
    host) weighs on every variant alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--predictions", help="a run's predictions_*.npz: sweep its maps")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    size = (500, 375)
    maps, boxes = make_maps(args.images)
    if args.predictions:
        maps = list(np.load(args.predictions)["maps"][:args.images])
        boxes = boxes[:len(maps)]
    protocol = LocAcc(curve_step=0.01)  # the paper protocol's grid
    sweep(maps[:2], boxes[:2], size, protocol, fast_best_ious)  # JIT warm-up, not timed
    seconds, results = timed({
        name: (lambda best_ious=best_ious: sweep(maps, boxes, size, protocol, best_ious))
        for name, best_ious in (("straightforward", straightforward_best_ious),
                                ("whole", whole_map_best_ious), ("fast", fast_best_ious))},
        args.repeats)
    base_s, whole_s, fast_s = seconds["straightforward"], seconds["whole"], seconds["fast"]
    expected, whole, got = results["straightforward"], results["whole"], results["fast"]
    same = all(np.array_equal(a, b) and np.array_equal(a, c)
               for a, b, c in zip(expected, whole, got))
    per_image = len(maps) / 1e3
    print(f"{len(maps)} maps, 1 core, median of {args.repeats}: straightforward "
          f"{base_s / per_image:.2f} ms/image, whole-map traces {whole_s / per_image:.2f} "
          f"ms/image, wsolbench {fast_s / per_image:.2f} ms/image; speed-up "
          f"{base_s / fast_s:.2f}x over straightforward, {whole_s / fast_s:.2f}x over "
          f"whole-map traces; identical IoUs: {same}")
    if not same:
        raise SystemExit("the sweeps disagree")


if __name__ == "__main__":
    main()
