"""Which factor of a coupled map localizes, for trained TS-CAM and TRT runs (docs/benchmark.md).

TS-CAM's map is the class-token attention A* times the semantic map S_c; TRT's is its
refined attention times its CAM branch's map M_C (docs/methods.md). When the product fails,
this says which factor does: each factor is scored alone with MaxBoxAccV2 (the protocol's
own threshold search; a factor is a map like any other), and where it puts its evidence:

- `mass_in_box_%`: the share of the factor's positive mass on tokens whose centre lies in
  a ground-truth box, against `box_tokens_%`, the share of all tokens that do (what a map
  blind to the image scores);
- `peak_in_box_%`: the share of images whose highest token lies in a box.

    python benchmarks/map_factors.py RESULTS/runs/synth-cub/tscam/*/*/checkpoint.pt \
        [--data-root RESULTS/data] [--curve-step STEP] [--markdown OUT.md]

The test split is the run's own (synth: rebuilt from its `config.json`; CUB/ILSVRC: read
from `--data-root`); maps are computed for the ground-truth class, as GT-known scoring does.
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


def factor_maps(checkpoint: Path, resolved: dict, data_root: Path
                ) -> tuple[tuple, dict[str, np.ndarray]]:
    """`(records, {factor: float64 [N, h, w]})` for the test split of a run."""
    from wsolbench.data.torch_dataset import RecordDataset, build_transform
    from wsolbench.runner import load_trained, run_test_split

    records, num_classes = run_test_split(resolved, data_root)
    method, _ = load_trained(checkpoint, num_classes)
    cfg = method.config
    loader = DataLoader(RecordDataset(records, build_transform(
        False, cfg.image_size, cfg.resize_size, cfg.mean, cfg.std)), batch_size=128)
    method.eval()
    batches: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for images, labels, _ in loader:
            for name, value in method.map_factors(images, labels).items():
                batches.setdefault(name, []).append(value)
    return records, {name: torch.cat(values).double().numpy()
                     for name, values in batches.items()}


def placement(factor: np.ndarray, inside: np.ndarray) -> dict[str, float]:
    """Where a factor `[N, h, w]` puts its evidence; `inside` bool `[N, h*w]` (tokens in a
    GT box). Images without a box or without positive mass count as 0 mass in the box."""
    flat = factor.reshape(len(factor), -1)
    positive = np.maximum(flat, 0)
    total = positive.sum(axis=1)
    mass = np.divide((positive * inside).sum(axis=1), total, out=np.zeros_like(total),
                     where=total > 0)
    peak = inside[np.arange(len(flat)), flat.argmax(axis=1)]
    return {"mass_in_box_%": 100 * mass.mean(), "peak_in_box_%": 100 * peak.mean(),
            "box_tokens_%": 100 * inside.mean()}


def maxboxacc_v2(records, maps: np.ndarray, curve_step: float) -> dict[str, float]:
    """MaxBoxAccV2 (mean and per IoU) of raw maps, as a run scores its test split."""
    from wsolbench.evaluation import evaluate
    from wsolbench.registry import get_plugin

    metric = get_plugin("protocols", "maxboxacc_v2")(cam_curve_interval=curve_step)
    evaluate([metric], list(records), list(maps), progress=False)
    result = metric.compute()
    return {"maxboxacc_v2": result["mean"],
            **{f"iou{iou}": v["max_acc"] for iou, v in result["per_iou"].items()}}


def run_curve_step(run_dir: Path, default: float = 0.001) -> float:
    """The MaxBoxAccV2 threshold step a run scored its test split with (`results.json`)."""
    results = run_dir / "results.json"
    if not results.is_file():
        return default
    metric = json.loads(results.read_text())["metrics"]["test"].get("maxboxacc_v2", {})
    return float(metric.get("params", {}).get("cam_curve_interval", default))


def main() -> None:
    parser = checkpoint_parser(__doc__.splitlines()[0])
    parser.add_argument("--curve-step", type=float, default=None,
                        help="MaxBoxAccV2 threshold step (default: the one the run scored its "
                             "test split with, so the map's row is the run's number)")
    args = parser.parse_args()
    rows = []
    for checkpoint in args.checkpoints:
        resolved = json.loads((checkpoint.parent / "config.json").read_text())
        step = args.curve_step or run_curve_step(checkpoint.parent)
        records, factors = factor_maps(checkpoint, resolved, args.data_root)
        grid = next(iter(factors.values())).shape[1:]
        inside = grid_cells_in_boxes(records, grid)
        for name, maps in factors.items():
            rows.append({"dataset": resolved["dataset"], "method": resolved["method"],
                         "seed": resolved["seed"], "factor": name,
                         **maxboxacc_v2(records, maps, step),
                         **placement(maps, inside), "images": len(maps)})
    print_table(rows, ["dataset", "method", "factor", "seed"], args.markdown)


if __name__ == "__main__":
    main()
