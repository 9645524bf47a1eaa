"""End to end: a short run on tiny synth data, resume after a kill, CLI errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import TINY_SYNTH, run_dir_of
from wsolbench.engine import train
from wsolbench.options import RunOptions
from wsolbench.resolve import build_method
from wsolbench.runner import run
from wsolbench.tracking import NullTracker

FAST = {"epochs": "1", "batch_size": "16", "image_size": "32", "resize_size": "36",
        "width": "16", "init_weights": ""}


def options(tmp_path, data_dir, **kw):
    base = dict(method="cam", dataset="synth-cub", data_root=data_dir, results_dir=tmp_path,
                overrides=FAST, dataset_overrides=TINY_SYNTH, mlflow=False, cam_curve_interval=0.01)
    base.update(kw)
    return RunOptions(**base)


VIT_FAST = {"epochs": "1", "batch_size": "12", "image_size": "32", "resize_size": "36"}


@pytest.mark.parametrize("name,overrides", [
    ("cam", FAST), ("tscam", VIT_FAST), ("trt", {**VIT_FAST, "stage2_epochs": "1"})])
def test_one_epoch_run_writes_every_output(tmp_path, tiny_synth, tiny_synth_dir, name,
                                           overrides):
    results = run(options(tmp_path, tiny_synth_dir, method=name, overrides=overrides),
                  tracker=NullTracker())
    run_dir = run_dir_of(tmp_path, "synth-cub", name)
    for output in ("config.json", "results.json", "checkpoint.pt", "grid.png",
                   "predictions_test.npz", "predictions_fullsup.npz"):
        assert (run_dir / output).is_file(), output
    saved = json.loads((run_dir / "results.json").read_text())
    m = saved["metrics"]
    assert set(m) >= {"test", "fullsup", "fair", "baselines"}
    assert {"top1_loc", "top5_loc", "gt_known_loc"} <= set(m["test"]["paper"])
    assert m["test"]["maxboxacc_v2"]["n_images"] == 12
    assert m["test"]["pxap"]["pxap"] >= 0  # synth has masks
    assert {"centre_gaussian", "saturation", "head_only"} <= set(m["baselines"])
    assert saved["config"]["epochs"] == 1 and saved["versions"]["torch"] == torch.__version__
    assert results["metrics"]["fair"]["selected_on"] == "fullsup"
    assert [r["stage"] for r in saved["training"]["history"]] == (
        ["tpsm", "cam"] if name == "trt" else ["train"])
    # Per-image outcomes average to exactly the aggregate numbers they are resampled for.
    per_image = pd.read_csv(run_dir / "per_image_test.csv")
    assert len(per_image) == 12
    test, fair = m["test"], m["fair"]
    expected = {"cls_top1": test["classification"]["top1_cls"],
                "top1_loc_paper": test["paper"]["top1_loc"],
                "top5_loc_paper": test["paper"]["top5_loc"],
                "gt_known_paper": test["paper"]["gt_known_loc"],
                "gt_known_fair": fair["gt_known_loc"], "top1_loc_fair": fair["top1_loc"],
                "boxacc_v2_mean": test["maxboxacc_v2"]["mean"]}
    for delta in ("30", "50", "70"):
        expected[f"boxacc_v2_{delta}"] = test["maxboxacc_v2"]["per_iou"][delta]["max_acc"]
    for column, value in expected.items():
        assert per_image[column].mean() * 100 == pytest.approx(value, abs=1e-9), column
    assert (per_image["error_category"] == "correct").sum() == per_image["top1_loc_paper"].sum()
    if name == "trt":  # benchmarks/trt_selection.py reads the run folder as it is
        out = tmp_path / "selection.md"
        script = Path(__file__).resolve().parents[1] / "benchmarks" / "trt_selection.py"
        subprocess.run([sys.executable, str(script),
                        str(run_dir / "checkpoint.pt"), "--data-root", str(tiny_synth_dir),
                        "--markdown", str(out)], check=True, capture_output=True)
        lines = out.read_text().splitlines()
        header, row = ([c.strip() for c in lines[i].strip("|").split("|")] for i in (0, 2))
        got = dict(zip(header, row))
        assert (got["dataset"], got["tokens"], got["images"]) == ("synth-cub", "16", "12")
        assert 0 <= float(got["kept_mean"]) < 16 and 0 <= float(got["on_object_%"]) <= 100
    if name in ("tscam", "trt"):  # benchmarks/map_factors.py: its "map" row is the run's
        out = tmp_path / "factors.md"
        script = Path(__file__).resolve().parents[1] / "benchmarks" / "map_factors.py"
        subprocess.run([sys.executable, str(script), str(run_dir / "checkpoint.pt"),
                        "--data-root", str(tiny_synth_dir), "--markdown", str(out)],
                       check=True, capture_output=True)
        lines = out.read_text().splitlines()
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        rows = {r["factor"]: r for r in (dict(zip(header, (c.strip() for c in
                                                             line.strip("|").split("|"))))
                                         for line in lines[2:])}
        assert set(rows) == {"attention", "semantic", "map"}
        # the markdown rounds to 0.1: the score of the map factor is the run's test score
        assert float(rows["map"]["maxboxacc_v2"]) == pytest.approx(
            test["maxboxacc_v2"]["mean"], abs=0.051)
        for row in rows.values():
            assert row["images"] == "12" and 0 <= float(row["mass_in_box_%"]) <= 100
    if name in ("tscam", "cam"):  # benchmarks/token_locality.py: shipped weights, probed
        out = tmp_path / "locality.md"
        script = Path(__file__).resolve().parents[1] / "benchmarks" / "token_locality.py"
        weights = {"tscam": "synth-vit", "cam": "synth-smallcnn"}[name]
        done = subprocess.run([sys.executable, str(script), str(run_dir), "--weights", weights,
                               "--data-root", str(tiny_synth_dir), "--epochs", "1",
                               "--markdown", str(out)], capture_output=True, text=True,
                               check=False)
        if name == "cam":  # this run's CNN is 16 wide, the shipped one 64: one line, exit 2
            assert done.returncode == 2 and "weights do not fit" in done.stderr
            assert "Traceback" not in done.stderr and not out.exists()
            return
        assert done.returncode == 0, done.stderr
        lines = out.read_text().splitlines()
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
                for line in lines[2:]]
        assert [row["block"] for row in rows] == [str(k) for k in range(6)]  # vit_synth: 6
        assert all(0 <= float(row["probe_acc_%"]) <= 100 for row in rows)


def test_eval_every_checks_the_heldout_split_during_training(tmp_path, tiny_synth_dir):
    results = run(options(tmp_path, tiny_synth_dir, overrides={**FAST, "epochs": "2"},
                          eval_every=1, baselines=False), tracker=NullTracker())
    history = results["training"]["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    for row in history:  # train-fullsup only: the test split is never looked at mid-run
        assert 0 <= row["fullsup_gt_known_best"] <= 100
        assert 0 <= row["fullsup_maxboxacc_v2"] <= 100


def test_killed_run_resumes_with_identical_metrics(tmp_path, tiny_synth):
    def fresh():
        torch.manual_seed(0)
        method, _ = build_method("cam", None, "synth-cub", {**FAST, "epochs": "3"},
                                 tiny_synth.num_classes)
        return method

    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    full_dir.mkdir()
    part_dir.mkdir()
    reference = train(fresh(), tiny_synth.train, full_dir, device=torch.device("cpu"), seed=3)
    train(fresh(), tiny_synth.train, part_dir, device=torch.device("cpu"), seed=3,
          stop_after_epochs=1)  # "killed" after epoch 1: only its checkpoint remains
    resumed = train(fresh(), tiny_synth.train, part_dir, device=torch.device("cpu"), seed=3,
                    resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(reference.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["train_acc"] == b["train_acc"]


def test_checkpoint_of_another_config_is_not_resumed(tmp_path, tiny_synth):
    def fresh(epochs):
        torch.manual_seed(0)
        method, _ = build_method("cam", None, "synth-cub", {**FAST, "epochs": str(epochs)},
                                 tiny_synth.num_classes)
        return method

    train(fresh(2), tiny_synth.train, tmp_path, device=torch.device("cpu"), seed=3)
    other_config = train(fresh(3), tiny_synth.train, tmp_path, device=torch.device("cpu"),
                         seed=3, resume=True)
    assert [r["epoch"] for r in other_config.history] == [1, 2, 3]  # restarted from scratch
    other_data = train(fresh(3), tiny_synth.train, tmp_path, device=torch.device("cpu"),
                       seed=3, resume=True, fingerprint="another dataset")
    assert [r["epoch"] for r in other_data.history] == [1, 2, 3]
    written = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    same = train(fresh(3), tiny_synth.train, tmp_path, device=torch.device("cpu"), seed=3,
                 resume=True, fingerprint="another dataset")
    assert same.history == other_data.history  # finished, same config: resumed, not retrained
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == written


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "wsolbench", *args], capture_output=True,
                          text=True, cwd=cwd, env={"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
                                                   "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    # Misspelt names, keys and values, a missing checkpoint:
    # test_a_misspelt_name_key_or_path_is_answered_before_torch_is_imported
    (["run", "--method", "cam", "--dataset", "cub"], "needs --data-root"),
    (["run", "--method", "cam", "--dataset", "cub", "--data-root", "/nonexistent"],
     "dataset root not found: /nonexistent"),
])
def test_cli_bad_input_is_one_clear_line(args, message, tmp_path):
    out = _cli(*args, "--results-dir", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    # Refused before any work: no dataset was generated into the results folder.
    assert not (tmp_path / "data").exists(), list(tmp_path.iterdir())


@pytest.mark.parametrize("args,message", [
    (["run", "--method", "camm"], "unknown method 'camm'; did you mean 'cam'"),
    (["run", "--method", "cam", "--dataset", "cubb"],
     "unknown dataset 'cubb'; did you mean 'cub'"),
    (["evaluate", "--checkpoint", "/nonexistent.pt"], "checkpoint not found: /nonexistent.pt"),
    (["run", "--method", "cam", "--set", "lrr=0.1"], "did you mean 'lr'"),
    (["run", "--method", "trt", "--set", "thresh=2"], "thresh must lie in (0, 1]"),
    (["run", "--method", "tscam", "--preset", "cub384"], "has no preset 'cub384'"),
    (["run", "--method", "cam", "--data-set", "num_classes=1"], "num_classes must be >= 2"),
])
def test_a_misspelt_name_key_or_path_is_answered_before_torch_is_imported(args, message,
                                                                          tmp_path):
    """A typo costs a second, not the seconds torch, torchvision, timm and MLflow take to
    import: names are checked against the entry points, paths first, and a method's preset,
    `--set` and `--data-set` values against the presets the built-in methods register
    without torch (wsolbench.method_config)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules,"
            " file=sys.stderr))\n"
            "from wsolbench.cli import main\n"
            "sys.argv = ['wsolbench', *sys.argv[1:]]\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code, *args, "--results-dir",
                          str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert "torch imported: False" in out.stderr, out.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.slow  # an end-to-end run
def test_evaluate_checkpoint_reproduces_the_run(tmp_path, tiny_synth, tiny_synth_dir):
    from wsolbench.runner import evaluate_checkpoint

    opts = options(tmp_path, tiny_synth_dir, baselines=False)
    results = run(opts, tracker=NullTracker())
    ckpt = run_dir_of(tmp_path, "synth-cub", "cam") / "checkpoint.pt"
    run_files = {p.name: p.read_bytes() for p in ckpt.parent.iterdir() if p.is_file()}
    again = evaluate_checkpoint(opts, ckpt)
    assert again["metrics"]["test"]["maxboxacc_v2"] == results["metrics"]["test"]["maxboxacc_v2"]
    assert again["metrics"]["fair"] == results["metrics"]["fair"]
    # The evaluated run is untouched: every file byte for byte, nothing added.
    assert {p.name: p.read_bytes() for p in ckpt.parent.iterdir() if p.is_file()} == run_files
    (out,) = (tmp_path / "evaluations").glob("cam-0-*/synth-cub")
    assert {"results_evaluate.json", "predictions_test.npz", "per_image_test.csv"} <= {
        p.name for p in out.iterdir()}
    with np.load(out / "predictions_test.npz") as z:
        assert z["maps"].shape[0] == 12
    from wsolbench.errors import WsolbenchError

    with pytest.raises(WsolbenchError, match="the evaluated run's own folder"):
        evaluate_checkpoint(opts, ckpt, out_dir=ckpt.parent)


@pytest.mark.slow  # an end-to-end run
def test_mlflow_run_has_params_metrics_and_grid(tmp_path, tiny_synth, tiny_synth_dir):
    import mlflow

    from wsolbench.tracking import MLflowTracker

    tracker = MLflowTracker("synth-cub", tmp_path)
    results = run(options(tmp_path, tiny_synth_dir, baselines=False, mlflow=True), tracker)
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    logged = client.get_run(results["mlflow_run_id"])
    assert logged.data.params["config.epochs"] == "1"
    assert "test/maxboxacc_v2/mean" in logged.data.metrics
    assert "train/loss" in logged.data.metrics
    names = {a.path for a in client.list_artifacts(results["mlflow_run_id"])}
    assert {"grid.png", "results.json", "config.json"} <= names


def test_cli_writes_synth_cub_in_the_cub_layout_and_refuses_to_overwrite(tmp_path):
    from click.testing import CliRunner

    from wsolbench.cli import cli
    from wsolbench.data.cub import read_cub

    out = tmp_path / "synth"
    args = ["data", "synth-cub", "--out", str(out), "--workers", "1", "--set", "num_classes=2",
            "--set", "train_per_class=3", "--set", "test_per_class=2",
            "--set", "fullsup_per_class=1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    names, train, test = read_cub(out)
    assert len(names) == 2 and len(train) == 6 and len(test) == 4
    again = CliRunner().invoke(cli, args)
    assert again.exit_code != 0 and "already exists" in str(again.exception)


@pytest.mark.parametrize("name,overrides", [
    ("cam", {**FAST, "epochs": "4"}),
    ("tscam", {"epochs": "4", "batch_size": "12", "image_size": "32", "resize_size": "36",
               "lr": "1e-3"}),
    ("trt", {"epochs": "4", "batch_size": "12", "image_size": "32", "resize_size": "36",
             "lr": "1e-3", "stage2_epochs": "3"}),
])
def test_short_training_lowers_the_loss_in_every_stage(tmp_path, tiny_synth, name, overrides):
    torch.manual_seed(0)
    method, _ = build_method(name, None, "synth-cub", overrides, tiny_synth.num_classes)
    state = train(method, tiny_synth.train, tmp_path, device=torch.device("cpu"), seed=0)
    for stage in method.stages():
        losses = [r["loss"] for r in state.history if r["stage"] == stage]
        assert losses[-1] < losses[0], (stage, losses)


@pytest.mark.slow  # an end-to-end run
def test_synth_imagenet_run_end_to_end(tmp_path):
    tiny_imagenet = {"num_classes": "6", "train_per_class": "4", "test_per_class": "3",
                     "fullsup_per_class": "1", "image_size": "32"}
    results = run(options(tmp_path, tmp_path / "data", dataset="synth-imagenet",
                          dataset_overrides=tiny_imagenet), tracker=NullTracker())
    test = results["metrics"]["test"]
    assert test["maxboxacc_v2"]["n_images"] == 18
    assert {"top1_loc", "top5_loc", "gt_known_loc"} <= set(test["paper"])


def test_pretrained_file_is_hashed_and_a_wrong_sha256_refused(tmp_path, tiny_synth,
                                                             tiny_synth_dir):
    from wsolbench.errors import WsolbenchError
    from wsolbench.fileio import sha256_file

    method, _ = build_method("cam", None, "synth-cub", FAST, tiny_synth.num_classes)
    weights = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in method.state_dict().items() if k.startswith("features.")},
               weights)
    with pytest.raises(WsolbenchError, match="does not match --pretrained-sha256"):
        run(options(tmp_path, tiny_synth_dir, pretrained=weights, pretrained_sha256="0" * 64),
            tracker=NullTracker())
    results = run(options(tmp_path, tiny_synth_dir, pretrained=weights, baselines=False,
                          pretrained_sha256=sha256_file(weights)), tracker=NullTracker())
    assert results["pretrained"]["sha256"] == sha256_file(weights)


@pytest.mark.slow
def test_log_to_a_file_has_one_line_per_epoch_and_no_progress_bars(tmp_path, tiny_synth,
                                                                    tiny_synth_dir):
    """Under a batch system or Snakemake stderr is a file: a line per epoch, no `\\r` bars
    (tqdm is *not* disabled here), rounded thresholds in the summary."""
    data_sets = [a for k, v in TINY_SYNTH.items() for a in ("--data-set", f"{k}={v}")]
    done = subprocess.run(
        [sys.executable, "-m", "wsolbench", "run", "--method", "cam", "--dataset", "synth-cub",
         "--data-root", str(tiny_synth_dir), "--results-dir", str(tmp_path), *data_sets,
         "--epochs", "2", *[a for k, v in FAST.items() if k != "epochs"
                            for a in ("--set", f"{k}={v}")],
         "--no-mlflow", "--no-baselines", "--cam-curve-interval", "0.01", "--eval-workers", "2"],
        capture_output=True, text=True, timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stderr and "\r" not in done.stdout
    epoch_lines = [line for line in done.stderr.splitlines() if " epoch " in line]
    assert len(epoch_lines) == 2, done.stderr
    assert "train epoch 1/2: loss" in epoch_lines[0] and "lr 0.003" in epoch_lines[0]
    assert "stage train: weight decay on" in done.stderr
    tau = done.stdout.split("fair tau=")[1].split(" ")[0]
    assert len(tau) <= 6, tau  # 0.82, never 0.8200000000000001
