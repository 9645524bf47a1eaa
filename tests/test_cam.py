"""CAM plugin contract: shapes, the map formula, weights files, checkpoints."""

import pytest
import torch

from wsolbench.methods.cam import CAM, CAMConfig
from wsolbench.engine import load_checkpoint
from wsolbench.errors import WsolbenchError
from wsolbench.method import read_state_dict
from wsolbench.method_config import SYNTH_CNNS


def small(num_classes=5):
    torch.manual_seed(0)
    return CAM(CAMConfig(backbone="smallcnn", image_size=32, resize_size=36, width=16),
               num_classes).eval()


def test_shapes_and_fixed_return_types():
    model = small()
    x = torch.randn(3, 3, 32, 32)
    labels = torch.tensor([0, 4, 2])
    for mode in (model.train, model.eval):
        mode()
        assert model(x).shape == (3, 5)
    out = model.localize(x, labels)
    assert out.maps.shape == (3, 16, 16) and out.logits.shape == (3, 5)


def test_map_is_the_classifier_weighted_feature_sum_and_gap_gives_the_logit():
    model = small()
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([1, 3])
    out = model.localize(x, labels)
    feats = model.features(x)
    for i, c in enumerate(labels):
        expected = (model.fc.weight[c][:, None, None] * feats[i]).sum(0)
        torch.testing.assert_close(out.maps[i], expected)
        # CAM's identity: the GAP of the class map plus the bias is the class logit
        torch.testing.assert_close(out.maps[i].mean() + model.fc.bias[c], out.logits[i, c])


@pytest.mark.parametrize("backbone,size", [("vgg16", 64), ("resnet50", 64)])
def test_timm_backbones_build_and_localize(backbone, size):
    model = CAM(CAMConfig(backbone=backbone, image_size=size, resize_size=size), 3).eval()
    out = model.localize(torch.randn(1, 3, size, size), torch.tensor([2]))
    assert out.maps.ndim == 3 and out.logits.shape == (1, 3)
    if backbone == "vgg16":  # pool5 removed: stride 16 -> 4x4 at 64 px (14x14 at 224)
        assert out.maps.shape[-1] == size // 16


def test_pretrained_weights_round_trip_through_pth_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    source = small()
    state = {k: v for k, v in source.state_dict().items() if k.startswith("features.")}
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for file in ("w.pth", "w.safetensors"):
        target = small()
        torch.nn.init.zeros_(target.features[0].weight)
        target.load_pretrained(read_state_dict(tmp_path / file))
        torch.testing.assert_close(target.features[0].weight, source.features[0].weight)


def test_bad_weights_files_are_clear_errors(tmp_path):
    with pytest.raises(WsolbenchError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"garbage")
    with pytest.raises(WsolbenchError, match="not a readable weights file"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WsolbenchError, match="missing keys"):
        small().load_pretrained(read_state_dict(tmp_path / "other.pth"))


def test_checkpoint_from_another_class_count_or_method_is_refused(tmp_path):
    model = small(5)
    torch.save({"method": "cam", "num_classes": 5, "model": model.state_dict()}, tmp_path / "a.pt")
    with pytest.raises(WsolbenchError, match="has 5 classes, the dataset has 7"):
        load_checkpoint(tmp_path / "a.pt", small(7))
    torch.save({"method": "trt", "num_classes": 5, "model": model.state_dict()}, tmp_path / "b.pt")
    with pytest.raises(WsolbenchError, match="checkpoint of method 'trt'"):
        load_checkpoint(tmp_path / "b.pt", small(5))


def test_lr_schedules():
    period = CAMConfig(lr=1.0, lr_steps=(2,), lr_factor=0.1, lr_step_mode="period")
    milestone = CAMConfig(lr=1.0, lr_steps=(2,), lr_factor=0.1)
    # official `epoch % step == 0` rule compounds at 2, 4, 6; a milestone decays once
    assert [round(period.lr_at(e), 6) for e in range(1, 6)] == [1.0, 0.1, 0.1, 0.01, 0.01]
    assert [milestone.lr_at(e) for e in (1, 2, 5)] == [1.0, 0.1, 0.1]
    with pytest.raises(WsolbenchError, match="lr_step_mode"):
        CAMConfig(lr_step_mode="cosine")


def _receptive_field(backbone: str) -> int:
    """Side of the input square one central map cell depends on, found by autograd on a
    128-px image (larger than any field here), with positive weights so that no ReLU hides
    a path."""
    torch.manual_seed(0)
    model = CAM(CAMConfig(backbone=backbone), 3).eval()
    with torch.no_grad():
        for conv in model.features:
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.abs_()
    image = torch.rand(1, 3, 128, 128, requires_grad=True)
    features = model.features(image)
    h, w = features.shape[-2:]
    features[0, :, h // 2, w // 2].sum().backward()
    rows, cols = (image.grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() == cols.max() - cols.min()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("backbone,cells", [("smallcnn", 32), ("stridedcnn", 16),
                                           ("dilatedcnn", 16)])
def test_the_synth_cnns_receptive_fields_and_map_sizes(backbone, cells):
    """The receptive fields SYNTH_CNNS states (13, 21 and 69 px: dilatedcnn's more than the
    64-px image) and the map sizes at 64 px (docs/benchmark.md rows 57-58)."""
    assert _receptive_field(backbone) == SYNTH_CNNS[backbone]
    model = CAM(CAMConfig(backbone=backbone), 3).eval()
    assert model.localize(torch.rand(2, 3, 64, 64), torch.tensor([0, 2])).maps.shape == \
        (2, cells, cells)


def test_weights_of_the_other_synth_cnn_are_refused():
    """A dilatedcnn's first four layers have a smallcnn's shapes: its extra layers must make
    the load fail rather than fill a smallcnn with weights trained for other strides."""
    torch.manual_seed(0)
    dilated = CAM(CAMConfig(backbone="dilatedcnn", width=16), 3).state_dict()
    with pytest.raises(WsolbenchError, match="a smallcnn lacks"):
        small().load_pretrained(dilated)
    with pytest.raises(WsolbenchError, match="missing keys"):
        CAM(CAMConfig(backbone="dilatedcnn", width=16), 3).load_pretrained(small().state_dict())
