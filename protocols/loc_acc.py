"""Top-1 / Top-5 / GT-known Loc as TS-CAM and TRT compute them (the `paper` protocol).

Rules (docs/protocols.md §5–7), each a parameter here:
- the GT-class map is resized bilinearly in float32 to `eval_size`, min-max normalized
  without a constant guard (constant -> NaN -> no contour), quantized to uint8;
- foreground = `u8 > int(tau * max(u8))`; the largest contour by `cv2.contourArea`; box
  `(x, y, x + w, y + h)` unclipped; no contour -> `(0, 0, 1, 1)`;
- GT boxes as the official dataset code reads them (`EvalBatch.official_boxes`: on CUB
  `int()` of x, y, w, h first), scaled divide-first and clipped at `eval_size - 1` (the
  official code's frame is the crop size); IoU with +1 areas; max over
  all GT boxes (or only the first, `first_box_only`, to measure the TRT repo's behaviour);
- GT-known: IoU >= 0.5; Top-1 / Top-5 Loc: class hit and IoU > 0.5 (strict), as the
  official code does. `gt_known_strict` / `topk_strict` switch either convention.

Counters are kept for a whole grid of thresholds, so the `fair` protocol can pick tau on the
held-out split and read the test split at that tau. The paper value is read at
`cam_threshold`, which is always on the grid. A whole-image box is scored beside every
result: what "no localization" gets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsolbench.boxes import (
    EMPTY_BOX_OFFICIAL,
    best_iou_per_threshold,
    box_at_threshold,
    iou_matrix,
    scale_boxes_official,
)
from wsolbench.errors import WsolbenchError
from wsolbench.postprocess import quantize, scoremap_official
from wsolbench.protocol import BoxDrawing, EvalBatch, Protocol, percent, topk_hits
from wsolbench.thresholds import integer_thresholds, threshold_grid

IOU_THRESHOLD = 0.5


def _passes(iou: np.ndarray, strict: bool) -> np.ndarray:
    return iou > IOU_THRESHOLD if strict else iou >= IOU_THRESHOLD


class LocAcc(Protocol):
    """Top-1/Top-5/GT-known Loc at a fixed CAM threshold, with the full tau curve kept."""

    name = "loc_acc"
    needs_logits = True

    def __init__(self, cam_threshold: float = 0.1, eval_size: int = 224,
                 curve_step: float = 0.01, topk_strict: bool = True,
                 gt_known_strict: bool = False, first_box_only: bool = False) -> None:
        self.cam_threshold = float(cam_threshold)
        self.eval_size = int(eval_size)
        self.curve_step = float(curve_step)
        self.topk_strict = bool(topk_strict)
        self.gt_known_strict = bool(gt_known_strict)
        self.first_box_only = bool(first_box_only)
        self.thresholds = np.union1d(threshold_grid(self.curve_step), [self.cam_threshold])
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"cam_threshold": self.cam_threshold, "eval_size": self.eval_size,
                "curve_step": self.curve_step, "topk_strict": self.topk_strict,
                "gt_known_strict": self.gt_known_strict, "first_box_only": self.first_box_only,
                "resize": "bilinear-float32", "box": "largest-contour-unclipped",
                "gt_scaling": "divide-first-clip"}

    def _empty_state(self) -> dict[str, np.ndarray]:
        t = len(self.thresholds)
        return {"gt_known": np.zeros(t, np.int64), "top1_loc": np.zeros(t, np.int64),
                "top5_loc": np.zeros(t, np.int64), "whole_gt_known": np.zeros((), np.int64),
                "whole_top1_loc": np.zeros((), np.int64), "whole_top5_loc": np.zeros((), np.int64)}

    def gt_boxes(self, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        gt = scale_boxes_official(boxes, size, self.eval_size)
        return gt[:1] if self.first_box_only else gt

    def score_u8(self, raw: np.ndarray) -> np.ndarray:
        """The uint8 map boxes are cut from (official resize and normalization)."""
        return quantize(scoremap_official(np.asarray(raw), self.eval_size))

    def best_ious(self, raw: np.ndarray, gt: np.ndarray, taus: np.ndarray | None = None
                  ) -> np.ndarray:
        """Largest-contour box IoU (best over GT boxes) per tau (default: the whole grid)."""
        u8 = self.score_u8(raw)
        taus = self.thresholds if taus is None else np.asarray(taus, dtype=np.float64)
        return best_iou_per_threshold(u8, integer_thresholds(taus, int(u8.max())), gt,
                                      largest_only=True, clip=False,
                                      empty_box=EMPTY_BOX_OFFICIAL)

    def box_at(self, raw: np.ndarray, tau: float) -> np.ndarray:
        """The predicted box `int [4]` at one tau (largest contour; none -> (0, 0, 1, 1))."""
        return box_at_threshold(self.score_u8(raw), tau, EMPTY_BOX_OFFICIAL)

    def passes_gt_known(self, iou: np.ndarray) -> np.ndarray:
        return _passes(iou, self.gt_known_strict)

    def passes_topk(self, iou: np.ndarray) -> np.ndarray:
        return _passes(iou, self.topk_strict)

    def batch_gt(self, batch: EvalBatch) -> list[np.ndarray]:
        """Each image's GT boxes in the evaluation frame, from the official boxes."""
        source = batch.boxes if batch.official_boxes is None else batch.official_boxes
        return [self.gt_boxes(np.asarray(boxes), (int(size[0]), int(size[1])))
                for boxes, size in zip(source, batch.sizes)]

    def _update(self, batch: EvalBatch) -> None:
        top1 = topk_hits(batch.logits, batch.labels, 1)
        top5 = topk_hits(batch.logits, batch.labels, 5)
        s = self.eval_size
        whole = np.array([[0, 0, s - 1, s - 1]])
        for i, (raw, gt) in enumerate(zip(batch.maps, self.batch_gt(batch))):
            best = self.best_ious(raw, gt)
            box_topk = self.passes_topk(best)
            self.state["gt_known"] += self.passes_gt_known(best)
            self.state["top1_loc"] += box_topk & top1[i]
            self.state["top5_loc"] += box_topk & top5[i]
            whole_iou = iou_matrix(whole, gt).max()
            self.state["whole_gt_known"] += bool(self.passes_gt_known(whole_iou))
            self.state["whole_top1_loc"] += bool(self.passes_topk(whole_iou) & top1[i])
            self.state["whole_top5_loc"] += bool(self.passes_topk(whole_iou) & top5[i])

    def index_of(self, tau: float) -> int:
        return int(np.flatnonzero(self.thresholds == tau)[0])

    def at_threshold(self, tau: float) -> dict[str, float]:
        """Top-1/Top-5/GT-known Loc (%) at one tau of the grid."""
        i = self.index_of(tau)
        return {
            "top1_loc": float(percent(self.state["top1_loc"][i], self.n)),
            "top5_loc": float(percent(self.state["top5_loc"][i], self.n)),
            "gt_known_loc": float(percent(self.state["gt_known"][i], self.n)),
            "cam_threshold": float(tau)}

    def best_threshold(self) -> float:
        """The first tau maximizing GT-known Loc (used to transfer tau from train-fullsup)."""
        return float(self.thresholds[int(np.argmax(self.state["gt_known"]))])

    def transfer(self, selected_on: LocAcc) -> dict[str, float]:
        """Loc at the tau that maximizes GT-known Loc on `selected_on` (the `fair` rule)."""
        return self.at_threshold(selected_on.best_threshold())

    def image_outcomes(self, batch: EvalBatch, selected_on: LocAcc | None = None
                       ) -> dict[str, np.ndarray]:
        """Per image at `cam_threshold` (or `selected_on`'s best tau): the box's best IoU,
        GT-known, Top-1 and Top-5 Loc, with this protocol's conventions."""
        if batch.logits is None:
            raise WsolbenchError(f"protocol {self.name!r} needs class scores (logits)")
        tau = self.cam_threshold if selected_on is None else selected_on.best_threshold()
        ious = np.array([self.best_ious(raw, gt, np.array([tau]))[0]
                         for raw, gt in zip(batch.maps, self.batch_gt(batch))])
        boxed = self.passes_topk(ious)
        return {"iou": ious, "gt_known": self.passes_gt_known(ious),
                "top1_loc": boxed & topk_hits(batch.logits, batch.labels, 1),
                "top5_loc": boxed & topk_hits(batch.logits, batch.labels, 5)}

    def predicted_boxes(self, batch: EvalBatch) -> BoxDrawing:
        """The largest-contour box at `cam_threshold` in the `eval_size` frame."""
        scoremaps = np.stack([scoremap_official(np.asarray(raw), self.eval_size)
                              for raw in batch.maps])
        predicted = np.stack([box_at_threshold(quantize(m), self.cam_threshold,
                                               EMPTY_BOX_OFFICIAL) for m in scoremaps])
        return BoxDrawing(frame=self.eval_size, predicted=predicted, gt=self.batch_gt(batch),
                          scoremaps=np.nan_to_num(scoremaps))

    def _compute(self) -> dict[str, Any]:
        return {
            **self.at_threshold(self.cam_threshold),
            "whole_image": {
                "top1_loc": float(percent(self.state["whole_top1_loc"], self.n)),
                "top5_loc": float(percent(self.state["whole_top5_loc"], self.n)),
                "gt_known_loc": float(percent(self.state["whole_gt_known"], self.n))},
            "best_gt_known_threshold": self.best_threshold(),
            "curves": {"thresholds": self.thresholds.tolist(),
                       "gt_known_loc": percent(self.state["gt_known"], self.n).tolist(),
                       "top1_loc": percent(self.state["top1_loc"], self.n).tolist()},
        }
