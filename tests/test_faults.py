"""Faults and interrupted work: a killed job never leaves a hang, a phantom run or a
half-written output behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_dir_of

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _wsolbench(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wsolbench", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


@pytest.mark.slow
def test_a_killed_data_prepare_does_not_hang_the_next_one(tmp_path):
    """kill -9 of `data prepare` mid-generation (its pool workers survive it): the next
    prepare of the same dataset must not wait for the dead one's lock."""
    args = ["data", "prepare", "--dataset", "synth-cub", "--results-dir", str(tmp_path),
            "--data-set", "num_classes=4", "--data-set", "train_per_class=400",
            "--data-set", "test_per_class=10", "--data-set", "fullsup_per_class=2"]
    first = _wsolbench(*args)
    deadline = time.monotonic() + 120
    data = tmp_path / "data"
    while time.monotonic() < deadline and not any(data.glob(".synth-cub-*.tmp-*/**/*.jpg")):
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()
    os.kill(first.pid, signal.SIGKILL)  # the main process only, as the OOM killer does
    first.wait()
    second = _wsolbench(*args)
    try:
        out, err = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert second.returncode == 0, err[-2000:]
    assert "1600 train" in out
    assert not list(data.glob(".synth-cub-*.tmp-*"))  # the killed attempt's folder is gone


def _tiny_trt_args(results, data_dir, *extra):
    from tests.conftest import TINY_SYNTH

    data_sets = [a for k, v in TINY_SYNTH.items() for a in ("--data-set", f"{k}={v}")]
    return ["run", "--method", "trt", "--dataset", "synth-cub", "--data-root", str(data_dir),
            "--results-dir", str(results), *data_sets, "--epochs", "12", "--batch-size", "12",
            "--set", "image_size=32", "--set", "resize_size=36", "--set", "stage2_epochs=2",
            "--cam-curve-interval", "0.01", "--no-baselines", "--eval-workers", "1",
            "--threads", "1", *extra]


def _kill_after_first_checkpoint(job, results, sig):
    """Kill `job` once a TRT run under `results` has written its first checkpoint."""
    deadline = time.monotonic() + 300
    runs = results / "runs" / "synth-cub" / "trt"
    while not list(runs.glob("*/0/checkpoint.pt")) and time.monotonic() < deadline:
        assert job.poll() is None, job.communicate()
        time.sleep(0.05)
    os.kill(job.pid, sig)
    return job.communicate(timeout=120)


def _runs(results):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synth-cub")
    return client, client.search_runs([experiment.experiment_id])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killed_run_resumes_into_the_same_mlflow_run_with_every_epoch(tmp_path, tiny_synth,
                                                                       tiny_synth_dir, sig):
    """SIGTERM (scancel) or SIGKILL mid-training, then `--resume`: one MLflow run, FINISHED,
    every epoch's loss at its own step exactly once; nothing half-written in the run
    folder; SIGTERM itself ends with one line and exit status 143, the run KILLED."""
    results = tmp_path / "results"
    job = _wsolbench(*_tiny_trt_args(results, tiny_synth_dir))
    _, err = _kill_after_first_checkpoint(job, results, sig)
    run_dir = run_dir_of(results, "synth-cub", "trt")
    client, runs = _runs(results)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if sig != signal.SIGKILL:  # scancel / a time limit, or Ctrl-C
        assert job.returncode == (143 if sig == signal.SIGTERM else 130)
        assert ("stopped by SIGTERM" if sig == signal.SIGTERM else "stopped by interrupt") \
            in err and "Traceback" not in err
        assert parent.info.status == "KILLED"
        assert all(r.info.status == "KILLED" for r in runs)
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    done = subprocess.run([sys.executable, "-m", "wsolbench",
                           *_tiny_trt_args(results, tiny_synth_dir, "--resume")],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    client, runs = _runs(results)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    assert sorted(r.data.tags["stage"] for r in runs if r.data.tags.get("stage")) == [
        "cam", "tpsm"]
    for key, epochs in (("train/tpsm/loss", 12), ("train/cam/loss", 2)):
        steps = [m.step for m in client.get_metric_history(parent.info.run_id, key)]
        assert sorted(steps) == list(range(1, epochs + 1)), (key, sorted(steps))


@pytest.mark.slow
def test_a_fresh_rerun_closes_the_killed_attempts_run(tmp_path, tiny_synth, tiny_synth_dir):
    results = tmp_path / "results"
    job = _wsolbench(*_tiny_trt_args(results, tiny_synth_dir))
    _kill_after_first_checkpoint(job, results, signal.SIGKILL)
    _, runs = _runs(results)
    assert {r.info.status for r in runs} == {"RUNNING"}  # what kill -9 leaves behind
    # The same command again, without --resume (one torch thread, as the killed attempt:
    # two on a shared 2-core machine ran several times slower).
    done = subprocess.run([sys.executable, "-m", "wsolbench",
                           *_tiny_trt_args(results, tiny_synth_dir)],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _, runs = _runs(results)
    assert "RUNNING" not in {r.info.status for r in runs}
    assert {r.info.status for r in runs} == {"KILLED", "FINISHED"}


TINY = ["--data-set", "num_classes=3", "--data-set", "train_per_class=4", "--data-set",
        "test_per_class=2", "--data-set", "fullsup_per_class=1", "--data-set", "image_size=32"]


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1"], "Invalid value for '--lr'"),
    (["--threads", "-1"], "Invalid value for '--threads'"),
    (["--num-workers", "-1"], "Invalid value for '--num-workers'"),
    (["--epochs", "0"], "Invalid value for '--epochs'"),
    (["--set", "backbone=resnet5O"], "backbone='resnet5O' is not a timm model; did you mean"),
    (["--set", "lr_steps=[3,'x']"], "override lr_steps"),
    (["--set", "lr_steps=0"], "lr_steps must be epochs >= 1"),
    (["--set", "mean=0.5"], "mean and std take one value per RGB channel"),
    (["--set", "lr=-0.1"], "lr and lr_factor must be > 0"),
    (["--data-set", "num_classes=0"], "num_classes must be >= 1"),
    (["--data-set", "object_area=0.5"], "object_area is a range (low, high)"),
    (["--data-set", "image_size=4"], "image_size must be >= 16 px"),
    (["--pretrained", "/nonexistent.pth"], "'/nonexistent.pth' does not exist"),
    (["--pretrained-sha256", "abc"], "--pretrained-sha256 pins the weights of --pretrained"),
    (["--results-dir", "/etc/hostname"], "is a file, not a folder"),
    (["--skip-protocol", "maxboxacc_v2"], "--skip-protocol maxboxacc_v2: only maxboxacc, pxap"),
    (["--skip-protocol", "paper"], "the others feed the tables, the fair threshold"),
])
def test_bad_run_options_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, args,
                                                     message):
    """Through the console entry point itself (in-process: the same `main` as the
    `wsolbench` script), so the exit status and stderr are what a user sees."""
    from tests.conftest import console_main

    code, err = console_main(monkeypatch, capsys, "run", "--method", "cam", "--dataset",
                             "synth-cub", "--results-dir", str(tmp_path / "r"), "--no-mlflow",
                             *TINY, *args)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert message in err and "Traceback" not in err, err
    assert len(lines) <= 3, lines  # click's usage line + hint + the error at most
    assert not (tmp_path / "r" / "runs").exists()  # nothing was started


def test_non_utf8_annotation_file_names_file_and_line(tmp_path):
    from tests.conftest import write_cub
    from wsolbench.data.cub import read_cub
    from wsolbench.errors import InputFileError

    root = write_cub(tmp_path)
    classes = root / "CUB_200_2011" / "classes.txt"
    classes.write_bytes(classes.read_bytes().replace(b"Albatross_1", b"Albatross_\xff"))
    with pytest.raises(InputFileError, match=r"classes.txt:2: not UTF-8 text \(byte 0xff"):
        read_cub(root)


def test_checkpoint_from_another_version_is_named(tmp_path, tiny_synth, tiny_synth_dir):
    import torch

    from tests.conftest import TINY_SYNTH
    from wsolbench.errors import WsolbenchError
    from wsolbench.options import RunOptions
    from wsolbench.runner import evaluate_checkpoint, run
    from wsolbench.tracking import NullTracker

    opts = RunOptions(method="cam", dataset="synth-cub", data_root=tiny_synth_dir,
                      results_dir=tmp_path, dataset_overrides=TINY_SYNTH, mlflow=False,
                      baselines=False, cam_curve_interval=0.01,
                      overrides={"epochs": "1", "image_size": "32", "resize_size": "36",
                                 "width": "16", "init_weights": ""})
    run(opts, tracker=NullTracker())
    ckpt_path = run_dir_of(tmp_path, "synth-cub", "cam") / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["config"]["future_knob"] = 3
    ckpt["wsolbench_version"] = "9.9"
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(WsolbenchError, match=r"written by method 'cam' of wsolbench 9.9; .*"
                                             r"does not know: future_knob"):
        evaluate_checkpoint(opts, tmp_path / "future.pt")


def test_figures_without_runs_say_what_is_missing(tmp_path, tiny_synth_dir):
    done = subprocess.run([sys.executable, "-m", "wsolbench", "figures", "--dataset",
                           "synth-cub", "--data-root", str(tiny_synth_dir),
                           "--results-dir", str(tmp_path), *TINY],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 2 and "no method has runs on synth-cub" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_images_reports_every_problem_of_a_split_at_once(tmp_path, caplog):
    """Files that were fine when the annotations were read and broke later (or a split read
    from metadata, which never opens images): a truncated image, a missing one, one whose
    real size disagrees with the annotations; all reported in one error. A 16-bit image is
    accepted, scaled, and the user warned."""
    from dataclasses import replace

    import numpy as np
    from PIL import Image

    from tests.conftest import write_cub
    from wsolbench.data.cub import read_cub
    from wsolbench.data.images import check_images, load_rgb
    from wsolbench.errors import WsolbenchError

    _, train, test = read_cub(write_cub(tmp_path, n_classes=2, per_class=4))
    records = list(train) + list(test)
    records[1].path.write_bytes(records[1].path.read_bytes()[:300])
    records[3].path.unlink()
    Image.new("RGB", (80, 40)).save(records[5].path)  # annotations were read for 50x40
    with pytest.raises(WsolbenchError) as err:
        check_images(records, "test")
    message = str(err.value)
    assert message.startswith("split 'test': 3 problem(s) in 8 images"), message
    assert "cannot decode" in message and "image file not found" in message
    assert "image is 80x40, the annotations say 50x40" in message
    # A size the reader never read (ILSVRC train: (0, 0)) is not compared.
    check_images([replace(records[0], size=(0, 0), boxes=np.zeros((0, 4), np.int64))], "train")
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((40, 50), 32768, np.uint16)).save(deep)
    assert np.asarray(load_rgb(deep)).max() == 128  # not clipped to 255 (white)
    import logging

    log = logging.getLogger("wsolbench")  # the CLI stops it propagating to the root
    log.addHandler(caplog.handler)
    try:
        check_images([replace(records[0], path=deep)], "train")
    finally:
        log.removeHandler(caplog.handler)
    assert "16-bit image" in caplog.text


@pytest.mark.slow
def test_a_broken_fullsup_image_stops_the_run_before_training(tmp_path, tiny_synth):
    """train-fullsup is read from metadata (no image is opened then): a truncated image
    there used to surface after the whole training. Now: one line, exit 2, no run started."""
    import shutil

    from tests.conftest import TINY_SYNTH

    data = tmp_path / "data"
    shutil.copytree(tiny_synth.root, data / tiny_synth.root.name)
    victim = data / tiny_synth.root.name / "CUBV2" / tiny_synth.fullsup[0].image_id
    victim.write_bytes(victim.read_bytes()[:200])
    data_sets = [a for k, v in TINY_SYNTH.items() for a in ("--data-set", f"{k}={v}")]
    done = subprocess.run([sys.executable, "-m", "wsolbench", "run", "--method", "cam",
                           "--dataset", "synth-cub", "--data-root", str(data), *data_sets,
                           "--results-dir", str(tmp_path / "r"), "--no-mlflow"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "split 'fullsup': 1 problem(s)" in done.stderr and "cannot decode" in done.stderr
    assert "Traceback" not in done.stderr and "epoch" not in done.stderr
    assert not (tmp_path / "r" / "runs").exists()


def test_damaged_mlflow_store_is_one_line(tmp_path):
    from wsolbench.errors import WsolbenchError
    from wsolbench.tracking import MLflowTracker

    (tmp_path / "mlflow.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(WsolbenchError, match=r"mlflow.db: not a usable MLflow store .*"
                                             r"--no-mlflow"):
        MLflowTracker("synth-cub", tmp_path)


def test_a_killed_writers_temp_file_is_cleared_by_the_next_write(tmp_path):
    from wsolbench import fileio

    stale = tmp_path / ".results.json.abc123.tmp"
    stale.write_text("{half")
    old = fileio._PROCESS_START - 60
    os.utime(stale, (old, old))
    fileio.atomic_write_json(tmp_path / "results.json", {"ok": 1})
    assert not stale.exists() and (tmp_path / "results.json").is_file()
    assert not list(tmp_path.glob(".*.tmp"))


def test_full_disk_is_one_line_and_keeps_earlier_outputs(tmp_path, monkeypatch, capsys):
    """ENOSPC mid-write: one line, exit 2; the file that was there is untouched (atomic)."""
    import errno

    from wsolbench import cli, fileio

    target = tmp_path / "results.json"
    fileio.atomic_write_json(target, {"earlier": True})

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def write_during_command(*_args, **_kwargs):
        fileio.atomic_save(target, full)

    monkeypatch.setattr(cli, "cli", type("Cli", (), {"main": staticmethod(
        lambda **_: write_during_command())}))
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "No space left on device" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert target.read_text().strip() == '{\n  "earlier": true\n}'.strip()
    assert not list(tmp_path.glob(".*.tmp"))


def test_zero_area_cub_box_says_so(tmp_path):
    from tests.conftest import write_cub
    from wsolbench.data.cub import read_cub
    from wsolbench.errors import InputFileError

    root = write_cub(tmp_path)
    boxes = root / "CUB_200_2011" / "bounding_boxes.txt"
    lines = boxes.read_text().splitlines()
    lines[2] = "3 5.0 4.0 0.0 30.0"
    boxes.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError, match=r"bounding_boxes.txt:3: .*zero or negative width"):
        read_cub(root)


def test_weights_that_do_not_fit_show_shapes_and_what_they_look_like():
    import timm
    from wsolbench.methods.tscam import TSCAM, TSCAMConfig

    from wsolbench.errors import WsolbenchError

    model = TSCAM(TSCAMConfig(image_size=32, resize_size=32), 3)
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                              img_size=32)
    with pytest.raises(WsolbenchError) as err:
        model.load_pretrained(other.state_dict())
    message = str(err.value)
    assert "file: first layer width 192, 12 blocks; model: first layer width 128, 6 blocks" \
        in message
    assert "vit.blocks.0.attn.qkv.weight: file (576, 192) vs model (384, 128)" in message


@pytest.mark.slow  # an end-to-end run
def test_a_run_of_another_config_never_overwrites_a_finished_one(tmp_path, tiny_synth,
                                                                  tiny_synth_dir):
    """Same dataset, method and seed, other epochs: a folder of its own (the first run's
    files stay byte for byte); changed data behind the same config: the first run's files
    are moved aside; a rerun of the same config keeps the folder. (On the code before
    run keys, the epochs-2 run shared the first run's folder.)"""
    from tests.conftest import TINY_SYNTH
    from wsolbench.options import RunOptions
    from wsolbench.runner import run
    from wsolbench.tracking import NullTracker

    def options(epochs):
        return RunOptions(method="cam", dataset="synth-cub", data_root=tiny_synth_dir,
                          results_dir=tmp_path, dataset_overrides=TINY_SYNTH, mlflow=False,
                          baselines=False, cam_curve_interval=0.01,
                          overrides={"epochs": str(epochs), "image_size": "32",
                                     "resize_size": "36", "width": "16", "init_weights": ""})

    import json

    run(options(1), tracker=NullTracker())
    run_dir = run_dir_of(tmp_path, "synth-cub", "cam")
    run(options(1), tracker=NullTracker())  # same config: a rerun in place
    assert not (run_dir / "superseded").exists()
    first = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    # Another config gets a folder of its own (its run key): nothing of the first moves.
    run(options(2), tracker=NullTracker())
    (other,) = [p for p in run_dir.parent.parent.glob("*/0") if p != run_dir]
    assert json.loads((other / "results.json").read_text())["config"]["epochs"] == 2
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == first
    # What the run key cannot see (the data read from the same root changed since) still
    # never overwrites silently: the earlier files move to superseded/<time>/.
    config = json.loads((run_dir / "config.json").read_text())
    config["dataset_info"] = {"read": "other data"}
    (run_dir / "config.json").write_text(json.dumps(config))
    first["config.json"] = (run_dir / "config.json").read_bytes()
    run(options(1), tracker=NullTracker())
    (kept,) = list((run_dir / "superseded").iterdir())
    moved = {p.name: p.read_bytes() for p in kept.iterdir()}
    assert set(moved) == set(first) and moved["results.json"] == first["results.json"]


def test_an_unwritable_results_folder_is_refused_up_front(tmp_path, monkeypatch, capsys):
    """Root ignores permission bits, so the check (os.access) is exercised by making it
    answer as it would for a user without write permission."""
    from wsolbench.cli import main

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).startswith(
        str(tmp_path)) else real_access(path, mode))
    monkeypatch.setattr(sys, "argv", ["wsolbench", "run", "--method", "cam", "--dataset",
                                      "synth-cub", "--results-dir", str(tmp_path / "out"),
                                      "--no-mlflow", *TINY])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "is not writable" in err and "Traceback" not in err


def test_a_swallowed_stop_signal_is_raised_again_at_the_next_check():
    """SIGTERM whose KeyboardInterrupt is swallowed (a finalizer, library code catching
    BaseException) is not lost: `interrupt.check()` raises it again and the exit status still
    says SIGTERM. Before, a run in CI ignored Ctrl-C this way and finished with status 0."""
    lines = _interrupt_script("""
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except BaseException:
            print('swallowed')
        try:
            interrupt.check()
        except KeyboardInterrupt:
            print('stopped by', interrupt.requested_by())
        """)
    assert lines[:2] == ["swallowed", f"stopped by {int(signal.SIGTERM)}"]


def test_a_stop_during_a_store_write_waits_for_the_write_and_a_second_one_does_not():
    """SIGTERM inside `deferred()` (every MLflow write) lets the write finish and is raised at
    the next check; a second signal raises at once. Before, an interrupted SQLite commit
    left the store locked, the run could not be marked KILLED, and the exit status was 1."""
    lines = _interrupt_script("""
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            print('write finished')
        try:
            interrupt.check()
        except KeyboardInterrupt:
            print('stopped at the check')
        try:
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
                print('not reached')
        except KeyboardInterrupt:
            print('second signal stops at once')
        """)
    assert lines[:3] == ["write finished", "stopped at the check",
                         "second signal stops at once"]


def _interrupt_script(body: str) -> list[str]:
    """stdout lines of `body` run in a fresh Python with wsolbench's stop handlers."""
    import textwrap

    code = ("import os, signal, time\nfrom wsolbench import interrupt\ninterrupt.install()\n"
            + textwrap.dedent(body))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_prediction_stops_at_the_next_batch_after_a_swallowed_interrupt(monkeypatch,
                                                                        tiny_synth):
    import torch

    from wsolbench import interrupt
    from wsolbench.engine import predict
    from wsolbench.resolve import build_method

    method, _ = build_method("cam", None, "synth-cub", {"image_size": "32", "width": "16",
                                                        "init_weights": ""}, 3)
    predict(method, tiny_synth.test[:2], device=torch.device("cpu"))  # no request: runs
    monkeypatch.setattr(interrupt, "_received", [int(signal.SIGINT)])
    with pytest.raises(KeyboardInterrupt):
        predict(method, tiny_synth.test[:2], device=torch.device("cpu"))
