"""Classification accuracy: Top-1 and Top-5 (%), from the logits a method returns."""

from __future__ import annotations

from typing import Any

import numpy as np

from wsolbench.protocol import EvalBatch, Protocol, percent, topk_hits


class Classification(Protocol):
    name = "classification"
    needs_logits = True

    def params(self) -> dict[str, Any]:
        return {}

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {"top1": np.zeros((), np.int64), "top5": np.zeros((), np.int64)}

    def _update(self, batch: EvalBatch) -> None:
        self.state["top1"] += int(topk_hits(batch.logits, batch.labels, 1).sum())
        self.state["top5"] += int(topk_hits(batch.logits, batch.labels, 5).sum())

    def _compute(self) -> dict[str, Any]:
        return {"top1_cls": float(percent(self.state["top1"], self.n)),
                "top5_cls": float(percent(self.state["top5"], self.n))}
