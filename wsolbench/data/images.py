"""Decoding images as the reference code means them, and checking whole splits up front.

The official repositories and wsolevaluation open images with PIL and `convert("RGB")`. For
8-bit images that is exact. PIL's conversion of 16-bit images (`I;16`, CUB-style PNGs saved
by some tools) clips every value above 255, which turns a normal photo white; `load_rgb`
scales 16-bit data to 8 bits first (`v >> 8`) and says so once per split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from wsolbench.data.records import Record
from wsolbench.errors import WsolbenchError

logger = logging.getLogger(__name__)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
MAX_LISTED = 5  # problems shown per split; the rest are counted


def load_rgb(path: Path) -> Image.Image:
    """The image as 8-bit RGB; 16-bit data scaled by 1/256, not clipped."""
    with Image.open(path) as img:
        if img.mode in SIXTEEN_BIT_MODES:
            data = np.asarray(img, dtype=np.uint32)
            return Image.fromarray((data >> 8).clip(0, 255).astype(np.uint8)).convert("RGB")
        return img.convert("RGB")


def _problems(record: Record, decode: bool) -> list[str]:
    """Everything wrong with one record's files (empty when it is usable)."""
    where = f"{record.image_id!r} ({record.path})"
    try:
        with Image.open(record.path) as img:
            size, mode = img.size, img.mode
            if decode:
                img.load()  # a full decode: truncated files fail here, not after training
    except FileNotFoundError:
        return [f"{where}: image file not found"]
    except Exception as exc:  # PIL raises many types for damaged files
        return [f"{where}: cannot decode ({type(exc).__name__}: {exc})"]
    out = []
    # (0, 0): a size the reader did not read (ILSVRC train images are not opened up front).
    if all(record.size) and tuple(size) != tuple(record.size):
        out.append(f"{where}: image is {size[0]}x{size[1]}, the annotations say "
                   f"{record.size[0]}x{record.size[1]}")
    if mode in SIXTEEN_BIT_MODES:
        out.append(f"16-bit:{where}")
    w, h = record.size
    for x0, y0, x1, y1 in np.asarray(record.boxes).reshape(-1, 4):
        if not (0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1):
            out.append(f"{where}: box ({x0}, {y0}, {x1}, {y1}) outside the {w}x{h} image")
    for mask in (*record.mask_paths, *([record.ignore_path] if record.ignore_path else [])):
        if not Path(mask).is_file():
            out.append(f"{where}: mask file not found: {mask}")
    return out


def check_images(records: Sequence[Record], split: str, decode: bool = True,
                 workers: int = 4) -> None:
    """Open (and with `decode`, fully decode) every image of a split, compare its size with
    the annotations, check boxes and mask files; report every problem at once (the first
    few, and how many), as one error. 16-bit images are accepted with one warning."""
    with ThreadPoolExecutor(workers) as pool:  # PIL decodes without the GIL
        found = [p for problems in pool.map(lambda r: _problems(r, decode), records)
                 for p in problems]
    sixteen = [p.removeprefix("16-bit:") for p in found if p.startswith("16-bit:")]
    errors = [p for p in found if not p.startswith("16-bit:")]
    if sixteen:
        logger.warning("split %s: %d 16-bit image(s), e.g. %s: scaled to 8 bits (v >> 8) as "
                       "they are read", split, len(sixteen), sixteen[0])
    if errors:
        shown = "; ".join(errors[:MAX_LISTED])
        more = f" (and {len(errors) - MAX_LISTED} more)" if len(errors) > MAX_LISTED else ""
        raise WsolbenchError(f"split {split!r}: {len(errors)} problem(s) in {len(records)} "
                             f"images: {shown}{more}")
