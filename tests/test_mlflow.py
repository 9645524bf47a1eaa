"""What a researcher sees in MLflow: training experiments, clean metrics, TRT's stages as
named child runs, the source commit, a summary that names its runs, a store that survives
being moved."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TINY_SYNTH

pytestmark = pytest.mark.slow  # one shared TRT run with a real MLflow store (module fixture)

VIT_FAST = {"epochs": "2", "batch_size": "12", "image_size": "32", "resize_size": "36",
            "stage2_epochs": "1"}


@pytest.fixture(scope="module")
def trt_store(tmp_path_factory, tiny_synth, tiny_synth_dir):
    """One tiny TRT run logged to a fresh store; its tables and summary run."""
    from click.testing import CliRunner

    from wsolbench.cli import cli
    from wsolbench.options import RunOptions
    from wsolbench.report import make_tables
    from wsolbench.runner import run

    results = tmp_path_factory.mktemp("store") / "results"
    opts = RunOptions(method="trt", dataset="synth-cub", data_root=tiny_synth_dir,
                      results_dir=results, overrides=VIT_FAST, dataset_overrides=TINY_SYNTH,
                      cam_curve_interval=0.01, eval_workers=1)
    out = run(opts)
    reported = results / "reported.csv"
    reported.write_text("method,backbone,input,dataset,metric,value,source,note\n")
    written = make_tables(results, {"cub": "synth-cub"}, ["trt"], [0], ["paper", "fair"],
                          reported, results / "tables", resamples=10)
    summary = CliRunner().invoke(cli, ["summary", "--results-dir", str(results),
                                       str(written["table1.tex"]), str(written["runs.csv"])])
    assert summary.exit_code == 0, summary.output
    return results, out["mlflow_run_id"]


def _client(results: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")


def test_experiments_open_as_model_training(trt_store):
    results, _ = trt_store
    client = _client(results)
    for name in ("synth-cub", "summary"):
        experiment = client.get_experiment_by_name(name)
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_metrics_are_quality_and_curves_only(trt_store):
    results, run_id = trt_store
    client = _client(results)
    run = client.get_run(run_id)
    keys = set(run.data.metrics)
    bookkeeping = ("n_images", "cam_curve_interval", "best_threshold_index",
                   "n_tied_best_indices", "threshold")
    assert not [k for k in keys if k.rsplit("/", 1)[-1] in bookkeeping or "threshold" in k]
    assert not [k for k in keys if "boxacc_v2" in k and "maxboxacc_v2" not in k]
    assert {"test/maxboxacc_v2/mean", "test/maxboxacc_v2/iou30", "fair/maxboxacc_v2/iou70",
            "test/paper/top1_loc", "test/baselines/centre_gaussian/maxboxacc_v2"} <= keys
    assert not [k for k in keys if k.startswith("baselines/")]
    assert "tau/fair/cam_threshold" in run.data.params  # chosen taus are params
    # Each stage's curve on its own epoch axis: two curves, never one joined line.
    tpsm = client.get_metric_history(run_id, "train/tpsm/loss")
    cam = client.get_metric_history(run_id, "train/cam/loss")
    assert [m.step for m in tpsm] == [1, 2] and [m.step for m in cam] == [1]
    assert "train/loss" not in keys


def test_trt_stages_are_named_child_runs_with_params_and_tags(trt_store):
    results, run_id = trt_store
    client = _client(results)
    experiment = client.get_experiment_by_name("synth-cub")
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run_id}'")
    names = sorted(c.info.run_name for c in children)
    assert names == ["trt-seed0/stage1-tpsm", "trt-seed0/stage2-cam"]
    for child in children:
        assert child.data.tags["method"] == "trt" and child.data.tags["seed"] == "0"
        assert child.info.status == "FINISHED"
        assert "lr" in child.data.params and "optimizer.decayed_tensors" in child.data.params
        assert set(child.data.metrics) >= {"train/loss", "train/lr", "train/train_acc"}
    stage2 = next(c for c in children if c.info.run_name.endswith("cam"))
    assert stage2.data.params["epochs"] == "1"


def test_source_commit_is_set_from_the_checkout(trt_store):
    results, run_id = trt_store
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    tags = _client(results).get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["wsolbench.git_dirty"] in ("true", "false")


def test_summary_run_names_the_runs_it_summarizes(trt_store):
    results, run_id = trt_store
    client = _client(results)
    experiment = client.get_experiment_by_name("summary")
    (summary,) = client.search_runs([experiment.experiment_id])
    assert summary.data.tags["wsolbench.summarized_runs"] == run_id
    assert summary.data.tags["wsolbench.summarized_run_count"] == "1"


def test_a_moved_store_keeps_its_artifacts(trt_store, tmp_path):
    from wsolbench.tracking import prepare_store_for_ui

    results, run_id = trt_store
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(results, moved)
    original = results.with_name("results-away")
    results.rename(original)  # the original is gone while the copy is read
    try:
        prepare_store_for_ui(moved)
        client = _client(moved)
        names = {a.path for a in client.list_artifacts(run_id)}
        assert {"results.json", "config.json", "grid.png"} <= names
        local = client.download_artifacts(run_id, "results.json", str(tmp_path))
        assert Path(local).stat().st_size > 0
        assert str(moved.resolve()) in client.get_run(run_id).info.artifact_uri
    finally:
        original.rename(results)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chromium(*args: str) -> str:
    done = subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--virtual-time-budget=20000", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_browser_lands_on_the_runs_table_as_the_readme_says(trt_store, tmp_path):
    """`wsolbench ui` (the README's command) started for real, opened in headless Chromium
    at the URL it prints: the runs table lists the run, the run page its metrics and its
    named stage runs. CI installs chromium (.ci/run); only a machine outside CI may skip."""
    import os
    import sys
    import time
    import urllib.request

    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run must install it")
        pytest.skip("chromium is not installed on this machine (CI installs it)")
    results, run_id = trt_store
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "wsolbench", "ui", "--results-dir",
                               str(results), "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        urls = {}
        while len(urls) < 2:  # "MLflow UI at ..." then one line per experiment
            line = server.stdout.readline()
            assert line, "wsolbench ui printed no URL"
            if ": http" in line:
                name, url = line.strip().split(": ", 1)
                urls[name] = url
        assert urls["synth-cub"].endswith("?workflowType=machine_learning")
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not start"
                time.sleep(0.5)
        runs_table = _chromium("--window-size=1600,900", "--dump-dom", urls["synth-cub"])
        # "Run Name" heads the runs table; the GenAI view (no query) has no such column.
        assert "trt-seed0" in runs_table and "Run Name" in runs_table
        run_page = urls["synth-cub"].replace("?", f"/runs/{run_id}?")
        page = _chromium("--window-size=1600,1200", "--dump-dom", run_page)
        for text in ("test/maxboxacc_v2/mean", "train/tpsm/loss", "trt-seed0/stage1-tpsm",
                     "trt-seed0/stage2-cam"):
            assert text in page, text
        _chromium("--window-size=1400,800", f"--screenshot={tmp_path / 'runs.png'}",
                  urls["synth-cub"])
        assert (tmp_path / "runs.png").stat().st_size > 10_000
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
