"""The method interface every plugin implements (docs/design.md §1).

A method is an `nn.Module` with fixed return types: `forward(images)` gives logits `[B, K]`,
`localize(images, labels)` gives raw maps `[B, h, w]` for the classes asked, plus the logits.
Nothing switches its return type on `self.training`. Maps are raw: no ReLU, resize or
normalization inside a method; `wsolbench.postprocess` is the one place that does that.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from wsolbench.errors import WsolbenchError
# Plugins import the config base from here too (docs/plugins.md); it lives in a torch-free
# module so that configs are checked without torch.
from wsolbench.method_config import MethodConfig


class Localization(NamedTuple):
    """What `localize` returns: raw maps `float32 [B, h, w]` and logits `float32 [B, K]`."""

    maps: torch.Tensor
    logits: torch.Tensor


@dataclass(frozen=True)
class FeatureLayer:
    """A module of a trained method whose output is a spatial feature map on the
    classification path: what post-hoc explainers (Grad-CAM and its family) read
    (docs/plugins.md §"Post-hoc explainers").

    Attributes:
        name: the module's path in the method (`dict(method.named_modules())[name]`).
        module: the module itself (explainers hook its output and gradient).
        prefix_tokens: None for a conv map `[B, C, h, w]`; for a transformer, the number of
            class/distillation tokens before the `h*w` patch tokens of `[B, n, C]`.
    """

    name: str
    module: nn.Module
    prefix_tokens: int | None = None

    def to_grid(self, output: torch.Tensor) -> torch.Tensor:
        """The module's output as `[B, C, h, w]` (patch tokens of a square grid)."""
        if self.prefix_tokens is None:
            return output
        tokens = output[:, self.prefix_tokens:]
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise WsolbenchError(f"layer {self.name!r}: {tokens.shape[1]} patch tokens do not "
                                 "form a square grid")
        return tokens.reshape(len(tokens), side, side, -1).permute(0, 3, 1, 2)


class WSOLMethod(nn.Module):
    """Base class of method plugins. Subclasses set `name`, `config_class`, `presets`."""

    name: ClassVar[str]
    display_name: ClassVar[str] = ""  # how tables and figures name it (default: `name`)
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    presets: ClassVar[dict[str, MethodConfig]] = {}
    # Preset used on each dataset family (a dataset plugin's `family`: synth, cub, ilsvrc,
    # ...) when `--preset` is not given; a family missing here uses the preset of its name.
    default_presets: ClassVar[dict[str, str]] = {}
    paper: ClassVar[str] = ""
    # A post-hoc method trains nothing: it explains a trained method (`PostHocMethod`).
    posthoc: ClassVar[bool] = False
    # Convolutional methods run faster with NHWC tensors (the engine converts both the model
    # and its inputs when this is set); transformers gain nothing.
    channels_last: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> Localization:
        """Raw maps `[B, h, w]` of `labels` and the logits `[B, K]` (detached).

        Evaluation calls this under `torch.no_grad()`; a method that needs gradients (Grad-CAM
        and its family) computes them inside `with torch.enable_grad():`, which is allowed
        and tested (tests/test_contracts.py).
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def map_factors(self, images: torch.Tensor, labels: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
        """The factors whose product is the raw map, each `[B, h, w]` and detached, plus the
        map itself under "map". A method whose map is one piece returns only "map"; TS-CAM
        and TRT return "attention" and "semantic" too (benchmarks/map_factors.py scores each
        factor alone: which one localizes; docs/benchmark.md)."""
        return {"map": self.localize(images, labels).maps}

    # Training stages. Most methods have one; TRT trains in two (docs/methods.md §1.1).
    def stages(self) -> tuple[str, ...]:
        return ("train",)

    def begin_stage(self, stage: str) -> Iterator[nn.Parameter]:
        """Prepare for `stage` and return the parameters it trains."""
        return iter(p for p in self.parameters() if p.requires_grad)

    def stage_config(self, stage: str) -> MethodConfig:
        """The recipe (epochs, lr, schedule) of `stage`; one recipe for single-stage methods."""
        return self.config

    def set_train_mode(self, stage: str) -> None:
        """Put the modules `stage` trains into training mode (TRT stage 2: only its branch)."""
        self.train()

    def lr_ratios(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter-name prefix (default: none)."""
        return {}

    def no_weight_decay(self) -> set[str]:
        """Full names of parameters exempt from weight decay beyond biases and 1-D tensors.

        Collects every submodule's own `no_weight_decay()` (timm models name `pos_embed` and
        `cls_token` there), prefixed with the submodule's path, so the engine can hand the
        whole method to timm's parameter grouping.
        """
        names: set[str] = set()
        for path, module in self.named_modules():
            if module is self or not hasattr(module, "no_weight_decay"):
                continue
            names.update(f"{path}.{name}" for name in module.no_weight_decay())
        return names

    def training_logits(self, images: torch.Tensor, stage: str) -> torch.Tensor:
        return self(images)

    def stage_localize(self, images: torch.Tensor, labels: torch.Tensor,
                       stage: str) -> Localization:
        """The maps that checkpoint selection scores after an epoch of `stage`.

        Default: `localize`. A multi-stage method whose final map needs a later stage
        overrides it (TRT scores its stage-1 map during stage 1, as the official code does).
        """
        return self.localize(images, labels)

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> dict[str, list[str]]:
        """Load backbone weights; returns the dropped/missing key lists it tolerated."""
        raise WsolbenchError(f"method {self.name!r} cannot load pretrained weights")

    def feature_layer(self, name: str | None = None) -> FeatureLayer:
        """The layer post-hoc explainers read: by default the method's last spatial
        features on the path to its logits; `name` picks any other module by its path.
        Methods override `default_feature_layer`; without one, explainers cannot run."""
        default = self.default_feature_layer()
        if name is None or name == "":
            if default is None:
                raise WsolbenchError(f"method {self.name!r} declares no feature layer for "
                                     "explainers; name one with --layer MODULE_PATH")
            return default
        modules = dict(self.named_modules())
        if name not in modules:
            near = [n for n in modules if n.endswith(name.split(".")[-1])][:5]
            raise WsolbenchError(f"method {self.name!r} has no module {name!r}"
                                 + (f"; similar: {', '.join(near)}" if near else ""))
        tokens = default.prefix_tokens if default is not None else None
        return FeatureLayer(name, modules[name], tokens)

    def default_feature_layer(self) -> FeatureLayer | None:
        """The method's last spatial feature layer (None: it declares none)."""
        return None


class PostHocMethod(WSOLMethod):
    """A method that trains nothing and explains a trained method's classifier
    (Grad-CAM and its family; docs/plugins.md §"Post-hoc explainers").

    `wsolbench explain --checkpoint RUN/checkpoint.pt --method NAME[,NAME...]` loads the
    trained method and builds each explainer with `cls(trained, layer)`; evaluation then
    calls `localize` like any method's. The explainer's `config` is the trained method's
    (image size, normalization and the paper protocol's tau stay those of the checkpoint).
    """

    posthoc = True

    def __init__(self, trained: WSOLMethod, layer: str | None = None) -> None:
        super().__init__(trained.config, trained.num_classes)
        self.trained = trained
        self.layer = trained.feature_layer(layer)

    def stages(self) -> tuple[str, ...]:
        return ()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trained(images)

    def describe(self) -> dict[str, str]:
        """What was explained, for results.json."""
        return {"explainer": self.name, "explained_method": self.trained.name,
                "layer": self.layer.name}


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """A state dict from a local `.pth`/`.pt`/`.bin` or `.safetensors` file (never a hub).

    Accepts the common wrappers (`{'model': ...}`, `{'state_dict': ...}`) and strips the
    `module.` prefix DataParallel checkpoints carry.
    """
    path = Path(path)
    if not path.is_file():
        raise WsolbenchError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WsolbenchError(f"{path}: not a readable weights file ({exc})") from None
    for wrapper in ("model", "state_dict", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WsolbenchError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _width_hint(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> str:
    """What the file looks like next to the model: the widths of their first weight
    matrices and their depths (block counts), e.g. a DeiT-S file for a DeiT-B model."""
    def describe(tensors: dict[str, torch.Tensor]) -> str:
        widths = [v.shape[0] for k, v in tensors.items() if k.endswith("weight") and v.ndim >= 2]
        blocks = {k.split("blocks.")[1].split(".")[0] for k in tensors if "blocks." in k}
        depth = f", {len(blocks)} blocks" if blocks else ""
        return f"first layer width {widths[0]}{depth}" if widths else "no weight matrices"

    return f"file: {describe(state)}; model: {describe(own)}"


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                  allow_missing: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Load `state` into `module`, dropping shape-mismatched keys (a new head).

    Missing keys other than those starting with an `allow_missing` prefix, and a file that
    matches nothing, are errors that list the keys.
    """
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in usable and not k.startswith(allow_missing)
                     and not k.endswith("num_batches_tracked"))
    if not usable or missing:
        def listed(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in mismatched if not k.startswith(allow_missing)]
        raise WsolbenchError(
            f"{source}: weights do not fit this model ({_width_hint(state, own)}); "
            f"shape mismatches: [{listed(shapes)}]; missing keys: [{listed(missing)}]; "
            f"unexpected keys: [{listed(unexpected)}]")
    module.load_state_dict(usable, strict=False)
    return {"dropped_shape_mismatch": mismatched, "unexpected": unexpected}
