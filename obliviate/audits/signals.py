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
    "token_logprob_stats",
    "token_logprobs",
    "true_class_confidence",
    "vocab_logprob_stats",
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


# -- language models: per-token signals of the target tokens -------------------------------------
def _check_lm(task: Task, what: str) -> None:
    if getattr(task, "kind", None) != "lm" or not hasattr(task, "target_logits"):
        raise TypeError(
            f"{what} needs the causal-LM Task (kind 'lm', with target_logits), got a task of kind "
            f"{getattr(task, 'kind', None)!r}; use an lm-* benchmark"
        )


def token_logprobs(model: nn.Module, data: Data, task: Task) -> list[np.ndarray]:
    """Per example, log p(x_t | x_<t) of each target token in order (float64, eval mode).

    The LM membership attacks (loss, zlib, min-k, reference) all start from these.
    """
    _check_lm(task, "token_logprobs")
    return [-nll for nll in task.token_nlls(model, data)]


def vocab_logprob_stats(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p(label), mu, sigma) per row of next-token ``logits`` (n, V), each (n,).

    mu = E_{z~p}[log p(z)] and sigma^2 = E_{z~p}[(log p(z) - mu)^2], expectations under the
    model's own next-token distribution p = softmax(logits) (Min-K%++, Zhang et al. 2024).
    Tokens with p = 0 (logit -inf) contribute nothing, rather than 0 * inf = NaN.
    """
    logp = torch.log_softmax(logits.double(), dim=-1)  # (n, V); float64: sigma can be tiny
    p = logp.exp()
    finite = torch.isfinite(logp)
    logp0 = logp.masked_fill(~finite, 0.0)
    mu = (p * logp0).sum(-1)  # (n,)
    var = (p * (logp0 - mu[:, None]).masked_fill(~finite, 0.0) ** 2).sum(-1)
    target = logp.gather(1, labels[:, None].to(logp.device))[:, 0]
    return target, mu, var.sqrt()


@torch.no_grad()
def token_logprob_stats(model: nn.Module, data: Data, task: Task) -> list[np.ndarray]:
    """Per example, an (n_tokens, 3) float64 array of (log p(x_t), mu_t, sigma_t) over its
    target tokens in order (see ``vocab_logprob_stats``), eval mode; Min-K%++'s input."""
    _check_lm(task, "token_logprob_stats")
    out: list[np.ndarray] = []
    with preserve_mode(model):
        model.eval()
        for batch in task.batches(data, task.eval_batch_size):
            logits, rows, labels = task.target_logits(model, batch)  # (n, V), (n,), (n,)
            stats = torch.stack(vocab_logprob_stats(logits, labels), dim=1).cpu().numpy()
            rows = rows.cpu().numpy()
            out += [stats[rows == i] for i in range(len(batch["idx"]))]  # row-major order kept
    return out
