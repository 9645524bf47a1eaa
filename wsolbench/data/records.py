"""The records every dataset reader returns, and the box convention they share.

Box convention (the one wsolevaluation's metadata uses, docs/protocols.md §1):
`boxes` is int64 `[n, 4]` of `(x0, y0, x1, y1)` *inclusive* pixel indices in the original
image, `0 <= x0 <= x1 <= W-1`, `0 <= y0 <= y1 <= H-1`, one row per GT instance in file order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsolbench.errors import WsolbenchError


@dataclass(frozen=True)
class Record:
    """One image of a split with its weak label and its (evaluation-only) boxes.

    Attributes:
        image_id: id relative to the image root, extension kept (wsolevaluation's id).
        path: absolute path of the image file.
        label: 0-based class index.
        size: original `(W, H)` in pixels.
        boxes: int64 `[n, 4]` inclusive `(x0, y0, x1, y1)`; may be empty for train images.
        mask_paths: foreground mask PNGs (value > 0.5 = object), one per annotated instance
            (OpenImages) or one for all (CUB segmentations, synth); empty without masks.
        ignore_path: the ignore-region PNG (OpenImages: boxes of instances without a mask),
            whose pixels PxAP leaves out; None when the image has none.
        part_mask_path: discriminative-part mask PNG (synth diagnostics only).
        official_boxes: int64 `[n, 4]` `(x0, y0, x1, y1)` in original pixels as the official
            TS-CAM/TRT dataset code derives them from the annotation file, before its
            scaling (CUB: `int()` of x, y, w and h first, `x1 = x0 + w`, never clipped);
            the `paper` protocol scores against these. None: the same as `boxes` (ILSVRC's
            XML corners are read alike by both codes).
    """

    image_id: str
    path: Path
    label: int
    size: tuple[int, int]
    boxes: np.ndarray = field(repr=False)
    mask_paths: tuple[Path, ...] = ()
    ignore_path: Path | None = None
    part_mask_path: Path | None = None
    official_boxes: np.ndarray | None = field(default=None, repr=False)

    def gt_boxes(self, convention: str) -> np.ndarray:
        """GT boxes under `convention`: "wsolevaluation" (`boxes`) or "official"."""
        if convention == "official" and self.official_boxes is not None:
            return self.official_boxes
        if convention not in ("official", "wsolevaluation"):
            raise WsolbenchError(f"unknown box convention {convention!r}")
        return self.boxes


@dataclass(frozen=True)
class WSOLData:
    """A dataset as the engine sees it: three splits and the class names.

    `train` carries weak labels only; `fullsup` is the small held-out split with boxes used
    for threshold and checkpoint selection (CUBV2 / ImageNetV2 / synth's own); `test` is
    never used for any choice.
    """

    name: str
    class_names: tuple[str, ...]
    train: tuple[Record, ...]
    test: tuple[Record, ...]
    fullsup: tuple[Record, ...] = ()
    root: Path | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> tuple[Record, ...]:
        if name not in ("train", "fullsup", "test"):
            raise WsolbenchError(f"unknown split {name!r}; expected train, fullsup or test")
        return getattr(self, name)


def check_split(records: tuple[Record, ...] | list[Record], name: str, num_classes: int) -> None:
    """Refuse an empty split or a label outside `[0, num_classes)` with a clear message."""
    if not records:
        raise WsolbenchError(f"split {name!r} is empty: nothing to train on or evaluate")
    for r in records:
        if not 0 <= r.label < num_classes:
            raise WsolbenchError(
                f"image {r.image_id!r} in split {name!r} has label {r.label}, "
                f"outside [0, {num_classes})"
            )
