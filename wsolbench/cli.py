"""`wsolbench` command line: thin click commands over the library.

Heavy imports (torch, timm, mlflow) happen inside the commands that need them, so
`wsolbench list ...` and `--help` stay instant. Every user error prints one line, naming the
file/line or key at fault, and exits with status 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from wsolbench.errors import WsolbenchError

CAM_CURVE_INTERVAL = 0.001  # wsolevaluation's default (evaluate_wsol, training config)


def _cam_curve_interval_option(func):
    """One name for the CAM-threshold step of MaxBoxAccV2, MaxBoxAcc and PxAP in every
    command (wsolevaluation's `cam_curve_interval`; `--box-step` is an older alias)."""
    return click.option(
        "--cam-curve-interval", "--box-step", "cam_curve_interval",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=CAM_CURVE_INTERVAL, show_default=True,
        help="CAM-threshold step of MaxBoxAccV2, MaxBoxAcc and PxAP: thresholds "
             "np.arange(0, 1, step), as wsolevaluation (its default).")(func)


def _skip_protocol_option(func):
    """`--skip-protocol NAME`: leave an optional protocol of the built-in suite out."""
    return click.option(
        "--skip-protocol", "skip_protocols", multiple=True, metavar="NAME",
        help="Leave this built-in protocol out of the evaluation: maxboxacc (MaxBoxAcc v1, "
             "in no table; most of the evaluation's time) or pxap. Repeatable.")(func)


def _overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    from wsolbench.config import parse_overrides

    return parse_overrides(pairs)


def _apply(func, options):
    for option in reversed(options):
        func = option(func)
    return func


def _data_source_options(func):
    """Where a dataset comes from (shared by every command that reads one)."""
    return _apply(func, [
        click.option("--dataset", default="synth-cub", show_default=True,
                     help="Dataset plugin name (`wsolbench list datasets`)."),
        click.option("--data-root", type=click.Path(path_type=Path), default=None,
                     help="Real data: the folder holding CUB_200_2011/. Synth: where generated "
                          "datasets are cached (default results/data)."),
        click.option("--fullsup-metadata", type=click.Path(path_type=Path), default=None,
                     help="wsolevaluation metadata folder of the train-fullsup split "
                          "(CUBV2: metadata/CUB/val)."),
        click.option("--fullsup-images", type=click.Path(path_type=Path), default=None,
                     help="Image root the train-fullsup ids are relative to."),
        click.option("--data-set", "data_set", multiple=True, metavar="KEY=VALUE",
                     help="Override a synthetic-dataset knob, e.g. --data-set num_classes=20."),
        click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
                     show_default=True, help="Where runs, data caches and MLflow live."),
    ])


def _dataset_options(func):
    return _data_source_options(_apply(func, [
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--num-workers", type=click.IntRange(0), default=0, show_default=True,
                     help="DataLoader worker processes."),
        _cam_curve_interval_option,
        click.option("--no-baselines", is_flag=True,
                     help="Skip the trivial/saliency baseline maps."),
        click.option("--eval-workers", type=click.IntRange(1), default=2, show_default=True,
                     help="Processes for protocol evaluation (sharded, merged exactly)."),
        click.option("--first-box-only", is_flag=True,
                     help="Match only each image's first GT box (to measure the TRT "
                          "repository's ILSVRC behaviour); default: best over all boxes."),
    ]))


def _load_data(dataset, data_root, fullsup_metadata, fullsup_images, data_set, results_dir):
    from wsolbench.options import RunOptions
    from wsolbench.resolve import check_splits, load_dataset

    opts = RunOptions(method="", dataset=dataset, data_root=data_root,
                      fullsup_metadata=fullsup_metadata, fullsup_images=fullsup_images,
                      results_dir=results_dir, dataset_overrides=_overrides(data_set))
    data = load_dataset(opts)
    check_splits(data)
    return data


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wsolbench")
def cli() -> None:
    """wsolbench: CAM, TS-CAM and TRT on one weakly supervised localization protocol."""


@cli.command()
@click.option("--method", required=True, help="Method plugin name (`wsolbench list methods`).")
@_dataset_options
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seed for init, order, aug.")
@click.option("--preset", default=None,
              help="Method preset (default: 'synth' on synthetic data, else the dataset name; "
                   "TRT also has 'cub384', the official 384-px CUB recipe).")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Override the preset's epochs.")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Override the preset's batch size.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Override the preset's learning rate.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override any method config field, e.g. --set cam_threshold=0.2.")
@click.option("--pretrained", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None,
              help="Local backbone weights (.pth or .safetensors). Never downloaded.")
@click.option("--pretrained-sha256", default=None, help="Refuse weights with another SHA-256.")
@click.option("--resume", is_flag=True,
              help="Continue from this run's last checkpoint (one written under another "
                   "config, dataset or seed is not resumed: training restarts).")
@click.option("--no-mlflow", is_flag=True, help="Do not log to MLflow.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Torch CPU threads (default: torch's choice; the workflow sets its own).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="bf16: autocast forward/loss (CUDA; some CPUs).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the training step.")
@click.option("--eval-every", type=click.IntRange(0), default=0, show_default=True,
              help="Check the held-out train-fullsup split every K epochs (never test); "
                   "0: evaluate only at the end.")
@click.option("--protocol", "extra_protocols", multiple=True, metavar="NAME",
              help="Also evaluate this registered protocol (`wsolbench list protocols`; a "
                   "plugin's own), on test and train-fullsup. Repeatable.")
@_skip_protocol_option
@click.option("--select-checkpoint", type=click.Choice(["last", "fullsup", "test"]),
              default="last", show_default=True,
              help="Which epoch of each training stage is kept: the last; the best Top-1 Loc "
                   "on train-fullsup; or the best Top-1 Loc on test, as the official code "
                   "does (leaks the test split; every output of such a run says so).")
@click.option("--nproc-per-node", type=click.IntRange(1), default=1, show_default=True,
              help="Train with N processes (DDP; one per GPU, gloo on CPU) by relaunching "
                   "under torchrun. The batch size stays the global batch.")
def run(method, dataset, data_root, fullsup_metadata, fullsup_images, data_set, device,
        results_dir, num_workers, cam_curve_interval, no_baselines, eval_workers, first_box_only,
        seed,
        preset, epochs, batch_size, lr, settings, pretrained, pretrained_sha256, resume,
        no_mlflow, threads, precision, compile_, eval_every, extra_protocols, skip_protocols,
        select_checkpoint, nproc_per_node) -> None:
    """Train METHOD on DATASET, evaluate every protocol, log to MLflow.

    Results land in RESULTS_DIR/runs/<dataset>/<method>/<run key>/<seed>/ (results.json,
    config.json, checkpoint.pt, predictions, grid.png); the run key is the preset and a
    digest of the config, so runs of different configs never share a folder.
    """
    from wsolbench.options import RunOptions
    from wsolbench.runner import run as run_job

    overrides = _overrides(settings)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            overrides[key] = str(value)
    opts = RunOptions(method=method, dataset=dataset, seed=seed, preset=preset, device=device,
                      data_root=data_root, fullsup_metadata=fullsup_metadata,
                      fullsup_images=fullsup_images, results_dir=results_dir,
                      overrides=overrides, dataset_overrides=_overrides(data_set),
                      pretrained=pretrained, pretrained_sha256=pretrained_sha256, resume=resume,
                      num_workers=num_workers, mlflow=not no_mlflow,
                      cam_curve_interval=cam_curve_interval,
                      baselines=not no_baselines, eval_workers=eval_workers,
                      first_box_only=first_box_only, threads=threads, precision=precision,
                      compile=compile_, eval_every=eval_every,
                      select_checkpoint=select_checkpoint,
                      extra_protocols=tuple(extra_protocols),
                      skip_protocols=tuple(skip_protocols))
    if nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        _relaunch_under_torchrun(nproc_per_node)
    results = run_job(opts)
    if results:  # rank 0 (other torchrun ranks return nothing)
        _print_summary(results, results_dir)


def _relaunch_under_torchrun(nproc: int) -> None:
    """Re-run this very command under `torchrun --standalone --nproc-per-node N`."""
    import subprocess

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "wsolbench", *args]
    sys.exit(subprocess.call(command))


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="A checkpoint.pt written by `wsolbench run`.")
@_dataset_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for predictions, per-image outcomes and results (default "
                   "RESULTS_DIR/evaluations/<run>-<digest>/<dataset>; never the run itself).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Another path for the results file (default: in the --out folder).")
@click.option("--protocol", "extra_protocols", multiple=True, metavar="NAME",
              help="Also evaluate this registered protocol (a plugin's own). Repeatable.")
@_skip_protocol_option
def evaluate(checkpoint, dataset, data_root, fullsup_metadata, fullsup_images, data_set, device,
             results_dir, num_workers, cam_curve_interval, no_baselines, eval_workers,
             first_box_only, out_dir, json_out, extra_protocols, skip_protocols) -> None:
    """Evaluate a saved checkpoint on a dataset's test and train-fullsup splits, into a
    folder of its own (the evaluated run's files are never touched)."""
    from wsolbench.options import RunOptions
    from wsolbench.runner import evaluate_checkpoint

    opts = RunOptions(method="", dataset=dataset, device=device, data_root=data_root,
                      fullsup_metadata=fullsup_metadata, fullsup_images=fullsup_images,
                      results_dir=results_dir, dataset_overrides=_overrides(data_set),
                      num_workers=num_workers, cam_curve_interval=cam_curve_interval,
                      baselines=not no_baselines,
                      mlflow=False, eval_workers=eval_workers, first_box_only=first_box_only,
                      extra_protocols=tuple(extra_protocols),
                      skip_protocols=tuple(skip_protocols))
    results = evaluate_checkpoint(opts, checkpoint, json_out, out_dir)
    click.echo(json.dumps({k: v for k, v in _scalars(results["metrics"]).items()}, indent=1))


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="A checkpoint.pt written by `wsolbench run` (the classifier explained).")
@click.option("--method", "methods", required=True,
              help="Comma-separated post-hoc explainers (`wsolbench list methods`; e.g. "
                   "gradcam,gradcam-pp,eigencam from `pip install -e plugins/wsolbench-gradcam`).")
@click.option("--layer", default=None,
              help="Module path of the layer to explain (default: the trained method's "
                   "feature layer, e.g. `features` for CAM, `vit.norm` for TS-CAM).")
@click.option("--protocol", "extra_protocols", multiple=True, metavar="NAME",
              help="Also evaluate this registered protocol (a plugin's own). Repeatable.")
@_skip_protocol_option
@_dataset_options
def explain(checkpoint, methods, layer, extra_protocols, skip_protocols, dataset, data_root,
            fullsup_metadata, fullsup_images, data_set, device, results_dir, num_workers,
            cam_curve_interval, no_baselines, eval_workers, first_box_only) -> None:
    """Score post-hoc explainers on a trained checkpoint under every protocol.

    Each explainer's results land in RESULTS_DIR/runs/<dataset>/<explainer>@<method>/<run
    key>/<seed>/ with the explained run's seed, so `wsolbench tables --methods
    cam,gradcam@cam` puts them beside the trained methods.
    """
    from wsolbench.explain import explain_checkpoint
    from wsolbench.options import RunOptions

    del no_baselines  # baselines are the trained runs' business: explainers skip them
    opts = RunOptions(method="", dataset=dataset, device=device, data_root=data_root,
                      fullsup_metadata=fullsup_metadata, fullsup_images=fullsup_images,
                      results_dir=results_dir, dataset_overrides=_overrides(data_set),
                      num_workers=num_workers, cam_curve_interval=cam_curve_interval,
                      baselines=False, mlflow=False, eval_workers=eval_workers,
                      first_box_only=first_box_only, extra_protocols=tuple(extra_protocols),
                      skip_protocols=tuple(skip_protocols))
    for results in explain_checkpoint(opts, checkpoint, _name_list(methods), layer):
        v2 = results["metrics"]["test"]["maxboxacc_v2"]["mean"]
        paper = results["metrics"]["test"]["paper"]
        click.echo(f"{results['method']} (layer {results['explained']['layer']}): "
                   f"MaxBoxAccV2 {v2:.2f}, Top-1 Loc {paper['top1_loc']:.2f}, GT-known Loc "
                   f"{paper['gt_known_loc']:.2f}; {results['run_dir']}/")


@cli.command()
@click.option("--backbone", required=True,
              type=click.Choice(["smallcnn", "stridedcnn", "dilatedcnn", "vit_synth",
                                 "vit_synth_p4"]),
              help="The synth backbone to pretrain (a CNN of CAM's, or the ViT of TS-CAM/TRT).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Weights file to write (.safetensors; its manifest goes beside it as .json).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value (PretrainConfig: epochs, lr, batch_size, ...).")
@click.option("--data-set", "data_set", multiple=True, metavar="KEY=VALUE",
              help="Override a corpus knob (SynthPretrainConfig).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="The corpus is generated under RESULTS_DIR/data.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch intra-op threads (default: torch's).")
def pretrain(backbone, out, settings, data_set, results_dir, threads) -> None:
    """Pretrain a synth backbone as a plain classifier on the synth-pretrain corpus (the
    role ImageNet plays for CUB); resumable: rerun the same command after a kill."""
    from wsolbench.config import apply_overrides
    from wsolbench.pretrain import PretrainConfig
    from wsolbench.pretrain import pretrain as run_pretrain

    cfg = apply_overrides(PretrainConfig(backbone=backbone), _overrides(settings))
    data = _load_data("synth-pretrain", None, None, None, data_set, results_dir)
    manifest = run_pretrain(cfg, data, out, threads=threads)
    click.echo(f"{out}: sha256 {manifest['sha256']}, test acc {manifest['test_acc']:.1f} %, "
               f"{manifest['seconds']:.0f} s")


@cli.command("evaluate-maps")
@click.option("--maps", "maps_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of <image_id>.npy maps (wsolevaluation's names).")
@click.option("--maps-kind", type=click.Choice(["score", "raw"]), default="score",
              show_default=True,
              help="score: finished 224x224 maps in [0, 1], scored as they are; raw: CAMs of "
                   "any size and range, resized (bicubic) and min-max normalized exactly as "
                   "wsolevaluation does before scoring.")
@click.option("--metadata", required=True, type=click.Path(path_type=Path),
              help="wsolevaluation metadata split folder (image_ids.txt, localization.txt, ...): "
                   "boxes (CUB, ILSVRC) or masks (OpenImages).")
@click.option("--protocol", default="maxboxacc_v2", show_default=True,
              help="A map protocol (`wsolbench list protocols`): maxboxacc_v2, maxboxacc, "
                   "pxap (masks).")
@_cam_curve_interval_option
@click.option("--mask-root", type=click.Path(path_type=Path), default=None,
              help="PxAP: with OpenImages (masks-form) metadata, the folder its mask paths "
                   "are relative to (wsolevaluation's dataset/OpenImages); with box-form "
                   "metadata, a folder of <image_id stem>.png foreground masks.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Write the full result (curves included) here.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes; each streams its shard (same memory bound per worker) and "
                   "the counters merge exactly.")
def evaluate_maps_cmd(maps_dir, maps_kind, metadata, protocol, cam_curve_interval, mask_root,
                      json_out, workers) -> None:
    """Score saved maps of any method against a wsolevaluation split, streaming them."""
    from wsolbench.fileio import atomic_write_json
    from wsolbench.maps import evaluate_maps

    result = evaluate_maps(maps_dir, metadata, protocol, cam_curve_interval, mask_root, workers,
                           kind=maps_kind)
    if json_out:
        atomic_write_json(json_out, result)
    click.echo(f"{protocol} over {result['n_images']} {maps_kind} maps, "
               f"cam_curve_interval {cam_curve_interval:g}")
    if "per_iou" in result:
        click.echo(f"{'IoU':>4} {'max acc %':>10} {'best tau':>9} {'tau index':>10} {'ties':>5}")
        for delta, row in result["per_iou"].items():
            click.echo(f"{delta:>4} {row['max_acc']:>10.2f} {row['best_threshold']:>9.3f} "
                       f"{row['best_threshold_index']:>10} {row['n_tied_best_indices']:>5}")
        click.echo(f"mean {result['mean']:.2f}")
    else:  # any other protocol: its top-level numbers (PxAP, PIoU, a plugin's own)
        bookkeeping = {"n_images", "cam_curve_interval"}
        click.echo("  ".join(f"{k} {v:.2f}" for k, v in result.items()
                             if isinstance(v, float) and k not in bookkeeping))


@cli.command("list")
@click.argument("kind", type=click.Choice(["methods", "protocols", "datasets"]))
@click.argument("pattern", default="*")
def list_(kind: str, pattern: str) -> None:
    """List registered plugins of KIND, optionally matching a wildcard PATTERN."""
    from wsolbench.registry import list_plugins

    for name in list_plugins(kind, pattern):
        click.echo(name)


@cli.group()
def data() -> None:
    """Generate or inspect datasets."""


def _synth_command(name: str, layout: str, config_path: str):
    @data.command(name, help=f"Write {name} in the {layout.upper()} layout (+ train-fullsup "
                              "in wsolevaluation's metadata format).")
    @click.option("--out", type=click.Path(path_type=Path), required=True,
                  help="Folder to write the dataset into (must not exist).")
    @click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                  help="Override a generator knob (see SynthConfig), e.g. --set seed=3.")
    @click.option("--workers", type=int, default=2, show_default=True)
    def command(out: Path, settings: tuple[str, ...], workers: int) -> None:
        from wsolbench.config import apply_overrides
        from wsolbench.data import synth

        if out.exists():
            raise WsolbenchError(f"{out} already exists; choose a new folder")
        cfg = apply_overrides(getattr(synth, config_path)(), _overrides(settings))
        synth.generate(cfg, out, workers=workers, layout=layout)
        click.echo(f"wrote {name} ({cfg.count('train')} train, {cfg.count('test')} test, "
                   f"{cfg.count('fullsup')} train-fullsup images) to {out}")

    return command


@data.command("prepare")
@_data_source_options
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Write the dataset's split sizes and info here (the workflow's marker).")
def data_prepare(dataset, data_root, fullsup_metadata, fullsup_images, data_set, results_dir,
                 json_out) -> None:
    """Read (synth: generate) a dataset once and check every split completely (every image
    decoded, sizes against the annotations, boxes, masks), before jobs use it."""
    from wsolbench.data.images import check_images
    from wsolbench.fileio import atomic_write_json

    data = _load_data(dataset, data_root, fullsup_metadata, fullsup_images, data_set,
                      results_dir)
    for split in ("train", "fullsup", "test"):  # every image decoded, all problems at once
        check_images(data.split(split), split)
    info = {"dataset": data.name, "num_classes": data.num_classes,
            "splits": {s: len(data.split(s)) for s in ("train", "test", "fullsup")},
            "info": data.info}
    if json_out:
        atomic_write_json(json_out, info)
    click.echo(f"{data.name}: {data.num_classes} classes, " + ", ".join(
        f"{n} {s}" for s, n in info["splits"].items()))


_synth_command("synth-cub", "cub", "SynthConfig")
_synth_command("synth-imagenet", "ilsvrc", "SynthImageNetConfig")
_synth_command("synth-openimages", "openimages", "SynthImageNetConfig")


@cli.command()
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--dataset", required=True, help="Dataset the candidates ran on.")
@click.option("--method", required=True, help="Method whose candidates to choose between.")
@click.option("--run-key", "run_keys", multiple=True, required=True, metavar="KEY",
              help="One candidate's run key (folder under runs/<dataset>/<method>/), in grid "
                   "order: ties go to the earlier one. Repeatable.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Where the selection record (JSON) goes.")
def select(results_dir, dataset, method, run_keys, seeds, out) -> None:
    """Choose a method's hyperparameters on train-fullsup: the candidate run key with the
    highest mean MaxBoxAccV2 over the seeds on the held-out train-fullsup split
    (wsolevaluation's protocol; test is recorded, never used). docs/search.md."""
    from wsolbench.fileio import atomic_write_json
    from wsolbench.search import select_candidate

    record = select_candidate(results_dir, dataset, method, list(run_keys), _int_list(seeds))
    atomic_write_json(out, record)
    for candidate in record["candidates"]:
        mark = "*" if candidate["run_key"] == record["selected_run_key"] else " "
        settings = ", ".join(f"{k}={v}" for k, v in candidate["settings"].items())
        click.echo(f"{mark} {candidate['run_key']}  {settings or '(one candidate)'}  "
                   f"train-fullsup {candidate['heldout_mean']:.2f}  "
                   f"test {candidate['test_mean']:.2f}")
    click.echo(f"selected {record['selected_run_key']} -> {out}")


@cli.command()
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--role", "roles", multiple=True, metavar="ROLE=DATASET",
              help="Which dataset stands in each real dataset's table: cub=synth-cub "
                   "(Tables 1-2), ilsvrc=synth-imagenet (Table 3). Repeatable.")
@click.option("--methods", default=None,
              help="Comma-separated method names (default: every method with runs of the "
                   "dataset(s) under RESULTS_DIR/runs).")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--protocols", default="paper,fair,wsolevaluation", show_default=True,
              help="Measured protocols to show.")
@click.option("--reported", type=click.Path(path_type=Path),
              default=Path("results/reference/reported.csv"), show_default=True,
              help="Reported numbers with their sources.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default RESULTS_DIR/tables).")
@click.option("--resamples", type=int, default=10_000, show_default=True,
              help="Paired-bootstrap resamples.")
@click.option("--run-key", "run_keys", multiple=True, metavar="[DATASET/]METHOD=KEY",
              help="Which config's runs of METHOD to use where it has runs of several "
                   "(the run key is the folder under runs/<dataset>/<method>/). Repeatable.")
@click.option("--selection", "selections", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="A `wsolbench select` record: its method's selected runs fill the tables "
                   "(unless --run-key names others), and every record's candidates go to "
                   "selection.csv/.md. Repeatable.")
def tables(results_dir, roles, methods, seeds, protocols, reported, out, resamples,
           run_keys, selections) -> None:
    """Tables 1-3 (LaTeX, CSV, Markdown), statistics and paired bootstrap from runs."""
    import pandas as pd

    from wsolbench.fileio import atomic_write_text
    from wsolbench.report import make_tables, significance_lines
    from wsolbench.runpaths import parse_run_keys
    from wsolbench.search import read_selection, selection_markdown, selection_table

    role_map = _overrides(roles) if roles else {"cub": "synth-cub"}
    chosen = _name_list(protocols)
    bad = set(chosen) - {"paper", "fair", "wsolevaluation"}
    if bad:
        raise click.BadParameter(f"unknown protocol(s) {sorted(bad)}", param_hint="--protocols")
    from wsolbench.tables import methods_with_runs

    methods = (_name_list(methods) if methods
               else methods_with_runs(results_dir, list(dict.fromkeys(role_map.values()))))
    records = [read_selection(path) for path in selections]  # all read before any writing
    keys = {f"{r['dataset']}/{r['method']}": r["selected_run_key"] for r in records}
    keys.update(parse_run_keys(run_keys))
    out = out or results_dir / "tables"
    search = selection_table(records) if records else None
    written = make_tables(results_dir, role_map, methods, _int_list(seeds), chosen,
                          reported, out, resamples, keys)
    if search is not None:
        atomic_write_text(out / "selection.csv", search.to_csv(index=False))
        atomic_write_text(out / "selection.md", selection_markdown(search))
        written.update({"selection.csv": out / "selection.csv",
                        "selection.md": out / "selection.md"})
    for path in written.values():
        click.echo(path)
    if "bootstrap.csv" in written:
        for line in significance_lines(pd.read_csv(written["bootstrap.csv"])):
            click.echo(line)


@cli.command()
@_data_source_options
@click.option("--methods", default=None,
              help="Comma-separated method names (default: every method with runs of the "
                   "dataset(s) under RESULTS_DIR/runs).")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--images", type=int, default=6, show_default=True,
              help="Rows of the qualitative grid.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default RESULTS_DIR/figures/<dataset>).")
@click.option("--run-key", "run_keys", multiple=True, metavar="[DATASET/]METHOD=KEY",
              help="Which config's runs of METHOD to use where it has runs of several "
                   "(the run key is the folder under runs/<dataset>/<method>/). Repeatable.")
def figures(dataset, data_root, fullsup_metadata, fullsup_images, data_set, results_dir,
            methods, seeds, images, out, run_keys) -> None:
    """Qualitative grid, BoxAcc-vs-threshold curves and error categories of one dataset."""
    from wsolbench.report import make_figures
    from wsolbench.runpaths import parse_run_keys
    from wsolbench.tables import methods_with_runs

    data = _load_data(dataset, data_root, fullsup_metadata, fullsup_images, data_set,
                      results_dir)
    methods = _name_list(methods) if methods else methods_with_runs(results_dir, [dataset])
    paths = make_figures(results_dir, data, methods, _int_list(seeds),
                         out or results_dir / "figures" / data.name, images,
                         parse_run_keys(run_keys))
    for path in paths:
        click.echo(path)


@cli.command()
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False,
                                                   path_type=Path))
@click.option("--name", default="tables-and-figures", show_default=True,
              help="Run name in the MLflow experiment 'summary'.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Write the summary run's id and files here.")
def summary(results_dir, files, name, json_out) -> None:
    """Log FILES (tables, figures) as artifacts of one MLflow summary run."""
    from wsolbench.fileio import atomic_write_json
    from wsolbench.tracking import log_summary_run

    if not files:
        raise click.UsageError("give the table and figure files to log")
    run_ids = _summarized_run_ids(list(files), results_dir)
    run_id = log_summary_run(results_dir, list(files), {"n_files": len(files)}, name,
                             run_ids=run_ids)
    if json_out:
        atomic_write_json(json_out, {"mlflow_run_id": run_id, "experiment": "summary",
                                     "files": [str(f) for f in files]})
    click.echo(f"logged {len(files)} files to MLflow run {run_id} (experiment 'summary')")


@cli.command()
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="The folder holding mlflow.db (and mlartifacts/).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
def ui(results_dir, host, port) -> None:
    """Open the MLflow UI on RESULTS_DIR's store, on the training runs.

    Re-points artifact folders if RESULTS_DIR was moved, tags every experiment as model
    training, prints each experiment's runs-table URL (in the UI's "Model training" mode)
    and starts `mlflow ui` lean: one worker, no background job runners (about 0.5 GB
    instead of ~3 GB).
    """
    from wsolbench.tracking import MODEL_TRAINING_QUERY, default_tracking_uri, prepare_store_for_ui

    if not (results_dir / "mlflow.db").is_file():
        raise WsolbenchError(f"{results_dir / 'mlflow.db'}: no MLflow store there yet "
                             "(`wsolbench run` creates it)")
    experiments = prepare_store_for_ui(results_dir)
    url = f"http://{host}:{port}"
    click.echo(f"MLflow UI at {url}; the runs of each experiment:")
    for experiment_id, name in experiments:
        if name != "Default":  # MLflow's own, always empty here
            # The query selects the UI's "Model training" mode: MLflow 3 opens in its GenAI
            # mode otherwise (a per-browser setting no server option or tag changes).
            click.echo(f"  {name}: {url}/#/experiments/{experiment_id}"
                       f"?{MODEL_TRAINING_QUERY}")
    sys.stdout.flush()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    os.execvpe(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                                default_tracking_uri(results_dir), "--workers", "1",
                                "--host", host, "--port", str(port)], env)


def _summarized_run_ids(files: list[Path], results_dir: Path) -> list[str]:
    """MLflow ids of the runs behind the tables: the `mlflow_run_id` column of `runs.csv`
    (one of FILES, else RESULTS_DIR/tables/runs.csv); none when it is missing."""
    import pandas as pd

    candidates = [f for f in files if Path(f).name == "runs.csv"]
    path = Path(candidates[0]) if candidates else Path(results_dir) / "tables" / "runs.csv"
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    if "mlflow_run_id" not in frame:
        return []
    return sorted({str(v) for v in frame["mlflow_run_id"].dropna()})


def _scalars(metrics: dict) -> dict[str, float]:
    from wsolbench.suite import flat_metrics

    return flat_metrics(metrics)


def _print_summary(results: dict, results_dir: Path) -> None:
    from wsolbench.runner import headline

    rows = headline(results)
    columns = ["map", "top1_cls", "top1_loc", "top5_loc", "gt_known_loc", "gt_known_loc_fair",
               "maxboxacc_v2"]
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    click.echo("")
    click.echo(f"{results['method']} on {results['dataset']} (seed {results['seed']}), "
               f"test split, % — paper protocol at tau={results['config']['cam_threshold']:.4g}, "
               f"fair tau={results['metrics']['fair']['cam_threshold']:.4g} (chosen on "
               "train-fullsup), MaxBoxAccV2 as wsolevaluation")
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        click.echo("  ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths)))
    if results.get("warning"):
        click.echo(f"warning: {results['warning']} (--select-checkpoint test): these numbers "
                   "leak the test split")
    t = results["timings"]
    click.echo(f"time: train {t['train_s']:.0f} s, evaluate {t['evaluate_s']:.0f} s, "
               f"total {t['total_s']:.0f} s; results in {results['run_dir']}/")


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _configure_logging() -> None:
    """wsolbench's own log lines (one per epoch, stage and selection) on stderr, stamped,
    whether or not stderr is a terminal; other libraries keep their own settings."""
    import logging

    log = logging.getLogger("wsolbench")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s wsolbench: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    import signal

    from wsolbench import interrupt

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _configure_logging()
    interrupt.install()
    try:
        cli.main(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        # Click turns Ctrl-C into Abort after printing an empty line; say what happened.
        sigterm = interrupt.requested_by() == signal.SIGTERM
        click.echo(f"stopped by {'SIGTERM' if sigterm else 'interrupt'}: outputs already "
                   "written are complete; a run keeps its last finished epoch (continue it "
                   "with --resume; `pretrain` continues by itself when the same command is "
                   "run again)", err=True)
        sys.exit(143 if sigterm else 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except WsolbenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        import errno

        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        # The environment, not a bug: one line. Outputs are written atomically, so what
        # was there before is intact; a run's MLflow run is marked FAILED on the way out.
        click.echo(f"error: cannot write {exc.filename or 'an output'}: {exc.strerror}; "
                   "free space or fix permissions, then rerun (add --resume to continue a "
                   "run)", err=True)
        sys.exit(2)
