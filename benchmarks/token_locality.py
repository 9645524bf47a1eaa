"""Where a pretrained ViT's patch tokens keep class evidence, block by block (docs/benchmark.md).

A frozen-backbone probe. The ViT (pretrained weights, not fine-tuned) runs over a trained
run's training and test images; after each block its patch tokens (layer-normed without
affine, so every block is read alike) feed a fresh TS-CAM head — a 3x3 convolution to class
maps, global average pooling to logits — trained on the training split with Adam (lr 1e-3,
batch 64, seed 0). The head's map of the true class on the test split is then scored as
benchmarks/map_factors.py scores a factor: MaxBoxAccV2, the share of its positive mass on
tokens inside a ground-truth box (`mass_in_box_%`, against `box_tokens_%`, what a map blind
to the image scores) and the share of images whose peak token is in a box. A CNN's class
evidence sits on the object; tokens that have mixed globally carry it everywhere.

    python benchmarks/token_locality.py RUN_DIR --weights synth-vit|FILE.safetensors \
        [--data-root RESULTS/data] [--epochs 60] [--markdown OUT.md]

RUN_DIR is a TS-CAM or TRT run folder (its `config.json` names the dataset, the ViT and the
input transform), or a CAM run's, whose CNN (`--weights synth-smallcnn`) gives one row: its
final feature map, the grid CAM weighs. Features of every block are held in memory: meant
for the synthetic data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from wsolbench.boxes import grid_cells_in_boxes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
from map_factors import maxboxacc_v2, placement, run_curve_step
from run_tables import print_table


def load_frozen_backbone(resolved: dict, weights: str, num_classes: int) -> nn.Module:
    """The run's method (TS-CAM, TRT or CAM) built from its config with `weights` (a shipped
    name or a `wsolbench pretrain` file, checked against its manifest), nothing fine-tuned."""
    from safetensors.torch import load_file

    from wsolbench.registry import get_plugin
    from wsolbench.weights import read_manifest, shipped_weights

    path = Path(weights) if Path(weights).is_file() else shipped_weights(weights)
    read_manifest(path)
    method_cls = get_plugin("methods", resolved["method"])
    known = {f.name for f in dataclasses.fields(method_cls.config_class)}
    config = method_cls.config_class(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in resolved["config"].items()
        if k in known and k != "init_weights"})
    method = method_cls(config, num_classes)
    method.load_pretrained(load_file(str(path)))
    return method.eval()


def block_tokens(method: nn.Module, records) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Patch tokens after every block as grids `[N, C, h, w]` (layer-normed), and labels.
    A CAM run's CNN gives one grid, its final feature map (the map CAM weighs)."""
    from wsolbench.data.torch_dataset import RecordDataset, build_transform

    cfg = method.config
    loader = DataLoader(RecordDataset(records, build_transform(
        False, cfg.image_size, cfg.resize_size, cfg.mean, cfg.std)), batch_size=128)
    if not hasattr(method, "vit"):
        with torch.no_grad():
            pairs = [(method.features(images), labels) for images, labels, _ in loader]
        grid = torch.cat([features for features, _ in pairs])
        grid = F.layer_norm(grid.permute(0, 2, 3, 1), grid.shape[1:2]).permute(0, 3, 1, 2)
        return [grid.contiguous()], torch.cat([labels for _, labels in pairs])
    vit = method.vit
    outputs: dict[int, list[torch.Tensor]] = {}
    hooks = [block.register_forward_hook(
        lambda _m, _i, out, k=k: outputs.setdefault(k, []).append(out[:, vit.num_prefix_tokens:]))
        for k, block in enumerate(vit.blocks)]
    labels = []
    try:
        with torch.no_grad():
            for images, batch_labels, _ in loader:
                vit.forward_features(images)
                labels.append(batch_labels)
    finally:
        for hook in hooks:
            hook.remove()
    h, w = vit.patch_embed.dynamic_feat_size((cfg.image_size, cfg.image_size))
    grids = []
    for k in sorted(outputs):
        tokens = torch.cat(outputs[k])
        tokens = F.layer_norm(tokens, tokens.shape[-1:])
        grids.append(tokens.reshape(len(tokens), h, w, -1).permute(0, 3, 1, 2).contiguous())
    return grids, torch.cat(labels)


def probe(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
          test_labels: torch.Tensor, num_classes: int, epochs: int = 60, seed: int = 0
          ) -> tuple[float, np.ndarray]:
    """Train a TS-CAM head (3x3 conv, GAP) on frozen grids; return its test accuracy (%) and
    its maps of the true classes `[N, h, w]`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Conv2d(train.shape[1], num_classes, 3, padding=1)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            loss = F.cross_entropy(head(train[batch]).mean(dim=(2, 3)), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        maps = head(test)
    accuracy = 100.0 * (maps.mean(dim=(2, 3)).argmax(1) == test_labels).float().mean().item()
    return accuracy, maps[torch.arange(len(test_labels)), test_labels].double().numpy()


def main() -> None:
    from wsolbench.errors import WsolbenchError

    try:
        _main()
    except WsolbenchError as err:  # bad weights or run folder: one line, exit 2
        print(f"token_locality.py: {err}", file=sys.stderr)
        sys.exit(2)


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--weights", required=True,
                        help="shipped weights name (synth-vit) or a .safetensors file")
    parser.add_argument("--data-root", type=Path, default=Path("results/data"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    from wsolbench.runner import run_dataset

    resolved = json.loads((args.run_dir / "config.json").read_text())
    data = run_dataset(resolved, args.data_root)
    method = load_frozen_backbone(resolved, args.weights, data.num_classes)
    train, train_labels = block_tokens(method, data.train)
    test, test_labels = block_tokens(method, data.test)
    inside = grid_cells_in_boxes(data.test, tuple(test[0].shape[-2:]))
    step = run_curve_step(args.run_dir)  # the run's own MaxBoxAccV2 threshold step
    rows = []
    for block, (train_grid, test_grid) in enumerate(zip(train, test)):
        accuracy, maps = probe(train_grid, train_labels, test_grid, test_labels,
                               data.num_classes, args.epochs)
        rows.append({"weights": Path(args.weights).stem, "dataset": resolved["dataset"],
                     "block": block, "probe_acc_%": accuracy,
                     **maxboxacc_v2(data.test, maps, step), **placement(maps, inside)})
    print_table(rows, ["block"], args.markdown)


if __name__ == "__main__":
    main()
