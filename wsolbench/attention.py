"""Read softmax attention out of timm Vision Transformers without forking timm (STYLE.md §4).

timm's `Attention` computes `softmax(q k^T * scale)` and passes it through `attn_drop` only
on its unfused path. `capture_attention` switches fused attention off in the blocks asked for,
hooks their `attn_drop`, and always restores both on exit, so training keeps the fused
kernel and no hook outlives the `with` block (the leaks of pytorch-grad-cam #132/#195/#483).
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


def class_token_attention(attentions: Sequence[torch.Tensor], num_prefix_tokens: int
                          ) -> torch.Tensor:
    """Class-token -> patch attention, head-averaged, summed over layers: `[B, n_patches]`."""
    return torch.stack([a[:, :, 0, num_prefix_tokens:].mean(dim=1) for a in attentions]).sum(0)
