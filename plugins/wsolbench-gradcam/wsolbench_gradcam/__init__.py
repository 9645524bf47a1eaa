"""pytorch-grad-cam's explainers as wsolbench post-hoc methods.

Each class wraps a trained wsolbench method (`wsolbench.method.PostHocMethod`): the
explainer math is pytorch-grad-cam's; this file is only the adapter — which layer, the token
reshape for ViTs, the GT-class target, hooks released after every batch. The walk-through is
docs/plugins.md, "A third-party plugin: wsolbench-gradcam".
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from wsolbench.errors import WsolbenchError
from wsolbench.method import Localization, PostHocMethod


class PytorchGradCAMMethod(PostHocMethod):
    """The adapter: `explainer` is a pytorch-grad-cam `BaseCAM` subclass."""

    explainer: ClassVar[type]
    paper: ClassVar[str] = ""

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> Localization:
        """GT-class maps at the input resolution, in [0, 1] per image (pytorch-grad-cam
        min-max scales them; the protocols normalize again, which changes nothing), and the
        trained method's logits from the same forward pass."""
        targets = [ClassifierOutputTarget(int(label)) for label in labels]
        maps = None
        # Gradients inside localize are allowed (evaluation runs under no_grad). The context
        # manager releases the hooks at exit; BaseCAM.__exit__ swallows an IndexError (it
        # prints it), so a missing result is turned into an error here.
        with torch.enable_grad(), self.explainer(
                model=self.trained, target_layers=[self.layer.module],
                reshape_transform=self.layer.to_grid) as cam:
            maps = cam(input_tensor=images, targets=targets)
            logits = cam.outputs.detach()
        if maps is None:
            raise WsolbenchError(f"{self.name}: pytorch-grad-cam returned no map for layer "
                                 f"{self.layer.name!r}")
        self.trained.zero_grad(set_to_none=True)  # no gradients left on the trained weights
        return Localization(maps=torch.from_numpy(np.ascontiguousarray(maps, np.float32)),
                            logits=logits.float())


class GradCAMMethod(PytorchGradCAMMethod):
    name = "gradcam"
    display_name = "Grad-CAM"
    paper = "Selvaraju et al., ICCV 2017"
    explainer = GradCAM


class GradCAMPlusPlusMethod(PytorchGradCAMMethod):
    name = "gradcam-pp"
    display_name = "Grad-CAM++"
    paper = "Chattopadhay et al., WACV 2018"
    explainer = GradCAMPlusPlus


class XGradCAMMethod(PytorchGradCAMMethod):
    name = "xgradcam"
    display_name = "XGrad-CAM"
    paper = "Fu et al., BMVC 2020"
    explainer = XGradCAM


class LayerCAMMethod(PytorchGradCAMMethod):
    name = "layercam"
    display_name = "LayerCAM"
    paper = "Jiang et al., IEEE TIP 2021"
    explainer = LayerCAM


class EigenCAMMethod(PytorchGradCAMMethod):
    """Gradient-free: the first principal component of the layer's activations (its sign
    as pytorch-grad-cam fixes it; the GT class plays no part)."""

    name = "eigencam"
    display_name = "EigenCAM"
    paper = "Muhammad & Yeasin, IJCNN 2020"
    explainer = EigenCAM


class ScoreCAMMethod(PytorchGradCAMMethod):
    """Gradient-free: each activation channel, upsampled, masks the input and weighs
    itself by the GT-class score (one forward pass per channel and image)."""

    name = "scorecam"
    display_name = "Score-CAM"
    paper = "Wang et al., CVPRW 2020"
    explainer = ScoreCAM
