"""TRT's config class and presets, importable without torch.

The entry point `wsolbench.method_presets: trt` names `PRESETS`, so configs naming TRT
are checked (and its run folders named) without importing torch; the method class
`wsolbench.methods.trt.TRT` takes its `config_class` and `presets` from here
(docs/plugins.md, "Presets without torch").
"""

from __future__ import annotations

from dataclasses import dataclass

from wsolbench.errors import WsolbenchError
from wsolbench.method_config import MethodPresets, ViTMethodConfig


@dataclass(frozen=True)
class TRTConfig(ViTMethodConfig):
    thresh: float = 0.6  # cumulative attention mass kept (0.6 CUB-224, 0.65 CUB-384, 0.95 ILSVRC)
    stage2_epochs: int = 6
    stage2_lr_steps: tuple[int, ...] = ()
    stage2_lr_factor: float | None = None  # None: lr_factor (the 384 recipe: 0.2 then 0.1)
    stage1_map: bool = False  # evaluate the class-agnostic stage-1 map m' instead

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.thresh <= 1 or self.stage2_epochs < 1:
            raise WsolbenchError(f"thresh must lie in (0, 1] and stage2_epochs be >= 1, got "
                                 f"thresh={self.thresh}, stage2_epochs={self.stage2_epochs}")


PRESETS = MethodPresets(
    config_class=TRTConfig,
    presets={
        "synth": TRTConfig(model="vit_synth", image_size=64, resize_size=72, epochs=12,
                           batch_size=64, lr=1e-3, weight_decay=0.05, lr_steps=(9,),
                           thresh=0.6, stage2_epochs=4, cam_threshold=0.26,
                           init_weights="synth-vit-tl-mim3-cutmix"),
        # configs/CUB/deit_trt_{,fuse_}base_patch16_224_0.6.yaml + train_*.sh.
        "cub": TRTConfig(model="deit_base_patch16_224", image_size=224, resize_size=256,
                         epochs=30, batch_size=128, lr=5e-5, weight_decay=0.05, lr_steps=(15,),
                         lr_step_mode="period", thresh=0.6, stage2_epochs=20,
                         stage2_lr_steps=(10,), cam_threshold=0.1),
        # configs/CUB/deit_trt_{,fuse_}base_patch16_384_0.65.yaml + train_cub.sh: 384 px
        # crops of 448 px resizes, token threshold 0.65, stage-1 lr factor 0.2.
        "cub384": TRTConfig(model="deit_base_patch16_384", image_size=384, resize_size=448,
                            epochs=30, batch_size=128, lr=5e-5, weight_decay=0.05,
                            lr_steps=(15,), lr_factor=0.2, lr_step_mode="period", thresh=0.65,
                            stage2_epochs=20, stage2_lr_steps=(10,), stage2_lr_factor=0.1,
                            cam_threshold=0.1),
        "ilsvrc": TRTConfig(model="deit_base_patch16_224", image_size=224, resize_size=256,
                            epochs=12, batch_size=512, lr=5e-4, weight_decay=0.05,
                            lr_steps=(2, 4, 6, 8), lr_factor=0.4, lr_step_mode="period",
                            label_smoothing=0.1, train_transform="timm_randaug",
                            thresh=0.95, stage2_epochs=12,
                            stage2_lr_steps=(2, 4, 6, 8), cam_threshold=0.12),
    },
)
