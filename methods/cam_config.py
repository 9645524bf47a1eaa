"""CAM's config class and presets, importable without torch.

The entry point `wsolbench.method_presets: cam` names `PRESETS`, so configs naming CAM
are checked (and its run folders named) without importing torch; the method class
`wsolbench.methods.cam.CAM` takes its `config_class` and `presets` from here
(docs/plugins.md, "Presets without torch").
"""

from __future__ import annotations

from dataclasses import dataclass

from wsolbench.method_config import SYNTH_CNNS, MethodConfig, MethodPresets, check_timm_name


@dataclass(frozen=True)
class CAMConfig(MethodConfig):
    backbone: str = "smallcnn"
    width: int = 64  # feature channels of the synth CNNs (SYNTH_CNNS)
    # Classifier lr multiplier, as wsolevaluation's `lr_classifier_ratio` for CAM: a GAP
    # classifier must grow large weights on features that fire on a small part only.
    head_lr_ratio: float = 10.0

    def check_models(self) -> None:
        """Refuse a `backbone` timm does not know (imports timm unless it is wsolbench's own)."""
        check_timm_name(self.backbone, "backbone", own=(*SYNTH_CNNS, "vgg16"))


PRESETS = MethodPresets(
    config_class=CAMConfig,
    presets={
        # CPU default for synth-cub (64 px): ~24 s/epoch on 2 cores. cam_threshold for the
        # paper protocol is the tau a seed-0 run selected on train-fullsup (never on test).
        "synth": CAMConfig(backbone="smallcnn", image_size=64, resize_size=72, epochs=12,
                           batch_size=32, lr=3e-3, weight_decay=1e-4, lr_steps=(9,),
                           cam_threshold=0.26, init_weights="synth-smallcnn-cutmix"),
        # TRT repo's configs/CUB/vggcam_patch16_224.yaml with the effective CLI optimizer.
        "cub": CAMConfig(backbone="vgg16", image_size=224, resize_size=256, epochs=40,
                         batch_size=64, lr=5e-5, weight_decay=0.05, lr_steps=(12, 24),
                         lr_step_mode="period", cam_threshold=0.1),
        "ilsvrc": CAMConfig(backbone="vgg16", image_size=224, resize_size=256, epochs=20,
                            batch_size=256, lr=5e-4, weight_decay=0.05, lr_steps=(10, 12),
                            lr_step_mode="period", cam_threshold=0.12),
    },
)
