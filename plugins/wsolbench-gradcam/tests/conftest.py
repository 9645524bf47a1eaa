"""Tiny trained checkpoints the explainer tests share (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

# A tiny synth-cub: seconds to generate and to train on.
TINY_DATA = {"num_classes": "3", "train_per_class": "12", "test_per_class": "4",
             "fullsup_per_class": "2", "image_size": "32"}
TRAINED = {
    "cam": {"epochs": "2", "batch_size": "12", "image_size": "32", "resize_size": "36",
            "width": "16", "init_weights": ""},
    "tscam": {"epochs": "1", "batch_size": "12", "image_size": "32", "resize_size": "36"},
}


def options(results: Path, data: Path, method: str = "", **kw):
    from wsolbench.options import RunOptions

    return RunOptions(method=method, dataset="synth-cub", data_root=data, results_dir=results,
                      dataset_overrides=TINY_DATA, mlflow=False, baselines=False,
                      cam_curve_interval=0.01, eval_workers=1,
                      overrides=TRAINED.get(method, {}), **kw)


@pytest.fixture
def explain_options():
    """`options(results, data)`: RunOptions for the tiny data (a fixture, not an import:
    the name `conftest` is shared with wsolbench's own tests in one pytest session)."""
    return options


@pytest.fixture
def tiny_data_args() -> list[str]:
    """The tiny data as `--data-set` CLI options."""
    return [a for k, v in TINY_DATA.items() for a in ("--data-set", f"{k}={v}")]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """`(results folder, data folder, {method: checkpoint})` of a tiny CAM and TS-CAM run."""
    import torch

    from wsolbench.runner import run
    from wsolbench.tracking import NullTracker

    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("results")
    data = tmp_path_factory.mktemp("data")
    checkpoints = {}
    for method in TRAINED:
        out = run(options(results, data, method), tracker=NullTracker())
        checkpoints[method] = Path(out["run_dir"]) / "checkpoint.pt"
    return results, data, checkpoints
