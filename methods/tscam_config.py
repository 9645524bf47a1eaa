"""TS-CAM's config class and presets, importable without torch.

The entry point `wsolbench.method_presets: tscam` names `PRESETS`, so configs naming TS-CAM
are checked (and its run folders named) without importing torch; the method class
`wsolbench.methods.tscam.TSCAM` takes its `config_class` and `presets` from here
(docs/plugins.md, "Presets without torch").
"""

from __future__ import annotations

from dataclasses import dataclass

from wsolbench.method_config import MethodPresets, ViTMethodConfig


@dataclass(frozen=True)
class TSCAMConfig(ViTMethodConfig):
    """TS-CAM adds nothing to the ViT fields (`model`: e.g. `deit_small_patch16_224`, or
    `vit_synth`: patch 8, width 128, depth 6, 4 heads)."""


PRESETS = MethodPresets(
    config_class=TSCAMConfig,
    presets={
        "synth": TSCAMConfig(model="vit_synth", image_size=64, resize_size=72, epochs=12,
                             batch_size=64, lr=1e-3, weight_decay=0.05, lr_steps=(9,),
                             cam_threshold=0.26,
                             init_weights="synth-vit-tl-mim3-cutmix"),
        # configs/CUB/deit_tscam_small_patch16_224.yaml + train_val_cub.sh (AdamW from CLI).
        "cub": TSCAMConfig(model="deit_small_patch16_224", image_size=224, resize_size=256,
                           epochs=60, batch_size=128, lr=5e-5, weight_decay=0.05,
                           lr_steps=(30,), lr_step_mode="period", cam_threshold=0.1),
        "ilsvrc": TSCAMConfig(model="deit_small_patch16_224", image_size=224, resize_size=256,
                              epochs=20, batch_size=256, lr=5e-4, weight_decay=0.05,
                              lr_steps=(10, 12), lr_step_mode="period", cam_threshold=0.12),
    },
)
