"""Trivial and low-level localization baselines, scored beside every method.

A benchmark on which a centre blob or colour saliency localizes as well as a trained model
measures nothing (docs/synthetic-data.md, baselines). Each baseline turns an image (and,
for the head-only calibration map, its part mask) into a raw map that goes through exactly
the same protocol as a method's map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from wsolbench.data.records import Record
from wsolbench.evaluation import read_mask

BaselineMap = Callable[[Record], np.ndarray]


def _rgb(record: Record) -> np.ndarray:
    with Image.open(record.path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def centre_gaussian(record: Record) -> np.ndarray:
    """A Gaussian of sigma = H/4 at the image centre: the "objects are central" prior."""
    w, h = record.size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.exp(-(((xs - (w - 1) / 2) ** 2) + (ys - (h - 1) / 2) ** 2) / (2 * (h / 4) ** 2))


def saturation(record: Record) -> np.ndarray:
    """HSV saturation: high where an object pops out by colour alone."""
    rgb = _rgb(record)
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-8), 0.0).astype(np.float64)


def local_contrast(record: Record) -> np.ndarray:
    """Colour distance to a blurred surround: a cheap centre-surround saliency."""
    rgb = _rgb(record)
    sigma = max(record.size) / 16
    surround = cv2.GaussianBlur(rgb, (0, 0), sigma)
    diff = np.sqrt(((rgb - surround) ** 2).sum(axis=2))
    return cv2.GaussianBlur(diff, (0, 0), sigma / 2).astype(np.float64)


def head_only(record: Record) -> np.ndarray:
    """The discriminative part's mask: a perfect part detector, i.e. extreme partial activation."""
    mask = read_mask(record.part_mask_path)
    if mask is None:
        raise ValueError(f"{record.image_id}: no part mask")
    return cv2.GaussianBlur(mask.astype(np.float64), (0, 0), 1.0)


BASELINES: dict[str, BaselineMap] = {
    "centre_gaussian": centre_gaussian,
    "saturation": saturation,
    "local_contrast": local_contrast,
    "head_only": head_only,
}


def available(records: Sequence[Record]) -> list[str]:
    """Baselines computable on these records (head_only needs part masks)."""
    names = ["centre_gaussian", "saturation", "local_contrast"]
    if records and all(r.part_mask_path is not None for r in records):
        names.append("head_only")
    return names


def baseline_maps(name: str, records: Sequence[Record]) -> list[np.ndarray]:
    return [BASELINES[name](r) for r in records]
