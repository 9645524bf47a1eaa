"""Read softmax attention out of timm Vision Transformers without forking timm (docs/design.md §2).

Two context managers, both of which always remove their hooks on exit (the leaks of
pytorch-grad-cam #132/#195/#483):

- `capture_attention`: full `[B, heads, N, N]` maps. timm passes the probabilities through
  `attn_drop` only on its unfused path, so fused attention is switched off in those blocks
  for the duration and restored afterwards.
- `capture_class_attention`: only the class-token row, recomputed from the `qkv`
  projection; blocks keep the fused kernel. TS-CAM and TRT need nothing more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


@contextlib.contextmanager
def capture_attention(blocks: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Collect each block's attention probabilities `[B, heads, N, N]`, in block order.

    Args:
        blocks: timm transformer blocks (each with an `.attn` holding `fused_attn` and
            `attn_drop`).

    Yields:
        A list filled during forward passes inside the block, one tensor per block call.
    """
    captured: list[torch.Tensor] = []
    handles, fused = [], []
    try:
        for block in blocks:
            attn = block.attn
            fused.append(attn.fused_attn)
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(
                lambda _m, inputs, _out: captured.append(inputs[0])))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        for block, was_fused in zip(blocks, fused):
            block.attn.fused_attn = was_fused


@contextlib.contextmanager
def capture_class_attention(blocks: Sequence[nn.Module], num_prefix_tokens: int
                            ) -> Iterator[list[torch.Tensor]]:
    """Collect each block's class-token -> patch attention, head-averaged: `[B, n_patches]`.

    Only the class token's row is needed by TS-CAM's A* and TRT's m, and that row is
    `softmax(q_cls k^T * scale)`: it is recomputed from the `qkv` projection output (a hook
    on `attn.qkv`), so the blocks keep timm's fused attention kernel. O(N) per head instead of
    materializing the `N x N` map.
    """
    captured: list[torch.Tensor] = []

    def hook(attn: nn.Module):
        def read(_module, _inputs, qkv: torch.Tensor) -> None:
            b, n, _ = qkv.shape
            q, k, _v = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(
                2, 0, 3, 1, 4).unbind(0)
            q, k = attn.q_norm(q[:, :, :1]), attn.k_norm(k)
            row = ((q * attn.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)
            captured.append(row[:, :, 0, num_prefix_tokens:].mean(dim=1))
        return read

    handles = []
    try:
        for block in blocks:
            handles.append(block.attn.qkv.register_forward_hook(hook(block.attn)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
