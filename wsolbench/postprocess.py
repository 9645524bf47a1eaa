"""The one place raw maps are resized and normalized (docs/design.md §3).

Two conventions exist and both are reproduced, each named after its source:

- `wsolevaluation`: float64, OpenCV bicubic resize to `size x size`, then NaN -> zeros,
  exactly constant -> zeros, else min-max to [0, 1] (docs/protocols.md §3.2).
  The float64 bicubic resize is what turns a constant 0.7 map into ulp-level ripples that
  normalization blows up into noise; matching upstream needs exactly this order of steps.
- `official` (TS-CAM / TRT `lib/cams_deit.py`): float32, OpenCV bilinear resize, min-max
  without a constant guard, so a constant map becomes NaN (docs/protocols.md §6).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from wsolbench.errors import WsolbenchError
from wsolbench.scratch import per_thread


def validate_map(raw: np.ndarray, what: str = "map") -> None:
    """Loudly refuse what no protocol can evaluate: not 2-D, empty, or not a float array."""
    if raw.ndim != 2 or raw.size == 0:
        raise WsolbenchError(f"{what}: expected a 2-D score map, got shape {raw.shape}")
    if not np.issubdtype(raw.dtype, np.floating):
        raise WsolbenchError(f"{what}: expected a float map, got dtype {raw.dtype}")


def check_scoremap(score: np.ndarray, size: int, what: str = "score map") -> None:
    """A finished score map, as wsolevaluation's `check_scoremap_validity` demands it:
    2-D float, no NaN, values in [0, 1]; and `size x size`, which its boxes silently assume."""
    validate_map(score, what)
    if np.isnan(score).any():
        raise WsolbenchError(f"{what}: contains NaN")
    if score.min() < 0 or score.max() > 1:
        raise WsolbenchError(f"{what}: values must lie in [0, 1] (got {score.min():.4g} to "
                             f"{score.max():.4g}); save normalized score maps")
    if score.shape != (size, size):
        raise WsolbenchError(f"{what}: shape {score.shape}, expected ({size}, {size}): GT boxes "
                             f"are scaled to a {size}x{size} frame")


def scoremap_wsolevaluation(raw: np.ndarray, size: int = 224) -> np.ndarray:
    """float64 `[size, size]` in [0, 1] from a raw map `[h, w]`, as wsolevaluation builds it."""
    resized = cv2.resize(raw.astype(np.float64), (size, size), interpolation=cv2.INTER_CUBIC)
    if np.isnan(resized).any():
        return np.zeros_like(resized)
    lo, hi = resized.min(), resized.max()
    if lo == hi:
        return np.zeros_like(resized)
    resized = resized - lo
    return resized / resized.max()


def scoremap_official(raw: np.ndarray, size: int = 224) -> np.ndarray:
    """float32 `[size, size]` as TS-CAM/TRT compute it; NaN where the map was constant."""
    resized = cv2.resize(raw.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    lo, hi = resized.min(), resized.max()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (resized - lo) / (hi - lo)


def quantize(score: np.ndarray) -> np.ndarray:
    """uint8 `trunc(255 * s)`; NaN -> 0 (what numpy's cast gave the official code on x86)."""
    scaled = score * 255.0  # in the map's own dtype, as upstream multiplies
    scaled[np.isnan(scaled)] = 0.0  # np.nan_to_num costs ~1 ms per 224 x 224 map
    return scaled.astype(np.uint8)


def quantized_scoremap_wsolevaluation(raw: np.ndarray, size: int = 224) -> np.ndarray:
    """`quantize(scoremap_wsolevaluation(raw, size))`, bit for bit, without float temporaries.

    The per-image hot path of MaxBoxAccV2: the resize writes into a per-thread buffer and
    one compiled pass normalizes and quantizes. The result is a fresh uint8 array.
    """
    buffer = per_thread(("scoremap_f64", size), lambda: np.empty((size, size), np.float64))
    resized = cv2.resize(raw.astype(np.float64), (size, size), dst=buffer,
                         interpolation=cv2.INTER_CUBIC)
    out = np.empty((size, size), np.uint8)
    _compiled_normalize_quantize()(resized, out)
    return out


@functools.cache
def _compiled_normalize_quantize():
    """numba compiles on first use: importing numba costs ~0.3 s, which a command that
    never quantizes (PxAP, raw-map checks) should not pay."""
    from numba import njit

    return njit(cache=True, error_model="numpy")(_normalize_quantize)


def _normalize_quantize(resized: np.ndarray, out: np.ndarray) -> None:
    """NaN anywhere or exactly constant -> zeros; else `trunc(255 * (x - lo) / max(x - lo))`
    with numpy's float64 operations in numpy's order (no fused or reordered arithmetic)."""
    flat, dst = resized.ravel(), out.ravel()
    lo, hi, has_nan = np.inf, -np.inf, False
    for x in flat:
        has_nan |= np.isnan(x)
        lo = min(lo, x)
        hi = max(hi, x)
    if has_nan or lo == hi:
        dst[:] = 0
        return
    top = 0.0
    for x in flat:
        top = max(top, x - lo)
    for i in range(flat.shape[0]):
        dst[i] = np.uint8(int((flat[i] - lo) / top * 255.0))
