"""SalUn: Saliency Unlearning (Fan et al., ICLR 2024, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", arXiv:2310.12508).

Only the weights most responsible for the forget set are allowed to move. 1. A saliency map is the
magnitude of the forget-loss gradient at the original model, |∇_θ L_f(θ_o)|; the top ``gamma``
fraction of all weights (ranked globally, across layers) get mask 1, the rest 0. 2. Random-label
unlearning (``random_label.py``) then runs with every gradient multiplied by the mask:
θ ← θ − η m ⊙ ∇L_RL. Notation: m the mask, gamma the fraction of weights updated (the README's
"with_0.5" mask: 50%), L_f the forget cross-entropy.

The notes give the mask rule, gamma = 50% (the README example; masks for 0.1-0.9 are saved;
Apollo uses 0.2), lr 0.013 and 10 epochs. Our choices: the gradient is of the forget loss summed
over all of D_f, taken in eval mode (BatchNorm statistics stay put), and its absolute value is
ranked over all trainable weights together; the mask multiplies gradients before the optimizer
step, so weight decay (added inside the step) still reaches masked weights; random labels and the
optimizer are random-label's (see ``random_label.py``).

Scale-down: 10 epochs against a 182-epoch retrain (5.5% of its cost) become 0.55 epochs of
D_f' ∪ D_r against our 10-epoch retrain, at the README's lr.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from obliviate.loop import preserve_mode
from obliviate.methods.random_label import train_random_label
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

log = logging.getLogger(__name__)

__all__ = ["SalUn", "saliency_mask"]


def saliency_mask(
    model: nn.Module, forget: Data, *, task: Task, gamma: float, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """{name: 0/1 tensor}: 1 for the top ``gamma`` fraction of weights by |∇_θ L_f|, ranked
    over all trainable parameters together. The model is left unchanged (no .grad written)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma is the fraction of weights updated, in [0, 1]; got {gamma}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for _, p in named]
    with preserve_mode(model):
        model.eval()  # as in the paper's generate_mask.py: BatchNorm statistics stay fixed
        for batch in task.batches(forget, batch_size):
            # sum, not mean, over examples: the gradient of the whole forget loss
            grads = torch.autograd.grad(task.loss(model, batch).sum(), [p for _, p in named])
            for acc, g in zip(total, grads, strict=True):
                acc.add_(g)
    scores = torch.cat([g.abs().flatten() for g in total])  # (P,) over every trainable weight
    k = round(gamma * scores.numel())
    # stable sort: ties (e.g. weights with zero gradient) are broken by position, deterministically
    keep = torch.argsort(scores, descending=True, stable=True)[:k]
    flat = torch.zeros_like(scores)
    flat[keep] = 1.0
    mask, start = {}, 0
    for name, p in named:
        mask[name] = flat[start : start + p.numel()].view_as(p)
        start += p.numel()
    return mask


@METHODS.register("salun")
@dataclass(frozen=True)
class SalUn:
    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    gamma: float = 0.5  # fraction of weights the mask lets move (README: 0.5; Apollo: 0.2)
    lr: float = 0.013  # SGD learning rate (README example)
    epochs: float = 0.55  # passes over D_f' ∪ D_r (10 of a 182-epoch retrain, rescaled)
    batch_size: int = 128  # examples per step, forget and retain mixed
    weight_decay: float = 5e-4  # L2 on every parameter (not masked)
    exclude_true: bool = True  # random labels among the wrong classes only
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # with momentum 0.9 for SGD

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        # 1. Saliency mask at the original weights (no optimizer step: free under the budget).
        mask = saliency_mask(model, forget, task=task, gamma=self.gamma)
        log.info("salun: updating %.1f%% of the weights", 100 * self.gamma)
        # 2. Random-label unlearning with the gradients masked.
        return train_random_label(
            model, forget, retain, task=task, budget=budget, lr=self.lr, epochs=self.epochs,
            batch_size=self.batch_size, optimizer=self.optimizer,
            weight_decay=self.weight_decay, exclude_true=self.exclude_true, grad_mask=mask,
        )  # fmt: skip
