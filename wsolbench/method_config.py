"""A method's configuration, checked without torch (docs/design.md §1).

`MethodConfig` (the recipe every method shares) and `MethodPresets` (a method's config
class, its named presets and which preset each dataset family uses) live here, apart from
the `nn.Module` in `wsolbench.method`, so that a method plugin can register its presets in a
module that imports no torch (entry-point group `wsolbench.method_presets`, docs/plugins.md).
`snakemake -n` then checks every config and names every run folder without importing torch,
and `wsolbench run` answers a bad `--set` before it loads torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from wsolbench.errors import WsolbenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The training transforms `wsolbench.data.torch_dataset.build_transform` implements.
TRAIN_TRANSFORMS = ("resize_crop_flip", "timm_randaug")
# wsolbench's own small ViTs for 64-px synthetic data (width 128, depth 6, 4 heads), by
# patch size: patch 8 gives an 8x8 token grid at 64 px (an object spans about 3x3 tokens);
# patch 4 gives 16x16 (docs/benchmark.md, rows 12-13). `wsolbench.vit.build_vit` builds them.
SYNTH_VITS = {"vit_synth": 8, "vit_synth_p4": 4}
# wsolbench's own CNNs for CAM at 64 px (`wsolbench.methods.cam` builds them), by receptive
# field in pixels: `smallcnn` four 3x3 convs (32x32 maps); `stridedcnn` five, the second and
# fourth of stride 2 (16x16 maps); `dilatedcnn` seven, strided as `stridedcnn`, the last two
# dilated 2 and 4 (16x16 maps; the whole image, as a VGG16's conv5 covers most of a 224-px
# image). docs/benchmark.md rows 57-58.
SYNTH_CNNS = {"smallcnn": 13, "stridedcnn": 21, "dilatedcnn": 69}


def check_timm_name(name: str, key: str, own: tuple[str, ...] = ()) -> None:
    """Refuse a model name timm does not know, with "did you mean" (before any data is read).

    A name in `own` (wsolbench's own backbones) is accepted without importing timm, so the
    synth presets check without torch; any other name imports timm (and torch with it)."""
    if name in own:
        return
    import difflib

    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, [*own, *timm.list_models()], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise WsolbenchError(f"{key}={name!r} is not a timm model{hint}")


@dataclass(frozen=True)
class MethodConfig:
    """Architecture, input and training recipe of one method; logged as flat params.

    Subclasses add their own fields. `lr_step_mode='period'` reproduces the official
    TS-CAM/TRT rule (`adjust_learning_rate_normal`: at the start of epoch e, counted from 1,
    lr *= factor once if any step divides e), `'milestone'` the usual one-time decay at each
    listed epoch. `filter_bias_and_bn` exempts biases, 1-D parameters (norms) and the model's
    `no_weight_decay()` names from weight decay, as timm's `create_optimizer` (which the
    official code calls) does. See docs/recipes.md.
    """

    image_size: int = 64
    resize_size: int = 72
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    lr_steps: tuple[int, ...] = ()
    lr_factor: float = 0.1
    lr_step_mode: str = "milestone"
    label_smoothing: float = 0.0
    cam_threshold: float = 0.1
    train_transform: str = "resize_crop_flip"  # or "timm_randaug" (TRT on ILSVRC)
    filter_bias_and_bn: bool = True
    # Shipped starting weights (wsolbench/weights/<name>.safetensors, from `wsolbench
    # pretrain`), loaded like --pretrained when that is not given; "" trains from scratch.
    init_weights: str = ""

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise WsolbenchError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.lr_step_mode not in ("milestone", "period"):
            raise WsolbenchError(f"lr_step_mode must be 'milestone' or 'period', "
                                 f"got {self.lr_step_mode!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 8:
            raise WsolbenchError("epochs and batch_size must be >= 1 and image_size >= 8")
        if not self.lr > 0 or self.weight_decay < 0 or not self.lr_factor > 0:
            raise WsolbenchError(f"lr and lr_factor must be > 0 and weight_decay >= 0, got "
                                 f"lr={self.lr}, lr_factor={self.lr_factor}, "
                                 f"weight_decay={self.weight_decay}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.cam_threshold < 1:
            raise WsolbenchError("label_smoothing and cam_threshold must lie in [0, 1)")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise WsolbenchError(f"mean and std take one value per RGB channel (3 each, std > "
                                 f"0), got mean={self.mean}, std={self.std}")
        if self.train_transform not in TRAIN_TRANSFORMS:
            raise WsolbenchError(f"train_transform must be one of {', '.join(TRAIN_TRANSFORMS)},"
                                 f" got {self.train_transform!r}")
        if any(step < 1 for step in (*self.lr_steps, *getattr(self, "stage2_lr_steps", ()))):
            raise WsolbenchError(f"lr_steps must be epochs >= 1, got {self.lr_steps}")
        if self.resize_size < self.image_size:
            raise WsolbenchError(f"resize_size ({self.resize_size}) must be >= image_size "
                                 f"({self.image_size}): training crops image_size from it")

    def check_models(self) -> None:
        """Refuse a model name the config's backbone library does not know. Not part of
        `__post_init__`: presets that name timm models are built at import without importing
        timm (and torch with it); `wsolbench.resolve.resolve_method_config` calls this on
        every config it resolves for use. Subclasses with a model name override it."""

    def lr_at(self, epoch: int) -> float:
        """Learning rate for 1-based `epoch` under the configured step rule."""
        if self.lr_step_mode == "milestone":
            decays = sum(epoch >= s for s in self.lr_steps)
        else:
            # Official `adjust_learning_rate_normal`: at the start of each epoch it walks the
            # steps and stops at the first one dividing the epoch, so the lr decays at most
            # once per epoch, however many steps divide it (epoch 4 with steps 2 and 4: once).
            decays = sum(1 for e in range(1, epoch + 1) if any(e % s == 0 for s in self.lr_steps))
        return self.lr * self.lr_factor ** decays


@dataclass(frozen=True)
class ViTMethodConfig(MethodConfig):
    """The fields every method on a timm ViT shares (TS-CAM, TRT): `model`, a timm ViT name
    (`deit_small_patch16_224`, ...) or one of wsolbench's `SYNTH_VITS` (small ViTs for CPU
    runs on 64-px synthetic data), and its stochastic-depth rate."""

    model: str = "vit_synth"
    drop_path: float = 0.1

    def check_models(self) -> None:
        """Refuse a `model` timm does not know (imports timm unless it is a synth ViT)."""
        check_timm_name(self.model, "model", own=tuple(SYNTH_VITS))


@dataclass(frozen=True)
class MethodPresets:
    """What configures a trained method, without its model: the config class, the named
    presets (`--preset`), and the preset each dataset family uses when none is given (a
    family missing from `default_presets` uses the preset of its own name)."""

    config_class: type[MethodConfig]
    presets: Mapping[str, MethodConfig]
    default_presets: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, preset in self.presets.items():
            if not isinstance(preset, self.config_class):
                raise WsolbenchError(f"preset {name!r} is a {type(preset).__name__}, not a "
                                     f"{self.config_class.__name__}")
