"""Shared fixtures: tiny datasets written in the exact on-disk formats."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Under pytest-xdist (`-n auto`), each worker takes its share of the cores: torch (and the
# runs and workflow jobs tests start) would otherwise each spawn a thread per core.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

ROOT = Path(__file__).resolve().parents[1]


def default_workflow_config() -> dict:
    """config/config.yaml, the default workflow's config, as Snakemake reads it."""
    import yaml

    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


# A tiny synth-cub: seconds to generate and to train one epoch on.
TINY_SYNTH = {"num_classes": "3", "train_per_class": "12", "test_per_class": "4",
              "fullsup_per_class": "2", "image_size": "32"}


def write_cub(root: Path, *, n_classes: int = 2, per_class: int = 3, size=(50, 40)) -> Path:
    """Write a CUB-200-2011 archive folder exactly as the official files look."""
    cub = root / "CUB_200_2011"
    names = [f"{i + 1:03d}.Black_footed_Albatross_{i}" for i in range(n_classes)]
    lines = {"classes": [], "images": [], "labels": [], "split": [], "boxes": []}
    image_id = 0
    rng = np.random.default_rng(0)
    for c, name in enumerate(names):
        lines["classes"].append(f"{c + 1} {name}")
        (cub / "images" / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            image_id += 1
            rel = f"{name}/Black_Footed_Albatross_00{k}_{image_id}.jpg"
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
                cub / "images" / rel)
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {int(k % 2 == 0)}")
            lines["boxes"].append(f"{image_id} {5.0 + k} 4.0 {20.0 + k} 30.0")
    files = {"classes": "classes.txt", "images": "images.txt", "labels": "image_class_labels.txt",
             "split": "train_test_split.txt", "boxes": "bounding_boxes.txt"}
    for key, file in files.items():
        (cub / file).write_text("\n".join(lines[key]) + "\n")
    return root


@pytest.fixture
def cub_root(tmp_path: Path) -> Path:
    return write_cub(tmp_path)


@pytest.fixture(scope="session")
def tiny_synth_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthdata")


@pytest.fixture(scope="session")
def tiny_synth(tiny_synth_dir):
    from wsolbench.config import apply_overrides
    from wsolbench.data.synth import SynthConfig, SynthCUBDataset

    cfg = apply_overrides(SynthConfig(), TINY_SYNTH)
    return SynthCUBDataset.load(tiny_synth_dir, config=cfg, workers=1)


def run_dir_of(results_dir: Path, dataset: str, method: str, seed: int = 0) -> Path:
    """The one run folder of `method` on `dataset` with `seed` under `results_dir`
    (`runs/<dataset>/<method>/<run key>/<seed>`), finished or not; several is an error."""
    found = sorted((Path(results_dir) / "runs" / dataset / method).glob(f"*/{seed}"))
    assert len(found) == 1, f"expected one run folder, found {found}"
    return found[0]


def console_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`wsolbench ARGS` through the console entry point's own `main`, in-process: the exit
    status and stderr a user sees, without starting a Python that imports torch again."""
    import sys

    from wsolbench.cli import main

    monkeypatch.setattr(sys, "argv", ["wsolbench", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `longest` tests first, then the other slow ones (stable otherwise): under `-n auto`
    a long end-to-end test that is handed out last makes one worker finish minutes after the
    other; started first, it overlaps the many short ones (longest-first scheduling)."""
    items.sort(key=lambda item: (item.get_closest_marker("longest") is None,
                                 item.get_closest_marker("slow") is None))


def pytest_xdist_make_scheduler(config, log):
    """Under `-n` with xdist's default `--dist load` (given or not: the two look alike here),
    its work-stealing scheduler instead: `load` hands each worker a consecutive block of the sorted tests first,
    so with the slow tests sorted first one worker got nearly all of them (xdist sends each
    worker a block of a quarter of its share: 44 tests here); work stealing lets an idle
    worker take half of the other's remaining queue (docs in the README's test section)."""
    if config.getoption("dist") != "load":
        return None  # another --dist the user chose (loadfile, loadscope, ...)
    from xdist.scheduler import WorkStealingScheduling

    return WorkStealingScheduling(config, log)
