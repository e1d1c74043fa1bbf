"""The classifier Task: how methods and audits see an image classifier.

A batch is a dict ``{"x": (B, C, H, W), "y": (B,), "idx": (B,)}``; ``idx`` is each example's
position in its source set, so per-example signals can be traced back to the deletion request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.loop import preserve_mode
from obliviate.vision.data import TensorData

__all__ = ["ClassifierTask"]


@dataclass(frozen=True)
class ClassifierTask:
    num_classes: int
    kind: str = "vision"
    eval_batch_size: int = 2048  # inference batches: large is fastest on CPU

    def batches(
        self, data: TensorData, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        n = len(data)
        if shuffle:
            g = torch.Generator().manual_seed(0 if seed is None else int(seed))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        for s in range(0, n, batch_size):
            b = order[s : s + batch_size]
            yield {"x": data.x[b], "y": data.y[b], "idx": data.idx[b]}

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["x"])

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-example cross-entropy, (B,)."""
        return F.cross_entropy(model(batch["x"]), batch["y"], reduction="none")

    def divergence(
        self,
        student: nn.Module,
        teacher: nn.Module,
        batch: dict[str, torch.Tensor],
        *,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """KL(teacher || student) per example at ``temperature``, (B,); no gradient to teacher."""
        with torch.no_grad():
            t = F.log_softmax(teacher(batch["x"]) / temperature, dim=1)
        s = F.log_softmax(student(batch["x"]) / temperature, dim=1)
        return (t.exp() * (t - s)).sum(1)

    @torch.no_grad()
    def predict(self, model: nn.Module, data: TensorData) -> np.ndarray:
        """Logits (N, num_classes) as float64 numpy, in eval mode; the model's mode is restored."""
        with preserve_mode(model):
            model.eval()
            out = [model(b["x"]).double() for b in self.batches(data, self.eval_batch_size)]
        if not out:
            return np.zeros((0, self.num_classes))
        return torch.cat(out).numpy()

    def evaluate(self, model: nn.Module, data: TensorData) -> dict[str, float]:
        if len(data) == 0:
            return {"accuracy": float("nan"), "loss": float("nan")}
        logits = torch.from_numpy(self.predict(model, data))
        y = data.y
        return {
            "accuracy": (logits.argmax(1) == y).double().mean().item(),
            "loss": F.cross_entropy(logits, y).item(),
        }
