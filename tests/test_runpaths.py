"""Run folders (wsolbench/runpaths.py): one folder per config, the same one for `wsolbench
run` and the workflow, and an explicit choice where a method has runs of several configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import default_workflow_config
from wsolbench.errors import WsolbenchError
from wsolbench.options import RunOptions
from wsolbench.resolve import run_paths
from wsolbench.runpaths import RunPaths, parse_run_keys
from wsolbench.workflow_check import workflow_candidates, workflow_run_key


def test_quick_start_and_default_workflow_never_share_a_folder():
    """The README's quick start (`wsolbench run --method cam --dataset synth-cub`) and the
    default workflow run other data and epochs: before run keys both wrote
    results/runs/synth-cub/cam/0/ and the workflow overwrote the quick start."""
    config = default_workflow_config()
    for method in config["methods"]:
        quick = run_paths(RunOptions(method=method, dataset="synth-cub"))
        for workflow, _ in workflow_candidates(config, "synth-cub", method):  # every lr tried
            assert quick.key != workflow
            assert quick.key.startswith("synth-") and workflow.startswith("synth-")


def test_the_key_follows_every_input_of_a_run_and_nothing_else():
    base = RunOptions(method="cam", dataset="synth-cub")
    key = run_paths(base).key
    assert run_paths(RunOptions(method="cam", dataset="synth-cub")).key == key  # stable
    changed = [
        RunOptions(method="cam", dataset="synth-cub", overrides={"epochs": "3"}),
        RunOptions(method="cam", dataset="synth-cub", dataset_overrides={"num_classes": "4"}),
        RunOptions(method="cam", dataset="synth-cub", cam_curve_interval=0.01),
        RunOptions(method="cam", dataset="synth-cub", select_checkpoint="fullsup"),
        RunOptions(method="cam", dataset="synth-cub", first_box_only=True),
        RunOptions(method="cam", dataset="synth-cub", preset="cub"),
    ]
    keys = {run_paths(opts).key for opts in changed}
    assert key not in keys and len(keys) == len(changed)
    # What does not change the numbers leaves the folder alone; the seed is its own level.
    same = RunOptions(method="cam", dataset="synth-cub", device="cuda", threads=1,
                      eval_workers=1, num_workers=2, mlflow=False)
    assert run_paths(same).key == key
    seeded = run_paths(RunOptions(method="cam", dataset="synth-cub", seed=3))
    assert seeded.key == key and seeded.dir.name == "3"
    # A config value given as its default names the same folder as leaving it out.
    assert run_paths(RunOptions(method="cam", dataset="synth-cub",
                                overrides={"epochs": str(base_epochs())})).key == key


def base_epochs() -> int:
    from wsolbench.registry import get_plugin

    return get_plugin("methods", "cam").presets["synth"].epochs


def test_the_workflow_names_the_folder_the_run_writes(tmp_path):
    """The workflow's key comes from the config through the same options `run` receives."""
    config = default_workflow_config()
    candidates = workflow_candidates(config, "synth-imagenet", "trt")
    grid = config["methods"]["trt"]["search"]
    assert len(candidates) == math.prod(len(values) for values in grid.values())
    for key, entry in candidates:  # each point of the search grid: its own folder
        opts = RunOptions(method="trt", dataset="synth-imagenet", preset=entry["preset"],
                          overrides={k: ",".join(map(str, v)) if isinstance(v, list)
                                     else str(v) for k, v in entry["set"].items()},
                          dataset_overrides={k: str(v) for k, v in
                                             config["datasets"]["synth-imagenet"]["data_set"]
                                             .items()})
        assert run_paths(opts).key == key
    assert len({key for key, _ in candidates}) == len(candidates)
    with pytest.raises(WsolbenchError, match="a searched method has one run key per candidate"):
        workflow_run_key(config, "synth-imagenet", "trt")


def _finished(results: Path, key: str, seed: int = 0) -> None:
    folder = results / "runs" / "synth-cub" / "cam" / key / str(seed)
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({}))


def test_several_configs_need_a_choice(tmp_path):
    _finished(tmp_path, "synth-aaaaaaaa")
    assert RunPaths.find(tmp_path, "synth-cub", "cam", 0).key == "synth-aaaaaaaa"
    _finished(tmp_path, "cub-bbbbbbbb")
    with pytest.raises(WsolbenchError, match=r"2 configs \(cub-bbbbbbbb, synth-aaaaaaaa\); "
                       r"choose one with --run-key synth-cub/cam=KEY"):
        RunPaths.find(tmp_path, "synth-cub", "cam", 0)
    chosen = parse_run_keys(["synth-cub/cam=cub-bbbbbbbb"])
    assert RunPaths.find(tmp_path, "synth-cub", "cam", 0,
                         chosen["synth-cub/cam"]).key == "cub-bbbbbbbb"
    with pytest.raises(WsolbenchError, match="expected \\[DATASET/\\]METHOD=KEY"):
        parse_run_keys(["cam"])
    with pytest.raises(WsolbenchError, match="no finished run"):
        RunPaths.find(tmp_path, "synth-imagenet", "cam", 0)


def test_the_workflow_names_a_pretrained_run_before_its_weights_exist(tmp_path):
    """paper.yaml names local weights that a dry run on another machine does not have: the
    key comes from the path (or the pinned SHA-256) alone, and equals the run's once the file
    is there."""
    config = default_workflow_config()
    config["methods"]["tscam"].pop("search")  # one recipe: one key
    weights = tmp_path / "vit.safetensors"
    config["methods"]["tscam"]["pretrained"] = str(weights)
    before = workflow_run_key(config, "synth-cub", "tscam")  # no file yet: no error
    weights.write_bytes(b"weights")
    entry = config["methods"]["tscam"]
    opts = RunOptions(method="tscam", dataset="synth-cub", preset=entry["preset"],
                      pretrained=weights,
                      overrides={k: ",".join(map(str, v)) if isinstance(v, list) else str(v)
                                 for k, v in entry["set"].items()},
                      dataset_overrides={k: str(v) for k, v in
                                         config["datasets"]["synth-cub"]["data_set"].items()})
    assert run_paths(opts).key == before
    config["methods"]["tscam"]["pretrained_sha256"] = "a" * 64
    pinned = workflow_run_key(config, "synth-cub", "tscam")
    assert pinned != before
    assert run_paths(RunOptions(**{**opts.__dict__, "pretrained_sha256": "a" * 64})).key == pinned
