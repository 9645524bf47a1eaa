"""Figures: qualitative grids (maps, GT and predicted boxes), BoxAcc-vs-threshold curves,
error categories. Files are written atomically; report figures as PNG and PDF."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from wsolbench.boxes import box_at_threshold  # noqa: E402
from wsolbench.data.records import Record  # noqa: E402
from wsolbench.fileio import atomic_path  # noqa: E402
from wsolbench.per_image import ERROR_CATEGORIES  # noqa: E402
from wsolbench.postprocess import quantize, scoremap_official  # noqa: E402

FRAME = 224


def predicted_box(raw: np.ndarray, cam_threshold: float) -> np.ndarray:
    """The paper-protocol box `(x0, y0, x1, y1)` in the 224 frame (largest contour)."""
    return box_at_threshold(quantize(scoremap_official(raw, FRAME)), cam_threshold)


def _image(record: Record) -> np.ndarray:
    with Image.open(record.path) as img:
        return np.asarray(img.convert("RGB").resize((FRAME, FRAME)))


def _draw_gt(ax, record: Record) -> None:
    w, h = record.size
    sx, sy = FRAME / w, FRAME / h
    for x0, y0, x1, y1 in record.boxes:
        ax.add_patch(Rectangle((x0 * sx, y0 * sy), (x1 - x0 + 1) * sx, (y1 - y0 + 1) * sy,
                               fill=False, edgecolor="lime", linewidth=1.5))


def _overlay(ax, image: np.ndarray, record: Record, raw: np.ndarray | None,
             cam_threshold: float | None) -> None:
    """Image, its map (when given), GT boxes in green, the predicted box in red."""
    ax.imshow(image)
    if raw is not None:
        ax.imshow(np.nan_to_num(scoremap_official(raw, FRAME)), cmap="jet", alpha=0.45,
                  vmin=0, vmax=1)
    _draw_gt(ax, record)
    if raw is not None and cam_threshold is not None:
        px0, py0, px1, py1 = predicted_box(raw, cam_threshold)
        ax.add_patch(Rectangle((px0, py0), px1 - px0, py1 - py0, fill=False, edgecolor="red",
                               linewidth=1.5))


def save_figure(fig, stem: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write `stem.<format>` for each format atomically; close the figure."""
    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def localization_grid(records: Sequence[Record], maps: Sequence[np.ndarray], path: Path,
                      cam_threshold: float, title: str, columns: int = 4) -> Path:
    """A PNG grid: each image with its map overlaid, GT boxes (green), prediction (red)."""
    n = len(records)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows + 0.4))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, record, raw in zip(np.atleast_1d(axes).ravel(), records, maps):
        _overlay(ax, _image(record), record, raw, cam_threshold)
        ax.set_title(Path(record.image_id).name[:28], fontsize=6)
    fig.suptitle(f"{title}  (green: GT, red: prediction at tau={cam_threshold})", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def method_grid(records: Sequence[Record], maps: dict[str, np.ndarray],
                thresholds: dict[str, float], stem: Path, title: str) -> list[Path]:
    """The paper's Figs 3–4 layout: one row per image, the image with its GT box, then each
    method's map with its predicted box (same images for every method)."""
    names = list(maps)
    fig, axes = plt.subplots(len(records), 1 + len(names),
                             figsize=(1.9 * (1 + len(names)), 1.9 * len(records) + 0.5),
                             squeeze=False)
    for row, record in enumerate(records):
        image = _image(record)
        _overlay(axes[row, 0], image, record, None, None)
        for col, name in enumerate(names, start=1):
            _overlay(axes[row, col], image, record, maps[name][row], thresholds[name])
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    for col, name in enumerate(["image + GT", *names]):
        axes[0, col].set_title(name, fontsize=9)
    fig.suptitle(f"{title}\n(green: GT boxes; red: box at each method's paper-protocol tau)",
                 fontsize=9)
    return save_figure(fig, stem)


def boxacc_curves(curves: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """BoxAcc vs CAM threshold, one panel per IoU threshold, one line per method (mean over
    seeds, band ± 1 std). `curves`: columns method, seed, iou, threshold, boxacc."""
    # Aggregated here in one groupby: seaborn's per-x error bars cost minutes on ~1000 taus.
    stats = (curves.groupby(["iou", "method", "threshold"], sort=False)["boxacc"]
             .agg(["mean", "std"]).fillna({"std": 0.0}).reset_index())
    ious = sorted(stats["iou"].unique())
    methods = list(dict.fromkeys(curves["method"]))
    colors = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    fig, axes = plt.subplots(1, len(ious), figsize=(3.2 * len(ious), 2.9), sharey=True,
                             squeeze=False)
    for ax, iou in zip(axes[0], ious):
        for method in methods:
            line = stats[(stats["iou"] == iou) & (stats["method"] == method)]
            x, mean, std = line["threshold"], line["mean"], line["std"]
            ax.plot(x, mean, color=colors[method], label=method, linewidth=1.2)
            ax.fill_between(x, mean - std, mean + std, color=colors[method], alpha=0.2,
                            linewidth=0)
        ax.set_title(f"IoU >= {iou}", fontsize=9)
        ax.set_xlabel("CAM threshold tau")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("BoxAcc (%)")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def error_chart(errors: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Stacked shares of TS-CAM's error categories per method (`errors`: method, category,
    percent)."""
    table = (errors.pivot(index="method", columns="category", values="percent")
             .reindex(columns=list(ERROR_CATEGORIES)).fillna(0.0))
    fig, ax = plt.subplots(figsize=(6.0, 0.6 * len(table) + 1.4))
    colors = sns.color_palette("Set2", len(ERROR_CATEGORIES))
    left = np.zeros(len(table))
    for color, category in zip(colors, table.columns):
        ax.barh(table.index, table[category], left=left, color=color, label=category)
        left += table[category].to_numpy()
    ax.invert_yaxis()  # methods top to bottom in the order given
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of test images (top-1 box, paper protocol)")
    ax.legend(ncols=3, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.set_title(title, fontsize=9)
    return save_figure(fig, stem)
