"""Per-example signals: where torch stops. Every function returns float64 numpy arrays.

Audits compute these once per model and hand them to the numpy scoring in ``stats.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from obliviate.loop import preserve_mode
from obliviate.types import Data, Task

__all__ = [
    "correctness",
    "logit_scaled_confidence",
    "per_example_loss",
    "predict_logits",
    "softmax",
    "true_class_confidence",
]


@torch.no_grad()
def per_example_loss(
    model: nn.Module, data: Data, task: Task, *, batch_size: int = 1024
) -> np.ndarray:
    """task.loss per example in eval mode, (N,)."""
    with preserve_mode(model):
        model.eval()
        out = [task.loss(model, b).double() for b in task.batches(data, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def predict_logits(model: nn.Module, data: Data, task: Task) -> np.ndarray:
    """Logits (N, C) of a classifier task, float64."""
    if not hasattr(task, "predict"):
        raise TypeError(
            f"task kind {task.kind!r} has no class logits; this audit is for classifiers"
        )
    return task.predict(model, data)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def true_class_confidence(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p_y(x), (N,)."""
    return softmax(logits)[np.arange(len(y)), y]


def logit_scaled_confidence(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log p_y - log sum_{j != y} p_j (natural log), computed stably from logits, (N,).

    This is LiRA's and the NeurIPS 2023 challenge's signal; it stays finite when p_y rounds to 1.
    """
    n = np.arange(len(y))
    z_y = logits[n, y]
    others = logits.copy()
    others[n, y] = -np.inf
    m = others.max(axis=1)
    lse_others = m + np.log(np.exp(others - m[:, None]).sum(axis=1))
    return z_y - lse_others


def correctness(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (logits.argmax(1) == y).astype(np.float64)
