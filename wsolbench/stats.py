"""Statistics over seeds and images: mean ± std, a 95 % t-interval, paired bootstrap,
hierarchical (seeds then images) bootstrap and Welch's test over seeds.

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


def hierarchical_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 10_000,
                           seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Bootstrap of `mean(a) - mean(b)` over seeds, then images (values in percent).

    `a` `[S_a, N]` and `b` `[S_b, N]`: each seed's per-image correctness of two methods on
    the same N test images. Each resample draws every method's seeds with replacement (the
    runs are independent), then the images with replacement, shared by both (the images are
    paired), so the interval carries seed-to-seed variance as well as image sampling: the
    image-only bootstrap of seed-averaged scores ignores the first and overstates certainty
    when seeds disagree. All resamples of a block at once: the seed-weighted per-image means
    become one matrix product with the image counts.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"need the same images for both methods, got {a.shape} and {b.shape}")
    n = a.shape[1]
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, 2_000_000 // n))
    parts = []
    for start in range(0, resamples, block):
        r = min(block, resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=r)  # [r, N] image draws
        weights = [rng.multinomial(len(x), np.full(len(x), 1.0 / len(x)), size=r) / len(x)
                   for x in (a, b)]  # [r, S] seed draws, as weights summing to 1
        mean_a = ((counts @ a.T) * weights[0]).sum(axis=1) / n
        mean_b = ((counts @ b.T) * weights[1]).sum(axis=1) / n
        parts.append(mean_a - mean_b)
    boot = np.concatenate(parts) * 100.0
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2.0 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    return {"difference": float((a.mean() - b.mean()) * 100.0), "ci_low": float(low),
            "ci_high": float(high), "p_value": max(p, 1.0 / resamples)}


def seed_welch_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test on the seed-level scores of two methods (each
    run's number is one observation); NaN with fewer than two seeds on either side."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread: the t statistic is undefined
        return 1.0 if a[0] == b[0] else 0.0
    return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
