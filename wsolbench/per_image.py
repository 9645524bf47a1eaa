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

from wsolbench.protocol import Protocol, topk_hits

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
                       test: dict[str, Protocol], fullsup: dict[str, Protocol]
                       ) -> pd.DataFrame:
    """One row per image: classification, `paper` and `fair` localization, MaxBoxAccV2.

    Only the `Protocol` interface is used (`image_outcomes`, `predicted_boxes`), so a plugin
    registered in a built-in's place is read the same way.

    Args:
        records: the split's records (boxes, sizes, labels), in the order of `maps`.
        maps, logits: the split's raw GT-class maps and class scores.
        test: the suite's evaluated protocols on this split, by suite name (`paper`,
            `maxboxacc_v2`, ...). MaxBoxAccV2's columns are read at the tau it selected, so
            their means are the reported maxima.
        fullsup: the same protocols evaluated on train-fullsup: the `fair` columns are read
            at the tau the paper protocol selects there.
    """
    from wsolbench.evaluation import make_batch

    batch = make_batch(records, maps, logits)
    top1 = topk_hits(logits, batch.labels, 1)
    frame = pd.DataFrame({"image_id": batch.image_ids, "label": batch.labels,
                          "predicted": np.argmax(logits, axis=1),
                          "cls_top1": top1, "cls_top5": topk_hits(logits, batch.labels, 5)})
    paper = test["paper"]
    for suffix, selected_on in (("paper", None), ("fair", fullsup["paper"])):
        for column, values in (paper.image_outcomes(batch, selected_on) or {}).items():
            frame[f"{column}_{suffix}"] = values
    drawing = paper.predicted_boxes(batch)
    if drawing is not None:
        frame["n_gt_boxes"] = [len(gt) for gt in drawing.gt]
        frame["error_category"] = [error_category(bool(ok), box, gt) for ok, box, gt
                                   in zip(top1, drawing.predicted, drawing.gt)]
    v2 = test["maxboxacc_v2"].image_outcomes(batch) or {}
    for delta, values in v2.items():
        frame[f"boxacc_v2_{delta}"] = values
    if v2:  # per-image share of the IoU thresholds
        frame["boxacc_v2_mean"] = frame[[f"boxacc_v2_{d}" for d in v2]].mean(axis=1)
    return frame
