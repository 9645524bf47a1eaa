"""Feeding maps to protocols: chunked, optionally sharded over processes (no torch here).

Shards are evaluated in separate processes and merged through `Protocol.merge`, which gives
exactly the counters of a single pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm  # not tqdm.auto: its notebook probe costs ~60 ms at import

from wsolbench.data.records import Record
from wsolbench.errors import WsolbenchError
from wsolbench.protocol import EvalBatch, GTMask, Protocol


def evaluate(protocols: Sequence[Protocol], records: Sequence[Record], maps: Sequence[np.ndarray],
             logits: np.ndarray | None = None, chunk: int = 256,
             desc: str = "evaluate", workers: int = 1, progress: bool = True) -> None:
    """Feed `(records, maps, logits)` to every protocol in chunks (protocols accumulate).

    With `workers > 1` the images are split into shards evaluated in separate processes
    and merged through `Protocol.merge`, which gives exactly the single-process counters.
    `progress`: a progress bar on a terminal (never in a log file; shards draw none, so two
    bars never interleave).
    """
    if len(records) != len(maps):
        raise WsolbenchError(f"{len(records)} records but {len(maps)} maps")
    if workers > 1 and len(records) >= 2 * chunk:
        _evaluate_sharded(protocols, records, maps, logits, chunk, workers)
        return
    want_masks = any(p.needs_masks for p in protocols)
    for start in tqdm(range(0, len(records), chunk), desc=desc, leave=False, dynamic_ncols=True,
                      disable=None if progress else True):  # None: only on a terminal
        batch = make_batch(records[start:start + chunk], maps[start:start + chunk],
                           None if logits is None else logits[start:start + chunk],
                           with_masks=want_masks)
        for protocol in protocols:
            protocol.update(batch)


def make_batch(records: Sequence[Record], maps: Sequence[np.ndarray],
               logits: np.ndarray | None = None, with_masks: bool = False) -> EvalBatch:
    """The `EvalBatch` protocols read for these records and their maps."""
    return EvalBatch(
        image_ids=[r.image_id for r in records], maps=list(maps),
        labels=np.asarray([r.label for r in records], dtype=np.int64),
        boxes=[r.boxes for r in records], sizes=np.asarray([r.size for r in records]),
        logits=logits, masks=[read_gt_mask(r) for r in records] if with_masks else None,
        official_boxes=[r.gt_boxes("official") for r in records]
        if any(r.official_boxes is not None for r in records) else None)


def _evaluate_shard(args) -> list[Protocol]:
    protocols, records, maps, logits, chunk = args
    for protocol in protocols:
        protocol.reset()
    evaluate(protocols, records, maps, logits, chunk, progress=False)
    return protocols


def _evaluate_sharded(protocols, records, maps, logits, chunk, workers) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    bounds = np.linspace(0, len(records), workers + 1).astype(int)
    jobs = [(list(protocols), records[a:b], maps[a:b], None if logits is None else logits[a:b],
             chunk) for a, b in zip(bounds[:-1], bounds[1:])]
    # spawn, not fork: the parent may hold torch/OpenMP threads that a fork would copy.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for shard in pool.map(_evaluate_shard, jobs):
            for protocol, part in zip(protocols, shard):
                protocol.merge(part)


def read_gt_mask(record: Record) -> GTMask | None:
    """The record's instance masks and ignore region as wsolevaluation reads them (OpenCV
    grayscale, float32); None when the record has no mask. Errors name image and file."""
    if not record.mask_paths:
        return None

    def load(path: Path) -> np.ndarray:
        if not Path(path).is_file():
            raise WsolbenchError(f"image {record.image_id!r}: mask file not found: {path}")
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise WsolbenchError(f"image {record.image_id!r}: {path} is not a readable image")
        return mask.astype(np.float32)

    return GTMask(instances=tuple(load(p) for p in record.mask_paths),
                  ignore=load(record.ignore_path) if record.ignore_path else None)


def read_mask(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L")) > 0
    except Exception as exc:
        raise WsolbenchError(f"{path}: cannot read mask ({exc})") from None
