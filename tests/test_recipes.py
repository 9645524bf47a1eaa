"""The official training recipes, detail by detail (docs/recipes.md).

Each expected value is derived here from the official code's rule, by hand or by a literal
port of the official function, never read back from wsolbench.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from wsolbench.methods.cam import CAM
from wsolbench.methods.trt import TRT, TRTConfig
from wsolbench.methods.tscam import TSCAM, TSCAMConfig

from tests.conftest import run_dir_of
from wsolbench.data.cub import official_box, read_cub
from wsolbench.engine import _make_optimizer
from wsolbench.registry import get_plugin

# ------------------------------------------------------------------ 1. learning-rate rule


def official_lr_schedule(lr: float, steps: tuple[int, ...], factor: float, epochs: int
                         ) -> list[float]:
    """A literal port of ReAttentionTransformer `adjust_learning_rate_normal`, called at the
    start of every epoch from 1 on an optimizer whose lr it multiplies in place."""
    current, out = lr, []
    for epoch in range(1, epochs + 1):
        decay = False
        for step in steps[::-1]:
            if epoch % step == 0:
                decay = True
                break
        if decay:
            current = factor * current
        out.append(current)
    return out


def test_trt_ilsvrc_schedule_by_hand():
    # Steps (2, 4, 6, 8), factor 0.4: every even epoch decays once (10 and 12 too, since
    # 2 divides them), however many steps divide it.
    cfg = dataclasses_replace(TRT.presets["ilsvrc"], model="vit_synth")  # recipe, small net
    expected = [5e-4, 2e-4, 2e-4, 8e-5, 8e-5, 3.2e-5, 3.2e-5, 1.28e-5, 1.28e-5, 5.12e-6,
                5.12e-6, 2.048e-6]
    for stage in ("tpsm", "cam"):
        got = [TRT(cfg, 3).stage_config(stage).lr_at(e) for e in range(1, 13)]
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def _period_presets():
    for method in (CAM, TSCAM, TRT):
        for preset, cfg in method.presets.items():
            if cfg.lr_step_mode == "period":
                yield pytest.param(method, preset, id=f"{method.name}-{preset}")


@pytest.mark.parametrize("method, preset", list(_period_presets()))
def test_every_official_preset_follows_the_official_lr_rule(method, preset):
    cfg = method.presets[preset]
    stages = ("tpsm", "cam") if method is TRT else ("train",)
    for stage in stages:
        stage_cfg = (TRT(dataclasses_replace(cfg, model="vit_synth"), 2).stage_config(stage)
                     if method is TRT else cfg)
        want = official_lr_schedule(stage_cfg.lr, stage_cfg.lr_steps, stage_cfg.lr_factor,
                                    stage_cfg.epochs)
        got = [stage_cfg.lr_at(e) for e in range(1, stage_cfg.epochs + 1)]
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{preset} {stage}")


def test_lr_steps_must_be_positive():
    from wsolbench.errors import WsolbenchError

    with pytest.raises(WsolbenchError, match="lr_steps"):
        TRTConfig(lr_steps=(0,))


# ------------------------------------------------------------------ 2. weight-decay groups


def _decay_sets(optimizer):
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0
               for p in g["params"]}
    exempt = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0
              for p in g["params"]}
    return decayed, exempt


@pytest.mark.parametrize("method_cls, cfg_cls", [(TRT, TRTConfig), (TSCAM, TSCAMConfig)])
def test_weight_decay_groups_match_timm_create_optimizer(method_cls, cfg_cls):
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    method = method_cls(cfg_cls(image_size=32, resize_size=32, weight_decay=0.05), 4)
    stage = method.stages()[0]
    params = list(method.begin_stage(stage))
    optimizer, counts = _make_optimizer(method, params, method.stage_config(stage))
    decayed, exempt = _decay_sets(optimizer)

    names = {id(p): n for n, p in method.named_parameters()}
    trainable = {id(p) for p in params}
    by_rule = {i for i in trainable if names[i].endswith(".bias")
               or dict(method.named_parameters())[names[i]].ndim <= 1
               or names[i] in ("vit.pos_embed", "vit.cls_token")}
    assert exempt == by_rule
    assert decayed == trainable - by_rule
    assert {"vit.pos_embed", "vit.cls_token"} <= {names[i] for i in exempt}
    assert counts == {"decayed_tensors": len(decayed), "exempt_tensors": len(exempt)}
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.05}

    # Independent: timm's own create_optimizer on the same model gives the same split.
    reference = create_optimizer_v2(method, "adamw", lr=1e-3, weight_decay=0.05)
    assert _decay_sets(reference) == (decayed, exempt)


def test_trt_stage2_groups_hold_only_the_cam_branch():
    torch.manual_seed(0)
    method = TRT(TRTConfig(image_size=32, resize_size=32, weight_decay=0.05), 4)
    params = list(method.begin_stage("cam"))
    optimizer, counts = _make_optimizer(method, params, method.stage_config("cam"))
    names = {id(p): n for n, p in method.named_parameters()}
    decayed, exempt = _decay_sets(optimizer)
    assert {names[i].split(".")[0] for i in decayed | exempt} == {"cam_tr", "cam_norm",
                                                                  "cam_head"}
    assert names[next(iter(decayed))].endswith("weight")
    assert counts["exempt_tensors"] > 0 and counts["decayed_tensors"] > 0


def test_weight_decay_filter_can_be_switched_off():
    torch.manual_seed(0)
    method = TSCAM(TSCAMConfig(image_size=32, resize_size=32, weight_decay=0.05,
                               filter_bias_and_bn=False), 4)
    _, counts = _make_optimizer(method, list(method.parameters()), method.config)
    assert counts["exempt_tensors"] == 0
    assert counts["decayed_tensors"] == len(list(method.parameters()))


def test_head_lr_ratio_survives_the_decay_split():
    torch.manual_seed(0)
    method = CAM(CAM.presets["synth"], 3)
    optimizer, _ = _make_optimizer(method, list(method.parameters()), method.config)
    ratios = {(g["lr_ratio"], g["weight_decay"] > 0): len(g["params"])
              for g in optimizer.param_groups}
    # fc.weight decayed at 10x, fc.bias exempt at 10x, conv weights decayed, BN exempt at 1x.
    assert ratios[(10.0, True)] == 1 and ratios[(10.0, False)] == 1
    assert ratios[(1.0, True)] == 4 and ratios[(1.0, False)] == 8
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(method.config.lr * group["lr_ratio"])


# ------------------------------------------------------------------ 3. initialisation


def _is_pytorch_default_linear(layer: torch.nn.Module) -> bool:
    """kaiming_uniform(a=sqrt(5)): |w| <= 1/sqrt(fan_in), std ~ bound/sqrt(3); bias likewise
    uniform and nonzero. trunc-normal(0.02) with zero bias fails both."""
    weight = layer.weight.detach()
    fan_in = weight[0].numel()
    bound = 1 / math.sqrt(fan_in)
    return (bool(weight.abs().max() <= bound + 1e-7)
            and abs(float(weight.std()) - bound / math.sqrt(3)) < 0.15 * bound / math.sqrt(3)
            and bool(layer.bias.detach().abs().max() > 0))


def test_trt_heads_are_initialised_as_upstream():
    torch.manual_seed(0)
    model = TRT(TRTConfig(image_size=32, resize_size=32), 5)
    # head: built inside VisionTransformer before apply(_init_weights): trunc-normal 0.02.
    # (timm's and torch's trunc_normal_ cut at +-2 absolute: no cut at std 0.02.)
    assert float(model.vit.head.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(model.vit.head.bias) == 0
    # score_head, score_layer, cam_tr: created after that apply: PyTorch defaults.
    assert _is_pytorch_default_linear(model.score_head)
    assert _is_pytorch_default_linear(model.score_layer.attn.qkv)
    assert _is_pytorch_default_linear(model.score_layer.mlp.fc1)
    assert _is_pytorch_default_linear(model.cam_tr.attn.proj)
    assert not torch.equal(model.score_layer.attn.qkv.weight, model.vit.blocks[-1].attn.qkv.weight)
    assert not torch.equal(model.score_layer.attn.qkv.weight, model.cam_tr.attn.qkv.weight)
    # Conv heads: `_init_weights` does not touch Conv2d: PyTorch's default.
    assert _is_pytorch_default_linear(model.cam_head)
    # Same architecture as the last block (drop path too).
    assert type(model.score_layer.drop_path1) is type(model.vit.blocks[-1].drop_path1)


def test_tscam_conv_head_keeps_pytorch_default_init():
    torch.manual_seed(0)
    model = TSCAM(TSCAMConfig(image_size=32, resize_size=32), 5)
    assert _is_pytorch_default_linear(model.head)


def test_trt_pretrained_fills_score_layer_and_cam_branch_from_the_last_block():
    torch.manual_seed(0)
    source = TRT(TRTConfig(image_size=32, resize_size=32), 5)
    deit = {k.removeprefix("vit."): v for k, v in source.state_dict().items()
            if k.startswith("vit.") and not k.startswith("vit.head")}
    torch.manual_seed(1)
    model = TRT(TRTConfig(image_size=32, resize_size=32), 5)
    head_before = model.score_head.weight.clone()
    model.load_pretrained(deit)
    last = model.vit.blocks[-1].state_dict()
    for branch in (model.score_layer, model.cam_tr):
        for key, value in branch.state_dict().items():
            assert torch.equal(value, last[key])
    assert torch.equal(model.score_norm.weight, model.vit.norm.weight)
    assert torch.equal(model.score_head.weight, head_before)  # not in DeiT weights


# ------------------------------------------------------------------ 4. CUB box conversion


def _write_cub_boxes(root, images):
    """A CUB archive folder with one class and the given (size, box line) images."""
    from PIL import Image

    cub = root / "CUB_200_2011"
    (cub / "images" / "001.A").mkdir(parents=True)
    rows = {"images": [], "labels": [], "split": [], "boxes": []}
    for i, ((w, h), box) in enumerate(images, start=1):
        Image.new("RGB", (w, h), (i * 20, 0, 0)).save(cub / "images" / "001.A" / f"{i}.jpg")
        rows["images"].append(f"{i} 001.A/{i}.jpg")
        rows["labels"].append(f"{i} 1")
        rows["split"].append(f"{i} 0")
        rows["boxes"].append(f"{i} {box}")
    (cub / "classes.txt").write_text("1 001.A\n")
    for key, name in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                      ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (cub / name).write_text("\n".join(rows[key]) + "\n")
    return root


# (image size, x y w h) -> official source box, official 224 box, wsolevaluation source box,
# wsolevaluation 224 box (wsolevaluation: int(v * 224 / W)). Derived by hand from
# TS-CAM/TRT lib/datasets/cub.py and wsolevaluation's metadata conversion.
CUB_BOX_CASES = [
    # Border-touching box on an image narrower than 224: upstream keeps x1 = W, scales to
    # 224 and clips to 223; wsolevaluation clips to W - 1 first (49 -> 219.52 -> 219).
    ((50, 40), "0.0 0.0 50.0 40.0", (0, 0, 50, 40), (0, 0, 223, 223), (0, 0, 49, 39),
     (0, 0, 219, 218)),
    # Fractions adding up past an integer, image wider than 224: int(x) + int(w) = 110 vs
    # int(x + w) = 111; y: 20 + 50 = 70 -> 62.72 -> 62 vs 71 -> 63.616 -> 63.
    ((300, 250), "10.6 20.7 100.6 50.5", (10, 20, 110, 70), (7, 17, 82, 62),
     (10, 20, 111, 71), (7, 17, 82, 63)),
    # Float coordinates that stay inside: both agree.
    ((224, 224), "3.2 4.9 100.3 60.0", (3, 4, 103, 64), (3, 4, 103, 64), (3, 4, 103, 64),
     (3, 4, 103, 64)),
]


def test_cub_boxes_follow_upstream_for_paper_and_wsolevaluation_for_maxboxacc(tmp_path):
    root = _write_cub_boxes(tmp_path, [(size, box) for size, box, *_ in CUB_BOX_CASES])
    _, _, test = read_cub(root)
    paper = get_plugin("protocols", "loc_acc")()
    v2 = get_plugin("protocols", "maxboxacc_v2")()
    for record, (size, _, src_off, off224, src_wsol, wsol224) in zip(test, CUB_BOX_CASES):
        assert tuple(record.gt_boxes("official")[0]) == src_off
        assert tuple(record.boxes[0]) == src_wsol
        assert tuple(paper.gt_boxes(record.gt_boxes("official"), size)[0]) == off224
        assert tuple(v2.gt_boxes(record.boxes, size)[0]) == wsol224


def test_official_box_by_hand():
    assert official_box(10.6, 20.7, 100.6, 50.5) == (10, 20, 110, 70)
    assert official_box(0.0, 0.0, 50.0, 40.0) == (0, 0, 50, 40)


def test_paper_protocol_scores_against_the_official_boxes(tmp_path):
    """End to end through `evaluate`: a map whose box is exactly the official box gets
    IoU 1 under the paper protocol, and less against wsolevaluation's box."""
    from wsolbench.evaluation import evaluate

    root = _write_cub_boxes(tmp_path, [((50, 40), "0.0 0.0 50.0 40.0"),
                                       ((300, 250), "10.6 20.7 100.6 50.5")])
    _, _, test = read_cub(root)
    maps = []
    for x0, y0, x1, y1 in ((0, 0, 222, 222), (7, 17, 81, 61)):  # contour box adds one pixel
        raw = np.zeros((224, 224), np.float32)
        raw[y0:y1 + 1, x0:x1 + 1] = 1.0
        maps.append(raw)
    paper = get_plugin("protocols", "loc_acc")(cam_threshold=0.5, gt_known_strict=True)
    evaluate([paper], list(test), maps, np.eye(2, dtype=np.float32)[[0, 0]])
    ious = [paper.best_ious(m, paper.gt_boxes(r.gt_boxes("official"), r.size), [0.5])[0]
            for m, r in zip(maps, test)]
    assert ious == [1.0, 1.0]
    assert paper.compute()["gt_known_loc"] == 100.0  # strict IoU > 0.5 on both


# ------------------------------------------------------------------ 5. contiguous conv input


@pytest.mark.parametrize("method_cls, cfg_cls, head", [(TSCAM, TSCAMConfig, "head"),
                                                       (TRT, TRTConfig, "cam_head")])
def test_conv_heads_receive_contiguous_tensors_as_upstream(method_cls, cfg_cls, head):
    torch.manual_seed(0)
    model = method_cls(cfg_cls(image_size=32, resize_size=32), 3).eval()
    seen = []
    handle = getattr(model, head).register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous()))
    try:
        model.localize(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    finally:
        handle.remove()
    assert seen == [True]


def test_tscam_semantic_maps_equal_the_upstream_layout_bit_for_bit():
    torch.manual_seed(0)
    model = TSCAM(TSCAMConfig(image_size=32, resize_size=32), 3).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        patches = model.vit.forward_features(images)[:, 1:]
        n, p, c = patches.shape
        side = int(p ** 0.5)  # upstream's square-grid reshape
        upstream = model.head(torch.reshape(patches, [n, side, side, c]).permute(
            [0, 3, 1, 2]).contiguous())
        assert torch.equal(model.semantic_maps(images), upstream)


# ------------------------------------------------------------------ 6. TRT at 384 px


def test_trt_cub384_preset_matches_the_official_384_recipe():
    cfg = TRT.presets["cub384"]
    # configs/CUB/deit_trt_{,fuse_}base_patch16_384_0.65.yaml + train_cub.sh (--lr 5e-5).
    assert (cfg.model, cfg.image_size, cfg.resize_size, cfg.thresh) == (
        "deit_base_patch16_384", 384, 448, 0.65)
    assert (cfg.epochs, cfg.lr_steps, cfg.lr_factor, cfg.batch_size, cfg.lr) == (
        30, (15,), 0.2, 128, 5e-5)
    assert (cfg.stage2_epochs, cfg.stage2_lr_steps, cfg.cam_threshold) == (20, (10,), 0.1)
    stage2 = TRT(dataclasses_replace(cfg, model="vit_synth"), 2).stage_config("cam")
    assert stage2.lr_factor == 0.1 and stage2.epochs == 20
    from wsolbench.options import RunOptions
    from wsolbench.suite import paper_protocol

    # The official code evaluates in the crop-size frame (cams_deit: CROP_SIZE).
    assert paper_protocol(cfg, RunOptions(method="trt", dataset="cub")).eval_size == 384


def dataclasses_replace(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def test_trt_384_builds_a_24x24_token_grid():
    cfg = dataclasses_replace(TRT.presets["cub384"], drop_path=0.0)
    with torch.device("meta"):  # DeiT-B at 384: shapes only, no 330 MB of weights
        model = TRT(cfg, 200)
    assert tuple(model.vit.patch_embed.grid_size) == (24, 24)
    assert model.vit.pos_embed.shape[1] == 24 * 24 + 1


# ------------------------------------------------------------------ 7. checkpoint selection


def _tiny_trt(tiny_synth):
    torch.manual_seed(0)
    cfg = TRTConfig(image_size=32, resize_size=32, epochs=2, stage2_epochs=2, batch_size=12,
                    lr=1e-3, weight_decay=0.05)
    return TRT(cfg, tiny_synth.num_classes)


def test_selection_keeps_each_stage_best_epoch_and_stage2_starts_from_it(tiny_synth, tmp_path):
    from wsolbench.engine import train

    method = _tiny_trt(tiny_synth)
    snapshots = {}
    scores = {("tpsm", 1): 5.0, ("tpsm", 2): 3.0, ("cam", 1): 1.0, ("cam", 2): 1.0}
    position = {"tpsm": 0, "cam": 0}

    def select(stage):
        position[stage] += 1
        snapshots[(stage, position[stage])] = copy.deepcopy(method.state_dict())
        return scores[(stage, position[stage])]

    state = train(method, tiny_synth.train, tmp_path, device=torch.device("cpu"), seed=0,
                  select=select)
    assert state.selected == [{"stage": "tpsm", "epoch": 1, "score": 5.0},
                              {"stage": "cam", "epoch": 1, "score": 1.0}]  # a tie: first
    final = method.state_dict()
    # Stage 2 trains only the CAM branch: everything else is stage 1's *first* epoch.
    for key, value in final.items():
        want = snapshots[("cam", 1)][key]
        assert torch.equal(value, want), key
        if not key.startswith("cam_"):
            assert torch.equal(value, snapshots[("tpsm", 1)][key]), key
    assert not torch.equal(snapshots[("tpsm", 1)]["vit.head.weight"],
                           snapshots[("tpsm", 2)]["vit.head.weight"])
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(saved[k], final[k]) for k in final)
    assert [row["selection_score"] for row in state.history] == [5.0, 3.0, 1.0, 1.0]


def test_selection_resumes_after_a_kill_exactly(tiny_synth, tmp_path):
    from wsolbench.engine import Speed, train
    from wsolbench.options import RunOptions
    from wsolbench.suite import checkpoint_scorer

    opts = RunOptions(method="trt", dataset="synth-cub", select_checkpoint="fullsup")
    cpu = torch.device("cpu")

    def run(run_dir, stop=None, resume=False, method=None):
        method = method or _tiny_trt(tiny_synth)
        state = train(method, tiny_synth.train, run_dir, device=cpu, seed=0, resume=resume,
                      select=checkpoint_scorer(method, tiny_synth, opts, cpu, Speed()),
                      stop_after_epochs=stop)
        return method, state

    whole, whole_state = run(tmp_path / "a")
    run(tmp_path / "b", stop=3)  # killed in stage 2, after its first epoch
    resumed, resumed_state = run(tmp_path / "b", resume=True)
    assert resumed_state.selected == whole_state.selected
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_select_checkpoint_refuses_unknown_values():
    from wsolbench.errors import WsolbenchError
    from wsolbench.options import RunOptions

    with pytest.raises(WsolbenchError, match="select-checkpoint"):
        RunOptions(method="trt", dataset="cub", select_checkpoint="best")


def test_trt_scores_its_stage1_map_during_stage1():
    torch.manual_seed(0)
    model = TRT(TRTConfig(image_size=32, resize_size=32), 3).eval()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    stage1 = TRT(dataclasses_replace(model.config, stage1_map=True), 3).eval()
    stage1.load_state_dict(model.state_dict())
    with torch.no_grad():
        during = model.stage_localize(images, labels, "tpsm").maps
        final = model.stage_localize(images, labels, "cam").maps
        torch.testing.assert_close(during, stage1.localize(images, labels).maps)
        torch.testing.assert_close(final, model.localize(images, labels).maps)
    assert not torch.allclose(during, final)


@pytest.mark.slow
def test_test_selection_is_announced_everywhere(tmp_path, tiny_synth, tiny_synth_dir):
    """`--select-checkpoint test` (the official leakage) says so in the printed table,
    results.json, the MLflow run and the tables' footnotes."""
    import json
    import subprocess
    import sys

    import mlflow

    from tests.conftest import TINY_SYNTH
    from wsolbench.report import make_tables
    from wsolbench.tables import TEST_SELECTION_NOTE

    data_sets = [a for k, v in TINY_SYNTH.items() for a in ("--data-set", f"{k}={v}")]
    args = ["run", "--method", "trt", "--dataset", "synth-cub", "--data-root",
            str(tiny_synth_dir), "--results-dir", str(tmp_path), *data_sets,
            "--select-checkpoint", "test", "--epochs", "2", "--batch-size", "12",
            "--set", "image_size=32", "--set", "resize_size=36", "--set", "stage2_epochs=1",
            "--cam-curve-interval", "0.01", "--no-baselines", "--eval-workers", "1", "--threads", "1"]
    done = subprocess.run([sys.executable, "-m", "wsolbench", *args], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "checkpoint chosen on the test split" in done.stdout
    run_dir = run_dir_of(tmp_path, "synth-cub", "trt")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["select_checkpoint"] == "test"
    assert "test split" in results["warning"]
    selected = results["training"]["selected_epochs"]
    assert [s["stage"] for s in selected] == ["tpsm", "cam"]
    history = results["training"]["history"]
    stage1 = [r["selection_score"] for r in history if r["stage"] == "tpsm"]
    assert selected[0]["score"] == max(stage1)
    assert selected[0]["epoch"] == 1 + stage1.index(max(stage1))

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = [r for r in mlflow.search_runs(experiment_names=["synth-cub"], output_format="list",
                                            filter_string="tags.method = 'trt'")
              if "mlflow.parentRunId" not in r.data.tags]
    assert run.data.tags["select_checkpoint"] == "test"
    assert "test split" in run.data.tags["selection_warning"]
    assert run.data.params["optimizer.tpsm.exempt_tensors"] != "0"

    (tmp_path / "reported.csv").write_text(
        "method,backbone,input,dataset,metric,value,source,note\n")
    written = make_tables(tmp_path, {"cub": "synth-cub"}, ["trt"], [0], ["paper", "fair"],
                          tmp_path / "reported.csv", tmp_path / "tables", resamples=10)
    table1 = written["table1.md"].read_text()
    assert "checkpoint on test ‡" in table1 and TEST_SELECTION_NOTE in table1
