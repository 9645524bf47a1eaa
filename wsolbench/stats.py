"""Statistics over seeds and images: mean ± std, a 95 % t-interval, paired bootstrap.

Seeds: each (method, dataset, seed) run gives one number; the table reports the mean, the
sample standard deviation (ddof 1) and the Student-t 95 % confidence interval of the mean.

Images: two methods evaluated on the same test images are compared by a paired bootstrap.
Each method's per-image 0/1 correctness is first averaged over its seeds (so the resampling
unit is the image and the seed noise stays inside each image's score), then images are
resampled with replacement and the difference of means is recomputed, all resamples at once
as one matrix product.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats


def seed_summary(values: pd.Series | np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """`mean`, `std` (ddof 1; 0 for one seed), `ci_low`/`ci_high` (NaN for one seed), `n`."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return {"mean": np.nan, "std": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci_low": np.nan, "ci_high": np.nan, "n": 1}
    std = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / np.sqrt(n)
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, float]:
    """Bootstrap of `mean(a) - mean(b)` over paired images (values in percent).

    Returns the observed difference, its percentile interval, and a two-sided p-value: twice
    the smaller share of resampled differences on either side of zero (capped at 1, and
    floored at 1 / resamples: no finer p-value can be resolved).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired samples must be equal-length 1-D arrays, got {a.shape} "
                         f"and {b.shape}")
    n = len(a)
    diff = a - b
    rng = np.random.default_rng(seed)
    # counts[r, i] = how often image i is drawn in resample r; mean diff = counts @ diff / n.
    # Blocks of resamples keep the count matrix small on 50k-image splits.
    block = max(1, min(resamples, 2_000_000 // n))
    boot = np.concatenate([
        rng.multinomial(n, np.full(n, 1.0 / n), size=min(block, resamples - start)) @ diff
        for start in range(0, resamples, block)]) / n * 100.0
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2.0 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    p = max(p, 1.0 / resamples)
    return {"difference": float(diff.mean() * 100.0), "ci_low": float(low),
            "ci_high": float(high), "p_value": p, "n_images": n, "resamples": resamples}
