"""The typed numbers schema (`metrics.numbers`): what the suite writes, what tables read."""

import json
import math

import pytest

from wsolbench.errors import WsolbenchError
from wsolbench.numbers import Number, as_records, read_numbers
from wsolbench.protocol import EvalBatch, Protocol
from wsolbench.suite import tabulated_numbers
from wsolbench.tables import collect_runs


def _metrics() -> dict:
    """A run's metrics as the suite writes them (hand-chosen values)."""
    return {
        "test": {
            "classification": {"top1_cls": 91.0},
            "paper": {"top1_loc": 40.0, "top5_loc": 50.0, "gt_known_loc": 60.0,
                      "cam_threshold": 0.2, "whole_image": {"gt_known_loc": 5.0}},
            "maxboxacc_v2": {"mean": 50.0, "per_iou": {"30": {"max_acc": 80.0},
                                                       "50": {"max_acc": 50.0},
                                                       "70": {"max_acc": 20.0}},
                             "whole_image": {"mean": 3.0,
                                             "per_iou": {"30": 9.0, "50": 0.0, "70": 0.0}}},
            "centre_hit": {"hit_rate": 70.0, "n_images": 10, "flag": True, "params": {}},
        },
        "fair": {"top1_loc": 41.0, "top5_loc": 51.0, "gt_known_loc": 61.0,
                 "cam_threshold": 0.3,
                 "boxacc_v2": {"mean": 49.0, "per_iou": {d: {"acc": v, "threshold": 0.4}
                                                         for d, v in (("30", 79.0),
                                                                      ("50", 49.0),
                                                                      ("70", 19.0))}}},
        "baselines": {"saturation": {
            "maxboxacc_v2": 12.0, "per_iou": {"30": 30.0, "50": 5.0, "70": 1.0},
            "fair": {"gt_known_loc": 8.0, "cam_threshold": 0.5,
                     "boxacc_v2": {"mean": 11.0, "per_iou": {
                         d: {"acc": v} for d, v in (("30", 29.0), ("50", 4.0), ("70", 0.0))}}}}},
    }


class _CentreHit(Protocol):
    """A stand-in plugin protocol: declares one number of its result."""

    name = "centre_hit"

    def params(self):
        return {}

    def _empty_state(self):
        return {}

    def _update(self, batch: EvalBatch) -> None:
        return None

    def _compute(self):
        return {}

    def numbers(self, result):
        return {"hit_rate": result["hit_rate"]}


def test_the_suite_tabulates_every_number_by_hand():
    numbers = {(n.baseline, n.protocol, n.metric): n.value
               for n in tabulated_numbers(_metrics(), {"centre_hit": _CentreHit()})}
    expected = {
        ("", "paper", "cls_top1"): 91.0, ("", "paper", "cam_threshold"): 0.2,
        ("", "fair", "cam_threshold"): 0.3,
        ("", "paper", "top1_loc"): 40.0, ("", "paper", "top5_loc"): 50.0,
        ("", "paper", "gt_known_loc"): 60.0,
        ("", "fair", "top1_loc"): 41.0, ("", "fair", "top5_loc"): 51.0,
        ("", "fair", "gt_known_loc"): 61.0,
        ("", "fair", "maxboxacc_v2"): 49.0, ("", "fair", "maxboxacc_v2_30"): 79.0,
        ("", "fair", "maxboxacc_v2_50"): 49.0, ("", "fair", "maxboxacc_v2_70"): 19.0,
        ("", "wsolevaluation", "maxboxacc_v2"): 50.0,
        ("", "wsolevaluation", "maxboxacc_v2_30"): 80.0,
        ("", "wsolevaluation", "maxboxacc_v2_50"): 50.0,
        ("", "wsolevaluation", "maxboxacc_v2_70"): 20.0,
        ("", "centre_hit", "hit_rate"): 70.0,  # the plugin's declared number, nothing else
        **{("whole_image", p, "maxboxacc_v2"): 3.0 for p in ("wsolevaluation", "fair")},
        **{("whole_image", p, f"maxboxacc_v2_{d}"): v for p in ("wsolevaluation", "fair")
           for d, v in (("30", 9.0), ("50", 0.0), ("70", 0.0))},
        ("whole_image", "paper", "gt_known_loc"): 5.0,
        ("whole_image", "fair", "gt_known_loc"): 5.0,
        ("saturation", "wsolevaluation", "maxboxacc_v2"): 12.0,
        ("saturation", "wsolevaluation", "maxboxacc_v2_30"): 30.0,
        ("saturation", "wsolevaluation", "maxboxacc_v2_50"): 5.0,
        ("saturation", "wsolevaluation", "maxboxacc_v2_70"): 1.0,
        ("saturation", "fair", "gt_known_loc"): 8.0,
        ("saturation", "fair", "cam_threshold"): 0.5,
        ("saturation", "fair", "maxboxacc_v2"): 11.0,
        ("saturation", "fair", "maxboxacc_v2_30"): 29.0,
        ("saturation", "fair", "maxboxacc_v2_50"): 4.0,
        ("saturation", "fair", "maxboxacc_v2_70"): 0.0,
    }
    assert numbers == expected


def test_the_default_protocol_numbers_are_its_scalars_without_the_count():
    result = {"hit_rate": 70.0, "n_images": 10, "flag": True, "params": {"a": 1}, "note": "x"}
    assert Protocol.numbers(_CentreHit(), result) == {"hit_rate": 70.0}


@pytest.mark.parametrize("bad", [math.nan, math.inf, True, "12", None])
def test_a_number_must_be_a_finite_number(bad):
    with pytest.raises(TypeError, match="finite number"):
        Number("paper", "top1_loc", bad)


def test_records_round_trip_through_json():
    numbers = tabulated_numbers(_metrics())
    back = read_numbers({"metrics": {"numbers": json.loads(json.dumps(as_records(numbers)))}},
                        "x.json")
    assert back == numbers and all(isinstance(n.value, float) for n in back)


@pytest.mark.parametrize("records, message", [
    (None, r"run.json: no `metrics.numbers` \(written by an older wsolbench\?\)"),
    ([{"protocol": "paper", "metric": "top1_loc", "value": 1.0}, {"protocol": "paper"}],
     r"run.json: metrics.numbers\[1\]: "),
    ([{"protocol": "paper", "metric": "top1_loc", "value": "high"}],
     r"run.json: metrics.numbers\[0\]: value must be a finite number"),
    ([{"protocol": "paper", "metric": "top1_loc", "value": 1.0, "extra": 2}],
     r"run.json: metrics.numbers\[0\]: expected keys"),
])
def test_malformed_numbers_are_one_error_naming_the_file_and_record(records, message):
    results = {"metrics": {} if records is None else {"numbers": records}}
    with pytest.raises(WsolbenchError, match=message):
        read_numbers(results, "run.json")


def test_tables_read_only_the_numbers(tmp_path):
    """Tables take their numbers from `metrics.numbers` alone: nested results that disagree
    with them are not read, and a file without them is named."""
    metrics = _metrics()
    numbers = tabulated_numbers(metrics)
    metrics = {"numbers": as_records(
        [Number(n.protocol, n.metric, 33.0 if n.metric == "top1_loc" and not n.baseline
                else n.value, n.baseline) for n in numbers])}  # no nested results at all
    run_dir = tmp_path / "runs/synth-cub/cam/synth-00000000/0"
    run_dir.mkdir(parents=True)
    results = {"method": "cam", "display_name": "CAM", "metrics": metrics,
               "config": {"image_size": 64, "backbone": "smallcnn"}}
    (run_dir / "results.json").write_text(json.dumps(results))
    runs = collect_runs(tmp_path, ["synth-cub"], ["cam"], [0])
    paper = runs[(runs["method"] == "cam") & (runs["protocol"] == "paper")]
    assert dict(zip(paper["metric"], paper["value"]))["top1_loc"] == 33.0
    saturation = runs[runs["method"] == "baseline:saturation"]
    assert len(saturation) == 10 and set(saturation["display_name"]) == {
        "colour saturation (baseline)"}
    del results["metrics"]["numbers"]
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(WsolbenchError, match=f"{run_dir / 'results.json'}: no `metrics.numbers`"):
        collect_runs(tmp_path, ["synth-cub"], ["cam"], [0])
