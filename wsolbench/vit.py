"""timm Vision Transformer backbones for the transformer methods (TS-CAM, TRT)."""

from __future__ import annotations

import torch
from torch import nn

from wsolbench.errors import WsolbenchError
from wsolbench.method import load_matching


def check_timm_name(name: str, key: str, own: tuple[str, ...] = ()) -> None:
    """Refuse a model name timm does not know, with "did you mean" (before any data is read;
    timm is imported here, torch with it: a run imports both anyway)."""
    if name in own:
        return
    import difflib

    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, [*own, *timm.list_models()], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise WsolbenchError(f"{key}={name!r} is not a timm model{hint}")


# wsolbench's own small ViTs for 64-px synthetic data (width 128, depth 6, 4 heads), by
# patch size: patch 8 gives an 8x8 token grid at 64 px (an object spans about 3x3 tokens);
# patch 4 gives 16x16 (docs/benchmark.md, rows 12-13).
SYNTH_VITS = {"vit_synth": 8, "vit_synth_p4": 4}


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
