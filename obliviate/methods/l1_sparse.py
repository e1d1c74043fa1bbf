"""l1-sparse: sparsity-aware unlearning (Jia et al., NeurIPS 2023, "Model Sparsity Can Simplify
Machine Unlearning", arXiv:2304.04934; `FT_prune` / `FT_l1` in its code).

Fine-tune on the retain set with an l1 penalty on the weights whose strength decays to zero:
min CE(D_r) + alpha_t * ||θ||_1, alpha_t = alpha * (1 - t / T). Sparsity pushes the model toward
the sparse solutions the paper finds easier to unlearn from, and the decay lets the last steps
recover accuracy. Notation: alpha the initial l1 weight, t the step, T the planned steps,
||θ||_1 the sum of |θ| over every parameter (biases included, as in the code).

The notes give the loss and the decay; the rest are our choices, each a hyperparameter. The
notes' alpha_t decays per epoch; with fractional epochs that would be a constant, so alpha_t here
decays per optimizer step (the same line, sampled finer; T is the planned steps, so a budget cut
stops early rather than decaying faster). SGD with momentum 0.9 and weight decay 5e-4 at lr 0.01,
the notes' fine-tuning lr. The notes give no alpha: 5e-4 is our choice. Per-weight shrinkage per
step is lr * alpha_t whatever the model size, so alpha means the same on ResNet-18 and our CNN.

Scale-down: 10 epochs of fine-tuning against a 182-epoch retrain (5.5% of its cost) become 0.55
epochs of D_r against our 10-epoch retrain. The total l1 shrinkage is proportional to the steps
taken, so at the same alpha it is about 18x smaller than over 10 CIFAR epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from obliviate.loop import epoch_batches, make_optimizer, preserve_mode
from obliviate.registry import METHODS
from obliviate.types import Budget, Data, Task

__all__ = ["L1Sparse", "l1_norm"]


def l1_norm(model: nn.Module) -> torch.Tensor:
    """||θ||_1 over every trainable parameter, a scalar with gradient sign(θ)."""
    return sum(p.abs().sum() for p in model.parameters() if p.requires_grad)


@METHODS.register("l1-sparse")
@dataclass(frozen=True)
class L1Sparse:
    supports: ClassVar[frozenset[str]] = frozenset({"vision"})
    alpha: float = 5e-4  # initial l1 weight; decays linearly to 0 over the planned steps
    lr: float = 0.01  # SGD learning rate (the notes' fine-tuning lr)
    epochs: float = 0.55  # passes over D_r (10 of a 182-epoch retrain, rescaled)
    batch_size: int = 128  # retain examples per step
    weight_decay: float = 5e-4  # L2 on every parameter
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # with momentum 0.9 for SGD

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"alpha is an l1 weight and must be >= 0, got {self.alpha}")

    def unlearn(
        self, model: nn.Module, forget: Data, retain: Data, *, task: Task, budget: Budget
    ) -> nn.Module:
        opt = make_optimizer(
            model.parameters(), self.optimizer, lr=self.lr, weight_decay=self.weight_decay
        )
        # T: the method's own plan, so a budget cut stops early instead of decaying faster
        planned = max(1, round(math.ceil(len(retain) / self.batch_size) * self.epochs))
        with preserve_mode(model):
            model.train()
            for t, batch in enumerate(
                epoch_batches(
                    task, retain, batch_size=self.batch_size, epochs=self.epochs, budget=budget
                )
            ):
                alpha_t = self.alpha * (1.0 - t / planned)
                loss = task.loss(model, batch).mean() + alpha_t * l1_norm(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return model
