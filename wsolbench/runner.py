"""`wsolbench run`: dataset -> train -> localize -> every protocol -> results JSON + MLflow.

Outputs land in the run's folder, `results/runs/<dataset>/<method>/<run key>/<seed>/`
(`wsolbench.runpaths`): `config.json` (resolved config,
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
import time
from pathlib import Path
from typing import Any

from wsolbench import __version__
from wsolbench.config import flatten
from wsolbench.errors import WsolbenchError
from wsolbench.fileio import atomic_write_json, atomic_write_text, require_checkpoint
from wsolbench.numbers import read_numbers
from wsolbench.options import TEST_SELECTION_NOTE, RunOptions, check_writable_dir
from wsolbench.provenance import git_commit, git_tags, package_versions, run_fingerprint
from wsolbench.registry import entry_point, get_plugin
from wsolbench.resolve import (check_splits, dataset_config, load_dataset,
                               resolve_method_config, run_paths)
from wsolbench.suite import (
    checkpoint_scorer,
    evaluate_model,
    flat_metrics,
    heldout_check,
    paper_protocol,
)

logger = logging.getLogger(__name__)

GRID_IMAGES = 16
MLFLOW_RUN_ID_NAME = "mlflow_run_id"  # the run folder's MLflow run, for --resume


SUPERSEDED_DIR = "superseded"


def keep_other_run(run_dir: Path, resolved: dict[str, Any]) -> Path | None:
    """Move the files of an earlier run of *another* config, data or seed out of the way
    (into `<run>/superseded/<time>/`) before this run writes, and say so: a finished run is
    never overwritten silently, nor is a config.json written beside another run's results.
    A rerun or resume of the same configuration keeps the folder as it is."""
    previous = run_dir / "config.json"
    if not previous.is_file():
        return None
    try:
        earlier = json.loads(previous.read_text())
    except (OSError, json.JSONDecodeError):
        earlier = {}
    keys = ("config", "dataset_info", "seed", "pretrained", "select_checkpoint")
    same = json.loads(json.dumps({k: earlier.get(k) for k in keys}, default=str)) == \
        json.loads(json.dumps({k: resolved.get(k) for k in keys}, default=str))
    if same:
        return None
    differs = [k for k in keys if json.dumps(earlier.get(k), default=str, sort_keys=True)
               != json.dumps(resolved.get(k), default=str, sort_keys=True)]
    target = run_dir / SUPERSEDED_DIR / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for path in run_dir.iterdir():
        if path.is_file():
            path.rename(target / path.name)
    logger.warning("%s held a run of another %s: its files were moved to %s", run_dir,
                   " / ".join(differs), target)
    return target


# The run summary's columns: (protocol, metric) of `metrics.numbers` -> column name.
HEADLINE_COLUMNS = {("paper", "cls_top1"): "top1_cls", ("paper", "top1_loc"): "top1_loc",
                    ("paper", "top5_loc"): "top5_loc", ("paper", "gt_known_loc"): "gt_known_loc",
                    ("fair", "gt_known_loc"): "gt_known_loc_fair",
                    ("wsolevaluation", "maxboxacc_v2"): "maxboxacc_v2"}


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the summary table printed after a run: the method, then each baseline."""
    rows: dict[str, dict[str, Any]] = {}
    for n in read_numbers(results, f"{results.get('run_dir', 'the run')}/results.json"):
        column = HEADLINE_COLUMNS.get((n.protocol, n.metric))
        if column:
            name = f"baseline: {n.baseline}" if n.baseline else results["method"]
            rows.setdefault(name, {"map": name})[column] = n.value
    return list(rows.values())


def run(opts: RunOptions, tracker=None) -> dict[str, Any]:
    """Train, evaluate and record one (method, dataset, seed); returns the results dict.

    Under torchrun every rank calls this: ranks train together (DDP) and evaluate their
    shard; rank 0 alone writes files and MLflow and returns the results (others: `{}`).
    """
    # The output folder, the names, the method's preset and `--set` values and the dataset's
    # `--data-set` knobs fail before torch is imported (seconds on a CPU), so a typo is
    # answered at once: the built-in methods register their presets torch-free
    # (wsolbench.method_config).
    check_writable_dir(opts.results_dir)
    entry_point("methods", opts.method)
    entry_point("datasets", opts.dataset)
    resolve_method_config(opts.method, opts.preset, opts.dataset, opts.overrides)
    dataset_config(opts)
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
    from wsolbench.engine import Speed, resolve_device, resumed_history, set_deterministic, train
    from wsolbench.evaluation import make_batch
    from wsolbench.figures import localization_grid
    from wsolbench.fileio import sha256_file
    from wsolbench.method import read_state_dict
    from wsolbench.tracking import MLflowTracker, NullTracker, mlflow_metrics

    device = resolve_device(device_for(ctx, opts.device))
    speed = Speed(precision=opts.precision, compile=opts.compile)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    t_start = time.perf_counter()
    cfg, preset = resolve_method_config(opts.method, opts.preset, opts.dataset, opts.overrides)
    method_cls = get_plugin("methods", opts.method)
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
    elif cfg.init_weights:
        from wsolbench.weights import read_manifest, shipped_weights

        path = shipped_weights(cfg.init_weights)
        manifest = read_manifest(path)  # checks the file's SHA-256 against it
        report = method.load_pretrained(read_state_dict(path))
        pretrained = {"path": str(path), "sha256": manifest["sha256"],
                      "shipped": cfg.init_weights, **report}
    elif preset in ("cub", "ilsvrc"):
        logger.warning("preset %s without --pretrained: the backbone starts from random "
                       "weights, so the numbers are those of a from-scratch classifier, "
                       "not comparable with the paper's (which fine-tunes ImageNet weights)",
                       preset)

    paths = run_paths(opts)
    run_dir = paths.dir
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {"method": opts.method, "display_name": method_cls.display_name or opts.method,
                "dataset": data.name, "seed": opts.seed, "preset": preset,
                "run_key": paths.key, "run_dir": str(run_dir),
                "device": opts.device, "config": dataclasses.asdict(cfg),
                "dataset_info": data.info, "pretrained": pretrained,
                "protocol_steps": {"cam_curve_interval": opts.cam_curve_interval,
                                   "curve_step": opts.curve_step},
                "skipped_protocols": list(opts.skip_protocols),
                "distributed": {"world_size": ctx.world_size},
                "speed": dataclasses.asdict(speed),
                "select_checkpoint": opts.select_checkpoint,
                "git_commit": git_commit(), "versions": package_versions()}
    if opts.select_checkpoint == "test":
        resolved["warning"] = TEST_SELECTION_NOTE
    moved = keep_other_run(run_dir, resolved) if ctx.is_main else None
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
    earlier_id_file = run_id_file if run_id_file.is_file() else (
        moved / MLFLOW_RUN_ID_NAME if moved else None)
    previous_id = (earlier_id_file.read_text().strip()
                   if earlier_id_file and earlier_id_file.is_file() else None)
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
        shown = data.test[:GRID_IMAGES]
        drawing = paper_protocol(cfg, opts).predicted_boxes(
            make_batch(shown, preds["test"].maps[:GRID_IMAGES]))
        grid = localization_grid(shown, drawing, run_dir / "grid.png",
                                 f"{opts.method} on {data.name}, seed {opts.seed} "
                                 f"(paper protocol, tau={cfg.cam_threshold:g})")
        quality, chosen_taus = mlflow_metrics(flat_metrics(metrics))
        tracker.log_metrics(quality)
        tracker.log_params(chosen_taus)
        for path in (run_dir / "config.json", run_dir / "results.json", grid):
            tracker.log_artifact(path)
    return results


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """One readable line per epoch for logs (a batch system's file, Snakemake's log)."""
    line = (f"{row['stage']} epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, "
            f"train acc {row['train_acc']:.1f} %, lr {row['lr']:.3g}, {row['seconds']:.1f} s")
    if "selection_score" in row:
        line += f", selection Top-1 Loc {row['selection_score']:.2f}"
    return line


def evaluation_dir(opts: RunOptions, checkpoint: Path, dataset: str) -> Path:
    """Where `wsolbench evaluate` writes by default: a folder of its own, never the run it
    evaluates (`<results>/evaluations/<method>-<seed>-<checkpoint digest>/<dataset>`), so
    evaluating a checkpoint on another dataset cannot mix files into that run."""
    digest = hashlib.sha256(str(Path(checkpoint).resolve()).encode()).hexdigest()[:8]
    run_dir = Path(checkpoint).resolve().parent
    name = f"{run_dir.parent.parent.name}-{run_dir.name}-{digest}"
    return opts.results_dir / "evaluations" / name / dataset


def load_trained(checkpoint: Path, num_classes: int, ckpt: dict[str, Any] | None = None):
    """`(method, checkpoint dict)`: the method plugin a wsolbench checkpoint names, built from
    its saved config and loaded with its weights. `ckpt`: the file already read (callers
    read it before loading a dataset, so a wrong path fails before any data work)."""
    from wsolbench.engine import load_checkpoint, read_checkpoint

    ckpt = read_checkpoint(checkpoint) if ckpt is None else ckpt
    if "method" not in ckpt or "config" not in ckpt:
        raise WsolbenchError(f"{checkpoint}: not a wsolbench checkpoint (no method/config)")
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
    method = method_cls(config, num_classes)
    load_checkpoint(checkpoint, method, ckpt)
    return method, ckpt


def run_dataset(resolved: dict[str, Any], data_root: Path):
    """The `WSOLData` a run (its `config.json`, `resolved`) trained and was evaluated on:
    synth data from the generator config the run recorded (regenerated under `data_root` if
    it is not there), real data (CUB, ILSVRC) read from `data_root`."""
    plugin = get_plugin("datasets", resolved["dataset"])
    info = (resolved.get("dataset_info") or {}).get("synth")
    if info is None:
        return plugin.load(data_root)
    fields = {f.name for f in dataclasses.fields(plugin.config_class)}
    config = plugin.config_class(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in info.items() if k in fields})
    return plugin.load(data_root, config=config)


def run_test_split(resolved: dict[str, Any], data_root: Path) -> tuple[tuple, int]:
    """`(records, num_classes)` of the test split a run was evaluated on (`run_dataset`)."""
    data = run_dataset(resolved, data_root)
    return data.test, data.num_classes


def evaluate_checkpoint(opts: RunOptions, checkpoint: Path, out: Path | None = None,
                        out_dir: Path | None = None) -> dict[str, Any]:
    """Re-evaluate a saved checkpoint on `opts.dataset` (no training, no MLflow run).

    Predictions, per-image outcomes and `results_evaluate.json` go to `out_dir` (default
    `evaluation_dir`); `out` names another path for the results file.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    require_checkpoint(checkpoint)  # before torch is imported: a wrong path fails at once
    from wsolbench.engine import read_checkpoint, resolve_device

    device = resolve_device(opts.device)
    ckpt = read_checkpoint(checkpoint)  # an unreadable file fails before the dataset is built
    data = load_dataset(opts)
    check_splits(data)
    method, ckpt = load_trained(checkpoint, data.num_classes, ckpt)
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


