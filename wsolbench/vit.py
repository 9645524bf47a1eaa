"""timm Vision Transformer backbones for the transformer methods (TS-CAM, TRT)."""

from __future__ import annotations

import torch
from torch import nn

from wsolbench.method import load_matching
from wsolbench.method_config import SYNTH_VITS


def build_vit(name: str, image_size: int, drop_path: float) -> nn.Module:
    """A timm ViT without classifier; the token grid follows `image_size`."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if name in SYNTH_VITS:
        return VisionTransformer(img_size=image_size, patch_size=SYNTH_VITS[name],
                                 embed_dim=128, depth=6,
                                 num_heads=4, num_classes=0, drop_path_rate=drop_path)
    return timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size,
                             drop_path_rate=drop_path)


def load_vit_weights(model: nn.Module, vit: nn.Module, state: dict[str, torch.Tensor],
                     prefix: str, allow_missing: tuple[str, ...]) -> dict[str, list[str]]:
    """timm/DeiT weights into `vit` (position embeddings resized to its grid by timm)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = checkpoint_filter_fn(state, vit)
    return load_matching(model, {f"{prefix}{k}": v for k, v in state.items()},
                         "pretrained weights", allow_missing=allow_missing)
