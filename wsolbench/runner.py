"""`wsolbench run`: dataset -> train -> localize -> every protocol -> results JSON + MLflow.

Outputs land in `results/runs/<dataset>/<method>/<seed>/`: `config.json` (resolved config,
git commit, package versions), `checkpoint.pt`, `predictions_{test,fullsup}.npz` (raw maps
and logits, for re-evaluation without the model), `per_image_test.csv` (each test image's
correctness under every reported number, and its error category), `results.json`, `grid.png`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsolbench import __version__
from wsolbench.config import apply_overrides, flatten
from wsolbench.errors import WsolbenchError
from wsolbench.fileio import atomic_write_json, atomic_write_text
from wsolbench.per_image import per_image_outcomes
from wsolbench.registry import get_plugin

logger = logging.getLogger(__name__)

GRID_IMAGES = 16
MLFLOW_RUN_ID_NAME = "mlflow_run_id"  # the run folder's MLflow run, for --resume
PER_IMAGE_NAME = "per_image_test.csv"


@dataclass(frozen=True)
class RunOptions:
    """Everything `wsolbench run` was asked to do (the CLI fills it)."""

    method: str
    dataset: str
    seed: int = 0
    preset: str | None = None
    device: str = "cpu"
    data_root: Path | None = None
    fullsup_metadata: Path | None = None
    fullsup_images: Path | None = None
    results_dir: Path = Path("results")
    overrides: dict[str, str] = field(default_factory=dict)
    dataset_overrides: dict[str, str] = field(default_factory=dict)
    pretrained: Path | None = None
    pretrained_sha256: str | None = None
    resume: bool = False
    num_workers: int = 0
    mlflow: bool = True
    cam_curve_interval: float = 0.001  # MaxBoxAccV2 tau step (wsolevaluation's training config)
    curve_step: float = 0.01  # Top-k/GT-known Loc tau grid for the fair protocol
    baselines: bool = True
    eval_workers: int = 2  # processes for protocol evaluation (shards merge exactly)
    first_box_only: bool = False  # match only each image's first GT box (TRT repo behaviour)
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    precision: str = "fp32"  # or "bf16" autocast (CUDA, and CPUs with bf16 support)
    compile: bool = False  # torch.compile each training stage's forward
    eval_every: int = 0  # held-out (train-fullsup) check every K epochs; 0: only at the end
    # Which epoch of each stage is kept: "last", "fullsup" (best Top-1 Loc on train-fullsup)
    # or "test" (best Top-1 Loc on test: the official code's choice, which leaks the test
    # split; every output of such a run says so). See docs/recipes.md.
    select_checkpoint: str = "last"

    def __post_init__(self) -> None:
        if self.select_checkpoint not in SELECT_CHOICES:
            raise WsolbenchError(f"--select-checkpoint must be one of "
                                 f"{', '.join(SELECT_CHOICES)}, got {self.select_checkpoint!r}")
        if self.pretrained_sha256 and not self.pretrained:
            raise WsolbenchError("--pretrained-sha256 pins the weights of --pretrained, which "
                                 "is not given")
        if self.pretrained is not None and not Path(self.pretrained).is_file():
            raise WsolbenchError(f"--pretrained: weights file not found: {self.pretrained}")


def check_writable_dir(path: Path, what: str = "--results-dir") -> None:
    """Refuse up front an output folder that is a file or cannot be written, so a run never
    fails after hours of training on its first write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WsolbenchError(f"{what} {path} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WsolbenchError(f"{what} {path}: {existing} is not writable")


SELECT_CHOICES = ("last", "fullsup", "test")
TEST_SELECTION_NOTE = "checkpoint chosen on the test split, as the official code does"


def package_versions() -> dict[str, str]:
    import cv2
    import timm
    import torch

    return {"wsolbench": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "opencv": cv2.__version__}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def load_dataset(opts: RunOptions):
    """The dataset plugin's `WSOLData` (synth generates on first use)."""
    plugin = get_plugin("datasets", opts.dataset)
    kwargs: dict[str, Any] = {}
    config_class = getattr(plugin, "config_class", None)
    if config_class is not None:
        kwargs["config"] = apply_overrides(config_class(), opts.dataset_overrides)
    elif opts.dataset_overrides:
        raise WsolbenchError(f"dataset {opts.dataset!r} takes no --data-set overrides")
    if opts.fullsup_metadata:
        kwargs["fullsup_metadata"] = opts.fullsup_metadata
    if opts.fullsup_images:
        kwargs["fullsup_images"] = opts.fullsup_images
    root = opts.data_root
    if root is None and config_class is not None:
        root = opts.results_dir / "data"
    return plugin.load(root, **kwargs)


def resolve_method_config(name: str, preset: str | None, dataset: str,
                          overrides: dict[str, str]):
    """`(method class, config, preset name)`; checked before any data is read or generated."""
    method_cls = get_plugin("methods", name)
    preset = preset or ("synth" if dataset.startswith("synth") else dataset)
    if preset not in method_cls.presets:
        raise WsolbenchError(f"method {name!r} has no preset {preset!r}; "
                             f"presets: {', '.join(sorted(method_cls.presets))}")
    return method_cls, apply_overrides(method_cls.presets[preset], overrides), preset


def build_method(name: str, preset: str | None, dataset: str, overrides: dict[str, str],
                 num_classes: int):
    """Instantiate a method plugin from a preset plus `key=value` overrides."""
    method_cls, config, preset = resolve_method_config(name, preset, dataset, overrides)
    return method_cls(config, num_classes), preset


def evaluate_split(records, preds, cfg, opts: RunOptions) -> dict[str, Any]:
    """Every protocol on one split's predictions; returns protocol objects' results."""
    from wsolbench.evaluation import evaluate

    protocols = {
        "classification": get_plugin("protocols", "classification")(),
        "paper": paper_protocol(cfg, opts),
        "maxboxacc_v2": get_plugin("protocols", "maxboxacc_v2")(
            cam_curve_interval=opts.cam_curve_interval, first_box_only=opts.first_box_only),
        "maxboxacc": get_plugin("protocols", "maxboxacc")(
            cam_curve_interval=opts.cam_curve_interval, first_box_only=opts.first_box_only),
    }
    if records and all(r.mask_paths for r in records):
        protocols["pxap"] = get_plugin("protocols", "pxap")(cam_curve_interval=opts.cam_curve_interval)
    evaluate(list(protocols.values()), records, preds.maps, preds.logits,
             workers=opts.eval_workers, desc=f"evaluate {len(records)} images")
    return protocols


def paper_protocol(cfg, opts: RunOptions):
    """The `loc_acc` protocol as the official code runs it for this method config: the
    config's CAM threshold, maps resized to the crop size (upstream's `CROP_SIZE` frame)."""
    return get_plugin("protocols", "loc_acc")(cam_threshold=cfg.cam_threshold,
                                              eval_size=cfg.image_size,
                                              curve_step=opts.curve_step,
                                              first_box_only=opts.first_box_only)


def checkpoint_scorer(method, data, opts: RunOptions, device, speed):
    """`--select-checkpoint`: a function of the stage giving Top-1 Loc (%) of the paper
    protocol on the chosen split (the official scripts keep the epoch with the best Top-1
    Loc); None for `last`."""
    if opts.select_checkpoint == "last":
        return None
    from wsolbench.engine import predict
    from wsolbench.evaluation import evaluate

    records = data.split(opts.select_checkpoint)

    def score(stage: str) -> float:
        preds = predict(method, records, device=device, num_workers=opts.num_workers,
                        desc=f"select on {opts.select_checkpoint}", speed=speed, stage=stage)
        loc = paper_protocol(method.stage_config(stage), opts)
        evaluate([loc], records, preds.maps, preds.logits, workers=1)
        return float(loc.compute()["top1_loc"])

    return score


def fair_protocol(fullsup: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    """Thresholds chosen on train-fullsup, applied to test (never chosen on test)."""
    tau = fullsup["paper"].best_threshold()
    out = {"selected_on": "fullsup", **test["paper"].at_threshold(tau)}
    box_full, box_test = fullsup["maxboxacc_v2"], test["maxboxacc_v2"]
    correct_full, correct_test = box_full.state["correct"], box_test.state["correct"]
    per_iou = {}
    for row, delta in enumerate(box_test.iou_thresholds):
        index = int(np.argmax(correct_full[row]))
        per_iou[str(delta)] = {"threshold": float(box_test.thresholds[index]),
                               "acc": float(correct_test[row, index] * 100.0 / box_test.n)}
    out["boxacc_v2"] = {"mean": float(np.mean([v["acc"] for v in per_iou.values()])),
                        "per_iou": per_iou}
    return out


def run_baselines(records, opts: RunOptions) -> dict[str, Any]:
    from wsolbench.baselines import available, baseline_maps
    from wsolbench.evaluation import evaluate

    out = {}
    for name in available(records):
        protocol = get_plugin("protocols", "maxboxacc_v2")(cam_curve_interval=opts.cam_curve_interval)
        evaluate([protocol], records, baseline_maps(name, records), desc=f"baseline {name}",
                 workers=opts.eval_workers)
        out[name] = {"maxboxacc_v2": protocol.compute()["mean"]}
    return out


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the summary table printed after a run (method vs. baselines)."""
    m = results["metrics"]
    test = m["test"]
    rows = [{"map": results["method"], "top1_cls": test["classification"]["top1_cls"],
             "top1_loc": test["paper"]["top1_loc"], "top5_loc": test["paper"]["top5_loc"],
             "gt_known_loc": test["paper"]["gt_known_loc"],
             "gt_known_loc_fair": m["fair"]["gt_known_loc"],
             "maxboxacc_v2": test["maxboxacc_v2"]["mean"]},
            {"map": "whole-image box", "top1_loc": test["paper"]["whole_image"]["top1_loc"],
             "top5_loc": test["paper"]["whole_image"]["top5_loc"],
             "gt_known_loc": test["paper"]["whole_image"]["gt_known_loc"],
             "maxboxacc_v2": test["maxboxacc_v2"]["whole_image"]["mean"]}]
    for name, value in m.get("baselines", {}).items():
        rows.append({"map": f"baseline: {name}", **value})
    return rows


def run(opts: RunOptions, tracker=None) -> dict[str, Any]:
    """Train, evaluate and record one (method, dataset, seed); returns the results dict.

    Under torchrun every rank calls this: ranks train together (DDP) and evaluate their
    shard; rank 0 alone writes files and MLflow and returns the results (others: `{}`).
    """
    from wsolbench import distributed

    ctx = distributed.init(opts.device)
    try:
        return _run(opts, tracker, ctx)
    finally:
        distributed.shutdown()


def _run(opts: RunOptions, tracker, ctx) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub at run time
    import torch

    from wsolbench.distributed import device_for
    from wsolbench.engine import (Speed, resolve_device, resumed_history, set_deterministic,
                                  train)
    from wsolbench.figures import localization_grid
    from wsolbench.method import read_state_dict, sha256_file
    from wsolbench.tracking import MLflowTracker, NullTracker, mlflow_metrics

    device = resolve_device(device_for(ctx, opts.device))
    speed = Speed(precision=opts.precision, compile=opts.compile)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    t_start = time.perf_counter()
    # Names, presets, overrides and the output folder fail fast, before a dataset is read
    # or generated.
    check_writable_dir(opts.results_dir)
    get_plugin("datasets", opts.dataset)
    method_cls, cfg, preset = resolve_method_config(opts.method, opts.preset, opts.dataset,
                                                    opts.overrides)
    data = load_dataset(opts)
    check_splits(data)
    # Every image, box and mask evaluation will need, before hours of training.
    from wsolbench.data.images import check_images

    for split in ("test", "fullsup"):
        check_images(data.split(split), split)
    if not any(len(r.boxes) for r in data.test):
        raise WsolbenchError(
            f"dataset {data.name!r} is annotated with masks, not boxes (OpenImages): `wsolbench "
            "run` scores boxes and does not train on it yet; score a method's saved maps with "
            "`wsolbench evaluate-maps --protocol pxap` (docs/evaluate-maps.md)")
    set_deterministic()
    torch.manual_seed(opts.seed)  # model initialisation (identical on every rank)
    method = method_cls(cfg, data.num_classes)
    pretrained: dict[str, Any] = {}
    if opts.pretrained:
        digest = sha256_file(opts.pretrained)
        if opts.pretrained_sha256 and digest != opts.pretrained_sha256.lower():
            raise WsolbenchError(f"{opts.pretrained}: SHA-256 {digest} does not match "
                                 f"--pretrained-sha256 {opts.pretrained_sha256}")
        report = method.load_pretrained(read_state_dict(opts.pretrained))
        pretrained = {"path": str(opts.pretrained), "sha256": digest, **report}

    run_dir = opts.results_dir / "runs" / data.name / opts.method / str(opts.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {"method": opts.method, "display_name": method_cls.display_name or opts.method,
                "dataset": data.name, "seed": opts.seed, "preset": preset,
                "device": opts.device, "config": dataclasses.asdict(cfg),
                "dataset_info": data.info, "pretrained": pretrained,
                "protocol_steps": {"cam_curve_interval": opts.cam_curve_interval, "curve_step": opts.curve_step},
                "distributed": {"world_size": ctx.world_size},
                "speed": dataclasses.asdict(speed),
                "select_checkpoint": opts.select_checkpoint,
                "git_commit": git_commit(), "versions": package_versions()}
    if opts.select_checkpoint == "test":
        resolved["warning"] = TEST_SELECTION_NOTE
    if ctx.is_main:
        atomic_write_json(run_dir / "config.json", resolved)

    if not ctx.is_main:
        tracker = NullTracker()
    tracker = tracker or (MLflowTracker(data.name, opts.results_dir) if opts.mlflow
                          else NullTracker())
    multi_stage = len(method.stages()) > 1
    fingerprint = run_fingerprint(resolved)
    # A --resume that continues a checkpoint continues its MLflow run too; any other rerun
    # closes the earlier attempt's run if a kill left it RUNNING (no phantom live runs).
    run_id_file = run_dir / MLFLOW_RUN_ID_NAME
    previous_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    resumed = resumed_history(run_dir, cfg, fingerprint, opts.seed) if opts.resume else None
    reopen = previous_id if resumed is not None else None
    with tracker.run(f"{opts.method}-seed{opts.seed}", run_id=reopen):
        if previous_id and not reopen:
            tracker.close_stale(previous_id)
        if ctx.is_main and tracker.run_id:
            atomic_write_text(run_id_file, tracker.run_id)
        tags = {"method": opts.method, "dataset": data.name, "seed": str(opts.seed),
                "preset": preset, "select_checkpoint": opts.select_checkpoint,
                **({"selection_warning": TEST_SELECTION_NOTE}
                   if opts.select_checkpoint == "test" else {})}
        tracker.set_tags({**tags, **git_tags(resolved["git_commit"])})
        tracker.log_params(flatten({k: v for k, v in resolved.items() if k != "versions"}))

        def log_row(row: dict[str, Any]) -> None:
            """One epoch's numbers at that epoch's step: the stage's own epoch, and a
            multi-stage method's curves named per stage (train/<stage>/loss), so two stages
            never join into one line."""
            scalars = {k: v for k, v in row.items()
                       if isinstance(v, (int, float)) and k != "epoch"}
            prefix = f"train/{row['stage']}" if multi_stage else "train"
            tracker.log_metrics({f"{prefix}/{k}": v for k, v in scalars.items()},
                                step=int(row["epoch"]))
            if multi_stage:  # TRT: each stage's curves in its own nested run too
                tracker.start_stage(row["stage"], method.stages().index(row["stage"]), {},
                                    tags)
                tracker.log_stage_metrics(row["stage"], scalars, step=int(row["epoch"]))

        def log_epoch(row: dict[str, Any]) -> None:
            history_rows.append(row)
            logger.info(epoch_line(row, method.stage_config(row["stage"]).epochs))
            if opts.eval_every and len(history_rows) % opts.eval_every == 0:
                # Held-out monitoring only: train-fullsup, never test.
                row.update(heldout_check(method, data, opts, device, speed))
            log_row(row)

        # Epochs the killed attempt finished but never logged (killed between its
        # checkpoint and its MLflow call) are logged now, at their own steps.
        for row in resumed or ():
            prefix = f"train/{row['stage']}" if multi_stage else "train"
            if int(row["epoch"]) not in tracker.logged_steps(f"{prefix}/loss"):
                log_row(row)

        def log_stage(stage: str, counts: dict[str, int]) -> None:
            logger.info("stage %s: weight decay on %d tensors, %d exempt", stage,
                        counts["decayed_tensors"], counts["exempt_tensors"])
            tracker.log_params({f"optimizer.{stage}.{k}": v for k, v in counts.items()})
            if multi_stage:
                tracker.start_stage(stage, method.stages().index(stage),
                                    {**flatten(method.stage_config(stage)),
                                     **{f"optimizer.{k}": v for k, v in counts.items()}}, tags)

        history_rows: list[dict[str, Any]] = list(resumed or ())
        t_train = time.perf_counter()
        state = train(method, data.train, run_dir, device=device, seed=opts.seed,
                      resume=opts.resume, num_workers=opts.num_workers, on_epoch=log_epoch,
                      on_stage=log_stage,
                      select=checkpoint_scorer(method, data, opts, device, speed),
                      fingerprint=fingerprint, ctx=ctx, speed=speed)
        train_seconds = time.perf_counter() - t_train

        t_eval = time.perf_counter()
        metrics, preds = evaluate_model(method, data, opts, run_dir, device, ctx, speed)
        eval_seconds = time.perf_counter() - t_eval
        if not ctx.is_main:
            return {}

        results = {**{k: v for k, v in resolved.items()},
                   "training": {"history": state.history, "seconds": train_seconds,
                                "selected_epochs": state.selected},
                   "metrics": metrics,
                   "timings": {"train_s": train_seconds, "evaluate_s": eval_seconds,
                               "total_s": time.perf_counter() - t_start},
                   "mlflow_run_id": tracker.run_id}
        atomic_write_json(run_dir / "results.json", results)
        grid = localization_grid(data.test[:GRID_IMAGES], preds["test"].maps[:GRID_IMAGES],
                                 run_dir / "grid.png", cfg.cam_threshold,
                                 f"{opts.method} on {data.name}, seed {opts.seed}")
        quality, chosen_taus = mlflow_metrics(flat_metrics(metrics))
        tracker.log_metrics(quality)
        tracker.log_params(chosen_taus)
        for path in (run_dir / "config.json", run_dir / "results.json", grid):
            tracker.log_artifact(path)
    return results


def git_tags(commit: str | None) -> dict[str, str]:
    """MLflow's source-commit tag, set from this checkout (MLflow guesses it from the entry
    script, which a console script in a venv outside the checkout defeats)."""
    if not commit:
        return {}
    return {"mlflow.source.git.commit": commit.removesuffix("-dirty"),
            "wsolbench.git_dirty": str(commit.endswith("-dirty")).lower()}


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """One readable line per epoch for logs (a batch system's file, Snakemake's log)."""
    line = (f"{row['stage']} epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, "
            f"train acc {row['train_acc']:.1f} %, lr {row['lr']:.3g}, {row['seconds']:.1f} s")
    if "selection_score" in row:
        line += f", selection Top-1 Loc {row['selection_score']:.2f}"
    return line


def heldout_check(method, data, opts: RunOptions, device, speed) -> dict[str, float]:
    """Mid-training look at the held-out split: best GT-known Loc over tau, MaxBoxAccV2."""
    from wsolbench.engine import predict
    from wsolbench.evaluation import evaluate

    preds = predict(method, data.fullsup, device=device, num_workers=opts.num_workers,
                    desc="held-out check", speed=speed)
    loc = paper_protocol(method.config, opts)
    box = get_plugin("protocols", "maxboxacc_v2")(cam_curve_interval=opts.curve_step)
    evaluate([loc, box], data.fullsup, preds.maps, preds.logits, workers=1)
    return {"fullsup_gt_known_best": float(max(loc.compute()["curves"]["gt_known_loc"])),
            "fullsup_maxboxacc_v2": box.compute()["mean"]}


def run_fingerprint(resolved: dict[str, Any]) -> str:
    """Hash of what a checkpoint depends on besides the method config: data and weights."""
    keys = ("dataset", "dataset_info", "pretrained", "select_checkpoint")
    blob = json.dumps({k: resolved.get(k) for k in keys},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def evaluate_model(method, data, opts: RunOptions, out_dir: Path, device, ctx=None,
                   speed=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Localize test and train-fullsup, run every protocol, the fair transfer and baselines.

    Under torchrun each rank localizes and scores its strided shard of every split; rank 0
    merges the shards' counters (`Protocol.merge`: exactly the single-process counters) and
    their maps (saved, and used for the per-image file). Other ranks return `({}, {})`.
    """
    from wsolbench.distributed import DistContext, unshard
    from wsolbench.engine import Predictions, Speed, predict

    ctx = ctx or DistContext()
    speed = speed or Speed()
    preds, evaluated = {}, {}
    for split in ("test", "fullsup"):
        mine = ctx.shard(data.split(split))
        part = protos = None
        if mine:
            part = predict(method, mine, device=device, num_workers=opts.num_workers,
                           desc=f"localize {split}", speed=speed)
            protos = evaluate_split(mine, part, method.config, opts)
        shards = ctx.gather((part, protos))
        if not ctx.is_main:
            continue
        parts = [p for p, _ in shards if p is not None]
        preds[split] = Predictions(
            image_ids=unshard([p.image_ids for p in parts]),
            maps=np.stack(unshard([list(p.maps) for p in parts])),
            logits=np.stack(unshard([list(p.logits) for p in parts])),
            labels=np.asarray(unshard([list(p.labels) for p in parts]), dtype=np.int64))
        merged = shards[0][1]
        for _, other in shards[1:]:
            if other is not None:
                for name, protocol in merged.items():
                    protocol.merge(other[name])
        evaluated[split] = merged
        preds[split].save(out_dir / f"predictions_{split}.npz")
    if not ctx.is_main:
        return {}, {}
    metrics: dict[str, Any] = {s: {k: p.compute() for k, p in protos.items()}
                               for s, protos in evaluated.items()}
    metrics["fair"] = fair_protocol(evaluated["fullsup"], evaluated["test"])
    test = evaluated["test"]
    outcomes = per_image_outcomes(data.test, preds["test"].maps, preds["test"].logits,
                                  test["paper"], test["maxboxacc_v2"],
                                  fair_tau=metrics["fair"]["cam_threshold"])
    atomic_write_text(out_dir / PER_IMAGE_NAME, outcomes.to_csv(index=False))
    if opts.baselines:
        metrics["baselines"] = run_baselines(data.test, opts)
    return metrics, preds


def check_splits(data) -> None:
    """Every split must be usable; the fair protocol needs train-fullsup."""
    from wsolbench.data.records import check_split

    check_split(data.train, "train", data.num_classes)
    check_split(data.test, "test", data.num_classes)
    if not data.fullsup:
        raise WsolbenchError(f"dataset {data.name!r} has no train-fullsup split: the fair "
                             "protocol needs one (give --fullsup-metadata/--fullsup-images)")
    check_split(data.fullsup, "fullsup", data.num_classes)


def evaluation_dir(opts: RunOptions, checkpoint: Path, dataset: str) -> Path:
    """Where `wsolbench evaluate` writes by default: a folder of its own, never the run it
    evaluates (`<results>/evaluations/<run folder name>-<checkpoint digest>/<dataset>`), so
    evaluating a checkpoint on another dataset cannot mix files into that run."""
    digest = hashlib.sha256(str(Path(checkpoint).resolve()).encode()).hexdigest()[:8]
    name = f"{Path(checkpoint).resolve().parent.name}-{digest}"
    return opts.results_dir / "evaluations" / name / dataset


def evaluate_checkpoint(opts: RunOptions, checkpoint: Path, out: Path | None = None,
                        out_dir: Path | None = None) -> dict[str, Any]:
    """Re-evaluate a saved checkpoint on `opts.dataset` (no training, no MLflow run).

    Predictions, per-image outcomes and `results_evaluate.json` go to `out_dir` (default
    `evaluation_dir`); `out` names another path for the results file.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from wsolbench.engine import load_checkpoint, read_checkpoint, resolve_device

    device = resolve_device(opts.device)
    ckpt = read_checkpoint(checkpoint)
    if "method" not in ckpt or "config" not in ckpt:
        raise WsolbenchError(f"{checkpoint}: not a wsolbench checkpoint (no method/config)")
    data = load_dataset(opts)
    check_splits(data)
    method_cls = get_plugin("methods", ckpt["method"])
    known = {f.name for f in dataclasses.fields(method_cls.config_class)}
    unknown = sorted(set(ckpt["config"]) - known)
    if unknown:
        raise WsolbenchError(
            f"{checkpoint}: written by method {ckpt['method']!r} of wsolbench "
            f"{ckpt.get('wsolbench_version', 'before 0.1.0')}; its config has keys this "
            f"wsolbench ({__version__}) does not know: {', '.join(unknown)}")
    config = method_cls.config_class(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in ckpt["config"].items()})
    method = method_cls(config, data.num_classes)
    load_checkpoint(checkpoint, method, ckpt)
    out_dir = Path(out_dir) if out_dir else evaluation_dir(opts, checkpoint, data.name)
    if out_dir.resolve() == Path(checkpoint).resolve().parent:
        raise WsolbenchError(f"{out_dir}: that is the evaluated run's own folder; evaluation "
                             "writes elsewhere so the run's files stay its own")
    metrics, _ = evaluate_model(method, data, opts, out_dir, device)
    results = {"method": ckpt["method"], "dataset": data.name, "checkpoint": str(checkpoint),
               "config": ckpt["config"], "metrics": metrics, "git_commit": git_commit(),
               "versions": package_versions()}
    atomic_write_json(out or out_dir / "results_evaluate.json", results)
    return results


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics as `split/protocol/name` keys (curves and params left out)."""
    out: dict[str, float] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key in ("curves", "params", "protocol", "metric"):
                    continue
                walk(f"{prefix}/{key}" if prefix else str(key), value)
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            out[prefix] = float(obj)

    walk("", metrics)
    return out
