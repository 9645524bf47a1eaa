"""Figures: qualitative grids (maps, GT and predicted boxes), BoxAcc-vs-threshold curves,
error categories. Files are written atomically; report figures as PNG and PDF."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from PIL import Image

from wsolbench.data.records import Record
from wsolbench.fileio import atomic_path
from wsolbench.per_image import ERROR_CATEGORIES
from wsolbench.protocol import BoxDrawing


def _image(record: Record, frame: int) -> np.ndarray:
    with Image.open(record.path) as img:
        return np.asarray(img.convert("RGB").resize((frame, frame)))


def _rectangle(ax, box: np.ndarray, color: str) -> None:
    """An inclusive `(x0, y0, x1, y1)` box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0, y0), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor=color,
                           linewidth=1.5))


def _overlay(ax, image: np.ndarray, drawing: BoxDrawing, index: int,
             with_map: bool = True) -> None:
    """Image, the protocol's map (when asked), its GT boxes in green and its predicted box in
    red, all in the protocol's frame (`Protocol.predicted_boxes`)."""
    ax.imshow(image)
    for gt in drawing.gt[index]:
        _rectangle(ax, gt, "lime")
    if with_map:
        ax.imshow(drawing.scoremaps[index], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        _rectangle(ax, drawing.predicted[index], "red")


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


def localization_grid(records: Sequence[Record], drawing: BoxDrawing, path: Path, title: str,
                      columns: int = 4) -> Path:
    """A PNG grid: each image with its map overlaid, GT boxes (green), prediction (red)."""
    n = len(records)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows + 0.4))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for index, (ax, record) in enumerate(zip(np.atleast_1d(axes).ravel(), records)):
        _overlay(ax, _image(record, drawing.frame), drawing, index)
        ax.set_title(Path(record.image_id).name[:28], fontsize=6)
    fig.suptitle(f"{title}  (green: GT, red: prediction)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def method_grid(records: Sequence[Record], drawings: dict[str, BoxDrawing], stem: Path,
                title: str) -> list[Path]:
    """The paper's Figs 3–4 layout: one row per image, the image with its GT box, then each
    method's map with its predicted box (same images for every method)."""
    names = list(drawings)
    fig, axes = plt.subplots(len(records), 1 + len(names),
                             figsize=(1.9 * (1 + len(names)), 1.9 * len(records) + 0.5),
                             squeeze=False)
    for row, record in enumerate(records):
        first = drawings[names[0]]
        _overlay(axes[row, 0], _image(record, first.frame), first, row, with_map=False)
        for col, name in enumerate(names, start=1):
            drawing = drawings[name]
            _overlay(axes[row, col], _image(record, drawing.frame), drawing, row)
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
    import seaborn as sns  # here, not at module level: `wsolbench run` draws without it

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
    import seaborn as sns

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
