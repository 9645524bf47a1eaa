"""MaxBoxAcc (Choe et al., CVPR 2020) and MaxBoxAccV2 (TPAMI), exactly as
clovaai/wsolevaluation's `BoxEvaluator` defines them (docs/protocols.md §3).

Per image: GT-class raw map -> float64 bicubic resize to 224 -> NaN/constant -> zeros, else
min-max -> uint8 `trunc(255 s)`; for every tau of `np.arange(0, 1, step)`: foreground
`u8 > int(tau * max(u8))`, OpenCV `RETR_TREE` contours (holes included), boxes
`(x, y, min(x + w, 223), min(y + h, 223))` (none -> `(0, 0, 0, 0)`), v1 keeps the first
contour of largest `contourArea`; GT boxes scaled `int(v * 224 / W)`; +1 IoU; best over
boxes x all GT boxes; correct iff IoU >= delta / 100 (ties count). Counters per (delta, tau);
MaxBoxAcc(delta) = max over tau of the split's accuracy, tau chosen per delta, searched on
the evaluated split itself (an upper bound, as upstream defines it).

V2 boxes come from `wsolbench.component_tree` (all thresholds in one sweep); v1 traces the
contours of each distinct integer threshold once with OpenCV (`boxes.best_iou_per_threshold`),
which is also the reference the tests hold the fast path against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsolbench.boxes import (
    EMPTY_BOX_WSOLEVALUATION,
    best_iou_per_threshold,
    fixed_box_ious,
    scale_boxes_wsolevaluation,
)
from wsolbench.component_tree import best_iou_by_level
from wsolbench.postprocess import check_scoremap, quantize, quantized_scoremap_wsolevaluation
from wsolbench.protocol import EvalBatch, Protocol, percent
from wsolbench.thresholds import integer_thresholds, threshold_grid


class MaxBoxAccV2(Protocol):
    """MaxBoxAccV2: all contours, IoU 30/50/70, mean of the three maxima."""

    name = "maxboxacc_v2"
    multi_contour = True
    default_ious: tuple[int, ...] = (30, 50, 70)

    def __init__(self, cam_curve_interval: float = 0.001, iou_thresholds: tuple[int, ...] | None
                 = None, eval_size: int = 224, first_box_only: bool = False,
                 scoremaps: bool = False) -> None:
        """`scoremaps=True`: maps are final score maps (`eval_size` square, values in [0, 1]),
        used as they are, like wsolevaluation's standalone `evaluation.py` uses saved maps."""
        self.scoremaps = bool(scoremaps)
        self.cam_curve_interval = float(cam_curve_interval)
        self.iou_thresholds = tuple(int(d) for d in (iou_thresholds or self.default_ious))
        self.eval_size = int(eval_size)
        self.first_box_only = bool(first_box_only)
        self.thresholds = threshold_grid(self.cam_curve_interval)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"cam_curve_interval": self.cam_curve_interval,
                "iou_thresholds": list(self.iou_thresholds), "eval_size": self.eval_size,
                "multi_contour": self.multi_contour, "first_box_only": self.first_box_only,
                "resize": "none (score maps)" if self.scoremaps else "bicubic-float64",
                "gt_scaling": "multiply-first"}

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {"correct": np.zeros((len(self.iou_thresholds), len(self.thresholds)), np.int64),
                "whole_image_correct": np.zeros(len(self.iou_thresholds), np.int64)}

    def gt_boxes(self, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        gt = scale_boxes_wsolevaluation(boxes, size, self.eval_size)
        return gt[:1] if self.first_box_only else gt

    def best_ious(self, raw: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Best IoU per tau `float64 [T]` for one image and its scaled GT boxes."""
        u8 = self._quantized_scoremap(np.asarray(raw))
        thresholds = integer_thresholds(self.thresholds, int(u8.max()))
        if self.multi_contour:  # all contours: one component-tree sweep serves every tau
            empty_iou = float(fixed_box_ious(np.array([EMPTY_BOX_WSOLEVALUATION]), gt)[0])
            return best_iou_by_level(u8, gt, empty_iou)[thresholds]
        # v1 ranks contours by polygon area, which only a traced contour gives.
        return best_iou_per_threshold(u8, thresholds, gt, largest_only=True, clip=True,
                                      empty_box=EMPTY_BOX_WSOLEVALUATION)

    def _quantized_scoremap(self, raw: np.ndarray) -> np.ndarray:
        if not self.scoremaps:
            return quantized_scoremap_wsolevaluation(raw, self.eval_size)
        check_scoremap(raw, self.eval_size)
        return quantize(raw.astype(np.float64))

    def _update(self, batch: EvalBatch) -> None:
        deltas = np.asarray(self.iou_thresholds, dtype=np.float64)[:, None] / 100.0
        last = self.eval_size - 1
        for raw, boxes, size in zip(batch.maps, batch.boxes, batch.sizes):
            gt = self.gt_boxes(boxes, (int(size[0]), int(size[1])))
            self.state["correct"] += self.best_ious(raw, gt)[None, :] >= deltas
            whole = fixed_box_ious(np.array([[0, 0, last, last]]), gt)[0]
            self.state["whole_image_correct"] += whole >= deltas[:, 0]

    def _best_indices(self) -> np.ndarray:
        """Per IoU threshold, the first tau index of the highest BoxAcc."""
        return np.argmax(self.state["correct"], axis=1)

    def transfer(self, selected_on: MaxBoxAccV2) -> dict[str, Any]:
        """BoxAcc per IoU threshold at the tau that maximized it on `selected_on`."""
        chosen = selected_on._best_indices()
        per_iou = {str(delta): {"threshold": float(self.thresholds[j]),
                                "acc": float(percent(self.state["correct"][row, j], self.n))}
                   for row, (delta, j) in enumerate(zip(self.iou_thresholds, chosen))}
        return {"mean": self._summary([v["acc"] for v in per_iou.values()]),
                "per_iou": per_iou}

    def image_outcomes(self, batch: EvalBatch, selected_on: MaxBoxAccV2 | None = None
                       ) -> dict[str, np.ndarray]:
        """Per image and IoU threshold (columns named by the threshold, e.g. "50"): the box
        is correct at the tau this protocol selected (so the column means are the reported
        maxima), or at the tau selected on `selected_on`."""
        chosen = (selected_on or self)._best_indices()
        deltas = np.asarray(self.iou_thresholds, dtype=np.float64) / 100.0
        correct = np.stack([
            self.best_ious(raw, self.gt_boxes(boxes, (int(size[0]), int(size[1]))))[chosen]
            >= deltas for raw, boxes, size in zip(batch.maps, batch.boxes, batch.sizes)])
        return {str(d): correct[:, k] for k, d in enumerate(self.iou_thresholds)}

    def _compute(self) -> dict[str, Any]:
        acc = percent(self.state["correct"], self.n)
        per_iou = {}
        for row, delta in zip(acc, self.iou_thresholds):
            best = int(np.argmax(row))
            per_iou[str(delta)] = {
                "max_acc": float(row[best]), "best_threshold_index": best,
                "best_threshold": float(self.thresholds[best]),
                "n_tied_best_indices": int((row == row[best]).sum())}
        mean = self._summary([v["max_acc"] for v in per_iou.values()])
        whole = percent(self.state["whole_image_correct"], self.n)
        return {"metric": self.name, "mean": mean, "per_iou": per_iou,
                "curves": {"thresholds": self.thresholds.tolist(),
                           **{str(d): row.tolist() for d, row in zip(self.iou_thresholds, acc)}},
                "cam_curve_interval": self.cam_curve_interval,
                "whole_image": {"mean": self._summary(whole.tolist()),
                                "per_iou": {str(d): float(v)
                                            for d, v in zip(self.iou_thresholds, whole)}}}

    def _summary(self, per_iou: list[float]) -> float:
        """V2: mean over the IoU thresholds; v1: the IoU-50 entry (as upstream's main.py)."""
        if not self.multi_contour and 50 in self.iou_thresholds:
            return float(per_iou[self.iou_thresholds.index(50)])
        return float(np.mean(per_iou))


class MaxBoxAcc(MaxBoxAccV2):
    """MaxBoxAcc (v1, CVPR 2020): largest contour only, reported at IoU 50."""

    name = "maxboxacc"
    multi_contour = False
    default_ious = (50,)

    def __init__(self, cam_curve_interval: float = 0.001, iou_thresholds: tuple[int, ...] | None
                 = None, eval_size: int = 224, first_box_only: bool = False,
                 scoremaps: bool = False) -> None:
        # 0.001: wsolevaluation's default for every box metric (one step, one default).
        super().__init__(cam_curve_interval, iou_thresholds, eval_size, first_box_only,
                         scoremaps)
