"""PxAP: pixel average precision of score maps against GT masks (Choe et al., CVPR 2020),
as wsolevaluation's `MaskEvaluator` computes it (docs/evaluate-maps.md).

Score maps are built like MaxBoxAcc's (float64 bicubic to 224, guarded min-max). Each
instance mask is resized to 224 with nearest neighbour, foreground = value > 0.5, their union
is the object; the ignore region (OpenImages) minus the object is left out of both
histograms. Histograms of foreground and background scores are pooled over all pixels of the
split with bin edges = the tau grid followed by 1, 2, 3; reverse cumulative sums give TP/FP
per threshold; PxAP is the right-endpoint sum of precision x recall increments (entries
with TP + FP = 0 skipped).
PIoU (peak pixel IoU, TPAMI) is computed from the same histograms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsolbench.errors import WsolbenchError
from wsolbench.postprocess import check_scoremap, scoremap_wsolevaluation
from wsolbench.protocol import EvalBatch, Protocol
from wsolbench.thresholds import threshold_grid


class PxAP(Protocol):
    name = "pxap"
    needs_masks = True

    def __init__(self, cam_curve_interval: float = 0.001, eval_size: int = 224,
                 scoremaps: bool = False) -> None:
        self.scoremaps = bool(scoremaps)
        self.cam_curve_interval = float(cam_curve_interval)
        self.eval_size = int(eval_size)
        self.edges = np.concatenate([threshold_grid(self.cam_curve_interval), [1.0, 2.0, 3.0]])
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"cam_curve_interval": self.cam_curve_interval, "eval_size": self.eval_size,
                "resize": "none (score maps)" if self.scoremaps else "bicubic-float64"}

    def _empty_state(self) -> dict[str, np.ndarray]:
        bins = len(self.edges) - 1
        return {"fg_hist": np.zeros(bins, np.int64), "bg_hist": np.zeros(bins, np.int64)}

    def _update(self, batch: EvalBatch) -> None:
        s = self.eval_size
        for raw, mask in zip(batch.maps, batch.masks):  # type: ignore[arg-type]
            if self.scoremaps:
                score = np.asarray(raw, dtype=np.float64)
                check_scoremap(score, s)
            else:
                score = scoremap_wsolevaluation(np.asarray(raw), s)
            foreground, ignore = mask.at(s)
            self.state["fg_hist"] += np.histogram(score[foreground], bins=self.edges)[0]
            self.state["bg_hist"] += np.histogram(score[~foreground & ~ignore],
                                                  bins=self.edges)[0]

    def _compute(self) -> dict[str, Any]:
        tp = np.cumsum(self.state["fg_hist"][::-1])  # thresholds 2, 1, 1-b, ..., 0
        fp = np.cumsum(self.state["bg_hist"][::-1])
        fg_total = tp[-1]
        if fg_total == 0:
            raise WsolbenchError("PxAP: the split has no foreground pixel")
        valid = (tp + fp) > 0
        precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=valid)
        recall = tp / fg_total
        steps = np.diff(recall, prepend=0.0)[1:]
        pxap = 100.0 * float((precision[1:] * steps)[valid[1:]].sum())
        piou = 100.0 * float(np.max(tp / (fg_total + fp)))
        return {"metric": self.name, "pxap": pxap, "piou": piou,
                "cam_curve_interval": self.cam_curve_interval}
