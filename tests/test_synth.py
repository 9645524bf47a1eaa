"""synth-cub: determinism, exact ground truth, real on-disk formats."""

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from wsolbench.config import apply_overrides
from wsolbench.data.synth import SynthConfig, generate, render


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    cfg = apply_overrides(SynthConfig(), {"num_classes": "2", "train_per_class": "5",
                                          "test_per_class": "3", "fullsup_per_class": "2"})
    a = _tree_digest(generate(cfg, tmp_path / "a", workers=1))
    b = _tree_digest(generate(cfg, tmp_path / "b", workers=2))
    assert a == b and len(a) > 30
    c = _tree_digest(generate(apply_overrides(cfg, {"seed": "1"}), tmp_path / "c", workers=1))
    assert c != a


def test_a_larger_test_split_keeps_every_image_of_the_smaller_one(tmp_path):
    """Image i of a split is drawn from its own stream, so enlarging the test split (as
    config/config.yaml did, docs/benchmark.md row 63) adds images and changes none: the
    training images, train-fullsup and the first test images stay byte for byte."""
    cfg = apply_overrides(SynthConfig(), {"num_classes": "2", "train_per_class": "3",
                                          "test_per_class": "2", "fullsup_per_class": "2"})
    small = _tree_digest(generate(cfg, tmp_path / "small", workers=1))
    large = _tree_digest(generate(apply_overrides(cfg, {"test_per_class": "5"}),
                                  tmp_path / "large", workers=1))
    images = {k: v for k, v in small.items() if k.endswith((".jpg", ".png"))}
    assert len(images) > 20 and all(large.get(k) == v for k, v in images.items())
    added = {k for k in large if k.endswith(".jpg") and k not in small}
    assert len(added) == 2 * (5 - 2) and all("_test_" in k for k in added)


def test_boxes_are_the_tight_boxes_of_the_masks_and_the_head_is_inside(tiny_synth):
    for record in tiny_synth.test + tiny_synth.fullsup:
        mask = np.asarray(Image.open(record.mask_paths[0])) > 0
        head = np.asarray(Image.open(record.part_mask_path)) > 0
        ys, xs = np.nonzero(mask)
        assert record.boxes.tolist() == [[xs.min(), ys.min(), xs.max(), ys.max()]]
        assert head.any() and not (head & ~mask).any()


def test_splits_and_formats(tiny_synth):
    assert tiny_synth.num_classes == 3
    assert (len(tiny_synth.train), len(tiny_synth.test), len(tiny_synth.fullsup)) == (36, 12, 6)
    root = tiny_synth.root
    assert (root / "CUB_200_2011" / "bounding_boxes.txt").read_text().startswith("1 ")
    ids = (root / "metadata" / "CUB" / "val" / "image_ids.txt").read_text()
    assert not ids.endswith("\n")  # wsolevaluation's files have no final newline


def test_render_statistics_match_the_spec():
    cfg = SynthConfig()
    rng = np.random.default_rng(0)
    areas, head_share = [], []
    for i in range(200):
        s = render(cfg, i % cfg.num_classes, rng)
        x0, y0, x1, y1 = s.boxes[0]
        areas.append((x1 - x0 + 1) * (y1 - y0 + 1) / cfg.image_size ** 2)
        head_share.append(s.head.sum() / s.mask.sum())
    areas = np.array(areas)
    assert 0.05 < np.mean(head_share) < 0.25  # the discriminative part is small
    assert 0.08 < areas.mean() < 0.25  # objects vary and are not huge (centre prior weak)
    assert areas.min() < 0.08 and areas.max() > 0.2
