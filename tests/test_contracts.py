"""Contracts every registered plugin must keep (docs/plugins.md), parametrized over the
registry: a plugin installed later is checked by the same tests without an edit here."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from wsolbench.registry import get_plugin, list_plugins

# ------------------------------------------------------------------ methods


def _tiny_method(name: str):
    cls = get_plugin("methods", name)
    if cls.posthoc:  # an explainer: of a tiny TS-CAM (the token-to-grid path)
        return cls(_tiny_method("tscam")).eval()
    if "synth" not in cls.presets:
        pytest.skip(f"method {name!r} has no 'synth' preset to build a small instance from")
    config = dataclasses.replace(cls.presets["synth"], image_size=32, resize_size=32)
    torch.manual_seed(0)
    return cls(config, 4).eval()


def _hook_count(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("name", list_plugins("methods"))
def test_method_contract(name):
    """forward gives logits [B, K]; localize gives raw float maps [B, h, w] and the same
    logits; every hook it sets is gone afterwards; it works under `torch.no_grad()` (how
    `predict` calls it)."""
    method = _tiny_method(name)
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 1])
    hooks = _hook_count(method)
    with torch.no_grad():
        logits = method(images)
        out = method.localize(images, labels)
    assert logits.shape == (3, 4) and out.logits.shape == (3, 4)
    torch.testing.assert_close(out.logits, logits, rtol=1e-5, atol=1e-5)
    assert out.maps.ndim == 3 and out.maps.shape[0] == 3 and out.maps.is_floating_point()
    assert torch.isfinite(out.maps).all()
    assert not out.maps.requires_grad
    assert _hook_count(method) == hooks
    # Raw: not normalized to [0, 1] by the method (postprocess does that), for some image;
    # post-hoc explainers return their library's finished maps.
    flat = out.maps.flatten(1)
    if not method.posthoc:
        assert not bool(((flat.min(1).values == 0) & (flat.max(1).values == 1)).all())
    assert all(p.grad is None for p in method.parameters())  # no gradient left behind
    for stage in method.stages():
        params = list(method.begin_stage(stage))
        assert params and all(p.requires_grad for p in params)
        assert method.stage_config(stage).epochs >= 1
        with torch.no_grad():
            staged = method.stage_localize(images, labels, stage)
        assert staged.maps.shape[0] == 3


# ------------------------------------------------------------------ protocols

S = 224


def _batch(rng, n):
    from wsolbench.protocol import EvalBatch, GTMask

    boxes, masks = [], []
    for _ in range(n):
        x0, y0 = rng.integers(0, 150, 2)
        boxes.append(np.array([[x0, y0, x0 + rng.integers(10, 70), y0 + rng.integers(10, 70)]]))
        mask = np.zeros((S, S), np.float32)
        mask[y0:y0 + 40, x0:x0 + 40] = 255
        masks.append(GTMask((mask,)))
    return EvalBatch(image_ids=[f"{i}.jpg" for i in range(n)],
                     maps=[rng.normal(size=(14, 14)) for _ in range(n)],
                     labels=rng.integers(0, 5, n), boxes=boxes,
                     sizes=np.full((n, 2), S), logits=rng.normal(size=(n, 5)), masks=masks)


def _protocol(name: str):
    cls = get_plugin("protocols", name)
    kwargs = {"cam_curve_interval": 0.01} if "cam_curve_interval" in inspect.signature(
        cls.__init__).parameters else {}
    return cls(**kwargs)


@pytest.mark.parametrize("name", list_plugins("protocols"))
def test_protocol_contract(name):
    """Counters only: one pass equals the merge of two shards, `compute` never changes the
    state, `reset` clears it, `params` are JSON-like."""
    import json

    rng = np.random.default_rng(7)
    first, second = _batch(rng, 6), _batch(rng, 5)
    whole, a, b = _protocol(name), _protocol(name), _protocol(name)
    whole.update(first)
    whole.update(second)
    a.update(first)
    b.update(second)
    merged = a.merge(b)
    assert merged.n == whole.n == 11
    for key in whole.state:
        np.testing.assert_array_equal(merged.state[key], whole.state[key])
    before = {k: np.copy(v) for k, v in whole.state.items()}
    assert json.loads(json.dumps(whole.compute(), default=float)) == json.loads(
        json.dumps(merged.compute(), default=float))
    for key in before:
        np.testing.assert_array_equal(before[key], whole.state[key])
    json.dumps(whole.params())
    whole.reset()
    assert whole.n == 0


# ------------------------------------------------------------------ datasets

TINY = {"num_classes": "3", "train_per_class": "3", "test_per_class": "2",
        "fullsup_per_class": "1", "image_size": "32"}


def _load_dataset(name, tmp_path):
    from tests.conftest import write_cub
    from wsolbench.config import apply_overrides

    plugin = get_plugin("datasets", name)
    config_class = getattr(plugin, "config_class", None)
    if config_class is not None:
        return plugin.load(tmp_path, config=apply_overrides(config_class(), TINY), workers=1)
    if name == "cub":  # a fixture in the archive's exact format, with a CUBV2-style split
        from wsolbench.data.metadata import write_metadata

        root = write_cub(tmp_path, n_classes=2, per_class=4)
        data = plugin.load(root)
        write_metadata(root / "metadata" / "CUB" / "val", data.test[:2])
        (root / "CUBV2").symlink_to(root / "CUB_200_2011" / "images")
        return plugin.load(root)
    if name in ("ilsvrc", "openimages"):  # read the synthetic twin written in that layout
        twin = {"ilsvrc": "synth-imagenet", "openimages": "synth-openimages"}[name]
        generated = _load_dataset(twin, tmp_path)
        return plugin.load(generated.root)
    pytest.skip(f"no fixture for dataset {name!r}")


@pytest.mark.parametrize("name", list_plugins("datasets"))
def test_dataset_contract(name, tmp_path):
    """Three splits; labels in range; unique ids; test and train-fullsup localized (boxes
    inside the image, or masks); every record's file exists."""
    data = _load_dataset(name, tmp_path)
    assert data.num_classes >= 2
    for split in ("train", "fullsup", "test"):
        records = data.split(split)
        assert records, split
        ids = [r.image_id for r in records]
        assert len(set(ids)) == len(ids), split
        for r in records:
            assert 0 <= r.label < data.num_classes and r.path.is_file()
            if split == "train":
                continue
            assert len(r.boxes) or r.mask_paths, (split, r.image_id)
            w, h = r.size
            for x0, y0, x1, y1 in r.boxes:
                assert 0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1


def test_gradient_based_localize_works_where_evaluation_calls_it():
    """`predict` runs `localize` under no_grad: a gradient method enables grad inside."""
    from wsolbench.methods.cam import CAM

    from wsolbench.method import Localization

    class GradientCAM(CAM):
        def localize(self, images, labels):
            with torch.enable_grad():
                feats = self.features(images).detach().requires_grad_(True)
                logits = self.fc(feats.mean(dim=(2, 3)))
                picked = logits[torch.arange(len(labels)), labels].sum()
                grads, = torch.autograd.grad(picked, feats)
            maps = (grads.mean(dim=(2, 3))[:, :, None, None] * feats).sum(1)
            return Localization(maps=maps.detach(), logits=logits.detach())

    method = GradientCAM(dataclasses.replace(CAM.presets["synth"], image_size=32,
                                             resize_size=32), 4).eval()
    with torch.no_grad():
        out = method.localize(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    plain = CAM.localize(method, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    assert out.maps.shape == plain.maps.shape and torch.isfinite(out.maps).all()


# ------------------------------------------------------------------ import contract

CORE = Path(__file__).resolve().parents[1] / "wsolbench"


def _core_modules():
    """Core source files (the installed plugin packages live elsewhere in the checkout)."""
    return sorted(p for p in CORE.rglob("*.py"))


def test_core_never_imports_a_plugin_module():
    import ast

    offenders = []
    for path in _core_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[:2] in (["wsolbench", "methods"],
                                                  ["wsolbench", "protocols"])
                          or n.split(".")[0] in ("methods", "protocols")]
    assert not offenders, offenders


def _plugin_only_protocol_methods() -> set[str]:
    """Callables every registered protocol defines beyond the `Protocol` interface."""
    from wsolbench.protocol import Protocol

    names: set[str] = set()
    for name in list_plugins("protocols"):
        for klass in get_plugin("protocols", name).__mro__:
            if klass is Protocol or not issubclass(klass, Protocol):
                continue
            names |= {k for k, v in vars(klass).items()
                      if callable(v) and not k.startswith("__")}
    return names - set(dir(Protocol))


def test_core_reads_protocols_only_through_the_interface():
    """No core module calls a protocol's own helpers (`best_ious`, `box_at`, ...) or reads
    its counters (`.state`) outside `protocol.py`: only the base class's methods. (The old
    per_image.py, fair transfer and figures did; `Record.gt_boxes` shares a name with a
    protocol helper and is allowed.)"""
    import ast

    forbidden = _plugin_only_protocol_methods() - {"gt_boxes"}
    assert {"best_ious", "box_at", "best_threshold"} <= forbidden  # the check can bite
    offenders = []
    for path in _core_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            on_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            if node.attr in forbidden and not on_self:
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
            if node.attr == "state" and path.name != "protocol.py" and not on_self:
                offenders.append(f"{path.name}:{node.lineno} .state")
    assert not offenders, offenders
