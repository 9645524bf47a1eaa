"""CAM: Class Activation Mapping (Zhou et al., "Learning Deep Features for Discriminative
Localization", CVPR 2016).

Backbone features -> GAP -> linear classifier; the map of class c is
`M_c = sum_k W[c, k] * f_k` on the last feature maps (no bias, no ReLU, no normalization:
the raw map goes to `wsolbench.postprocess`). Backbones:

- `vgg16`: timm's VGG16 conv stack without the last max-pool (14x14 at 224 px), then the
  `conv6` head of the TS-CAM/TRT code (Conv 512->1024 3x3 + ReLU), as docs/methods.md §3.2.
- `resnet50`, `inception_v3`: timm models' `forward_features`.
- `smallcnn`: four 3x3 convs (receptive field 13 px, 32x32 maps at 64 px), a synth CNN
  that trains on a CPU in minutes and shows textbook partial activation at 64 px.
- `stridedcnn`: five 3x3 convs, the second and fourth of stride 2: receptive field 21 px,
  16x16 maps.
- `dilatedcnn`: `stridedcnn` and two more 3x3 convs, dilated 2 and 4: a receptive field of
  69 px that sees a whole 64-px image, as the conv5 of a VGG16 sees most of a 224-px one;
  16x16 maps (docs/benchmark.md rows 57-58).

Checked against: vasgaowei/TS-CAM `lib/models/vgg.py` (conv6 head), clovaai/wsolevaluation.
"""

from __future__ import annotations

import torch
from torch import nn

from wsolbench.errors import WsolbenchError
from wsolbench.method import FeatureLayer, Localization, WSOLMethod, load_matching
from wsolbench.method_config import SYNTH_CNNS
from wsolbench.methods.cam_config import PRESETS, CAMConfig


def _synth_cnn(backbone: str, width: int) -> tuple[nn.Module, int]:
    """One of `SYNTH_CNNS`: 3x3 conv + BN + ReLU blocks, widths rising to `width`."""
    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers = [*block(3, width // 4), *block(width // 4, width // 2, stride=2),
              *block(width // 2, 3 * width // 4)]
    if backbone == "smallcnn":
        return nn.Sequential(*layers, *block(3 * width // 4, width)), width
    # stridedcnn: a second stride and a fifth conv widen the field from 13 to 21 px;
    # dilatedcnn's two dilated convs widen it further, to 69 px
    layers += [*block(3 * width // 4, width, stride=2), *block(width, width)]
    if backbone == "dilatedcnn":
        layers += [*block(width, width, dilation=2), *block(width, width, dilation=4)]
    return nn.Sequential(*layers), width


def _timm_backbone(name: str) -> tuple[nn.Module, int]:
    import timm

    if name == "vgg16":
        vgg = timm.create_model("vgg16", pretrained=False, num_classes=0)
        features = vgg.features[:-1]  # drop pool5: 14x14 maps at 224 px
        conv6 = nn.Sequential(nn.Conv2d(512, 1024, 3, padding=1), nn.ReLU(inplace=True))
        return nn.Sequential(features, conv6), 1024
    model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    return _ForwardFeatures(model), model.num_features


class _ForwardFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class CAM(WSOLMethod):
    """CNN backbone + GAP + linear classifier; maps from the classifier weights."""

    name = "cam"
    display_name = "CAM"
    paper = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    config_class = CAMConfig  # with its presets in methods/cam_config.py (torch-free)
    channels_last = True
    presets = PRESETS.presets
    default_presets = PRESETS.default_presets

    def __init__(self, config: CAMConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        if config.backbone in SYNTH_CNNS:
            self.features, channels = _synth_cnn(config.backbone, config.width)
        else:
            self.features, channels = _timm_backbone(config.backbone)
        self.fc = nn.Linear(channels, num_classes)

    def lr_ratios(self) -> dict[str, float]:
        return {"fc.": self.config.head_lr_ratio}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images).mean(dim=(2, 3)))

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> Localization:
        """Raw maps `[B, h, w]` of `labels` (one class per image) and logits `[B, K]`."""
        feats = self.features(images)
        logits = self.fc(feats.mean(dim=(2, 3)))
        weights = self.fc.weight[labels]  # [B, C]
        maps = torch.einsum("bc,bchw->bhw", weights, feats)
        return Localization(maps=maps.detach(), logits=logits.detach())

    def default_feature_layer(self) -> FeatureLayer:
        """The backbone's output: the map the classifier pools (CAM's own map weighs it)."""
        return FeatureLayer("features", self.features)

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> dict[str, list[str]]:
        """Backbone weights (timm or wsolbench key names); the new head stays initialised."""
        if self.config.backbone == "vgg16":  # timm 'features.N' -> our 'features.0.N'
            state_dict = {f"features.0.{k.removeprefix('features.')}": v
                          for k, v in state_dict.items() if k.startswith("features.")}
        elif self.config.backbone not in SYNTH_CNNS:
            state_dict = {f"features.model.{k}": v for k, v in state_dict.items()}
        else:
            state_dict = {k: v for k, v in state_dict.items() if k.startswith("features.")}
        report = load_matching(self, state_dict, "pretrained weights",
                               allow_missing=("fc.", "features.1."))
        if self.config.backbone in SYNTH_CNNS and report["unexpected"]:
            # The synth CNNs share their first layers' shapes: a dilatedcnn file would fill a
            # smallcnn's layers with weights trained for other strides, without a missing key.
            raise WsolbenchError(
                f"pretrained weights hold layers a {self.config.backbone} lacks "
                f"({', '.join(report['unexpected'][:3])}): weights of another backbone?")
        return report
