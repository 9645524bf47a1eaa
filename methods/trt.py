"""TRT: Token Refinement Transformer / Re-Attention Transformer (Su et al., BMVC 2022).

As the official code computes it (docs/methods.md §1):

1. Preliminary attention m: class-token -> patch attention of the first L-1 blocks,
   head-averaged, summed over blocks, L1-normalized over patches.
2. Token selection: sort m descending; a token is selected iff the inclusive cumulative mass
   is *strictly* below `thresh` (the crossing token is excluded; ties follow `torch.sort`).
3. TPSM: a masked copy of the last block over the block-(L-2) patch tokens (keys = selected
   tokens and the query itself), LayerNorm, Linear(D -> 1), masked softmax -> lambda; the
   lambda-weighted sum of those patch tokens, with the class token, goes through the original
   last block on a 2-token sequence -> norm -> head -> logits p^t (train and test).
4. CAM branch (stage 2): an extra block on the block-(L-3) output, LayerNorm, 3x3 conv to C
   maps M_C, GAP -> p^c.
5. Test map: m' = m outside the selection, rho * lambda inside (rho = selected mass of m);
   map_c = m' * M_C[c] (the stage-2 "fuse" model; `stage1_map=True` gives m' alone with the
   stage-1 renormalization of lambda).

Two stages as the official code trains them: stage "tpsm" trains everything but the CAM
branch with CE on p^t; stage "cam" freezes everything but the CAM branch and trains it with
CE on p^c, the rest in eval mode. Deviations, all guarded and documented in docs/recipes.md:
the masked softmax subtracts the maximum (the same value in exact arithmetic; stable in low
precision); an empty selection (one token holding >= thresh of the mass) gives lambda = 0 and
the map falls back to m instead of the official stage-1 NaN. Initialisation and presets follow
upstream's constructors and configs (docs/recipes.md).

Checked against: su-hui-zz/ReAttentionTransformer `lib/models/deit.py` (classes `TRT`,
`TRTFuse`, `CAM6FuseBlock`) and `lib/models/vision_transformer.py` (`softmax_with_policy`).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from wsolbench.attention import capture_class_attention
from wsolbench.method import FeatureLayer, Localization, MethodConfig, WSOLMethod
from wsolbench.methods.trt_config import PRESETS, TRTConfig
from wsolbench.vit import build_vit, load_vit_weights

POLICY_EPS = 1e-6


def select_tokens(m: torch.Tensor, thresh: float) -> torch.Tensor:
    """bool `[B, n]`: the highest-attention prefix whose inclusive cumulative mass < thresh."""
    sorted_m, order = m.sort(dim=1, descending=True)
    keep_sorted = sorted_m.cumsum(dim=1) < thresh
    return torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)


def masked_token_softmax(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """lambda `[B, n]` = keep * exp(s) / (sum keep * exp(s) + 1e-6), computed stably.

    Subtracting the row maximum M and scaling the 1e-6 by exp(-M) is the same number in
    exact arithmetic as the official unshifted formula.
    """
    scores = scores.float()
    top = scores.max(dim=1, keepdim=True).values
    e = torch.exp(scores - top) * keep
    return e / (e.sum(dim=1, keepdim=True) + POLICY_EPS * torch.exp(-top))


def masked_attention(attn: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """timm `Attention` weights with the official policy softmax (keys: selected or self)."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # [B, H, n, n]
    allowed = keep[:, None, None, :].float() + torch.eye(n, device=x.device)[None, None]
    allowed = allowed.clamp(max=1.0)
    e = torch.exp(logits.float() - logits.float().amax(dim=-1, keepdim=True)) * allowed
    probs = (e + POLICY_EPS / n) / (e.sum(dim=-1, keepdim=True) + POLICY_EPS)
    out = attn.attn_drop(probs.to(v.dtype)) @ v
    out = attn.norm(out.transpose(1, 2).reshape(b, n, -1))
    return attn.proj_drop(attn.proj(out))


def masked_block(block: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A timm `Block` (pre-norm) whose attention is the masked policy attention."""
    x = x + block.drop_path1(block.ls1(masked_attention(block.attn, block.norm1(x), keep)))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def _fresh_copy(module: nn.Module) -> nn.Module:
    """A copy of `module`'s architecture with PyTorch's default initialisation."""
    fresh = copy.deepcopy(module)
    for sub in fresh.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return fresh


class TRT(WSOLMethod):
    name = "trt"
    display_name = "TRT"
    paper = "Su et al., Re-Attention Transformer for Weakly Supervised Object Localization, " \
            "BMVC 2022"
    config_class = TRTConfig  # with its presets in methods/trt_config.py (torch-free)
    presets = PRESETS.presets
    default_presets = PRESETS.default_presets

    def __init__(self, config: TRTConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        self.vit = build_vit(config.model, config.image_size, config.drop_path)
        dim = self.vit.embed_dim
        # Initialisation as upstream's constructors (ReAttentionTransformer lib/models/deit.py;
        # docs/recipes.md): `head` is built inside VisionTransformer.__init__ before its
        # `self.apply(self._init_weights)`, so trunc-normal(0.02) weights and zero bias.
        self.vit.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.vit.head.weight, std=0.02)
        nn.init.zeros_(self.vit.head.bias)
        # TRT.__init__ builds score_layer, score_norm and score_head *after* that apply: a
        # fresh Block, LayerNorm and Linear keep PyTorch's default init. The last block is
        # copied for its architecture only (drop path dpr[-1], like upstream's Block args);
        # `load_pretrained` then fills score_layer/score_norm from blocks[-1]/norm, as
        # upstream's deit_trt_* constructors do.
        self.score_layer = _fresh_copy(self.vit.blocks[-1])
        self.score_norm = _fresh_copy(self.vit.norm)
        self.score_head = nn.Linear(dim, 1)
        # TRTFuse's CAM6FuseBlock: cam_tr and cam_norm default-initialised (pretrained: from
        # blocks[-1]/norm); `cam_head.apply(self._init_weights)` touches only Linear and
        # LayerNorm modules, so the Conv2d keeps PyTorch's default init.
        self.cam_tr = _fresh_copy(self.vit.blocks[-1])
        self.cam_norm = _fresh_copy(self.vit.norm)
        self.cam_head = nn.Conv2d(dim, num_classes, 3, padding=1)

    # ------------------------------------------------------------------ the forward pass
    def _run(self, images: torch.Tensor, with_cam: bool) -> dict[str, torch.Tensor]:
        vit, prefix = self.vit, self.vit.num_prefix_tokens
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        blocks = list(vit.blocks)
        with capture_class_attention(blocks[:-1], prefix) as rows:
            for block in blocks[:-2]:
                x = block(x)
            cam_in = x  # output of block L-3: the CAM branch input
            x = blocks[-2](x)
        m = torch.stack(rows).sum(dim=0)
        m = m / m.sum(dim=1, keepdim=True)
        keep = select_tokens(m.detach(), self.config.thresh)
        patches = x[:, prefix:]
        z = masked_block(self.score_layer, patches, keep)
        lam = masked_token_softmax(self.score_head(self.score_norm(z)).squeeze(-1), keep)
        fused = (lam.unsqueeze(-1).to(patches.dtype) * patches).sum(dim=1, keepdim=True)
        out = blocks[-1](torch.cat([x[:, :1], fused], dim=1))
        result = {"logits": vit.head(vit.norm(out)[:, 0]), "m": m, "keep": keep, "lam": lam}
        if with_cam:
            h, w = vit.patch_embed.dynamic_feat_size(images.shape[-2:])
            tokens = self.cam_norm(self.cam_tr(cam_in))[:, prefix:]
            # contiguous() as upstream's CAM6FuseBlock: the conv then runs on the same memory
            # layout, and M_C is bit-identical to upstream's in float32.
            grid = tokens.reshape(len(images), h, w, -1).permute(0, 3, 1, 2).contiguous()
            cam = self.cam_head(grid)
            result["cam"], result["cam_logits"] = cam, cam.mean(dim=(2, 3))
        return result

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """TPSM logits p^t: the classification output in both stages."""
        return self._run(images, with_cam=False)["logits"]

    @torch.no_grad()
    def token_selection(self, images: torch.Tensor) -> torch.Tensor:
        """bool `[B, n]`: the patch tokens step 2 keeps for `images`. How many the threshold
        keeps depends on the token grid (benchmarks/trt_selection.py reports it)."""
        return self._run(images, with_cam=False)["keep"]

    def default_feature_layer(self) -> FeatureLayer:
        """Block L-1's output: the last patch grid on the path to the TPSM logits (block L
        sees only the class token and the fused token)."""
        index = len(self.vit.blocks) - 2
        return FeatureLayer(f"vit.blocks.{index}", self.vit.blocks[index],
                            self.vit.num_prefix_tokens)

    @staticmethod
    def refined_attention(m: torch.Tensor, keep: torch.Tensor, lam: torch.Tensor,
                          renormalize: bool) -> torch.Tensor:
        """m' `[B, n]`: rho * lambda on the selection, m elsewhere (sums to 1)."""
        rho = (m * keep).sum(dim=1, keepdim=True)
        if renormalize:  # stage-1 formula: lambda renormalized over the selection
            total = lam.sum(dim=1, keepdim=True)
            lam = torch.where(total > 0, lam / total.clamp_min(1e-30), lam)
        refined = torch.where(keep, rho * lam, m)
        empty = ~keep.any(dim=1, keepdim=True)  # nothing selected: fall back to m, no NaN
        return torch.where(empty, m, refined)

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> Localization:
        return self._localize(images, labels, stage1=self.config.stage1_map)

    def stage_localize(self, images: torch.Tensor, labels: torch.Tensor,
                       stage: str) -> Localization:
        """During stage 1 the CAM branch is untrained: score the stage-1 map m', as the
        official stage-1 script (the `TRT` model class) evaluates every epoch."""
        return self._localize(images, labels, stage1=stage == "tpsm" or self.config.stage1_map)

    def _localize(self, images: torch.Tensor, labels: torch.Tensor, stage1: bool
                  ) -> Localization:
        factors = self._factors(images, labels, stage1)
        return Localization(maps=factors["map"], logits=factors["logits"])

    def _factors(self, images: torch.Tensor, labels: torch.Tensor, stage1: bool
                 ) -> dict[str, torch.Tensor]:
        """The refined attention ("attention"), the CAM branch's map of `labels`
        ("semantic"; not in stage 1, whose map is the attention alone), "map", "logits"."""
        r = self._run(images, with_cam=not stage1)
        refined = self.refined_attention(r["m"], r["keep"], r["lam"], renormalize=stage1)
        h, w = self.vit.patch_embed.dynamic_feat_size(images.shape[-2:])
        refined = refined.reshape(len(images), h, w).detach()
        factors = {"attention": refined, "map": refined, "logits": r["logits"].detach()}
        if not stage1:
            semantic = r["cam"][torch.arange(len(labels)), labels].detach()
            factors.update(semantic=semantic, map=refined * semantic)
        return factors

    def map_factors(self, images: torch.Tensor, labels: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
        """The refined attention ("attention"), the CAM branch's map M_C of `labels`
        ("semantic"), and their product ("map"); only the attention with `stage1_map`."""
        factors = self._factors(images, labels, self.config.stage1_map)
        del factors["logits"]
        return factors

    # ------------------------------------------------------------------ two-stage training
    def stages(self) -> tuple[str, ...]:
        return ("tpsm", "cam")

    def _is_cam_branch(self, name: str) -> bool:
        return name.startswith("cam_")

    def begin_stage(self, stage: str):
        for name, p in self.named_parameters():
            p.requires_grad = self._is_cam_branch(name) == (stage == "cam")
        return (p for p in self.parameters() if p.requires_grad)

    def stage_config(self, stage: str) -> MethodConfig:
        if stage == "cam":  # stage 2 has its own schedule and never uses label smoothing
            factor = self.config.stage2_lr_factor
            return dataclasses.replace(self.config, epochs=self.config.stage2_epochs,
                                       lr_steps=self.config.stage2_lr_steps,
                                       lr_factor=self.config.lr_factor if factor is None
                                       else factor, label_smoothing=0.0)
        return self.config

    def set_train_mode(self, stage: str) -> None:
        if stage == "cam":  # official: model.eval(); camfuse_block.train()
            self.eval()
            for module in (self.cam_tr, self.cam_norm, self.cam_head):
                module.train()
        else:
            self.train()

    def training_logits(self, images: torch.Tensor, stage: str) -> torch.Tensor:
        if stage == "cam":
            return self._run(images, with_cam=True)["cam_logits"]
        return self._run(images, with_cam=False)["logits"]

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> dict[str, list[str]]:
        """DeiT weights; score layer and CAM block from the last block, norms from `norm`."""
        last = len(self.vit.blocks) - 1
        extra = {}
        for key, value in state_dict.items():
            if key.startswith(f"blocks.{last}."):
                rest = key.removeprefix(f"blocks.{last}.")
                extra[f"score_layer.{rest}"] = extra[f"cam_tr.{rest}"] = value
            elif key.startswith("norm."):
                rest = key.removeprefix("norm.")
                extra[f"score_norm.{rest}"] = extra[f"cam_norm.{rest}"] = value
        report = load_vit_weights(self, self.vit, state_dict, "vit.",
                                  allow_missing=("vit.head.", "score_", "cam_"))
        self.load_state_dict(extra, strict=False)
        return report
