"""`wsolbench pretrain` and shipped starting weights (docs/benchmark.md): the same code path
as the shipped weights' regeneration, shortened to seconds."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wsolbench.errors import WsolbenchError
from wsolbench.method_config import SYNTH_CNNS, SYNTH_VITS

TINY_CORPUS = {"num_classes": "4", "train_per_class": "16", "test_per_class": "4",
               "fullsup_per_class": "1", "image_size": "32"}
TINY_RECIPE = {"epochs": "3", "batch_size": "16", "warmup_epochs": "1", "image_size": "32",
               "resize_size": "36"}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _args(out: Path, results: Path, backbone: str = "vit_synth",
          **recipe: str) -> list[str]:
    return [sys.executable, "-m", "wsolbench", "pretrain", "--backbone", backbone,
            "--out", str(out), "--results-dir", str(results), "--threads", "1",
            *[a for k, v in {**TINY_RECIPE, **recipe}.items() for a in ("--set", f"{k}={v}")],
            *[a for k, v in TINY_CORPUS.items() for a in ("--data-set", f"{k}={v}")]]


def _pretrain(out: Path, results: Path, backbone: str = "vit_synth"):
    from wsolbench.config import apply_overrides
    from wsolbench.data.synth import SynthPretrainConfig, SynthPretrainDataset
    from wsolbench.pretrain import PretrainConfig, pretrain

    corpus = SynthPretrainDataset.load(results / "data", workers=1,
                                       config=apply_overrides(SynthPretrainConfig(),
                                                              TINY_CORPUS))
    cfg = apply_overrides(PretrainConfig(backbone=backbone), TINY_RECIPE)
    return pretrain(cfg, corpus, out, threads=1)


def test_the_cli_offers_every_pretrainable_backbone():
    from wsolbench.cli import cli
    from wsolbench.pretrain import BACKBONES

    (option,) = [p for p in cli.commands["pretrain"].params if p.name == "backbone"]
    assert tuple(option.type.choices) == BACKBONES == (*SYNTH_CNNS, *SYNTH_VITS)


@pytest.mark.parametrize("backbone", ["vit_synth", "vit_synth_p4", "smallcnn", "dilatedcnn"])
def test_pretrain_writes_weights_the_methods_load(tmp_path, backbone):
    from safetensors.torch import load_file

    from wsolbench.fileio import sha256_file
    from wsolbench.registry import get_plugin

    out = tmp_path / f"{backbone}.safetensors"
    manifest = _pretrain(out, tmp_path, backbone)
    assert manifest["sha256"] == sha256_file(out) == json.loads(
        out.with_suffix(".json").read_text())["sha256"]
    assert manifest["recipe"]["epochs"] == 3 and len(manifest["history"]) == 3
    assert manifest["corpus"]["synth"]["stream"] == "synth-pretrain"
    assert not out.with_suffix(".resume.pt").exists()
    state = load_file(str(out))
    vit = backbone.startswith("vit_synth")
    if vit:  # timm key names, as a DeiT checkpoint
        assert "cls_token" in state and "blocks.0.attn.qkv.weight" in state
        assert state["patch_embed.proj.weight"].shape[-1] == SYNTH_VITS[backbone]
        targets = ("tscam", "trt")
    else:
        assert "features.0.weight" in state and "fc.weight" in state
        targets = ("cam",)
    for name in targets:
        cls = get_plugin("methods", name)
        model_key = "model" if vit else "backbone"
        method = cls(dataclasses.replace(cls.presets["synth"], image_size=32, resize_size=36,
                                         **{model_key: backbone}), 3)
        method.load_pretrained(state)
        own = method.state_dict()
        key = "vit.blocks.0.attn.qkv.weight" if vit else "features.0.weight"
        source = "blocks.0.attn.qkv.weight" if vit else "features.0.weight"
        torch.testing.assert_close(own[key], state[source])


@pytest.mark.slow
def test_a_killed_pretraining_resumes_to_the_same_weights(tmp_path):
    """Killed (SIGKILL) after its first epoch, the same command resumes from the epoch
    snapshot and ends with the bytes of an uninterrupted pretraining — CutMix on, so the
    snapshot must carry the NumPy stream timm's Mixup draws its boxes from."""
    from safetensors.torch import load_file

    whole = tmp_path / "whole.safetensors"
    args = {"cutmix_alpha": "1.0"}
    done = subprocess.run(_args(whole, tmp_path, **args), capture_output=True, text=True,
                          env=ENV, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cut = tmp_path / "cut.safetensors"
    job = subprocess.Popen(_args(cut, tmp_path, **args), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=ENV)
    resume = cut.with_suffix(".resume.pt")
    deadline = time.monotonic() + 300
    while not resume.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    assert resume.exists() and job.poll() is None, "never reached the first snapshot"
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert not cut.exists()
    done = subprocess.run(_args(cut, tmp_path, **args), capture_output=True, text=True,
                          env=ENV, check=False, timeout=600)
    assert done.returncode == 0 and "resuming after epoch" in done.stderr, done.stderr[-2000:]
    a, b = load_file(str(whole)), load_file(str(cut))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_shipped_weights_are_checked_and_named(tmp_path, monkeypatch):
    from wsolbench import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WsolbenchError, match="no shipped weights of that name"):
        weights.shipped_weights("synth-vit")
    out = tmp_path / "synth-vit.safetensors"
    _pretrain(out, tmp_path / "work")
    assert weights.read_manifest(weights.shipped_weights("synth-vit"))["backbone"] == \
        "vit_synth"
    out.write_bytes(out.read_bytes()[:-8] + b"\0" * 8)  # a damaged download / edit
    with pytest.raises(WsolbenchError, match="differs from its manifest"):
        weights.read_manifest(out)


@pytest.mark.parametrize("setting,message", [("epochs=0", "epochs must be >= 1"),
                                             ("resize_size=8", "resize_size must be >= image_size"),
                                             ("backbone=resnet", "backbone must be one of")])
def test_bad_recipe_values_are_one_line_errors(tmp_path, monkeypatch, capsys, setting, message):
    from tests.conftest import console_main

    code, err = console_main(monkeypatch, capsys, "pretrain", "--backbone", "vit_synth", "--out",
                             str(tmp_path / "w.safetensors"), "--results-dir",
                             str(tmp_path / "r"), "--set", setting)
    assert code == 2 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "w.safetensors").exists()


@pytest.mark.slow  # an end-to-end run
def test_a_run_starts_from_shipped_weights_named_in_its_config(tmp_path, monkeypatch,
                                                                tiny_synth, tiny_synth_dir):
    from safetensors.torch import load_file

    from tests.conftest import TINY_SYNTH
    from wsolbench import weights
    from wsolbench.options import RunOptions
    from wsolbench.resolve import run_paths
    from wsolbench.runner import run
    from wsolbench.tracking import NullTracker

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    out = tmp_path / "synth-vit.safetensors"
    _pretrain(out, tmp_path / "work")

    def options(init: str) -> RunOptions:
        return RunOptions(method="tscam", dataset="synth-cub", data_root=tiny_synth_dir,
                          results_dir=tmp_path / "r", dataset_overrides=TINY_SYNTH,
                          mlflow=False, baselines=False, cam_curve_interval=0.01,
                          overrides={"epochs": "1", "batch_size": "12", "image_size": "32",
                                     "resize_size": "36", "init_weights": init, "lr": "1e-9"})

    results = run(options("synth-vit"), tracker=NullTracker())
    assert results["pretrained"]["shipped"] == "synth-vit"
    assert results["pretrained"]["sha256"] == json.loads(
        out.with_suffix(".json").read_text())["sha256"]
    # Trained at lr 1e-9: the ViT still holds the shipped weights.
    ckpt = torch.load(Path(results["run_dir"]) / "checkpoint.pt", weights_only=False)
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    shipped = load_file(str(out))
    torch.testing.assert_close(state["vit.blocks.0.attn.qkv.weight"],
                               shipped["blocks.0.attn.qkv.weight"], rtol=0, atol=1e-6)
    # Other weights under the same name are another run: the key follows the manifest.
    before = run_paths(options("synth-vit")).key
    manifest = json.loads(out.with_suffix(".json").read_text())
    manifest["sha256"] = "0" * 64
    out.with_suffix(".json").write_text(json.dumps(manifest))
    assert run_paths(options("synth-vit")).key != before
    assert run_paths(options("")).key != before


def test_the_shipped_weights_match_their_manifests():
    """Every file in wsolbench/weights/ is intact (SHA-256 against its manifest), names its
    regeneration recipe and corpus, and loads into the methods of its backbone."""
    from safetensors.torch import load_file

    from wsolbench import weights
    from wsolbench.registry import get_plugin

    shipped = sorted(weights.WEIGHTS_DIR.glob("*.safetensors"))
    assert shipped, "no shipped weights"
    for path in shipped:
        manifest = weights.read_manifest(path)
        assert manifest["corpus_name"] == "synth-pretrain"
        backbone = manifest["backbone"]
        assert manifest["recipe"]["epochs"] >= 1 and backbone in ("vit_synth", *SYNTH_CNNS)
        assert manifest["regenerate"].startswith(f"wsolbench pretrain --backbone {backbone} ")
        state = load_file(str(path))
        model_key = "model" if backbone == "vit_synth" else "backbone"
        for name in ("tscam", "trt") if backbone == "vit_synth" else ("cam",):
            cls = get_plugin("methods", name)
            config = dataclasses.replace(cls.presets["synth"], **{model_key: backbone})
            cls(config, 10).load_pretrained(state)


def test_a_pretraining_stage_continues_from_earlier_weights_at_another_resolution(tmp_path):
    """init_from: the second stage starts from the first stage's weights (position grid
    resampled by timm from 4x4 to 6x6 tokens), and its manifest names them."""
    from safetensors.torch import load_file

    from wsolbench.config import apply_overrides
    from wsolbench.data.synth import SynthPretrainConfig, SynthPretrainDataset
    from wsolbench.pretrain import (
        PretrainConfig,
        build_classifier,
        load_earlier_pretraining,
        pretrain,
    )

    first = tmp_path / "first.safetensors"
    stage_one = _pretrain(first, tmp_path)
    cfg = apply_overrides(PretrainConfig(), {**TINY_RECIPE, "image_size": "48",
                                             "resize_size": "52", "init_from": str(first)})
    model = build_classifier(cfg, 4)
    assert load_earlier_pretraining(model, cfg) == {"file": str(first),
                                                    "sha256": stage_one["sha256"]}
    before = load_file(str(first))
    torch.testing.assert_close(model.state_dict()["blocks.3.mlp.fc1.weight"],
                               before["blocks.3.mlp.fc1.weight"])
    assert before["pos_embed"].shape[1] == 1 + 16 and model.pos_embed.shape[1] == 1 + 36

    corpus = SynthPretrainDataset.load(tmp_path / "data", workers=1, config=apply_overrides(
        SynthPretrainConfig(), TINY_CORPUS))
    manifest = pretrain(dataclasses.replace(cfg, epochs=1), corpus,
                        tmp_path / "second.safetensors", threads=1)
    assert manifest["init_from"]["sha256"] == stage_one["sha256"]
    assert manifest["recipe"]["init_from"] == str(first)

    for bad, message in ((dataclasses.replace(cfg, init_from=str(tmp_path / "none")),
                          "no such file"),
                         (dataclasses.replace(cfg, backbone="vit_synth_p4"),
                          "holds a 'vit_synth' backbone, not 'vit_synth_p4'")):
        with pytest.raises(WsolbenchError, match=message):
            load_earlier_pretraining(build_classifier(bad, 4), bad)
    with pytest.raises(WsolbenchError, match="does not fit this backbone"):
        load_earlier_pretraining(build_classifier(cfg, 7), cfg)  # another class count


def test_token_targets_are_the_teachers_location_scores_averaged_over_each_patch():
    """Token labeling's targets, recomputed another way: the classifier as a 1x1
    convolution over the teacher's feature map, average-pooled over each token's patch."""
    from torch.nn import functional as F

    from wsolbench.pretrain import PretrainConfig, build_classifier, teacher_token_targets

    torch.manual_seed(0)
    teacher = build_classifier(PretrainConfig(backbone="smallcnn", image_size=32,
                                              resize_size=36), 5).eval()
    images = torch.randn(3, 3, 32, 32)
    features = teacher.features(images)  # [3, C, 16, 16]: the smallcnn halves once
    scores = F.conv2d(features, teacher.fc.weight[:, :, None, None], teacher.fc.bias)
    per_patch = F.avg_pool2d(scores, kernel_size=4)  # 16x16 locations -> 4x4 tokens
    expected = torch.stack([per_patch[:, :, i, j].softmax(dim=1)
                            for i in range(4) for j in range(4)], dim=1)
    targets = teacher_token_targets(teacher, images, (4, 4))
    assert targets.shape == (3, 16, 5)
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(targets.sum(-1), torch.ones(3, 16))


def test_token_labeling_pretrains_a_vit_that_ships_like_a_plain_one(tmp_path):
    """token_teacher: the ViT's patch tokens also learn the CNN teacher's scores; the token
    head is not shipped, the manifest names the teacher, and with weight 0 the weights are
    bit for bit the plain pretraining's (the token head draws from a forked RNG)."""
    from safetensors.torch import load_file

    from wsolbench.config import apply_overrides
    from wsolbench.data.synth import SynthPretrainConfig, SynthPretrainDataset
    from wsolbench.pretrain import PretrainConfig, pretrain
    from wsolbench.registry import get_plugin

    teacher = _pretrain(tmp_path / "cnn.safetensors", tmp_path, backbone="smallcnn")
    _pretrain(tmp_path / "plain.safetensors", tmp_path)
    corpus = SynthPretrainDataset.load(tmp_path / "data", workers=1, config=apply_overrides(
        SynthPretrainConfig(), TINY_CORPUS))
    cfg = apply_overrides(PretrainConfig(), {**TINY_RECIPE,
                                             "token_teacher": str(tmp_path / "cnn.safetensors")})
    labeled = pretrain(cfg, corpus, tmp_path / "labeled.safetensors", threads=1)
    assert labeled["token_teacher"] == {"file": str(tmp_path / "cnn.safetensors"),
                                        "sha256": teacher["sha256"]}
    plain_weights = load_file(str(tmp_path / "plain.safetensors"))
    labeled_weights = load_file(str(tmp_path / "labeled.safetensors"))
    assert labeled_weights.keys() == plain_weights.keys()  # timm keys, no token head
    assert not torch.equal(labeled_weights["blocks.0.attn.qkv.weight"],
                           plain_weights["blocks.0.attn.qkv.weight"])
    tscam = get_plugin("methods", "tscam")
    tscam(tscam.presets["synth"], 10).load_pretrained(labeled_weights)

    pretrain(dataclasses.replace(cfg, token_loss_weight=0.0), corpus,
             tmp_path / "weight0.safetensors", threads=1)
    weight0 = load_file(str(tmp_path / "weight0.safetensors"))
    for key, value in plain_weights.items():
        assert torch.equal(weight0[key], value), key


def test_a_token_teacher_must_be_a_cnn_of_the_same_corpus(tmp_path):
    from wsolbench.config import apply_overrides
    from wsolbench.data.synth import SynthPretrainConfig, SynthPretrainDataset
    from wsolbench.pretrain import PretrainConfig, load_token_teacher

    _pretrain(tmp_path / "cnn.safetensors", tmp_path, backbone="smallcnn")
    _pretrain(tmp_path / "vit.safetensors", tmp_path)
    corpus = SynthPretrainDataset.load(tmp_path / "data", workers=1, config=apply_overrides(
        SynthPretrainConfig(), TINY_CORPUS))
    other = {"synth": dict(corpus.info["synth"], seed=corpus.info["synth"]["seed"] + 1)}
    cases = (("vit.safetensors", corpus.info, "holds a 'vit_synth' backbone, not a synth CNN"),
             ("cnn.safetensors", other, "pretrained on another corpus"),
             ("none.safetensors", corpus.info, "no such file"),
             ("synth-nothing", corpus.info, "no shipped weights of that name"))
    for name, info, message in cases:
        teacher = name if name.startswith("synth-") else str(tmp_path / name)
        cfg = PretrainConfig(token_teacher=teacher)
        with pytest.raises(WsolbenchError, match=message):
            load_token_teacher(cfg, info, 4)
    with pytest.raises(WsolbenchError, match="'smallcnn' has none"):
        PretrainConfig(backbone="smallcnn", token_teacher="synth-smallcnn")
    # any synth CNN teaches: the teacher is built with its manifest's backbone
    _pretrain(tmp_path / "dilated.safetensors", tmp_path, backbone="dilatedcnn")
    cfg = PretrainConfig(token_teacher=str(tmp_path / "dilated.safetensors"))
    teacher, _ = load_token_teacher(cfg, corpus.info, 4)
    assert teacher.config.backbone == "dilatedcnn"


def test_patch_pixels_follow_the_patch_embedding_token_order():
    """Token k's pixel target is the patch the embedding turned into token k: timm's patch
    embedding is a stride-p convolution, i.e. a linear map of exactly those pixels."""
    from wsolbench.pretrain import patch_pixels
    from wsolbench.vit import build_vit

    torch.manual_seed(0)
    vit = build_vit("vit_synth", 32, 0.0)  # patch 8: a 4x4 token grid
    images = torch.randn(2, 3, 32, 32)
    pixels = patch_pixels(images, 8)
    assert pixels.shape == (2, 16, 192)
    weight = vit.patch_embed.proj.weight  # [D, C, p, p] -> rows in (p, p, C) order
    expected = pixels @ weight.permute(0, 2, 3, 1).reshape(len(weight), -1).T
    torch.testing.assert_close(vit.patch_embed(images), expected + vit.patch_embed.proj.bias,
                               rtol=1e-4, atol=1e-4)
    # token 5 = row 1, column 1 of the grid
    torch.testing.assert_close(pixels[1, 5], images[1, :, 8:16, 8:16].permute(1, 2, 0).reshape(-1))


def test_random_token_masks_hide_exactly_the_ratio_per_image():
    from wsolbench.pretrain import random_token_mask

    masks = random_token_mask(50, 64, 0.5, torch.Generator().manual_seed(0))
    assert masks.dtype == torch.bool and masks.shape == (50, 64)
    assert (masks.sum(1) == 32).all()
    assert len({tuple(row.tolist()) for row in masks}) == 50  # drawn per image
    again = random_token_mask(50, 64, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)
    share = random_token_mask(4000, 64, 0.5, torch.Generator().manual_seed(1)).float().mean(0)
    assert 0.44 < share.min() and share.max() < 0.56  # no position favoured (sd 0.008)


def test_masked_image_modelling_pretrains_a_vit_that_ships_like_a_plain_one(tmp_path):
    """mim_loss_weight: a masked second pass learns to predict the hidden patches; the mask
    token and pixel head are not shipped, the loss falls, and the weights move. With token
    labeling (row 42's stage) and without."""
    from safetensors.torch import load_file

    from wsolbench.config import apply_overrides
    from wsolbench.data.synth import SynthPretrainConfig, SynthPretrainDataset
    from wsolbench.pretrain import PretrainConfig, pretrain
    from wsolbench.registry import get_plugin

    _pretrain(tmp_path / "cnn.safetensors", tmp_path, backbone="smallcnn")
    _pretrain(tmp_path / "plain.safetensors", tmp_path)
    corpus = SynthPretrainDataset.load(tmp_path / "data", workers=1, config=apply_overrides(
        SynthPretrainConfig(), TINY_CORPUS))
    cfg = apply_overrides(PretrainConfig(), {**TINY_RECIPE, "epochs": "4",
                                             "mim_loss_weight": "1.0",
                                             "token_teacher": str(tmp_path / "cnn.safetensors")})
    manifest = pretrain(cfg, corpus, tmp_path / "mim.safetensors", threads=1)
    assert manifest["recipe"]["mim_loss_weight"] == 1.0
    assert manifest["recipe"]["mim_mask_ratio"] == 0.5
    mim = [row["mim_loss"] for row in manifest["history"]]
    assert len(mim) == 4 and mim[-1] < mim[0]
    assert all("token_loss" in row for row in manifest["history"])
    alone = pretrain(apply_overrides(cfg, {"token_teacher": "", "epochs": "1"}), corpus,
                     tmp_path / "mim-alone.safetensors", threads=1)
    assert "mim_loss" in alone["history"][0] and "token_loss" not in alone["history"][0]
    plain = load_file(str(tmp_path / "plain.safetensors"))
    masked = load_file(str(tmp_path / "mim.safetensors"))
    assert masked.keys() == plain.keys()  # timm keys: no mask token, no pixel head
    assert not torch.equal(masked["blocks.0.attn.qkv.weight"], plain["blocks.0.attn.qkv.weight"])
    tscam = get_plugin("methods", "tscam")
    tscam(tscam.presets["synth"], 10).load_pretrained(masked)


@pytest.mark.parametrize("overrides, message", [
    ({"backbone": "smallcnn", "mim_loss_weight": 1.0}, "'smallcnn' has none"),
    ({"mim_loss_weight": 1.0, "mim_mask_ratio": 1.0}, "mim_mask_ratio in \\(0, 1\\)"),
    ({"mim_loss_weight": -1.0}, "mim_loss_weight must be >= 0"),
])
def test_masked_image_modelling_settings_are_checked(overrides, message):
    from wsolbench.pretrain import PretrainConfig

    with pytest.raises(WsolbenchError, match=message):
        PretrainConfig(**overrides)


def test_cutmix_feeds_the_model_pasted_boxes_and_area_weighted_targets(tmp_path, monkeypatch):
    """With `cutmix_alpha`, every image the backbone sees is its own outside one box and the
    image at the mirrored batch position inside it, and its target gives each label the
    share of the area it shows, label-smoothed (DeiT's recipe, through timm's Mixup)."""
    import timm.data
    from safetensors.torch import load_file

    import wsolbench.pretrain as pretrain_module
    from wsolbench.registry import get_plugin

    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    class Recording(timm.data.Mixup):
        def __call__(self, x, target):
            before = x.clone()
            mixed, soft = super().__call__(x, target)
            seen.append((before, target.clone(), mixed.clone(), soft.clone()))
            return mixed, soft

    monkeypatch.setattr(timm.data, "Mixup", Recording)
    inputs: list[torch.Tensor] = []  # what the backbone receives while training
    build = pretrain_module.build_classifier

    def recording_classifier(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda module, x: inputs.append(x[0].clone()) if module.training else None)
        return model

    monkeypatch.setattr(pretrain_module, "build_classifier", recording_classifier)
    monkeypatch.setitem(TINY_RECIPE, "cutmix_alpha", "1.0")
    monkeypatch.setitem(TINY_RECIPE, "epochs", "1")
    out = tmp_path / "cm.safetensors"
    manifest = _pretrain(out, tmp_path, "smallcnn")
    assert manifest["recipe"]["cutmix_alpha"] == 1.0 and seen
    assert len(inputs) == len(seen)
    for received, (_, _, mixed, _) in zip(inputs, seen):
        torch.testing.assert_close(received, mixed, rtol=0, atol=0)
    smoothing, classes = 0.1, int(TINY_CORPUS["num_classes"])
    areas = []
    for before, labels, mixed, soft in seen:
        # The pixels that came from elsewhere; their bounding rectangle must be all pasted
        # from the partner (outside it the image is its own by construction of `pasted`).
        pasted = (mixed != before).any(dim=(0, 1))
        rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
        box = torch.zeros_like(pasted)
        if len(rows):
            box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        torch.testing.assert_close(mixed[..., box], before.flip(0)[..., box], rtol=0, atol=0)
        areas.append(float(box.float().mean()))
        lam = 1 - areas[-1]
        off, on = smoothing / classes, 1 - smoothing + smoothing / classes
        own = torch.nn.functional.one_hot(labels, classes) * (on - off) + off
        expected = lam * own + (1 - lam) * own.flip(0)
        torch.testing.assert_close(soft, expected, rtol=0, atol=1e-6)
    assert max(areas) > 0, "no batch was mixed"
    cam = get_plugin("methods", "cam")
    cam(dataclasses.replace(cam.presets["synth"], image_size=32, resize_size=36), 3
        ).load_pretrained(load_file(str(out)))


@pytest.mark.parametrize("overrides, message", [
    ({"cutmix_alpha": -1.0}, "cutmix_alpha must be >= 0"),
    ({"cutmix_alpha": 1.0, "batch_size": 15}, "batch_size must be even"),
])
def test_cutmix_settings_are_checked(overrides, message):
    from wsolbench.pretrain import PretrainConfig

    with pytest.raises(WsolbenchError, match=message):
        PretrainConfig(**overrides)
