"""Protocols on hand-computed cases (docs/protocols.md) and against the reference."""

import cv2
import numpy as np
import pytest
from wsolbench.protocols.classification import Classification
from wsolbench.protocols.loc_acc import LocAcc
from wsolbench.protocols.maxboxacc import MaxBoxAcc, MaxBoxAccV2
from wsolbench.protocols.pxap import PxAP

from wsolbench.boxes import (
    best_iou_per_threshold,
    contour_boxes,
    foreground_bounds,
    iou_matrix,
    scale_boxes_official,
    scale_boxes_wsolevaluation,
)
from wsolbench.errors import WsolbenchError
from wsolbench.postprocess import quantize, scoremap_wsolevaluation
from wsolbench.protocol import EvalBatch
from wsolbench.thresholds import integer_thresholds, threshold_grid

S = 224


def batch(maps, boxes, sizes=None, labels=None, logits=None, masks=None):
    n = len(maps)
    return EvalBatch(image_ids=[f"img{i}.jpg" for i in range(n)], maps=list(maps),
                     labels=np.asarray(labels if labels is not None else [0] * n),
                     boxes=[np.asarray(b, dtype=np.int64).reshape(-1, 4) for b in boxes],
                     sizes=np.asarray(sizes if sizes is not None else [(S, S)] * n),
                     logits=None if logits is None else np.asarray(logits, dtype=np.float32),
                     masks=masks)


def block_map(x0, y0, x1, y1, size=S):
    m = np.zeros((size, size))
    m[y0:y1 + 1, x0:x1 + 1] = 1.0
    return m


# ----------------------------------------------------------------------------- geometry

def test_iou_test_vectors():
    assert iou_matrix([[0, 0, 9, 9]], [[0, 0, 10, 10]])[0, 0] == 100 / 121
    assert iou_matrix([[1, 2, 5, 6]], [[3, 1, 4, 5]])[0, 0] == 8 / 27
    assert iou_matrix([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 1.0
    assert iou_matrix([[0, 0, 3, 3]], [[10, 10, 12, 12]])[0, 0] == 0.0


@pytest.mark.parametrize("box,size,expected", [
    ((60, 27, 385, 331), (500, 335), (26, 18, 172, 221)),
    ((111, 108, 441, 193), (500, 375), (49, 64, 197, 115)),
    ((5, 4, 215, 134), (216, 136), (5, 6, 222, 220)),
    ((0, 0, 499, 374), (500, 375), (0, 0, 223, 223)),
])
def test_gt_scaling_multiplies_first(box, size, expected):
    assert scale_boxes_wsolevaluation(np.array([box]), size).tolist() == [list(expected)]


def test_gt_scaling_operation_order_matters():
    # 244 * 224 / 448 = 122 exactly; 244 / 448 * 224 = 121.99999999999999 -> 121
    assert scale_boxes_wsolevaluation(np.array([[244, 0, 244, 0]]), (448, 448))[0, 0] == 122
    assert scale_boxes_official(np.array([[244, 0, 244, 0]]), (448, 448))[0, 0] == 121


def test_threshold_grid_is_numpy_arange():
    assert len(threshold_grid(0.001)) == 1000 and len(threshold_grid(0.03)) == 34
    assert threshold_grid(0.05)[-1] == np.arange(0, 1, 0.05)[-1]


def test_contour_box_off_by_one_and_clipping():
    u8 = np.zeros((S, S), np.uint8)
    u8[10, 20] = 255
    assert contour_boxes(u8, 0, largest_only=False, clip=True).tolist() == [[20, 10, 21, 11]]
    full = np.full((S, S), 255, np.uint8)
    assert contour_boxes(full, 0, largest_only=False, clip=True).tolist() == [[0, 0, 223, 223]]
    assert contour_boxes(full, 0, largest_only=False, clip=False).tolist() == [[0, 0, 224, 224]]


def test_ring_has_a_hole_contour():
    u8 = np.zeros((S, S), np.uint8)
    u8[50:100, 60:120] = 255
    u8[60:90, 70:110] = 0  # hole rows 60-89, cols 70-109
    boxes = sorted(contour_boxes(u8, 0, largest_only=False, clip=True).tolist())
    # outer (60, 50, 120, 100) and the hole grown by one pixel: rect x 69, y 59, w 42, h 32
    assert boxes == [[60, 50, 120, 100], [69, 59, 111, 91]]


def test_v1_tie_takes_the_component_later_in_raster_order():
    u8 = np.zeros((S, S), np.uint8)
    u8[10:20, 10:20] = 255
    u8[150:160, 10:20] = 255
    assert contour_boxes(u8, 0, largest_only=True, clip=True).tolist() == [[10, 150, 20, 160]]


def test_constant_maps():
    # 0.7 is no binary fraction: float64 bicubic ripples are normalized into a noise map
    rippled = scoremap_wsolevaluation(np.full((14, 14), 0.7))
    assert rippled.min() == 0.0 and rippled.max() == 1.0
    assert not scoremap_wsolevaluation(np.full((14, 14), 0.5)).any()
    assert not scoremap_wsolevaluation(np.full((1, 1), 3.5)).any()
    nan_map = np.ones((7, 7))
    nan_map[3, 3] = np.nan
    assert not scoremap_wsolevaluation(nan_map).any()
    neg = -np.arange(49.0).reshape(7, 7)
    s = scoremap_wsolevaluation(neg)
    assert s.min() == 0.0 and s.max() == 1.0


# ----------------------------------------------------------------------------- loc_acc

def test_loc_acc_ge_for_gt_known_and_gt_for_topk():
    # Prediction box (0, 0, 10, 10) has area 121; GT (0, 0, 10, 21) has area 242 -> IoU 0.5.
    gt = np.array([[0, 0, 10, 21]])
    assert scale_boxes_official(gt, (S, S)).tolist() == gt.tolist()
    logits = [[5.0, 1.0]]
    strict = LocAcc(cam_threshold=0.1)
    strict.update(batch([block_map(0, 0, 9, 9)], [gt], logits=logits))
    r = strict.compute()
    assert r["gt_known_loc"] == 100.0 and r["top1_loc"] == 0.0 and r["top5_loc"] == 0.0
    loose = LocAcc(cam_threshold=0.1, topk_strict=False)
    loose.update(batch([block_map(0, 0, 9, 9)], [gt], logits=logits))
    assert loose.compute()["top1_loc"] == 100.0
    both_strict = LocAcc(cam_threshold=0.1, gt_known_strict=True)
    both_strict.update(batch([block_map(0, 0, 9, 9)], [gt], logits=logits))
    assert both_strict.compute()["gt_known_loc"] == 0.0


def test_loc_acc_classification_gates_top1_and_top5():
    gt = [[0, 0, 9, 9]]
    logits = [[0.0, 1, 2, 3, 4, 5, 6], [6.0, 5, 4, 3, 2, 1, 0], [5.0, 9, 8, 7, 6, 1, 0]]
    p = LocAcc(cam_threshold=0.1)
    p.update(batch([block_map(0, 0, 9, 9)] * 3, [gt] * 3, labels=[0, 0, 0], logits=logits))
    r = p.compute()
    assert r["gt_known_loc"] == 100.0  # box IoU 100/121 everywhere
    assert r["top1_loc"] == pytest.approx(100 / 3)  # only image 1 has class 0 on top
    assert r["top5_loc"] == pytest.approx(200 / 3)  # image 0: class 0 last of 7; image 2: 5th


def test_loc_acc_several_gt_boxes_take_the_max_and_first_box_only_does_not():
    boxes = [[100, 100, 150, 150], [0, 0, 9, 9]]
    every, first = LocAcc(), LocAcc(first_box_only=True)
    for p in (every, first):
        p.update(batch([block_map(0, 0, 9, 9)], [boxes], logits=[[1.0, 0.0]]))
    assert every.compute()["gt_known_loc"] == 100.0
    assert first.compute()["gt_known_loc"] == 0.0


def test_loc_acc_constant_map_uses_the_official_fallback_box():
    # constant -> NaN -> no contour -> (0, 0, 1, 1): correct only for a GT box near it
    p = LocAcc()
    p.update(batch([np.full((14, 14), 0.3)] * 2, [[[0, 0, 1, 1]], [[0, 0, 50, 50]]],
                   logits=[[1.0, 0.0]] * 2))
    assert p.compute()["gt_known_loc"] == 50.0


def test_whole_image_baseline():
    p = LocAcc()
    p.update(batch([block_map(0, 0, 9, 9)] * 2, [[[0, 0, 223, 223]], [[0, 0, 9, 9]]],
                   logits=[[1.0, 0.0]] * 2))
    assert p.compute()["whole_image"]["gt_known_loc"] == 50.0


# ----------------------------------------------------------------------------- MaxBoxAcc

def test_maxboxacc_v2_hand_case():
    # A 10x10 block: at every tau the foreground is the block, box (x0, y0, x1 + 1, y1 + 1).
    p = MaxBoxAccV2(cam_curve_interval=0.01)
    p.update(batch([block_map(20, 30, 29, 39)], [[[20, 30, 29, 39]]]))  # IoU 100/121
    p.update(batch([block_map(20, 30, 29, 39)], [[[20, 30, 49, 39]]]))  # IoU 110/(110+...)
    r = p.compute()
    # image 2: pred (20,30,30,40) area 121, GT area 300, inter 11*10=110 -> 110/311 = 0.354
    assert r["per_iou"]["30"]["max_acc"] == 100.0
    assert r["per_iou"]["50"]["max_acc"] == 50.0 and r["per_iou"]["70"]["max_acc"] == 50.0
    assert r["mean"] == pytest.approx(200 / 3)
    assert r["per_iou"]["50"]["best_threshold_index"] == 0
    assert r["per_iou"]["50"]["n_tied_best_indices"] == 100


def test_iou_exactly_at_delta_counts_as_correct():
    # pred (0, 0, 10, 10), area 121, inside GT (0, 0, 10, 21), area 242: IoU exactly 0.5
    p = MaxBoxAccV2(cam_curve_interval=0.1, iou_thresholds=(50,))
    p.update(batch([block_map(0, 0, 9, 9)], [[[0, 0, 10, 21]]]))
    assert p.compute()["per_iou"]["50"]["max_acc"] == 100.0


def test_all_zero_map_uses_box_0000():
    p = MaxBoxAccV2(cam_curve_interval=0.1)
    p.update(batch([np.zeros((7, 7)), np.full((1, 1), 3.5)], [[[0, 0, 0, 0]], [[0, 0, 0, 1]]]))
    r = p.compute()
    # IoU 1 and 0.5 -> image 1 correct at 30/50/70, image 2 at 30/50
    assert [r["per_iou"][d]["max_acc"] for d in ("30", "50", "70")] == [100.0, 100.0, 50.0]


def test_v1_keeps_the_largest_contour_v2_all():
    m = block_map(0, 0, 39, 39) + 0.5 * block_map(150, 150, 159, 159)
    gt = [[150, 150, 159, 159]]
    v1, v2 = MaxBoxAcc(cam_curve_interval=0.01), MaxBoxAccV2(cam_curve_interval=0.01)
    v1.update(batch([m], [gt]))
    v2.update(batch([m], [gt]))
    assert v1.compute()["mean"] == 0.0  # the big block wins the area contest at every tau
    assert v2.compute()["per_iou"]["50"]["max_acc"] == 100.0


def test_non_square_images_scale_gt():
    raw = np.zeros((10, 20))
    raw[2:8, 5:15] = 1.0  # raw map of a 200x100 image
    p = MaxBoxAccV2(cam_curve_interval=0.01)
    p.update(batch([raw], [[[50, 20, 149, 79]]], sizes=[(200, 100)]))
    assert p.compute()["per_iou"]["50"]["max_acc"] == 100.0


def _random_maps(rng, n):
    maps = []
    for _ in range(n):
        h, w = rng.integers(1, 40, 2)
        ys, xs = np.mgrid[0:h, 0:w]
        m = rng.normal(0, rng.uniform(0, 0.3), (h, w))
        for _ in range(rng.integers(0, 4)):
            cy, cx, sg = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, max(h, w) / 2)
            m += rng.uniform(0.2, 1) * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sg * sg))
        maps.append(m)
    return maps


def _random_boxes(rng, n):
    out, sizes = [], []
    for _ in range(n):
        W, H = rng.integers(20, 600, 2)
        k = rng.integers(1, 4)
        x0, y0 = rng.integers(0, W, k), rng.integers(0, H, k)
        out.append(np.stack([x0, y0, rng.integers(x0, W), rng.integers(y0, H)], 1))
        sizes.append((W, H))
    return out, sizes


def test_fast_path_equals_the_opencv_reference_on_random_maps():
    rng = np.random.default_rng(7)
    n = 250
    maps, (boxes, sizes) = _random_maps(rng, n), _random_boxes(rng, n)
    fast = MaxBoxAccV2(cam_curve_interval=0.01)
    fast.update(batch(maps, boxes, sizes=sizes))
    expected = np.zeros_like(fast.state["correct"])
    deltas = np.array([0.3, 0.5, 0.7])[:, None]
    for raw, b, size in zip(maps, boxes, sizes):
        u8 = quantize(scoremap_wsolevaluation(raw))
        gt = scale_boxes_wsolevaluation(b, size)
        best = best_iou_per_threshold(u8, integer_thresholds(fast.thresholds, int(u8.max())), gt,
                                      largest_only=False, clip=True, empty_box=(0, 0, 0, 0))
        expected += best[None, :] >= deltas
    np.testing.assert_array_equal(fast.state["correct"], expected)
    assert 0 < expected.sum() < n * expected.size  # the case is not trivial


def _literal_largest_contour_ious(u8, thresholds, gt, clip, empty_box):
    """The largest-contour sweep read literally: every tau traced, IoU by hand."""
    out = []
    for t in thresholds:
        contours, _ = cv2.findContours((u8 > t).astype(np.uint8), cv2.RETR_TREE,
                                       cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            areas = [cv2.contourArea(c) for c in contours]
            x, y, w, h = cv2.boundingRect(contours[areas.index(max(areas))])
            x1, y1 = x + w, y + h
            if clip:
                x1, y1 = min(x1, u8.shape[1] - 1), min(y1, u8.shape[0] - 1)
            box = (x, y, x1, y1)
        else:
            box = empty_box
        ious = []
        for g in gt:
            iw = max(min(box[2], g[2]) - max(box[0], g[0]) + 1, 0)
            ih = max(min(box[3], g[3]) - max(box[1], g[1]) + 1, 0)
            union = ((box[2] - box[0] + 1) * (box[3] - box[1] + 1)
                     + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - iw * ih)
            ious.append(iw * ih / union if union > 0 else 0.0)
        out.append(max(ious))
    return np.array(out)


@pytest.mark.parametrize("clip", [False, True])
def test_largest_contour_sweep_equals_a_literal_per_tau_trace(clip):
    """The paper protocol's and MaxBoxAcc v1's sweep (one traced box per distinct level)
    against tracing every tau of the grid, on maps with several blobs, holes and noise."""
    rng = np.random.default_rng(11)
    maps, (boxes, sizes) = _random_maps(rng, 60), _random_boxes(rng, 60)
    taus = threshold_grid(0.01)
    for raw, b, size in zip(maps, boxes, sizes):
        u8 = quantize(scoremap_wsolevaluation(raw))
        gt = scale_boxes_official(b, size)
        thresholds = integer_thresholds(taus, int(u8.max()))
        got = best_iou_per_threshold(u8, thresholds, gt, largest_only=True, clip=clip,
                                     empty_box=(0, 0, 1, 1))
        np.testing.assert_array_equal(
            got, _literal_largest_contour_ious(u8, thresholds, gt, clip, (0, 0, 1, 1)))


def test_foreground_bounds_are_the_rectangle_of_the_pixels_above_each_level():
    rng = np.random.default_rng(5)
    for raw in _random_maps(rng, 40) + [np.zeros((7, 9)), np.ones((3, 3))]:
        u8 = quantize(scoremap_wsolevaluation(raw, 37))
        levels = np.arange(256)
        got = foreground_bounds(u8, levels)
        for t in levels:
            ys, xs = np.nonzero(u8 > t)
            if len(xs):
                assert got[t].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
            else:
                assert got[t, 0] == u8.shape[1]


def test_a_window_around_the_foreground_traces_the_same_contours_as_the_whole_map():
    """Every contour box, in OpenCV's order, and the largest contour's: the window only
    narrows the scan (foreground on the map's edges, holes and several blobs included)."""
    rng = np.random.default_rng(9)
    edge = np.zeros((30, 30), np.uint8)
    edge[0:5, 25:30], edge[10:20, 0:3], edge[12:15, 12:15] = 200, 120, 90
    maps = [quantize(scoremap_wsolevaluation(m, 60)) for m in _random_maps(rng, 40)] + [edge]
    traced = 0
    for u8 in maps:
        levels = np.unique(u8)
        for t, window in zip(levels.tolist(), foreground_bounds(u8, levels).tolist()):
            if window[0] >= u8.shape[1]:
                assert not (u8 > t).any()
                continue
            for largest_only in (False, True):
                whole = contour_boxes(u8, t, largest_only=largest_only, clip=True)
                windowed = contour_boxes(u8, t, largest_only=largest_only, clip=True,
                                         window=window)
                assert windowed.tolist() == whole.tolist()
            traced += 1
    assert traced > 1000  # many levels, not a handful


def test_one_batch_equals_many_batches_equals_merged_shards():
    rng = np.random.default_rng(3)
    maps, (boxes, sizes) = _random_maps(rng, 30), _random_boxes(rng, 30)
    logits = rng.normal(size=(30, 6))
    labels = rng.integers(0, 6, 30)

    def make():
        return [MaxBoxAccV2(cam_curve_interval=0.01), LocAcc(), Classification()]

    whole = make()
    for p in whole:
        p.update(batch(maps, boxes, sizes=sizes, labels=labels, logits=logits))
    shards = [make(), make()]
    for k, (lo, hi) in enumerate(((0, 11), (11, 30))):
        for start in range(lo, hi, 4):
            stop = min(start + 4, hi)
            for p in shards[k]:
                p.update(batch(maps[start:stop], boxes[start:stop], sizes=sizes[start:stop],
                               labels=labels[start:stop], logits=logits[start:stop]))
    for a, b, c in zip(whole, *shards):
        merged = b.merge(c)
        assert merged.n == a.n == 30
        for key in a.state:
            np.testing.assert_array_equal(merged.state[key], a.state[key])
        assert merged.compute() == a.compute()


def test_bad_inputs():
    with pytest.raises(WsolbenchError, match="no image was evaluated"):
        MaxBoxAccV2().compute()
    with pytest.raises(WsolbenchError, match="expected a 2-D score map"):
        batch([np.zeros((2, 3, 3))], [[[0, 0, 1, 1]]])
    with pytest.raises(WsolbenchError, match="needs class scores"):
        LocAcc().update(batch([np.zeros((3, 3))], [[[0, 0, 1, 1]]]))
    with pytest.raises(WsolbenchError, match="cannot merge"):
        MaxBoxAccV2(cam_curve_interval=0.01).merge(MaxBoxAccV2(cam_curve_interval=0.001))


# ----------------------------------------------------------------------------- PxAP


def test_pxap_ignore_region_by_hand():
    """Object: columns 0-111 (given as two instance masks at other resolutions); ignore box:
    columns 112-167; score 1 on columns 0-139. With the ignore region the 28 score-1 columns
    outside the object are not counted: precision 1, PxAP 100. Without it they are false
    positives: precision 25088 / (25088 + 6272) = 0.8 at full recall: PxAP 80."""
    from wsolbench.protocol import GTMask

    score = np.zeros((S, S))
    score[:, :140] = 1.0
    top_half = np.zeros((112, 112), np.float32)  # half resolution: rows 0-111, cols 0-111
    top_half[:56, :56] = 255
    bottom = np.zeros((448, 448), np.float32)  # double resolution
    bottom[224:, :224] = 255
    ignore = np.zeros((S, S), np.float32)
    ignore[:, 112:168] = 255
    with_ignore, without = PxAP(scoremaps=True), PxAP(scoremaps=True)
    with_ignore.update(batch([score], [[[0, 0, 1, 1]]],
                             masks=[GTMask((top_half, bottom), ignore)]))
    without.update(batch([score], [[[0, 0, 1, 1]]], masks=[GTMask((top_half, bottom))]))
    assert with_ignore.compute()["pxap"] == pytest.approx(100.0)
    assert without.compute()["pxap"] == pytest.approx(80.0)
    foreground, ignored = GTMask((top_half, bottom), ignore).at(S)
    assert foreground.sum() == S * 112 and ignored.sum() == S * 56


def _pxap_as_wsolevaluation(scores, instance_masks, ignores, step):
    """An independent port of wsolevaluation's `get_mask` + `MaskEvaluator` (uint8 mask:
    1 object, 255 ignore, 0 background; float histograms)."""
    import cv2

    edges = np.append(np.arange(0, 1, step), [1.0, 2.0, 3.0])
    true_hist, false_hist = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    for score, masks, ignore in zip(scores, instance_masks, ignores):
        fg = np.stack([cv2.resize(m, (S, S), interpolation=cv2.INTER_NEAREST) > 0.5
                       for m in masks]).any(0)
        ign = cv2.resize(ignore, (S, S), interpolation=cv2.INTER_NEAREST) > 0.5
        gt = fg.astype(np.uint8) + 255 * (ign & ~fg).astype(np.uint8)
        true_hist += np.histogram(score[gt == 1], bins=edges)[0]
        false_hist += np.histogram(score[gt == 0], bins=edges)[0]
    tp = true_hist[::-1].cumsum()
    fn = true_hist.sum() - tp
    fp = false_hist[::-1].cumsum()
    nonzero = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 100 * (precision[1:] * np.diff(recall))[nonzero[1:]].sum()


def test_pxap_with_ignore_masks_matches_an_independent_port():
    from wsolbench.protocol import GTMask

    rng = np.random.default_rng(5)
    scores, instances, ignores = [], [], []
    for _ in range(12):
        scores.append(np.clip(rng.normal(0.4, 0.3, (S, S)), 0, 1))
        k = int(rng.integers(1, 4))
        instances.append([(rng.random((int(rng.integers(50, 400)),) * 2) > 0.8).astype(
            np.float32) * 255 for _ in range(k)])
        ignores.append((rng.random((S, S)) > 0.7).astype(np.float32) * 255)
    ours = PxAP(cam_curve_interval=0.01, scoremaps=True)
    ours.update(batch(scores, [[[0, 0, 1, 1]]] * 12,
                      masks=[GTMask(tuple(m), i) for m, i in zip(instances, ignores)]))
    assert ours.compute()["pxap"] == pytest.approx(
        _pxap_as_wsolevaluation(scores, instances, ignores, 0.01), abs=1e-9)

def _gt(mask, ignore=None):
    from wsolbench.protocol import GTMask

    return GTMask((np.asarray(mask, np.float32),),
                  None if ignore is None else np.asarray(ignore, np.float32))


def test_pxap_perfect_and_constant_maps():
    mask = np.zeros((S, S), bool)
    mask[50:100, 60:150] = True
    perfect = PxAP()
    perfect.update(batch([mask.astype(float)], [[[0, 0, 1, 1]]], masks=[_gt(mask)]))
    assert perfect.compute()["pxap"] == pytest.approx(100.0)
    const = PxAP()
    const.update(batch([np.full((S, S), 0.4)], [[[0, 0, 1, 1]]], masks=[_gt(mask)]))
    assert const.compute()["pxap"] == pytest.approx(100.0 * mask.sum() / mask.size)
    with pytest.raises(WsolbenchError, match="needs GT masks"):
        PxAP().update(batch([mask.astype(float)], [[[0, 0, 1, 1]]]))


def test_process_shards_give_the_single_process_counters():
    from wsolbench.data.records import Record
    from wsolbench.evaluation import evaluate

    rng = np.random.default_rng(11)
    n = 40
    maps, (boxes, sizes) = _random_maps(rng, n), _random_boxes(rng, n)
    records = [Record(f"{i}.jpg", None, int(i % 3), tuple(int(v) for v in sizes[i]), boxes[i])
               for i in range(n)]
    logits = rng.normal(size=(n, 3))
    single = [MaxBoxAccV2(cam_curve_interval=0.01), LocAcc()]
    sharded = [MaxBoxAccV2(cam_curve_interval=0.01), LocAcc()]
    evaluate(single, records, maps, logits, chunk=8)
    evaluate(sharded, records, maps, logits, chunk=8, workers=2)
    for a, b in zip(single, sharded):
        assert a.n == b.n == n
        for key in a.state:
            np.testing.assert_array_equal(a.state[key], b.state[key])


def _assert_tree_matches_opencv(u8):
    from wsolbench.component_tree import contour_boxes_by_level

    boxes, lo, hi = contour_boxes_by_level(u8)
    for t in range(256):
        expected = contour_boxes(u8, t, largest_only=False, clip=True)
        got = boxes[(lo <= t) & (t <= hi)]
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, expected.tolist())), t


def test_component_tree_returns_exactly_the_opencv_contour_boxes_at_every_threshold():
    rng = np.random.default_rng(5)
    maps = _random_maps(rng, 30) + [rng.random((40, 40)), np.zeros((5, 5))]
    for raw in maps:
        _assert_tree_matches_opencv(quantize(scoremap_wsolevaluation(raw, 64)))


def test_component_tree_connectivity_plateaus_and_odd_shapes():
    rng = np.random.default_rng(9)
    checker = (np.indices((9, 12)).sum(0) % 2 * 200).astype(np.uint8)  # 8- vs 4-connectivity
    nested = np.zeros((15, 15), np.uint8)
    for i, v in enumerate((50, 120, 30, 250, 90)):  # rings and holes inside holes
        nested[i + 1:14 - i, i + 1:14 - i] = v
    cases = [checker, nested, np.full((6, 6), 255, np.uint8), np.zeros((1, 1), np.uint8),
             np.array([[255]], np.uint8), rng.integers(0, 256, (1, 17), dtype=np.uint8),
             rng.integers(0, 256, (17, 1), dtype=np.uint8),
             rng.integers(0, 256, (23, 37), dtype=np.uint8),  # noise: many small components
             (rng.integers(0, 4, (30, 20)) * 80).astype(np.uint8)]  # large plateaus
    for u8 in cases:
        _assert_tree_matches_opencv(u8)
    from wsolbench.component_tree import contour_boxes_by_level
    with pytest.raises(ValueError, match="too large"):  # int16 coordinates
        contour_boxes_by_level(np.zeros((1, 40000), np.uint8))


def test_component_tree_workspace_reuse_and_threads_do_not_leak_state():
    from concurrent.futures import ThreadPoolExecutor

    from wsolbench.component_tree import contour_boxes_by_level

    rng = np.random.default_rng(2)
    maps = [quantize(scoremap_wsolevaluation(raw, int(rng.choice([32, 48]))))
            for raw in _random_maps(rng, 24)]

    def canonical(u8):
        boxes, lo, hi = contour_boxes_by_level(u8)
        return sorted(zip(map(tuple, boxes.tolist()), lo.tolist(), hi.tolist()))

    expected = [canonical(u8) for u8 in maps]  # shapes interleave: workspaces get reused
    assert [canonical(u8) for u8 in maps[::-1]] == expected[::-1]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(canonical, maps)) == expected


def test_fused_quantized_scoremap_is_bit_identical_to_the_numpy_steps():
    from wsolbench.postprocess import quantized_scoremap_wsolevaluation

    rng = np.random.default_rng(4)
    with_nan = rng.random((14, 14))
    with_nan[3, 3] = np.nan
    cases = [np.full((7, 7), 0.7), np.zeros((3, 3)), with_nan, -rng.random((14, 14)),
             rng.random((1, 1)), rng.random((28, 13)) * 1e6, rng.normal(size=(14, 14)) * 1e-12]
    cases += [rng.normal(size=tuple(rng.integers(1, 40, 2))) for _ in range(150)]
    for raw in cases:
        for size in (224, 64):
            expected = quantize(scoremap_wsolevaluation(raw, size))
            got = quantized_scoremap_wsolevaluation(raw, size)
            assert got.dtype == np.uint8 and np.array_equal(got, expected)
    # The constant-0.7 pitfall survives the fusion: bicubic ripples become several levels.
    assert len(np.unique(quantized_scoremap_wsolevaluation(np.full((7, 7), 0.7)))) > 1


def test_fixed_box_ious_equal_iou_matrix():
    from wsolbench.boxes import fixed_box_ious

    rng = np.random.default_rng(6)
    for _ in range(500):
        a = rng.integers(-3, 20, (int(rng.integers(1, 4)), 4))
        b = rng.integers(-3, 20, (int(rng.integers(1, 4)), 4))
        np.testing.assert_array_equal(fixed_box_ious(a, b), iou_matrix(a, b).max(axis=1))


def test_a_skipped_protocol_leaves_the_others_numbers_unchanged(tiny_synth):
    """`--skip-protocol maxboxacc` (the default workflow's) drops MaxBoxAcc v1 from a run's
    suite and nothing else: every other protocol gives the same numbers on the same maps."""
    from types import SimpleNamespace

    from wsolbench.options import RunOptions
    from wsolbench.suite import evaluate_split

    records = tiny_synth.test
    rng = np.random.default_rng(0)
    preds = SimpleNamespace(maps=list(rng.random((len(records), 8, 8))),
                            logits=rng.normal(size=(len(records), tiny_synth.num_classes)))
    cfg = SimpleNamespace(cam_threshold=0.2, image_size=32)

    def suite(*skip: str) -> dict:
        opts = RunOptions(method="cam", dataset="synth-cub", eval_workers=1,
                          cam_curve_interval=0.01, skip_protocols=skip)
        return {name: p.compute() for name, p in
                evaluate_split(records, preds, cfg, opts).items()}

    full, lean = suite(), suite("maxboxacc")
    assert set(full) - set(lean) == {"maxboxacc"} and "pxap" in lean
    assert all(lean[name] == full[name] for name in lean)
    assert set(suite("maxboxacc", "pxap")) == {"classification", "paper", "maxboxacc_v2"}
