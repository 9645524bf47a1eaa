"""Per-image outcomes of one evaluated split: what paired statistics and error analysis need.

The protocols keep only integer counters (so shards merge exactly); this module re-reads the
same maps once more and records, for every image, whether it counts as correct under each
reported number. The mean of every 0/1 column equals the protocol's aggregate (tested), so a
paired bootstrap over images resamples exactly the numbers in the tables.

Error categories follow TS-CAM's `wrong_details` (lib/cams_deit.py) for the top-1 box of the
`paper` protocol, in its order: a wrong top-1 class first; then correct (IoU > 0.5); then
multi-instance (several GT boxes, the box covers > 30 % of at least two); part (more than
half of the box lies inside the best-matching GT box); more (the box covers >= 70 % of that
GT box); otherwise wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from wsolbench.protocol import topk_hits

ERROR_CATEGORIES = ("correct", "wrong class", "multi-instance", "part", "more", "wrong")


def _intersection(box: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Inclusive intersection area of one box `[4]` with each GT box `[m, 4]`."""
    iw = np.clip(np.minimum(box[2], gt[:, 2]) - np.maximum(box[0], gt[:, 0]) + 1, 0, None)
    ih = np.clip(np.minimum(box[3], gt[:, 3]) - np.maximum(box[1], gt[:, 1]) + 1, 0, None)
    return (iw * ih).astype(np.float64)


def _area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def error_category(class_correct: bool, box: np.ndarray, gt: np.ndarray,
                   iou_threshold: float = 0.5) -> str:
    """TS-CAM's error category of a top-1 prediction (`box` and `gt` in the same frame)."""
    if not class_correct:
        return "wrong class"
    inter = _intersection(box, gt)
    gt_area = _area(gt)
    iou = inter / (_area(box) + gt_area - inter)
    best = int(np.argmax(iou))
    if iou[best] > iou_threshold:
        return "correct"
    if len(gt) > 1 and int((inter / gt_area > 0.3).sum()) > 1:
        return "multi-instance"
    if inter[best] / _area(box)[0] > 0.5:
        return "part"
    if inter[best] / gt_area[best] >= 0.7:
        return "more"
    return "wrong"


def per_image_outcomes(records: Sequence[Any], maps: np.ndarray, logits: np.ndarray,
                       paper, maxboxacc_v2, fair_tau: float) -> pd.DataFrame:
    """One row per image: classification, `paper` and `fair` localization, MaxBoxAccV2.

    Args:
        records: the split's records (boxes, sizes, labels), in the order of `maps`.
        maps, logits: the split's raw GT-class maps and class scores.
        paper: the evaluated `loc_acc` protocol (its tau, IoU conventions, frame).
        maxboxacc_v2: the evaluated `maxboxacc_v2` protocol: each IoU threshold's column is
            read at the tau that protocol selected (so its mean is the reported maximum).
        fair_tau: the tau chosen on train-fullsup.
    """
    labels = np.asarray([r.label for r in records], dtype=np.int64)
    top1 = topk_hits(logits, labels, 1)
    top5 = topk_hits(logits, labels, 5)
    taus = np.array([paper.cam_threshold, fair_tau], dtype=np.float64)
    v2_best = np.argmax(maxboxacc_v2.state["correct"], axis=1)
    deltas = np.asarray(maxboxacc_v2.iou_thresholds, dtype=np.float64) / 100.0
    rows = []
    for i, (record, raw) in enumerate(zip(records, maps)):
        size = (int(record.size[0]), int(record.size[1]))
        gt = paper.gt_boxes(np.asarray(record.gt_boxes("official")), size)
        iou_paper, iou_fair = paper.best_ious(raw, gt, taus)
        box = paper.box_at(raw, paper.cam_threshold)
        v2_ious = maxboxacc_v2.best_ious(raw, maxboxacc_v2.gt_boxes(np.asarray(record.boxes),
                                                                     size))
        v2_correct = v2_ious[v2_best] >= deltas
        row = {"image_id": record.image_id, "label": int(labels[i]),
               "predicted": int(np.argmax(logits[i])), "n_gt_boxes": len(gt),
               "cls_top1": bool(top1[i]), "cls_top5": bool(top5[i]),
               "iou_paper": float(iou_paper),
               "gt_known_paper": bool(paper.passes_gt_known(iou_paper)),
               "top1_loc_paper": bool(paper.passes_topk(iou_paper) & top1[i]),
               "top5_loc_paper": bool(paper.passes_topk(iou_paper) & top5[i]),
               "gt_known_fair": bool(paper.passes_gt_known(iou_fair)),
               "top1_loc_fair": bool(paper.passes_topk(iou_fair) & top1[i]),
               "top5_loc_fair": bool(paper.passes_topk(iou_fair) & top5[i]),
               "error_category": error_category(bool(top1[i]), box, gt)}
        for delta, ok in zip(maxboxacc_v2.iou_thresholds, v2_correct):
            row[f"boxacc_v2_{delta}"] = bool(ok)
        rows.append(row)
    frame = pd.DataFrame(rows)
    v2_columns = [f"boxacc_v2_{d}" for d in maxboxacc_v2.iou_thresholds]
    frame["boxacc_v2_mean"] = frame[v2_columns].mean(axis=1)  # per-image share of the 3 IoUs
    return frame
