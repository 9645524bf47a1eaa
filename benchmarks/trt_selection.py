"""How many patch tokens TRT's token selection keeps, for trained runs (docs/benchmark.md).

TRT keeps the highest-attention tokens whose cumulative attention mass stays below its
threshold (0.6, the paper's CUB value; methods/trt.py step 2). How many that is, and how
many of them lie on the object, depends on the trained attention and on the token grid: a
property of the method on given data, to be reported, not tuned (docs/benchmark.md, rows
16, 18 and 21).

    python benchmarks/trt_selection.py RESULTS/runs/synth-cub/trt/*/*/checkpoint.pt \
        [--data-root RESULTS/data] [--markdown OUT.md]

For each checkpoint: the test split of the dataset its run was trained on (synth: rebuilt
from the run's `config.json`; CUB/ILSVRC: read from `--data-root`), the grid size n, the kept count per image (mean, median, 10th and 90th
percentiles, kept share of the grid, images with an empty selection), and where the kept
tokens lie: `on_object_%` is the mean share of an image's kept tokens whose centre falls in
a ground-truth box, `object_tokens_%` the mean share of all grid tokens that do (what a
selection blind to the image would score).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsolbench.boxes import grid_cells_in_boxes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
from run_tables import checkpoint_parser, print_table


def selection_stats(checkpoint: Path, resolved: dict, data_root: Path
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`(keep, on_object)`: bool `[N, n]` kept tokens of every test image, and bool
    `[N, n]` tokens whose centre lies in a GT box."""
    from wsolbench.data.torch_dataset import RecordDataset, build_transform
    from wsolbench.runner import load_trained, run_test_split

    records, num_classes = run_test_split(resolved, data_root)
    method, _ = load_trained(checkpoint, num_classes)
    if not hasattr(method, "token_selection"):
        raise SystemExit(f"{checkpoint}: a {type(method).__name__} checkpoint, not TRT")
    cfg = method.config
    loader = DataLoader(RecordDataset(records, build_transform(
        False, cfg.image_size, cfg.resize_size, cfg.mean, cfg.std)), batch_size=128)
    method.eval()
    keep = torch.cat([method.token_selection(images) for images, _, _ in loader]).numpy()
    grid = method.vit.patch_embed.dynamic_feat_size((cfg.image_size, cfg.image_size))
    return keep, grid_cells_in_boxes(records, tuple(grid))


def main() -> None:
    parser = checkpoint_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    rows = []
    for checkpoint in args.checkpoints:
        resolved = json.loads((checkpoint.parent / "config.json").read_text())
        keep, on_object = selection_stats(checkpoint, resolved, args.data_root)
        n, kept = keep.shape[1], keep.sum(axis=1)
        kept_on_object = (keep & on_object).sum(axis=1) / np.maximum(kept, 1)
        rows.append({"dataset": resolved["dataset"], "model": resolved["config"]["model"],
                     "seed": resolved["seed"], "thresh": resolved["config"]["thresh"],
                     "tokens": n, "kept_mean": kept.mean(), "kept_median": np.median(kept),
                     "kept_p10": np.percentile(kept, 10), "kept_p90": np.percentile(kept, 90),
                     "kept_share_%": 100 * kept.mean() / n,
                     "empty_%": 100 * (kept == 0).mean(),
                     "on_object_%": 100 * kept_on_object[kept > 0].mean(),
                     "object_tokens_%": 100 * on_object.mean(), "images": len(kept)})
    print_table(rows, ["dataset", "model", "seed"], args.markdown)


if __name__ == "__main__":
    main()
