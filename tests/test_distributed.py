"""DDP on CPU (gloo, 2 processes via torchrun), sharding, rank-0 writes, bf16 softmax."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import TINY_SYNTH, run_dir_of
from wsolbench.distributed import DistContext, EpochShardSampler, unshard
from wsolbench.engine import Speed, train
from wsolbench.options import RunOptions
from wsolbench.resolve import build_method
from wsolbench.suite import evaluate_split

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _run_cli(results_dir, data_dir, *extra):
    args = ["run", "--method", "tscam", "--dataset", "synth-cub", "--data-root", str(data_dir),
            *[x for k, v in TINY_SYNTH.items() for x in ("--data-set", f"{k}={v}")],
            "--epochs", "2", "--batch-size", "12", "--set", "image_size=32",
            "--set", "resize_size=36", "--set", "drop_path=0", "--no-mlflow", "--no-baselines",
            "--cam-curve-interval", "0.01", "--eval-workers", "1", "--threads", "1",
            "--results-dir", str(results_dir), *extra]
    done = subprocess.run([sys.executable, "-m", "wsolbench", *args], capture_output=True,
                          text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((run_dir_of(results_dir, "synth-cub", "tscam") / "results.json").read_text())


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path, tiny_synth, tiny_synth_dir):
    single = _run_cli(tmp_path / "one", tiny_synth_dir)
    ddp = _run_cli(tmp_path / "two", tiny_synth_dir, "--nproc-per-node", "2")
    assert ddp["distributed"]["world_size"] == 2
    # Same global batch (12 = 2 x 6), same images and augmentations per step: the losses
    # agree up to float reduction order (measured: ~2e-7 relative after 6 steps).
    for a, b in zip(single["training"]["history"], ddp["training"]["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["train_acc"] == a["train_acc"]
    # Sharded evaluation: the merged counters equal a single pass over the saved maps.
    run_dir = run_dir_of(tmp_path / "two", "synth-cub", "tscam")
    with np.load(run_dir / "predictions_test.npz") as saved:
        assert list(saved["image_ids"]) == [r.image_id for r in tiny_synth.test]

        class Preds:
            maps, logits = saved["maps"], saved["logits"]

        method, _ = build_method("tscam", None, "synth-cub", {"image_size": "32"}, 3)
        opts = RunOptions(method="tscam", dataset="synth-cub", cam_curve_interval=0.01, eval_workers=1)
        protocols = evaluate_split(tiny_synth.test, Preds, method.config, opts)
    for name in ("paper", "maxboxacc_v2", "maxboxacc", "classification"):
        expected = {k: v for k, v in protocols[name].compute().items() if k != "params"}
        got = {k: v for k, v in ddp["metrics"]["test"][name].items() if k != "params"}
        assert got == json.loads(json.dumps(expected)), name
    # One writer: a single checkpoint and results file, no stray temporaries.
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([
        "checkpoint.pt", "config.json", "grid.png", "per_image_test.csv",
        "predictions_fullsup.npz", "predictions_test.npz", "results.json"])


def test_only_rank_zero_writes(tmp_path, tiny_synth):
    torch.manual_seed(0)
    method, _ = build_method("cam", None, "synth-cub", {"epochs": "1", "batch_size": "12",
                                                        "image_size": "32", "width": "16", "init_weights": ""}, 3)
    rows = []
    train(method, tiny_synth.train, tmp_path, device=torch.device("cpu"), seed=0,
          on_epoch=rows.append, ctx=DistContext(rank=1, world_size=1))
    assert rows == [] and list(tmp_path.iterdir()) == []


def test_sampler_shards_cover_the_single_process_batches():
    single = list(EpochShardSampler(12, world_size=1))
    shards = [list(EpochShardSampler(12, rank=r, world_size=3)) for r in range(3)]
    assert unshard(shards) == single
    # Per-rank batch 2 x 3 ranks = global batch 6: step k sees the same 6 images.
    for k in range(2):
        step = sorted(i for shard in shards for i, _ in shard[2 * k:2 * k + 2])
        assert step == sorted(i for i, _ in single[6 * k:6 * k + 6])
    uneven = [list(EpochShardSampler(5, rank=r, world_size=2)) for r in range(2)]
    assert len(uneven[0]) == len(uneven[1]) == 3  # padded by wrapping, as DDP needs
    sampler = EpochShardSampler(10)
    sampler.set_epoch_seed(7)
    first = [i for i, _ in sampler]
    sampler.set_epoch_seed(8)
    assert first != [i for i, _ in sampler] and sorted(first) == list(range(10))


def test_bf16_masked_token_softmax_matches_fp32():
    from wsolbench.methods.trt import masked_token_softmax

    torch.manual_seed(0)
    scores = torch.randn(8, 50) * 30  # large logits: an unshifted exp would overflow in bf16
    keep = (torch.rand(8, 50) > 0.5).float()
    keep[0] = 0  # nothing selected: all-zero weights, no NaN
    reference = masked_token_softmax(scores, keep)
    low = masked_token_softmax(scores.bfloat16(), keep.bfloat16())
    assert torch.isfinite(low).all()
    assert torch.allclose(low.float(), reference, atol=2e-2)  # bf16 input rounding only
    assert float(low[0].abs().max()) == 0.0


@pytest.mark.slow
def test_bf16_training_step_runs_on_cpu(tmp_path, tiny_synth):
    torch.manual_seed(0)
    method, _ = build_method("trt", None, "synth-cub", {
        "epochs": "1", "stage2_epochs": "1", "batch_size": "12", "image_size": "32",
        "resize_size": "36"}, 3)
    state = train(method, tiny_synth.train, tmp_path, device=torch.device("cpu"), seed=0,
                  speed=Speed(precision="bf16"))
    assert all(np.isfinite(r["loss"]) for r in state.history)
    with pytest.raises(Exception, match="precision must be fp32 or bf16"):
        Speed(precision="fp16")
