"""The protocol interface, shaped like torchmetrics' `Metric` (docs/design.md §4).

`update(batch)` adds into fixed-size integer counters, `compute()` is pure, `reset()` clears,
`merge(other)` adds the counters of a shard computed elsewhere (another process or rank), so
one batch, many batches and merged shards give identical results.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from wsolbench.errors import WsolbenchError
from wsolbench.postprocess import validate_map


@dataclass(frozen=True)
class GTMask:
    """One image's pixel ground truth, as wsolevaluation's `get_mask` reads it.

    Attributes:
        instances: float32 grayscale `[H, W]` masks, one per annotated instance (or one for
            all), each at its own resolution; foreground = value > 0.5 after resizing.
        ignore: float32 `[H, W]` ignore region (value > 0.5), or None: pixels PxAP skips
            (OpenImages marks the boxes of instances without a mask so).
    """

    instances: tuple[np.ndarray, ...]
    ignore: np.ndarray | None = None

    def at(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """`(foreground, ignore)` bool `[size, size]`. Each mask is resized (nearest) before
        the union, as wsolevaluation does (masks of one image may differ in size); the
        ignore region never covers foreground."""
        import cv2

        def resized(mask: np.ndarray) -> np.ndarray:
            return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 0.5

        foreground = np.logical_or.reduce([resized(m) for m in self.instances])
        if self.ignore is None:
            return foreground, np.zeros_like(foreground)
        return foreground, resized(self.ignore) & ~foreground


@dataclass
class EvalBatch:
    """What protocols consume, in numpy (one entry per image).

    Attributes:
        image_ids: wsolevaluation-style ids.
        maps: raw maps of the GT class, each float `[h, w]` (any resolution).
        labels: int `[B]` GT classes.
        boxes: per image, int `[n, 4]` inclusive GT boxes in original pixels.
        sizes: int `[B, 2]` original `(W, H)`.
        logits: float `[B, K]`, or None when only maps are evaluated (`evaluate-maps`).
        masks: per image, its `GTMask` (None where it has none), or None for the batch.
        official_boxes: per image, int `[n, 4]` boxes as the official TS-CAM/TRT dataset
            code derives them (`Record.official_boxes`), or None when they equal `boxes`.
    """

    image_ids: list[str]
    maps: list[np.ndarray]
    labels: np.ndarray
    boxes: list[np.ndarray]
    sizes: np.ndarray
    logits: np.ndarray | None = None
    masks: list[GTMask | None] | None = None
    official_boxes: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        lengths = {"maps": len(self.maps), "labels": len(self.labels), "boxes": len(self.boxes),
                   "sizes": len(self.sizes)}
        if self.logits is not None:
            lengths["logits"] = len(self.logits)
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise WsolbenchError(f"evaluation batch of {n} ids has mismatched lengths: {bad}")
        for image_id, raw in zip(self.image_ids, self.maps):
            validate_map(np.asarray(raw), f"map of {image_id!r}")

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass(frozen=True)
class BoxDrawing:
    """A protocol's boxes for a batch, in its own square frame of `frame` pixels.

    Attributes:
        frame: side of the frame the boxes are in (the protocol's evaluation size).
        predicted: int `[B, 4]` inclusive `(x0, y0, x1, y1)`, the box scored per image.
        gt: per image, int `[n, 4]` GT boxes as the protocol matches them.
        scoremaps: float `[B, frame, frame]` in [0, 1]: the map the boxes were cut from.
    """

    frame: int
    predicted: np.ndarray
    gt: list[np.ndarray]
    scoremaps: np.ndarray


class Protocol(ABC):
    """Base of protocol plugins: integer counters in `self.state`, `self.n` images seen."""

    name: ClassVar[str]
    needs_logits: ClassVar[bool] = False
    needs_masks: ClassVar[bool] = False

    def __init__(self) -> None:
        self.reset()

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The resolved parameters; written into every results JSON."""

    @abstractmethod
    def _empty_state(self) -> dict[str, np.ndarray]:
        """Zeroed counters of fixed shape."""

    @abstractmethod
    def _update(self, batch: EvalBatch) -> None:
        """Add the batch into `self.state` (in place)."""

    @abstractmethod
    def _compute(self) -> dict[str, Any]:
        """Results from the counters (never mutates them)."""

    def reset(self) -> None:
        self.state = self._empty_state()
        self.n = 0

    def update(self, batch: EvalBatch) -> None:
        if self.needs_logits and batch.logits is None:
            raise WsolbenchError(f"protocol {self.name!r} needs class scores (logits)")
        if self.needs_masks and (batch.masks is None or any(m is None for m in batch.masks)):
            raise WsolbenchError(f"protocol {self.name!r} needs GT masks for every image")
        self._update(batch)
        self.n += len(batch)

    def compute(self) -> dict[str, Any]:
        if self.n == 0:
            raise WsolbenchError(f"protocol {self.name!r}: no image was evaluated (empty split)")
        return {"protocol": self.name, "n_images": self.n, "params": self.params(),
                **self._compute()}

    # Optional public seams (docs/plugins.md §"Protocol"): core code (the `fair` transfer,
    # per-image outcomes, figures) calls only these, never a protocol's own attributes, so
    # any protocol plugin can take a built-in's place. A protocol without the concept keeps
    # the default (None: the caller leaves it out).

    def transfer(self, selected_on: Self) -> dict[str, Any] | None:
        """This split's results at the operating point (e.g. CAM threshold) that maximizes
        the protocol on `selected_on`'s counters (another split, same protocol): the
        held-out `fair` transfer. None: the protocol has no operating point to choose."""
        return None

    def image_outcomes(self, batch: EvalBatch, selected_on: Self | None = None
                       ) -> dict[str, np.ndarray] | None:
        """Per-image columns (arrays of length `len(batch)`) at the protocol's own operating
        point, or at the one chosen on `selected_on`'s counters. None: not per image."""
        return None

    def predicted_boxes(self, batch: EvalBatch) -> BoxDrawing | None:
        """The boxes the protocol scores, for figures and error analysis. None: it scores
        no boxes."""
        return None

    def numbers(self, result: dict[str, Any]) -> dict[str, float]:
        """The numbers of `result` (this protocol's `compute()`) that `runs.csv` and
        `statistics.csv` carry when the protocol is added to a run's suite, by metric name.
        Default: every top-level number but the image count; override to name fewer."""
        return {key: float(value) for key, value in result.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)
                and key != "n_images"}

    def merge(self, other: Self) -> Self:
        """Add another shard's counters into this one (same protocol and parameters)."""
        if type(other) is not type(self) or other.params() != self.params():
            raise WsolbenchError(f"cannot merge {other.name!r} {other.params()} into "
                                 f"{self.name!r} {self.params()}")
        for key, value in other.state.items():
            self.state[key] = self.state[key] + value
        self.n += other.n
        return self


def percent(count: np.ndarray | int, n: int) -> np.ndarray | float:
    """Counts to percent, as wsolevaluation reports (`count * 100 / n`)."""
    return np.asarray(count, dtype=np.float64) * 100.0 / n


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """bool `[B]`: the label is among the k highest scores (ties broken by argsort order)."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)
