"""Box geometry shared by the protocols (numpy/OpenCV; numba for per-image scalars).

Conventions (docs/protocols.md §2.3, §3.3–3.7):
- boxes are int `[n, 4]` `(x0, y0, x1, y1)`, *inclusive* pixel indices;
- IoU counts pixels inclusively: width = x1 - x0 + 1 (the "+1" rule);
- a box predicted from an OpenCV contour is `(x, y, x + w, y + h)`, i.e. one pixel too wide
  and tall (the exclusive end used as inclusive), as every reference implementation does.
"""

from __future__ import annotations

import cv2
import numpy as np
from numba import njit

from wsolbench.thresholds import integer_thresholds

EMPTY_BOX_WSOLEVALUATION = (0, 0, 0, 0)
EMPTY_BOX_OFFICIAL = (0, 0, 1, 1)


def scale_boxes_wsolevaluation(boxes: np.ndarray, size: tuple[int, int], frame: int = 224
                               ) -> np.ndarray:
    """GT boxes into the `frame x frame` evaluation frame: `int(v * frame / W)`, multiply first."""
    w, h = size
    scale = np.array([frame, frame, frame, frame], dtype=np.float64)
    denom = np.array([w, h, w, h], dtype=np.float64)
    return np.trunc(boxes.astype(np.float64) * scale / denom).astype(np.int64)


def scale_boxes_official(boxes: np.ndarray, size: tuple[int, int], frame: int = 224
                         ) -> np.ndarray:
    """GT boxes as TS-CAM/TRT scale them: divide first, clip x1/y1 at `frame - 1`."""
    w, h = size
    b = boxes.astype(np.float64)
    x0 = np.maximum(b[:, 0] / w * frame, 0)
    y0 = np.maximum(b[:, 1] / h * frame, 0)
    x1 = np.minimum(b[:, 2] / w * frame, frame - 1)
    y1 = np.minimum(b[:, 3] / h * frame, frame - 1)
    return np.trunc(np.stack([x0, y0, x1, y1], axis=1)).astype(np.int64)


def grid_cells_in_boxes(records, grid: tuple[int, int]) -> np.ndarray:
    """bool `[N, h*w]`: whether the centre of each cell of an h x w grid laid over each
    record's image (a token of a square-resized input) lies in one of its GT boxes. Cell
    (i, j) is centred at ((j + 0.5) W / w, (i + 0.5) H / h) in original pixels; boxes are
    inclusive pixel corners, i.e. they cover [x0, x1 + 1) x [y0, y1 + 1)."""
    h, w = grid
    rows, cols = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    inside = []
    for record in records:  # a handful of boxes per image: vectorized over cells and boxes
        width, height = record.size
        cx, cy = (cols.ravel() * width / w)[:, None], (rows.ravel() * height / h)[:, None]
        x0, y0, x1, y1 = (record.boxes.T[k][None, :] for k in range(4))
        inside.append(((cx >= x0) & (cx < x1 + 1) & (cy >= y0) & (cy < y1 + 1)).any(axis=1))
    return np.stack(inside)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU `float64 [n, m]` of inclusive boxes `a [n, 4]` and `b [m, 4]` (+1 areas)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    # Called per image and per threshold on a handful of boxes: few ufunc calls, no clip or
    # errstate (each costs more than the arithmetic here).
    low = np.maximum(a[..., :2], b[..., :2])
    high = np.minimum(a[..., 2:], b[..., 2:])
    extent = np.maximum(high - low + 1, 0)
    inter = extent[..., 0] * extent[..., 1]
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@njit(cache=True, inline="always")
def max_iou_of_box(x0: int, y0: int, x1: int, y1: int, gt: np.ndarray) -> float:
    """Largest IoU of the inclusive box `(x0, y0, x1, y1)` with any row of `gt [m, 4]`
    (+1 areas, 0 for an empty union); same arithmetic as `iou_matrix`, compiled."""
    area = float((x1 - x0 + 1) * (y1 - y0 + 1))
    best = 0.0
    for g in range(gt.shape[0]):
        iw = max(min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1, 0)
        ih = max(min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1, 0)
        inter = float(iw * ih)
        union = area + float((gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1)) - inter
        best = max(best, inter / union if union > 0 else 0.0)
    return best


@njit(cache=True)
def fixed_box_ious(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """`iou_matrix(boxes, gt).max(axis=1)` for int boxes, without numpy's per-call overhead
    (MaxBoxAccV2 needs two per image: the empty-contour box and the whole image)."""
    out = np.empty(boxes.shape[0])
    for i in range(boxes.shape[0]):
        out[i] = max_iou_of_box(boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3], gt)
    return out


def contour_boxes(u8: np.ndarray, t: int, *, largest_only: bool, clip: bool,
                  window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Boxes `int64 [k, 4]` of the OpenCV contours of `u8 > t` (k = 0 when there are none).

    `RETR_TREE` returns outer borders *and* hole borders (8-connected foreground), as
    upstream uses it. `largest_only` keeps the first contour of maximal `cv2.contourArea`
    (polygon area, not pixel count). `clip` limits x1/y1 to the map's last index.
    `window` `(x0, y0, x1, y1)`, inclusive, traces only that rectangle of the map; it must
    hold every pixel above t (`foreground_bounds`). OpenCV pads what it traces with zeros
    and keeps raster order, so with `offset` the contours, their order and coordinates are
    those of the whole map, for a smaller scan.
    """
    # Called once per image and threshold (the largest-contour sweeps trace ~100 levels per
    # image): cv2.threshold instead of a numpy comparison and cast, and only the boxes kept
    # are measured (benchmarks/bench_box_sweep.py).
    x0, y0, x1, y1 = window or (0, 0, u8.shape[1] - 1, u8.shape[0] - 1)
    _, mask = cv2.threshold(u8[y0:y1 + 1, x0:x1 + 1], int(t), 1, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE,
                                   offset=(x0, y0))
    if not contours:
        return np.zeros((0, 4), dtype=np.int64)
    if largest_only and len(contours) > 1:
        contours = [max(contours, key=cv2.contourArea)]
    boxes = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64)
    boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x, y, x + w, y + h)
    if clip:
        h, w = u8.shape
        np.minimum(boxes[:, 2:], (w - 1, h - 1), out=boxes[:, 2:])
    return boxes


def box_at_threshold(u8: np.ndarray, tau: float, empty_box: tuple[int, int, int, int] =
                     EMPTY_BOX_OFFICIAL) -> np.ndarray:
    """The largest-contour box `int64 [4]` of `u8 > int(tau * max(u8))`, unclipped, as the
    TS-CAM/TRT code draws it; `empty_box` when nothing passes the threshold."""
    t = int(integer_thresholds(np.array([tau]), int(u8.max()))[0])
    boxes = contour_boxes(u8, t, largest_only=True, clip=False)
    return boxes[0] if len(boxes) else np.asarray(empty_box, dtype=np.int64)


def foreground_bounds(u8: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Inclusive bounding rectangle `int64 [L, 4]` `(x0, y0, x1, y1)` of `u8 > t` for each
    level t of `levels`; `x0 == width` where no pixel passes.

    All levels at once from the row and column maxima: the first row whose running maximum
    exceeds t is the top edge, and likewise from each side.
    """
    h, w = u8.shape
    rows, cols = u8.max(axis=1), u8.max(axis=0)

    def first_above(line_max: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.maximum.accumulate(line_max), levels, side="right")

    return np.stack([first_above(cols), first_above(rows),
                     w - 1 - first_above(cols[::-1]), h - 1 - first_above(rows[::-1])], axis=1)


def best_iou_per_threshold(u8: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray, *,
                           largest_only: bool, clip: bool, empty_box: tuple[int, int, int, int]
                           ) -> np.ndarray:
    """Best IoU (over kept boxes x GT boxes) for each integer threshold, `float64 [T]`.

    Each distinct integer threshold is binarized and traced once, so the cost is bounded by
    the at most 256 distinct values however fine the tau grid is. Each trace covers only the
    rectangle that holds the level's foreground (`contour_boxes`' `window`: the same
    contours as the whole map, for about half the scan on trained runs' maps,
    benchmarks/bench_box_sweep.py); a level with no foreground takes the empty box untraced.
    """
    distinct, inverse = np.unique(thresholds, return_inverse=True)
    gt = np.ascontiguousarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    best = np.full(len(distinct), max_iou_of_box(*empty_box, gt), dtype=np.float64)
    windows = foreground_bounds(u8, distinct).tolist()
    for i, (t, window) in enumerate(zip(distinct.tolist(), windows)):
        if window[0] >= u8.shape[1]:  # nothing above t: no contour, the empty box
            continue
        # One OpenCV trace per level: no vector form exists.
        boxes = contour_boxes(u8, t, largest_only=largest_only, clip=clip, window=window)
        best[i] = fixed_box_ious(boxes, gt).max()
    return best[inverse]
