"""The CAM-threshold grid every protocol shares (no numba: cheap to import for PxAP).

`threshold_grid(step)` is wsolevaluation's `np.arange(0, 1, cam_curve_interval)` in float64;
`integer_thresholds` turns taus into the uint8 cut `u8 > int(tau * max(u8))` uses.
"""

from __future__ import annotations

import numpy as np

from wsolbench.errors import WsolbenchError


def threshold_grid(step: float) -> np.ndarray:
    """CAM thresholds `np.arange(0, 1, step)` in float64, exactly as wsolevaluation builds them."""
    if not 0 < step < 1:
        raise WsolbenchError(f"cam_curve_interval (the CAM-threshold step) must lie in (0, 1), "
                             f"got {step}")
    return np.arange(0, 1, step, dtype=np.float64)


def integer_thresholds(taus: np.ndarray, max_value: int) -> np.ndarray:
    """`int(tau * max(u8))` per tau (float64 product, truncated): the value `u8 > t` uses."""
    return np.trunc(taus * float(max_value)).astype(np.int64)
