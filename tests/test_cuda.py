"""Checks that need a CUDA GPU (skipped here without one; `benchmarks/gpu_check.sh` runs them)."""

import numpy as np
import pytest
import torch

from wsolbench.engine import Speed, predict, train
from wsolbench.resolve import build_method

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

TINY_VIT = {"epochs": "1", "batch_size": "12", "image_size": "32", "resize_size": "36"}


@pytest.mark.parametrize("name", ["cam", "tscam", "trt"])
def test_bf16_training_on_cuda_is_finite(tmp_path, tiny_synth, name):
    overrides = {**TINY_VIT, **({"width": "16", "init_weights": ""} if name == "cam" else {}),
                 **({"stage2_epochs": "1"} if name == "trt" else {})}
    torch.manual_seed(0)
    method, _ = build_method(name, None, "synth-cub", overrides, tiny_synth.num_classes)
    state = train(method, tiny_synth.train, tmp_path, device=torch.device("cuda"), seed=0,
                  speed=Speed(precision="bf16"))
    assert all(np.isfinite(r["loss"]) for r in state.history)
    preds = predict(method, tiny_synth.test, device=torch.device("cuda"),
                    speed=Speed(precision="bf16"))
    assert np.isfinite(preds.maps).all() and np.isfinite(preds.logits).all()


def test_cuda_maps_match_cpu_maps(tiny_synth):
    torch.manual_seed(0)
    method, _ = build_method("trt", None, "synth-cub", TINY_VIT, tiny_synth.num_classes)
    cpu = predict(method, tiny_synth.test, device=torch.device("cpu"))
    gpu = predict(method, tiny_synth.test, device=torch.device("cuda"))
    np.testing.assert_allclose(gpu.maps, cpu.maps, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gpu.logits, cpu.logits, rtol=1e-3, atol=1e-4)
