"""The evaluation suite of a run: every protocol on test and train-fullsup, the `fair`
threshold transfer, the baselines, checkpoint-selection scores (docs/protocols.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsolbench.fileio import atomic_write_text
from wsolbench.numbers import NUMBERS_KEY, Number, as_records
from wsolbench.options import SUITE_PLUGINS, RunOptions
from wsolbench.per_image import per_image_outcomes
from wsolbench.registry import get_plugin

PER_IMAGE_NAME = "per_image_test.csv"


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
        protocols["pxap"] = get_plugin("protocols", "pxap")(
            cam_curve_interval=opts.cam_curve_interval)
    for name in opts.skip_protocols:
        protocols.pop(name, None)
    for name in opts.extra_protocols:  # any registered protocol, a plugin's too
        protocols[name] = extra_protocol(name, opts)
    evaluate(list(protocols.values()), records, preds.maps, preds.logits,
             workers=opts.eval_workers, desc=f"evaluate {len(records)} images")
    return protocols


def extra_protocol(name: str, opts: RunOptions):
    """A registered protocol added with `--protocol NAME`: built with its defaults, and the
    run's CAM-threshold step when it takes one."""
    import inspect

    cls = get_plugin("protocols", name)
    takes = inspect.signature(cls.__init__).parameters
    return cls(**({"cam_curve_interval": opts.cam_curve_interval}
                  if "cam_curve_interval" in takes else {}))


def paper_protocol(cfg, opts: RunOptions):
    """The `loc_acc` protocol as the official code runs it for this method config: the
    config's CAM threshold, maps resized to the crop size (upstream's `CROP_SIZE` frame)."""
    return get_plugin("protocols", "loc_acc")(cam_threshold=cfg.cam_threshold,
                                              eval_size=cfg.image_size,
                                              curve_step=opts.curve_step,
                                              first_box_only=opts.first_box_only)


def protocol_from_results(results: dict[str, Any], name: str, split: str = "test"):
    """The protocol entry `name` of a run's suite, rebuilt with the parameters its
    results.json recorded (`Protocol.params`; keys its constructor does not take, such as
    descriptive ones, are left out), to redraw or re-read what the run scored."""
    import inspect

    cls = get_plugin("protocols", SUITE_PLUGINS.get(name, name))
    params = results["metrics"][split][name]["params"]
    takes = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in params.items() if k in takes})


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
    """Operating points chosen on train-fullsup, applied to test (never chosen on test),
    through `Protocol.transfer`: the paper protocol's numbers at the top level (the tables'
    `fair` rows), MaxBoxAccV2 under `boxacc_v2`, any other protocol with an operating point
    (a plugin's) under its suite name."""
    out: dict[str, Any] = {"selected_on": "fullsup",
                           **test["paper"].transfer(fullsup["paper"]),
                           "boxacc_v2": test["maxboxacc_v2"].transfer(fullsup["maxboxacc_v2"])}
    for name, protocol in test.items():
        if name not in ("paper", "maxboxacc_v2") and name in fullsup:
            moved = protocol.transfer(fullsup[name])
            if moved is not None:
                out[name] = moved
    return out


def run_baselines(data, opts: RunOptions, cfg) -> dict[str, Any]:
    """The trivial and low-level maps (docs/protocols.md §"Baselines") scored like a method
    that knows the class: MaxBoxAccV2 on test, and the `fair` transfer (GT-known Loc with the
    paper protocol's conventions and MaxBoxAccV2, thresholds chosen on train-fullsup). A
    baseline has no classifier, so Top-1/Top-5 Loc are not defined for it."""
    from wsolbench.baselines import available, baseline_maps
    from wsolbench.evaluation import evaluate

    def perfect_logits(records) -> np.ndarray:  # GT-known: the class is given
        return np.eye(data.num_classes)[[r.label for r in records]]

    out = {}
    for name in available(data.test):
        scored = {}
        for split in ("test", "fullsup"):
            records = data.split(split)
            protocols = {"paper": paper_protocol(cfg, opts),
                         "maxboxacc_v2": get_plugin("protocols", "maxboxacc_v2")(
                             cam_curve_interval=opts.cam_curve_interval,
                             first_box_only=opts.first_box_only)}
            evaluate(list(protocols.values()), records, baseline_maps(name, records),
                     perfect_logits(records), desc=f"baseline {name} ({split})",
                     workers=opts.eval_workers)
            scored[split] = protocols
        v2 = scored["test"]["maxboxacc_v2"].compute()
        fair = scored["test"]["paper"].transfer(scored["fullsup"]["paper"])
        out[name] = {"maxboxacc_v2": v2["mean"],
                     "per_iou": {d: v["max_acc"] for d, v in v2["per_iou"].items()},
                     "fair": {"gt_known_loc": fair["gt_known_loc"],
                              "cam_threshold": fair["cam_threshold"],
                              "boxacc_v2": scored["test"]["maxboxacc_v2"].transfer(
                                  scored["fullsup"]["maxboxacc_v2"])}}
    return out


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
                                  test, evaluated["fullsup"])
    atomic_write_text(out_dir / PER_IMAGE_NAME, outcomes.to_csv(index=False))
    if opts.baselines:
        metrics["baselines"] = run_baselines(data, opts, method.config)
    metrics[NUMBERS_KEY] = as_records(tabulated_numbers(metrics, evaluated["test"]))
    return metrics, preds


def tabulated_numbers(metrics: dict[str, Any], test_protocols: dict[str, Any] | None = None
                      ) -> list[Number]:
    """Every number of a run's `metrics` that tables and CSVs show (`wsolbench.numbers`):
    the paper protocol and classification (`paper`), the held-out transfer (`fair`),
    MaxBoxAccV2 as wsolevaluation defines it, each added protocol's `Protocol.numbers`
    under its suite name, and the baselines (the whole-image box every run scores, and the
    trivial and low-level maps). `test_protocols` are the test split's protocol objects
    (their `numbers` seam); without them an added protocol's numbers are left out."""
    test, fair = metrics["test"], metrics["fair"]
    paper = test["paper"]
    rows = [Number("paper", "cls_top1", test["classification"]["top1_cls"]),
            Number("paper", "cam_threshold", paper["cam_threshold"]),
            Number("fair", "cam_threshold", fair["cam_threshold"])]
    rows += [Number("paper", k, paper[k]) for k in ("top1_loc", "top5_loc", "gt_known_loc")]
    rows += [Number("fair", k, fair[k]) for k in ("top1_loc", "top5_loc", "gt_known_loc")]
    rows += _boxacc_numbers("fair", fair["boxacc_v2"]["mean"],
                            {d: v["acc"] for d, v in fair["boxacc_v2"]["per_iou"].items()})
    v2 = test["maxboxacc_v2"]
    rows += _boxacc_numbers("wsolevaluation", v2["mean"],
                            {d: v["max_acc"] for d, v in v2["per_iou"].items()})
    for name, protocol in (test_protocols or {}).items():
        if name not in SUITE_PLUGINS:  # added with --protocol: its own declared numbers
            rows += [Number(name, k, v) for k, v in protocol.numbers(test[name]).items()]
    return rows + _baseline_numbers(metrics)


def _boxacc_numbers(protocol: str, mean: float, per_iou: dict[str, float],
                    baseline: str = "") -> list[Number]:
    return [Number(protocol, "maxboxacc_v2", mean, baseline),
            *[Number(protocol, f"maxboxacc_v2_{d}", v, baseline) for d, v in per_iou.items()]]


def _baseline_numbers(metrics: dict[str, Any]) -> list[Number]:
    """The baselines' numbers (docs/protocols.md §"Baselines"): the whole-image box (the
    same at every threshold, so `fair` equals its searched value) and each map of
    `run_baselines`. No Top-1/Top-5 Loc: a baseline has no classifier."""
    test = metrics["test"]
    rows: list[Number] = []
    if "whole_image" in test["maxboxacc_v2"] and "whole_image" in test["paper"]:
        whole = test["maxboxacc_v2"]["whole_image"]
        gt_known = test["paper"]["whole_image"]["gt_known_loc"]
        for protocol in ("wsolevaluation", "fair"):
            rows += _boxacc_numbers(protocol, whole["mean"], whole["per_iou"], "whole_image")
        rows += [Number(p, "gt_known_loc", gt_known, "whole_image") for p in ("paper", "fair")]
    for name, value in (metrics.get("baselines") or {}).items():
        rows += _boxacc_numbers("wsolevaluation", value["maxboxacc_v2"],
                                value.get("per_iou", {}), name)
        fair = value.get("fair")
        if fair:
            rows += [Number("fair", "gt_known_loc", fair["gt_known_loc"], name),
                     Number("fair", "cam_threshold", fair["cam_threshold"], name)]
            rows += _boxacc_numbers("fair", fair["boxacc_v2"]["mean"],
                                    {d: v["acc"] for d, v in
                                     fair["boxacc_v2"]["per_iou"].items()}, name)
    return rows


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
