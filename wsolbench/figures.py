"""Figures: a qualitative grid of test images with heatmap, GT box and predicted box."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from wsolbench.boxes import contour_boxes, integer_thresholds  # noqa: E402
from wsolbench.data.records import Record  # noqa: E402
from wsolbench.fileio import atomic_path  # noqa: E402
from wsolbench.postprocess import quantize, scoremap_official  # noqa: E402

FRAME = 224


def predicted_box(raw: np.ndarray, cam_threshold: float) -> np.ndarray:
    """The paper-protocol box `(x0, y0, x1, y1)` in the 224 frame (largest contour)."""
    u8 = quantize(scoremap_official(raw, FRAME))
    t = int(integer_thresholds(np.array([cam_threshold]), int(u8.max()))[0])
    boxes = contour_boxes(u8, t, largest_only=True, clip=False)
    return boxes[0] if len(boxes) else np.array([0, 0, 1, 1])


def localization_grid(records: Sequence[Record], maps: Sequence[np.ndarray], path: Path,
                      cam_threshold: float, title: str, columns: int = 4) -> Path:
    """A PNG grid: each image with its map overlaid, GT boxes (green), prediction (red)."""
    n = len(records)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows + 0.4))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, record, raw in zip(np.atleast_1d(axes).ravel(), records, maps):
        with Image.open(record.path) as img:
            image = np.asarray(img.convert("RGB").resize((FRAME, FRAME)))
        score = np.nan_to_num(scoremap_official(raw, FRAME))
        ax.imshow(image)
        ax.imshow(score, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        w, h = record.size
        for x0, y0, x1, y1 in record.boxes:
            sx, sy = FRAME / w, FRAME / h
            ax.add_patch(Rectangle((x0 * sx, y0 * sy), (x1 - x0 + 1) * sx, (y1 - y0 + 1) * sy,
                                   fill=False, edgecolor="lime", linewidth=1.5))
        px0, py0, px1, py1 = predicted_box(raw, cam_threshold)
        ax.add_patch(Rectangle((px0, py0), px1 - px0, py1 - py0, fill=False, edgecolor="red",
                               linewidth=1.5))
        ax.set_title(Path(record.image_id).name[:28], fontsize=6)
    fig.suptitle(f"{title}  (green: GT, red: prediction at tau={cam_threshold})", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
