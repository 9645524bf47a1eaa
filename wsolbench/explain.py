"""`wsolbench explain`: post-hoc explainers scored on a trained checkpoint, as runs.

Each explainer (a `PostHocMethod` plugin, e.g. Grad-CAM++ from the `wsolbench-gradcam`
distribution) wraps the checkpoint's trained method and goes through the same evaluation
suite as a trained method. Its files land in a run folder of its own,
`runs/<dataset>/<explainer>@<trained method>/<run key>/<seed>/`, with the seed of the
explained run, so `wsolbench tables --methods cam,gradcam@cam,...` and `wsolbench figures`
read them like any run (docs/plugins.md §"Post-hoc explainers").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from wsolbench.errors import WsolbenchError
from wsolbench.fileio import atomic_write_json, require_checkpoint
from wsolbench.options import RunOptions, check_writable_dir
from wsolbench.provenance import git_commit, package_versions
from wsolbench.registry import entry_point, get_plugin
from wsolbench.resolve import check_splits, dataset_config, load_dataset
from wsolbench.runpaths import RunPaths, run_key

logger = logging.getLogger(__name__)

POSTHOC_PRESET = "posthoc"  # the run key's prefix of explainer runs


def explained_name(explainer: str, trained: str) -> str:
    """The method folder (and tables' method name) of an explainer applied to a method."""
    return f"{explainer}@{trained}"


def explainer_classes(names: list[str]) -> list[type]:
    """The registered post-hoc method plugins `names`, checked before any work."""
    classes = []
    for name in names:
        cls = get_plugin("methods", name)
        if not getattr(cls, "posthoc", False):
            raise WsolbenchError(f"--method {name}: a trained method, not a post-hoc explainer; "
                                 f"`wsolbench run --method {name}` trains it")
        classes.append(cls)
    return classes


def explain_checkpoint(opts: RunOptions, checkpoint: Path, explainers: list[str],
                       layer: str | None = None) -> list[dict[str, Any]]:
    """Score every explainer in `explainers` on `checkpoint`'s trained method; returns each
    one's results (also written to its run folder)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The output folder, the names and the path fail before torch is imported.
    check_writable_dir(opts.results_dir)
    for name in explainers:
        entry_point("methods", name)
    require_checkpoint(checkpoint)
    from wsolbench.engine import read_checkpoint, resolve_device
    from wsolbench.fileio import sha256_file
    from wsolbench.runner import load_trained
    from wsolbench.suite import evaluate_model

    classes = explainer_classes(explainers)
    device = resolve_device(opts.device)
    ckpt = read_checkpoint(checkpoint)  # an unreadable file fails before the dataset is built
    data = load_dataset(opts)
    check_splits(data)
    trained, ckpt = load_trained(checkpoint, data.num_classes, ckpt)
    seed = int(ckpt.get("seed", opts.seed))
    digest = sha256_file(checkpoint)
    source_config = json_config(trained.config)
    out = []
    for cls in classes:
        t_start = time.perf_counter()
        explainer = cls(trained, layer)
        explained = {"checkpoint": str(checkpoint), "checkpoint_sha256": digest,
                     **explainer.describe()}
        paths = RunPaths(opts.results_dir, data.name, explained_name(cls.name, trained.name),
                         explainer_run_key(opts, cls.name, layer,
                                           source_key(checkpoint, digest)), seed)
        paths.dir.mkdir(parents=True, exist_ok=True)
        resolved = {"method": paths.method, "display_name": display_name(cls, type(trained)),
                    "dataset": data.name, "seed": seed, "preset": POSTHOC_PRESET,
                    "run_key": paths.key, "run_dir": str(paths.dir), "config": source_config,
                    "explained": explained, "dataset_info": data.info,
                    "select_checkpoint": "last",
                    "protocol_steps": {"cam_curve_interval": opts.cam_curve_interval,
                                       "curve_step": opts.curve_step},
                    "skipped_protocols": list(opts.skip_protocols),
                    "git_commit": git_commit(), "versions": package_versions()}
        atomic_write_json(paths.file("config.json"), resolved)
        logger.info("%s: explaining %s (layer %s) on %s", paths.method, checkpoint,
                    explainer.layer.name, data.name)
        metrics, _ = evaluate_model(explainer, data, opts, paths.dir, device)
        results = {**resolved, "metrics": metrics, "mlflow_run_id": None,
                   "timings": {"train_s": 0.0, "evaluate_s": time.perf_counter() - t_start,
                               "total_s": time.perf_counter() - t_start}}
        atomic_write_json(paths.file("results.json"), results)
        out.append(results)
    return out


def source_key(checkpoint: Path, digest: str) -> str:
    """What identifies the explained model in an explainer's run key: the run key of the
    trained run the checkpoint belongs to (its config.json beside it), so the workflow can
    name the folder before the checkpoint exists; the file's SHA-256 for a checkpoint
    outside a run folder."""
    config = Path(checkpoint).parent / "config.json"
    try:
        return str(json.loads(config.read_text())["run_key"])
    except (OSError, ValueError, KeyError):
        return digest


def explainer_run_key(opts: RunOptions, explainer: str, layer: str | None,
                      source: str) -> str:
    """The run key of one explainer on one trained run (docs/design.md §6); `layer` as
    asked (None: the method's default, which the source run determines)."""
    data_config = dataset_config(opts)
    identity = {"dataset": opts.dataset, "explainer": explainer, "layer": layer or "",
                "source": source,
                "dataset_config": dataclasses.asdict(data_config) if data_config else None,
                "data_root": str(Path(opts.data_root).resolve()) if opts.data_root else None,
                "protocol_steps": [opts.cam_curve_interval, opts.curve_step],
                "first_box_only": opts.first_box_only}
    return run_key(POSTHOC_PRESET, identity)


def display_name(explainer_cls: type, trained_cls: type) -> str:
    """How tables name an explainer row: "Grad-CAM++ (TS-CAM)"."""
    def shown(cls: type) -> str:
        return cls.display_name or cls.name

    return f"{shown(explainer_cls)} ({shown(trained_cls)})"


def json_config(config) -> dict[str, Any]:
    """A method config as results.json stores it (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(config).items()}
