"""wsolbench-gradcam: pytorch-grad-cam explainers scored by wsolbench's unchanged core on
tiny trained CAM and TS-CAM checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

EXPLAINERS = ["gradcam", "gradcam-pp", "eigencam"]  # two gradient-based, one gradient-free

# End to end: each test trains (once per session) or runs the CLI in a subprocess.
pytestmark = pytest.mark.slow


def test_explainers_are_listed_by_wsolbench():
    done = subprocess.run([sys.executable, "-m", "wsolbench", "list", "methods"],
                          capture_output=True, text=True, check=True)
    listed = done.stdout.split()
    assert {"gradcam", "gradcam-pp", "scorecam", "eigencam", "layercam", "xgradcam"} <= set(
        listed)
    assert {"cam", "tscam", "trt"} <= set(listed)


@pytest.mark.parametrize("source", ["cam", "tscam"])
def test_explainers_are_scored_under_every_protocol(trained, source, explain_options):
    from wsolbench.explain import explain_checkpoint

    results_dir, data, checkpoints = trained
    out = explain_checkpoint(explain_options(results_dir, data), checkpoints[source], EXPLAINERS)
    assert [r["method"] for r in out] == [f"{e}@{source}" for e in EXPLAINERS]
    for results in out:
        test = results["metrics"]["test"]
        assert 0.0 <= test["maxboxacc_v2"]["mean"] <= 100.0
        assert {"top1_loc", "gt_known_loc"} <= set(test["paper"])
        assert "boxacc_v2" in results["metrics"]["fair"]
        explained = results["explained"]
        assert explained["checkpoint"] == str(checkpoints[source])
        assert len(explained["checkpoint_sha256"]) == 64
        assert explained["layer"] == {"cam": "features", "tscam": "vit.norm"}[source]
        run_dir = Path(results["run_dir"])
        assert run_dir.parts[-4:-2] == ("synth-cub", f"{results['method']}")
        for name in ("results.json", "config.json", "predictions_test.npz",
                     "per_image_test.csv"):
            assert (run_dir / name).is_file(), name
        # Classification is the explained checkpoint's own: its logits, unchanged.
        trained_run = checkpoints[source].parent
        assert test["classification"] == json.loads(
            (trained_run / "results.json").read_text())["metrics"]["test"]["classification"]


def test_gradcam_of_a_gap_linear_classifier_is_its_relu_cam(trained, explain_options):
    """Independent check of the adapter (input pipeline, target class, layer): for global
    average pooling then a linear layer, Grad-CAM's channel weights are the class's fc
    weights / (h*w), so its map is ReLU(CAM), min-max scaled, resized bilinearly and
    min-max scaled again, as pytorch-grad-cam finishes every map (per layer, then after
    averaging the layers)."""
    from wsolbench.explain import explain_checkpoint

    results_dir, data, checkpoints = trained
    (out,) = explain_checkpoint(explain_options(results_dir, data), checkpoints["cam"], ["gradcam"])
    explained = np.load(Path(out["run_dir"]) / "predictions_test.npz")["maps"]
    cam_maps = np.load(checkpoints["cam"].parent / "predictions_test.npz")["maps"]
    size = explained.shape[-1]
    assert len(explained) == len(cam_maps) == 12
    def min_max(a: np.ndarray) -> np.ndarray:
        return (a - a.min()) / (a.max() - a.min() + 1e-7)

    for mine, raw in zip(explained, cam_maps):
        relu = np.maximum(raw, 0).astype(np.float32)
        expected = min_max(cv2.resize(min_max(relu), (size, size)))
        np.testing.assert_allclose(mine, expected, atol=1e-4)


def test_hooks_are_released_and_no_gradient_is_left(trained):
    from wsolbench.registry import get_plugin
    from wsolbench.runner import load_trained

    _, _, checkpoints = trained
    method, _ = load_trained(checkpoints["tscam"], 3)
    explainer = get_plugin("methods", "gradcam-pp")(method)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    with torch.no_grad():  # as evaluation calls it
        out = explainer.localize(images, labels)
    assert out.maps.shape == (2, 32, 32) and out.logits.shape == (2, 3)
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   for m in method.modules())
    assert all(p.grad is None for p in method.parameters())
    torch.testing.assert_close(out.logits, method(images).detach())


def _wsolbench_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The `wsolbench` console entry point in-process (the script's own `main`, so the exit
    status and stderr are what a user sees, without a second torch import)."""
    from wsolbench.cli import main

    monkeypatch.setattr(sys, "argv", ["wsolbench", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def test_a_misnamed_layer_and_a_trained_method_are_one_line_errors(trained, tmp_path,
                                                                  tiny_data_args, monkeypatch,
                                                                  capsys):
    _, data, checkpoints = trained
    base = ["explain", "--checkpoint", str(checkpoints["cam"]), "--dataset", "synth-cub",
            "--data-root", str(data), "--results-dir", str(tmp_path), *tiny_data_args]
    for extra, message in (
            (["--method", "gradcam", "--layer", "featurs.9"], "has no module 'featurs.9'"),
            (["--method", "cam"], "a trained method, not a post-hoc explainer")):
        code, err = _wsolbench_main(monkeypatch, capsys, *base, *extra)
        assert code == 2 and message in err and "Traceback" not in err, err
    code, err = _wsolbench_main(monkeypatch, capsys, "run", "--method", "gradcam", "--dataset",
                                "synth-cub", "--results-dir", str(tmp_path))
    assert code == 2 and "wsolbench explain --checkpoint" in err, err


def test_a_missing_checkpoint_is_refused_before_any_data_work(tmp_path):
    done = subprocess.run([sys.executable, "-m", "wsolbench", "explain", "--checkpoint",
                           str(tmp_path / "nope.pt"), "--method", "gradcam",
                           "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"checkpoint not found: {tmp_path / 'nope.pt'}" in done.stderr
    assert not (tmp_path / "data").exists()  # the default dataset was not generated


def test_tables_put_explainers_beside_the_trained_methods(trained, tmp_path,
                                                         explain_options):
    from wsolbench.explain import explain_checkpoint
    from wsolbench.report import make_tables

    results_dir, data, checkpoints = trained
    explain_checkpoint(explain_options(results_dir, data), checkpoints["cam"], ["gradcam"])
    reported = Path(__file__).resolve().parents[3] / "results/reference/reported.csv"
    written = make_tables(results_dir, {"cub": "synth-cub"}, ["cam", "gradcam@cam"], [0],
                          ["wsolevaluation"], reported, tmp_path)
    table = written["table2.md"].read_text()
    assert "Grad-CAM (CAM)" in table and "CAM" in table
