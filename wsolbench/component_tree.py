"""Boxes of every OpenCV contour at every integer threshold, in one pass (the fast path).

MaxBoxAccV2 needs, for each threshold t, the bounding boxes of all contours that
`cv2.findContours(u8 > t, RETR_TREE, ...)` returns. Those are exactly

- the 8-connected components of the foreground `u8 > t` (outer borders), and
- the 4-connected background components `u8 <= t` that do not reach the image border
  (holes); a hole border runs over the foreground pixels around it, so its bounding rect is
  the hole's bounding box grown by one pixel on each side (docs/protocols.md §3.5).

Foreground components only grow and merge as t decreases, holes as t increases: both are
component trees over the at most 256 grey levels. One union-find sweep over the pixels sorted
by value (counting sort) records each component's box together with the interval of
thresholds during which it exists, so the cost is O(pixels) per map however fine the tau grid
is, instead of one contour trace per threshold. Tests check every box against OpenCV.

What keeps the sweep fast (it is the whole cost of MaxBoxAccV2):
- which neighbours are already in the sweep when a pixel arrives follows from the levels
  alone (higher, or equal and earlier in raster order), so a vectorizable raster pass
  computes it as an 8-bit mask per pixel instead of a data-dependent branch per neighbour;
- neighbours that touch each other are already in one set, so a lookup table turns the mask
  into one neighbour per group: almost every pixel does a single `find`;
- the padding around the image is one set standing for the border, so holes need no
  border test;
- the arrays live in a per-thread workspace reused across maps of the same shape (fresh
  allocations of this size page-fault on every map).

Box convention of the result: the contour box `(x, y, x + w, y + h)` with `x1`, `y1` clipped to
the map's last index, exactly as wsolevaluation turns a contour into a box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from wsolbench.boxes import max_iou_of_box
from wsolbench.scratch import per_thread

N_LEVELS = 256
# The 8 neighbours as a ring (dy, dx): N, NE, E, SE, S, SW, W, NW. Bit i of a presence mask
# is ring[i]; even positions are the 4-connected (edge) neighbours.
RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _group_lut(linked, joins_centre) -> tuple[np.ndarray, np.ndarray]:
    """For every 8-bit presence mask: one representative neighbour per group of present
    neighbours that are already connected to each other (`linked(i, j)`), counting only
    groups that touch the centre pixel (`joins_centre(i)`). Returns `(reps [256, 4], n [256])`.
    """
    reps_table = np.zeros((256, 4), np.int8)
    counts = np.zeros(256, np.int8)
    for mask in range(256):
        present = [i for i in range(8) if mask >> i & 1]
        group = {i: i for i in present}

        def root(i: int) -> int:
            while group[i] != i:
                i = group[i]
            return i

        for i in present:
            for j in present:
                if i < j and linked(i, j):
                    group[root(j)] = root(i)
        reps: dict[int, int] = {}
        for i in sorted(present, key=lambda i: (i % 2, i)):  # edge neighbours first
            if joins_centre(i):
                reps.setdefault(root(i), i)
        counts[mask] = len(reps)
        reps_table[mask, :len(reps)] = list(reps.values())
    return reps_table, counts


def _chebyshev_adjacent(i: int, j: int) -> bool:
    return max(abs(RING[i][0] - RING[j][0]), abs(RING[i][1] - RING[j][1])) <= 1


def _edge_adjacent(i: int, j: int) -> bool:
    return abs(RING[i][0] - RING[j][0]) + abs(RING[i][1] - RING[j][1]) == 1


# Foreground, 8-connected: every ring neighbour joins the centre; touching neighbours are linked.
FG_REPS, FG_N = _group_lut(_chebyshev_adjacent, lambda i: True)
# Background, 4-connected: only edge neighbours join the centre; corners can still link two
# of them (N - NE - E is a 4-path).
BG_REPS, BG_N = _group_lut(_edge_adjacent, lambda i: i % 2 == 0)


@dataclass
class _Workspace:
    """Scratch arrays for one map shape (padded grid of `m` cells, `n` pixels)."""

    lev: np.ndarray        # int16 [m]  levels on the padded grid, -1 on the padding
    fg_mask: np.ndarray    # uint8 [m]  foreground presence mask per pixel
    bg_mask: np.ndarray    # uint8 [m]  background presence mask per pixel
    counts: np.ndarray     # int32 [257] pixels per level, cumulated
    order: np.ndarray      # int32 [n]  padded index of the pixels, by level
    xy: np.ndarray         # int16 [n, 2] their coordinates
    parent: np.ndarray     # int32 [m]
    box: np.ndarray        # int16 [m, 4] inclusive extents, valid at roots
    start: np.ndarray      # int16 [m]  level at which a root's current state began
    size: np.ndarray       # int32 [m]
    out_box: np.ndarray    # int16 [4n + 2, 4] records of both sweeps: extent,
    out_lo: np.ndarray     # int16 [4n + 2]    first and
    out_hi: np.ndarray     # int16 [4n + 2]    last threshold

    @classmethod
    def for_shape(cls, h: int, w: int) -> "_Workspace":
        m, n = (h + 2) * (w + 2), h * w
        # A sweep closes at most as many states as it opens: one per pixel's arrival (a new
        # component or its set's first change at this level) and one per merge.
        cap = 4 * n + 2
        return cls(np.empty(m, np.int16), np.empty(m, np.uint8), np.empty(m, np.uint8),
                   np.empty(N_LEVELS + 1, np.int32), np.empty(n, np.int32),
                   np.empty((n, 2), np.int16), np.empty(m, np.int32),
                   np.empty((m, 4), np.int16), np.empty(m, np.int16), np.empty(m, np.int32),
                   np.empty((cap, 4), np.int16), np.empty(cap, np.int16),
                   np.empty(cap, np.int16))


def _workspace(h: int, w: int) -> _Workspace:
    return per_thread(("component_tree", h, w), lambda: _Workspace.for_shape(h, w))


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


@njit(cache=True)
def _presence_masks(lev, fg_mask, bg_mask, h, w) -> None:
    """8-bit masks of the neighbours already in each sweep when a pixel arrives.

    A neighbour is in the sweep before the pixel if its level comes first (higher for the
    foreground, lower for the background) or is equal and earlier in raster order. The
    padding (-1) is never foreground and always background (it is the image border).
    One pass over row-major slices starting at 0 (so numba emits no negative-index checks
    and LLVM vectorizes it); the padding columns get masks too, which nothing reads.
    """
    wp = w + 2
    i0, n = wp + 1, h * wp - 2
    c = lev[i0:i0 + n]
    nn, ne = lev[i0 - wp:i0 - wp + n], lev[i0 - wp + 1:i0 - wp + 1 + n]
    e, se = lev[i0 + 1:i0 + 1 + n], lev[i0 + wp + 1:i0 + wp + 1 + n]
    s, sw = lev[i0 + wp:i0 + wp + n], lev[i0 + wp - 1:i0 + wp - 1 + n]
    ww, nw = lev[i0 - 1:i0 - 1 + n], lev[i0 - wp - 1:i0 - wp - 1 + n]
    fg, bg = fg_mask[i0:i0 + n], bg_mask[i0:i0 + n]
    for j in range(n):
        v = c[j]
        fg[j] = (np.uint8(nn[j] >= v) | np.uint8(ne[j] >= v) << np.uint8(1)
                 | np.uint8(e[j] > v) << np.uint8(2) | np.uint8(se[j] > v) << np.uint8(3)
                 | np.uint8(s[j] > v) << np.uint8(4) | np.uint8(sw[j] > v) << np.uint8(5)
                 | np.uint8(ww[j] >= v) << np.uint8(6) | np.uint8(nw[j] >= v) << np.uint8(7))
        bg[j] = (np.uint8(nn[j] <= v) | np.uint8(ne[j] <= v) << np.uint8(1)
                 | np.uint8(e[j] < v) << np.uint8(2) | np.uint8(se[j] < v) << np.uint8(3)
                 | np.uint8(s[j] < v) << np.uint8(4) | np.uint8(sw[j] < v) << np.uint8(5)
                 | np.uint8(ww[j] <= v) << np.uint8(6) | np.uint8(nw[j] <= v) << np.uint8(7))


@njit(cache=True)
def _prepare(u8, lev, fg_mask, bg_mask, counts, order, xy) -> None:
    """Padded levels, presence masks for both sweeps, and the counting sort by level."""
    h, w = u8.shape
    wp = w + 2
    lev[:] = -1
    counts[:] = 0
    for y in range(h):
        for x in range(w):
            lev[(y + 1) * wp + x + 1] = u8[y, x]
            counts[u8[y, x] + 1] += 1
    _presence_masks(lev, fg_mask, bg_mask, h, w)
    for v in range(N_LEVELS):
        counts[v + 1] += counts[v]
    fill = counts[:N_LEVELS].copy()
    for y in range(h):
        for x in range(w):
            v = u8[y, x]
            k = fill[v]
            fill[v] = k + 1
            order[k] = (y + 1) * wp + x + 1
            xy[k, 0] = x
            xy[k, 1] = y


@njit(cache=True, inline="always")
def _close(out_box, out_lo, out_hi, r, box, start, c, v, foreground) -> int:
    """Record r: root c's box over the thresholds its state covered, the state having begun
    at level `start[c]` and ended by a change at level v; returns r + 1. (Foreground: the
    state held for t in [v, start - 1]; background: for t in [start, v - 1].)"""
    out_box[r, 0] = box[c, 0]
    out_box[r, 1] = box[c, 1]
    out_box[r, 2] = box[c, 2]
    out_box[r, 3] = box[c, 3]
    out_lo[r] = v if foreground else start[c]
    out_hi[r] = start[c] - 1 if foreground else v - 1
    return r + 1


@njit(cache=True, error_model="numpy")
def _sweep(h, w, counts, order, xy, masks, reps, n_reps, foreground, parent, box, start, size,
           out_box, out_lo, out_hi, r) -> int:
    """One sweep; appends records `(box, lo, hi)` to `out_*` from index r; returns the end.

    The component with extent `out_box[i]` exists at every threshold t in
    `[out_lo[i], out_hi[i]]`. Foreground: 8-connected components of `u8 > t`, levels
    descending. Background: 4-connected components of `u8 <= t` that do not touch the image
    border (holes), levels ascending.
    """
    wp = w + 2
    offsets = np.array([-wp, -wp + 1, 1, wp + 1, wp, wp - 1, -1, -wp - 1], np.int32)
    if not foreground:  # the padding is one set with root 0: the image border
        for x in range(wp):
            parent[x] = 0
            parent[(h + 1) * wp + x] = 0
        for y in range(h + 2):
            parent[y * wp] = 0
            parent[y * wp + w + 1] = 0
        size[0] = (h + 2) * wp + 1  # never linked under another root
    if foreground:  # value-0 pixels are never foreground
        v_first, v_stop, v_step = N_LEVELS - 1, 0, -1
    else:
        v_first, v_stop, v_step = 0, N_LEVELS, 1
    for v in range(v_first, v_stop, v_step):
        for k in range(counts[v], counts[v + 1]):
            here = order[k]
            x, y = xy[k, 0], xy[k, 1]
            mask = masks[here]
            if n_reps[mask] == 0:  # a new component
                parent[here] = here
                size[here] = 1
                start[here] = v
                box[here, 0] = x
                box[here, 1] = y
                box[here, 2] = x
                box[here, 3] = y
                continue
            # Join the first neighbouring set; a state seen at an earlier level ends here.
            a = _find(parent, here + offsets[reps[mask, 0]])
            if start[a] != v and a != 0:
                r = _close(out_box, out_lo, out_hi, r, box, start, a, v, foreground)
            start[a] = v
            parent[here] = a
            size[a] += 1
            box[a, 0] = min(box[a, 0], x)
            box[a, 1] = min(box[a, 1], y)
            box[a, 2] = max(box[a, 2], x)
            box[a, 3] = max(box[a, 3], y)
            # Merge any other neighbouring set (rare: saddles).
            for j in range(1, n_reps[mask]):
                b = _find(parent, here + offsets[reps[mask, j]])
                if a == b:
                    continue
                if start[b] != v and b != 0:
                    r = _close(out_box, out_lo, out_hi, r, box, start, b, v, foreground)
                if size[a] < size[b]:  # union by size keeps the trees shallow
                    a, b = b, a
                start[a] = v
                parent[b] = a
                size[a] += size[b]
                box[a, 0] = min(box[a, 0], box[b, 0])
                box[a, 1] = min(box[a, 1], box[b, 1])
                box[a, 2] = max(box[a, 2], box[b, 2])
                box[a, 3] = max(box[a, 3], box[b, 3])
    # Components alive after the last level end just past it (t = 0, or t = 255 inclusive).
    v_end = 0 if foreground else N_LEVELS
    for k in range(counts[1] if foreground else 0, counts[N_LEVELS]):
        p = order[k]
        if parent[p] == p:
            r = _close(out_box, out_lo, out_hi, r, box, start, p, v_end, foreground)
    return r


@njit(cache=True)
def _component_tree(u8, lev, fg_mask, bg_mask, counts, order, xy, parent, box, start, size,
                    out_box, out_lo, out_hi) -> tuple[int, int]:
    """Both sweeps; records `[0, n_fg)` are foreground components, `[n_fg, n)` holes."""
    h, w = u8.shape
    _prepare(u8, lev, fg_mask, bg_mask, counts, order, xy)
    n_fg = _sweep(h, w, counts, order, xy, fg_mask, FG_REPS, FG_N, True, parent, box, start,
                  size, out_box, out_lo, out_hi, 0)
    n = _sweep(h, w, counts, order, xy, bg_mask, BG_REPS, BG_N, False, parent, box, start,
               size, out_box, out_lo, out_hi, n_fg)
    return n_fg, n


@njit(cache=True, inline="always")
def _contour_box(out_box, i, hole, h, w):
    """The contour-box convention for record i: an outer border's rect is the component's
    extent + 1 on the far sides; a hole border runs over the pixels around the hole."""
    grow = 1 if hole else 0
    return (out_box[i, 0] - grow, out_box[i, 1] - grow, min(out_box[i, 2] + 1 + grow, w - 1),
            min(out_box[i, 3] + 1 + grow, h - 1))


@njit(cache=True)
def _contour_boxes(out_box, n_fg, n, h, w) -> np.ndarray:
    boxes = np.empty((n, 4), np.int64)
    for i in range(n):
        boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3] = _contour_box(out_box, i, i >= n_fg,
                                                                          h, w)
    return boxes


def _tree(u8: np.ndarray) -> tuple[_Workspace, int, int]:
    u8 = np.ascontiguousarray(u8, dtype=np.uint8)
    h, w = u8.shape
    if max(h, w) >= 2 ** 15 - 2:  # coordinates are stored as int16
        raise ValueError(f"map of shape {u8.shape} is too large for the component tree")
    ws = _workspace(h, w)
    n_fg, n = _component_tree(u8, ws.lev, ws.fg_mask, ws.bg_mask, ws.counts, ws.order, ws.xy,
                              ws.parent, ws.box, ws.start, ws.size, ws.out_box, ws.out_lo,
                              ws.out_hi)
    return ws, n_fg, n


def contour_boxes_by_level(u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contour boxes of `u8 > t` for all t at once, as `(boxes [r, 4], lo [r], hi [r])`.

    `boxes` follow the contour-box convention `(x, y, min(x + w, W - 1), min(y + h, H - 1))`;
    box i is returned by `cv2.findContours(u8 > t, RETR_TREE, ...)` for every t in
    `[lo[i], hi[i]]` (the list for one t is a multiset: order is not OpenCV's).
    """
    h, w = np.shape(u8)
    ws, n_fg, n = _tree(u8)
    return (_contour_boxes(ws.out_box, n_fg, n, h, w), ws.out_lo[:n].astype(np.int64),
            ws.out_hi[:n].astype(np.int64))



@njit(cache=True, error_model="numpy")
def _best_by_level(out_box, out_lo, out_hi, n_fg, n, h, w, gt, best) -> None:
    """best[t] = max IoU over the contour boxes present at t and the GT boxes (-1: none)."""
    best[:] = -1.0
    for i in range(n):
        x0, y0, x1, y1 = _contour_box(out_box, i, i >= n_fg, h, w)
        iou = max_iou_of_box(x0, y0, x1, y1, gt)
        for t in range(max(out_lo[i], 0), min(out_hi[i], N_LEVELS - 1) + 1):
            if iou > best[t]:
                best[t] = iou


def best_iou_by_level(u8: np.ndarray, gt_boxes: np.ndarray, empty_iou: float) -> np.ndarray:
    """Best IoU of any contour box with any GT box, for every integer threshold 0..255.

    Where no contour exists (`u8 > t` empty), the value is `empty_iou` (the IoU of the
    fallback box), as upstream evaluates its `(0, 0, 0, 0)` box.
    """
    h, w = np.shape(u8)
    ws, n_fg, n = _tree(u8)
    best = np.empty(N_LEVELS)
    _best_by_level(ws.out_box, ws.out_lo, ws.out_hi, n_fg, n, h, w,
                   np.ascontiguousarray(gt_boxes, dtype=np.int64), best)
    best[best < 0] = empty_iou
    return best
