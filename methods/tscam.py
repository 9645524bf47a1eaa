"""TS-CAM: Token Semantic Coupled Attention Map (Gao et al., ICCV 2021).

A DeiT whose patch tokens (after the final norm) go through a 3x3 conv head to per-class
semantic maps S `[B, C, h, w]`; GAP of S gives the logits (the class token's output is not
used for classification). At test time the class-token attention of every block, averaged
over heads and summed over blocks, gives the semantic-agnostic map A*; the localization map
of class c is `A* * S_c` (docs/methods.md §2). This is the official repository's
coupling, not the attention-only variant inside the TRT repository (docs/methods.md §2.4).

Checked against: vasgaowei/TS-CAM `lib/models/deit.py` (class `TSCAM`). Built on timm's
`VisionTransformer`; the class-token attention is read through `wsolbench.attention` hooks
(fused attention kernels stay on).
"""

from __future__ import annotations

import torch
from torch import nn

from wsolbench.attention import capture_class_attention
from wsolbench.method import FeatureLayer, Localization, WSOLMethod
from wsolbench.methods.tscam_config import PRESETS, TSCAMConfig
from wsolbench.vit import build_vit, load_vit_weights


class TSCAM(WSOLMethod):
    name = "tscam"
    display_name = "TS-CAM"
    paper = "Gao et al., TS-CAM: Token Semantic Coupled Attention Map, ICCV 2021"
    config_class = TSCAMConfig  # with its presets in methods/tscam_config.py (torch-free)
    presets = PRESETS.presets
    default_presets = PRESETS.default_presets

    def __init__(self, config: TSCAMConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        self.vit = build_vit(config.model, config.image_size, config.drop_path)
        # Upstream (TS-CAM lib/models/deit.py, TSCAM.__init__): `head.apply(_init_weights)`
        # touches only Linear and LayerNorm modules, so the Conv2d keeps PyTorch's default
        # init, as here (docs/recipes.md).
        self.head = nn.Conv2d(self.vit.embed_dim, num_classes, 3, padding=1)

    def semantic_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class maps S `[B, C, h, w]` from the normed patch tokens."""
        tokens = self.vit.forward_features(images)[:, self.vit.num_prefix_tokens:]
        h, w = self.vit.patch_embed.dynamic_feat_size(images.shape[-2:])  # never 14x14 by fiat
        # reshape + permute + contiguous() as upstream's TSCAM.forward: the conv then sees the
        # same memory layout and S is bit-identical to upstream's in float32.
        grid = tokens.reshape(len(images), h, w, -1).permute(0, 3, 1, 2).contiguous()
        return self.head(grid)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.semantic_maps(images).mean(dim=(2, 3))

    def default_feature_layer(self) -> FeatureLayer:
        """The final norm: its patch tokens are the grid the conv head classifies."""
        return FeatureLayer("vit.norm", self.vit.norm, self.vit.num_prefix_tokens)

    def _factors(self, images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(A*, S_labels, logits)`: A* and S `[B, h, w]`, logits `[B, K]`."""
        with capture_class_attention(self.vit.blocks, self.vit.num_prefix_tokens) as rows:
            maps = self.semantic_maps(images)
        agnostic = torch.stack(rows).sum(dim=0)  # A*: head mean, summed over all blocks
        semantic = maps[torch.arange(len(labels)), labels]  # [B, h, w]
        return agnostic.reshape(semantic.shape), semantic, maps.mean(dim=(2, 3))

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> Localization:
        agnostic, semantic, logits = self._factors(images, labels)
        return Localization(maps=(agnostic * semantic).detach(), logits=logits.detach())

    def map_factors(self, images: torch.Tensor, labels: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
        """A* ("attention"), S_c ("semantic") and their product ("map")."""
        agnostic, semantic, _ = self._factors(images, labels)
        return {"attention": agnostic.detach(), "semantic": semantic.detach(),
                "map": (agnostic * semantic).detach()}

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> dict[str, list[str]]:
        return load_vit_weights(self, self.vit, state_dict, "vit.", allow_missing=("head.",))
