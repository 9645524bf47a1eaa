"""Boxes of every OpenCV contour at every integer threshold, in one pass (the fast path).

MaxBoxAccV2 needs, for each threshold t, the bounding boxes of all contours that
`cv2.findContours(u8 > t, RETR_TREE, ...)` returns. Those are exactly

- the 8-connected components of the foreground `u8 > t` (outer borders), and
- the 4-connected background components `u8 <= t` that do not reach the image border
  (holes); a hole border runs over the foreground pixels around it, so its bounding rect is
  the hole's bounding box grown by one pixel on each side (shared/spec/protocols.md §3.5).

Foreground components only grow and merge as t decreases, holes as t increases: both are
component trees over the at most 256 grey levels. One union-find sweep over the pixels sorted
by value (counting sort) records each component's box together with the interval of
thresholds during which it exists, so the cost is O(pixels) per map however fine the tau grid
is, instead of one contour trace per threshold. Tests check every box against OpenCV.

Box convention of the result: the contour box `(x, y, x + w, y + h)` with `x1`, `y1` clipped to
the map's last index, exactly as wsolevaluation turns a contour into a box.
"""

from __future__ import annotations

import numpy as np
from numba import njit

N_LEVELS = 256


@njit(cache=True, inline="always")
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True, inline="always")
def _emit(out_box, out_lo, out_hi, r, root, x0, y0, x1, y1, start, v, foreground) -> int:
    """Record the state `root` had since `start[root]`, ended by a change at level `v`."""
    out_box[r, 0] = x0[root]
    out_box[r, 1] = y0[root]
    out_box[r, 2] = x1[root]
    out_box[r, 3] = y1[root]
    out_lo[r] = v if foreground else start[root]
    out_hi[r] = start[root] - 1 if foreground else v - 1
    return r + 1


@njit(cache=True, error_model="numpy")
def _sweep(u8: np.ndarray, foreground: bool):
    """Component boxes with their threshold intervals for one sweep direction.

    Returns `(boxes int64 [r, 4] inclusive pixel extents, lo int64 [r], hi int64 [r])`: the
    component with extent `boxes[i]` exists at every threshold `t` in `[lo[i], hi[i]]`.
    Foreground sweep: 8-connected components of `u8 > t`. Background sweep: 4-connected
    components of `u8 <= t` that do not touch the image border (holes) only.
    """
    h, w = u8.shape
    n = h * w
    flat = u8.ravel()
    # Counting sort of pixel indices by value (descending for foreground).
    counts = np.zeros(N_LEVELS + 1, np.int64)
    for p in range(n):
        counts[flat[p] + 1] += 1
    for v in range(N_LEVELS):
        counts[v + 1] += counts[v]
    order = np.empty(n, np.int64)
    fill = counts[:N_LEVELS].copy()
    for p in range(n):
        order[fill[flat[p]]] = p
        fill[flat[p]] += 1

    # Per-pixel state lives on a grid padded by one never-added pixel on every side, so
    # neighbours need no bounds checks.
    wp = w + 2
    m = (h + 2) * wp
    parent = np.full(m, -1, np.int32)  # -1 = pixel not yet added
    x0 = np.empty(m, np.int32)
    y0 = np.empty(m, np.int32)
    x1 = np.empty(m, np.int32)
    y1 = np.empty(m, np.int32)
    border = np.zeros(m, np.bool_)
    start = np.empty(m, np.int32)  # level at which a root's current state began
    size = np.ones(m, np.int32)

    cap = 2 * n + 1
    out_box = np.empty((cap, 4), np.int32)
    out_lo = np.empty(cap, np.int32)
    out_hi = np.empty(cap, np.int32)
    r = 0

    if foreground:
        offsets = np.array([-wp - 1, -wp, -wp + 1, -1, 1, wp - 1, wp, wp + 1])
        levels = np.arange(N_LEVELS - 1, 0, -1)  # value-0 pixels are never foreground
    else:
        offsets = np.array([-wp, -1, 1, wp])
        levels = np.arange(0, N_LEVELS)

    for v in levels:
        for k in range(counts[v], counts[v + 1]):
            p = order[k]
            py, px = p // w, p % w
            here = (py + 1) * wp + px + 1
            a = here  # the root of the set holding this pixel
            parent[a] = a
            x0[a] = px
            x1[a] = px
            y0[a] = py
            y1[a] = py
            border[a] = px == 0 or py == 0 or px == w - 1 or py == h - 1
            start[a] = v
            for j in range(offsets.shape[0]):
                q = here + offsets[j]
                if parent[q] < 0:
                    continue
                b = _find(parent, q)
                if a == b:
                    continue
                # Both states end here if they were observed at an earlier level.
                if start[a] != v and (foreground or not border[a]):
                    r = _emit(out_box, out_lo, out_hi, r, a, x0, y0, x1, y1, start, v, foreground)
                if start[b] != v and (foreground or not border[b]):
                    r = _emit(out_box, out_lo, out_hi, r, b, x0, y0, x1, y1, start, v, foreground)
                if size[a] < size[b]:  # union by size keeps the trees shallow
                    a, b = b, a
                start[a] = v
                parent[b] = a
                size[a] += size[b]
                x0[a] = min(x0[a], x0[b])
                y0[a] = min(y0[a], y0[b])
                x1[a] = max(x1[a], x1[b])
                y1[a] = max(y1[a], y1[b])
                border[a] = border[a] or border[b]
    # Components alive after the last level.
    for p in range(m):
        if parent[p] == p and (foreground or not border[p]):
            out_box[r, 0] = x0[p]
            out_box[r, 1] = y0[p]
            out_box[r, 2] = x1[p]
            out_box[r, 3] = y1[p]
            out_lo[r] = 0 if foreground else start[p]
            out_hi[r] = start[p] - 1 if foreground else N_LEVELS - 1
            r += 1
    return out_box[:r], out_lo[:r], out_hi[:r]


def contour_boxes_by_level(u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contour boxes of `u8 > t` for all t at once, as `(boxes [r, 4], lo [r], hi [r])`.

    `boxes` follow the contour-box convention `(x, y, min(x + w, W - 1), min(y + h, H - 1))`;
    box i is returned by `cv2.findContours(u8 > t, RETR_TREE, ...)` for every t in
    `[lo[i], hi[i]]` (the list for one t is a multiset: order is not OpenCV's).
    """
    u8 = np.ascontiguousarray(u8, dtype=np.uint8)
    h, w = u8.shape
    fg_box, fg_lo, fg_hi = _sweep(u8, True)
    bg_box, bg_lo, bg_hi = _sweep(u8, False)
    fg = np.stack([fg_box[:, 0], fg_box[:, 1], fg_box[:, 2] + 1, fg_box[:, 3] + 1], axis=1)
    holes = np.stack([bg_box[:, 0] - 1, bg_box[:, 1] - 1, bg_box[:, 2] + 2, bg_box[:, 3] + 2],
                     axis=1)
    boxes = np.concatenate([fg, holes]).reshape(-1, 4)
    boxes[:, 2] = np.minimum(boxes[:, 2], w - 1)
    boxes[:, 3] = np.minimum(boxes[:, 3], h - 1)
    return boxes, np.concatenate([fg_lo, bg_lo]), np.concatenate([fg_hi, bg_hi])


@njit(cache=True, error_model="numpy")
def _best_by_level(boxes: np.ndarray, lo: np.ndarray, hi: np.ndarray, gt: np.ndarray
                   ) -> np.ndarray:
    best = np.full(N_LEVELS, -1.0)
    for i in range(boxes.shape[0]):
        bx0, by0, bx1, by1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        area_b = float((bx1 - bx0 + 1) * (by1 - by0 + 1))
        iou = 0.0
        for g in range(gt.shape[0]):
            iw = min(bx1, gt[g, 2]) - max(bx0, gt[g, 0]) + 1
            ih = min(by1, gt[g, 3]) - max(by0, gt[g, 1]) + 1
            inter = float(max(iw, 0) * max(ih, 0))
            area_g = float((gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1))
            union = area_b + area_g - inter
            value = inter / union if union > 0 else 0.0
            iou = max(iou, value)
        for t in range(max(lo[i], 0), min(hi[i], N_LEVELS - 1) + 1):
            if iou > best[t]:
                best[t] = iou
    return best


def best_iou_by_level(u8: np.ndarray, gt_boxes: np.ndarray, empty_iou: float) -> np.ndarray:
    """Best IoU of any contour box with any GT box, for every integer threshold 0..255.

    Where no contour exists (`u8 > t` empty), the value is `empty_iou` (the IoU of the
    fallback box), as upstream evaluates its `(0, 0, 0, 0)` box.
    """
    boxes, lo, hi = contour_boxes_by_level(u8)
    best = _best_by_level(boxes, lo, hi, np.ascontiguousarray(gt_boxes, dtype=np.int64))
    return np.where(best < 0, empty_iou, best)
