"""`wsolbench pretrain`: a synthetic backbone trained as a plain classifier on its own corpus.

This is the role ImageNet pretraining plays for CUB (docs/benchmark.md): the synth backbones
(the CAM CNN, the ViT of TS-CAM and TRT) first learn on `synth-pretrain`, whose classes are
not the benchmark's, then every method fine-tunes from the same weights. The classifier is
the backbone's plain one: global average pooling and a linear layer for the CNN (the CAM
architecture, wsolbench key names), the class token and timm's head for the ViT (timm key
names, as a DeiT checkpoint). Output: `<out>.safetensors` plus `<out>.json` (recipe, corpus,
accuracy, cost, SHA-256), written atomically; an interrupted pretraining resumes from
`<out>.resume.pt`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsolbench.errors import WsolbenchError
from wsolbench.fileio import atomic_save, atomic_write_json
from wsolbench.interrupt import check as check_interrupt
from wsolbench.method_config import IMAGENET_MEAN, IMAGENET_STD, SYNTH_CNNS, SYNTH_VITS

logger = logging.getLogger(__name__)

# CAM's synth CNNs and the synth ViTs (the CLI spells them out so that --help needs no
# torch; a test keeps the two lists equal).
BACKBONES = (*SYNTH_CNNS, *SYNTH_VITS)


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining recipe (DeiT's, scaled down): AdamW, linear warmup then cosine decay
    per step (timm's scheduler), label smoothing, resize-crop-flip augmentation."""

    backbone: str = "vit_synth"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    drop_path: float = 0.1
    image_size: int = 64
    resize_size: int = 72
    seed: int = 0
    # Weights an earlier `wsolbench pretrain` of the same backbone wrote: this pretraining
    # continues from them (e.g. a stage at a higher resolution; docs/benchmark.md row 22).
    init_from: str = ""
    # Token labeling (ViTs only; docs/benchmark.md, "The pretraining setting"): every patch token
    # also learns the class scores a CNN pretrained on the same corpus gives its location. The
    # teacher is the output of a `wsolbench pretrain` of a synth CNN (SYNTH_CNNS): a shipped
    # name (`synth-smallcnn`) or a file. `token_loss_weight` is LV-ViT's beta.
    token_teacher: str = ""
    token_loss_weight: float = 0.5
    # Masked image modelling (ViTs only; SimMIM's objective, docs/benchmark.md row 42): a
    # second forward pass in which `mim_mask_ratio` of each image's patch tokens are replaced
    # by a learned mask token, and a linear head on every masked token's output predicts its
    # patch's (normalized) pixels, L1 loss weighted `mim_loss_weight`; 0 turns it off.
    mim_loss_weight: float = 0.0
    mim_mask_ratio: float = 0.5
    # CutMix (Yun et al., ICCV 2019; part of DeiT's ImageNet recipe), any backbone: each batch
    # pastes a box of the batch read backwards over its images, the box's area drawn from
    # Beta(alpha, alpha), and the targets mix by area (timm's `Mixup`); 0 turns it off.
    cutmix_alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise WsolbenchError(f"pretrain: backbone must be one of {', '.join(BACKBONES)}, "
                                 f"got {self.backbone!r}")
        for key in ("epochs", "batch_size", "image_size"):
            if getattr(self, key) < 1:
                raise WsolbenchError(f"pretrain: {key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or not 0 <= self.label_smoothing < 1:
            raise WsolbenchError("pretrain: lr must be > 0 and label_smoothing in [0, 1)")
        if self.resize_size < self.image_size:
            raise WsolbenchError("pretrain: resize_size must be >= image_size")
        if self.token_teacher and self.backbone not in SYNTH_VITS:
            raise WsolbenchError(f"pretrain: token_teacher labels a ViT's patch tokens; "
                                 f"{self.backbone!r} has none")
        if self.token_loss_weight < 0:
            raise WsolbenchError("pretrain: token_loss_weight must be >= 0")
        if self.mim_loss_weight < 0 or not 0 < self.mim_mask_ratio < 1:
            raise WsolbenchError("pretrain: mim_loss_weight must be >= 0 and mim_mask_ratio "
                                 "in (0, 1)")
        if self.cutmix_alpha < 0:
            raise WsolbenchError("pretrain: cutmix_alpha must be >= 0")
        if self.cutmix_alpha and self.batch_size % 2:
            raise WsolbenchError("pretrain: cutmix_alpha pairs a batch's images, so batch_size "
                                 f"must be even, got {self.batch_size}")
        if self.mim_loss_weight and self.backbone not in SYNTH_VITS:
            raise WsolbenchError(f"pretrain: mim_loss_weight masks a ViT's patch tokens; "
                                 f"{self.backbone!r} has none")


def build_classifier(cfg: PretrainConfig, num_classes: int) -> nn.Module:
    """The backbone with its plain classifier; its state dict is what gets shipped."""
    if cfg.backbone in SYNTH_CNNS:
        from wsolbench.registry import get_plugin

        cam = get_plugin("methods", "cam")
        config = dataclasses.replace(cam.presets["synth"], backbone=cfg.backbone,
                                     image_size=cfg.image_size, resize_size=cfg.resize_size)
        return cam(config, num_classes)
    from wsolbench.vit import build_vit

    vit = build_vit(cfg.backbone, cfg.image_size, cfg.drop_path)
    vit.reset_classifier(num_classes)
    return vit


class AuxiliaryViT(nn.Module):
    """A timm ViT plus the heads of its auxiliary pretraining losses: a linear head on every
    patch token (LV-ViT's token labeling) and/or a mask token with a linear pixel head
    (SimMIM). Only `vit` is shipped: the rest exists for the pretraining losses."""

    def __init__(self, vit: nn.Module, num_classes: int, token_labeling: bool,
                 masked_modelling: bool) -> None:
        super().__init__()
        self.vit = vit
        self.token_head = nn.Linear(vit.embed_dim, num_classes) if token_labeling else None
        self.mask_token = self.pixel_head = None
        if masked_modelling:
            self.patch = int(vit.patch_embed.patch_size[0])
            self.mask_token = nn.Parameter(torch.zeros(1, 1, vit.embed_dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
            self.pixel_head = nn.Linear(vit.embed_dim, 3 * self.patch ** 2)

    def no_weight_decay(self) -> set[str]:
        """The ViT's exemptions (position embedding, class token) and the mask token, so that
        timm's optimizer groups are those of the plain pretraining plus the new heads."""
        return {f"vit.{name}" for name in self.vit.no_weight_decay()} | {"mask_token"}

    def forward_with_tokens(self, images: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class-token logits `[B, K]` and patch-token logits `[B, n, K]` (None without
        token labeling)."""
        features = self.vit.forward_features(images)
        if self.token_head is None:
            return self.vit.forward_head(features), None
        tokens = features[:, self.vit.num_prefix_tokens:]
        return self.vit.forward_head(features), self.token_head(tokens)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_tokens(images)[0]

    def reconstruction_loss(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """SimMIM's loss: the masked tokens (`mask [B, n]`, True = masked) enter as the mask
        token, and the mean absolute error of the pixels predicted for them."""
        vit = self.vit
        x = vit.patch_embed(images)
        x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))  # forward_features' order
        x = vit.norm(vit.blocks(x))[:, vit.num_prefix_tokens:]
        error = (self.pixel_head(x) - patch_pixels(images, self.patch)).abs()
        return error[mask].mean()


def patch_pixels(images: torch.Tensor, patch: int) -> torch.Tensor:
    """`[B, n, patch * patch * 3]`: each token's patch of `images [B, 3, H, W]`, tokens in the
    patch embedding's row-major order."""
    b, c = images.shape[:2]
    tiles = images.unfold(2, patch, patch).unfold(3, patch, patch)  # [B, C, h, w, p, p]
    return tiles.permute(0, 2, 3, 4, 5, 1).reshape(b, -1, patch * patch * c)


def random_token_mask(batch: int, tokens: int, ratio: float, generator: torch.Generator
                      ) -> torch.Tensor:
    """bool `[batch, tokens]` with exactly `round(ratio * tokens)` True per row, uniformly
    placed (SimMIM masks at random, independently per image)."""
    ranks = torch.rand(batch, tokens, generator=generator).argsort(1).argsort(1)
    return ranks < round(ratio * tokens)


def load_token_teacher(cfg: PretrainConfig, corpus_info: dict[str, Any], num_classes: int
                       ) -> tuple[nn.Module, dict[str, str]]:
    """The frozen CNN `cfg.token_teacher` names (a shipped name or a file), checked against
    its manifest: a synth CNN pretrained on this very corpus, so its classes are these."""
    from safetensors.torch import load_file

    from wsolbench.weights import read_manifest, shipped_weights

    path = Path(cfg.token_teacher)
    if not path.is_file():
        if path.suffix or len(path.parts) > 1:
            raise WsolbenchError(f"pretrain: token_teacher={cfg.token_teacher!r}: no such file")
        path = shipped_weights(cfg.token_teacher)
    manifest = read_manifest(path)
    backbone = manifest.get("backbone")
    if backbone not in SYNTH_CNNS:
        raise WsolbenchError(f"pretrain: token_teacher={path} holds a {backbone!r} backbone, "
                             f"not a synth CNN ({', '.join(SYNTH_CNNS)})")
    if manifest.get("corpus") != json.loads(json.dumps(corpus_info)):  # tuples as JSON lists
        raise WsolbenchError(f"pretrain: token_teacher={path} was pretrained on another "
                             "corpus; its classes are not this corpus's")
    cnn = dataclasses.replace(cfg, backbone=backbone, token_teacher="", mim_loss_weight=0.0)
    teacher = build_classifier(cnn, num_classes)
    missing, unexpected = teacher.load_state_dict(load_file(str(path)), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # never shipped
    if missing or unexpected:
        raise WsolbenchError(f"pretrain: token_teacher={path} does not fit a {backbone}: "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    teacher.eval().requires_grad_(False)
    # The name as given (a shipped name stays a name): no machine's paths in a manifest.
    return teacher, {"file": cfg.token_teacher, "sha256": manifest["sha256"]}


def teacher_token_targets(teacher: nn.Module, images: torch.Tensor, grid: tuple[int, int]
                          ) -> torch.Tensor:
    """Soft targets `[B, h*w, K]`: the teacher's per-location class scores (its CAM logits,
    the classifier applied before pooling) averaged over each token's patch, softmaxed."""
    with torch.no_grad():
        features = teacher.features(images)
        dense = torch.einsum("kc,bchw->bkhw", teacher.fc.weight, features)
        dense = dense + teacher.fc.bias[None, :, None, None]
        pooled = nn.functional.adaptive_avg_pool2d(dense, grid)
        return pooled.flatten(2).transpose(1, 2).softmax(dim=-1)


def load_earlier_pretraining(model: nn.Module, cfg: PretrainConfig) -> dict[str, str]:
    """Load `cfg.init_from` (checked against its manifest) into `model`. For a ViT, timm
    resamples the position embeddings to this stage's token grid, as DeiT's 224 -> 384
    fine-tuning does; nothing else may differ. Returns the file and its SHA-256."""
    from safetensors.torch import load_file

    from wsolbench.weights import read_manifest

    path = Path(cfg.init_from)
    if not path.is_file():
        raise WsolbenchError(f"pretrain: init_from={cfg.init_from!r}: no such file")
    manifest = read_manifest(path)
    if manifest.get("backbone") != cfg.backbone:
        raise WsolbenchError(f"pretrain: init_from={path} holds a {manifest.get('backbone')!r} "
                             f"backbone, not {cfg.backbone!r}")
    state = load_file(str(path))
    if cfg.backbone in SYNTH_VITS:
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # another class count, or a file of another architecture
        first = str(err).strip().splitlines()[-1].strip()
        raise WsolbenchError(f"pretrain: init_from={path} does not fit this backbone: "
                             f"{first}") from None
    return {"file": str(path), "sha256": manifest["sha256"]}


def _accuracy(model: nn.Module, loader) -> float:
    model.eval()
    hits = total = 0
    with torch.no_grad():
        for images, labels, _ in loader:
            hits += int((model(images).argmax(1) == labels).sum())
            total += len(labels)
    return 100.0 * hits / max(total, 1)


def pretrain(cfg: PretrainConfig, data, out: Path, threads: int | None = None,
             resume: bool = True) -> dict[str, Any]:
    """Train `cfg.backbone` on `data` (a `WSOLData`: train and test splits); write the
    weights and their manifest; return the manifest."""
    from safetensors.torch import save_file
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    from torch.utils.data import DataLoader

    from wsolbench.data.torch_dataset import RecordDataset, build_transform
    from wsolbench.engine import set_deterministic
    from wsolbench.fileio import sha256_file

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    set_deterministic()
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg, data.num_classes)
    init_from = load_earlier_pretraining(model, cfg) if cfg.init_from else None
    shipped = model  # the module whose weights are written
    teacher, teacher_info, grid = None, None, None
    masking = torch.Generator().manual_seed(cfg.seed + 1)  # MIM masks: their own stream
    if cfg.token_teacher or cfg.mim_loss_weight:
        with torch.random.fork_rng():  # building the teacher and the heads leaves the RNG
            if cfg.token_teacher:      # as the plain run's
                teacher, teacher_info = load_token_teacher(cfg, data.info, data.num_classes)
            model = AuxiliaryViT(shipped, data.num_classes, token_labeling=teacher is not None,
                                 masked_modelling=bool(cfg.mim_loss_weight))
        grid = tuple(shipped.patch_embed.dynamic_feat_size((cfg.image_size, cfg.image_size)))
    train_set = RecordDataset(data.train, build_transform(
        True, cfg.image_size, cfg.resize_size, IMAGENET_MEAN, IMAGENET_STD))
    test_set = RecordDataset(data.test, build_transform(
        False, cfg.image_size, cfg.resize_size, IMAGENET_MEAN, IMAGENET_STD))
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                              drop_last=True, generator=generator)
    test_loader = DataLoader(test_set, batch_size=256)
    steps = len(train_loader)
    if steps == 0:
        raise WsolbenchError(f"pretrain: {len(train_set)} training images are fewer than one "
                             f"batch ({cfg.batch_size})")
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.epochs * steps,
                                  warmup_t=cfg.warmup_epochs * steps, warmup_lr_init=1e-6,
                                  lr_min=1e-6, t_in_epochs=False)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    cutmix = None
    if cfg.cutmix_alpha:
        # timm's Mixup draws from NumPy's global generator: seeded here, kept in the snapshot.
        np.random.seed(cfg.seed)
        cutmix = Mixup(mixup_alpha=0.0, cutmix_alpha=cfg.cutmix_alpha, mode="batch",
                       label_smoothing=cfg.label_smoothing, num_classes=data.num_classes)
        loss_fn = SoftTargetCrossEntropy()  # the targets come mixed and smoothed
    resume_path = out.with_suffix(".resume.pt")
    history: list[dict[str, float]] = []
    start, spent = 0, 0.0
    recipe = dataclasses.asdict(cfg)
    if resume and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=False)
        if state["recipe"] == recipe and state["corpus"] == data.info:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            masking.set_state(state["masking"])
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])
            start, history, spent = state["epoch"], state["history"], state["seconds"]
            logger.info("pretrain: resuming after epoch %d of %d", start, cfg.epochs)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        losses, token_losses, mim_losses, hits, seen = [], [], [], 0, 0
        for step, (images, labels, _) in enumerate(train_loader):
            check_interrupt()  # a swallowed Ctrl-C or SIGTERM stops here
            scheduler.step_update(epoch * steps + step)
            # With CutMix the loss takes the mixed targets; the train accuracy stays against
            # each image's own label (the larger part of it, on average).
            images, targets = cutmix(images, labels) if cutmix else (images, labels)
            if model is shipped:
                logits = model(images)
                loss = loss_fn(logits, targets)
            else:
                logits, token_logits = model.forward_with_tokens(images)
                loss = loss_fn(logits, targets)
                if teacher is not None:
                    token_targets = teacher_token_targets(teacher, images, grid)
                    token_loss = -(token_targets * token_logits.log_softmax(dim=-1)).sum(-1).mean()
                    loss = loss + cfg.token_loss_weight * token_loss
                    token_losses.append(token_loss.item())
                if cfg.mim_loss_weight:
                    mask = random_token_mask(len(images), grid[0] * grid[1],
                                             cfg.mim_mask_ratio, masking)
                    mim_loss = model.reconstruction_loss(images, mask)
                    loss = loss + cfg.mim_loss_weight * mim_loss
                    mim_losses.append(mim_loss.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            hits += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "train_acc": 100.0 * hits / seen, "lr": optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - t0}
        if token_losses:  # the soft cross-entropy to the teacher, before its weight
            row["token_loss"] = float(np.mean(token_losses))
        if mim_losses:  # the masked patches' mean absolute pixel error, before its weight
            row["mim_loss"] = float(np.mean(mim_losses))
        if (epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs:
            row["test_acc"] = _accuracy(model, test_loader)
        history.append(row)
        spent += row["seconds"]
        parts = [f"{k.removesuffix('_loss')} {row[k]:.4f}" for k in ("token_loss", "mim_loss")
                 if k in row]
        logger.info("pretrain epoch %d/%d: loss %.4f%s, train acc %.1f %%%s, %.0f s", epoch + 1,
                    cfg.epochs, row["loss"], f" ({', '.join(parts)})" if parts else "",
                    row["train_acc"],
                    f", test acc {row['test_acc']:.1f} %" if "test_acc" in row else "",
                    row["seconds"])
        snapshot = {"recipe": recipe, "corpus": data.info, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                    "masking": masking.get_state(),
                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                    "epoch": epoch + 1,
                    "history": history, "seconds": spent}
        atomic_save(resume_path, lambda path, state=snapshot: torch.save(state, path))
    weights = {k: v.contiguous() for k, v in shipped.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    atomic_save(out, lambda p: save_file(weights, str(p)))
    manifest = {"file": out.name, "sha256": sha256_file(out), "backbone": cfg.backbone,
                "key_names": "timm" if cfg.backbone.startswith("vit") else "wsolbench (CAM)",
                "recipe": recipe, "init_from": init_from, "token_teacher": teacher_info,
                "corpus": data.info, "corpus_name": data.name,
                "train_images": len(data.train), "test_images": len(data.test),
                "test_acc": history[-1].get("test_acc"),
                "train_acc": history[-1]["train_acc"], "seconds": spent,
                "threads": torch.get_num_threads(), "torch": torch.__version__,
                "history": history}
    atomic_write_json(out.with_suffix(".json"), manifest)
    resume_path.unlink(missing_ok=True)
    return manifest
